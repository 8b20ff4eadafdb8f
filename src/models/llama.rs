//! Llama: Llama 2 / 3.x, SmolLM2, TinyLlama, Mistral (HF `LlamaForCausalLM`,
//! `MistralForCausalLM`; GGUF `llama`).
//!
//! Pre-norm decoder: RMSNorm → GQA attention → residual, RMSNorm → SwiGLU → residual.
//! llama3 RoPE scaling comes as precomputed per-frequency factors (`rope_freqs.weight`);
//! linear scaling from `rope.scaling.*`. Quirk: llama.cpp's converter permutes Q/K rows so
//! GGUF weights take interleaved RoPE. Qwen 2, Qwen 3, Qwen3-MoE, Mixtral and Phi-3 reuse this
//! file with their options (biases, Q/K norm, fused projections, a mixture-of-experts FFN).

use candle_core::{DType, Tensor};

use super::assembly::{gguf_vocab_size, output_layer, Dims};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::moe::{self, SparseMoe};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::recipe::{self, BlockParts, Recipe};
use super::rope_config::RopeConfig;
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "llama",
    kind: Kind::Dense,
    hf_architectures: &["LlamaForCausalLM", "MistralForCausalLM"],
    gguf_architectures: &["llama"],
    gguf_variants: &[],
    gguf_names: &[],
    quirks: Quirks {
        gguf_qk_permuted: true,
        ..Quirks::NONE
    },
    default_template: "chatml",
    hf_model_type: "llama",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| {
        let cfg = match src {
            ConfigSource::Gguf(g) => Config::from_gguf(g, "llama")?,
            ConfigSource::Hf(h) => Config::from_hf(h)?,
        };
        Ok(Box::new(Model::load(vb, &cfg, &SPEC)?))
    },
    tiny: TinyConfig {
        block_tensors: BLOCK_TENSORS,
        metadata: &[],
        fused_gate_up: false,
    },
};

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
    /// Q/K/V projections have biases (Qwen 2).
    pub qkv_bias: bool,
    /// Per-head Q/K RMSNorm (Qwen 3).
    pub qk_norm: bool,
    /// Q/K/V stacked in one `qkv_proj` (Phi-3).
    pub fused_qkv: bool,
    /// The feed-forward network of every block.
    pub ffn_kind: FfnKind,
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
    /// Reads `{arch}.*` metadata.
    pub fn from_gguf(g: &Gguf, arch: &str) -> Result<Self> {
        let k = |s: &str| format!("{arch}.{s}");
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
            eps: g.float(&k("attention.layer_norm_rms_epsilon"))?,
            rope: RopeConfig::from_gguf(g, arch, 10_000.0)?,
            sliding_window: g.opt(&k("attention.sliding_window"), Gguf::usize)?,
            qkv_bias: false,
            qk_norm: false,
            fused_qkv: false,
            ffn_kind: FfnKind::Dense,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (llama, mistral, qwen2, qwen3 keys).
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let head_dim = match h.opt_usize("head_dim")? {
            Some(d) => d,
            None => hidden / n_heads.max(1),
        };
        if let Some(act) = h.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(Error::UnsupportedConfig(format!(
                    "hidden_act '{act}' is not supported by the llama family; supported: silu"
                )));
            }
        }
        let cfg = Self {
            n_layers: h.usize("num_hidden_layers")?,
            hidden,
            ffn: h.usize("intermediate_size")?,
            n_heads,
            n_kv_heads: h.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
            head_dim,
            vocab_size: h.usize("vocab_size")?,
            context_length: h.usize("max_position_embeddings")?,
            eps: h.float("rms_norm_eps")?,
            rope: RopeConfig::from_hf(h, 10_000.0)?,
            sliding_window: match h.opt_bool("use_sliding_window")? {
                Some(false) => None,
                _ => h.opt_usize("sliding_window")?,
            },
            qkv_bias: h.opt_bool("attention_bias")?.unwrap_or(false),
            qk_norm: false,
            fused_qkv: false,
            ffn_kind: FfnKind::Dense,
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

    /// The attention layer of every block (Granite overrides the scale).
    pub fn attention(&self) -> attention::Config {
        attention::Config {
            hidden: self.hidden,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f64).sqrt(),
            qkv_bias: self.qkv_bias,
            fused_qkv: self.fused_qkv,
            qk_norm: self.qk_norm.then_some((self.eps, false)),
            sliding_window: self.sliding_window,
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
            FfnKind::Dense => Self::Dense(Mlp::load(&vb.pp("mlp"), h, f, act)?),
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
    fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        Ok(Self {
            attn_norm: RmsNorm::load(&vb.pp("input_layernorm"), cfg.hidden, cfg.eps, false)?,
            attn: Attention::load(&vb.pp("self_attn"), &cfg.attention())?,
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
        let table = m.qtensor("embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let lm_head = output_layer(vb, &table, cfg.hidden, cfg.vocab_size)?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), cfg))
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
            // 2. Attention with residual.
            let a = b.attn.forward(
                &b.attn_norm.forward(&x)?,
                (&self.rope, &tables),
                ctx.cache,
                i,
            )?;
            let h = (x + a)?;
            // 3. Feed-forward (dense or mixture of experts) with residual.
            x = (&h + b.mlp.forward(&b.mlp_norm.forward(&h)?)?)?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm and output layer -> (vocab).
        let x = self.norm.forward(&x.narrow(1, l - 1, 1)?)?;
        Ok(self
            .lm_head
            .forward(&x)?
            .flatten_all()?
            .to_dtype(DType::F32)?)
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
                let Ffn::Dense(mlp) = &b.mlp else {
                    return Err("the feed-forward networks are mixtures of experts".to_string());
                };
                recipe::Block::new(BlockParts {
                    attn_norm: &b.attn_norm,
                    attn: &b.attn,
                    rope: &self.rope,
                    post_attn_norm: None,
                    ffn_norm: &b.mlp_norm,
                    mlp,
                    post_ffn_norm: None,
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Recipe::new(&self.embed, blocks, &self.norm, &self.lm_head, None)
    }
}
