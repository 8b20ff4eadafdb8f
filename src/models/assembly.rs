//! Shared model assembly: what every family builds the same way, written once. The output
//! layer (tied to the embedding or its own), the vocabulary read from a GGUF, and
//! [`ModelInfo`] from a family's dimensions and its spec, trailing multi-token-prediction
//! blocks marked unused; RoPE from either config format is [`super::rope_config`].

use super::layers::embedding::Table;
use super::layers::linear::Linear;
use super::{FamilySpec, ModelInfo};
use crate::formats::gguf::Gguf;
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// The output layer of `(hidden, vocab)`: `lm_head.weight` when the checkpoint has one, else
/// the embedding `table` (tied weights) unless `untied_in` names a `config.json` that says
/// `tie_word_embeddings: false`. transformers reads the same: with both tensors present it
/// does not tie them, and without `lm_head.weight` an untied model would run a randomly
/// initialised output layer, which is refused.
pub fn output_layer(
    vb: &Vb,
    table: &Table,
    (hidden, vocab): (usize, usize),
    untied_in: Option<&str>,
) -> Result<Linear> {
    if vb.contains("lm_head.weight") {
        return Linear::load(&vb.pp("lm_head"), hidden, vocab, false);
    }
    match untied_in {
        Some(origin) => Err(Error::UnsupportedConfig(format!(
            "{origin}: tie_word_embeddings = false, but the checkpoint has no lm_head.weight \
             (transformers would run a randomly initialised output layer); supported: \
             lm_head.weight, or tie_word_embeddings = true"
        ))),
        None => match table {
            Table::Candle(t) => Linear::from_qtensor(t.clone()),
            Table::Blocks(b) => Ok(Linear::from_matrix(vb.blocks_weight(b.clone())?)),
        },
    }
}

/// Marks the blocks from `n_layers` on as deliberately unused: checkpoints that append
/// multi-token-prediction blocks after the model's own (DeepSeek-V3's
/// `num_nextn_predict_layers`, GLM-4.x MoE) store them as `model.layers.N.*` (safetensors) or
/// `blk.N.*` (GGUF); they serve speculative decoding, which is not implemented.
pub fn ignore_blocks_from(vb: &Vb, n_layers: usize) {
    let w = vb.weights();
    for name in w.unused() {
        let index = name
            .strip_prefix("model.layers.")
            .or_else(|| name.strip_prefix("blk."))
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        if index.is_some_and(|i| i >= n_layers) {
            w.ignore(&name);
        }
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
