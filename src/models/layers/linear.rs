//! A linear layer over candle's `QMatMul`, which covers dense and quantized weights alike.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use super::{gemm_q8, gemv, host, kquants, q4_1, q5_0, q8_0};

use crate::formats::weights::Vb;
use crate::Result;

/// `y = x W^T (+ b)`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

/// From this many rows on, a quantized weight without a SIMD kernel in candle (Q4_1, Q5_0, ...)
/// is dequantized and multiplied by the f32 GEMM: candle's fallback dot products for such
/// types are scalar, and already at two rows dequantizing once is faster (measured on SmolLM2:
/// 2-token prefill 2.5x, 4 tokens 5x, 16 tokens 10x).
const DENSE_MIN_ROWS: usize = 2;

impl Linear {
    /// Loads `{vb}.weight` shaped `(out, in)` and `{vb}.bias` when `bias` is true.
    pub fn load(vb: &Vb, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.matmul("weight", &[out_dim, in_dim])?;
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

    /// A layer over a ready weight without bias (e.g. one expert split from a stacked tensor).
    pub fn from_matmul(weight: QMatMul) -> Self {
        Self { weight, bias: None }
    }

    /// Applies the layer to `(..., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self.batched(x)? {
            Some(y) => y,
            None => match self.vector_via_own_kernel(x)? {
                Some(y) => y,
                None => match &self.weight {
                    // Dense weights kept in f16/bf16 (`--dtype`): compute in their dtype.
                    QMatMul::Tensor(w) if w.dtype() != x.dtype() => self
                        .weight
                        .forward(&x.to_dtype(w.dtype())?)?
                        .to_dtype(x.dtype())?,
                    _ => self.weight.forward(x)?,
                },
            },
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// The batched (prefill) path on the CPU: our int8 tiles for Q4_1, Q5_0, Q8_0, Q4_K and
    /// Q6_K where the CPU has AVX-512 VNNI ([`gemm_q8`]), else the dequantized f32 GEMM for the
    /// types candle has no SIMD kernel for (candle's own kernels for the rest).
    fn batched(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let QMatMul::QTensor(w) = &self.weight else {
            return Ok(None);
        };
        let (n, k) = w.shape().dims2()?;
        let rows = x.elem_count() / k.max(1);
        let mut out_shape = x.dims().to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = n;
        }
        if rows >= DENSE_MIN_ROWS && x.device().is_cpu() && gemm_q8::available() {
            let data = w.data()?;
            let product = |input: &[f32]| gemm_q8::gemm(w.dtype(), &data, n, k, input);
            let out = match host::with_f32(x, product)? {
                Some(out) => out,
                None => product(&x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?),
            };
            if let Some(out) = out {
                let y = Tensor::from_vec(out, out_shape, x.device())?;
                return Ok(Some(y.to_dtype(x.dtype())?));
            }
        }
        let has_fast_kernel =
            matches!(w.dtype(), GgmlDType::Q4K | GgmlDType::Q6K | GgmlDType::Q8_0);
        if rows < DENSE_MIN_ROWS || !x.device().is_cpu() || has_fast_kernel {
            return Ok(None);
        }
        let dense = w.dequantize(x.device())?;
        let y = x.reshape((rows, k))?.matmul(&dense.t()?)?;
        Ok(Some(y.reshape(out_shape)?))
    }

    /// Single rows against CPU quantized weights go through our kernels (Q4_1, Q5_0, Q8_0) or
    /// candle's k-quant dot products on our pool ([`super::kquants`]).
    fn vector_via_own_kernel(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let QMatMul::QTensor(w) = &self.weight else {
            return Ok(None);
        };
        let (n, k) = w.shape().dims2()?;
        let dtype = w.dtype();
        let own = match dtype {
            GgmlDType::Q4_1 => Some(q4_1::gemv as fn(&[u8], usize, usize, &[f32], &mut [f32], _)),
            GgmlDType::Q5_0 => Some(q5_0::gemv as _),
            GgmlDType::Q8_0 => Some(q8_0::gemv as _),
            GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => {
                None
            }
            _ => return Ok(None),
        };
        if !x.device().is_cpu() || x.elem_count() != k {
            return Ok(None);
        }
        let input: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let mut out = vec![0f32; n];
        let data = w.data()?;
        match own {
            Some(gemv) => gemv(&data, n, k, &input, &mut out, gemv::kernel()),
            None => {
                if kquants::gemv(dtype, &data, n, k, &input, &mut out).is_none() {
                    return Ok(None);
                }
            }
        }
        let mut out_shape = x.dims().to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = n;
        }
        Ok(Some(
            Tensor::from_vec(out, out_shape, x.device())?.to_dtype(x.dtype())?,
        ))
    }
}
