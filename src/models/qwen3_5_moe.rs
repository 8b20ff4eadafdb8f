//! Qwen3.5-MoE, e.g. Qwen3.5-35B-A3B (HF `Qwen3_5MoeForCausalLM`, and the `text_config` of
//! `Qwen3_5MoeForConditionalGeneration`; GGUF `qwen35moe`).
//!
//! The Qwen3.5 hybrid stack ([`super::qwen3_5`]: Gated DeltaNet and gated attention layers)
//! with a mixture of SwiGLU experts in every block: softmax over all experts, the top
//! `num_experts_per_tok`, always renormalised (`Qwen3_5MoeTopKRouter`), plus a shared expert
//! of `shared_expert_intermediate_size` scaled by `sigmoid(shared_expert_gate · x)`.
//! References: HF `modeling_qwen3_5_moe.py`; llama.cpp `src/models/qwen35moe.cpp`.

use super::qwen3_5::{Config, GgufForm, Model, NAMES, QUIRKS};
use super::{ConfigSource, FamilySpec, Kind, TinyConfig};
use crate::formats::names::NamePair;
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen3_5_moe",
    kind: Kind::Moe,
    hf_architectures: &["Qwen3_5MoeForCausalLM"],
    gguf_architectures: &["qwen35moe"],
    gguf_variants: &[],
    gguf_names: NAMES,
    quirks: QUIRKS,
    default_template: "chatml",
    hf_model_type: "qwen3_5_moe_text",
    hf_config_keys: MOE_CONFIG_KEYS,
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
            "attn_qkv.weight",
            "attn_gate.weight",
            "ssm_beta.weight",
            "ssm_alpha.weight",
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

/// The DeltaNet's keys ([`super::qwen3_5::CONFIG_KEYS`]) and the experts'.
const MOE_CONFIG_KEYS: &[NamePair] = &[
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
];

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(
            g,
            &GgufForm {
                arch: "qwen35moe",
                moe: true,
                v_heads_tiled: true,
            },
        ),
        ConfigSource::Hf(h) => Config::from_hf(h, true),
    }
}
