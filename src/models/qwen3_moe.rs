//! Qwen3-MoE, e.g. Qwen3-30B-A3B (HF `Qwen3MoeForCausalLM`; GGUF `qwen3moe`).
//!
//! The Qwen 3 block (per-head Q/K RMSNorm before NeoX half-split RoPE, head width from
//! `head_dim` / `attention.key_length`) with a sparse mixture of SwiGLU experts in place of
//! the MLP: softmax over all experts, top `num_experts_per_tok`, and renormalisation of the
//! kept weights when `norm_topk_prob` (true in every released Qwen3-MoE; transformers'
//! default is false, llama.cpp always renormalises for `qwen3moe`). No shared expert.
//! Everything but the config is reused from [`super::llama`]; the MoE layer is
//! [`super::layers::moe`].
//!
//! Dense layers (`mlp_only_layers`, `decoder_sparse_step` > 1) are rejected: no released
//! checkpoint has them. References: HF `modeling_qwen3_moe.py` / `configuration_qwen3_moe.py`,
//! llama.cpp `src/models/qwen3moe.cpp`.

use super::layers::moe::{self, Router};
use super::llama::{self, FfnKind};
use super::values::{refuse_hf, HfRefusal};
use super::{ConfigSource, FamilySpec, Kind, Quirks, TinyConfig};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen3_moe",
    kind: Kind::Moe,
    hf_architectures: &["Qwen3MoeForCausalLM"],
    gguf_architectures: &["qwen3moe"],
    default_template: "chatml",
    hf_model_type: "qwen3_moe",
    hf_config_keys: &[
        ("num_experts", "expert_count"),
        ("norm_topk_prob", "expert_weights_norm"),
    ],
    hf_config_defaults: &[("norm_topk_prob", "true")],
    gguf_variants: &[],
    // The router and stacked experts use the Qwen rows of the common table.
    gguf_names: llama::BIAS_NAMES,
    quirks: Quirks::NONE,
    load: |vb, src| Ok(Box::new(llama::Model::load(vb, &config(src)?, &SPEC)?)),
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
            "ffn_gate_inp.weight",
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
        ],
        metadata: &[
            ("attention.key_length", 24),
            ("attention.value_length", 24),
            ("expert_count", 4),
            ("expert_used_count", 2),
            ("expert_feed_forward_length", 64),
        ],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<llama::Config> {
    match src {
        ConfigSource::Gguf(g) => from_gguf(g),
        ConfigSource::Hf(h) => from_hf(h),
    }
}

/// `Qwen3MoeConfig`: `attention_bias` on q/k/v/o, a sliding window on every layer only with
/// `use_sliding_window`, 4 KV heads unless the file says otherwise.
pub const QWEN3_MOE: llama::HfClass = llama::HfClass {
    mlp_bias: false,
    sliding: llama::Sliding::Qwen { per_layer: false },
    kv_heads: Some(4),
    ..llama::LLAMA
};

/// Keys that would make some layers dense (a plain MLP of `intermediate_size`).
const HF_REFUSED: &[HfRefusal] = &[
    HfRefusal {
        key: "decoder_sparse_step",
        accepted: &["1"],
        supported: "1 (every layer sparse)",
    },
    HfRefusal {
        key: "mlp_only_layers",
        accepted: &["[]"],
        supported: "[] (every layer sparse)",
    },
];

/// Reads `qwen3moe.*` metadata: the llama keys plus `expert_count`, `expert_used_count`,
/// `expert_feed_forward_length` and (optional, default true) `expert_weights_norm`.
pub fn from_gguf(g: &Gguf) -> Result<llama::Config> {
    let k = |s: &str| format!("qwen3moe.{s}");
    let base = llama::Config::from_gguf(g, "qwen3moe")?;
    let moe = moe::Config {
        n_experts: g.usize(&k("expert_count"))?,
        n_used: g.usize(&k("expert_used_count"))?,
        ffn: g.usize(&k("expert_feed_forward_length"))?,
        router: Router::SoftmaxTopK {
            renormalize: g
                .opt(&k("expert_weights_norm"), Gguf::bool)?
                .unwrap_or(true),
        },
        names: moe::QWEN_NAMES,
    };
    finish(base, moe)
}

/// Reads a Hugging Face `config.json` (`model_type` `qwen3_moe`).
pub fn from_hf(h: &HfConfig) -> Result<llama::Config> {
    refuse_hf(h, HF_REFUSED)?;
    let base = llama::Config::from_hf(h, &QWEN3_MOE)?;
    let moe = moe::Config {
        n_experts: h.usize_any(&["num_experts", "num_local_experts"])?,
        n_used: h.usize("num_experts_per_tok")?,
        ffn: h.usize("moe_intermediate_size")?,
        router: Router::SoftmaxTopK {
            // transformers' default; every released checkpoint sets it to true.
            renormalize: h.opt_bool("norm_topk_prob")?.unwrap_or(false),
        },
        names: moe::QWEN_NAMES,
    };
    finish(base, moe)
}

fn finish(base: llama::Config, moe: moe::Config) -> Result<llama::Config> {
    let cfg = llama::Config {
        qk_norm: true,
        ffn_kind: FfnKind::Moe(moe),
        ..base
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of Qwen3-30B-A3B's `config.json` (values as published).
    const CONFIG: &str = r#"{
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 151643,
        "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 6144, "max_position_embeddings": 40960, "max_window_layers": 48,
        "mlp_only_layers": [], "moe_intermediate_size": 768, "norm_topk_prob": true,
        "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
        "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": false,
        "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.001, "sliding_window": null, "tie_word_embeddings": false,
        "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
        "vocab_size": 151936
    }"#;

    fn parse(text: &str) -> Result<llama::Config> {
        from_hf(&HfConfig::parse(text, "config.json")?)
    }

    #[test]
    fn qwen3_30b_a3b_config_reads_its_experts_and_qwen3_block() {
        let c = parse(CONFIG).unwrap();
        assert_eq!((c.n_layers, c.hidden, c.head_dim), (48, 2048, 128));
        assert_eq!((c.n_heads, c.n_kv_heads, c.vocab_size), (32, 4, 151_936));
        assert_eq!((c.rope.base, c.eps, c.sliding_window), (1e6, 1e-6, None));
        assert!(c.qk_norm && !c.qkv_bias);
        let FfnKind::Moe(m) = c.ffn_kind else {
            panic!("not MoE: {:?}", c.ffn_kind)
        };
        assert_eq!((m.n_experts, m.n_used, m.ffn), (128, 8, 768));
        assert_eq!(m.router, Router::SoftmaxTopK { renormalize: true });
    }

    #[test]
    fn dense_layers_and_impossible_routing_are_rejected() {
        let with = |from: &str, to: &str| parse(&CONFIG.replace(from, to));
        let e = with(r#""decoder_sparse_step": 1"#, r#""decoder_sparse_step": 2"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("config.json: decoder_sparse_step = 2 is not supported; supported: 1"),
            "{e}"
        );
        let e = with(r#""mlp_only_layers": []"#, r#""mlp_only_layers": [0, 5]"#).unwrap_err();
        assert!(e.to_string().contains("mlp_only_layers = [0,5]"), "{e}");
        // attention_bias puts biases on q, k, v and o; the window needs use_sliding_window.
        let c = with(r#""attention_bias": false"#, r#""attention_bias": true"#).unwrap();
        assert!(c.qkv_bias && c.o_bias);
        let c = with(r#""sliding_window": null"#, r#""sliding_window": 8"#).unwrap();
        assert_eq!(c.sliding_window, None);
        let both = CONFIG
            .replace(r#""sliding_window": null"#, r#""sliding_window": 8"#)
            .replace(
                r#""use_sliding_window": false"#,
                r#""use_sliding_window": true"#,
            );
        assert_eq!(parse(&both).unwrap().sliding_window, Some(8));
        let e = with(
            r#""num_experts_per_tok": 8"#,
            r#""num_experts_per_tok": 200"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("200 experts used"), "{e}");
        // Absent `norm_topk_prob` takes transformers' default, false (Qwen2-MoE behaviour).
        let c = with(r#""norm_topk_prob": true,"#, "").unwrap();
        let FfnKind::Moe(m) = c.ffn_kind else {
            panic!()
        };
        assert_eq!(m.router, Router::SoftmaxTopK { renormalize: false });
    }
}
