//! GLM-4.5 / GLM-4.6 MoE (HF `Glm4MoeForCausalLM`; GGUF `glm4moe`).
//!
//! Pre-norm blocks with grouped-query attention — biases on Q/K/V (`attention_bias`, none on
//! the output), optional per-head Q/K RMSNorm (`use_qk_norm`), NeoX RoPE on the first
//! `partial_rotary_factor` (0.5 by default) of each head — and, after the first
//! `first_k_dense_replace` dense blocks, DeepSeek-V3's mixture of experts: the same router
//! (sigmoid scores, selection-only `e_score_correction_bias`, group-limited top-k, normalised
//! and scaled weights) and shared experts ([`super::layers::grouped_moe`], shared with
//! [`super::deepseek_v3`]). Multi-token-prediction blocks (`num_nextn_predict_layers`; in GGUF
//! counted in `block_count` and named by `nextn_predict_layers`) are skipped: they serve
//! speculative decoding, which is not implemented.
//!
//! GGUF: llama.cpp names the second norm `post_attention_norm`, keeps NeoX pairs (no Q/K
//! permutation) and writes the rotary width as `rope.dimension_count`; a file without
//! `expert_gating_func` is sigmoid, as llama.cpp reads it. References: HF
//! `modeling_glm4_moe.py`, `configuration_glm4_moe.py`; llama.cpp `src/models/glm4-moe.cpp`,
//! `conversion/glm.py`.

use candle_core::Tensor;

use super::assembly::{gguf_vocab_size, Dims};
use super::deepseek_v3::{Decoder, Mixer, Shape};
use super::layers::attention::{self, Attention};
use super::layers::grouped_moe::{self, HfDefaults, Scoring};
use super::layers::rope::{Rope, Style, Tables};
use super::rope_config::RopeConfig;
use super::values::{self, refuse_hf, HfRefusal};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::engine::cache::Cache;
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "glm4_moe",
    kind: Kind::Moe,
    hf_architectures: &["Glm4MoeForCausalLM"],
    gguf_architectures: &["glm4moe"],
    gguf_variants: &[],
    gguf_names: &[
        (
            "model.layers.{}.post_attention_layernorm.weight",
            "blk.{}.post_attention_norm.weight",
        ),
        (
            "model.layers.{}.mlp.gate.e_score_correction_bias",
            "blk.{}.exp_probs_b.bias",
        ),
        (
            "model.layers.{}.mlp.shared_experts.gate_proj.weight",
            "blk.{}.ffn_gate_shexp.weight",
        ),
        (
            "model.layers.{}.mlp.shared_experts.up_proj.weight",
            "blk.{}.ffn_up_shexp.weight",
        ),
        (
            "model.layers.{}.mlp.shared_experts.down_proj.weight",
            "blk.{}.ffn_down_shexp.weight",
        ),
    ],
    quirks: Quirks {
        gguf_tensor_flags: &[
            ("attention_bias", "blk.0.attn_q.bias"),
            ("use_qk_norm", "blk.0.attn_q_norm.weight"),
        ],
        ..Quirks::NONE
    },
    default_template: "chatml",
    hf_model_type: "glm4_moe",
    hf_config_keys: &[
        ("n_routed_experts", "expert_count"),
        ("n_shared_experts", "expert_shared_count"),
        ("first_k_dense_replace", "leading_dense_block_count"),
        ("n_group", "expert_group_count"),
        ("topk_group", "expert_group_used_count"),
        ("routed_scaling_factor", "expert_weights_scale"),
        ("norm_topk_prob", "expert_weights_norm"),
    ],
    // What the GGUF reader takes for an absent key where transformers' class differs.
    hf_config_defaults: &[
        ("first_k_dense_replace", "0"),
        ("n_shared_experts", "0"),
        ("norm_topk_prob", "false"),
    ],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q.bias",
            "attn_q_norm.weight",
            "attn_k.weight",
            "attn_k.bias",
            "attn_k_norm.weight",
            "attn_v.weight",
            "attn_v.bias",
            "attn_output.weight",
            "post_attention_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "ffn_gate_inp.weight",
            "exp_probs_b.bias",
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_gate_shexp.weight",
            "ffn_up_shexp.weight",
            "ffn_down_shexp.weight",
        ],
        metadata: &[
            // Half of the tiny heads' 16 dimensions rotate.
            ("rope.dimension_count", 8),
            ("leading_dense_block_count", 1),
            ("expert_count", 4),
            ("expert_used_count", 2),
            ("expert_group_count", 2),
            ("expert_group_used_count", 1),
            ("expert_gating_func", 2),
            ("expert_shared_count", 1),
            ("expert_feed_forward_length", 32),
        ],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g),
        ConfigSource::Hf(h) => Config::from_hf(h),
    }
}

/// GLM-4.x MoE's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks, width, heads, head width, vocabulary and context.
    pub dims: Dims,
    /// RMSNorm epsilon (the Q/K norms' too).
    pub eps: f64,
    /// RoPE base and scaling.
    pub rope: RopeConfig,
    /// Rotated dimensions of each head (the leading ones).
    pub rotary_dims: usize,
    /// Q/K/V projections have biases (`attention_bias`).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on Q and K (`use_qk_norm`).
    pub qk_norm: bool,
    /// Width of the dense MLP of the leading blocks (`intermediate_size`).
    pub ffn: usize,
    /// Leading blocks with a dense MLP (`first_k_dense_replace`).
    pub first_dense: usize,
    /// The mixture of experts of the other blocks.
    pub moe: grouped_moe::Config,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`super::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

/// `Glm4MoeConfig`'s router defaults.
const HF_MOE_DEFAULTS: HfDefaults = HfDefaults {
    n_used: 8,
    ffn: 1408,
    n_shared: 1,
    n_group: 1,
    topk_group: 1,
    norm_topk_prob: true,
    scale: 1.0,
};

const HF_REFUSED: &[HfRefusal] = &[HfRefusal {
    key: "hidden_act",
    accepted: &["\"silu\""],
    supported: "silu",
}];

impl Config {
    /// Reads `glm4moe.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = "glm4moe";
        let k = |s: &str| format!("{arch}.{s}");
        let opt = |s: &str| g.opt(&k(s), Gguf::usize);
        let blocks = g.usize(&k("block_count"))?;
        let mtp = opt("nextn_predict_layers")?.unwrap_or(0);
        let n_layers = blocks.checked_sub(mtp).ok_or_else(|| {
            let file = g.path().display().to_string();
            values::refused(
                &file,
                &k("nextn_predict_layers"),
                mtp,
                "at most block_count",
            )
        })?;
        let (hidden, n_heads) = (
            g.usize(&k("embedding_length"))?,
            g.usize(&k("attention.head_count"))?,
        );
        let head_dim = opt("attention.key_length")?.unwrap_or(hidden / n_heads.max(1));
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads: opt("attention.head_count_kv")?.unwrap_or(n_heads),
                head_dim,
                vocab_size: gguf_vocab_size(g)?,
                context_length: g.usize(&k("context_length"))?,
            },
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            rope: RopeConfig::from_gguf(g, arch, 10_000.0)?,
            rotary_dims: opt("rope.dimension_count")?.unwrap_or(head_dim / 2),
            qkv_bias: g.has_tensor("blk.0.attn_q.bias"),
            qk_norm: g.has_tensor("blk.0.attn_q_norm.weight"),
            ffn: g.usize(&k("feed_forward_length"))?,
            first_dense: opt("leading_dense_block_count")?.unwrap_or(0),
            moe: grouped_moe::Config::from_gguf(g, arch, Scoring::Sigmoid)?,
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` as `Glm4MoeConfig` does.
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        refuse_hf(h, HF_REFUSED)?;
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let head_dim = h
            .opt_usize_or("head_dim", None)?
            .unwrap_or(hidden / n_heads.max(1));
        let (rope, partial) = RopeConfig::from_hf_partial(h, 10_000.0, 0.5, &[])?;
        let tied = h.opt_bool("tie_word_embeddings")?.unwrap_or(false);
        let or = |key: &str, default: usize| -> Result<usize> {
            h.opt_usize_or(key, Some(default))?
                .ok_or_else(|| values::refused(h.origin(), key, "null", "a number"))
        };
        let cfg = Self {
            dims: Dims {
                n_layers: h.usize("num_hidden_layers")?,
                hidden,
                n_heads,
                n_kv_heads: or("num_key_value_heads", 8)?,
                head_dim,
                vocab_size: h.usize("vocab_size")?,
                context_length: or("max_position_embeddings", 131_072)?,
            },
            eps: h.opt_positive("rms_norm_eps")?.unwrap_or(1e-5),
            rope,
            // transformers' `int(head_dim * partial_rotary_factor)`.
            rotary_dims: (head_dim as f64 * partial) as usize,
            qkv_bias: h.opt_bool("attention_bias")?.unwrap_or(false),
            qk_norm: h.opt_bool("use_qk_norm")?.unwrap_or(false),
            ffn: or("intermediate_size", 10944)?,
            first_dense: or("first_k_dense_replace", 1)?,
            moe: grouped_moe::Config::from_hf(h, &HF_MOE_DEFAULTS, Scoring::Sigmoid)?,
            untied_in: (!tied).then(|| h.origin().to_string()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self) -> Result<()> {
        let d = &self.dims;
        let bad = |m: String| Err(Error::UnsupportedConfig(m));
        if d.n_layers == 0 || d.hidden == 0 || d.n_heads == 0 || d.head_dim == 0 {
            return bad(format!("degenerate dimensions {d:?}"));
        }
        if d.n_kv_heads == 0 || !d.n_heads.is_multiple_of(d.n_kv_heads) {
            return bad(format!(
                "{} query heads cannot be grouped over {} KV heads",
                d.n_heads, d.n_kv_heads
            ));
        }
        let r = self.rotary_dims;
        if r == 0 || r > d.head_dim || !r.is_multiple_of(2) {
            return bad(format!(
                "{r} rotary dimensions in heads of {}; supported: an even number up to the \
                 head width",
                d.head_dim
            ));
        }
        if self.first_dense > d.n_layers {
            return bad(format!(
                "first_k_dense_replace {} of {} layers",
                self.first_dense, d.n_layers
            ));
        }
        if self.first_dense < d.n_layers {
            self.moe.validate()?;
        }
        Ok(())
    }

    /// The attention layer of every block.
    pub fn attention(&self) -> attention::Config {
        let d = &self.dims;
        attention::Config {
            hidden: d.hidden,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            head_dim: d.head_dim,
            scale: 1.0 / (d.head_dim as f64).sqrt(),
            qkv_bias: self.qkv_bias,
            o_bias: false,
            fused_qkv: false,
            qk_norm: self.qk_norm.then_some((self.eps, false)),
            sliding_window: None,
            softcap: None,
            scale_queries: false,
        }
    }
}

impl Mixer for Attention {
    fn mix(
        &self,
        x: &Tensor,
        rope: (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<Tensor> {
        self.forward(x, rope, cache, layer)
    }

    fn cache_kind(&self) -> LayerKind {
        Attention::cache_kind(self)
    }
}

/// A GLM-4.x MoE model: DeepSeek-V3's decoder ([`Decoder`]) with grouped-query attention.
pub struct Model(Decoder<Attention>);

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        // NeoX pairs over the rotated part; `Rope::apply` passes the rest of each head.
        let rope = cfg.rope.build(vb, cfg.rotary_dims, Style::HalfSplit)?;
        let shape = Shape {
            dims: &cfg.dims,
            eps: cfg.eps,
            ffn: cfg.ffn,
            first_dense: cfg.first_dense,
            moe: &cfg.moe,
            untied_in: cfg.untied_in.as_deref(),
        };
        let info = ModelInfo::new(&SPEC, cfg.dims);
        let attention = cfg.attention();
        let mixer = |b: &Vb| Attention::load(b, &attention);
        Ok(Self(Decoder::load(vb, &shape, (rope, info), mixer)?))
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        self.0.forward(tokens, ctx)
    }

    fn info(&self) -> &ModelInfo {
        self.0.info()
    }

    fn cache_layout(&self) -> Vec<LayerKind> {
        self.0.cache_layout()
    }
}

#[cfg(test)]
mod tests;
