//! gpt-oss (HF `GptOssForCausalLM`; GGUF `gpt-oss`): OpenAI's open-weight mixture of experts.
//!
//! Pre-norm blocks like llama's, with: q/k/v/o biases (`attention_bias`, true by default);
//! a learned sink logit per query head in every attention softmax; a sliding window
//! (`sliding_window`, 128) on the layers `layer_types` marks `sliding_attention` (by default
//! every other one, from layer 0); NeoX RoPE with gpt-oss's YaRN (`truncate: false`: the
//! correction range is not rounded to whole dimensions); head width `head_dim` (64 unless
//! given); and in place of the MLP a mixture of experts with a biased router (top `k`, then a
//! softmax over those) and biased experts with the clamped SwiGLU
//! ([`super::layers::oai_moe`]). The experts are usually MXFP4 ([`crate::formats::mxfp4`]):
//! `*_blocks`/`*_scales` in published checkpoints (`quantization_config.quant_method`
//! `mxfp4`), ggml's MXFP4 in GGUF; both run in place through our MXFP4 kernels.
//!
//! GGUF: llama.cpp's converter splits the interleaved gate/up into `ffn_gate_exps` and
//! `ffn_up_exps`, names the sinks `attn_sinks` and the second norm `post_attention_norm`, and
//! writes no layer types: llama.cpp slides on every other layer from layer 0 (unless
//! `attention.sliding_window_pattern` says otherwise), with its built-in `alpha` 1.702 and
//! `limit` 7, which the GGUF reader takes too. llama.cpp rounds YaRN's correction range; the
//! reference does not, and neither do we.
//! References: HF `modeling_gpt_oss.py`, `configuration_gpt_oss.py`; llama.cpp
//! `src/models/openai-moe.cpp`, `conversion/gpt_oss.py`.

use candle_core::Tensor;

use super::assembly::{gguf_vocab_size, output_layer, Dims};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::norm::RmsNorm;
use super::layers::oai_moe::{self, OaiMoe};
use super::layers::rope::Rope;
use super::rope_config::{RopeConfig, RopeScaling};
use super::values::{self, refuse_gguf};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "gpt_oss",
    kind: Kind::Moe,
    hf_architectures: &["GptOssForCausalLM"],
    gguf_architectures: &["gpt-oss"],
    gguf_variants: &[],
    gguf_names: &[
        (
            "model.layers.{}.self_attn.o_proj.bias",
            "blk.{}.attn_output.bias",
        ),
        (
            "model.layers.{}.self_attn.sinks",
            "blk.{}.attn_sinks.weight",
        ),
        (
            "model.layers.{}.post_attention_layernorm.weight",
            "blk.{}.post_attention_norm.weight",
        ),
        (
            "model.layers.{}.mlp.router.weight",
            "blk.{}.ffn_gate_inp.weight",
        ),
        (
            "model.layers.{}.mlp.router.bias",
            "blk.{}.ffn_gate_inp.bias",
        ),
        (
            "model.layers.{}.mlp.experts.*.gate_proj.bias",
            "blk.{}.ffn_gate_exps.bias",
        ),
        (
            "model.layers.{}.mlp.experts.*.up_proj.bias",
            "blk.{}.ffn_up_exps.bias",
        ),
        (
            "model.layers.{}.mlp.experts.*.down_proj.bias",
            "blk.{}.ffn_down_exps.bias",
        ),
    ],
    quirks: Quirks::NONE,
    default_template: "harmony",
    hf_model_type: "gpt_oss",
    hf_config_keys: &[("num_local_experts", "expert_count")],
    // Without a key transformers' class takes YaRN (factor 32): an export without scaling
    // must say so.
    hf_config_defaults: &[("rope_scaling", r#"{"rope_type": "default"}"#)],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q.bias",
            "attn_k.weight",
            "attn_k.bias",
            "attn_v.weight",
            "attn_v.bias",
            "attn_output.weight",
            "attn_output.bias",
            "attn_sinks.weight",
            "post_attention_norm.weight",
            "ffn_gate_inp.weight",
            "ffn_gate_inp.bias",
            "ffn_gate_exps.weight",
            "ffn_gate_exps.bias",
            "ffn_up_exps.weight",
            "ffn_up_exps.bias",
            "ffn_down_exps.weight",
            "ffn_down_exps.bias",
        ],
        metadata: &[
            // Written, as llama.cpp's converter writes it: export's `head_dim` (else 64).
            ("attention.key_length", 16),
            ("attention.value_length", 16),
            ("attention.sliding_window", 5),
            ("expert_count", 4),
            ("expert_used_count", 2),
            // As wide as the dense `feed_forward_length` of tiny models, which export
            // writes as `intermediate_size`, gpt-oss's expert width.
            ("expert_feed_forward_length", 96),
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

/// `GptOssConfig`'s RoPE when `config.json` gives none.
const DEFAULT_ROPE: &str = r#"{"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
    "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 4096}"#;

/// gpt-oss's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks, width, heads, head width, vocabulary and context.
    pub dims: Dims,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base and scaling.
    pub rope: RopeConfig,
    /// The window of sliding layers.
    pub sliding_window: usize,
    /// Per layer: true for a sliding-window layer.
    pub sliding: Vec<bool>,
    /// Q, K, V and O projections have biases (`attention_bias`).
    pub attn_bias: bool,
    /// The mixture of experts of every block.
    pub moe: oai_moe::Config,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`super::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

/// llama.cpp's gpt-oss pattern: layer `i` slides when `i % 2 == 0`.
fn default_sliding(i: usize) -> bool {
    i.is_multiple_of(2)
}

impl Config {
    /// Reads `gpt-oss.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = "gpt-oss";
        let k = |s: &str| format!("{arch}.{s}");
        refuse_gguf(g, arch, values::GGUF_COMMON)?;
        let hidden = g.usize(&k("embedding_length"))?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let n_layers = g.usize(&k("block_count"))?;
        let head_dim = match g.opt(&k("attention.key_length"), Gguf::usize)? {
            Some(d) => d,
            None => hidden / n_heads.max(1),
        };
        for key in ["attention.value_length", "rope.dimension_count"] {
            if let Some(d) = g.opt(&k(key), Gguf::usize)?.filter(|&d| d != head_dim) {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k(key),
                    d,
                    &format!("{head_dim} (attention.key_length)"),
                ));
            }
        }
        let mut rope = RopeConfig::from_gguf(g, arch, 150_000.0)?;
        if let RopeScaling::Yarn(y) = &mut rope.scaling {
            y.truncate = false;
        }
        if let Some(b) = values::opt_positive(g, &k("rope.freq_base_swa"))? {
            if b != rope.base {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k("rope.freq_base_swa"),
                    b,
                    &format!("{} (rope.freq_base: one base for every layer)", rope.base),
                ));
            }
        }
        let sliding = match g.opt(&k("attention.sliding_window_pattern"), Gguf::bools)? {
            Some(p) if p.len() == n_layers => p,
            Some(p) => {
                return Err(Error::BadMetadata {
                    key: k("attention.sliding_window_pattern"),
                    expected: "one boolean per block",
                    found: format!("{} values for {n_layers} blocks", p.len()),
                })
            }
            None => (0..n_layers).map(default_sliding).collect(),
        };
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads: g
                    .opt(&k("attention.head_count_kv"), Gguf::usize)?
                    .unwrap_or(n_heads),
                head_dim,
                vocab_size: gguf_vocab_size(g)?,
                context_length: g.usize(&k("context_length"))?,
            },
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            rope,
            sliding_window: g.usize(&k("attention.sliding_window"))?,
            sliding,
            attn_bias: g.has_tensor("blk.0.attn_q.bias"),
            moe: oai_moe::Config {
                n_experts: g.usize(&k("expert_count"))?,
                n_used: g.usize(&k("expert_used_count"))?,
                ffn: g.usize(&k("expert_feed_forward_length"))?,
                // llama.cpp's built-in values (no GGUF key holds them).
                alpha: 1.702,
                limit: 7.0,
            },
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` as `GptOssConfig` does.
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        if let Some(q) = h.sub("quantization_config") {
            let method = q.opt_str("quant_method")?;
            if method != Some("mxfp4") {
                return Err(values::refused(
                    h.origin(),
                    "quantization_config.quant_method",
                    method.map_or("null".into(), |m| format!("\"{m}\"")),
                    "\"mxfp4\" (experts as *_blocks and *_scales)",
                ));
            }
        }
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let head_dim = h
            .opt_usize_or("head_dim", Some(64))?
            .unwrap_or(hidden / n_heads.max(1));
        let n_kv_heads = h
            .opt_usize_or("num_key_value_heads", Some(8))?
            .unwrap_or(n_heads);
        let rope = match (h.get("rope_parameters"), h.get("rope_scaling")) {
            (None, None) => {
                let mut map = h.map().clone();
                let default = serde_json::from_str(DEFAULT_ROPE)
                    .map_err(|e| Error::Internal(format!("gpt-oss default RoPE: {e}")))?;
                map.insert("rope_parameters".into(), default);
                RopeConfig::from_hf(&HfConfig::from_map(map, h.origin()), 150_000.0)?
            }
            _ => RopeConfig::from_hf(h, 150_000.0)?,
        };
        let sliding = values::sliding_layers(h, n_layers)?
            .unwrap_or_else(|| (0..n_layers).map(default_sliding).collect());
        let tied = h.opt_bool("tie_word_embeddings")?.unwrap_or(false);
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads,
                head_dim,
                vocab_size: h.usize("vocab_size")?,
                context_length: h
                    .opt_usize_or("max_position_embeddings", Some(131_072))?
                    .unwrap_or(131_072),
            },
            eps: h.opt_positive("rms_norm_eps")?.unwrap_or(1e-5),
            rope,
            sliding_window: h.opt_usize_or("sliding_window", Some(128))?.unwrap_or(0),
            sliding,
            attn_bias: h.opt_bool("attention_bias")?.unwrap_or(true),
            moe: oai_moe::Config {
                n_experts: h.usize_any(&["num_local_experts", "num_experts"])?,
                n_used: h.opt_usize_or("num_experts_per_tok", Some(4))?.unwrap_or(0),
                ffn: h.usize("intermediate_size")?,
                alpha: h.opt_positive("swiglu_alpha")?.unwrap_or(1.702) as f32,
                limit: h.opt_positive("swiglu_limit")?.unwrap_or(7.0) as f32,
            },
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
        if !d.head_dim.is_multiple_of(2) {
            return bad(format!("odd head_dim {} cannot take RoPE", d.head_dim));
        }
        if self.sliding_window == 0 && self.sliding.iter().any(|s| *s) {
            return bad(
                "sliding_window 0 leaves a query nothing to attend to; supported: a \
                        window of at least 1"
                    .into(),
            );
        }
        self.moe.validate()
    }

    /// The attention layer of block `layer`.
    pub fn attention(&self, layer: usize) -> attention::Config {
        let d = &self.dims;
        attention::Config {
            hidden: d.hidden,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            head_dim: d.head_dim,
            scale: 1.0 / (d.head_dim as f64).sqrt(),
            qkv_bias: self.attn_bias,
            o_bias: self.attn_bias,
            fused_qkv: false,
            qk_norm: None,
            sliding_window: self.sliding[layer].then_some(self.sliding_window),
            softcap: None,
            scale_queries: false,
        }
    }
}

/// One block: attention with sinks, then the mixture of experts, each pre-normed.
#[derive(Clone, Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    moe: OaiMoe,
}

/// A gpt-oss model.
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
        let rope = cfg.rope.build(vb, d.head_dim, style)?;
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[d.vocab_size, d.hidden])?;
        let lm_head = output_layer(
            vb,
            &table,
            (d.hidden, d.vocab_size),
            cfg.untied_in.as_deref(),
        )?;
        let opts = attention::Options {
            sinks: true,
            ..attention::Options::default()
        };
        let blocks = (0..d.n_layers)
            .map(|i| {
                let b = m.pp("layers").pp(i);
                Ok(Block {
                    attn_norm: RmsNorm::load(&b.pp("input_layernorm"), d.hidden, cfg.eps, false)?,
                    attn: Attention::load_with(&b.pp("self_attn"), &cfg.attention(i), opts)?,
                    mlp_norm: RmsNorm::load(
                        &b.pp("post_attention_layernorm"),
                        d.hidden,
                        cfg.eps,
                        false,
                    )?,
                    moe: OaiMoe::load(&b.pp("mlp"), d.hidden, &cfg.moe)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: Embedding::new(table, None),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), d.hidden, cfg.eps, false)?,
            lm_head,
            rope,
            info: ModelInfo::new(&SPEC, cfg.dims),
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
            // 2. Attention (with sinks, windowed on sliding layers) with residual.
            let a = b.attn.forward(
                &b.attn_norm.forward(&x)?,
                (&self.rope, &tables),
                ctx.cache,
                i,
            )?;
            let h = (x + a)?;
            // 3. Mixture of experts with residual.
            x = (&h + b.moe.forward(&b.mlp_norm.forward(&h)?)?)?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm and output layer -> (vocab).
        super::layers::head::last_position_logits(&self.norm, &self.lm_head, &x)
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn cache_layout(&self) -> Vec<LayerKind> {
        self.blocks.iter().map(|b| b.attn.cache_kind()).collect()
    }
}

#[cfg(test)]
mod tests;
