//! Layers shared by every family: linear (dense or quantized), RMSNorm, RoPE, GQA attention
//! (separate or fused QKV), gated MLPs, the sparse mixture of experts and the token embedding.
//! Families compose these; new kinds of layer go here.

pub mod attention;
pub mod attn_f16;
pub mod attn_few;
pub mod embedding;
pub mod gated;
pub mod gemm_q8;
pub mod gemv;
pub mod host;
pub mod kdots;
pub mod kquants;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod pool;
pub mod q4_1;
pub mod q5_0;
pub mod q8_0;
pub mod qkv;
pub mod rope;
