//! Layers shared by every family: linear (dense or quantized), RMSNorm, RoPE, GQA attention
//! (separate or fused QKV, or with an output gate), multi-head latent attention (DeepSeek),
//! the Gated DeltaNet linear-attention mixer, gated MLPs, the sparse mixture of experts (and
//! gpt-oss's, with biases and a clamped SwiGLU, and DeepSeek's, with group-limited routing
//! and shared experts), the token embedding, the gated short convolution and the output head.
//! Families compose these; new kinds of layer go here.

pub mod attention;
pub mod delta_net;
pub mod embedding;
pub mod expert_step;
pub mod gated_attention;
pub mod grouped_moe;
pub mod head;
pub mod linear;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod oai_moe;
pub mod per_head;
pub mod qkv;
pub mod rope;
pub mod short_conv;
