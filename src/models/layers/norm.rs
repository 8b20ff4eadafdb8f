//! RMSNorm, in the plain form, Gemma's `(1 + w)` form, and without a weight (Gemma 4's value
//! and router norms).

use candle_core::Tensor;

use crate::formats::weights::Vb;
use crate::kernels::cpu::host;
use crate::Result;

/// Root-mean-square normalisation over the last dimension.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// Loads `{vb}.weight` of size `dim`; `unit_offset` applies Gemma's `1 + w`.
    pub fn load(vb: &Vb, dim: usize, eps: f64, unit_offset: bool) -> Result<Self> {
        let w = vb.tensor("weight", &[dim])?;
        let weight = if unit_offset { (w + 1.0)? } else { w };
        Ok(Self {
            weight,
            eps: eps as f32,
        })
    }

    /// A norm without a learned scale (a weight of ones) over `dim` on `device`.
    pub fn unscaled(dim: usize, eps: f64, device: &candle_core::Device) -> Result<Self> {
        Ok(Self {
            weight: Tensor::ones(dim, candle_core::DType::F32, device)?,
            eps: eps as f32,
        })
    }

    /// The weight (with Gemma's `1 +` applied).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The epsilon added to the mean square.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalises `(..., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if let Some(y) = self.forward_cpu(&x)? {
            return Ok(y);
        }
        Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?)
    }

    /// The CPU form, rounded as ggml's `rms_norm` + `mul` round: squares summed in f64, the
    /// mean cast to f32, `scale = 1 / sqrtf(mean + eps)`, then `(x · scale) · w`. candle's
    /// form (an f32 sum, `x / rms`) differs in the last bit, and a last-bit change in a
    /// quantized matmul's input can flip the rounding of an 8-bit activation.
    fn forward_cpu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let dim = self.weight.dim(0)?;
        if dim == 0 || x.dims().last() != Some(&dim) {
            return Ok(None);
        }
        let eps = self.eps;
        let out = host::with_f32(&self.weight, |w| {
            host::with_f32(x, |x| {
                let rows = x.len() / dim;
                // SAFETY: every row of `y` is written by exactly one unit.
                unsafe {
                    host::filled(x.len(), |y| {
                        let y = y as usize;
                        let per = 16;
                        crate::kernels::cpu::pool::Pool::global().run(
                            rows.div_ceil(per),
                            |units| {
                                let r0 = units.start * per;
                                let r1 = (units.end * per).min(rows);
                                let dst = std::slice::from_raw_parts_mut(
                                    (y as *mut f32).add(r0 * dim),
                                    (r1 - r0) * dim,
                                );
                                norm_rows(&x[r0 * dim..r1 * dim], w, eps, dst);
                            },
                        );
                    })
                }
            })
        })?;
        match out {
            Some(Ok(Some(y))) => Ok(Some(Tensor::from_vec(y, x.shape(), x.device())?)),
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }
}

/// ggml's `rms_norm` + `mul` over whole rows of `x` (each `w.len()` long) into `y`. Each
/// row's squares are summed in f64 one after the other, as ggml sums them; four rows go
/// side by side, so four such chains are in flight at once.
fn norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let dim = w.len();
    let mut xs = x.chunks_exact(4 * dim);
    let mut ys = y.chunks_exact_mut(4 * dim);
    for (x4, y4) in (&mut xs).zip(&mut ys) {
        let mut sums = [0f64; 4];
        for i in 0..dim {
            for (r, s) in sums.iter_mut().enumerate() {
                let v = x4[r * dim + i];
                *s += (v * v) as f64;
            }
        }
        for (r, s) in sums.iter().enumerate() {
            scale_row(
                &x4[r * dim..(r + 1) * dim],
                w,
                *s,
                eps,
                &mut y4[r * dim..(r + 1) * dim],
            );
        }
    }
    for (row, out) in xs
        .remainder()
        .chunks_exact(dim)
        .zip(ys.into_remainder().chunks_exact_mut(dim))
    {
        let sum: f64 = row.iter().fold(0.0, |s, v| s + (v * v) as f64);
        scale_row(row, w, sum, eps, out);
    }
}

/// `(x · scale) · w` with `scale = 1 / sqrtf(mean + eps)`, the mean cast to f32.
fn scale_row(x: &[f32], w: &[f32], sum: f64, eps: f32, y: &mut [f32]) {
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, v), w) in y.iter_mut().zip(x).zip(w) {
        *o = v * scale * w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rows_side_by_side_equal_rows_one_at_a_time_bit_for_bit() {
        let (dim, rows) = (96, 7);
        let x = crate::kernels::cpu::gemv::test_values(dim * rows, 31);
        let w = crate::kernels::cpu::gemv::test_values(dim, 32);
        let mut together = vec![0f32; dim * rows];
        norm_rows(&x, &w, 1e-6, &mut together);
        for r in 0..rows {
            let mut alone = vec![0f32; dim];
            norm_rows(&x[r * dim..(r + 1) * dim], &w, 1e-6, &mut alone);
            assert_eq!(alone, together[r * dim..(r + 1) * dim], "row {r}");
        }
    }

    #[test]
    fn rms_norm_matches_the_formula() {
        let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu).unwrap();
        let n = RmsNorm {
            weight: Tensor::new(&[1f32, 1.0, 2.0, 0.5], &Device::Cpu).unwrap(),
            eps: 1e-6,
        };
        let y: Vec<f32> = n
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let rms = ((1.0 + 4.0 + 9.0 + 16.0) / 4.0f32 + 1e-6).sqrt();
        let want = [1.0 / rms, 2.0 / rms, 6.0 / rms, 2.0 / rms];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
