//! Tensor values as f32, for `--dump` and `--stats`: GGUF tensors of every type this build
//! dequantizes (plus the plain integer and f64 ones), safetensors tensors of the common dtypes
//! (FP8 weights times their `weight_scale_inv` blocks when `config.json` declares them).
//! Tensors are read in chunks of whole rows, so one of any size is summarised without being
//! held whole, and a dump reads only the rows it shows.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::{ggml_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use regex::Regex;
use serde::Serialize;

use super::stats::Stats;
use super::Model;
use crate::formats::blocks::BlockType;
use crate::formats::hf_config::HfConfig;
use crate::formats::{fp8, ggml_types};
use crate::{Error, Result};

/// Elements decoded per chunk (16 MiB of f32).
pub const CHUNK_ELEMENTS: u64 = 1 << 22;

/// Plain (unblocked) element types, decoded directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plain {
    F64,
    F32,
    F16,
    Bf16,
    F8E4M3,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl Plain {
    fn size(self) -> u64 {
        match self {
            Self::F64 | Self::I64 | Self::U64 => 8,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F16 | Self::Bf16 | Self::I16 | Self::U16 => 2,
            Self::F8E4M3 | Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    fn from_safetensors(dtype: &str) -> Option<Self> {
        Some(match dtype {
            "F64" => Self::F64,
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::Bf16,
            "F8_E4M3" => Self::F8E4M3,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U64" => Self::U64,
            "U32" => Self::U32,
            "U16" => Self::U16,
            "U8" => Self::U8,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }

    /// The plain ggml types candle does not load but that are trivially readable.
    fn from_ggml(name: &str) -> Option<Self> {
        Some(match name {
            "F64" => Self::F64,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            _ => return None,
        })
    }

    fn decode(self, b: &[u8]) -> Result<Vec<f32>> {
        let n = self.size() as usize;
        let each = |f: fn(&[u8]) -> f32| b.chunks_exact(n).map(f).collect::<Vec<f32>>();
        Ok(match self {
            Self::F32 => each(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Self::F64 => each(|c| f64::from_le_bytes(le8(c)) as f32),
            Self::Bf16 => {
                each(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            }
            Self::I64 => each(|c| i64::from_le_bytes(le8(c)) as f32),
            Self::U64 => each(|c| u64::from_le_bytes(le8(c)) as f32),
            Self::I32 => each(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
            Self::U32 => each(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
            Self::I16 => each(|c| f32::from(i16::from_le_bytes([c[0], c[1]]))),
            Self::U16 => each(|c| f32::from(u16::from_le_bytes([c[0], c[1]]))),
            Self::I8 => each(|c| f32::from(c[0] as i8)),
            Self::U8 | Self::Bool => each(|c| f32::from(c[0])),
            Self::F16 | Self::F8E4M3 => {
                let dtype = if self == Self::F16 {
                    DType::F16
                } else {
                    DType::F8E4M3
                };
                let count = b.len() / n;
                Tensor::from_raw_buffer(b, dtype, &[count], &Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .to_vec1()?
            }
        })
    }
}

/// Eight little-endian bytes (the caller passes exactly eight).
fn le8(c: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    let n = c.len().min(8);
    a[..n].copy_from_slice(&c[..n]);
    a
}

/// How a tensor's bytes become f32.
#[derive(Clone, Debug)]
enum Decode {
    /// ggml blocks, dequantized by candle; `row` elements of `row_bytes` bytes per row.
    Ggml {
        dtype: GgmlDType,
        row: u64,
        row_bytes: u64,
    },
    /// Blocks of our own types (MXFP4, IQ4_NL, IQ4_XS), dequantized by
    /// [`BlockType::dequantize`]; rows as for `Ggml`.
    Own {
        ty: BlockType,
        row: u64,
        row_bytes: u64,
    },
    /// FP8 (E4M3) weights `(…, rows, cols)` times the scale of their block.
    Fp8 {
        scales: Vec<f32>,
        scheme: fp8::Scheme,
        rows: u64,
        cols: u64,
    },
    /// Plain elements.
    Plain(Plain),
}

/// A tensor found and checked, ready to read.
#[derive(Clone, Debug)]
struct Located {
    file: PathBuf,
    start: u64,
    elements: u64,
    decode: Decode,
    dtype: String,
    shape: Vec<u64>,
}

fn unsupported(tensor: &str, found: &str) -> Error {
    Error::UnsupportedTensorType {
        tensor: tensor.to_string(),
        found: found.to_string(),
        supported: format!(
            "{} (and F64, I8-I64 as plain values; safetensors: F64, F32, F16, BF16, F8_E4M3, I8-I64, U8-U64, BOOL)",
            ggml_types::supported_names()
        ),
    }
}

fn not_found(model: &Model, name: &str) -> Error {
    let names = super::tensors::list(model);
    let close: Vec<&str> = names
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| n.contains(name) || name.contains(*n))
        .take(3)
        .collect();
    Error::UnknownTensor {
        name: name.to_string(),
        hint: if close.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", close.join(", "))
        },
    }
}

fn locate(model: &Model, name: &str) -> Result<Located> {
    let bad = |path: &Path, reason: String| match model {
        Model::Gguf { .. } => Error::MalformedGguf {
            path: path.to_path_buf(),
            reason,
        },
        Model::Safetensors { .. } => Error::MalformedSafetensors {
            path: path.to_path_buf(),
            reason,
        },
    };
    match model {
        Model::Gguf { path, header } => {
            let t = header
                .tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| not_found(model, name))?;
            let type_name = ggml_types::name_of(t.type_id);
            let ty = ggml_types::by_id(t.type_id).ok_or_else(|| unsupported(name, &type_name))?;
            // The extent check comes first: it bounds every size computed below by the file.
            let (start, _) = header.extent(t).map_err(|r| bad(path, r))?;
            let ne0 = t.dims.first().copied().unwrap_or(1);
            // A row that is not whole blocks is read as one piece.
            let row = match ne0 % ty.block_size as u64 {
                0 => ne0,
                _ => t.elements().unwrap_or(0),
            }
            .max(1);
            let row_bytes = row / ty.block_size as u64 * ty.type_size as u64;
            let own = BlockType::from_id(ty.id);
            let decode = match (ty.candle, own, Plain::from_ggml(ty.name)) {
                (Some(dtype), _, _) => Decode::Ggml {
                    dtype,
                    row,
                    row_bytes,
                },
                (None, Some(ty), _) => Decode::Own { ty, row, row_bytes },
                (None, None, Some(plain)) => Decode::Plain(plain),
                (None, None, None) => return Err(unsupported(name, &type_name)),
            };
            Ok(Located {
                file: path.clone(),
                start,
                elements: t.elements().unwrap_or(0),
                decode,
                dtype: type_name,
                shape: t.dims.clone(),
            })
        }
        Model::Safetensors { checkpoint, .. } => {
            let (shard, t) = checkpoint
                .tensors()
                .find(|(_, t)| t.name == name)
                .ok_or_else(|| not_found(model, name))?;
            let plain =
                Plain::from_safetensors(&t.dtype).ok_or_else(|| unsupported(name, &t.dtype))?;
            let (start, _) = shard.header.extent(t).map_err(|r| bad(&shard.path, r))?;
            let (decode, dtype) = match fp8_scales(model, name, &t.dtype, &t.shape)? {
                Some(d) => (d, format!("{} × {name}_scale_inv", t.dtype)),
                None => (Decode::Plain(plain), t.dtype.clone()),
            };
            Ok(Located {
                file: shard.path.clone(),
                start,
                elements: t.elements().unwrap_or(0),
                decode,
                dtype,
                shape: t.shape.clone(),
            })
        }
    }
}

/// For an F8_E4M3 safetensors weight with `{name}_scale_inv` beside it in a checkpoint whose
/// `config.json` declares FP8 blocks: how to dequantize it. `None` for any other tensor (an
/// FP8 one without its scales or config reads as plain E4M3 values).
fn fp8_scales(model: &Model, name: &str, dtype: &str, shape: &[u64]) -> Result<Option<Decode>> {
    let Model::Safetensors { dir: Some(dir), .. } = model else {
        return Ok(None);
    };
    let config = dir.join("config.json");
    if dtype != "F8_E4M3" || !config.is_file() {
        return Ok(None);
    }
    let Some(scheme) = fp8::Scheme::from_config(&HfConfig::from_file(&config)?)? else {
        return Ok(None);
    };
    let Ok(scale) = locate(model, &format!("{name}_scale_inv")) else {
        return Ok(None);
    };
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let want = scheme
        .scale_shape(&dims)
        .map(|s| s.iter().product::<usize>());
    let mut scales = Vec::new();
    for_each_chunk(&scale, u64::MAX, &mut |c| {
        scales.extend_from_slice(c);
        Ok(())
    })?;
    let (Some(want), [.., rows, cols]) = (want, shape) else {
        return Ok(None);
    };
    if scales.len() != want {
        return Err(Error::TensorShape {
            name: format!("{name}_scale_inv"),
            expected: scheme.scale_shape(&dims).unwrap_or_default(),
            found: scale.shape.iter().map(|&d| d as usize).collect(),
        });
    }
    Ok(Some(Decode::Fp8 {
        scales,
        scheme,
        rows: *rows,
        cols: *cols,
    }))
}

/// The FP8 bytes `b`, the first at element `first` of the tensor, times their blocks' scales
/// (the NaN codes as NaN).
fn fp8_values(
    b: &[u8],
    first: u64,
    scales: &[f32],
    scheme: fp8::Scheme,
    rows: u64,
    cols: u64,
) -> Vec<f32> {
    let [br, bc] = scheme.block.map(|d| d as u64);
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    b.iter()
        .enumerate()
        .map(|(i, &byte)| {
            let at = first + i as u64;
            let (r, c) = (at / cols.max(1), at % cols.max(1));
            let (m, r) = (r / rows.max(1), r % rows.max(1));
            let s = scales.get((m * sr * sc + r / br * sc + c / bc) as usize);
            match (byte & 0x7F, s) {
                (0x7F, _) | (_, None) => f32::NAN,
                (_, Some(s)) => fp8::e4m3_to_f32(byte) * s,
            }
        })
        .collect()
}

/// Calls `f` with the tensor's values, chunk by chunk, until `limit` values were passed.
fn for_each_chunk(t: &Located, limit: u64, f: &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()> {
    let io = |source| Error::Io {
        path: t.file.clone(),
        source,
    };
    let mut file = std::fs::File::open(&t.file).map_err(io)?;
    file.seek(SeekFrom::Start(t.start)).map_err(io)?;
    let wanted = t.elements.min(limit);
    let mut done = 0u64;
    while done < wanted {
        let values = match &t.decode {
            &Decode::Ggml {
                dtype,
                row,
                row_bytes,
            } => {
                let rows = (CHUNK_ELEMENTS / row)
                    .max(1)
                    .min((wanted - done).div_ceil(row));
                let mut buf = vec![0u8; (rows * row_bytes) as usize];
                file.read_exact(&mut buf).map_err(io)?;
                let dims = vec![rows as usize, row as usize];
                ggml_file::qtensor_from_ggml(dtype, &buf, dims, &Device::Cpu)?
                    .dequantize(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
            }
            &Decode::Own { ty, row, row_bytes } => {
                let rows = (CHUNK_ELEMENTS / row)
                    .max(1)
                    .min((wanted - done).div_ceil(row));
                let mut buf = vec![0u8; (rows * row_bytes) as usize];
                file.read_exact(&mut buf).map_err(io)?;
                let mut values = vec![0f32; (rows * row) as usize];
                ty.dequantize(&buf, &mut values);
                values
            }
            Decode::Fp8 {
                scales,
                scheme,
                rows,
                cols,
            } => {
                let n = CHUNK_ELEMENTS.min(wanted - done);
                let mut buf = vec![0u8; n as usize];
                file.read_exact(&mut buf).map_err(io)?;
                fp8_values(&buf, done, scales, *scheme, *rows, *cols)
            }
            &Decode::Plain(p) => {
                let n = CHUNK_ELEMENTS.min(wanted - done);
                let mut buf = vec![0u8; (n * p.size()) as usize];
                file.read_exact(&mut buf).map_err(io)?;
                p.decode(&buf)?
            }
        };
        let take = (values.len() as u64).min(wanted - done) as usize;
        f(&values[..take])?;
        done += take as u64;
        if take == 0 {
            break;
        }
    }
    Ok(())
}

/// The first values of one tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dump {
    /// Tensor name.
    pub name: String,
    /// Storage type.
    pub dtype: String,
    /// Shape in the file's convention.
    pub shape: Vec<u64>,
    /// Elements in the tensor.
    pub elements: u64,
    /// The first values in storage order, dequantized to f32 (NaN and infinities as strings).
    #[serde(serialize_with = "floats")]
    pub values: Vec<f32>,
    /// True when `values` holds fewer than `elements`.
    pub truncated: bool,
}

fn floats<S: serde::Serializer>(v: &[f32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| {
        if x.is_finite() {
            serde_json::Value::from(*x)
        } else {
            serde_json::Value::from(x.to_string())
        }
    }))
}

/// The first `limit` values of tensor `name` (all of them for `limit == 0`).
pub fn dump(model: &Model, name: &str, limit: u64) -> Result<Dump> {
    let t = locate(model, name)?;
    let limit = if limit == 0 { u64::MAX } else { limit };
    let mut values = Vec::with_capacity(t.elements.min(limit).min(CHUNK_ELEMENTS) as usize);
    for_each_chunk(&t, limit, &mut |chunk| {
        values.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(Dump {
        name: name.to_string(),
        truncated: (values.len() as u64) < t.elements,
        dtype: t.dtype,
        shape: t.shape,
        elements: t.elements,
        values,
    })
}

/// Statistics of one tensor, or why there are none.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorStats {
    /// Tensor name.
    pub name: String,
    /// Storage type.
    pub dtype: String,
    /// Shape in the file's convention.
    pub shape: Vec<u64>,
    /// The statistics (null when the values could not be read).
    pub stats: Option<Stats>,
    /// Why the values could not be read (unsupported type, data past the end of the file).
    pub error: Option<String>,
}

/// Statistics of every tensor whose name matches `pattern` (all without one). A tensor that
/// cannot be read gets its reason instead of failing the others.
pub fn stats(model: &Model, pattern: Option<&Regex>) -> Vec<TensorStats> {
    let all = super::tensors::filter(super::tensors::list(model), pattern);
    all.into_iter()
        .map(|row| {
            let result = locate(model, &row.name).and_then(|t| {
                let mut s = Stats::default();
                for_each_chunk(&t, u64::MAX, &mut |chunk| {
                    s.merge(&Stats::of(chunk));
                    Ok(())
                })?;
                // Statistics of part of a tensor would pass for the whole one.
                if s.count != t.elements {
                    return Err(Error::Io {
                        path: t.file.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("read {} of the {} values", s.count, t.elements),
                        ),
                    });
                }
                Ok(s)
            });
            let (stats, error) = match result {
                Ok(s) => (Some(s), None),
                Err(Error::UnsupportedTensorType { found, .. }) => {
                    (None, Some(format!("{found}: not supported by this build")))
                }
                Err(e) => (None, Some(e.to_string())),
            };
            TensorStats {
                name: row.name,
                dtype: row.dtype,
                shape: row.shape,
                stats,
                error,
            }
        })
        .collect()
}
