//! Qwen 3 dense (HF `Qwen3ForCausalLM`; GGUF `qwen3`).
//!
//! The llama block with per-head RMSNorm on Q and K before RoPE, NeoX (half-split) RoPE, and a
//! head width set by `attention.key_length` (not `hidden / heads`; `head_dim` defaults to 128
//! in `config.json`). `attention_bias` puts biases on q, k, v and o; the sliding window is
//! read as Qwen 2's. Reuses [`super::llama`].

use super::llama::{Config, HfClass, Model, Sliding, LLAMA};
use super::{ConfigSource, FamilySpec, Kind, Quirks, TinyConfig};
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen3",
    kind: Kind::Dense,
    hf_architectures: &["Qwen3ForCausalLM"],
    gguf_architectures: &["qwen3"],
    gguf_variants: &[],
    gguf_names: super::llama::BIAS_NAMES,
    quirks: Quirks::NONE,
    default_template: "chatml",
    hf_model_type: "qwen3",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
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

/// `Qwen3Config`: `attention_bias` on q/k/v/o, no `mlp_bias`, 32 KV heads and `head_dim` 128
/// unless the file says otherwise.
pub const QWEN3: HfClass = HfClass {
    mlp_bias: false,
    sliding: Sliding::Qwen { per_layer: true },
    kv_heads: Some(32),
    head_dim: Some(128),
    ..LLAMA
};

fn config(src: &ConfigSource) -> Result<Config> {
    let base = match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g, "qwen3")?,
        ConfigSource::Hf(h) => Config::from_hf(h, &QWEN3)?,
    };
    Ok(Config {
        qk_norm: true,
        ..base
    })
}
