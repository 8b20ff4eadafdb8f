//! Test support shared by unit and integration tests: tiny random-weight GGUF files for every
//! registered family (from its [`TinyConfig`](super::TinyConfig)), and the location of the real
//! test models fetched by `scripts/fetch-test-models.sh`.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::FamilySpec;
use crate::Result;

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

/// A small deterministic generator (xorshift), so tiny models are identical across runs.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], center: f32, spread: f32) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| center + spread * self.next_f32()).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

/// Candle-order shape of a block tensor from its GGUF suffix.
fn block_shape(suffix: &str, head_dim: usize) -> Option<Vec<usize>> {
    let (q, kv) = (HEADS * head_dim, KV_HEADS * head_dim);
    Some(match suffix {
        s if s.ends_with("norm.weight") && s.starts_with("attn_") && s != "attn_norm.weight" => {
            vec![head_dim]
        }
        s if s.ends_with("norm.weight") => vec![HIDDEN],
        "attn_q.weight" => vec![q, HIDDEN],
        "attn_k.weight" | "attn_v.weight" => vec![kv, HIDDEN],
        "attn_output.weight" => vec![HIDDEN, q],
        "attn_q.bias" => vec![q],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "ffn_gate.weight" | "ffn_up.weight" => vec![FFN, HIDDEN],
        "ffn_down.weight" => vec![HIDDEN, FFN],
        _ => return None,
    })
}

/// Writes a tiny random-weight GGUF for `spec` (architecture `spec.gguf_architectures[0]`,
/// or `arch_override`) with matrices stored as `dtype`.
pub fn write_tiny_gguf(
    spec: &FamilySpec,
    path: &Path,
    seed: u64,
    dtype: GgmlDType,
    arch_override: Option<&str>,
) -> Result<()> {
    let arch = arch_override.unwrap_or(spec.gguf_architectures[0]);
    let mut rng = Rng(seed.max(1));
    let head_dim = spec
        .tiny
        .metadata
        .iter()
        .find(|(k, _)| *k == "attention.key_length")
        .map_or(HIDDEN / HEADS, |(_, v)| *v as usize);
    let u = |v: usize| gguf_file::Value::U32(v as u32);
    let mut meta: Vec<(String, gguf_file::Value)> = vec![
        (
            "general.architecture".into(),
            gguf_file::Value::String(arch.into()),
        ),
        (format!("{arch}.block_count"), u(LAYERS)),
        (format!("{arch}.embedding_length"), u(HIDDEN)),
        (format!("{arch}.feed_forward_length"), u(FFN)),
        (format!("{arch}.attention.head_count"), u(HEADS)),
        (format!("{arch}.attention.head_count_kv"), u(KV_HEADS)),
        (format!("{arch}.context_length"), u(CONTEXT)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            gguf_file::Value::F32(1e-6),
        ),
        (
            format!("{arch}.rope.freq_base"),
            gguf_file::Value::F32(10_000.0),
        ),
    ];
    for (k, v) in spec.tiny.metadata {
        meta.push((format!("{arch}.{k}"), gguf_file::Value::U32(*v)));
    }
    let quantize = |t: &Tensor, is_matrix: bool| -> Result<QTensor> {
        let ty = if is_matrix { dtype } else { GgmlDType::F32 };
        Ok(QTensor::quantize(t, ty)?)
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            quantize(&rng.tensor(&[VOCAB, HIDDEN], 0.0, 1.0)?, true)?,
        ),
        (
            "output_norm.weight".into(),
            quantize(&rng.tensor(&[HIDDEN], 1.0, 0.2)?, false)?,
        ),
    ];
    for layer in 0..LAYERS {
        for suffix in spec.tiny.block_tensors {
            let shape = block_shape(suffix, head_dim).ok_or_else(|| {
                crate::Error::Config(format!(
                    "tiny model: no shape rule for block tensor '{suffix}'"
                ))
            })?;
            let is_matrix = shape.len() == 2;
            let t = if suffix.ends_with("norm.weight") {
                rng.tensor(&shape, 1.0, 0.2)?
            } else {
                rng.tensor(&shape, 0.0, 1.0 / (shape[shape.len() - 1] as f32).sqrt())?
            };
            tensors.push((format!("blk.{layer}.{suffix}"), quantize(&t, is_matrix)?));
        }
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

/// Directory of the real test models: `$MLCLI_TEST_MODELS` or `~/.cache/mlcli/test-models`.
pub fn real_models_dir() -> PathBuf {
    match std::env::var_os("MLCLI_TEST_MODELS") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/mlcli/test-models"),
    }
}

/// The path of a real test model; panics (in tests) naming the fetch script when it is missing.
pub fn real_model(file: &str) -> PathBuf {
    let p = real_models_dir().join(file);
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-test-models.sh (or set MLCLI_TEST_MODELS)",
        p.display()
    );
    p
}

/// SmolLM2-135M-Instruct Q4_1 (llama architecture, gpt2 tokenizer).
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Gemma 3 270M Q4_K_M (gemma3 architecture, SentencePiece tokenizer, base model).
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
