//! Mixtral 8x7B / 8x22B (HF `MixtralForCausalLM`; GGUF `llama` with `llama.expert_count` > 0).
//!
//! The llama block (GQA, RMSNorm, NeoX RoPE in HF, optional sliding window) with a sparse
//! mixture of SwiGLU experts in place of the MLP: top `num_experts_per_tok` router logits,
//! softmax over those ([`Router::TopKSoftmax`], as the Mixtral paper writes it).
//! Everything but the config and names is reused from [`super::llama`].
//!
//! Names: HF keeps the experts under `block_sparse_moe` with `w1` (gate), `w3` (up) and `w2`
//! (down); this family's own name rows map them to llama.cpp's stacked
//! `ffn_{gate,up,down}_exps` and the router to `ffn_gate_inp`.
//!
//! GGUF: llama.cpp's converter writes Mixtral as architecture `llama`, which the llama family
//! owns. This family claims those files through a [`GgufVariant`]: `llama` files with a
//! non-zero `llama.expert_count` are served here (the registry checks variants first), so the
//! llama family stays unaware of experts in its files. Like llama, the converter permutes
//! Q/K rows for interleaved RoPE (quirk `gguf_qk_permuted`). Only the stacked expert layout
//! (llama.cpp since early 2024) is read; older files with one tensor per expert
//! (`blk.N.ffn_gate.E.weight`) fail with a missing-tensor error. The experts' width is
//! `feed_forward_length` (`expert_feed_forward_length` when a converter writes it).
//! References: HF `modeling_mixtral.py` / `configuration_mixtral.py`, llama.cpp
//! `src/models/llama.cpp` (MoE branch), `convert_hf_to_gguf.py` (`MixtralModel`).

use super::layers::moe::{self, Router};
use super::llama::{self, FfnKind};
use super::values::{refuse_gguf, Accepted, GgufRefusal};
use super::{ConfigSource, FamilySpec, GgufVariant, Kind, Quirks, TinyConfig};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::Result;

/// Where Mixtral keeps its experts.
const NAMES: moe::Names = moe::Names {
    block: "block_sparse_moe",
    router: "gate",
    gate: "w1",
    up: "w3",
    down: "w2",
};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "mixtral",
    kind: Kind::Moe,
    hf_architectures: &["MixtralForCausalLM"],
    gguf_architectures: &[],
    default_template: "mistral",
    hf_model_type: "mixtral",
    hf_config_keys: &[("num_local_experts", "expert_count")],
    hf_config_defaults: &[],
    gguf_variants: &[GgufVariant {
        architecture: "llama",
        nonzero_key: "expert_count",
    }],
    gguf_names: &[
        (
            "model.layers.{}.block_sparse_moe.gate.weight",
            "blk.{}.ffn_gate_inp.weight",
        ),
        (
            "model.layers.{}.block_sparse_moe.experts.*.w1.weight",
            "blk.{}.ffn_gate_exps.weight",
        ),
        (
            "model.layers.{}.block_sparse_moe.experts.*.w3.weight",
            "blk.{}.ffn_up_exps.weight",
        ),
        (
            "model.layers.{}.block_sparse_moe.experts.*.w2.weight",
            "blk.{}.ffn_down_exps.weight",
        ),
    ],
    quirks: Quirks {
        gguf_qk_permuted: true,
        ..Quirks::NONE
    },
    load: |vb, src| Ok(Box::new(llama::Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate_inp.weight",
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
        ],
        // No expert width: the experts are `feed_forward_length` wide, as in real files.
        metadata: &[("expert_count", 4), ("expert_used_count", 2)],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<llama::Config> {
    match src {
        ConfigSource::Gguf(g) => from_gguf(g),
        ConfigSource::Hf(h) => from_hf(h),
    }
}

/// `MixtralConfig`: no biases, a sliding window only when the file sets one, 8 KV heads and
/// RoPE base 1e6 unless the file says otherwise. `router_jitter_noise` acts only in training.
pub const MIXTRAL: llama::HfClass = llama::HfClass {
    attention_bias: false,
    mlp_bias: false,
    sliding: llama::Sliding::Every { default: None },
    kv_heads: Some(8),
    rope_theta: 1_000_000.0,
    ..llama::LLAMA
};

/// Reads `llama.*` metadata of a Mixtral file: the llama keys plus `expert_count`,
/// `expert_used_count` and the experts' width.
pub fn from_gguf(g: &Gguf) -> Result<llama::Config> {
    // Softmax over the top k equals softmax over all then renormalised: llama.cpp's llama
    // graph always renormalises, whatever the file says.
    refuse_gguf(
        g,
        "llama",
        &[GgufRefusal {
            key: "expert_weights_norm",
            accepted: Accepted::Bool(true),
            supported: "true (Mixtral's top-k softmax)",
        }],
    )?;
    let base = llama::Config::from_gguf(g, "llama")?;
    let ffn = g
        .opt("llama.expert_feed_forward_length", Gguf::usize)?
        .unwrap_or(base.ffn);
    let moe = moe::Config {
        n_experts: g.usize("llama.expert_count")?,
        n_used: g.usize("llama.expert_used_count")?,
        ffn,
        router: Router::TopKSoftmax,
        names: NAMES,
    };
    finish(base, moe)
}

/// Reads a Hugging Face `config.json` (`model_type` `mixtral`).
pub fn from_hf(h: &HfConfig) -> Result<llama::Config> {
    let base = llama::Config::from_hf(h, &MIXTRAL)?;
    let moe = moe::Config {
        n_experts: h.usize_any(&["num_local_experts", "num_experts"])?,
        n_used: h.usize("num_experts_per_tok")?,
        ffn: base.ffn,
        router: Router::TopKSoftmax,
        names: NAMES,
    };
    finish(base, moe)
}

fn finish(base: llama::Config, moe: moe::Config) -> Result<llama::Config> {
    let cfg = llama::Config {
        ffn: moe.ffn,
        ffn_kind: FfnKind::Moe(moe),
        ..base
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::names;
    use crate::models::testing;

    /// The keys of Mixtral-8x7B-Instruct-v0.1's `config.json` (values as published).
    const CONFIG: &str = r#"{
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "num_attention_heads": 32,
        "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "num_local_experts": 8, "output_router_logits": false, "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": null,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
        "vocab_size": 32000
    }"#;

    #[test]
    fn mixtral_8x7b_config_reads_eight_experts_two_used() {
        let c = from_hf(&HfConfig::parse(CONFIG, "config.json").unwrap()).unwrap();
        assert_eq!((c.n_layers, c.hidden, c.head_dim), (32, 4096, 128));
        assert_eq!((c.n_heads, c.n_kv_heads, c.vocab_size), (32, 8, 32_000));
        assert_eq!(
            (c.rope.base, c.sliding_window, c.qk_norm),
            (1e6, None, false)
        );
        let FfnKind::Moe(m) = c.ffn_kind else {
            panic!("not MoE: {:?}", c.ffn_kind)
        };
        assert_eq!((m.n_experts, m.n_used, m.ffn), (8, 2, 14_336));
        assert_eq!(
            (m.router, m.names.block),
            (Router::TopKSoftmax, "block_sparse_moe")
        );
        let windowed = CONFIG.replace(r#""sliding_window": null"#, r#""sliding_window": 4096"#);
        let c = from_hf(&HfConfig::parse(&windowed, "config.json").unwrap()).unwrap();
        assert_eq!(c.sliding_window, Some(4096));
    }

    #[test]
    fn mixtral_class_defaults_and_its_window_are_read_and_training_keys_ignored() {
        let edit = |from: &str, to: &str| {
            let text = CONFIG.replacen(from, to, 1);
            assert_ne!(text, CONFIG, "'{from}' is not in the config");
            from_hf(&HfConfig::parse(&text, "config.json").unwrap()).unwrap()
        };
        // MixtralConfig: 8 KV heads and RoPE base 1e6 when absent.
        let c = edit(
            "\"num_key_value_heads\": 8,",
            "\"num_attention_heads\": 32,",
        );
        assert_eq!(c.n_kv_heads, 8);
        assert_eq!(edit("\"rope_theta\": 1000000.0,", "").rope.base, 1e6);
        assert_eq!(
            edit("\"sliding_window\": null", "\"sliding_window\": 4096").sliding_window,
            Some(4096)
        );
        // No attention_bias key in the class; router_jitter_noise only acts in training.
        let c = edit(
            "\"use_cache\": true",
            "\"attention_bias\": true, \"router_jitter_noise\": 0.1",
        );
        assert!(!c.qkv_bias && !c.o_bias);
    }

    #[test]
    fn gguf_routing_other_than_softmax_is_refused() {
        use candle_core::quantized::{gguf_file::Value, GgmlDType};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        testing::write_tiny_gguf_with(&SPEC, &path, 1, GgmlDType::F32, None, |m| {
            testing::set_meta(m, "llama.expert_weights_scale", Value::F32(2.5))
        })
        .unwrap();
        let e = from_gguf(&Gguf::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama.expert_weights_scale = 2.5"), "{e}");
        testing::write_tiny_gguf_with(&SPEC, &path, 1, GgmlDType::F32, None, |m| {
            testing::set_meta(m, "llama.expert_weights_norm", Value::Bool(false))
        })
        .unwrap();
        let e = from_gguf(&Gguf::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama.expert_weights_norm = false"), "{e}");
    }

    #[test]
    fn expert_names_map_to_the_stacked_gguf_tensors_and_back() {
        let rows = SPEC.gguf_names;
        for (hf, gguf) in [
            (
                "model.layers.3.block_sparse_moe.gate.weight",
                "blk.3.ffn_gate_inp.weight",
            ),
            (
                "model.layers.3.block_sparse_moe.experts.*.w1.weight",
                "blk.3.ffn_gate_exps.weight",
            ),
            (
                "model.layers.3.block_sparse_moe.experts.*.w3.weight",
                "blk.3.ffn_up_exps.weight",
            ),
            (
                "model.layers.3.block_sparse_moe.experts.*.w2.weight",
                "blk.3.ffn_down_exps.weight",
            ),
        ] {
            assert_eq!(names::to_gguf(hf, rows).as_deref(), Some(gguf));
            assert_eq!(names::to_hf(gguf, rows).as_deref(), Some(hf));
        }
    }
}
