//! Llama: Llama 2 / 3.x, SmolLM2, TinyLlama, Mistral (HF `LlamaForCausalLM`,
//! `MistralForCausalLM`; GGUF `llama`).
//!
//! Pre-norm decoder: RMSNorm → GQA attention → residual, RMSNorm → SwiGLU → residual.
//! llama3 RoPE scaling comes as precomputed per-frequency factors (`rope_freqs.weight`);
//! linear scaling from `rope.scaling.*`. Quirk: llama.cpp's converter permutes Q/K rows so
//! GGUF weights take interleaved RoPE. Qwen 2, Qwen 3, Qwen3-MoE, Mixtral, Phi-3 and SmolLM3
//! reuse this file with their options (biases, Q/K norm, fused projections, a
//! mixture-of-experts FFN, NoPE layers).

use candle_core::{Device, Tensor};

use super::assembly::{gguf_vocab_size, output_layer, Dims};
pub use super::hf_class::{HfClass, Sliding};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::moe::{self, SparseMoe};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::recipe::{self, BlockParts, FfnParts, Recipe};
use super::rope_config::RopeConfig;
use super::values::{self, refuse_gguf, refuse_hf, Accepted, GgufRefusal, HfRefusal};
use super::{
    Cache, CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks,
    TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::names::NamePair;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "llama",
    kind: Kind::Dense,
    hf_architectures: &["LlamaForCausalLM", "MistralForCausalLM"],
    gguf_architectures: &["llama"],
    gguf_variants: &[],
    gguf_names: BIAS_NAMES,
    quirks: Quirks {
        gguf_qk_permuted: true,
        ..Quirks::NONE
    },
    default_template: "chatml",
    hf_model_type: "llama",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: BLOCK_TENSORS,
        metadata: &[],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g, "llama"),
        ConfigSource::Hf(h) if h.architecture()? == "MistralForCausalLM" => {
            Config::from_hf(h, &MISTRAL)
        }
        ConfigSource::Hf(h) => Config::from_hf(h, &LLAMA),
    }
}

/// GGUF tensors of one llama block (shared with the families that reuse this file).
pub const BLOCK_TENSORS: &[&str] = &[
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

/// Name rows of the biases that [`crate::formats::names::COMMON`] lacks: the output
/// projection's and the MLP's (`attention_bias`, `mlp_bias`; llama.cpp loads them when a
/// llama or granite file has them).
pub const BIAS_NAMES: &[NamePair] = &[
    (
        "model.layers.{}.self_attn.o_proj.bias",
        "blk.{}.attn_output.bias",
    ),
    ("model.layers.{}.mlp.gate_proj.bias", "blk.{}.ffn_gate.bias"),
    ("model.layers.{}.mlp.up_proj.bias", "blk.{}.ffn_up.bias"),
    ("model.layers.{}.mlp.down_proj.bias", "blk.{}.ffn_down.bias"),
];

/// `LlamaConfig`.
pub const LLAMA: HfClass = HfClass {
    attention_bias: true,
    mlp_bias: true,
    sliding: Sliding::None,
    kv_heads: None,
    head_dim: None,
    rope_theta: 10_000.0,
    tied: false,
};

/// `MistralConfig`: no biases, a window of 4096 unless the file says otherwise, 8 KV heads.
pub const MISTRAL: HfClass = HfClass {
    attention_bias: false,
    mlp_bias: false,
    sliding: Sliding::Every {
        default: Some(4096),
    },
    kv_heads: Some(8),
    ..LLAMA
};

/// `config.json` values the llama-like classes accept but this build does not implement.
const HF_REFUSED: &[HfRefusal] = &[HfRefusal {
    key: "hidden_act",
    accepted: &["\"silu\""],
    supported: "silu",
}];

/// GGUF keys llama.cpp's llama-like graphs do not read and this build does not implement.
const GGUF_REFUSED: &[GgufRefusal] = &[
    GgufRefusal {
        key: "final_logit_softcapping",
        accepted: Accepted::Absent,
        supported: "no soft-capping in this architecture",
    },
    GgufRefusal {
        key: "attn_logit_softcapping",
        accepted: Accepted::Absent,
        supported: "no soft-capping in this architecture",
    },
];

/// Granite's scales, which the other llama-like architectures do not have.
const GGUF_SCALES: &[GgufRefusal] = &[
    GgufRefusal {
        key: "embedding_scale",
        accepted: Accepted::Absent,
        supported: "no embedding scale in this architecture (granite has one)",
    },
    GgufRefusal {
        key: "residual_scale",
        accepted: Accepted::Absent,
        supported: "no residual scale in this architecture (granite has one)",
    },
    GgufRefusal {
        key: "logit_scale",
        accepted: Accepted::Absent,
        supported: "no logit scale in this architecture (granite has one)",
    },
];

/// Configuration of a llama-like model; every default is explicit in `from_gguf`.
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
    /// Width of one head.
    pub head_dim: usize,
    /// Output rows.
    pub vocab_size: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base and scaling (GGUF stores llama3 scaling as the `rope_freqs` tensor).
    pub rope: RopeConfig,
    /// Each query sees at most this many positions (Mistral 7B v0.1), when set.
    pub sliding_window: Option<usize>,
    /// Layers that attend to every position although `sliding_window` is set (Qwen's
    /// `layer_types` / `max_window_layers`).
    pub full_layers: Vec<usize>,
    /// Layers without RoPE (SmolLM3's NoPE layers).
    pub nope_layers: Vec<usize>,
    /// Q/K/V projections have biases (Qwen 2; `attention_bias`).
    pub qkv_bias: bool,
    /// The output projection has a bias (`attention_bias` of Llama, Qwen 3, Granite).
    pub o_bias: bool,
    /// Gate, up and down projections have biases (`mlp_bias`).
    pub mlp_bias: bool,
    /// The score multiplier, when not `1/sqrt(head_dim)` (GGUF `attention.scale`, Granite's
    /// `attention_multiplier`).
    pub attn_scale: Option<f64>,
    /// Per-head Q/K RMSNorm (Qwen 3).
    pub qk_norm: bool,
    /// Q/K/V stacked in one `qkv_proj` (Phi-3).
    pub fused_qkv: bool,
    /// The feed-forward network of every block.
    pub ffn_kind: FfnKind,
    /// Set (to the file's name) when `config.json` says the output layer is not tied to the
    /// embedding: then `lm_head.weight` must exist (transformers would initialise it at
    /// random). GGUF files have no such key: `output.weight`, else the embedding.
    pub untied_in: Option<String>,
}

/// Which feed-forward network the blocks have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// SwiGLU with `gate_proj`, `up_proj`, `down_proj`.
    Dense,
    /// SwiGLU with the gate and up projections stacked in `gate_up_proj` (Phi-3).
    FusedGateUp,
    /// A sparse mixture of SwiGLU experts in every block.
    Moe(moe::Config),
}

impl Config {
    /// Reads `{arch}.*` metadata. Biases are taken from the tensors (llama.cpp loads them when
    /// present); a key that would change the maths in a way this build does not implement
    /// is refused.
    pub fn from_gguf(g: &Gguf, arch: &str) -> Result<Self> {
        let k = |s: &str| format!("{arch}.{s}");
        refuse_gguf(g, arch, values::GGUF_COMMON)?;
        refuse_gguf(g, arch, GGUF_REFUSED)?;
        if arch != "granite" {
            // Granite's graph reads these; llama.cpp's other llama-like graphs do not.
            refuse_gguf(g, arch, GGUF_SCALES)?;
        }
        let n_heads = g.usize(&k("attention.head_count"))?;
        let hidden = g.usize(&k("embedding_length"))?;
        let head_dim = match g.opt(&k("attention.key_length"), Gguf::usize)? {
            Some(d) => d,
            None if n_heads > 0 => hidden / n_heads,
            None => 0,
        };
        if let Some(vd) = g.opt(&k("attention.value_length"), Gguf::usize)? {
            if vd != head_dim {
                return Err(Error::UnsupportedConfig(format!(
                    "value_length {vd} differs from key_length {head_dim}; supported: equal"
                )));
            }
        }
        if let Some(rd) = g.opt(&k("rope.dimension_count"), Gguf::usize)? {
            if rd != head_dim {
                return Err(Error::UnsupportedConfig(format!(
                    "partial RoPE (rope.dimension_count {rd} < head_dim {head_dim}) is not supported"
                )));
            }
        }
        let has = |t: &str| g.has_tensor(&format!("blk.0.{t}"));
        let cfg = Self {
            n_layers: g.usize(&k("block_count"))?,
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
            rope: RopeConfig::from_gguf(g, arch, 10_000.0)?,
            sliding_window: g.opt(&k("attention.sliding_window"), Gguf::usize)?,
            full_layers: Vec::new(),
            nope_layers: Vec::new(),
            qkv_bias: has("attn_q.bias"),
            o_bias: has("attn_output.bias"),
            mlp_bias: ["ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"]
                .iter()
                .any(|t| has(t)),
            attn_scale: values::opt_positive(g, &k("attention.scale"))?,
            qk_norm: false,
            fused_qkv: false,
            ffn_kind: FfnKind::Dense,
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` as the transformers class `class` does.
    pub fn from_hf(h: &HfConfig, class: &HfClass) -> Result<Self> {
        refuse_hf(h, HF_REFUSED)?;
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let head_dim = match h.opt_usize("head_dim")? {
            Some(d) => d,
            None => class.head_dim.unwrap_or(hidden / n_heads.max(1)),
        };
        let attention_bias = class.attention_bias && h.opt_bool("attention_bias")?.unwrap_or(false);
        let (sliding_window, full_layers) = class.window(h, n_layers)?;
        let tied = h.opt_bool("tie_word_embeddings")?.unwrap_or(class.tied);
        let cfg = Self {
            n_layers,
            hidden,
            ffn: h.usize("intermediate_size")?,
            n_heads,
            n_kv_heads: match h.opt_usize("num_key_value_heads")? {
                Some(n) => n,
                None => class.kv_heads.unwrap_or(n_heads),
            },
            head_dim,
            vocab_size: h.usize("vocab_size")?,
            context_length: h.usize("max_position_embeddings")?,
            eps: h.positive("rms_norm_eps")?,
            rope: RopeConfig::from_hf(h, class.rope_theta)?,
            sliding_window,
            full_layers,
            nope_layers: Vec::new(),
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            mlp_bias: class.mlp_bias && h.opt_bool("mlp_bias")?.unwrap_or(false),
            attn_scale: None,
            qk_norm: false,
            fused_qkv: false,
            ffn_kind: FfnKind::Dense,
            untied_in: (!tied).then(|| h.origin().to_string()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::UnsupportedConfig(m));
        if self.n_layers == 0 || self.hidden == 0 || self.n_heads == 0 || self.head_dim == 0 {
            return bad(format!("degenerate dimensions {self:?}"));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} query heads cannot be grouped over {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("odd head_dim {} cannot take RoPE", self.head_dim));
        }
        if self.sliding_window == Some(0) {
            return bad(
                "sliding_window 0 leaves a query nothing to attend to; supported: \
                        a window of at least 1, or none"
                    .into(),
            );
        }
        if let FfnKind::Moe(m) = &self.ffn_kind {
            m.validate()?;
        }
        Ok(())
    }

    /// The dimensions, for [`ModelInfo`].
    pub fn dims(&self) -> Dims {
        Dims {
            n_layers: self.n_layers,
            hidden: self.hidden,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab_size,
            context_length: self.context_length,
        }
    }

    /// The attention layer of block `layer`.
    pub fn attention(&self, layer: usize) -> attention::Config {
        attention::Config {
            hidden: self.hidden,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            scale: self
                .attn_scale
                .unwrap_or(1.0 / (self.head_dim as f64).sqrt()),
            qkv_bias: self.qkv_bias,
            o_bias: self.o_bias,
            fused_qkv: self.fused_qkv,
            qk_norm: self.qk_norm.then_some((self.eps, false)),
            sliding_window: self
                .sliding_window
                .filter(|_| !self.full_layers.contains(&layer)),
            softcap: None,
            scale_queries: false,
        }
    }
}

/// A block's feed-forward network.
#[derive(Clone, Debug)]
enum Ffn {
    Dense(Mlp),
    Moe(SparseMoe),
}

impl Ffn {
    fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let (h, f, act) = (cfg.hidden, cfg.ffn, Activation::Silu);
        Ok(match &cfg.ffn_kind {
            FfnKind::Dense => Self::Dense(Mlp::load(&vb.pp("mlp"), h, f, act, cfg.mlp_bias)?),
            FfnKind::FusedGateUp => Self::Dense(Mlp::load_fused(&vb.pp("mlp"), h, f, act)?),
            FfnKind::Moe(m) => Self::Moe(SparseMoe::load(vb, h, m)?),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(m) => m.forward(x),
            Self::Moe(m) => m.forward(x),
        }
    }
}

/// One pre-norm decoder block.
#[derive(Clone, Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Ffn,
}

impl Block {
    /// The block on `x`: `attend` (this block's attention, on the normed input, reaching the
    /// cache however the pass does) and the feed-forward, each with its residual.
    fn run(&self, x: &Tensor, attend: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let h = (x + attend(&self.attn_norm.forward(x)?)?)?;
        Ok((&h + self.mlp.forward(&self.mlp_norm.forward(&h)?)?)?)
    }

    fn load(vb: &Vb, cfg: &Config, layer: usize) -> Result<Self> {
        Ok(Self {
            attn_norm: RmsNorm::load(&vb.pp("input_layernorm"), cfg.hidden, cfg.eps, false)?,
            attn: Attention::load_with(
                &vb.pp("self_attn"),
                &cfg.attention(layer),
                attention::Options {
                    no_rope: cfg.nope_layers.contains(&layer),
                    ..attention::Options::default()
                },
            )?,
            mlp_norm: RmsNorm::load(
                &vb.pp("post_attention_layernorm"),
                cfg.hidden,
                cfg.eps,
                false,
            )?,
            mlp: Ffn::load(vb, cfg)?,
        })
    }
}

/// A llama-like model.
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    info: ModelInfo,
}

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top) for the family `spec`.
    pub fn load(vb: &Vb, cfg: &Config, spec: &FamilySpec) -> Result<Self> {
        let style = super::rope_style(spec.quirks, vb.weights().format());
        let rope = cfg.rope.build(vb, cfg.head_dim, style)?;
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let lm_head = output_layer(
            vb,
            &table,
            (cfg.hidden, cfg.vocab_size),
            cfg.untied_in.as_deref(),
        )?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: Embedding::new(table, None),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), cfg.hidden, cfg.eps, false)?,
            lm_head,
            rope,
            info: ModelInfo::new(spec, cfg.dims()),
        })
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let tables = self.rope.tables(ctx.cache.pos(), l, tokens.device())?;
        // 1. Embed: (1, L) -> (1, L, hidden).
        let mut x = self.embed.forward(tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            // 2-3. Attention and feed-forward (dense or mixture of experts), with residuals.
            x = b.run(&x, |n| {
                b.attn.forward(n, (&self.rope, &tables), ctx.cache, i)
            })?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm and output layer -> (vocab).
        super::layers::head::last_position_logits(&self.norm, &self.lm_head, &x)
    }

    fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut Cache],
        device: &Device,
    ) -> Result<Tensor> {
        let tables = self.rope.tables_each(caches, device)?;
        // 1. Embed: (B, 1) -> (B, 1, hidden); every row goes through the same weights.
        let mut x = self
            .embed
            .forward(&Tensor::new(tokens, device)?.unsqueeze(1)?)?;
        for (i, b) in self.blocks.iter().enumerate() {
            // 2-3. Each row attends to its own sequence's keys; the rest is row-wise.
            x = b.run(&x, |n| {
                b.attn.forward_batch(n, &self.rope, &tables, caches, i)
            })?;
        }
        // 4. Norm and output layer: (B, 1, hidden) -> (B, vocab).
        let logits = self.lm_head.forward(&self.norm.forward(&x)?)?;
        Ok(logits.squeeze(1)?.to_dtype(candle_core::DType::F32)?)
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
                let ffn = match &b.mlp {
                    Ffn::Dense(mlp) => FfnParts::Dense(mlp),
                    Ffn::Moe(moe) => FfnParts::Experts(moe),
                };
                recipe::Block::new(BlockParts {
                    attn_norm: &b.attn_norm,
                    attn: &b.attn,
                    rope: &self.rope,
                    post_attn_norm: None,
                    ffn_norm: &b.mlp_norm,
                    ffn,
                    post_ffn_norm: None,
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Recipe::new(&self.embed, blocks, &self.norm, &self.lm_head, None)
    }
}

#[cfg(test)]
mod tests;
