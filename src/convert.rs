//! GGUF → Hugging Face checkpoint (`mlcli export`): the inverse of llama.cpp's converter for
//! the families in the registry. Tensors are dequantized to f32 / f16 / bf16 and renamed to
//! their canonical names through the family's name table; the declared quirks are undone
//! (Q/K rows un-permuted, Gemma's folded `1 + w` unfolded); stacked expert tensors are split
//! per expert. `config.json`, `generation_config.json`, `tokenizer.json` and
//! `tokenizer_config.json` are written from the GGUF metadata, so the directory loads in mlcli
//! (and in transformers) as a safetensors checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value as Json};

use crate::formats::gguf::Gguf;
use crate::formats::names;
use crate::formats::tokenizer;
use crate::models::{self, FamilySpec};
use crate::{Error, Result};

/// How to export.
#[derive(Clone, Copy, Debug)]
pub struct ExportOptions {
    /// dtype of the written tensors.
    pub dtype: DType,
    /// Start a new shard once one holds this many bytes (`model-0000N-of-0000M.safetensors`
    /// plus `model.safetensors.index.json` when there is more than one).
    pub max_shard_bytes: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            max_shard_bytes: 4 << 30,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    /// The family that served the file.
    pub family: &'static str,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// The files written, in order.
    pub files: Vec<PathBuf>,
}

/// Exports the GGUF at `gguf` into the directory `out` (created if needed).
pub fn gguf_to_hf(gguf: &Gguf, out: &Path, opts: ExportOptions) -> Result<ExportSummary> {
    if !matches!(opts.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::InvalidArgument(format!(
            "export dtype {:?} is not supported; supported: f32, f16, bf16",
            opts.dtype
        )));
    }
    let arch = gguf.architecture()?.to_string();
    let spec = models::family_for_gguf_file(gguf)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let config = hf_config(gguf, spec, &arch, opts.dtype)?;

    // Tensors, renamed and un-quirked, grouped into shards.
    let heads = gguf.usize(&format!("{arch}.attention.head_count"))?;
    // KV heads per block (an array where blocks differ, e.g. Gemma 4).
    let kv_key = format!("{arch}.attention.head_count_kv");
    let kv_heads = match gguf.has(&kv_key) {
        true => gguf.per_layer(&kv_key, gguf.usize(&format!("{arch}.block_count"))?)?,
        false => Vec::new(),
    };
    let v_heads = match spec.quirks.gguf_delta_net {
        true => tiled_v_heads(gguf, &arch)?,
        false => None,
    };
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut shard_bytes = 0u64;
    let (mut count, mut total) = (0usize, 0u64);
    let names: Vec<String> = gguf.tensor_names().map(str::to_string).collect();
    for name in &names {
        let block = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let kv = block
            .and_then(|i| kv_heads.get(i).copied())
            .unwrap_or(heads);
        for (hf, t) in convert_tensor(gguf, spec, name, (heads, kv), v_heads)? {
            let t = t.to_dtype(opts.dtype)?;
            let bytes = (t.elem_count() * opts.dtype.size_in_bytes()) as u64;
            if shard_bytes > 0 && shard_bytes + bytes > opts.max_shard_bytes {
                shards.push(Vec::new());
                shard_bytes = 0;
            }
            shard_bytes += bytes;
            total += bytes;
            count += 1;
            if let Some(last) = shards.last_mut() {
                last.push((hf, t));
            }
        }
    }

    let mut files = Vec::new();
    let n = shards.len();
    let mut weight_map = Map::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
        };
        for (name, _) in &shard {
            weight_map.insert(name.clone(), json!(file));
        }
        let map: HashMap<String, Tensor> = shard.into_iter().collect();
        let path = out.join(&file);
        candle_core::safetensors::save(&map, &path)?;
        files.push(path);
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        files.push(write_json(out, "model.safetensors.index.json", &index)?);
    }

    files.push(write_json(out, "config.json", &Json::Object(config))?);
    files.push(write_json(
        out,
        "generation_config.json",
        &generation_config(gguf)?,
    )?);
    files.push(write_json(
        out,
        "tokenizer.json",
        &tokenizer::tokenizer_json(gguf.content())?,
    )?);
    files.push(write_json(
        out,
        "tokenizer_config.json",
        &tokenizer_config(gguf)?,
    )?);
    Ok(ExportSummary {
        family: spec.id,
        tensors: count,
        bytes: total,
        files,
    })
}

/// One GGUF tensor as (canonical name, f32 tensor) pairs: one pair, or one per expert.
/// `(heads, kv_heads)` are its block's attention heads; `v_heads`, a DeltaNet's value heads
/// that llama.cpp's converter tiled.
fn convert_tensor(
    gguf: &Gguf,
    spec: &FamilySpec,
    name: &str,
    (heads, kv_heads): (usize, usize),
    v_heads: Option<VHeads>,
) -> Result<Vec<(String, Tensor)>> {
    let hf = names::to_hf(name, spec.gguf_names).ok_or_else(|| {
        Error::UnsupportedConfig(format!(
            "tensor '{name}' has no Hugging Face name in the '{}' family's name table",
            spec.id
        ))
    })?;
    let t = gguf
        .tensor(name, &Device::Cpu)?
        .dequantize(&Device::Cpu)?
        .to_dtype(DType::F32)?;
    let q = spec.quirks;
    let t = match v_heads {
        Some(v) if hf.contains("linear_attn.") => v.grouped(&hf, t)?,
        _ => t,
    };
    let t = if q.gguf_delta_net && hf.ends_with("linear_attn.A_log") {
        // ssm_a = -exp(A_log).
        t.neg()?.log()?
    } else if q.gguf_delta_net && hf.ends_with("linear_attn.conv1d.weight") {
        t.unsqueeze(1)?
    } else if hf.ends_with(".conv.conv.weight") && t.rank() == 2 {
        // LFM2's short convolution: (channels, 1, taps) as a depthwise Conv1d.
        t.unsqueeze(1)?
    } else if q.gguf_delta_net && hf.ends_with("linear_attn.norm.weight") {
        t
    } else if q.gguf_qk_permuted && hf.ends_with("self_attn.q_proj.weight") {
        unpermute(&t, heads)?
    } else if q.gguf_qk_permuted && hf.ends_with("self_attn.k_proj.weight") {
        unpermute(&t, kv_heads)?
    } else if q.norm_unit_offset && q.gguf_norm_unit_offset_folded && hf.ends_with("norm.weight") {
        (t - 1.0)?
    } else {
        t
    };
    if hf.contains('*') {
        let n = t.dim(0)?;
        return (0..n)
            .map(|e| Ok((hf.replace('*', &e.to_string()), t.get(e)?)))
            .collect();
    }
    Ok(vec![(hf, t)])
}

/// A Gated DeltaNet's value heads where there are fewer key heads: llama.cpp's converter
/// stores them tiled (`[k0, k1, …, k0, k1, …]`), Hugging Face grouped by key head
/// (`[k0, k0, …, k1, k1, …]`).
#[derive(Clone, Copy, Debug)]
struct VHeads {
    k_heads: usize,
    v_heads: usize,
    k_dim: usize,
    v_dim: usize,
}

/// The tiled value heads of a Qwen3.5 GGUF, when key heads are fewer.
fn tiled_v_heads(gguf: &Gguf, arch: &str) -> Result<Option<VHeads>> {
    let k = |s: &str| format!("{arch}.{s}");
    let (k_heads, v_heads) = (
        gguf.usize(&k("ssm.group_count"))?,
        gguf.usize(&k("ssm.time_step_rank"))?,
    );
    if k_heads == v_heads {
        return Ok(None);
    }
    if k_heads == 0 || !v_heads.is_multiple_of(k_heads) {
        return Err(Error::UnsupportedConfig(format!(
            "{v_heads} value heads over {k_heads} key heads; supported: a multiple"
        )));
    }
    let inner = gguf.usize(&k("ssm.inner_size"))?;
    Ok(Some(VHeads {
        k_heads,
        v_heads,
        k_dim: gguf.usize(&k("ssm.state_size"))?,
        v_dim: inner / v_heads,
    }))
}

impl VHeads {
    /// The DeltaNet tensor `hf` (as stored in the GGUF) with its value heads grouped again:
    /// the value rows of the q/k/v projection and the convolution, the rows of the gate and
    /// of β/α, the per-head decay and bias, and the output projection's columns.
    fn grouped(&self, hf: &str, t: Tensor) -> Result<Tensor> {
        let qk = 2 * self.k_heads * self.k_dim;
        let rows_after = |t: &Tensor, at: usize, head: usize| -> Result<Tensor> {
            let n = t.dim(0)?;
            let v = self.untile(&t.narrow(0, at, n - at)?, head)?;
            Ok(Tensor::cat(&[&t.narrow(0, 0, at)?, &v], 0)?)
        };
        Ok(match hf.rsplit('.').nth(1).unwrap_or_default() {
            _ if hf.ends_with("A_log") || hf.ends_with("dt_bias") => self.untile(&t, 1)?,
            "in_proj_qkv" | "conv1d" => rows_after(&t, qk, self.v_dim)?,
            "in_proj_z" => self.untile(&t, self.v_dim)?,
            "in_proj_b" | "in_proj_a" => self.untile(&t, 1)?,
            "out_proj" => self.untile(&t.t()?, self.v_dim)?.t()?.contiguous()?,
            _ => t,
        })
    }

    /// Rows in tiled head order (`(per_k, k_heads, head)` blocks) to grouped order.
    fn untile(&self, t: &Tensor, head: usize) -> Result<Tensor> {
        let dims = t.dims().to_vec();
        let rest: usize = dims[1..].iter().product();
        let per_k = self.v_heads / self.k_heads;
        Ok(t.reshape((per_k, self.k_heads, head, rest))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape(dims)?)
    }
}

/// The `config.json` keys of a Gated DeltaNet hybrid (Qwen3.5) that are no GGUF key: the
/// layers without the multi-token-prediction blocks, each layer's type, and the partial RoPE.
fn delta_net_config(gguf: &Gguf, arch: &str, c: &mut Map<String, Json>) -> Result<()> {
    let k = |s: &str| format!("{arch}.{s}");
    let mtp = gguf
        .opt(&k("nextn_predict_layers"), Gguf::usize)?
        .unwrap_or(0);
    let n_layers = gguf.usize(&k("block_count"))?.saturating_sub(mtp);
    c.insert("num_hidden_layers".into(), json!(n_layers));
    let types: Vec<&str> = models::qwen3_5::gguf_recurrent(gguf, arch, n_layers)?
        .into_iter()
        .map(|r| match r {
            true => "linear_attention",
            false => "full_attention",
        })
        .collect();
    c.insert("layer_types".into(), json!(types));
    if let (Some(rot), Some(head)) = (
        gguf.opt(&k("rope.dimension_count"), Gguf::usize)?,
        gguf.opt(&k("attention.key_length"), Gguf::usize)?,
    ) {
        c.insert(
            "partial_rotary_factor".into(),
            json!(rot as f64 / head.max(1) as f64),
        );
    }
    Ok(())
}

/// Undoes llama.cpp's `permute` of Q/K rows: within each head, rows were reordered from
/// `[half 0 | half 1]` to interleaved pairs.
pub fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::UnsupportedConfig(format!(
            "cannot un-permute {rows} rows over {heads} heads"
        )));
    }
    let rest: usize = dims[1..].iter().product();
    Ok(w.reshape((heads, rows / heads / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// `config.json` from the GGUF metadata.
fn hf_config(
    gguf: &Gguf,
    spec: &FamilySpec,
    arch: &str,
    dtype: DType,
) -> Result<Map<String, Json>> {
    let mut c = Map::new();
    c.insert("architectures".into(), json!([spec.hf_architectures[0]]));
    c.insert("model_type".into(), json!(spec.hf_model_type));
    for (hf, key) in names::CONFIG_KEYS.iter().chain(spec.hf_config_keys) {
        let key = format!("{arch}.{key}");
        if let Some(v) = number(gguf, &key)? {
            c.insert((*hf).into(), v);
        }
    }
    for (hf, literal) in spec.hf_config_defaults {
        if !c.contains_key(*hf) {
            let v = serde_json::from_str(literal)
                .map_err(|e| Error::Internal(format!("{}: default {hf}: {e}", spec.id)))?;
            c.insert((*hf).into(), v);
        }
    }
    let vocab = gguf
        .tensor_shape("token_embd.weight")
        .and_then(|s| s.first().copied())
        .ok_or_else(|| Error::MissingTensor {
            name: "model.embed_tokens.weight".into(),
            stored: "token_embd.weight".into(),
        })?;
    c.insert("vocab_size".into(), json!(vocab));
    c.insert(
        "tie_word_embeddings".into(),
        json!(!gguf.has_tensor("output.weight")),
    );
    if spec.quirks.gguf_delta_net {
        delta_net_config(gguf, arch, &mut c)?;
    }
    for (hf, tensor) in spec.quirks.gguf_tensor_flags {
        c.insert((*hf).into(), json!(gguf.has_tensor(tensor)));
    }
    if let Some(family_keys) = spec.quirks.gguf_hf_config {
        family_keys(gguf, arch, &mut c)?;
    }
    per_layer_kv_heads(gguf, arch, &mut c)?;
    if gguf.opt_str(&format!("{arch}.rope.scaling.type"))? == Some("linear") {
        let factor = gguf.float(&format!("{arch}.rope.scaling.factor"))?;
        c.insert(
            "rope_scaling".into(),
            json!({"rope_type": "linear", "factor": factor}),
        );
    }
    for (hf, key) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Some(v) = gguf.opt(key, Gguf::uint)? {
            c.insert(hf.into(), json!(v));
        }
    }
    let dtype_name = match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    };
    c.insert("torch_dtype".into(), json!(dtype_name));
    c.insert(
        "_mlcli_exported_from".into(),
        json!(gguf
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().to_string())),
    );
    Ok(c)
}

/// `num_key_value_heads` from a per-block KV head count (an array), when no family code wrote
/// it: the attention blocks' count, which must be one. Blocks with none have no attention
/// (LFM2's convolution blocks): `layer_types` says which.
fn per_layer_kv_heads(gguf: &Gguf, arch: &str, c: &mut Map<String, Json>) -> Result<()> {
    let key = format!("{arch}.attention.head_count_kv");
    if c.contains_key("num_key_value_heads") || !gguf.has(&key) {
        return Ok(());
    }
    let kv = gguf.per_layer(&key, gguf.usize(&format!("{arch}.block_count"))?)?;
    let mut counts: Vec<usize> = kv.iter().copied().filter(|&n| n > 0).collect();
    counts.dedup();
    match counts.as_slice() {
        [n] => c.insert("num_key_value_heads".into(), json!(n)),
        _ => {
            return Err(Error::UnsupportedConfig(format!(
                "{}: {key} {kv:?}; supported for export: one count for every attention block",
                gguf.path().display()
            )))
        }
    };
    if kv.contains(&0) {
        let types: Vec<&str> = kv
            .iter()
            .map(|&n| if n == 0 { "conv" } else { "full_attention" })
            .collect();
        c.insert("layer_types".into(), json!(types));
    }
    Ok(())
}

/// A numeric metadata value as JSON (integers stay integers); `None` for an array (a
/// per-block value, which a family's own export code writes).
fn number(gguf: &Gguf, key: &str) -> Result<Option<Json>> {
    let array = matches!(
        gguf.content().metadata.get(key),
        Some(candle_core::quantized::gguf_file::Value::Array(_))
    );
    if !gguf.has(key) || array {
        return Ok(None);
    }
    if let Ok(n) = gguf.uint(key) {
        return Ok(Some(json!(n)));
    }
    if let Ok(b) = gguf.bool(key) {
        return Ok(Some(json!(b)));
    }
    // GGUF floats are f32: write their shortest decimal form (1e-5, not 9.99999974e-6).
    let f = gguf.float(key)?;
    let short = (f as f32).to_string().parse::<f64>().unwrap_or(f);
    Ok(Some(json!(short)))
}

fn generation_config(gguf: &Gguf) -> Result<Json> {
    let tok = tokenizer::Tokenizer::from_gguf(gguf.content())?;
    let mut c = Map::new();
    if let Some(b) = tok.bos_id() {
        c.insert("bos_token_id".into(), json!(b));
    }
    let eog = tok.end_of_generation_ids();
    if !eog.is_empty() {
        c.insert("eos_token_id".into(), json!(eog));
    }
    Ok(Json::Object(c))
}

fn tokenizer_config(gguf: &Gguf) -> Result<Json> {
    let tok = tokenizer::Tokenizer::from_gguf(gguf.content())?;
    let piece = |id: Option<u32>| id.and_then(|i| tok.piece(i)).map(str::to_string);
    let mut c = Map::new();
    c.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    c.insert("bos_token".into(), json!(piece(tok.bos_id())));
    c.insert("eos_token".into(), json!(piece(tok.eos_id())));
    c.insert("add_bos_token".into(), json!(tok.adds_bos()));
    c.insert("add_eos_token".into(), json!(false));
    if let Some(t) = gguf.opt_str("tokenizer.chat_template")? {
        c.insert("chat_template".into(), json!(t));
    }
    Ok(Json::Object(c))
}

fn write_json(dir: &Path, name: &str, value: &Json) -> Result<PathBuf> {
    let path = dir.join(name);
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Internal(format!("{name}: {e}")))?;
    std::fs::write(&path, text).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (heads, rows, cols) = (2usize, 8usize, 3usize);
        let w = Tensor::arange(0f32, (rows * cols) as f32, &Device::Cpu)
            .unwrap()
            .reshape((rows, cols))
            .unwrap();
        let permuted = w
            .reshape((heads, 2, rows / heads / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, cols))
            .unwrap();
        let back = unpermute(&permuted, heads).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            back.flatten_all().unwrap().to_vec1().unwrap(),
            w.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b);
    }
}
