//! DeepSeek-V3's configuration: `config.json` as `DeepseekV3Config` or `DeepseekV2Config`
//! reads it, or the `deepseek2.*` metadata llama.cpp's converter writes (for V2 and V3 alike).

use super::super::assembly::{gguf_vocab_size, Dims};
use super::super::layers::grouped_moe::{self, GroupRank, HfDefaults, Scoring};
use super::super::layers::mla;
use super::super::rope_config::{yarn_mscale, RopeConfig, RopeScaling};
use super::super::values::{self, refuse_hf, HfRefusal};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::{Error, Result};

/// DeepSeek-V3's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks, width, heads, vocabulary and context. As llama.cpp's GGUF states them, the
    /// attention is one key/value head (`n_kv_heads` 1) of width `kv_lora_rank + rope`.
    pub dims: Dims,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base and scaling (over the rotary dimensions only).
    pub rope: RopeConfig,
    /// RoPE pairs `(2i, 2i + 1)` (`rope_interleave`; always in GGUF) rather than half-split.
    pub rope_interleave: bool,
    /// The attention of every block.
    pub mla: mla::Config,
    /// Width of the dense MLP of the leading blocks (`intermediate_size`).
    pub ffn: usize,
    /// Leading blocks with a dense MLP (`first_k_dense_replace`).
    pub first_dense: usize,
    /// The mixture of experts of the other blocks.
    pub moe: grouped_moe::Config,
    /// Multi-token-prediction blocks after the model's own (not used).
    pub mtp_layers: usize,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`super::super::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

/// What `DeepseekV3Config` and `DeepseekV2Config` read differently: their defaults for keys
/// a file may leave out, and the values their classes cannot run.
struct HfClass {
    /// `intermediate_size`.
    ffn: usize,
    /// `first_k_dense_replace`.
    first_dense: usize,
    /// `max_position_embeddings`.
    context: usize,
    /// Keys refused unless accepted.
    refused: &'static [HfRefusal],
}

const V3: HfClass = HfClass {
    ffn: 18432,
    first_dense: 3,
    context: 4096,
    refused: V3_REFUSED,
};

const V2: HfClass = HfClass {
    ffn: 11008,
    first_dense: 0,
    context: 2048,
    refused: V2_REFUSED,
};

/// `DeepseekV3Config`'s router defaults.
const HF_MOE_DEFAULTS: HfDefaults = HfDefaults {
    n_used: 8,
    ffn: 2048,
    n_shared: 1,
    n_group: 8,
    topk_group: 4,
    norm_topk_prob: true,
    scale: 2.5,
};

/// What both classes refuse.
const REFUSED: &[HfRefusal] = &[
    HfRefusal {
        key: "hidden_act",
        accepted: &["\"silu\""],
        supported: "silu",
    },
    HfRefusal {
        key: "attention_bias",
        accepted: &["false"],
        supported: "false (llama.cpp's deepseek2 has no attention biases either)",
    },
];

const V3_REFUSED: &[HfRefusal] = &[HfRefusal {
    key: "scoring_func",
    // 2 is llama.cpp's number for sigmoid, as an export of a GGUF writes it.
    accepted: &["\"sigmoid\"", "2"],
    supported: "sigmoid (DeepseekV3's router)",
}];

const V2_REFUSED: &[HfRefusal] = &[
    HfRefusal {
        key: "mlp_bias",
        accepted: &["false"],
        supported: "false",
    },
    HfRefusal {
        key: "scoring_func",
        accepted: &["\"softmax\""],
        supported: "softmax (DeepseekV2's router)",
    },
    HfRefusal {
        key: "norm_topk_prob",
        accepted: &["false"],
        supported: "false (transformers' DeepseekV2 router never normalises the chosen \
                    weights; DeepSeek's own code would, without routed_scaling_factor)",
    },
    HfRefusal {
        key: "moe_layer_freq",
        accepted: &["1"],
        supported: "1 (experts in every block from first_k_dense_replace on, as \
                    transformers' DeepseekV2 builds them)",
    },
];

/// `DeepseekV2Config`'s router: softmax scores, no selection bias, no normalisation;
/// `topk_method` `greedy` (the default: the best experts of all, `n_group` and `topk_group`
/// unread) or `group_limited_greedy` (groups ranked by their best score). Its
/// `num_experts_per_tok` has no default, nor do the groups of `group_limited_greedy`.
fn v2_router(h: &HfConfig) -> Result<grouped_moe::Config> {
    let number = |key: &str, default: Option<usize>| {
        h.opt_usize_or(key, default)?
            .ok_or_else(|| values::refused(h.origin(), key, "null", "a number"))
    };
    let (n_group, topk_group) = match h.map().get("topk_method") {
        None => (1, 1),
        Some(v) if *v == "greedy" => (1, 1),
        Some(v) if *v == "group_limited_greedy" => {
            (number("n_group", None)?, number("topk_group", None)?)
        }
        Some(v) => {
            return Err(values::refused(
                h.origin(),
                "topk_method",
                v,
                "\"greedy\", \"group_limited_greedy\" (DeepseekV2's router)",
            ))
        }
    };
    let ffn = number("moe_intermediate_size", Some(1407))?;
    Ok(grouped_moe::Config {
        n_experts: number("n_routed_experts", Some(64))?,
        n_used: number("num_experts_per_tok", None)?,
        ffn,
        shared_ffn: number("n_shared_experts", Some(2))? * ffn,
        n_group,
        topk_group,
        group_rank: GroupRank::Best,
        scoring: Scoring::Softmax,
        norm_topk_prob: false,
        scale: h.opt_positive("routed_scaling_factor")?.unwrap_or(1.0) as f32,
    })
}

/// The multiplier of `q·k`: `1/sqrt(nope + rope)`, times `mscale²` where YaRN's
/// `mscale_all_dim` is set (DeepSeek scales the whole score, not only the rotary part).
fn score_scale(qk_head: usize, rope: &RopeConfig, mscale_all_dim: f64) -> f64 {
    let base = 1.0 / (qk_head as f64).sqrt();
    match &rope.scaling {
        RopeScaling::Yarn(y) if mscale_all_dim != 0.0 => {
            let m = yarn_mscale(y.factor, mscale_all_dim);
            base * m * m
        }
        _ => base,
    }
}

impl Config {
    /// Reads `deepseek2.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = "deepseek2";
        let k = |s: &str| format!("{arch}.{s}");
        let file = g.path().display().to_string();
        let opt = |s: &str| g.opt(&k(s), Gguf::usize);
        let blocks = g.usize(&k("block_count"))?;
        let mtp_layers = opt("nextn_predict_layers")?.unwrap_or(0);
        let n_layers = blocks.checked_sub(mtp_layers).ok_or_else(|| {
            values::refused(
                &file,
                &k("nextn_predict_layers"),
                mtp_layers,
                "at most block_count",
            )
        })?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let kv_lora_rank = g.usize(&k("attention.kv_lora_rank"))?;
        let qk_rope = g.usize(&k("rope.dimension_count"))?;
        let Some(qk_head) = opt("attention.key_length_mla")? else {
            return Err(Error::UnsupportedConfig(format!(
                "{file}: no {} (an early deepseek2 GGUF with the unsplit kv_b tensor); \
                 supported: files with attn_k_b/attn_v_b, as llama.cpp's converter writes them",
                k("attention.key_length_mla")
            )));
        };
        let (rope, mscale_all_dim) = RopeConfig::from_gguf_deepseek(g, arch, 10_000.0)?;
        if matches!(rope.scaling, RopeScaling::Yarn(_)) && mscale_all_dim == 0.0 {
            return Err(values::refused(
                &file,
                &k("rope.scaling.yarn_log_multiplier"),
                "(absent)",
                "DeepSeek's YaRN with its mscale_all_dim (the converter writes 0.1 × it)",
            ));
        }
        let v_head = g.usize(&k("attention.value_length_mla"))?;
        let eps = values::positive(g, &k("attention.layer_norm_rms_epsilon"))?;
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden: g.usize(&k("embedding_length"))?,
                n_heads,
                n_kv_heads: 1,
                head_dim: kv_lora_rank + qk_rope,
                vocab_size: gguf_vocab_size(g)?,
                context_length: g.usize(&k("context_length"))?,
            },
            eps,
            mla: mla::Config {
                hidden: g.usize(&k("embedding_length"))?,
                n_heads,
                q_lora_rank: opt("attention.q_lora_rank")?.filter(|&r| r > 0),
                kv_lora_rank,
                qk_nope: qk_head.saturating_sub(qk_rope),
                qk_rope,
                v_head,
                eps,
                scale: score_scale(qk_head, &rope, mscale_all_dim),
            },
            rope,
            rope_interleave: true,
            ffn: g.usize(&k("feed_forward_length"))?,
            first_dense: opt("leading_dense_block_count")?.unwrap_or(0),
            moe: grouped_moe::Config::from_gguf(g, arch, Scoring::Softmax)?,
            mtp_layers,
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` as `DeepseekV3Config` does, or as
    /// `DeepseekV2Config` does for `DeepseekV2ForCausalLM`: its router (see `v2_router`),
    /// its defaults, and RoPE always in pairs `(2i, 2i + 1)` (it has no `rope_interleave`).
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        let v2 = h.architecture()? == "DeepseekV2ForCausalLM";
        let class = if v2 { &V2 } else { &V3 };
        refuse_hf(h, REFUSED)?;
        refuse_hf(h, class.refused)?;
        let required = |key: &str, v: Option<usize>| {
            v.ok_or_else(|| values::refused(h.origin(), key, "null", "a number"))
        };
        let or = |key: &str, default: usize| -> Result<usize> {
            required(key, h.opt_usize_or(key, Some(default))?)
        };
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let kv_lora_rank = or("kv_lora_rank", 512)?;
        let qk_rope = or("qk_rope_head_dim", 64)?;
        // `qk_head_dim` is what transformers saves beside the parts (and what an export of a
        // GGUF, which stores the sum, can write).
        let qk_nope = match h.opt_usize_or("qk_nope_head_dim", None)? {
            Some(n) => n,
            None => or("qk_head_dim", 192)?.saturating_sub(qk_rope),
        };
        let rope = RopeConfig::from_hf(h, 10_000.0)?;
        let params = h.sub("rope_parameters").or_else(|| h.sub("rope_scaling"));
        let mscale_all_dim = match &params {
            Some(p) => p.opt_float("mscale_all_dim")?.unwrap_or(0.0),
            None => 0.0,
        };
        let eps = h.opt_positive("rms_norm_eps")?.unwrap_or(1e-6);
        let tied = h.opt_bool("tie_word_embeddings")?.unwrap_or(false);
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads: 1,
                head_dim: kv_lora_rank + qk_rope,
                vocab_size: h.usize("vocab_size")?,
                context_length: or("max_position_embeddings", class.context)?,
            },
            eps,
            mla: mla::Config {
                hidden,
                n_heads,
                q_lora_rank: h.opt_usize_or("q_lora_rank", Some(1536))?,
                kv_lora_rank,
                qk_nope,
                qk_rope,
                v_head: or("v_head_dim", 128)?,
                eps,
                scale: score_scale(qk_nope + qk_rope, &rope, mscale_all_dim),
            },
            rope,
            rope_interleave: v2 || h.opt_bool("rope_interleave")?.unwrap_or(true),
            ffn: or("intermediate_size", class.ffn)?,
            first_dense: or("first_k_dense_replace", class.first_dense)?,
            moe: match v2 {
                true => v2_router(h)?,
                false => grouped_moe::Config::from_hf(h, &HF_MOE_DEFAULTS, Scoring::Sigmoid)?,
            },
            mtp_layers: h
                .opt_usize_or("num_nextn_predict_layers", Some(0))?
                .unwrap_or(0),
            untied_in: (!tied).then(|| h.origin().to_string()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self) -> Result<()> {
        let (d, m) = (&self.dims, &self.mla);
        let bad = |m: String| Err(Error::UnsupportedConfig(m));
        if d.n_layers == 0 || d.hidden == 0 || d.n_heads == 0 || m.kv_lora_rank == 0 {
            return bad(format!("degenerate dimensions {d:?}, {m:?}"));
        }
        if m.qk_nope == 0 || m.v_head == 0 {
            return bad(format!(
                "qk_nope_head_dim {} and v_head_dim {}; supported: both at least 1",
                m.qk_nope, m.v_head
            ));
        }
        if m.qk_rope == 0 || !m.qk_rope.is_multiple_of(2) {
            return bad(format!(
                "qk_rope_head_dim {} cannot take RoPE; supported: an even width",
                m.qk_rope
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

    /// Bytes the cache holds per token (all layers), with elements of `elem` bytes: the
    /// latent and the rotary key of every layer.
    pub fn cache_bytes_per_token(&self, elem: usize) -> usize {
        self.dims.n_layers * self.mla.cache_width() * elem
    }

    /// What a plain KV cache of the expanded keys and values would hold per token (every
    /// head's `nope + rope` key and `v` value), for comparison.
    pub fn expanded_kv_bytes_per_token(&self, elem: usize) -> usize {
        let m = &self.mla;
        self.dims.n_layers * m.n_heads * (m.qk_nope + m.qk_rope + m.v_head) * elem
    }
}

/// The router of a `deepseek2` GGUF in the transformers class that computes it, for export:
/// llama.cpp writes DeepSeek-V2 and V3 alike, the scores as `expert_gating_func` (1 or absent:
/// softmax; 2: sigmoid). A sigmoid file stays `DeepseekV3ForCausalLM` with
/// `scoring_func: sigmoid`; a softmax one becomes `DeepseekV2ForCausalLM` (`topk_method`
/// `greedy`, or `group_limited_greedy` with its groups). A softmax router that V2 does not
/// compute (a selection bias, normalised weights) is refused, not exported as another one.
pub fn hf_config_from_gguf(
    g: &Gguf,
    _arch: &str,
    c: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    use serde_json::json;
    let cfg = Config::from_gguf(g)?;
    let file = g.path().display().to_string();
    match cfg.moe.scoring {
        Scoring::Sigmoid => {
            c.insert("scoring_func".into(), json!("sigmoid"));
        }
        Scoring::Softmax => {
            let biased =
                (0..cfg.dims.n_layers).any(|i| g.has_tensor(&format!("blk.{i}.exp_probs_b.bias")));
            if biased || cfg.moe.norm_topk_prob {
                return Err(Error::UnsupportedConfig(format!(
                    "{file}: a softmax router (expert_gating_func 1) with {}: transformers' \
                     DeepseekV2 router has neither, so it cannot be exported as one",
                    if biased {
                        "a selection bias (exp_probs_b)"
                    } else {
                        "normalised weights (expert_weights_norm)"
                    }
                )));
            }
            let grouped = cfg.moe.n_group > 1;
            c.insert("architectures".into(), json!(["DeepseekV2ForCausalLM"]));
            c.insert("model_type".into(), json!("deepseek_v2"));
            c.insert("scoring_func".into(), json!("softmax"));
            c.insert(
                "topk_method".into(),
                json!(if grouped {
                    "group_limited_greedy"
                } else {
                    "greedy"
                }),
            );
        }
    }
    Ok(())
}
