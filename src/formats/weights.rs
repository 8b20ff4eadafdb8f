//! `Weights`: a VarBuilder-like façade over a checkpoint. Families address tensors by their
//! canonical (Hugging Face) names through a prefix tree; the façade maps names to the file's
//! convention, loads each tensor once, and records what was consumed so leftovers are caught.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::gguf::Gguf;
use super::names::{self, NamePair};
use crate::{Error, Result};

/// The on-disk convention of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// GGUF names and quantized blocks.
    Gguf,
}

/// All tensors of one checkpoint, on one device.
pub struct Weights<'a> {
    gguf: &'a Gguf,
    extra_names: &'static [NamePair],
    device: Device,
    loaded: RefCell<HashMap<String, Arc<QTensor>>>,
    consumed: RefCell<HashSet<String>>,
}

impl<'a> Weights<'a> {
    /// Weights read from a GGUF file; `extra_names` are the family's own name rows.
    pub fn from_gguf(gguf: &'a Gguf, extra_names: &'static [NamePair], device: &Device) -> Self {
        Self {
            gguf,
            extra_names,
            device: device.clone(),
            loaded: RefCell::new(HashMap::new()),
            consumed: RefCell::new(HashSet::new()),
        }
    }

    /// The convention of the underlying file.
    pub fn format(&self) -> WeightFormat {
        WeightFormat::Gguf
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
        names::to_gguf(name, self.extra_names).unwrap_or_else(|| name.to_string())
    }

    fn contains(&self, name: &str) -> bool {
        self.gguf.has_tensor(&self.stored_name(name))
    }

    fn qtensor(&self, name: &str) -> Result<Arc<QTensor>> {
        let stored = self.stored_name(name);
        if let Some(t) = self.loaded.borrow().get(&stored) {
            return Ok(t.clone());
        }
        if !self.gguf.has_tensor(&stored) {
            return Err(Error::MissingTensor {
                name: name.to_string(),
                stored,
            });
        }
        let t = Arc::new(self.gguf.tensor(&stored, &self.device)?);
        self.loaded.borrow_mut().insert(stored.clone(), t.clone());
        self.consumed.borrow_mut().insert(stored);
        Ok(t)
    }

    /// Marks a stored tensor as deliberately unused (e.g. precomputed tables we recompute).
    pub fn ignore(&self, name: &str) {
        let stored = self.stored_name(name);
        self.consumed.borrow_mut().insert(stored);
    }

    /// Names in the file that no layer consumed, in file order.
    pub fn unused(&self) -> Vec<String> {
        let consumed = self.consumed.borrow();
        self.gguf
            .tensor_names()
            .filter(|n| !consumed.contains(*n))
            .map(str::to_string)
            .collect()
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
        if t.shape().dims() != shape {
            return Err(Error::TensorShape {
                name,
                expected: shape.to_vec(),
                found: t.shape().dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// The tensor `leaf` dequantized to f32, checked against `shape`.
    pub fn tensor(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.qtensor(leaf, shape)?;
        Ok(t.dequantize(&self.weights.device)?.to_dtype(DType::F32)?)
    }
}
