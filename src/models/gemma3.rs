//! Gemma 3 text models (HF `Gemma3ForCausalLM`; GGUF `gemma3`).
//!
//! Differences from llama: embeddings scaled by `sqrt(hidden)`; RMSNorm as `(1 + w)` (folded
//! into the weights by llama.cpp's converter, a declared quirk); norms before *and after*
//! attention and MLP; per-head Q/K norm; GeGLU (GELU-tanh gate — not SiLU); local layers with
//! a sliding window and RoPE base 10k, and global layers with the long RoPE base (and linear
//! scaling when configured) — `layer_types` in `config.json`, else every
//! `sliding_window_pattern`-th layer (6); NeoX RoPE; tied output layer by default. Scores are
//! scaled by `query_pre_attn_scalar^-1/2` (default 256) and optionally soft-capped
//! (`attn_logit_softcapping`), logits too (`final_logit_softcapping`); `attention_bias` adds
//! biases to q, k, v and o; bidirectional attention is refused.
//!
//! GGUF: llama.cpp's converter drops `query_pre_attn_scalar`; llama.cpp scales by
//! `1/sqrt(head_dim)`, except for the 62-layer 27B, whose scalar is `hidden / heads` — read
//! the same here unless the file has `gemma3.attention.scale`. A file without
//! `attention.sliding_window` (the converter's form of `sliding_window_pattern` 1) has only
//! global layers, as in llama.cpp.
//! References: HF `modeling_gemma3.py`, llama.cpp `src/models/gemma3.cpp`.

use candle_core::{DType, Device, Tensor};

use super::assembly::{gguf_vocab_size, output_layer, Dims};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::recipe::{self, BlockParts, FfnParts, Recipe};
use super::rope_config::{RopeConfig, RopeScaling};
use super::values::{self, refuse_gguf, refuse_hf, HfRefusal};
use super::{
    Cache, CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks,
    TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "gemma3",
    kind: Kind::Dense,
    hf_architectures: &["Gemma3ForCausalLM"],
    gguf_architectures: &["gemma3"],
    gguf_variants: &[],
    gguf_names: &[
        (
            "model.layers.{}.self_attn.o_proj.bias",
            "blk.{}.attn_output.bias",
        ),
        (
            "model.layers.{}.post_attention_layernorm.weight",
            "blk.{}.post_attention_norm.weight",
        ),
        (
            "model.layers.{}.pre_feedforward_layernorm.weight",
            "blk.{}.ffn_norm.weight",
        ),
        (
            "model.layers.{}.post_feedforward_layernorm.weight",
            "blk.{}.post_ffw_norm.weight",
        ),
    ],
    quirks: Quirks {
        norm_unit_offset: true,
        gguf_norm_unit_offset_folded: true,
        ..Quirks::NONE
    },
    default_template: "gemma",
    hf_model_type: "gemma3_text",
    hf_config_keys: &[
        ("rope_local_base_freq", "rope.freq_base_swa"),
        ("sliding_window_pattern", "attention.sliding_window_pattern"),
        // What llama.cpp scales by (see the module doc; the 27B's hidden / heads aside).
        ("query_pre_attn_scalar", "attention.key_length"),
    ],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
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
            "post_attention_norm.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "post_ffw_norm.weight",
        ],
        metadata: &[
            ("attention.key_length", 24),
            ("attention.value_length", 24),
            ("attention.sliding_window", 3),
            ("attention.sliding_window_pattern", 2),
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

/// `config.json` values `Gemma3TextConfig` accepts but this build does not implement.
const HF_REFUSED: &[HfRefusal] = &[
    HfRefusal {
        key: "hidden_activation",
        accepted: &["\"gelu_pytorch_tanh\""],
        supported: "gelu_pytorch_tanh",
    },
    HfRefusal {
        key: "use_bidirectional_attention",
        accepted: &["false"],
        supported: "false (causal attention)",
    },
];

/// Gemma 3's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks.
    pub n_layers: usize,
    /// Model width.
    pub hidden: usize,
    /// MLP width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head (`attention.key_length`).
    pub head_dim: usize,
    /// Output rows.
    pub vocab_size: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE of global layers (base and scaling).
    pub rope_global: RopeConfig,
    /// RoPE base of sliding-window layers (never scaled).
    pub rope_local_base: f64,
    /// Window of local layers (`None`: they see every position, with the local RoPE).
    pub sliding_window: Option<usize>,
    /// Per layer: true for a local (sliding-window) layer, false for a global one.
    pub local: Vec<bool>,
    /// Score multiplier (`query_pre_attn_scalar^-1/2`).
    pub attn_scale: f64,
    /// Soft-cap of the attention scores, when set.
    pub attn_softcap: Option<f64>,
    /// Q, K, V and O projections have biases (`attention_bias`).
    pub attn_bias: bool,
    /// Soft-cap of the final logits, when set.
    pub final_softcap: Option<f64>,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`super::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

impl Config {
    /// Reads `gemma3.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let k = |s: &str| format!("gemma3.{s}");
        refuse_gguf(g, "gemma3", values::GGUF_COMMON)?;
        let hidden = g.usize(&k("embedding_length"))?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let n_layers = g.usize(&k("block_count"))?;
        let head_dim = match g.opt(&k("attention.key_length"), Gguf::usize)? {
            Some(d) => d,
            None => hidden / n_heads.max(1),
        };
        for (key, what) in [
            ("attention.value_length", "value heads of another width"),
            ("rope.dimension_count", "partial RoPE"),
        ] {
            if let Some(d) = g.opt(&k(key), Gguf::usize)?.filter(|&d| d != head_dim) {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k(key),
                    d,
                    &format!("{head_dim}, the head width ({what} is not implemented)"),
                ));
            }
        }
        let sliding_window = g
            .opt(&k("attention.sliding_window"), Gguf::usize)?
            .filter(|&w| w > 0);
        let pattern = g
            .opt(&k("attention.sliding_window_pattern"), Gguf::usize)?
            .unwrap_or(6);
        // llama.cpp's rule (the converter drops query_pre_attn_scalar): the 27B (62 layers)
        // scales by hidden / heads, every other size by the head width.
        let scalar = match n_layers {
            62 => hidden / n_heads.max(1),
            _ => head_dim,
        };
        let cfg = Self {
            n_layers,
            hidden,
            ffn: g.usize(&k("feed_forward_length"))?,
            n_heads,
            n_kv_heads: g
                .opt(&k("attention.head_count_kv"), Gguf::usize)?
                .unwrap_or(n_heads),
            head_dim,
            vocab_size: gguf_vocab_size(g)?,
            context_length: g.usize(&k("context_length"))?,
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            rope_global: RopeConfig::from_gguf(g, "gemma3", 1_000_000.0)?,
            rope_local_base: values::opt_positive(g, &k("rope.freq_base_swa"))?.unwrap_or(10_000.0),
            local: (0..n_layers)
                .map(|i| sliding_window.is_some() && !(i + 1).is_multiple_of(pattern.max(1)))
                .collect(),
            sliding_window,
            attn_scale: match values::opt_positive(g, &k("attention.scale"))? {
                Some(s) => s,
                None => 1.0 / (scalar as f64).sqrt(),
            },
            attn_softcap: values::opt_positive(g, &k("attn_logit_softcapping"))?,
            attn_bias: g.has_tensor("blk.0.attn_q.bias"),
            final_softcap: values::opt_positive(g, &k("final_logit_softcapping"))?,
            untied_in: None,
        };
        cfg.validate(pattern)?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (`gemma3_text`; for a multimodal Gemma 3
    /// checkpoint, the `text_config` [`super::hf_model`] found), with `Gemma3TextConfig`'s
    /// defaults.
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        refuse_hf(h, HF_REFUSED)?;
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let head_dim = h.opt_usize("head_dim")?.unwrap_or(256);
        let n_layers = h.usize("num_hidden_layers")?;
        // Newer configs list every layer's kind; older ones give the period.
        let pattern = h.opt_usize("sliding_window_pattern")?.unwrap_or(6);
        let local = match values::sliding_layers(h, n_layers)? {
            Some(local) => local,
            None => (0..n_layers)
                .map(|i| !(i + 1).is_multiple_of(pattern.max(1)))
                .collect(),
        };
        let (rope_global, rope_local_base) = hf_ropes(h)?;
        let cfg = Self {
            n_layers,
            hidden,
            ffn: h.usize("intermediate_size")?,
            n_heads,
            n_kv_heads: h.opt_usize("num_key_value_heads")?.unwrap_or(4),
            head_dim,
            vocab_size: h.usize("vocab_size")?,
            context_length: h.opt_usize("max_position_embeddings")?.unwrap_or(131_072),
            eps: h.opt_positive("rms_norm_eps")?.unwrap_or(1e-6),
            rope_global,
            rope_local_base,
            sliding_window: h.opt_usize_or("sliding_window", Some(4096))?,
            local,
            attn_scale: 1.0
                / h.opt_positive("query_pre_attn_scalar")?
                    .unwrap_or(256.0)
                    .sqrt(),
            attn_softcap: h.opt_positive("attn_logit_softcapping")?,
            attn_bias: h.opt_bool("attention_bias")?.unwrap_or(false),
            final_softcap: h.opt_positive("final_logit_softcapping")?,
            untied_in: match h.opt_bool("tie_word_embeddings")? {
                Some(false) => Some(h.origin().to_string()),
                _ => None,
            },
        };
        cfg.validate(pattern)?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self, pattern: usize) -> Result<()> {
        if self.sliding_window == Some(0) {
            return Err(Error::UnsupportedConfig(
                "gemma3: sliding_window 0 leaves a query nothing to attend to; supported: a \
                 window of at least 1, or none"
                    .into(),
            ));
        }
        let ok = self.n_layers > 0
            && self.hidden > 0
            && self.head_dim > 0
            && self.head_dim.is_multiple_of(2)
            && self.vocab_size > 0
            && self.n_kv_heads > 0
            && self.n_heads.is_multiple_of(self.n_kv_heads)
            && pattern > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::UnsupportedConfig(format!(
                "gemma3: inconsistent dimensions {self:?} (sliding_window_pattern {pattern})"
            )))
        }
    }
}

/// The RoPE of global layers and the base of sliding-window layers: transformers 5's
/// per-layer-type `rope_parameters`, or the older `rope_theta` + `rope_scaling` (global) and
/// `rope_local_base_freq` (local, never scaled).
fn hf_ropes(h: &HfConfig) -> Result<(RopeConfig, f64)> {
    let global = RopeConfig::from_hf_layer_type(h, "full_attention", 1_000_000.0)?;
    let local = RopeConfig::from_hf_layer_type(h, "sliding_attention", 10_000.0)?;
    match (global, local) {
        (Some(global), Some(local)) => {
            if local.scaling != RopeScaling::None {
                return Err(Error::UnsupportedConfig(format!(
                    "{}: rope_parameters.sliding_attention scales RoPE ({:?}); supported for \
                     gemma3's sliding-window layers: rope_type 'default'",
                    h.origin(),
                    local.scaling
                )));
            }
            Ok((global, local.base))
        }
        _ => Ok((
            RopeConfig::from_hf(h, 1_000_000.0)?,
            h.opt_positive("rope_local_base_freq")?.unwrap_or(10_000.0),
        )),
    }
}
/// One Gemma 3 block: sandwich norms around attention and MLP.
#[derive(Clone, Debug)]
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_mlp_norm: RmsNorm,
    mlp: Mlp,
    post_mlp_norm: RmsNorm,
    global: bool,
}

impl Block {
    /// The block on `x`: `attend` (this block's attention, on the normed input, reaching the
    /// cache however the pass does) and the GeGLU MLP, each normed on both sides, with
    /// residuals.
    fn run(&self, x: &Tensor, attend: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let a = attend(&self.input_norm.forward(x)?)?;
        let h = (x + self.post_attn_norm.forward(&a)?)?;
        let f = self.mlp.forward(&self.pre_mlp_norm.forward(&h)?)?;
        Ok((&h + self.post_mlp_norm.forward(&f)?)?)
    }

    fn load(vb: &Vb, cfg: &Config, layer: usize, unit_offset: bool) -> Result<Self> {
        let global = !cfg.local[layer];
        let attn_cfg = attention::Config {
            hidden: cfg.hidden,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: cfg.attn_scale,
            qkv_bias: cfg.attn_bias,
            o_bias: cfg.attn_bias,
            fused_qkv: false,
            qk_norm: Some((cfg.eps, unit_offset)),
            sliding_window: cfg.sliding_window.filter(|_| !global),
            softcap: cfg.attn_softcap,
            scale_queries: true,
        };
        let norm = |name: &str| RmsNorm::load(&vb.pp(name), cfg.hidden, cfg.eps, unit_offset);
        Ok(Self {
            input_norm: norm("input_layernorm")?,
            attn: Attention::load(&vb.pp("self_attn"), &attn_cfg)?,
            post_attn_norm: norm("post_attention_layernorm")?,
            pre_mlp_norm: norm("pre_feedforward_layernorm")?,
            mlp: Mlp::load(
                &vb.pp("mlp"),
                cfg.hidden,
                cfg.ffn,
                Activation::GeluTanh,
                false,
            )?,
            post_mlp_norm: norm("post_feedforward_layernorm")?,
            global,
        })
    }
}

/// A Gemma 3 model.
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope_local: Rope,
    rope_global: Rope,
    final_softcap: Option<f64>,
    info: ModelInfo,
}

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let format = vb.weights().format();
        let style = super::rope_style(SPEC.quirks, format);
        let unit_offset = super::norm_unit_offset(SPEC.quirks, format);
        let rope_global = cfg.rope_global.build(vb, cfg.head_dim, style)?;
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), cfg, i, unit_offset))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: Embedding::new(table.clone(), Some((cfg.hidden as f64).sqrt())),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), cfg.hidden, cfg.eps, unit_offset)?,
            lm_head: output_layer(
                vb,
                &table,
                (cfg.hidden, cfg.vocab_size),
                cfg.untied_in.as_deref(),
            )?,
            rope_local: Rope::new(cfg.head_dim, cfg.rope_local_base, style),
            rope_global,
            final_softcap: cfg.final_softcap,
            info: ModelInfo::new(
                &SPEC,
                Dims {
                    n_layers: cfg.n_layers,
                    hidden: cfg.hidden,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    head_dim: cfg.head_dim,
                    vocab_size: cfg.vocab_size,
                    context_length: cfg.context_length,
                },
            ),
        })
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let (pos, dev) = (ctx.cache.pos(), tokens.device());
        let local = self.rope_local.tables(pos, l, dev)?;
        let global = self.rope_global.tables(pos, l, dev)?;
        // 1. Embed and scale: (1, L) -> (1, L, hidden).
        let mut x = self.embed.forward(tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let rope = if b.global {
                (&self.rope_global, &global)
            } else {
                (&self.rope_local, &local)
            };
            // 2-3. Attention and GeGLU MLP, each normed on both sides, with residuals.
            x = b.run(&x, |n| b.attn.forward(n, rope, ctx.cache, i))?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm, tied output layer, optional soft-cap -> (vocab).
        let x = self.norm.forward(&x.narrow(1, l - 1, 1)?)?;
        let logits = self
            .lm_head
            .forward(&x)?
            .flatten_all()?
            .to_dtype(DType::F32)?;
        Ok(match self.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut Cache],
        device: &Device,
    ) -> Result<Tensor> {
        let local = self.rope_local.tables_each(caches, device)?;
        let global = self.rope_global.tables_each(caches, device)?;
        // 1. Embed and scale: (B, 1) -> (B, 1, hidden), one row per sequence.
        let mut x = self
            .embed
            .forward(&Tensor::new(tokens, device)?.unsqueeze(1)?)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let (rope, t) = match b.global {
                true => (&self.rope_global, &global),
                false => (&self.rope_local, &local),
            };
            // 2-3. Each row attends to its own sequence's keys; the rest is row-wise.
            x = b.run(&x, |n| b.attn.forward_batch(n, rope, t, caches, i))?;
        }
        // 4. Norm, tied output layer, optional soft-cap -> (B, vocab).
        let logits = self
            .lm_head
            .forward(&self.norm.forward(&x)?)?
            .squeeze(1)?
            .to_dtype(DType::F32)?;
        Ok(match self.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn cache_layout(&self) -> Vec<LayerKind> {
        self.blocks.iter().map(|b| b.attn.cache_kind()).collect()
    }

    fn recipe(&self) -> std::result::Result<Recipe, recipe::Unsupported> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                recipe::Block::new(BlockParts {
                    attn_norm: &b.input_norm,
                    attn: &b.attn,
                    rope: match b.global {
                        true => &self.rope_global,
                        false => &self.rope_local,
                    },
                    post_attn_norm: Some(&b.post_attn_norm),
                    ffn_norm: &b.pre_mlp_norm,
                    ffn: FfnParts::Dense(&b.mlp),
                    post_ffn_norm: Some(&b.post_mlp_norm),
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Recipe::new(
            &self.embed,
            blocks,
            &self.norm,
            &self.lm_head,
            self.final_softcap,
        )
    }
}

#[cfg(test)]
mod tests;
