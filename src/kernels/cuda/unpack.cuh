// Long prompts' products through cuBLAS (gemm.rs): a quantized weight matrix unpacked to bf16
// rows, and q8 activation blocks to bf16, for one tensor-core GEMM per matrix.

#pragma once

#include <cuda_bf16.h>

// The `rows` × `k` weights of type `t` as bf16, row-major: each value is the one the integer
// tiles multiply (a·q + b per 32-value sub-block; Q6_K's second half a2·q + b), rounded once.
// A thread per sub-block; 256 threads.
extern "C" __global__ void __launch_bounds__(256)
    unpack_bf16(const uint8_t* w, int t, int rows, int k, __nv_bfloat16* out) {
    const int nsub = k / QK;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * nsub) return;
    const int row = (int)(i / nsub), b = (int)(i % nsub);
    int v[8];
    float a, a2, bb;
    stage_sub(w, t, row_bytes(t, nsub), rows, row, b, nsub, v, &a, &a2, &bb);
    __align__(16) __nv_bfloat16 o[32];
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int q = (int)(int8_t)(v[j >> 2] >> (8 * (j & 3)));
        o[j] = __float2bfloat16(fmaf(j < 16 ? a : a2, (float)q, bb));
    }
    uint4* dst = (uint4*)(out + i * QK);
#pragma unroll
    for (int u = 0; u < 4; u++) dst[u] = ((const uint4*)o)[u];
}

// `blocks` q8 activation blocks (an f32 scale d, its sum, 32 int8 values) as bf16 values
// d·q, in order. A thread per block; 256 threads.
extern "C" __global__ void __launch_bounds__(256)
    q8_bf16(const uint8_t* xq, int blocks, __nv_bfloat16* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= blocks) return;
    const uint8_t* blk = xq + (size_t)i * Q8_BYTES;
    const float d = *(const float*)blk;
    int v[8];
#pragma unroll
    for (int u = 0; u < 8; u++) v[u] = ((const int*)(blk + 8))[u];
    __align__(16) __nv_bfloat16 o[32];
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int q = (int)(int8_t)(v[j >> 2] >> (8 * (j & 3)));
        o[j] = __float2bfloat16(d * (float)q);
    }
    uint4* dst = (uint4*)(out + (size_t)i * QK);
#pragma unroll
    for (int u = 0; u < 4; u++) dst[u] = ((const uint4*)o)[u];
}
