//! Qwen3.5 dense (HF `Qwen3_5ForCausalLM`, and the `text_config` of
//! `Qwen3_5ForConditionalGeneration`; GGUF `qwen35`). The MoE sizes reuse this file through
//! [`super::qwen3_5_moe`].
//!
//! A hybrid stack: `layer_types` (else every `full_attention_interval`-th layer, 4) picks per
//! layer a Gated DeltaNet mixer (`linear_attention`, [`super::layers::delta_net`], state in the
//! cache) or gated full attention (`full_attention`, [`super::layers::gated_attention`]: q/k norm,
//! an output gate from the doubled q projection, RoPE over `partial_rotary_factor` (0.25) of
//! each head). RMSNorms are zero-centred, `(1 + w)`, except the DeltaNet's gated output norm;
//! llama.cpp's converter folds the `1 +` into the weights (a declared quirk). Qwen3.5 runs
//! interleaved multimodal RoPE, whose three position axes are equal for text: on text it is
//! plain NeoX RoPE, so `mrope_section` is accepted and unused.
//!
//! GGUF quirks: `ssm_a` holds `-exp(A_log)`; the convolution is stored `(channels, kernel)`;
//! value heads are reordered from grouped-by-key-head to tiled; `block_count` counts the
//! multi-token-prediction blocks (`nextn_predict_layers`). Multi-token prediction (`mtp.*`
//! in safetensors, those extra blocks in GGUF) is skipped: it serves speculative decoding,
//! which mlcli does not do yet. References: HF `modeling_qwen3_5.py`,
//! `configuration_qwen3_5.py`; llama.cpp `src/models/qwen35.cpp`, `conversion/qwen.py`.

use candle_core::Tensor;

use super::assembly::{gguf_vocab_size, output_layer, Dims};
use super::layers::attention;
use super::layers::delta_net::{self, GatedDeltaNet};
use super::layers::embedding::Embedding;
use super::layers::gated_attention::GatedAttention;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::moe::{self, SharedExpert, SparseMoe};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::rope_config::RopeConfig;
use super::values::{self, refuse_hf, HfRefusal};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::names::NamePair;
use crate::formats::weights::{Vb, WeightFormat};
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "qwen3_5",
    kind: Kind::Dense,
    hf_architectures: &["Qwen3_5ForCausalLM"],
    gguf_architectures: &["qwen35"],
    gguf_variants: &[],
    gguf_names: NAMES,
    quirks: QUIRKS,
    default_template: "chatml",
    hf_model_type: "qwen3_5_text",
    hf_config_keys: CONFIG_KEYS,
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src, &DENSE)?, &SPEC)?)),
    check: |src| config(src, &DENSE).map(drop),
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
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
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
        ],
        fused_gate_up: false,
    },
};

/// `(1 + w)` norms, folded by llama.cpp's converter.
pub const QUIRKS: Quirks = Quirks {
    norm_unit_offset: true,
    gguf_norm_unit_offset_folded: true,
    gguf_delta_net: true,
    ..Quirks::NONE
};

/// `config.json` keys of the DeltaNet layers, as llama.cpp's converter writes them (it
/// assumes value heads as wide as key heads).
pub const CONFIG_KEYS: &[NamePair] = &[
    ("linear_conv_kernel_dim", "ssm.conv_kernel"),
    ("linear_key_head_dim", "ssm.state_size"),
    ("linear_value_head_dim", "ssm.state_size"),
    ("linear_num_key_heads", "ssm.group_count"),
    ("linear_num_value_heads", "ssm.time_step_rank"),
    ("full_attention_interval", "full_attention_interval"),
];

/// Name rows beyond the common table: the DeltaNet's tensors, the post-attention norm and the
/// shared expert.
pub const NAMES: &[NamePair] = &[
    (
        "model.layers.{}.post_attention_layernorm.weight",
        "blk.{}.post_attention_norm.weight",
    ),
    (
        "model.layers.{}.linear_attn.in_proj_qkv.weight",
        "blk.{}.attn_qkv.weight",
    ),
    (
        "model.layers.{}.linear_attn.in_proj_z.weight",
        "blk.{}.attn_gate.weight",
    ),
    (
        "model.layers.{}.linear_attn.in_proj_b.weight",
        "blk.{}.ssm_beta.weight",
    ),
    (
        "model.layers.{}.linear_attn.in_proj_a.weight",
        "blk.{}.ssm_alpha.weight",
    ),
    // Qwen3-Next's fused rate projection (its fused in_proj_qkvz is split by the converter).
    (
        "model.layers.{}.linear_attn.in_proj_ba.weight",
        "blk.{}.ssm_ba.weight",
    ),
    (
        "model.layers.{}.linear_attn.conv1d.weight",
        "blk.{}.ssm_conv1d.weight",
    ),
    ("model.layers.{}.linear_attn.A_log", "blk.{}.ssm_a"),
    ("model.layers.{}.linear_attn.dt_bias", "blk.{}.ssm_dt.bias"),
    (
        "model.layers.{}.linear_attn.norm.weight",
        "blk.{}.ssm_norm.weight",
    ),
    (
        "model.layers.{}.linear_attn.out_proj.weight",
        "blk.{}.ssm_out.weight",
    ),
    (
        "model.layers.{}.self_attn.o_proj.bias",
        "blk.{}.attn_output.bias",
    ),
    (
        "model.layers.{}.mlp.shared_expert.gate_proj.weight",
        "blk.{}.ffn_gate_shexp.weight",
    ),
    (
        "model.layers.{}.mlp.shared_expert.up_proj.weight",
        "blk.{}.ffn_up_shexp.weight",
    ),
    (
        "model.layers.{}.mlp.shared_expert.down_proj.weight",
        "blk.{}.ffn_down_shexp.weight",
    ),
    (
        "model.layers.{}.mlp.shared_expert_gate.weight",
        "blk.{}.ffn_gate_inp_shexp.weight",
    ),
];

fn config(src: &ConfigSource, form: &GgufForm) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g, form),
        ConfigSource::Hf(h) => Config::from_hf(h, form.moe),
    }
}

/// How a DeltaNet hybrid's GGUF is written: its architecture, whether its blocks hold experts,
/// and whether llama.cpp's converter tiled its value heads (Qwen3.5; not Qwen3-Next).
#[derive(Clone, Copy, Debug)]
pub struct GgufForm {
    /// `general.architecture`.
    pub arch: &'static str,
    /// Blocks hold a mixture of experts with a shared expert.
    pub moe: bool,
    /// Value heads are tiled over key heads.
    pub v_heads_tiled: bool,
}

/// Qwen3.5 dense files.
pub const DENSE: GgufForm = GgufForm {
    arch: "qwen35",
    moe: false,
    v_heads_tiled: true,
};

/// The feed-forward part of every block.
#[derive(Clone, Debug, PartialEq)]
pub enum Ffn {
    /// A SwiGLU MLP of this width.
    Dense(usize),
    /// Routed experts beside a sigmoid-gated shared expert of width `shared`.
    Moe {
        /// The routed experts.
        moe: moe::Config,
        /// The shared expert's width.
        shared: usize,
    },
}

/// Qwen3.5's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks (multi-token-prediction blocks not counted).
    pub n_layers: usize,
    /// Model width.
    pub hidden: usize,
    /// Query heads of full-attention layers.
    pub n_heads: usize,
    /// Key/value heads of full-attention layers.
    pub n_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    pub rotary_dim: usize,
    /// RoPE base and scaling.
    pub rope: RopeConfig,
    /// Output rows.
    pub vocab_size: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Q, K, V and O projections carry biases (`attention_bias`).
    pub attn_bias: bool,
    /// The DeltaNet layers' shape.
    pub linear: delta_net::Config,
    /// Per layer: true for a DeltaNet layer, false for full attention.
    pub recurrent: Vec<bool>,
    /// The feed-forward part.
    pub ffn: Ffn,
    /// Set (to the file's name) when `config.json` unties the output layer.
    pub untied_in: Option<String>,
}

/// `config.json` values the Qwen3.5 classes accept but this build does not implement.
const HF_REFUSED: &[HfRefusal] = &[HfRefusal {
    key: "hidden_act",
    accepted: &["\"silu\""],
    supported: "silu",
}];

impl Config {
    /// Reads `{arch}.*` metadata of a file of `form`.
    pub fn from_gguf(g: &Gguf, form: &GgufForm) -> Result<Self> {
        let (arch, moe) = (form.arch, form.moe);
        let k = |s: &str| format!("{arch}.{s}");
        values::refuse_gguf(g, arch, values::GGUF_COMMON)?;
        let hidden = g.usize(&k("embedding_length"))?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let mtp = g.opt(&k("nextn_predict_layers"), Gguf::usize)?.unwrap_or(0);
        let blocks = g.usize(&k("block_count"))?;
        let n_layers = blocks.checked_sub(mtp).ok_or_else(|| {
            values::refused(
                &g.path().display().to_string(),
                &k("nextn_predict_layers"),
                mtp,
                &format!("at most block_count ({blocks})"),
            )
        })?;
        let head_dim = match g.opt(&k("attention.key_length"), Gguf::usize)? {
            Some(d) => d,
            None => hidden / n_heads.max(1),
        };
        if let Some(d) = g.opt(&k("attention.value_length"), Gguf::usize)? {
            if d != head_dim {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k("attention.value_length"),
                    d,
                    &format!("{head_dim}, the key width"),
                ));
            }
        }
        let v_heads = g.usize(&k("ssm.time_step_rank"))?;
        let linear = delta_net::Config {
            hidden,
            k_heads: g.usize(&k("ssm.group_count"))?,
            v_heads,
            k_dim: g.usize(&k("ssm.state_size"))?,
            v_dim: g.usize(&k("ssm.inner_size"))? / v_heads.max(1),
            kernel: g.usize(&k("ssm.conv_kernel"))?,
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            v_heads_tiled: form.v_heads_tiled,
        };
        let ffn = match moe {
            false => Ffn::Dense(g.usize(&k("feed_forward_length"))?),
            true => Ffn::Moe {
                moe: moe::Config {
                    n_experts: g.usize(&k("expert_count"))?,
                    n_used: g.usize(&k("expert_used_count"))?,
                    ffn: g.usize(&k("expert_feed_forward_length"))?,
                    router: moe::Router::SoftmaxTopK {
                        renormalize: g
                            .opt(&k("expert_weights_norm"), Gguf::bool)?
                            .unwrap_or(true),
                    },
                    names: moe::QWEN_NAMES,
                },
                shared: g.usize(&k("expert_shared_feed_forward_length"))?,
            },
        };
        let first_attn = gguf_recurrent(g, arch, n_layers)?
            .iter()
            .position(|r| !r)
            .unwrap_or(0);
        let cfg = Self {
            n_layers,
            hidden,
            n_heads,
            n_kv_heads: g
                .opt(&k("attention.head_count_kv"), Gguf::usize)?
                .unwrap_or(n_heads),
            head_dim,
            rotary_dim: g
                .opt(&k("rope.dimension_count"), Gguf::usize)?
                .unwrap_or(head_dim),
            rope: RopeConfig::from_gguf(g, arch, 10_000_000.0)?,
            vocab_size: gguf_vocab_size(g)?,
            context_length: g.usize(&k("context_length"))?,
            eps: linear.eps,
            attn_bias: g.has_tensor(&format!("blk.{first_attn}.attn_q.bias")),
            linear,
            recurrent: gguf_recurrent(g, arch, n_layers)?,
            ffn,
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (`qwen3_5_text` / `qwen3_5_moe_text`, or the
    /// `text_config` of a multimodal checkpoint) with `Qwen3_5TextConfig`'s defaults (for
    /// `moe`, `Qwen3_5MoeTextConfig`'s).
    pub fn from_hf(h: &HfConfig, moe: bool) -> Result<Self> {
        refuse_hf(h, HF_REFUSED)?;
        let hidden = h.usize("hidden_size")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let eps = h.opt_positive("rms_norm_eps")?.unwrap_or(1e-6);
        let head_dim = h.opt_usize("head_dim")?.unwrap_or(256);
        let (rope, partial) = RopeConfig::from_hf_partial(
            h,
            10_000.0,
            0.25,
            &["mrope_section", "mrope_interleaved"],
        )?;
        let linear = delta_net::Config {
            hidden,
            k_heads: h.opt_usize("linear_num_key_heads")?.unwrap_or(16),
            v_heads: h.opt_usize("linear_num_value_heads")?.unwrap_or(32),
            k_dim: h.opt_usize("linear_key_head_dim")?.unwrap_or(128),
            v_dim: h.opt_usize("linear_value_head_dim")?.unwrap_or(128),
            kernel: h.opt_usize("linear_conv_kernel_dim")?.unwrap_or(4),
            eps,
            v_heads_tiled: false,
        };
        let ffn = match moe {
            false => Ffn::Dense(h.usize("intermediate_size")?),
            true => Ffn::Moe {
                moe: moe::Config {
                    n_experts: h.opt_usize("num_experts")?.unwrap_or(256),
                    n_used: h.opt_usize("num_experts_per_tok")?.unwrap_or(8),
                    ffn: h.opt_usize("moe_intermediate_size")?.unwrap_or(512),
                    // Qwen3_5MoeTopKRouter always renormalises the kept weights.
                    router: moe::Router::SoftmaxTopK { renormalize: true },
                    names: moe::QWEN_NAMES,
                },
                shared: h
                    .opt_usize("shared_expert_intermediate_size")?
                    .unwrap_or(512),
            },
        };
        let cfg = Self {
            n_layers,
            hidden,
            n_heads: h.usize("num_attention_heads")?,
            n_kv_heads: h
                .opt_usize("num_key_value_heads")?
                .unwrap_or(if moe { 2 } else { 4 }),
            head_dim,
            rotary_dim: (head_dim as f64 * partial) as usize,
            rope,
            vocab_size: h.usize("vocab_size")?,
            context_length: h.opt_usize("max_position_embeddings")?.unwrap_or(32_768),
            eps,
            attn_bias: h.opt_bool("attention_bias")?.unwrap_or(false),
            linear,
            recurrent: hf_recurrent(h, n_layers)?,
            ffn,
            untied_in: match h.opt_bool("tie_word_embeddings")? {
                Some(true) => None,
                _ => Some(h.origin().to_string()),
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self) -> Result<()> {
        self.linear.validate()?;
        if let Ffn::Moe { moe, .. } = &self.ffn {
            moe.validate()?;
        }
        let ok = self.n_layers > 0
            && self.hidden > 0
            && self.head_dim > 0
            && self.rotary_dim > 0
            && self.rotary_dim <= self.head_dim
            && self.rotary_dim.is_multiple_of(2)
            && self.vocab_size > 0
            && self.n_kv_heads > 0
            && self.n_heads.is_multiple_of(self.n_kv_heads)
            && self.recurrent.len() == self.n_layers;
        if ok {
            Ok(())
        } else {
            Err(Error::UnsupportedConfig(format!(
                "qwen3_5: inconsistent dimensions {self:?}; supported: an even rotary width \
                 within the head, query heads a multiple of key/value heads"
            )))
        }
    }
}

/// Which layers are DeltaNet layers: `layer_types`, else every layer but each
/// `full_attention_interval`-th (4).
fn hf_recurrent(h: &HfConfig, n_layers: usize) -> Result<Vec<bool>> {
    let Some(v) = h.get("layer_types") else {
        let every = h.opt_usize("full_attention_interval")?.unwrap_or(4).max(1);
        return Ok((0..n_layers)
            .map(|i| !(i + 1).is_multiple_of(every))
            .collect());
    };
    let bad = |why: String| Error::MalformedConfig {
        file: h.origin().to_string(),
        key: "layer_types: ".into(),
        why,
    };
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("{v} is not a list of layer types")))?;
    if list.len() != n_layers {
        return Err(bad(format!(
            "lists {} layers, num_hidden_layers is {n_layers}",
            list.len()
        )));
    }
    list.iter()
        .map(|t| match t.as_str() {
            Some("linear_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            _ => Err(values::refused(
                h.origin(),
                "layer_types",
                t,
                "linear_attention, full_attention",
            )),
        })
        .collect()
}

/// Which layers are DeltaNet layers in a GGUF: `attention.recurrent_layers`, else every layer
/// but each `full_attention_interval`-th (4), as llama.cpp reads them.
pub fn gguf_recurrent(g: &Gguf, arch: &str, n_layers: usize) -> Result<Vec<bool>> {
    use candle_core::quantized::gguf_file::Value;
    let key = format!("{arch}.attention.recurrent_layers");
    if let Some(Value::Array(items)) = g.content().metadata.get(&key) {
        let flags: Option<Vec<bool>> = items
            .iter()
            .take(n_layers)
            .map(|v| match v {
                Value::Bool(b) => Some(*b),
                _ => None,
            })
            .collect();
        return match flags {
            Some(f) if f.len() == n_layers => Ok(f),
            _ => Err(values::refused(
                &g.path().display().to_string(),
                &key,
                format!("{} entries", items.len()),
                &format!("{n_layers} booleans"),
            )),
        };
    }
    let every = g
        .opt(&format!("{arch}.full_attention_interval"), Gguf::usize)?
        .unwrap_or(4)
        .max(1);
    Ok((0..n_layers)
        .map(|i| !(i + 1).is_multiple_of(every))
        .collect())
}

/// A block's token mixer.
#[derive(Clone, Debug)]
enum Mixer {
    Linear(GatedDeltaNet),
    Attention(GatedAttention),
}

/// A block's feed-forward network.
#[derive(Clone, Debug)]
enum FeedForward {
    Dense(Mlp),
    Moe(SparseMoe, SharedExpert),
}

/// One block: norm, mixer, residual; norm, feed-forward, residual.
#[derive(Clone, Debug)]
struct Block {
    input_norm: RmsNorm,
    mixer: Mixer,
    post_norm: RmsNorm,
    ffn: FeedForward,
}

impl Block {
    fn load(vb: &Vb, cfg: &Config, layer: usize, unit_offset: bool) -> Result<Self> {
        let norm = |name: &str| RmsNorm::load(&vb.pp(name), cfg.hidden, cfg.eps, unit_offset);
        let mixer = match cfg.recurrent[layer] {
            true => Mixer::Linear(GatedDeltaNet::load(&vb.pp("linear_attn"), &cfg.linear)?),
            false => Mixer::Attention(GatedAttention::load(
                &vb.pp("self_attn"),
                &attention::Config {
                    hidden: cfg.hidden,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    head_dim: cfg.head_dim,
                    scale: 1.0 / (cfg.head_dim as f64).sqrt(),
                    qkv_bias: cfg.attn_bias,
                    o_bias: cfg.attn_bias,
                    fused_qkv: false,
                    qk_norm: Some((cfg.eps, unit_offset)),
                    sliding_window: None,
                    softcap: None,
                    scale_queries: false,
                },
            )?),
        };
        let ffn = match &cfg.ffn {
            Ffn::Dense(width) => FeedForward::Dense(Mlp::load(
                &vb.pp("mlp"),
                cfg.hidden,
                *width,
                Activation::Silu,
                false,
            )?),
            Ffn::Moe { moe, shared } => FeedForward::Moe(
                SparseMoe::load(vb, cfg.hidden, moe)?,
                SharedExpert::load(&vb.pp("mlp"), cfg.hidden, *shared)?,
            ),
        };
        Ok(Self {
            input_norm: norm("input_layernorm")?,
            mixer,
            post_norm: norm("post_attention_layernorm")?,
            ffn,
        })
    }
}

/// A Qwen3.5 model (dense or MoE).
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    info: ModelInfo,
}

impl Model {
    /// Builds the model of family `spec` from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config, spec: &FamilySpec) -> Result<Self> {
        let format = vb.weights().format();
        let style = super::rope_style(spec.quirks, format);
        let unit_offset = super::norm_unit_offset(spec.quirks, format);
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), cfg, i, unit_offset))
            .collect::<Result<Vec<_>>>()?;
        let model = Self {
            embed: Embedding::new(table.clone(), None),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), cfg.hidden, cfg.eps, unit_offset)?,
            lm_head: output_layer(
                vb,
                &table,
                (cfg.hidden, cfg.vocab_size),
                cfg.untied_in.as_deref(),
            )?,
            rope: cfg.rope.build(vb, cfg.rotary_dim, style)?,
            info: ModelInfo::new(
                spec,
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
        };
        skip_multi_token_prediction(vb, cfg.n_layers, format);
        Ok(model)
    }
}

/// Marks the multi-token-prediction weights as deliberately unused: `mtp.*` in safetensors,
/// the blocks after the model's own in GGUF (speculative decoding is not implemented).
fn skip_multi_token_prediction(vb: &Vb, n_layers: usize, format: WeightFormat) {
    let w = vb.weights();
    for name in w.unused() {
        let mtp = match format {
            WeightFormat::Safetensors => name.starts_with("mtp."),
            WeightFormat::Gguf => name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= n_layers),
        };
        if mtp {
            w.ignore(&name);
        }
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let tables = self.rope.tables(ctx.cache.pos(), l, tokens.device())?;
        // 1. Embed: (1, L) -> (1, L, hidden).
        let mut x = self.embed.forward(tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            // 2. Token mixer (DeltaNet or gated attention) with residual.
            let h = b.input_norm.forward(&x)?;
            let a = match &b.mixer {
                Mixer::Linear(d) => d.forward(&h, ctx.cache, i)?,
                Mixer::Attention(a) => a.forward(&h, (&self.rope, &tables), ctx.cache, i)?,
            };
            let h = (x + a)?;
            // 3. Feed-forward (dense, or routed experts plus the gated shared one) with
            //    residual.
            let n = b.post_norm.forward(&h)?;
            let f = match &b.ffn {
                FeedForward::Dense(mlp) => mlp.forward(&n)?,
                FeedForward::Moe(moe, shared) => (moe.forward(&n)? + shared.forward(&n)?)?,
            };
            x = (h + f)?;
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
                Mixer::Linear(d) => d.config().cache_kind(),
                Mixer::Attention(a) => a.cache_kind(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
