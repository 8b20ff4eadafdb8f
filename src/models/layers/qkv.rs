//! Query/key/value projections: three matrices (`q_proj`, `k_proj`, `v_proj`), or one fused
//! matrix (Phi-3's `qkv_proj`, rows q|k|v; or the three stacked at load when they share a
//! weight type) applied with a single matmul and split afterwards; or fewer: keys that serve
//! as values too (Gemma 4's `attention_k_eq_v`), or the query alone where a layer reads
//! another layer's keys and values (KV sharing).

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
    /// Query and key matrices; the values are the keys as projected.
    KeysAsValues {
        /// Query projection.
        q: Linear,
        /// Key (and value) projection.
        k: Linear,
    },
    /// A query matrix only: keys and values come from another layer.
    QueryOnly {
        /// Query projection.
        q: Linear,
    },
}

/// Where a layer's keys and values come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvSource {
    /// Its own `k_proj` and `v_proj`.
    #[default]
    Own,
    /// Its own `k_proj`, whose output serves as the values too (no `v_proj`).
    KeysAsValues,
    /// Another layer's (no `k_proj`, no `v_proj`).
    Shared,
}

impl Qkv {
    /// Loads `q_proj`, `k_proj`, `v_proj` (or, when `fused`, `qkv_proj`) under `vb`, with
    /// biases when `bias`.
    pub fn load(vb: &Vb, d: Dims, bias: bool, fused: bool) -> Result<Self> {
        Self::load_with(vb, d, bias, fused, KvSource::Own)
    }

    /// [`Qkv::load`] for a layer whose keys and values come from `kv`.
    pub fn load_with(vb: &Vb, d: Dims, bias: bool, fused: bool, kv: KvSource) -> Result<Self> {
        match kv {
            KvSource::Own => {}
            KvSource::KeysAsValues => {
                return Ok(Self::KeysAsValues {
                    q: Linear::load(&vb.pp("q_proj"), d.hidden, d.q, bias)?,
                    k: Linear::load(&vb.pp("k_proj"), d.hidden, d.kv, bias)?,
                })
            }
            KvSource::Shared => {
                return Ok(Self::QueryOnly {
                    q: Linear::load(&vb.pp("q_proj"), d.hidden, d.q, bias)?,
                })
            }
        }
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

    /// Projects `(..., hidden)` to `q` and, unless the layer reads another layer's, `(k, v)`,
    /// each `(..., width)`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        Ok(match self {
            Self::Separate { q, k, v } => (q.forward(x)?, Some((k.forward(x)?, v.forward(x)?))),
            Self::Fused { qkv, dims } => {
                let y = qkv.forward(x)?;
                (
                    y.narrow(D::Minus1, 0, dims.q)?,
                    Some((
                        y.narrow(D::Minus1, dims.q, dims.kv)?,
                        y.narrow(D::Minus1, dims.q + dims.kv, dims.kv)?,
                    )),
                )
            }
            Self::KeysAsValues { q, k } => {
                let k = k.forward(x)?;
                (q.forward(x)?, Some((k.clone(), k)))
            }
            Self::QueryOnly { q } => (q.forward(x)?, None),
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
        let split = |p: &Qkv| {
            let (q, kv) = p.forward(&x).unwrap();
            let (k, v) = kv.unwrap();
            (q, k, v)
        };
        let (a, b) = (split(&separate), split(&fused));
        for (s, f, width) in [(&a.0, &b.0, 12), (&a.1, &b.1, 4), (&a.2, &b.2, 4)] {
            assert_eq!(f.dims(), &[1, 5, width]);
            for (p, r) in values(s).iter().zip(values(f)) {
                assert!((p - r).abs() < 1e-5, "{p} vs {r}");
            }
        }
        // K and V differ, so a swapped split would be caught.
        assert_ne!(values(&b.1), values(&b.2));
    }

    #[test]
    fn keys_serve_as_values_and_a_sharing_layer_projects_queries_only() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (12, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 5, 8), &dev).unwrap();
        let kev = Qkv::KeysAsValues {
            q: linear(&q),
            k: linear(&k),
        };
        let (_, kv) = kev.forward(&x).unwrap();
        let (keys, vals) = kv.unwrap();
        assert_eq!(keys.dims(), &[1, 5, 4]);
        assert_eq!(values(&keys), values(&vals));
        let only = Qkv::QueryOnly { q: linear(&q) };
        let (queries, kv) = only.forward(&x).unwrap();
        assert!(kv.is_none());
        assert_eq!(queries.dims(), &[1, 5, 12]);
    }
}
