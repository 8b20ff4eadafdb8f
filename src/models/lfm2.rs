//! LFM2 (HF `Lfm2ForCausalLM`; GGUF `lfm2`): a hybrid of gated short-convolution blocks and
//! GQA attention blocks.
//!
//! Every block is pre-norm: `x + mixer(operator_norm(x))`, then `x + ffn(ffn_norm(x))` with
//! a SwiGLU MLP (`w1` gate, `w3` up, `w2` down). The mixer is a short convolution
//! ([`super::layers::short_conv`], `conv_L_cache` taps, state in the engine's cache) on the
//! layers `layer_types` marks `conv` (older configs: those not in `full_attn_idxs`), else
//! attention with per-head Q/K RMSNorm (`q_layernorm`, `k_layernorm`), NeoX RoPE and
//! `out_proj`. The final norm is `embedding_norm`. With `block_auto_adjust_ff_dim` the MLP is
//! `2/3 · intermediate_size`, scaled by `block_ffn_dim_multiplier` and rounded up to
//! `block_multiple_of`, as `Lfm2MLP` computes it. Tied output by default.
//!
//! GGUF: the layer kinds are `attention.head_count_kv` per layer (0 for a convolution);
//! `feed_forward_length` is the adjusted width; the final norm is `token_embd_norm`
//! (`output_norm` in files mlcli synthesises). A sliding window (`attention.sliding_window`,
//! which transformers' LFM2 lacks) is refused.
//! References: HF `modular_lfm2.py`, llama.cpp `src/models/lfm2.cpp`.

use candle_core::Tensor;

use super::assembly::{gguf_vocab_size, output_layer, Dims};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::layers::short_conv::{self, ShortConv};
use super::rope_config::RopeConfig;
use super::values::{self, refuse_gguf, Accepted, GgufRefusal};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "lfm2",
    kind: Kind::Dense,
    hf_architectures: &["Lfm2ForCausalLM"],
    gguf_architectures: &["lfm2"],
    gguf_variants: &[],
    gguf_names: &[
        ("model.embedding_norm.weight", "token_embd_norm.weight"),
        (
            "model.layers.{}.operator_norm.weight",
            "blk.{}.attn_norm.weight",
        ),
        ("model.layers.{}.ffn_norm.weight", "blk.{}.ffn_norm.weight"),
        (
            "model.layers.{}.feed_forward.w1.weight",
            "blk.{}.ffn_gate.weight",
        ),
        (
            "model.layers.{}.feed_forward.w3.weight",
            "blk.{}.ffn_up.weight",
        ),
        (
            "model.layers.{}.feed_forward.w2.weight",
            "blk.{}.ffn_down.weight",
        ),
        (
            "model.layers.{}.self_attn.out_proj.weight",
            "blk.{}.attn_output.weight",
        ),
        (
            "model.layers.{}.self_attn.q_layernorm.weight",
            "blk.{}.attn_q_norm.weight",
        ),
        (
            "model.layers.{}.self_attn.k_layernorm.weight",
            "blk.{}.attn_k_norm.weight",
        ),
        (
            "model.layers.{}.conv.conv.weight",
            "blk.{}.shortconv.conv.weight",
        ),
        (
            "model.layers.{}.conv.in_proj.weight",
            "blk.{}.shortconv.in_proj.weight",
        ),
        (
            "model.layers.{}.conv.out_proj.weight",
            "blk.{}.shortconv.out_proj.weight",
        ),
        (
            "model.layers.{}.conv.conv.bias",
            "blk.{}.shortconv.conv.bias",
        ),
        (
            "model.layers.{}.conv.in_proj.bias",
            "blk.{}.shortconv.in_proj.bias",
        ),
        (
            "model.layers.{}.conv.out_proj.bias",
            "blk.{}.shortconv.out_proj.bias",
        ),
    ],
    quirks: Quirks::NONE,
    default_template: "chatml",
    hf_model_type: "lfm2",
    hf_config_keys: &[
        ("norm_eps", "attention.layer_norm_rms_epsilon"),
        ("conv_L_cache", "shortconv.l_cache"),
    ],
    // The GGUF's feed_forward_length is already the adjusted width.
    hf_config_defaults: &[("block_auto_adjust_ff_dim", "false")],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        // Attention blocks only: the synthetic writer has one tensor list for every block.
        // The hybrid is tested in `lfm2/tests.rs`.
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q_norm.weight",
            "attn_k.weight",
            "attn_k_norm.weight",
            "attn_v.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ],
        metadata: &[("shortconv.l_cache", 3)],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g),
        ConfigSource::Hf(h) => Config::from_hf(h),
    }
}

/// GGUF keys llama.cpp's LFM2 graph reads and this build does not implement.
const GGUF_REFUSED: &[GgufRefusal] = &[GgufRefusal {
    key: "attention.sliding_window",
    accepted: Accepted::Number(0.0),
    supported: "0 or absent (transformers' LFM2 has no window)",
}];

/// LFM2's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks, width, heads (of the attention blocks), head width, vocabulary and context.
    pub dims: Dims,
    /// MLP width (adjusted).
    pub ffn: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE of the attention blocks.
    pub rope: RopeConfig,
    /// Per layer: true for an attention block, false for a short convolution.
    pub attention: Vec<bool>,
    /// The convolution's taps and biases.
    pub conv: short_conv::Config,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`super::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

impl Config {
    /// Reads `lfm2.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let k = |s: &str| format!("lfm2.{s}");
        refuse_gguf(g, "lfm2", values::GGUF_COMMON)?;
        refuse_gguf(g, "lfm2", GGUF_REFUSED)?;
        let hidden = g.usize(&k("embedding_length"))?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let n_layers = g.usize(&k("block_count"))?;
        let kv = g.per_layer(&k("attention.head_count_kv"), n_layers)?;
        let n_kv_heads = uniform_kv(&kv).map_err(|found| {
            values::refused(
                &g.path().display().to_string(),
                &k("attention.head_count_kv"),
                found,
                "one KV head count for every attention layer (0 for a convolution)",
            )
        })?;
        let head_dim = hidden / n_heads.max(1);
        for key in ["attention.key_length", "attention.value_length"] {
            if let Some(d) = g.opt(&k(key), Gguf::usize)?.filter(|&d| d != head_dim) {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k(key),
                    d,
                    &format!("{head_dim}, embedding_length / head_count"),
                ));
            }
        }
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads,
                head_dim,
                vocab_size: gguf_vocab_size(g)?,
                context_length: g.usize(&k("context_length"))?,
            },
            ffn: g.usize(&k("feed_forward_length"))?,
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            rope: RopeConfig::from_gguf(g, "lfm2", 1_000_000.0)?,
            attention: kv.iter().map(|&n| n > 0).collect(),
            conv: short_conv::Config {
                hidden,
                taps: g.usize(&k("shortconv.l_cache"))?,
                bias: g.has_tensor("blk.0.shortconv.in_proj.bias"),
            },
            untied_in: None,
        };
        cfg.validate(g.path().display().to_string())?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` as `Lfm2Config` does.
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let tied = match h.opt_bool("tie_word_embeddings")? {
            Some(t) => t,
            None => h.opt_bool("tie_embedding")?.unwrap_or(true),
        };
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads: h.opt_usize("num_key_value_heads")?.unwrap_or(8),
                head_dim: h.opt_usize("head_dim")?.unwrap_or(hidden / n_heads.max(1)),
                vocab_size: h.usize("vocab_size")?,
                context_length: h.opt_usize("max_position_embeddings")?.unwrap_or(128_000),
            },
            ffn: hf_ffn(h)?,
            eps: h.opt_positive("norm_eps")?.unwrap_or(1e-5),
            rope: RopeConfig::from_hf(h, 1_000_000.0)?,
            attention: hf_layer_kinds(h, n_layers)?,
            conv: short_conv::Config {
                hidden,
                taps: h.opt_usize("conv_L_cache")?.unwrap_or(3),
                bias: h.opt_bool("conv_bias")?.unwrap_or(false),
            },
            untied_in: (!tied).then(|| h.origin().to_string()),
        };
        cfg.validate(h.origin().to_string())?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self, origin: String) -> Result<()> {
        let d = &self.dims;
        if self.conv.taps < 2 {
            return Err(values::refused(
                &origin,
                "conv_L_cache (shortconv.l_cache)",
                self.conv.taps,
                "at least 2 taps",
            ));
        }
        let ok = d.n_layers > 0
            && d.hidden > 0
            && d.head_dim > 0
            && d.head_dim.is_multiple_of(2)
            && d.vocab_size > 0
            && d.n_kv_heads > 0
            && d.n_heads.is_multiple_of(d.n_kv_heads)
            && self.attention.len() == d.n_layers;
        if ok {
            Ok(())
        } else {
            Err(Error::UnsupportedConfig(format!(
                "{origin}: lfm2: inconsistent dimensions {self:?}"
            )))
        }
    }

    fn attention(&self) -> attention::Config {
        let d = &self.dims;
        attention::Config {
            hidden: d.hidden,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            head_dim: d.head_dim,
            scale: 1.0 / (d.head_dim as f64).sqrt(),
            qkv_bias: false,
            o_bias: false,
            fused_qkv: false,
            qk_norm: Some((self.eps, false)),
            sliding_window: None,
            softcap: None,
            scale_queries: false,
        }
    }
}

/// `Lfm2MLP`'s width: with `block_auto_adjust_ff_dim` (default true), `2/3` of
/// `intermediate_size` (or `block_ff_dim`), then, with a `block_ffn_dim_multiplier` (default
/// 1.0), scaled and rounded up to a multiple of `block_multiple_of` (default 256).
fn hf_ffn(h: &HfConfig) -> Result<usize> {
    let mut ff = match h.opt_usize("intermediate_size")? {
        Some(n) => n,
        None => h.usize("block_ff_dim")?,
    };
    if !h.opt_bool("block_auto_adjust_ff_dim")?.unwrap_or(true) {
        return Ok(ff);
    }
    ff = 2 * ff / 3;
    let multiplier = match h.get("block_ffn_dim_multiplier") {
        Some(v) if v.is_null() => None,
        Some(_) => Some(h.float("block_ffn_dim_multiplier")?),
        None => Some(1.0),
    };
    if let Some(m) = multiplier {
        let multiple = h.opt_usize("block_multiple_of")?.unwrap_or(256).max(1);
        ff = (m * ff as f64) as usize;
        ff = ff.div_ceil(multiple) * multiple;
    }
    Ok(ff)
}

/// Per layer, true for attention: `layer_types` (`full_attention` / `conv`), else the layers
/// in `full_attn_idxs`, else every layer.
fn hf_layer_kinds(h: &HfConfig, n_layers: usize) -> Result<Vec<bool>> {
    if let Some(v) = h.get("layer_types").filter(|v| !v.is_null()) {
        let list = v.as_array().filter(|l| l.len() == n_layers);
        let Some(list) = list else {
            return Err(Error::MalformedConfig {
                file: h.origin().to_string(),
                key: "layer_types: ".into(),
                why: format!("{v} is not a list of {n_layers} (num_hidden_layers) layer types"),
            });
        };
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(true),
                Some("conv") => Ok(false),
                _ => Err(values::refused(
                    h.origin(),
                    "layer_types",
                    t,
                    "full_attention, conv",
                )),
            })
            .collect();
    }
    match h.get("full_attn_idxs").filter(|v| !v.is_null()) {
        None => Ok(vec![true; n_layers]),
        Some(v) => {
            let idxs: Option<Vec<u64>> = v
                .as_array()
                .map(|a| a.iter().map(|i| i.as_u64()).collect::<Option<Vec<_>>>())
                .unwrap_or(None);
            let Some(idxs) = idxs else {
                return Err(Error::MalformedConfig {
                    file: h.origin().to_string(),
                    key: "full_attn_idxs: ".into(),
                    why: format!("{v} is not a list of layer indices"),
                });
            };
            Ok((0..n_layers as u64).map(|i| idxs.contains(&i)).collect())
        }
    }
}

/// The one KV head count of the attention layers (0 marks a convolution); `Err` holds the
/// counts, for the refusal.
fn uniform_kv(kv: &[usize]) -> std::result::Result<usize, String> {
    let mut heads = kv.iter().copied().filter(|&n| n > 0);
    let first = heads.next().unwrap_or(1);
    match heads.any(|n| n != first) {
        true => Err(format!("{kv:?}")),
        false => Ok(first),
    }
}

/// A block's mixer (the attention boxed: it is several times the convolution's size).
#[derive(Clone, Debug)]
enum Mixer {
    Attention(Box<Attention>),
    Conv(ShortConv),
}

/// One pre-norm block.
#[derive(Clone, Debug)]
struct Block {
    operator_norm: RmsNorm,
    mixer: Mixer,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: &Vb, cfg: &Config, layer: usize) -> Result<Self> {
        let h = cfg.dims.hidden;
        let mixer = match cfg.attention[layer] {
            true => Mixer::Attention(Box::new(Attention::load_with(
                &vb.pp("self_attn"),
                &cfg.attention(),
                attention::Options {
                    names: attention::Names {
                        o: "out_proj",
                        q_norm: "q_layernorm",
                        k_norm: "k_layernorm",
                    },
                    ..attention::Options::default()
                },
            )?)),
            false => Mixer::Conv(ShortConv::load(&vb.pp("conv"), cfg.conv)?),
        };
        Ok(Self {
            operator_norm: RmsNorm::load(&vb.pp("operator_norm"), h, cfg.eps, false)?,
            mixer,
            ffn_norm: RmsNorm::load(&vb.pp("ffn_norm"), h, cfg.eps, false)?,
            mlp: Mlp::load_named(
                &vb.pp("feed_forward"),
                ["w1", "w3", "w2"],
                (h, cfg.ffn),
                Activation::Silu,
                false,
            )?,
        })
    }
}

/// An LFM2 model.
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    info: ModelInfo,
}

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let d = &cfg.dims;
        let style = super::rope_style(SPEC.quirks, vb.weights().format());
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[d.vocab_size, d.hidden])?;
        let blocks = (0..d.n_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = match m.contains("embedding_norm.weight") {
            true => m.pp("embedding_norm"),
            false => m.pp("norm"),
        };
        Ok(Self {
            embed: Embedding::new(table.clone(), None),
            blocks,
            norm: RmsNorm::load(&norm, d.hidden, cfg.eps, false)?,
            lm_head: output_layer(
                vb,
                &table,
                (d.hidden, d.vocab_size),
                cfg.untied_in.as_deref(),
            )?,
            rope: cfg.rope.build(vb, d.head_dim, style)?,
            info: ModelInfo::new(&SPEC, *d),
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
            // 2. Convolution or attention on the normed stream, with residual.
            let n = b.operator_norm.forward(&x)?;
            let a = match &b.mixer {
                Mixer::Attention(attn) => attn.forward(&n, (&self.rope, &tables), ctx.cache, i)?,
                Mixer::Conv(conv) => conv.forward(&n, ctx.cache, i)?,
            };
            let h = (x + a)?;
            // 3. SwiGLU MLP with residual.
            x = (&h + b.mlp.forward(&b.ffn_norm.forward(&h)?)?)?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm and output layer -> (vocab).
        super::layers::head::last_position_logits(&self.norm, &self.lm_head, &x)
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn cache_layout(&self) -> Vec<LayerKind> {
        self.blocks
            .iter()
            .map(|b| match &b.mixer {
                Mixer::Attention(a) => a.cache_kind(),
                Mixer::Conv(c) => c.cache_kind(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
