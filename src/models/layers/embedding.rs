//! Token embedding gathered row by row from the (possibly quantized) table, so a large tied
//! table is never dequantized as a whole.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::Tensor;

use crate::Result;

/// The token embedding table `(vocab, hidden)`.
#[derive(Clone, Debug)]
pub struct Embedding {
    table: Arc<QTensor>,
    scale: Option<f64>,
}

impl Embedding {
    /// An embedding over `table`; `scale` multiplies the gathered rows (Gemma: `sqrt(hidden)`).
    pub fn new(table: Arc<QTensor>, scale: Option<f64>) -> Self {
        Self { table, scale }
    }

    /// The shared table (for tied output layers).
    pub fn table(&self) -> &Arc<QTensor> {
        &self.table
    }

    /// The factor applied to gathered rows, if any.
    pub fn scale(&self) -> Option<f64> {
        self.scale
    }

    /// Rows for `ids` (`(1, L)` u32) as `(1, L, hidden)` f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.table.embedding(ids)?;
        Ok(match self.scale {
            Some(s) => (x * s)?,
            None => x,
        })
    }
}
