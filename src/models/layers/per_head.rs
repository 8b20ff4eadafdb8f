//! One small matrix per attention head, each applied to its own head's rows: MLA's absorbed
//! `W_UK` and `W_UV` ([`super::mla`]).
//!
//! Quantized weights (a GGUF's `attn_k_b` / `attn_v_b`) stay as stored and go through the
//! quantized kernels, as llama.cpp runs them: a decode step runs every head's product in one
//! pool submission, each product whole on the thread that claims it (sixteen products of a
//! few dozen kilobytes do not pay for a submission each); prompts run the heads in turn, each
//! product with the batched kernels. Dense weights (safetensors, float GGUFs, accelerators)
//! are one stacked tensor and one batched matmul.

use std::sync::Mutex;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Tensor};

use super::linear::{rows_on_threads, Linear, RowsJob};
use crate::formats::weights::Matrix;
use crate::kernels::cpu::host;
use crate::{Error, Result};

/// The heads' matrices.
#[derive(Clone, Debug)]
enum Weights {
    /// `(H, in, out)`: `y_h = x_h · W_h`.
    Dense(Tensor),
    /// One `(out, in)` quantized layer per head, read in place.
    Quantized(Vec<Linear>),
}

/// `y_h = x_h W_h^T` for every head `h`, each with its own `(out, in)` matrix.
#[derive(Clone, Debug)]
pub struct PerHead {
    weights: Weights,
    /// `(out, in)` of every head's matrix.
    dims: (usize, usize),
}

impl PerHead {
    /// Heads over dense matrices stacked as `(H, in, out)` (each head's matrix transposed).
    pub fn dense(w: Tensor) -> Result<Self> {
        let (_, k, n) = w.dims3()?;
        Ok(Self {
            weights: Weights::Dense(w),
            dims: (n, k),
        })
    }

    /// True when heads of quantized type `t` run through [`PerHead::quantized`].
    pub fn reads(t: candle_core::quantized::GgmlDType) -> bool {
        Linear::has_rows_kernel(t)
    }

    /// Heads over one `(out, in)` matrix each, when every one is a quantized CPU weight that
    /// our single-row kernels read ([`Linear::rows_into`]); `None` otherwise (the caller then
    /// makes [`PerHead::dense`] heads).
    pub fn quantized(heads: Vec<Matrix>) -> Result<Option<Self>> {
        let Some(first) = heads.first() else {
            return Ok(None);
        };
        let dims = match first.dims().as_slice() {
            &[n, k] => (n, k),
            _ => return Ok(None),
        };
        let usable = |m: &Matrix| match m {
            Matrix::Candle(QMatMul::QTensor(q)) => {
                q.device().is_cpu() && Linear::has_rows_kernel(q.dtype())
            }
            _ => false,
        };
        if !heads
            .iter()
            .all(|m| usable(m) && m.dims() == [dims.0, dims.1])
        {
            return Ok(None);
        }
        let heads = heads.into_iter().map(Linear::from_matrix).collect();
        Ok(Some(Self {
            weights: Weights::Quantized(heads),
            dims,
        }))
    }

    /// `x` `(H, L, in)` → `(H, L, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, _, k) = x.dims3()?;
        let (n, want_k) = self.dims;
        if k != want_k {
            return Err(Error::Internal(format!(
                "per-head product of width {want_k} given rows of {k}"
            )));
        }
        let heads = match &self.weights {
            Weights::Dense(w) => return Ok(x.matmul(&w.to_dtype(x.dtype())?)?),
            Weights::Quantized(heads) => heads,
        };
        if heads.len() != h {
            return Err(Error::Internal(format!(
                "{} heads' matrices given {h} heads",
                heads.len()
            )));
        }
        if let Some(y) = self.together(heads, x, n)? {
            return Ok(y);
        }
        let ys = heads
            .iter()
            .enumerate()
            .map(|(i, w)| w.forward(&x.get(i)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&ys, 0)?)
    }

    /// Every head's product in one pool submission, each whole on one thread: for rows few
    /// enough for the single-row kernels (a decode step); `None` for more.
    fn together(&self, heads: &[Linear], x: &Tensor, n: usize) -> Result<Option<Tensor>> {
        let (h, l, k) = x.dims3()?;
        if !x.device().is_cpu() || !Linear::rows_fit(l) {
            return Ok(None);
        }
        let x32 = x.to_dtype(DType::F32)?.contiguous()?;
        let mut out = vec![0f32; h * l * n];
        let run = |input: &[f32], out: &mut [f32]| -> Result<bool> {
            let jobs: Vec<RowsJob> = heads
                .iter()
                .zip(input.chunks(l * k))
                .zip(out.chunks_mut(l * n))
                .map(|((w, x), o)| (w, x, Mutex::new(o)))
                .collect();
            rows_on_threads(&jobs)
        };
        let done = match host::with_f32(&x32, |input| run(input, &mut out))? {
            Some(r) => r?,
            None => run(&x32.flatten_all()?.to_vec1()?, &mut out)?,
        };
        if !done {
            return Ok(None);
        }
        Ok(Some(
            Tensor::from_vec(out, (h, l, n), x.device())?.to_dtype(x.dtype())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::gemv::test_values;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;
    use std::sync::Arc;

    /// Quantized heads give, for one row and for many, what each head's own layer gives
    /// (the numbers of `Linear::forward`, bit for bit), and the dense heads of the
    /// dequantized weights within the activations' 8-bit rounding.
    #[test]
    fn quantized_heads_equal_each_heads_own_layer() {
        let dev = Device::Cpu;
        let (h, n) = (3, 24);
        for (dtype, k) in [
            (GgmlDType::Q5_0, 64),
            (GgmlDType::Q8_0, 64),
            (GgmlDType::Q4K, 256),
        ] {
            let ws: Vec<Tensor> = (0..h)
                .map(|i| Tensor::from_vec(test_values(n * k, i as u32 + 1), (n, k), &dev).unwrap())
                .collect();
            let qs: Vec<Arc<QTensor>> = ws
                .iter()
                .map(|w| Arc::new(QTensor::quantize(w, dtype).unwrap()))
                .collect();
            let matrices: Vec<Matrix> = qs
                .iter()
                .map(|q| Matrix::Candle(QMatMul::from_arc(q.clone()).unwrap()))
                .collect();
            let own: Vec<Linear> = matrices.iter().cloned().map(Linear::from_matrix).collect();
            let heads = PerHead::quantized(matrices)
                .unwrap()
                .expect("quantized CPU heads");
            let ws: Vec<Tensor> = qs.iter().map(|q| q.dequantize(&dev).unwrap()).collect();
            let dense_w = Tensor::stack(&ws, 0).unwrap().transpose(1, 2).unwrap();
            let dense = PerHead::dense(dense_w.contiguous().unwrap()).unwrap();
            for l in [1, 3, 20] {
                let x = Tensor::from_vec(test_values(h * l * k, 7), (h, l, k), &dev).unwrap();
                let got = heads.forward(&x).unwrap();
                assert_eq!(got.dims(), &[h, l, n]);
                let want: Vec<Tensor> = (0..h)
                    .map(|i| own[i].forward(&x.get(i).unwrap()).unwrap())
                    .collect();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = Tensor::stack(&want, 0).unwrap();
                assert_eq!(flat(&got), flat(&want), "{dtype:?}, {l} rows");
                let exact = flat(&dense.forward(&x).unwrap());
                let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in flat(&got).iter().zip(&exact) {
                    assert!((a - b).abs() < 0.02 * scale, "{dtype:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn heads_without_a_single_row_kernel_are_declined() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(test_values(4 * 32, 1), (4, 32), &dev).unwrap();
        let dense = vec![Matrix::Candle(QMatMul::Tensor(w.clone()))];
        assert!(PerHead::quantized(dense).unwrap().is_none());
        let f16 = Arc::new(QTensor::quantize(&w, GgmlDType::F16).unwrap());
        let f16 = vec![Matrix::Candle(QMatMul::QTensor(f16))];
        assert!(PerHead::quantized(f16).unwrap().is_none());
        assert!(PerHead::quantized(Vec::new()).unwrap().is_none());
    }
}
