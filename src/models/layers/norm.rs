//! RMSNorm, in the plain form and Gemma's `(1 + w)` form.

use candle_core::Tensor;

use crate::formats::weights::Vb;
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

    /// Normalises `(..., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
