//! Qwen3-Next, e.g. Qwen3-Next-80B-A3B (HF `Qwen3NextForCausalLM`; GGUF `qwen3next`).
//!
//! The design Qwen3.5 grew from, served by [`super::qwen3_5`]: Gated DeltaNet and gated
//! attention layers, `(1 + w)` norms, RoPE over a quarter of each head (no multimodal RoPE),
//! and a mixture of experts beside a sigmoid-gated shared expert in every block. What differs:
//! the DeltaNet's projections are fused per key head (`in_proj_qkvz`, `in_proj_ba`; llama.cpp's
//! converter splits the first into `attn_qkv` and `attn_gate` and keeps `ssm_ba`), value heads
//! stay grouped by key head in GGUF too, and the router renormalises only with
//! `norm_topk_prob` (default true). Dense layers (`mlp_only_layers`, `decoder_sparse_step` > 1)
//! are refused: no released checkpoint has them. References: HF `modeling_qwen3_next.py`;
//! llama.cpp `src/models/qwen3next.cpp`, `conversion/qwen.py`.

use super::layers::moe::Router;
use super::qwen3_5::{Config, Ffn, GgufForm, Model, NAMES, QUIRKS};
use super::values::{refuse_hf, HfRefusal};
use super::{ConfigSource, FamilySpec, Kind, TinyConfig};
use crate::formats::hf_config::HfConfig;
use crate::formats::names::NamePair;
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen3_next",
    kind: Kind::Moe,
    hf_architectures: &["Qwen3NextForCausalLM"],
    gguf_architectures: &["qwen3next"],
    gguf_variants: &[],
    gguf_names: NAMES,
    quirks: QUIRKS,
    default_template: "chatml",
    hf_model_type: "qwen3_next",
    hf_config_keys: CONFIG_KEYS,
    hf_config_defaults: &[("norm_topk_prob", "true")],
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
            "attn_qkv.weight",
            "attn_gate.weight",
            "ssm_ba.weight",
            "ssm_conv1d.weight",
            "ssm_a",
            "ssm_dt.bias",
            "ssm_norm.weight",
            "ssm_out.weight",
            "post_attention_norm.weight",
            "ffn_gate_inp.weight",
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_gate_inp_shexp.weight",
            "ffn_gate_shexp.weight",
            "ffn_up_shexp.weight",
            "ffn_down_shexp.weight",
        ],
        metadata: &[
            ("attention.key_length", 32),
            ("attention.value_length", 32),
            ("rope.dimension_count", 8),
            ("full_attention_interval", 2),
            ("ssm.conv_kernel", 4),
            ("ssm.state_size", 16),
            ("ssm.group_count", 4),
            ("ssm.time_step_rank", 4),
            ("ssm.inner_size", 64),
            ("expert_count", 4),
            ("expert_used_count", 2),
            ("expert_feed_forward_length", 32),
            ("expert_shared_feed_forward_length", 64),
        ],
        fused_gate_up: false,
    },
};

/// The DeltaNet's keys and the experts', for export.
const CONFIG_KEYS: &[NamePair] = &[
    ("linear_conv_kernel_dim", "ssm.conv_kernel"),
    ("linear_key_head_dim", "ssm.state_size"),
    ("linear_value_head_dim", "ssm.state_size"),
    ("linear_num_key_heads", "ssm.group_count"),
    ("linear_num_value_heads", "ssm.time_step_rank"),
    ("full_attention_interval", "full_attention_interval"),
    ("num_experts", "expert_count"),
    (
        "shared_expert_intermediate_size",
        "expert_shared_feed_forward_length",
    ),
    ("norm_topk_prob", "expert_weights_norm"),
];

/// Keys that would make some layers dense.
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

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(
            g,
            &GgufForm {
                arch: "qwen3next",
                moe: true,
                v_heads_tiled: false,
            },
        ),
        ConfigSource::Hf(h) => from_hf(h),
    }
}

/// Reads a Hugging Face `config.json` (`qwen3_next`): Qwen3.5-MoE's reading with
/// `Qwen3NextConfig`'s expert defaults (512 experts, 10 used) and `norm_topk_prob`.
pub fn from_hf(h: &HfConfig) -> Result<Config> {
    refuse_hf(h, HF_REFUSED)?;
    let mut cfg = Config::from_hf(h, true)?;
    if let Ffn::Moe { moe, .. } = &mut cfg.ffn {
        moe.n_experts = h.opt_usize("num_experts")?.unwrap_or(512);
        moe.n_used = h.opt_usize("num_experts_per_tok")?.unwrap_or(10);
        moe.router = Router::SoftmaxTopK {
            renormalize: h.opt_bool("norm_topk_prob")?.unwrap_or(true),
        };
    }
    cfg.validate()?;
    Ok(cfg)
}
