//! Layers shared by every family: linear (dense or quantized), RMSNorm, RoPE, GQA attention
//! (separate or fused QKV, or with an output gate), the Gated DeltaNet linear-attention mixer,
//! gated MLPs, the sparse mixture of experts (and gpt-oss's, with biases and a clamped
//! SwiGLU), the token embedding, the gated short
//! convolution and the output head.
//! Families compose these; new kinds of layer go here.

pub mod attention;
pub mod delta_net;
pub mod embedding;
pub mod gated_attention;
pub mod head;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod oai_moe;
pub mod qkv;
pub mod rope;
pub mod short_conv;
