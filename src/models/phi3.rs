//! Phi-3 / Phi-3.5 mini and medium with default RoPE (HF `Phi3ForCausalLM`; GGUF `phi3`).
//!
//! The llama block with two fused projections: `qkv_proj` (GGUF `attn_qkv`, rows q|k|v) and
//! `gate_up_proj` (GGUF `ffn_up`, `2 × intermediate_size` rows, gate first), both applied
//! with one matmul and split afterwards (shared code in [`super::layers::qkv`] and
//! [`super::layers::mlp`]). NeoX half-split RoPE in both formats (llama.cpp does not permute
//! Phi-3's Q/K), RMSNorm, SwiGLU, tied or untied output. Reuses [`super::llama`]'s model.
//!
//! Sliding window: `sliding_window` (Phi-3-mini-4k: 2047; 128k variants: 262144) is applied
//! as transformers does (`create_sliding_window_causal_mask`: a query sees itself and the
//! `window - 1` positions before it). llama.cpp reads `phi3.attention.sliding_window` but
//! disables SWA for Phi-3 (llama.cpp PR 13676), so past 2047 tokens our logits follow
//! transformers, not llama.cpp.
//!
//! LongRoPE (Phi-3-*-128k, Phi-3.5) is read from `config.json` by the shared RoPE reader
//! ([`super::rope_config`]), with transformers' semantics: a pass ending past
//! `original_max_position_embeddings` uses the long factors. Not supported, rejected with a
//! config error: LongRoPE in GGUF (the `rope_factors_long/short` tensors; llama.cpp picks them
//! by context size, not per pass, and its converter mis-reads transformers 5 configs), and
//! partial rotary (Phi-4-mini's `partial_rotary_factor` 0.75).
//! References: HF `modeling_phi3.py` / `configuration_phi3.py`, llama.cpp
//! `src/models/phi3.cpp`.

use super::llama::{self, FfnKind};
use super::{ConfigSource, FamilySpec, Kind, Quirks, TinyConfig};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "phi3",
    kind: Kind::Dense,
    hf_architectures: &["Phi3ForCausalLM"],
    gguf_architectures: &["phi3"],
    default_template: "phi3",
    hf_model_type: "phi3",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    gguf_variants: &[],
    gguf_names: &[
        (
            "model.layers.{}.self_attn.qkv_proj.weight",
            "blk.{}.attn_qkv.weight",
        ),
        (
            "model.layers.{}.mlp.gate_up_proj.weight",
            "blk.{}.ffn_up.weight",
        ),
    ],
    quirks: Quirks::NONE,
    load: |vb, src| Ok(Box::new(llama::Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_qkv.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ],
        metadata: &[("attention.sliding_window", 5)],
        fused_gate_up: true,
    },
};

fn config(src: &ConfigSource) -> Result<llama::Config> {
    match src {
        ConfigSource::Gguf(g) => from_gguf(g),
        ConfigSource::Hf(h) => from_hf(h),
    }
}

/// `Phi3Config`: no biases, a sliding window only when the file sets one.
pub const PHI3: llama::HfClass = llama::HfClass {
    attention_bias: false,
    mlp_bias: false,
    sliding: llama::Sliding::Every { default: None },
    ..llama::LLAMA
};

/// Reads `phi3.*` metadata (the llama keys, `attention.sliding_window` included).
pub fn from_gguf(g: &Gguf) -> Result<llama::Config> {
    for t in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        if g.has_tensor(t) {
            return Err(unsupported_rope(
                "longrope (the file holds rope_factors_long/short)",
            ));
        }
    }
    finish(llama::Config::from_gguf(g, "phi3")?)
}

/// Reads a Hugging Face `config.json` (`model_type` `phi3`).
pub fn from_hf(h: &HfConfig) -> Result<llama::Config> {
    finish(llama::Config::from_hf(h, &PHI3)?)
}

fn unsupported_rope(what: &str) -> Error {
    Error::UnsupportedConfig(format!(
        "phi3: RoPE scaling {what} is not supported in GGUF files; supported: default RoPE \
         (e.g. Phi-3-mini-4k), or LongRoPE from the safetensors checkpoint's config.json"
    ))
}

fn finish(base: llama::Config) -> Result<llama::Config> {
    let cfg = llama::Config {
        fused_qkv: true,
        ffn_kind: FfnKind::FusedGateUp,
        ..base
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::rope_config::RopeScaling;

    /// The keys of Phi-3-mini-4k-instruct's `config.json` (values as published).
    const CONFIG: &str = r#"{
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
        "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072,
        "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
        "sliding_window": 2047, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "use_cache": true, "vocab_size": 32064
    }"#;

    fn parse(text: &str) -> Result<llama::Config> {
        from_hf(&HfConfig::parse(text, "config.json")?)
    }

    #[test]
    fn phi3_mini_config_reads_fused_projections_and_its_window() {
        let c = parse(CONFIG).unwrap();
        assert_eq!(
            (c.n_layers, c.hidden, c.ffn, c.head_dim),
            (32, 3072, 8192, 96)
        );
        assert_eq!((c.n_heads, c.n_kv_heads, c.vocab_size), (32, 32, 32_064));
        assert_eq!((c.context_length, c.sliding_window), (4096, Some(2047)));
        assert_eq!((c.rope.base, c.eps), (10_000.0, 1e-5));
        assert!(c.fused_qkv && c.ffn_kind == FfnKind::FusedGateUp && !c.qk_norm);
    }

    #[test]
    fn phi3_reads_no_bias_keys_and_a_window_only_when_set() {
        let biased = CONFIG.replace("\"attention_bias\": false", "\"attention_bias\": true");
        let c = parse(&biased).unwrap();
        assert!(!c.qkv_bias && !c.o_bias && !c.mlp_bias);
        let c = parse(&CONFIG.replace("\"sliding_window\": 2047,", "")).unwrap();
        assert_eq!(c.sliding_window, None);
        let c =
            parse(&CONFIG.replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1")).unwrap_err();
        assert!(c.to_string().contains("rms_norm_eps"), "{c}");
    }

    #[test]
    fn longrope_is_read_and_partial_rotary_rejected_naming_what_is_supported() {
        let longrope = CONFIG.replace(
            r#""rope_scaling": null"#,
            r#""rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0],
                "original_max_position_embeddings": 4096}"#,
        );
        let c = parse(&longrope).unwrap();
        assert!(matches!(c.rope.scaling, RopeScaling::LongRope(_)), "{c:?}");
        let partial = CONFIG.replace(
            r#""rope_scaling": null"#,
            r#""rope_scaling": null, "partial_rotary_factor": 0.75"#,
        );
        let e = parse(&partial).unwrap_err().to_string();
        assert!(e.contains("partial_rotary_factor = 0.75"), "{e}");
    }
}
