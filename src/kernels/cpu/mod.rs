//! CPU kernels: products of quantized weights with 8-bit activations (single rows in
//! [`gemv`] and the per-type files, two weight rows by up to four activation rows in
//! [`rows512`], IQ4_NL and IQ4_XS in [`iq4_nl`] and [`iq4_xs`], MXFP4 in [`mxfp4`] and
//! [`mxfp4_quads`], FP8 in [`fp8`], batches in
//! [`gemm_q8`], k-quants in [`kquants`], [`kdots`] and [`kquads`], and repacked in sixteen
//! interleaved rows in [`repacked`] ([`q4k16`])), few-query attention in
//! llama.cpp's numerics ([`attn_few`], [`attn_f16`]) and its tiled prompt attention
//! ([`attn_tiles`]) over the f16 KV cache (widened for f32
//! products in [`f16_rows`]), the gated activation ([`gated`]), RoPE's rotation
//! ([`rope`]), borrowing tensor data ([`host`]), the heap's policy for large buffers
//! ([`heap`]), buffers on huge pages ([`huge`]) and the thread pool they all run on
//! ([`pool`]). Each picks its SIMD form at run time; `MLCLI_CPU_KERNELS=scalar` (or
//! [`gemv::force_kernel`]) forces the portable one.

pub mod attn_f16;
pub mod attn_few;
pub mod attn_tiles;
pub mod f16_rows;
pub mod fp8;
pub mod gated;
pub mod gemm_q8;
pub mod gemv;
pub mod heap;
pub mod host;
pub mod huge;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod kdots;
mod kdots_portable;
#[cfg(target_arch = "x86_64")]
pub mod kquads;
#[cfg(target_arch = "x86_64")]
pub mod kquads_avx2;
pub mod kquants;
pub mod mxfp4;
#[cfg(target_arch = "x86_64")]
pub mod mxfp4_quads;
pub mod pool;
pub mod q4_1;
pub mod q4k16;
pub mod q5_0;
pub mod q8_0;
pub mod repacked;
pub mod rope;
#[cfg(target_arch = "x86_64")]
pub mod rows256;
#[cfg(target_arch = "x86_64")]
pub mod rows512;
