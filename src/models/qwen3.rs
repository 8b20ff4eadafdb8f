//! Qwen 3 dense (HF `Qwen3ForCausalLM`; GGUF `qwen3`).
//!
//! The llama block with per-head RMSNorm on Q and K before RoPE, NeoX (half-split) RoPE, and a
//! head width set by `attention.key_length` (not `hidden / heads`). Reuses [`super::llama`].

use super::llama::{Config, Model};
use super::{ConfigSource, FamilySpec, Kind, Quirks, TinyConfig};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen3",
    kind: Kind::Dense,
    hf_architectures: &["Qwen3ForCausalLM"],
    gguf_architectures: &["qwen3"],
    gguf_variants: &[],
    gguf_names: &[],
    quirks: Quirks::NONE,
    default_template: "chatml",
    hf_model_type: "qwen3",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| {
        let base = match src {
            ConfigSource::Gguf(g) => Config::from_gguf(g, "qwen3")?,
            ConfigSource::Hf(h) => Config::from_hf(h)?,
        };
        let cfg = Config {
            qk_norm: true,
            ..base
        };
        Ok(Box::new(Model::load(vb, &cfg, &SPEC)?))
    },
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q_norm.weight",
            "attn_k.weight",
            "attn_k_norm.weight",
            "attn_v.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ],
        metadata: &[("attention.key_length", 24), ("attention.value_length", 24)],
        fused_gate_up: false,
    },
};
