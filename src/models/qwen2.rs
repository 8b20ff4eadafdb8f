//! Qwen 2 / 2.5 (HF `Qwen2ForCausalLM`; GGUF `qwen2`).
//!
//! The llama block with biases on the Q/K/V projections (always: `Qwen2Config` has no
//! `attention_bias`) and NeoX (half-split) RoPE; GGUF weights are not permuted. The sliding
//! window applies only with `use_sliding_window`, on the layers `layer_types` marks (else
//! from `max_window_layers` on); llama.cpp's converter drops it. Everything else is reused
//! from [`super::llama`].

use super::llama::{Config, HfClass, Model, Sliding, LLAMA};
use super::{ConfigSource, FamilySpec, Kind, Quirks, TinyConfig};
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen2",
    kind: Kind::Dense,
    hf_architectures: &["Qwen2ForCausalLM"],
    gguf_architectures: &["qwen2"],
    gguf_variants: &[],
    gguf_names: &[],
    quirks: Quirks::NONE,
    default_template: "chatml",
    hf_model_type: "qwen2",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q.bias",
            "attn_k.weight",
            "attn_k.bias",
            "attn_v.weight",
            "attn_v.bias",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ],
        metadata: &[],
        fused_gate_up: false,
    },
};

/// `Qwen2Config`: fixed Q/K/V biases, no `attention_bias` or `mlp_bias`, 32 KV heads unless
/// the file says otherwise.
pub const QWEN2: HfClass = HfClass {
    attention_bias: false,
    mlp_bias: false,
    sliding: Sliding::Qwen { per_layer: true },
    kv_heads: Some(32),
    ..LLAMA
};

fn config(src: &ConfigSource) -> Result<Config> {
    let base = match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g, "qwen2")?,
        ConfigSource::Hf(h) => Config::from_hf(h, &QWEN2)?,
    };
    Ok(Config {
        qkv_bias: true,
        ..base
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn qwen2_reuses_the_llama_block_list_plus_biases() {
        let tiny = super::SPEC.tiny.block_tensors;
        assert!(crate::models::llama::BLOCK_TENSORS
            .iter()
            .all(|t| tiny.contains(t)));
        assert_eq!(tiny.len(), crate::models::llama::BLOCK_TENSORS.len() + 3);
    }
}
