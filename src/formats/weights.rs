//! `Weights`: a VarBuilder-like façade over a checkpoint (a GGUF file or safetensors files).
//! Families address tensors by their canonical (Hugging Face) names through a prefix tree; the
//! façade maps names to the file's convention, loads each tensor once, quantizes full-precision
//! linear weights when asked (`--quant`), keeps FP8 block-scaled linear weights as stored (with
//! their `weight_scale_inv`), and records what was consumed so leftovers are caught.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::blocks::{BlockType, Blocks};
use super::fp8::{self, Fp8};
use super::gguf::Gguf;
use super::mxfp4;
use super::names::{self, NamePair};
use super::quant::quant_for;
pub use super::quant::{parse_quant, Quant, QUANT_TYPES};
use crate::kernels::cpu::repacked::Repacked;
use crate::models::layers::embedding::Table;
use crate::{Error, Result};

/// A linear layer's weight as loaded: candle's (dense, or quantized in a type candle
/// computes), or blocks of our own types (MXFP4, IQ4_NL, IQ4_XS) or FP8 block-scaled bytes,
/// which our own kernels compute.
#[derive(Clone, Debug)]
pub enum Matrix {
    /// Candle's matmul over a dense or quantized tensor.
    Candle(QMatMul),
    /// MXFP4, IQ4_NL or IQ4_XS `(out, in)` (CPU only); boxed, so that layers of candle's
    /// weights stay small.
    Blocks(Box<Blocks>),
    /// FP8 (E4M3) with block scales `(out, in)` (CPU only), as a checkpoint stores it.
    Fp8(Box<Fp8>),
    /// Q4_K `(out, in)` repacked in groups of sixteen rows for our CPU kernels (CPU
    /// only; shared, as its clones would be large).
    Repacked(std::sync::Arc<Repacked>),
}

impl Matrix {
    /// A weight of one of our block types.
    pub fn blocks(m: Blocks) -> Self {
        Self::Blocks(Box::new(m))
    }

    /// The shape, outermost dimension first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Matrix::Candle(QMatMul::QTensor(q)) => q.shape().dims().to_vec(),
            Matrix::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims().to_vec(),
            Matrix::Blocks(m) => m.shape().to_vec(),
            Matrix::Fp8(m) => {
                let (rows, cols) = m.dims2();
                vec![rows, cols]
            }
            Matrix::Repacked(m) => {
                let (rows, cols) = m.dims2();
                vec![rows, cols]
            }
        }
    }
}

/// The on-disk convention of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// GGUF names and quantized blocks.
    Gguf,
    /// Hugging Face names, full-precision tensors (safetensors).
    Safetensors,
}

/// How full-precision (safetensors) weights are held in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Precision {
    /// dtype of dense linear weights (activations stay f32 on CPU).
    pub dtype: DType,
    /// Quantize linear weights (and the embedding table) at load time to this type.
    pub quant: Option<Quant>,
}

impl Default for Precision {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            quant: None,
        }
    }
}

enum Source<'a> {
    Gguf {
        gguf: &'a Gguf,
        extra_names: &'static [NamePair],
    },
    Safetensors {
        files: MmapedSafetensors,
        /// Every tensor name, in file order.
        names: Vec<String>,
        precision: Precision,
        /// How `F8_E4M3` weights are scaled (`quantization_config`), when they are.
        fp8: Option<fp8::Scheme>,
        /// In a multimodal checkpoint, where its text model's tensors are stored: `(name as
        /// the family asks for it, name in the file)` prefix pairs. Empty: names as asked.
        text_prefixes: Vec<(&'static str, &'static str)>,
    },
}

/// How multimodal checkpoints store their text model: transformers 5's layout, then the
/// older one (which transformers 5 still writes for Gemma 3).
const TEXT_LAYOUTS: &[&[(&str, &str)]] = &[
    &[
        ("model.", "model.language_model."),
        ("lm_head.", "lm_head."),
    ],
    &[
        ("model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ],
];

/// All tensors of one checkpoint, on one device.
pub struct Weights<'a> {
    source: Source<'a>,
    device: Device,
    loaded: RefCell<HashMap<String, Arc<QTensor>>>,
    consumed: RefCell<HashSet<String>>,
    /// Checking, not running: see [`Weights::check_only`].
    check_only: bool,
}

impl<'a> Weights<'a> {
    /// Weights read from a GGUF file; `extra_names` are the family's own name rows.
    pub fn from_gguf(gguf: &'a Gguf, extra_names: &'static [NamePair], device: &Device) -> Self {
        Self {
            source: Source::Gguf { gguf, extra_names },
            device: device.clone(),
            loaded: RefCell::new(HashMap::new()),
            consumed: RefCell::new(HashSet::new()),
            check_only: false,
        }
    }

    /// Weights memory-mapped from safetensors files (one, or the shards of one checkpoint).
    pub fn from_safetensors(
        files: &[std::path::PathBuf],
        precision: Precision,
        device: &Device,
    ) -> Result<Self> {
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them
        // not being truncated while the model loads (tensors are copied out during loading).
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| {
            Error::MalformedSafetensors {
                path: files.first().cloned().unwrap_or_default(),
                reason: e.to_string(),
            }
        })?;
        let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
        names.sort();
        Ok(Self {
            source: Source::Safetensors {
                files: st,
                names,
                precision,
                fp8: None,
                text_prefixes: Vec::new(),
            },
            device: device.clone(),
            loaded: RefCell::new(HashMap::new()),
            consumed: RefCell::new(HashSet::new()),
            check_only: false,
        })
    }

    /// The same weights for a load that only checks them (`inspect`'s verdict): every lookup,
    /// name, shape and type check happens as in a real load, but no tensor data is read.
    /// GGUF tensors are borrowed from the map as always; safetensors tensors come back as zeros
    /// of their stored shape (in f32, untouched pages) instead of being read and converted,
    /// and layers skip work that would read data (stacking parts).
    pub fn check_only(mut self) -> Self {
        self.check_only = true;
        self
    }

    /// The same weights with `F8_E4M3` tensors read as FP8 block-scaled weights of `scheme`
    /// (the checkpoint's `quantization_config`): each with its `{name}_scale_inv`. Without a
    /// scheme such tensors are refused.
    pub fn with_fp8(mut self, scheme: Option<fp8::Scheme>) -> Self {
        if let Source::Safetensors { fp8, .. } = &mut self.source {
            *fp8 = scheme;
        }
        self
    }

    /// The convention of the underlying file.
    pub fn format(&self) -> WeightFormat {
        match self.source {
            Source::Gguf { .. } => WeightFormat::Gguf,
            Source::Safetensors { .. } => WeightFormat::Safetensors,
        }
    }

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A handle rooted at `prefix`.
    pub fn pp(&self, prefix: impl Into<String>) -> Vb<'_, 'a> {
        Vb {
            weights: self,
            prefix: prefix.into(),
        }
    }

    fn stored_name(&self, name: &str) -> String {
        match &self.source {
            Source::Gguf { extra_names, .. } => {
                names::to_gguf(name, extra_names).unwrap_or_else(|| name.to_string())
            }
            Source::Safetensors { text_prefixes, .. } => text_prefixes
                .iter()
                .find_map(|(asked, stored)| {
                    name.strip_prefix(asked)
                        .map(|rest| format!("{stored}{rest}"))
                })
                .unwrap_or_else(|| name.to_string()),
        }
    }

    /// Reads only the text model of a multimodal checkpoint (its language model's tensors,
    /// found in either layout of [`TEXT_LAYOUTS`]); the rest (vision tower, projector) is left
    /// unread and not counted as unused. Returns how many tensors are left so.
    pub fn select_text_model(&mut self) -> Result<usize> {
        let Source::Safetensors {
            names,
            text_prefixes,
            ..
        } = &mut self.source
        else {
            return Ok(0);
        };
        let layout = TEXT_LAYOUTS.iter().find(|l| {
            names
                .iter()
                .any(|n| n.starts_with(l[0].1) && n.contains("layers."))
        });
        let Some(layout) = layout else {
            return Err(Error::MissingTensor {
                name: "model.layers.0.*".into(),
                stored: "model.language_model.layers.0.* or language_model.model.layers.0.*".into(),
            });
        };
        *text_prefixes = layout.to_vec();
        Ok(names
            .iter()
            .filter(|n| !layout.iter().any(|(_, stored)| n.starts_with(stored)))
            .count())
    }

    fn has_stored(&self, stored: &str) -> bool {
        match &self.source {
            Source::Gguf { gguf, .. } => gguf.has_tensor(stored),
            Source::Safetensors { names, .. } => {
                names.binary_search_by(|n| n.as_str().cmp(stored)).is_ok()
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.has_stored(&self.stored_name(name))
    }

    fn missing(&self, name: &str, stored: String) -> Error {
        Error::MissingTensor {
            name: name.to_string(),
            stored,
        }
    }

    /// A safetensors tensor as stored (any float dtype), marked consumed; zeros of its shape in
    /// f32 when only checking.
    fn raw(&self, files: &MmapedSafetensors, stored: &str) -> Result<Tensor> {
        if let Some(parts) = self.fp8_parts(files, stored)? {
            return self.fp8_dense(parts);
        }
        if self.check_only {
            return self.zeros_like_stored(files, stored);
        }
        let t = files
            .load(stored, &self.device)
            .map_err(|e| Error::UnsupportedTensorType {
                tensor: stored.to_string(),
                found: e.to_string(),
                supported: FLOAT_TYPES.into(),
            })?;
        if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::UnsupportedTensorType {
                tensor: stored.to_string(),
                found: format!("{:?}", t.dtype()),
                supported: FLOAT_TYPES.into(),
            });
        }
        self.consumed.borrow_mut().insert(stored.to_string());
        Ok(t)
    }

    /// Zeros of `stored`'s shape (f32; calloc'd pages that stay untouched), after the same
    /// type check as a real read.
    fn zeros_like_stored(&self, files: &MmapedSafetensors, stored: &str) -> Result<Tensor> {
        let unsupported = |found: String| Error::UnsupportedTensorType {
            tensor: stored.to_string(),
            found,
            supported: FLOAT_TYPES.into(),
        };
        let view = files.get(stored).map_err(|e| unsupported(e.to_string()))?;
        let dtype = DType::try_from(view.dtype()).ok();
        if !matches!(dtype, Some(DType::F32 | DType::F16 | DType::BF16)) {
            return Err(unsupported(format!("{:?}", view.dtype())));
        }
        let t = Tensor::zeros(view.shape(), DType::F32, &Device::Cpu)?;
        self.consumed.borrow_mut().insert(stored.to_string());
        Ok(t)
    }

    /// When `stored` is an `F8_E4M3` tensor: its bytes (none when only checking), its block
    /// scales in f32 and its shape, the weight and its `{stored}_scale_inv` marked consumed.
    fn fp8_parts(&self, files: &MmapedSafetensors, stored: &str) -> Result<Option<Fp8Parts>> {
        let Ok(view) = files.get(stored) else {
            return Ok(None);
        };
        if DType::try_from(view.dtype()).ok() != Some(DType::F8E4M3) {
            return Ok(None);
        }
        let Source::Safetensors {
            fp8: Some(scheme), ..
        } = &self.source
        else {
            return Err(Error::UnsupportedTensorType {
                tensor: stored.to_string(),
                found: "F8_E4M3 without quantization_config.quant_method \"fp8\" in config.json"
                    .into(),
                supported: FLOAT_TYPES.into(),
            });
        };
        let shape = view.shape().to_vec();
        let scale_name = format!("{stored}_scale_inv");
        let Some(scale_shape) = scheme.scale_shape(&shape) else {
            return Err(Error::UnsupportedTensorType {
                tensor: stored.to_string(),
                found: format!("F8_E4M3 of shape {shape:?}"),
                supported: "F8_E4M3 matrices (2 or more dimensions)".into(),
            });
        };
        if !self.has_stored(&scale_name) {
            return Err(self.missing(&scale_name, scale_name.clone()));
        }
        let scales = files
            .load(&scale_name, &Device::Cpu)
            .ok()
            .filter(|t| matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16))
            .ok_or_else(|| Error::UnsupportedTensorType {
                tensor: scale_name.clone(),
                found: files
                    .get(&scale_name)
                    .map_or("unreadable".into(), |v| format!("{:?}", v.dtype())),
                supported: "F32, F16, BF16 block scales".into(),
            })?;
        check_shape(&scale_name, scales.dims(), &scale_shape)?;
        let scales = scales
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let values = if self.check_only {
            Vec::new()
        } else {
            view.data().to_vec()
        };
        let mut consumed = self.consumed.borrow_mut();
        consumed.insert(stored.to_string());
        consumed.insert(scale_name);
        Ok(Some(Fp8Parts {
            values,
            scales,
            shape,
            scheme: *scheme,
        }))
    }

    /// An FP8 tensor dequantized to f32 (zeros of its shape when only checking).
    fn fp8_dense(&self, p: Fp8Parts) -> Result<Tensor> {
        if self.check_only {
            return Ok(Tensor::zeros(p.shape, DType::F32, &Device::Cpu)?);
        }
        let values = fp8::dequantize(&p.values, &p.scales, &p.shape, p.scheme);
        Ok(Tensor::from_vec(values, p.shape, &self.device)?)
    }

    fn qtensor(&self, name: &str) -> Result<Arc<QTensor>> {
        let stored = self.stored_name(name);
        if let Some(t) = self.loaded.borrow().get(&stored) {
            return Ok(t.clone());
        }
        if !self.has_stored(&stored) {
            return Err(self.missing(name, stored));
        }
        let t = match &self.source {
            Source::Gguf { gguf, .. } => gguf.tensor(&stored, &self.device)?,
            Source::Safetensors {
                files, precision, ..
            } => {
                let t = self.raw(files, &stored)?;
                let qtype = precision
                    .quant
                    .and_then(|q| quant_for(t.dims(), q.table_type()))
                    .unwrap_or(GgmlDType::F32);
                if self.check_only {
                    zeros_qtensor(t.dims(), qtype)?
                } else {
                    QTensor::quantize(&t.to_dtype(DType::F32)?, qtype)?
                }
            }
        };
        let t = Arc::new(t);
        self.loaded.borrow_mut().insert(stored.clone(), t.clone());
        self.consumed.borrow_mut().insert(stored);
        Ok(t)
    }

    /// Drops the loaded copy of `name` kept for later lookups (its memory is freed once the
    /// last user lets go), for a tensor whose data now lives elsewhere (stacked with others);
    /// a mapped GGUF tensor's pages leave the resident set.
    fn forget(&self, name: &str) {
        let stored = self.stored_name(name);
        self.loaded.borrow_mut().remove(&stored);
        if let Source::Gguf { gguf, .. } = &self.source {
            gguf.release(&stored);
        }
    }

    /// The `n` experts stacked in GGUF tensor `name`, each checked against `shape`.
    fn split(&self, name: &str, n: usize, shape: &[usize]) -> Result<Vec<Matrix>> {
        let Source::Gguf { gguf, .. } = &self.source else {
            return Err(Error::Internal("stacked experts are a GGUF layout".into()));
        };
        let stored = self.stored_name(name);
        if !self.has_stored(&stored) {
            return Err(self.missing(name, stored));
        }
        let stacked_shape: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
        if let Some(found) = gguf.tensor_shape(&stored) {
            check_shape(name, &found, &stacked_shape)?;
        }
        let parts = if gguf.block_type(&stored).is_some() {
            let whole = gguf.blocks(&stored, &Device::Cpu)?;
            whole
                .split(n)?
                .into_iter()
                .map(|m| self.blocks_weight(m))
                .collect::<Result<Vec<_>>>()?
        } else {
            let parts = gguf.tensor_split(&stored, n, &self.device)?;
            let parts = parts.into_iter().map(|q| QMatMul::from_arc(Arc::new(q)));
            parts
                .map(|m| Ok(Matrix::Candle(m?)))
                .collect::<Result<Vec<_>>>()?
        };
        self.consumed.borrow_mut().insert(stored);
        Ok(parts)
    }

    /// The `n` matrices stacked in one tensor `name` (`(n, out, in)`, e.g. transformers 5's
    /// `experts.gate_up_proj`), each checked against `shape` and made ready for a matmul as
    /// [`Weights::matmul`] makes one.
    fn split_any(&self, name: &str, n: usize, shape: &[usize]) -> Result<Vec<Matrix>> {
        let Source::Safetensors { files, .. } = &self.source else {
            return self.split(name, n, shape);
        };
        let stored = self.stored_name(name);
        if !self.has_stored(&stored) {
            return Err(self.missing(name, stored));
        }
        let t = self.raw(files, &stored)?;
        let stacked_shape: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
        check_shape(name, t.dims(), &stacked_shape)?;
        (0..n)
            .map(|e| self.dense_matrix(t.get(e)?.contiguous()?))
            .collect()
    }

    /// A linear layer's weight: quantized blocks from GGUF as they are (ours included);
    /// safetensors weights quantized at load time (`--quant`) or kept dense in the chosen
    /// dtype.
    fn matmul(&self, name: &str) -> Result<Matrix> {
        let Source::Safetensors { files, .. } = &self.source else {
            let stored = self.stored_name(name);
            if let Source::Gguf { gguf, .. } = &self.source {
                if gguf.block_type(&stored).is_some() {
                    let m = gguf.blocks(&stored, &Device::Cpu)?;
                    self.consumed.borrow_mut().insert(stored);
                    return self.blocks_weight(m);
                }
            }
            return Ok(Matrix::Candle(QMatMul::from_arc(self.qtensor(name)?)?));
        };
        let stored = self.stored_name(name);
        if !self.has_stored(&stored) {
            return Err(self.missing(name, stored));
        }
        if let Some(p) = self.fp8_parts(files, &stored)? {
            // Kept as stored for our CPU kernels, unless quantized to another type, checked
            // only, or on an accelerator (which computes the dequantized weights).
            let keep = !self.check_only && self.device.is_cpu() && self.precision().quant.is_none();
            if let (true, &[rows, cols]) = (keep, p.shape.as_slice()) {
                let m = Fp8::new(p.values, p.scales, (rows, cols), p.scheme)?;
                return Ok(Matrix::Fp8(Box::new(m)));
            }
            return self.dense_matrix(self.fp8_dense(p)?);
        }
        let t = self.raw(files, &stored)?;
        self.dense_matrix(t)
    }

    /// How full-precision weights are held (the default for GGUF).
    fn precision(&self) -> Precision {
        match &self.source {
            Source::Safetensors { precision, .. } => *precision,
            Source::Gguf { .. } => Precision::default(),
        }
    }

    /// A dense weight (as stored in safetensors) for a linear layer: quantized (`--quant`) or
    /// in the chosen dtype; left as it is when only checking.
    fn dense_matrix(&self, t: Tensor) -> Result<Matrix> {
        let precision = self.precision();
        if self.check_only {
            return Ok(Matrix::Candle(QMatMul::Tensor(t)));
        }
        let q = match precision.quant {
            Some(Quant::Mxfp4) => return self.mxfp4_matrix(t),
            Some(Quant::Ggml(q)) => Some(q),
            None => None,
        };
        Ok(Matrix::Candle(
            match q.and_then(|q| quant_for(t.dims(), q)) {
                Some(q) => {
                    QMatMul::from_arc(Arc::new(QTensor::quantize(&t.to_dtype(DType::F32)?, q)?))?
                }
                None => QMatMul::Tensor(t.to_dtype(precision.dtype)?),
            },
        ))
    }

    /// Blocks of our own types as a layer's weight: as they are on the CPU, where our
    /// kernels read them; on an accelerator, which has no kernel for them yet, dequantized
    /// and then kept in the chosen dtype or quantized (`--quant`) as any dense weight is.
    fn blocks_weight(&self, m: Blocks) -> Result<Matrix> {
        if self.device.is_cpu() {
            return Ok(Matrix::blocks(m));
        }
        let t = Tensor::from_vec(m.dequantize(), m.shape(), &self.device)?;
        self.dense_matrix(t)
    }

    /// A dense weight quantized to MXFP4 (`--quant mxfp4`) when its rows are whole blocks of
    /// 32; kept in f32 otherwise, as other types keep rows that fit none of their blocks.
    fn mxfp4_matrix(&self, t: Tensor) -> Result<Matrix> {
        let dims = t.dims().to_vec();
        if !self.device.is_cpu() {
            return Err(Error::UnsupportedTensorType {
                tensor: format!("a weight of shape {dims:?}"),
                found: format!("--quant mxfp4 on {:?}", self.device),
                supported: "--quant mxfp4 on the CPU".into(),
            });
        }
        if dims.len() != 2 || BlockType::Mxfp4.bytes_for(&dims).is_none() {
            let dtype = self.precision().dtype;
            return Ok(Matrix::Candle(QMatMul::Tensor(t.to_dtype(dtype)?)));
        }
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Matrix::blocks(Blocks::quantize(
            BlockType::Mxfp4,
            &values,
            dims,
        )?))
    }

    /// A safetensors tensor of unsigned bytes as stored (MXFP4 blocks and scales), marked
    /// consumed, with its shape; zeros (untouched pages) when only checking.
    fn raw_u8(&self, name: &str) -> Result<(Vec<u8>, Vec<usize>)> {
        let Source::Safetensors { files, .. } = &self.source else {
            return Err(Error::Internal(format!(
                "{name}: byte tensors are a safetensors layout"
            )));
        };
        let stored = self.stored_name(name);
        if !self.has_stored(&stored) {
            return Err(self.missing(name, stored));
        }
        let unsupported = |found: String| Error::UnsupportedTensorType {
            tensor: stored.clone(),
            found,
            supported: "U8 (MXFP4 blocks and scales)".into(),
        };
        let view = files.get(&stored).map_err(|e| unsupported(e.to_string()))?;
        if DType::try_from(view.dtype()).ok() != Some(DType::U8) {
            return Err(unsupported(format!("{:?}", view.dtype())));
        }
        let shape = view.shape().to_vec();
        let bytes = if self.check_only {
            Vec::new()
        } else {
            view.data().to_vec()
        };
        self.consumed.borrow_mut().insert(stored);
        Ok((bytes, shape))
    }

    /// Marks a stored tensor as deliberately unused (e.g. precomputed tables we recompute).
    pub fn ignore(&self, name: &str) {
        let stored = self.stored_name(name);
        self.consumed.borrow_mut().insert(stored);
    }

    /// Names in the file that no layer consumed, in file order.
    pub fn unused(&self) -> Vec<String> {
        let consumed = self.consumed.borrow();
        match &self.source {
            Source::Gguf { gguf, .. } => gguf
                .tensor_names()
                .filter(|n| !consumed.contains(*n))
                .map(str::to_string)
                .collect(),
            Source::Safetensors {
                names,
                text_prefixes,
                ..
            } => names
                .iter()
                .filter(|n| !consumed.contains(*n))
                .filter(|n| {
                    text_prefixes.is_empty() || text_prefixes.iter().any(|(_, s)| n.starts_with(s))
                })
                .cloned()
                .collect(),
        }
    }

    /// Errors when tensors were left over: the family does not understand this checkpoint.
    pub fn check_all_used(&self, family: &'static str) -> Result<()> {
        let unused = self.unused();
        if unused.is_empty() {
            return Ok(());
        }
        Err(Error::UnusedTensors {
            family,
            count: unused.len(),
            examples: unused
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// The safetensors types of weights this build reads.
const FLOAT_TYPES: &str =
    "F32, F16, BF16, F8_E4M3 with weight_scale_inv blocks (quantization_config fp8)";

/// An FP8 tensor as read: bytes, block scales in f32, shape and scheme.
struct Fp8Parts {
    values: Vec<u8>,
    scales: Vec<f32>,
    shape: Vec<usize>,
    scheme: fp8::Scheme,
}

/// A prefix in the weight tree, e.g. `model.layers.3.self_attn`.
#[derive(Clone)]
pub struct Vb<'w, 'a> {
    weights: &'w Weights<'a>,
    prefix: String,
}

impl<'w, 'a> Vb<'w, 'a> {
    /// Descends one level: `vb.pp("mlp").pp("up_proj")`.
    pub fn pp(&self, segment: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{segment}", self.prefix)
        };
        Self {
            weights: self.weights,
            prefix,
        }
    }

    /// The full canonical name of `leaf` under this prefix.
    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// The weights this handle reads from.
    pub fn weights(&self) -> &'w Weights<'a> {
        self.weights
    }

    /// True when the load only checks (see [`Weights::check_only`]): layers skip work that
    /// reads tensor data.
    pub fn check_only(&self) -> bool {
        self.weights.check_only
    }

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.weights.device
    }

    /// True when `leaf` exists under this prefix.
    pub fn contains(&self, leaf: &str) -> bool {
        self.weights.contains(&self.name(leaf))
    }

    /// The stored (possibly quantized) tensor `leaf`, checked against `shape` (rows, cols...)
    /// given in candle's order (outermost first).
    pub fn qtensor(&self, leaf: &str, shape: &[usize]) -> Result<Arc<QTensor>> {
        let name = self.name(leaf);
        let t = self.weights.qtensor(&name)?;
        check_shape(&name, t.shape().dims(), shape)?;
        Ok(t)
    }

    /// The embedding table `leaf`, checked against `shape`: blocks of our own types as they
    /// are stored in a GGUF (IQ4_NL, IQ4_XS, MXFP4: looked up row by row on the CPU), else
    /// as [`Vb::qtensor`] reads it.
    pub fn table(&self, leaf: &str, shape: &[usize]) -> Result<Table> {
        let name = self.name(leaf);
        let w = self.weights;
        if let Source::Gguf { gguf, .. } = &w.source {
            let stored = w.stored_name(&name);
            if gguf.block_type(&stored).is_some() {
                let b = gguf.blocks(&stored, &Device::Cpu)?;
                check_shape(&name, b.shape(), shape)?;
                w.consumed.borrow_mut().insert(stored);
                return Ok(Table::Blocks(b));
            }
        }
        Ok(Table::Candle(self.qtensor(leaf, shape)?))
    }

    /// The tensor `leaf` as f32, checked against `shape`.
    pub fn tensor(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        let name = self.name(leaf);
        let w = self.weights;
        if let Source::Safetensors { files, .. } = &w.source {
            let stored = w.stored_name(&name);
            if !w.has_stored(&stored) {
                return Err(w.missing(&name, stored));
            }
            let t = w.raw(files, &stored)?.to_dtype(DType::F32)?;
            check_shape(&name, t.dims(), shape)?;
            return Ok(t);
        }
        let t = self.qtensor(leaf, shape)?;
        Ok(t.dequantize(&w.device)?.to_dtype(DType::F32)?)
    }

    /// The `n` experts' weights of linear layer `leaf` (each `shape` = `(out, in)`): in
    /// safetensors one tensor per expert (`{prefix}.experts.{e}.{leaf}.weight`), in GGUF one
    /// stacked tensor (the name table maps `{prefix}.experts.*.{leaf}.weight`, e.g. to
    /// `blk.N.ffn_gate_exps.weight`) that is split into per-expert weights here.
    pub fn experts(&self, leaf: &str, n: usize, shape: &[usize]) -> Result<Vec<Matrix>> {
        let w = self.weights;
        if let Source::Safetensors { .. } = &w.source {
            return (0..n)
                .map(|e| self.pp("experts").pp(e).pp(leaf).matmul("weight", shape))
                .collect();
        }
        let name = self.name(&format!("experts.*.{leaf}.weight"));
        w.split(&name, n, shape)
    }

    /// The MXFP4 tensor a published checkpoint stores as `{leaf}_blocks` (`(…, rows, cols /
    /// 32, 16)` bytes) and `{leaf}_scales` (`(…, rows, cols / 32)` exponents), repacked into
    /// ggml's blocks and checked against `shape` (`(…, rows, cols)`). When only checking, its
    /// blocks are zeros that are never touched.
    pub fn mxfp4_pair(&self, leaf: &str, shape: &[usize]) -> Result<Blocks> {
        let w = self.weights;
        let (blocks, block_shape) = w.raw_u8(&self.name(&format!("{leaf}_blocks")))?;
        let (scales, scale_shape) = w.raw_u8(&self.name(&format!("{leaf}_scales")))?;
        let Some((&cols, outer)) = shape
            .split_last()
            .filter(|(c, _)| **c > 0 && *c % mxfp4::BLOCK == 0)
        else {
            return Err(Error::UnsupportedConfig(format!(
                "{}: MXFP4 rows of shape {shape:?} are not whole blocks of {} values",
                self.name(leaf),
                mxfp4::BLOCK
            )));
        };
        let expected = |last: &[usize]| -> Vec<usize> {
            let blocks = std::iter::once(cols / mxfp4::BLOCK);
            outer
                .iter()
                .copied()
                .chain(blocks)
                .chain(last.iter().copied())
                .collect()
        };
        let blocks_name = self.name(&format!("{leaf}_blocks"));
        check_shape(&blocks_name, &block_shape, &expected(&[mxfp4::BLOCK / 2]))?;
        let scales_name = self.name(&format!("{leaf}_scales"));
        check_shape(&scales_name, &scale_shape, &expected(&[]))?;
        if w.check_only {
            let bytes = BlockType::Mxfp4.bytes_for(shape).unwrap_or(0);
            let map = anonymous_zeros(bytes)?;
            return Blocks::mapped(BlockType::Mxfp4, &map, 0..bytes, shape.to_vec())
                .ok_or_else(|| Error::Internal(format!("zeros of MXFP4 {shape:?}")));
        }
        Blocks::owned(
            BlockType::Mxfp4,
            mxfp4::from_blocks_and_scales(&blocks, &scales)?,
            shape.to_vec(),
        )
    }

    /// A linear layer's weight from a dense tensor the family sliced out of a stored one
    /// (`(out, in)`): quantized (`--quant`) or kept in the chosen dtype as [`Vb::matmul`]
    /// keeps stored weights.
    pub fn dense_matrix(&self, t: Tensor) -> Result<Matrix> {
        self.weights.dense_matrix(t)
    }

    /// Blocks a family sliced out of a stored tensor as a layer's weight: as they are on the
    /// CPU, dequantized on an accelerator (see [`Weights`]' rule for our block types).
    pub fn blocks_weight(&self, m: Blocks) -> Result<Matrix> {
        self.weights.blocks_weight(m)
    }

    /// The tensor `leaf` as stored in safetensors (its float dtype), checked against `shape`;
    /// f32 from GGUF. For stacked tensors a family slices before making matrices of them.
    pub fn stored(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        let name = self.name(leaf);
        let w = self.weights;
        let Source::Safetensors { files, .. } = &w.source else {
            return self.tensor(leaf, shape);
        };
        let stored = w.stored_name(&name);
        if !w.has_stored(&stored) {
            return Err(w.missing(&name, stored));
        }
        let t = w.raw(files, &stored)?;
        check_shape(&name, t.dims(), shape)?;
        Ok(t)
    }

    /// The quantized type `leaf` is stored in, read from the header without loading it: a
    /// GGUF tensor of a type candle knows; `None` for safetensors, float or absent tensors.
    pub fn stored_quant(&self, leaf: &str) -> Option<GgmlDType> {
        let w = self.weights;
        let Source::Gguf { gguf, .. } = &w.source else {
            return None;
        };
        gguf.tensor_dtype(&w.stored_name(&self.name(leaf)))
            .filter(|t| !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16))
    }

    /// The `n` matrices (each `shape` = `(out, in)`) stacked in the one tensor `leaf` in both
    /// formats (`(n, out, in)`; transformers 5's `experts.gate_up_proj`, llama.cpp's
    /// `blk.N.ffn_gate_up_exps.weight`), split into per-matrix weights.
    pub fn stacked(&self, leaf: &str, n: usize, shape: &[usize]) -> Result<Vec<Matrix>> {
        self.weights.split_any(&self.name(leaf), n, shape)
    }

    /// Forgets the loaded copy of `leaf` (see [`Weights`]'s cache): for parts that were
    /// stacked into one layer and are not looked up again.
    pub fn forget(&self, leaf: &str) {
        self.weights.forget(&self.name(leaf));
    }

    /// The weight of a linear layer `leaf` (`(out, in)`), ready for a matmul.
    pub fn matmul(&self, leaf: &str, shape: &[usize]) -> Result<Matrix> {
        let name = self.name(leaf);
        let m = self.weights.matmul(&name)?;
        check_shape(&name, &m.dims(), shape)?;
        Ok(m)
    }
}

/// A quantized tensor of `dtype` and `shape` over zero pages that are never touched (an
/// anonymous map), for a load that only checks.
fn zeros_qtensor(shape: &[usize], dtype: GgmlDType) -> Result<QTensor> {
    let elems: usize = shape.iter().product();
    let bytes = (elems / dtype.block_size()) * dtype.type_size();
    let map = anonymous_zeros(bytes)?;
    super::mapped::qtensor(&map, 0..bytes, dtype, shape.to_vec().into(), &Device::Cpu)
        .map_err(|e| Error::Internal(format!("zeros of {shape:?} as {dtype:?}: {e}")))
}

/// `bytes` of zeros in an anonymous read-only map: pages that cost nothing until touched.
fn anonymous_zeros(bytes: usize) -> Result<Arc<memmap2::Mmap>> {
    memmap2::MmapOptions::new()
        .len(bytes.max(1))
        .map_anon()
        .and_then(|m| m.make_read_only())
        .map(Arc::new)
        .map_err(|e| Error::Internal(format!("mapping {bytes} bytes of zeros: {e}")))
}

fn check_shape(name: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::TensorShape {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_weights_are_read_with_their_scales_and_refused_without() {
        let dir = tempfile::tempdir().unwrap();
        let files = std::cell::Cell::new(0);
        // 3 × 5 in blocks of 2 × 4: scales 2 × 2; every byte 0x38 (1.0).
        let scales: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let fp8_weight = ("w.weight", "F8_E4M3", &[3u64, 5][..], &[0x38u8; 15][..]);
        let scale = ("w.weight_scale_inv", "F32", &[2u64, 2][..], &scales[..]);
        let scheme = Some(fp8::Scheme { block: [2, 4] });
        let load = |tensors: &[(&str, &str, &[u64], &[u8])], quant: Option<Quant>| {
            // A file each: earlier ones stay mapped.
            files.set(files.get() + 1);
            let path = dir.path().join(format!("{}.safetensors", files.get()));
            std::fs::write(&path, super::super::safetensors_header::build(&[], tensors)).unwrap();
            let precision = Precision {
                quant,
                ..Precision::default()
            };
            Weights::from_safetensors(&[path], precision, &Device::Cpu).unwrap()
        };

        let w = load(&[fp8_weight, scale], None).with_fp8(scheme);
        let m = w.pp("w").matmul("weight", &[3, 5]).unwrap();
        let Matrix::Fp8(m) = m else {
            panic!("not kept as FP8: {m:?}")
        };
        #[rustfmt::skip]
        assert_eq!(m.dequantize(), [1., 1., 1., 1., 2.,
                                    1., 1., 1., 1., 2.,
                                    3., 3., 3., 3., 4.]);
        assert!(w.unused().is_empty(), "{:?}", w.unused());
        // Read whole (a family folding a weight into another): dequantized.
        let t = w.pp("w").tensor("weight", &[3, 5]).unwrap();
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            m.dequantize()
        );
        // Quantized to another type at load: from the dequantized values.
        let q8 = Some(Quant::Ggml(GgmlDType::Q8_0));
        let w = load(&[fp8_weight, scale], q8).with_fp8(scheme);
        let m = w.pp("w").matmul("weight", &[3, 5]).unwrap();
        assert!(matches!(m, Matrix::Candle(_)), "{m:?}");

        let refused = |w: Weights, says: &str| {
            let e = w.pp("w").matmul("weight", &[3, 5]).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        let no_config = load(&[fp8_weight, scale], None);
        refused(
            no_config,
            "without quantization_config.quant_method \"fp8\"",
        );
        let no_scales = load(&[fp8_weight], None).with_fp8(scheme);
        refused(no_scales, "w.weight_scale_inv");
        let e5m2 = ("w.weight", "F8_E5M2", &[3u64, 5][..], &[0x3Cu8; 15][..]);
        let e5m2 = load(&[e5m2, scale], None).with_fp8(scheme);
        refused(e5m2, "F8_E4M3 with weight_scale_inv blocks");
        let wrong_scales = ("w.weight_scale_inv", "F32", &[1u64, 2][..], &[0u8; 8][..]);
        let wrong = load(&[fp8_weight, wrong_scales], None).with_fp8(scheme);
        refused(wrong, "expected shape [2, 2], found [1, 2]");
    }
}
