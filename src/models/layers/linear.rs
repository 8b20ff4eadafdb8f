//! A linear layer over candle's `QMatMul`, which covers dense and quantized weights alike.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};

use crate::formats::weights::Vb;
use crate::Result;

/// `y = x W^T (+ b)`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{vb}.weight` shaped `(out, in)` and `{vb}.bias` when `bias` is true.
    pub fn load(vb: &Vb, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = QMatMul::from_arc(vb.qtensor("weight", &[out_dim, in_dim])?)?;
        let bias = if bias {
            Some(vb.tensor("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// A layer over an already loaded weight (e.g. a tied embedding table).
    pub fn from_qtensor(weight: Arc<QTensor>) -> Result<Self> {
        Ok(Self {
            weight: QMatMul::from_arc(weight)?,
            bias: None,
        })
    }

    /// Applies the layer to `(..., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}
