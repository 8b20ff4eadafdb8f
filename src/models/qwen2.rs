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
    use super::*;
    use crate::formats::hf_config::HfConfig;

    /// Qwen2.5-0.5B-Instruct's `config.json` keys that matter here (values as published).
    const CONFIG: &str = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 896,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": true, "use_sliding_window": false, "vocab_size": 151936}"#;

    fn hf(edits: &[(&str, &str)]) -> Result<Config> {
        let text = crate::models::testing::edited(CONFIG, edits);
        config(&ConfigSource::Hf(&HfConfig::parse(
            &text,
            "qwen/config.json",
        )?))
    }

    #[test]
    fn qwen2_has_fixed_biases_and_a_window_only_where_its_class_puts_one() {
        let c = hf(&[]).unwrap();
        assert_eq!(c.sliding_window, None);
        assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias);
        // Qwen2Config has neither attention_bias nor mlp_bias.
        let c = hf(&[(
            "\"attention_dropout\": 0.0",
            "\"attention_bias\": false, \"mlp_bias\": true",
        )]);
        let c = c.unwrap();
        assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias);
        // use_sliding_window: the window from max_window_layers on.
        let on = (
            "\"use_sliding_window\": false",
            "\"use_sliding_window\": true",
        );
        let c = hf(&[on]).unwrap();
        assert_eq!(c.full_layers, (0..21).collect::<Vec<_>>());
        assert_eq!(c.attention(20).sliding_window, None);
        assert_eq!(c.attention(21).sliding_window, Some(32_768));
        // transformers 5's layer_types win over max_window_layers.
        let types: Vec<&str> = (0..24)
            .map(|i| ["full_attention", "sliding_attention"][i % 2])
            .collect();
        let listed = format!("\"layer_types\": {types:?}, \"vocab_size\"");
        let c = hf(&[on, ("\"vocab_size\"", &listed)]).unwrap();
        assert_eq!(c.full_layers, (0..24).step_by(2).collect::<Vec<_>>());
        let odd = listed.replacen("full_attention", "chunked_attention", 1);
        let e = hf(&[on, ("\"vocab_size\"", &odd)]).unwrap_err().to_string();
        assert!(
            e.contains("qwen/config.json: layer_types = \"chunked_attention\""),
            "{e}"
        );
        let short = "\"layer_types\": [\"full_attention\"], \"vocab_size\"";
        let e = hf(&[on, ("\"vocab_size\"", short)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer_types") && e.contains("lists 1 layers"),
            "{e}"
        );
    }

    #[test]
    fn qwen2_reuses_the_llama_block_list_plus_biases() {
        let tiny = super::SPEC.tiny.block_tensors;
        assert!(crate::models::llama::BLOCK_TENSORS
            .iter()
            .all(|t| tiny.contains(t)));
        assert_eq!(tiny.len(), crate::models::llama::BLOCK_TENSORS.len() + 3);
    }
}
