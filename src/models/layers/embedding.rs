//! Token embedding gathered row by row from the (possibly quantized) table, so a large tied
//! table is never dequantized as a whole.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::formats::blocks::Blocks;
use crate::{Error, Result};

/// An embedding table `(vocab, hidden)` as loaded: candle's tensor (any type candle
/// computes), or blocks of our own types (IQ4_NL, IQ4_XS, MXFP4), read on the CPU.
#[derive(Clone, Debug)]
pub enum Table {
    /// A tensor of a type candle reads.
    Candle(Arc<QTensor>),
    /// Blocks of our own types.
    Blocks(Blocks),
}

impl From<Arc<QTensor>> for Table {
    fn from(t: Arc<QTensor>) -> Self {
        Self::Candle(t)
    }
}

/// The token embedding table `(vocab, hidden)`.
#[derive(Clone, Debug)]
pub struct Embedding {
    table: Table,
    scale: Option<f64>,
}

impl Embedding {
    /// An embedding over `table`; `scale` multiplies the gathered rows (Gemma: `sqrt(hidden)`).
    pub fn new(table: impl Into<Table>, scale: Option<f64>) -> Self {
        Self {
            table: table.into(),
            scale,
        }
    }

    /// The shared table (for tied output layers).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The factor applied to gathered rows, if any.
    pub fn scale(&self) -> Option<f64> {
        self.scale
    }

    /// Rows for `ids` (`(1, L)` u32) as `(1, L, hidden)` f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let x = match &self.table {
            Table::Candle(t) => t.embedding(ids)?,
            Table::Blocks(b) => gather(b, ids)?,
        };
        Ok(match self.scale {
            Some(s) => (x * s)?,
            None => x,
        })
    }
}

/// The rows of `table` for `ids`, dequantized on the CPU one by one, on `ids`' device.
fn gather(table: &Blocks, ids: &Tensor) -> Result<Tensor> {
    let (rows, hidden) = table.dims2();
    let list: Vec<u32> = ids
        .flatten_all()?
        .to_dtype(candle_core::DType::U32)?
        .to_vec1()?;
    let mut out = vec![0f32; list.len() * hidden];
    for (&id, o) in list.iter().zip(out.chunks_exact_mut(hidden.max(1))) {
        let row = id as usize;
        if row >= rows {
            return Err(Error::InvalidArgument(format!(
                "token id {row} is out of range for an embedding table of {rows} rows"
            )));
        }
        table.dequantize_rows(row..row + 1, o);
    }
    let mut shape = ids.dims().to_vec();
    shape.push(hidden);
    let x = Tensor::from_vec(out, shape, &Device::Cpu)?;
    Ok(x.to_device(ids.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::BlockType;

    #[test]
    fn block_tables_gather_their_rows_and_refuse_ids_past_the_end() {
        let values: Vec<f32> = (0..4 * 256).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
        let t = Blocks::quantize(BlockType::Iq4Xs, &values, vec![4, 256]).unwrap();
        let all = t.dequantize();
        let e = Embedding::new(Table::Blocks(t), Some(2.0));
        let ids = Tensor::new(&[[3u32, 1]], &Device::Cpu).unwrap();
        let x = e.forward(&ids).unwrap();
        assert_eq!(x.dims(), &[1, 2, 256]);
        let got: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = all[3 * 256..4 * 256]
            .iter()
            .chain(&all[256..512])
            .map(|v| v * 2.0)
            .collect();
        assert_eq!(got, want);
        let bad = Tensor::new(&[[4u32]], &Device::Cpu).unwrap();
        let err = e.forward(&bad).unwrap_err().to_string();
        assert!(err.contains("token id 4 is out of range"), "{err}");
    }
}
