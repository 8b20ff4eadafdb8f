//! The output head of a decoder: the last position's hidden state, normed, through the output
//! layer, as f32 logits over the vocabulary.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::norm::RmsNorm;
use crate::Result;

/// Logits `(vocab)` of the last position of `x` (`(1, len, hidden)`).
pub fn last_position_logits(norm: &RmsNorm, lm_head: &Linear, x: &Tensor) -> Result<Tensor> {
    let len = x.dim(1)?;
    let last = norm.forward(&x.narrow(1, len - 1, 1)?)?;
    Ok(lm_head
        .forward(&last)?
        .flatten_all()?
        .to_dtype(DType::F32)?)
}
