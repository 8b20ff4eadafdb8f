//! Qwen3.5-MoE, e.g. Qwen3.5-35B-A3B (HF `Qwen3_5MoeForCausalLM`, and the `text_config` of
//! `Qwen3_5MoeForConditionalGeneration`; GGUF `qwen35moe`).
//!
//! The Qwen3.5 hybrid stack ([`super::qwen3_5`]: Gated DeltaNet and gated attention layers)
//! with a mixture of SwiGLU experts in every block: softmax over all experts, the top
//! `num_experts_per_tok`, always renormalised (`Qwen3_5MoeTopKRouter`), plus a shared expert
//! of `shared_expert_intermediate_size` scaled by `sigmoid(shared_expert_gate · x)`.
//! References: HF `modeling_qwen3_5_moe.py`; llama.cpp `src/models/qwen35moe.cpp`.

use super::qwen3_5::{Config, Model, NAMES, QUIRKS};
use super::{ConfigSource, FamilySpec, Kind, TinyConfig};
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
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[],
        metadata: &[],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g, true),
        ConfigSource::Hf(h) => Config::from_hf(h, true),
    }
}
