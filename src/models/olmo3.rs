//! OLMo 3 and OLMo 2 (HF `Olmo3ForCausalLM`, `Olmo2ForCausalLM`; GGUF `olmo2`, which
//! llama.cpp's converter writes for both).
//!
//! Differences from llama: post-norm blocks (`x + norm(attn(x))`, then `x + norm(mlp(x))`;
//! no norm before attention or MLP); RMSNorm on Q and K over the whole projection (all heads
//! at once, before the split into heads); NeoX RoPE; untied output by default. OLMo 3 adds a
//! sliding window on the layers `layer_types` marks `sliding_attention` (by default three of
//! every four), whose RoPE is never scaled: `rope_parameters` per layer type, or the legacy
//! `rope_scaling` applied to full-attention layers only. `attention_bias` puts biases on q, k,
//! v and o.
//!
//! GGUF: the window is `attention.sliding_window` with the per-layer
//! `attention.sliding_window_pattern` (booleans; absent: three of every four, as llama.cpp
//! reads it); sliding layers take `rope.freq_base_swa` (else the global base) unscaled.
//! Export writes `olmo3`: an OLMo 2 file exported so reads with `Olmo3Config`'s default window
//! of 4096 positions.
//! References: HF `modular_olmo3.py`, `modular_olmo2.py`; llama.cpp `src/models/olmo2.cpp`.

use candle_core::Tensor;

use super::assembly::{gguf_vocab_size, output_layer, Dims};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::rope_config::{RopeConfig, RopeScaling};
use super::values::{self, refuse_gguf, refuse_hf, HfRefusal};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "olmo3",
    kind: Kind::Dense,
    hf_architectures: &["Olmo3ForCausalLM", "Olmo2ForCausalLM"],
    gguf_architectures: &["olmo2"],
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
            "model.layers.{}.post_feedforward_layernorm.weight",
            "blk.{}.post_ffw_norm.weight",
        ),
    ],
    quirks: Quirks::NONE,
    default_template: "chatml",
    hf_model_type: "olmo3",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_q.weight",
            "attn_q_norm.weight",
            "attn_k.weight",
            "attn_k_norm.weight",
            "attn_v.weight",
            "attn_output.weight",
            "post_attention_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "post_ffw_norm.weight",
        ],
        metadata: &[
            ("attention.sliding_window", 3),
            ("synthetic.qk_norm_whole", 1),
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

/// `config.json` values the OLMo classes accept but this build does not implement.
const HF_REFUSED: &[HfRefusal] = &[
    HfRefusal {
        key: "hidden_act",
        accepted: &["\"silu\""],
        supported: "silu",
    },
    HfRefusal {
        key: "clip_qkv",
        accepted: &[],
        supported: "null (OLMo 1's clipping is not implemented)",
    },
];

/// OLMo 2/3's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Blocks, width, heads, head width, vocabulary and context.
    pub dims: Dims,
    /// MLP width.
    pub ffn: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE of full-attention layers (base and scaling).
    pub rope_full: RopeConfig,
    /// RoPE base of sliding-window layers (never scaled).
    pub rope_sliding_base: f64,
    /// The window of sliding layers.
    pub sliding_window: Option<usize>,
    /// Per layer: true for a sliding-window layer.
    pub sliding: Vec<bool>,
    /// Q, K, V and O projections have biases (`attention_bias`).
    pub attn_bias: bool,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`super::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

/// Layer `i` slides in the default pattern: three of every four.
fn default_sliding(i: usize) -> bool {
    !(i + 1).is_multiple_of(4)
}

impl Config {
    /// Reads `olmo2.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let k = |s: &str| format!("olmo2.{s}");
        refuse_gguf(g, "olmo2", values::GGUF_COMMON)?;
        let hidden = g.usize(&k("embedding_length"))?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let n_layers = g.usize(&k("block_count"))?;
        let head_dim = hidden / n_heads.max(1);
        for key in [
            "attention.key_length",
            "attention.value_length",
            "rope.dimension_count",
        ] {
            if let Some(d) = g.opt(&k(key), Gguf::usize)?.filter(|&d| d != head_dim) {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k(key),
                    d,
                    &format!("{head_dim}, embedding_length / head_count (as llama.cpp reads it)"),
                ));
            }
        }
        let sliding_window = g
            .opt(&k("attention.sliding_window"), Gguf::usize)?
            .filter(|&w| w > 0);
        let sliding = match (
            sliding_window,
            g.opt(&k("attention.sliding_window_pattern"), Gguf::bools)?,
        ) {
            (None, _) => vec![false; n_layers],
            (Some(_), Some(p)) if p.len() == n_layers => p,
            (Some(_), Some(p)) => {
                return Err(Error::BadMetadata {
                    key: k("attention.sliding_window_pattern"),
                    expected: "one boolean per block",
                    found: format!("{} values for {n_layers} blocks", p.len()),
                })
            }
            (Some(_), None) => (0..n_layers).map(default_sliding).collect(),
        };
        let rope_full = RopeConfig::from_gguf(g, "olmo2", 10_000.0)?;
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
            ffn: g.usize(&k("feed_forward_length"))?,
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            rope_sliding_base: values::opt_positive(g, &k("rope.freq_base_swa"))?
                .unwrap_or(rope_full.base),
            rope_full,
            sliding_window,
            sliding,
            attn_bias: g.has_tensor("blk.0.attn_q.bias"),
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` as `Olmo3Config` or `Olmo2Config` does.
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        refuse_hf(h, HF_REFUSED)?;
        let olmo3 = h.architecture()? == "Olmo3ForCausalLM";
        let hidden = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let (sliding_window, sliding, rope_full, rope_sliding_base) = if olmo3 {
            let window = h.opt_usize_or("sliding_window", Some(4096))?;
            let sliding = match values::sliding_layers(h, n_layers)? {
                Some(s) => s,
                None => (0..n_layers).map(default_sliding).collect(),
            };
            let (full, base) = hf_ropes(h)?;
            (window, sliding, full, base)
        } else {
            let rope = RopeConfig::from_hf(h, 10_000.0)?;
            let base = rope.base;
            (None, vec![false; n_layers], rope, base)
        };
        if sliding.contains(&true) && sliding_window.is_none_or(|w| w == 0) {
            return Err(values::refused(
                h.origin(),
                "sliding_window",
                sliding_window.map_or("null".to_string(), |w| w.to_string()),
                "a window of at least 1 when layer_types has sliding_attention layers",
            ));
        }
        let cfg = Self {
            dims: Dims {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads: h.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
                head_dim: h.opt_usize("head_dim")?.unwrap_or(hidden / n_heads.max(1)),
                vocab_size: h.usize("vocab_size")?,
                context_length: h.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            },
            ffn: h.usize("intermediate_size")?,
            eps: h.opt_positive("rms_norm_eps")?.unwrap_or(1e-5),
            rope_full,
            rope_sliding_base,
            sliding_window: sliding_window.filter(|_| sliding.contains(&true)),
            sliding,
            attn_bias: h.opt_bool("attention_bias")?.unwrap_or(false),
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
        let d = &self.dims;
        let ok = d.n_layers > 0
            && d.hidden > 0
            && d.head_dim > 0
            && d.head_dim.is_multiple_of(2)
            && d.vocab_size > 0
            && d.n_kv_heads > 0
            && d.n_heads.is_multiple_of(d.n_kv_heads)
            && self.sliding.len() == d.n_layers;
        if ok {
            Ok(())
        } else {
            Err(Error::UnsupportedConfig(format!(
                "olmo3: inconsistent dimensions {self:?}"
            )))
        }
    }

    fn attention(&self, layer: usize) -> attention::Config {
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
            qk_norm: Some((self.eps, false)),
            sliding_window: self.sliding_window.filter(|_| self.sliding[layer]),
            softcap: None,
            scale_queries: false,
        }
    }
}

/// The RoPE of full-attention layers and the base of sliding ones: transformers 5's
/// per-layer-type `rope_parameters`, else `rope_theta` + `rope_scaling` (on full layers only).
fn hf_ropes(h: &HfConfig) -> Result<(RopeConfig, f64)> {
    let full = RopeConfig::from_hf_layer_type(h, "full_attention", 500_000.0)?;
    let sliding = RopeConfig::from_hf_layer_type(h, "sliding_attention", 500_000.0)?;
    match (full, sliding) {
        (Some(full), Some(sliding)) => {
            if sliding.scaling != RopeScaling::None {
                return Err(Error::UnsupportedConfig(format!(
                    "{}: rope_parameters.sliding_attention scales RoPE ({:?}); supported for \
                     OLMo 3's sliding-window layers: rope_type 'default' (as llama.cpp runs them)",
                    h.origin(),
                    sliding.scaling
                )));
            }
            Ok((full, sliding.base))
        }
        _ => {
            let full = RopeConfig::from_hf(h, 500_000.0)?;
            let base = full.base;
            Ok((full, base))
        }
    }
}

/// One post-norm block.
#[derive(Clone, Debug)]
struct Block {
    attn: Attention,
    post_attn_norm: RmsNorm,
    mlp: Mlp,
    post_mlp_norm: RmsNorm,
    sliding: bool,
}

impl Block {
    fn load(vb: &Vb, cfg: &Config, layer: usize) -> Result<Self> {
        let h = cfg.dims.hidden;
        let opts = attention::Options {
            qk_norm_whole: true,
            ..attention::Options::default()
        };
        let norm = |name: &str| RmsNorm::load(&vb.pp(name), h, cfg.eps, false);
        Ok(Self {
            attn: Attention::load_with(&vb.pp("self_attn"), &cfg.attention(layer), opts)?,
            post_attn_norm: norm("post_attention_layernorm")?,
            mlp: Mlp::load(&vb.pp("mlp"), h, cfg.ffn, Activation::Silu, false)?,
            post_mlp_norm: norm("post_feedforward_layernorm")?,
            sliding: cfg.sliding[layer],
        })
    }
}

/// An OLMo 2/3 model.
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope_full: Rope,
    rope_sliding: Rope,
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
        Ok(Self {
            embed: Embedding::new(table.clone(), None),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), d.hidden, cfg.eps, false)?,
            lm_head: output_layer(
                vb,
                &table,
                (d.hidden, d.vocab_size),
                cfg.untied_in.as_deref(),
            )?,
            rope_full: cfg.rope_full.build(vb, d.head_dim, style)?,
            rope_sliding: Rope::new(d.head_dim, cfg.rope_sliding_base, style),
            info: ModelInfo::new(&SPEC, *d),
        })
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let (pos, dev) = (ctx.cache.pos(), tokens.device());
        let full = self.rope_full.tables(pos, l, dev)?;
        let sliding = self.rope_sliding.tables(pos, l, dev)?;
        // 1. Embed: (1, L) -> (1, L, hidden).
        let mut x = self.embed.forward(tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let rope = match b.sliding {
                true => (&self.rope_sliding, &sliding),
                false => (&self.rope_full, &full),
            };
            // 2. Attention on the unnormed stream, its output normed, with residual.
            let a = b.attn.forward(&x, rope, ctx.cache, i)?;
            let h = (x + b.post_attn_norm.forward(&a)?)?;
            // 3. MLP, its output normed, with residual.
            x = (&h + b.post_mlp_norm.forward(&b.mlp.forward(&h)?)?)?;
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
mod tests {
    use super::*;

    /// Olmo-3-7B-Instruct's `config.json` keys that matter here (fewer layers; values as
    /// published).
    const CONFIG: &str = r#"{"architectures": ["Olmo3ForCausalLM"], "model_type": "olmo3",
        "attention_bias": false, "hidden_act": "silu", "hidden_size": 4096,
        "intermediate_size": 11008, "max_position_embeddings": 65536,
        "num_attention_heads": 32, "num_hidden_layers": 8, "num_key_value_heads": 32,
        "rms_norm_eps": 1e-06, "rope_theta": 500000,
        "rope_scaling": {"attention_factor": 1.2079441541679836, "beta_fast": 32,
            "beta_slow": 1, "factor": 8.0, "original_max_position_embeddings": 8192,
            "rope_type": "yarn"},
        "sliding_window": 4096, "tie_word_embeddings": false, "vocab_size": 100278}"#;

    fn hf(edits: &[(&str, &str)]) -> Result<Config> {
        let text = crate::models::testing::edited(CONFIG, edits);
        config(&ConfigSource::Hf(&HfConfig::parse(
            &text,
            "olmo3/config.json",
        )?))
    }

    #[test]
    fn olmo3_slides_three_of_four_layers_with_unscaled_rope() {
        let c = hf(&[]).unwrap();
        let pattern = [true, true, true, false, true, true, true, false];
        assert_eq!(
            (c.sliding.as_slice(), c.sliding_window),
            (&pattern[..], Some(4096))
        );
        assert!(matches!(c.rope_full.scaling, RopeScaling::Yarn(_)));
        assert_eq!(c.rope_sliding_base, 500_000.0);
        assert_eq!(c.attention(0).sliding_window, Some(4096));
        assert_eq!(c.attention(3).sliding_window, None);
        assert!(c.untied_in.is_some());
    }

    #[test]
    fn olmo2_has_no_window_and_its_own_rope_default() {
        let c = hf(&[
            ("Olmo3ForCausalLM", "Olmo2ForCausalLM"),
            ("\"rope_theta\": 500000,", ""),
        ])
        .unwrap();
        assert_eq!((c.sliding_window, c.sliding.contains(&true)), (None, false));
        assert_eq!(c.rope_full.base, 10_000.0);
    }

    #[test]
    fn unsupported_values_are_refused_naming_the_key() {
        let e = hf(&[("\"silu\"", "\"gelu\"")]).unwrap_err().to_string();
        assert!(e.contains("hidden_act"), "{e}");
        let e = hf(&[("\"sliding_window\": 4096", "\"sliding_window\": null")]);
        assert!(e.unwrap_err().to_string().contains("sliding_window"));
    }
}
