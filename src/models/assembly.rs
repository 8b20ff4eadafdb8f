//! Shared model assembly: what every family builds the same way, written once. RoPE from
//! either config format (every scaling type mlcli implements, in one place), the output layer
//! (tied to the embedding or its own), the vocabulary read from a GGUF, and [`ModelInfo`]
//! from a family's dimensions and its spec.

use std::sync::Arc;

use candle_core::quantized::QTensor;

use super::layers::linear::Linear;
use super::layers::rope::{llama3_freq_factors, Llama3Scaling, Rope, Style};
use super::{FamilySpec, ModelInfo};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// RoPE scaling types this build implements, for error messages.
pub const ROPE_SCALING_TYPES: &str = "default (none), linear, llama3";

/// How a model stretches its rotary frequencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Trained frequencies as they are.
    None,
    /// Positions divided by this factor.
    Linear(f64),
    /// llama3's per-frequency scaling (GGUF files carry it precomputed as `rope_freqs`).
    Llama3(Llama3Scaling),
}

/// A model's rotary embedding, as its configuration describes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    /// Frequency base (`rope_theta`, `{arch}.rope.freq_base`).
    pub base: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Unscaled RoPE with `base`.
    pub fn plain(base: f64) -> Self {
        Self {
            base,
            scaling: RopeScaling::None,
        }
    }

    /// Reads `{arch}.rope.freq_base` (else `default_base`) and `{arch}.rope.scaling.*`.
    /// llama3 scaling is not a metadata type: llama.cpp's converter stores its factors as the
    /// `rope_freqs` tensor, which [`RopeConfig::build`] applies.
    pub fn from_gguf(g: &Gguf, arch: &str, default_base: f64) -> Result<Self> {
        let k = |s: &str| format!("{arch}.{s}");
        let base = g
            .opt(&k("rope.freq_base"), Gguf::float)?
            .unwrap_or(default_base);
        let scaling = match g.opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear(g.float(&k("rope.scaling.factor"))?),
            Some(other) => {
                return Err(Error::UnsupportedConfig(format!(
                    "{}: '{other}' is not supported; supported: none, linear, llama3 (rope_freqs)",
                    k("rope.scaling.type")
                )))
            }
        };
        Ok(Self { base, scaling })
    }

    /// Reads `rope_theta` (else `default_base`) and `rope_scaling` of a `config.json`.
    pub fn from_hf(h: &HfConfig, default_base: f64) -> Result<Self> {
        let base = h.opt_float("rope_theta")?.unwrap_or(default_base);
        let Some(rs) = h.sub("rope_scaling") else {
            return Ok(Self::plain(base));
        };
        let kind = match rs.opt_str("rope_type")? {
            Some(t) => t.to_string(),
            None => rs.opt_str("type")?.unwrap_or("default").to_string(),
        };
        let scaling = match kind.as_str() {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear(rs.float("factor")?),
            "llama3" => RopeScaling::Llama3(Llama3Scaling {
                factor: rs.float("factor")?,
                low_freq_factor: rs.float("low_freq_factor")?,
                high_freq_factor: rs.float("high_freq_factor")?,
                original_context: rs.float("original_max_position_embeddings")?,
            }),
            other => {
                return Err(Error::UnsupportedConfig(format!(
                    "rope_scaling type '{other}' is not supported; supported: {ROPE_SCALING_TYPES}"
                )))
            }
        };
        Ok(Self { base, scaling })
    }

    /// The rotary embedding for heads of `head_dim` in the weights' `style`, with GGUF's
    /// precomputed `model.rope_freqs.weight` when `vb` holds it (llama3 scaling of a GGUF).
    pub fn build(&self, vb: &Vb, head_dim: usize, style: Style) -> Result<Rope> {
        let mut rope = Rope::new(head_dim, self.base, style);
        if vb.contains("model.rope_freqs.weight") {
            let f: Vec<f32> = vb
                .tensor("model.rope_freqs.weight", &[head_dim / 2])?
                .to_vec1()?;
            rope = rope.with_freq_factors(&f)?;
        }
        Ok(match self.scaling {
            RopeScaling::None => rope,
            RopeScaling::Linear(f) => rope.with_linear_scaling(f as f32),
            RopeScaling::Llama3(s) => {
                rope.with_freq_factors(&llama3_freq_factors(head_dim, self.base, s))?
            }
        })
    }
}

/// The output layer: `lm_head.weight` when the checkpoint has one, else the embedding
/// `table` (tied weights).
pub fn output_layer(vb: &Vb, table: &Arc<QTensor>, hidden: usize, vocab: usize) -> Result<Linear> {
    if vb.contains("lm_head.weight") {
        Linear::load(&vb.pp("lm_head"), hidden, vocab, false)
    } else {
        Linear::from_qtensor(table.clone())
    }
}

/// The vocabulary size of a GGUF: the rows of its token embedding.
pub fn gguf_vocab_size(g: &Gguf) -> Result<usize> {
    g.tensor_shape("token_embd.weight")
        .and_then(|s| s.first().copied())
        .ok_or_else(|| Error::MissingTensor {
            name: "model.embed_tokens.weight".into(),
            stored: "token_embd.weight".into(),
        })
}

/// A model's dimensions, as its configuration gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Blocks.
    pub n_layers: usize,
    /// Model width.
    pub hidden: usize,
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
}

impl ModelInfo {
    /// What a model of family `spec` with dimensions `d` is.
    pub fn new(spec: &FamilySpec, d: Dims) -> Self {
        Self {
            family: spec.id,
            kind: spec.kind,
            n_layers: d.n_layers,
            hidden: d.hidden,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            head_dim: d.head_dim,
            vocab_size: d.vocab_size,
            context_length: d.context_length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(json: &str) -> HfConfig {
        HfConfig::parse(json, "config.json").unwrap()
    }

    #[test]
    fn every_scaling_type_is_read_from_config_json() {
        let r = RopeConfig::from_hf(&hf(r#"{"rope_theta": 5e5}"#), 1e4).unwrap();
        assert_eq!(r, RopeConfig::plain(5e5));
        let r = RopeConfig::from_hf(&hf(r#"{}"#), 1e4).unwrap();
        assert_eq!(r, RopeConfig::plain(1e4));
        let r = RopeConfig::from_hf(
            &hf(r#"{"rope_scaling": {"type": "linear", "factor": 4.0}}"#),
            1e4,
        )
        .unwrap();
        assert_eq!(r.scaling, RopeScaling::Linear(4.0));
        let r = RopeConfig::from_hf(
            &hf(r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}"#),
            1e4,
        )
        .unwrap();
        assert!(matches!(r.scaling, RopeScaling::Llama3(s) if s.factor == 8.0));
    }

    #[test]
    fn an_unknown_scaling_type_is_refused_by_name() {
        let e = RopeConfig::from_hf(
            &hf(r#"{"rope_scaling": {"rope_type": "frobnicate", "factor": 2.0}}"#),
            1e4,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("frobnicate") && e.contains("llama3"), "{e}");
    }

    /// A GGUF of `arch` with every key the families read but no token embedding.
    fn gguf_without_embedding(arch: &str, dir: &std::path::Path) -> Gguf {
        use crate::formats::gguf_builder::Builder;
        use crate::formats::gguf_value::Value;
        let k = |s: &str| format!("{arch}.{s}");
        let path = dir.join(format!("{arch}.gguf"));
        Builder::new()
            .meta("general.architecture", Value::Str(arch.into()))
            .meta(&k("block_count"), Value::U32(1))
            .meta(&k("embedding_length"), Value::U32(8))
            .meta(&k("feed_forward_length"), Value::U32(16))
            .meta(&k("attention.head_count"), Value::U32(2))
            .meta(&k("context_length"), Value::U32(32))
            .meta(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6))
            .meta(&k("attention.sliding_window"), Value::U32(4))
            .zeroed_tensor("output_norm.weight", &[8], 0)
            .write(&path)
            .unwrap();
        Gguf::open(&path).unwrap()
    }

    #[test]
    fn a_gguf_without_token_embedding_is_refused_alike_by_every_family() {
        let dir = tempfile::tempdir().unwrap();
        for (arch, read) in [
            (
                "llama",
                (|g| super::super::llama::Config::from_gguf(g, "llama").map(|_| ()))
                    as fn(&Gguf) -> Result<()>,
            ),
            ("gemma3", |g| {
                super::super::gemma3::Config::from_gguf(g).map(|_| ())
            }),
        ] {
            let g = gguf_without_embedding(arch, dir.path());
            match read(&g) {
                Err(Error::MissingTensor { name, stored }) => {
                    assert_eq!(name, "model.embed_tokens.weight", "{arch}");
                    assert_eq!(stored, "token_embd.weight", "{arch}");
                }
                other => panic!("{arch}: expected a missing-tensor error, got {other:?}"),
            }
        }
    }
}
