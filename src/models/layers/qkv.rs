//! Query/key/value projections: three matrices (`q_proj`, `k_proj`, `v_proj`), or one fused
//! matrix (Phi-3's `qkv_proj`, rows q|k|v; or the three stacked at load when they share a
//! weight type) applied with a single matmul and split afterwards.

use candle_core::{Tensor, D};

use super::linear::Linear;
use crate::formats::weights::Vb;
use crate::Result;

/// Widths of the projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Model width (input).
    pub hidden: usize,
    /// Query heads × head width.
    pub q: usize,
    /// Key/value heads × head width (each of K and V).
    pub kv: usize,
}

/// The projections of one attention layer.
#[derive(Clone, Debug)]
pub enum Qkv {
    /// Three matrices.
    Separate {
        /// Query projection.
        q: Linear,
        /// Key projection.
        k: Linear,
        /// Value projection.
        v: Linear,
    },
    /// One `(q + 2 kv, hidden)` matrix.
    Fused {
        /// The stacked projection.
        qkv: Linear,
        /// Its widths, for the split.
        dims: Dims,
    },
}

impl Qkv {
    /// Loads `q_proj`, `k_proj`, `v_proj` (or, when `fused`, `qkv_proj`) under `vb`, with
    /// biases when `bias`.
    pub fn load(vb: &Vb, d: Dims, bias: bool, fused: bool) -> Result<Self> {
        if fused {
            return Ok(Self::Fused {
                qkv: Linear::load(&vb.pp("qkv_proj"), d.hidden, d.q + 2 * d.kv, bias)?,
                dims: d,
            });
        }
        let q = Linear::load(&vb.pp("q_proj"), d.hidden, d.q, bias)?;
        let k = Linear::load(&vb.pp("k_proj"), d.hidden, d.kv, bias)?;
        let v = Linear::load(&vb.pp("v_proj"), d.hidden, d.kv, bias)?;
        // Stored apart, computed together on the CPU when the three share a type: one product
        // per layer and token instead of three (the same numbers). On a GPU the split after
        // it costs as many kernels as it saves.
        let stacked = match vb.device().is_cpu() && !vb.check_only() {
            true => Linear::stack(&[&q, &k, &v])?,
            false => None,
        };
        Ok(match stacked {
            Some(qkv) => {
                for part in ["q_proj", "k_proj", "v_proj"] {
                    vb.pp(part).forget("weight");
                }
                Self::Fused { qkv, dims: d }
            }
            None => Self::Separate { q, k, v },
        })
    }

    /// Projects `(..., hidden)` to `(q, k, v)`, each `(..., width)`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Ok(match self {
            Self::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            Self::Fused { qkv, dims } => {
                let y = qkv.forward(x)?;
                (
                    y.narrow(D::Minus1, 0, dims.q)?,
                    y.narrow(D::Minus1, dims.q, dims.kv)?,
                    y.narrow(D::Minus1, dims.q + dims.kv, dims.kv)?,
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Device;

    fn linear(t: &Tensor) -> Linear {
        Linear::from_matmul(QMatMul::Tensor(t.clone()))
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn fused_projection_splits_into_q_k_v_in_row_order() {
        let dev = Device::Cpu;
        let dims = Dims {
            hidden: 8,
            q: 12,
            kv: 4,
        };
        let q = Tensor::randn(0f32, 1.0, (dims.q, dims.hidden), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (dims.kv, dims.hidden), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (dims.kv, dims.hidden), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 5, dims.hidden), &dev).unwrap();
        let separate = Qkv::Separate {
            q: linear(&q),
            k: linear(&k),
            v: linear(&v),
        };
        let fused = Qkv::Fused {
            qkv: linear(&Tensor::cat(&[&q, &k, &v], 0).unwrap()),
            dims,
        };
        let (a, b) = (separate.forward(&x).unwrap(), fused.forward(&x).unwrap());
        for (s, f, width) in [(&a.0, &b.0, 12), (&a.1, &b.1, 4), (&a.2, &b.2, 4)] {
            assert_eq!(f.dims(), &[1, 5, width]);
            for (p, r) in values(s).iter().zip(values(f)) {
                assert!((p - r).abs() < 1e-5, "{p} vs {r}");
            }
        }
        // K and V differ, so a swapped split would be caught.
        assert_ne!(values(&b.1), values(&b.2));
    }
}
