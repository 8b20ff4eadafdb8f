// mlcli's CUDA kernels for the fused decoder (src/models/cuda/), one translation unit over
// the parts below: quantized products over 8-bit activations, RMSNorm, RoPE with the KV-cache
// store, attention, the gated activation, the argmax, mixtures of experts, and bf16
// unpacking for long prompts' cuBLAS products. Compiled to PTX by build.rs when the
// `cuda` feature is on. Every kernel takes plain device pointers and reads the position and
// token ids from device memory, so a decode step can be captured once as a CUDA graph.
//
// Activations for products are quantized per 32 values ("q8" blocks below): an f32 scale d,
// an f32 sum s = d * sum(q), then 32 int8 values. The scale and the sum are rounded to f16
// as ggml's CPU code stores them, so the integer sums, and nearly the products, equal the
// CPU backend's.

#include <cuda_fp16.h>
#include <stdint.h>

#include "common.cuh"
#include "blocks.cuh"
#include "products.cuh"
#include "unpack.cuh"
#include "ops.cuh"
#include "attention.cuh"
#include "flash.cuh"
#include "moe.cuh"
