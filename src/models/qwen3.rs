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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::hf_config::HfConfig;

    /// Qwen3-0.6B's `config.json` keys that matter here (values as published).
    const CONFIG: &str = r#"{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "attention_bias": false, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
        "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
        "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
        "sliding_window": null, "tie_word_embeddings": true, "use_sliding_window": false,
        "vocab_size": 151936}"#;

    fn hf(edits: &[(&str, &str)]) -> Result<Config> {
        let text = crate::models::testing::edited(CONFIG, edits);
        config(&ConfigSource::Hf(&HfConfig::parse(
            &text,
            "qwen3/config.json",
        )?))
    }

    #[test]
    fn qwen3_reads_attention_bias_head_dim_and_window_as_its_class() {
        let c = hf(&[]).unwrap();
        assert!(c.qk_norm && !c.qkv_bias && !c.o_bias);
        assert_eq!((c.head_dim, c.sliding_window), (128, None));
        let c = hf(&[("\"attention_bias\": false", "\"attention_bias\": true")]).unwrap();
        assert!(c.qkv_bias && c.o_bias);
        // Qwen3Config's head_dim is 128 when absent, not hidden / heads (64 here).
        assert_eq!(hf(&[("\"head_dim\": 128,", "")]).unwrap().head_dim, 128);
        // An explicit null window stays off even with use_sliding_window; absent is 4096.
        let on = (
            "\"use_sliding_window\": false",
            "\"use_sliding_window\": true",
        );
        assert_eq!(hf(&[on]).unwrap().sliding_window, None);
        let c = hf(&[on, ("\"sliding_window\": null,", "")]).unwrap();
        assert_eq!((c.sliding_window, c.full_layers.len()), (Some(4096), 28));
    }
}
