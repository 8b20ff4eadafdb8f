//! IBM Granite 3.x dense (HF `GraniteForCausalLM`; GGUF `granite`).
//!
//! The llama block with four scalar multipliers: token embeddings are scaled by
//! `embedding_multiplier`, attention scores by `attention_multiplier` (instead of
//! `1/sqrt(head_dim)`), each residual branch by `residual_multiplier` before it is added, and
//! the logits are divided by `logits_scaling` (transformers' defaults: all 1). GGUF stores them
//! as `granite.embedding_scale`, `granite.attention.scale`, `granite.residual_scale` and
//! `granite.logit_scale`; llama.cpp's converter writes each only when it is non-zero, and
//! llama.cpp reads an absent one as no scaling (attention: `1/sqrt(head_dim)`), as here.
//! `attention_bias` and `mlp_bias` add biases as in Llama.
//! Quirk: llama.cpp's converter treats Granite as llama, so GGUF Q/K rows are permuted.
//! References: HF `modeling_granite.py`, llama.cpp `src/models/granite.cpp`.

use candle_core::{DType, Tensor};

use super::assembly::output_layer;
use super::layers::attention::Attention;
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::norm::RmsNorm;
use super::layers::rope::Rope;
use super::llama::{self, BLOCK_TENSORS};
use super::values;
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "granite",
    kind: Kind::Dense,
    hf_architectures: &["GraniteForCausalLM"],
    gguf_architectures: &["granite"],
    gguf_names: llama::BIAS_NAMES,
    quirks: Quirks {
        gguf_qk_permuted: true,
        ..Quirks::NONE
    },
    default_template: "granite",
    hf_model_type: "granite",
    hf_config_keys: &[
        ("embedding_multiplier", "embedding_scale"),
        ("residual_multiplier", "residual_scale"),
        ("attention_multiplier", "attention.scale"),
        ("logits_scaling", "logit_scale"),
    ],
    hf_config_defaults: &[],
    gguf_variants: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: BLOCK_TENSORS,
        metadata: &[
            ("embedding_scale", 2),
            ("residual_scale", 3),
            ("attention.scale", 1),
            ("logit_scale", 4),
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

/// Granite's configuration: llama's (whose `attn_scale` is the attention multiplier) plus
/// the other three multipliers.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The llama part (dimensions, RoPE, norms, biases, the attention multiplier).
    pub base: llama::Config,
    /// Multiplies the token embeddings.
    pub embedding_multiplier: f64,
    /// Multiplies each block's attention and MLP output before the residual add.
    pub residual_multiplier: f64,
    /// Divides the logits.
    pub logits_scaling: f64,
}

impl Config {
    /// Reads `granite.*` metadata (llama.cpp requires `logit_scale`; the others default to
    /// no scaling).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let scale = |k: &str| -> Result<f64> { Ok(values::opt_positive(g, k)?.unwrap_or(1.0)) };
        Ok(Self {
            base: llama::Config::from_gguf(g, "granite")?,
            embedding_multiplier: scale("granite.embedding_scale")?,
            residual_multiplier: scale("granite.residual_scale")?,
            logits_scaling: values::positive(g, "granite.logit_scale")?,
        })
    }

    /// Reads a Hugging Face `config.json` (transformers' defaults: every multiplier 1, the
    /// attention multiplier too, in place of `1/sqrt(head_dim)`).
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        let multiplier = |k: &str| -> Result<f64> { Ok(h.opt_positive(k)?.unwrap_or(1.0)) };
        let base = llama::Config::from_hf(h, &llama::LLAMA)?;
        Ok(Self {
            base: llama::Config {
                attn_scale: Some(multiplier("attention_multiplier")?),
                ..base
            },
            embedding_multiplier: multiplier("embedding_multiplier")?,
            residual_multiplier: multiplier("residual_multiplier")?,
            logits_scaling: multiplier("logits_scaling")?,
        })
    }
}

/// One pre-norm decoder block.
#[derive(Clone, Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

/// A Granite model.
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    residual_multiplier: f64,
    logits_scaling: f64,
    info: ModelInfo,
}

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let b = &cfg.base;
        let style = super::rope_style(SPEC.quirks, vb.weights().format());
        let rope = b.rope.build(vb, b.head_dim, style)?;
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[b.vocab_size, b.hidden])?;
        let lm_head = output_layer(vb, &table, (b.hidden, b.vocab_size), b.untied_in.as_deref())?;
        let blocks = (0..b.n_layers)
            .map(|i| {
                let vb = m.pp("layers").pp(i);
                Ok(Block {
                    attn_norm: RmsNorm::load(&vb.pp("input_layernorm"), b.hidden, b.eps, false)?,
                    attn: Attention::load(&vb.pp("self_attn"), &b.attention(i))?,
                    mlp_norm: RmsNorm::load(
                        &vb.pp("post_attention_layernorm"),
                        b.hidden,
                        b.eps,
                        false,
                    )?,
                    mlp: Mlp::load(&vb.pp("mlp"), b.hidden, b.ffn, Activation::Silu, b.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: Embedding::new(table, Some(cfg.embedding_multiplier)),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), b.hidden, b.eps, false)?,
            lm_head,
            rope,
            residual_multiplier: cfg.residual_multiplier,
            logits_scaling: cfg.logits_scaling,
            info: ModelInfo::new(&SPEC, b.dims()),
        })
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let tables = self.rope.tables(ctx.cache.pos(), l, tokens.device())?;
        let r = self.residual_multiplier;
        // 1. Embed and scale: (1, L) -> (1, L, hidden).
        let mut x = self.embed.forward(tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            // 2. Attention; its output scaled before the residual add.
            let a = b.attn.forward(
                &b.attn_norm.forward(&x)?,
                (&self.rope, &tables),
                ctx.cache,
                i,
            )?;
            let h = (x + (a * r)?)?;
            // 3. MLP, likewise.
            x = (&h + (b.mlp.forward(&b.mlp_norm.forward(&h)?)? * r)?)?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm, output layer, divided by the logits scale.
        let x = self.norm.forward(&x.narrow(1, l - 1, 1)?)?;
        let logits = self
            .lm_head
            .forward(&x)?
            .flatten_all()?
            .to_dtype(DType::F32)?;
        Ok((logits / self.logits_scaling)?)
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

    #[test]
    fn granite_config_reads_the_multipliers() {
        let h = HfConfig::parse(
            r#"{"architectures":["GraniteForCausalLM"],"model_type":"granite",
            "hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":40,
            "num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":4096,
            "rms_norm_eps":1e-5,"rope_theta":10000.0,"vocab_size":49155,"hidden_act":"silu",
            "attention_bias":false,"mlp_bias":false,"tie_word_embeddings":true,
            "embedding_multiplier":12.0,"residual_multiplier":0.22,
            "attention_multiplier":0.015625,"logits_scaling":8.0}"#,
            "config.json",
        )
        .unwrap();
        let c = Config::from_hf(&h).unwrap();
        assert_eq!(c.base.head_dim, 64);
        assert_eq!(c.embedding_multiplier, 12.0);
        assert_eq!(c.residual_multiplier, 0.22);
        assert_eq!(c.base.attn_scale, Some(0.015625));
        assert_eq!(c.logits_scaling, 8.0);
    }
}

#[cfg(test)]
mod refusal_tests {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::GgmlDType;

    use super::*;
    use crate::models::testing;

    #[test]
    fn granite_multipliers_must_be_positive_and_biases_are_honoured() {
        let base = r#"{"architectures":["GraniteForCausalLM"],"hidden_size":64,
            "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,
            "max_position_embeddings":64,"rms_norm_eps":1e-5,"vocab_size":128,
            "mlp_bias":true,"attention_bias":true,"logits_scaling":8.0}"#;
        let read = |text: &str| Config::from_hf(&HfConfig::parse(text, "granite/config.json")?);
        let c = read(base).unwrap();
        assert!(c.base.mlp_bias && c.base.qkv_bias && c.base.o_bias);
        assert_eq!(
            (c.embedding_multiplier, c.base.attn_scale),
            (1.0, Some(1.0))
        );
        for (from, to) in [
            ("\"logits_scaling\":8.0", "\"logits_scaling\":0"),
            (
                "\"logits_scaling\":8.0",
                "\"logits_scaling\":8.0,\"embedding_multiplier\":-12",
            ),
            (
                "\"logits_scaling\":8.0",
                "\"logits_scaling\":8.0,\"attention_multiplier\":0",
            ),
        ] {
            let e = read(&base.replace(from, to)).unwrap_err().to_string();
            assert!(
                e.contains("granite/config.json") && e.contains("positive"),
                "{e}"
            );
        }
        // GGUF: only logit_scale is required; the others default to no scaling.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let gguf = |edit: &dyn Fn(&mut testing::Meta)| {
            testing::write_tiny_gguf_with(&SPEC, &path, 1, GgmlDType::F32, None, edit).unwrap();
            Config::from_gguf(&Gguf::open(&path).unwrap())
        };
        let c = gguf(&|m| m.retain(|(k, _)| k != "granite.embedding_scale")).unwrap();
        assert_eq!((c.embedding_multiplier, c.residual_multiplier), (1.0, 3.0));
        let e = gguf(&|m| testing::set_meta(m, "granite.logit_scale", Value::F32(0.0)));
        assert!(e.unwrap_err().to_string().contains("granite.logit_scale"));
    }
}
