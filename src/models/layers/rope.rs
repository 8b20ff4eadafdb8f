//! Rotary position embeddings: half-split (NeoX / Hugging Face) and interleaved (GPT-J /
//! llama.cpp's GGUF llama) layouts, with per-frequency factors (llama3, YaRN, LongRoPE),
//! linear position scaling, a magnitude on cos/sin (YaRN's and LongRoPE's attention factor),
//! and frequencies that change once a pass reaches past the trained context (dynamic NTK,
//! LongRoPE's long factors). Tables are computed per forward pass for just the positions in
//! use, never for the whole context.

use candle_core::{Device, Tensor};

use crate::kernels::cpu::{host, rope};
use crate::Result;

/// Which dimensions are rotated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Pairs `(i, i + d/2)`: Hugging Face and GGUF NeoX-style models.
    HalfSplit,
    /// Pairs `(2i, 2i + 1)`: GGUF llama (whose converter permuted Q/K for it).
    Interleaved,
}

/// The frequencies of one RoPE configuration.
#[derive(Clone, Debug)]
pub struct Rope {
    /// Ratio of consecutive frequencies, `base^(-2 / head_dim)`.
    theta_scale: f32,
    /// Per-frequency divisors (llama3 scaling), if any.
    factors: Option<Vec<f32>>,
    half: usize,
    style: Style,
    position_scale: f32,
    /// cos and sin are multiplied by this.
    magnitude: f32,
    /// What changes when a pass ends past the trained context.
    beyond: Option<Beyond>,
}

/// Frequencies for passes that end past `original` positions, as transformers computes them
/// (each pass takes the frequencies for its own end; keys already cached keep theirs).
#[derive(Clone, Debug)]
enum Beyond {
    /// Dynamic NTK: the base grows with the sequence length.
    DynamicNtk {
        factor: f64,
        original: usize,
        base: f64,
    },
    /// LongRoPE: these per-frequency divisors replace the short ones.
    LongFactors { original: usize, factors: Vec<f32> },
}

/// cos/sin for a run of positions, `(len, head_dim / 2)` each.
pub struct Tables {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// RoPE over `head_dim` with frequency base `base`.
    pub fn new(head_dim: usize, base: f64, style: Style) -> Self {
        Self {
            theta_scale: (base as f32).powf(-2.0 / head_dim as f32),
            factors: None,
            half: head_dim / 2,
            style,
            position_scale: 1.0,
            magnitude: 1.0,
            beyond: None,
        }
    }

    /// Multiplies cos and sin by `m` (YaRN's and LongRoPE's attention factor).
    pub fn with_magnitude(mut self, m: f32) -> Self {
        self.magnitude = m;
        self
    }

    /// Dynamic NTK scaling: a pass ending at `n > original` positions uses the base
    /// `base · (factor·n/original − (factor − 1))^(d/(d−2))`.
    pub fn with_dynamic_ntk(mut self, factor: f64, original: usize, base: f64) -> Self {
        self.beyond = Some(Beyond::DynamicNtk {
            factor,
            original,
            base,
        });
        self
    }

    /// LongRoPE: a pass ending past `original` positions divides by `long` instead of the
    /// factors set with [`Rope::with_freq_factors`].
    pub fn with_long_factors(mut self, original: usize, long: &[f32]) -> Result<Self> {
        if long.len() != self.half {
            return Err(crate::Error::UnsupportedConfig(format!(
                "LongRoPE has {} long factors, expected {} (head_dim / 2)",
                long.len(),
                self.half
            )));
        }
        self.beyond = Some(Beyond::LongFactors {
            original,
            factors: long.to_vec(),
        });
        Ok(self)
    }

    /// Why the fused GPU decoder cannot run this RoPE, if it cannot: its kernels know the
    /// frequency ratio, per-frequency divisors and the position scale only.
    pub fn gpu_unsupported(&self) -> Option<String> {
        if self.magnitude != 1.0 {
            return Some(format!("RoPE scales cos/sin by {}", self.magnitude));
        }
        self.beyond.as_ref().map(|_| {
            "RoPE frequencies change past the trained context (dynamic NTK or LongRoPE)".into()
        })
    }

    /// Divides each frequency by its factor (llama3 scaling stored as `rope_freqs`).
    pub fn with_freq_factors(mut self, factors: &[f32]) -> Result<Self> {
        if factors.len() != self.half {
            return Err(crate::Error::UnsupportedConfig(format!(
                "rope_freqs has {} factors, expected {}",
                factors.len(),
                self.half
            )));
        }
        self.factors = Some(match self.factors.take() {
            Some(f) => f.iter().zip(factors).map(|(a, b)| a * b).collect(),
            None => factors.to_vec(),
        });
        Ok(self)
    }

    /// Linear scaling: positions are divided by `factor`.
    pub fn with_linear_scaling(mut self, factor: f32) -> Self {
        self.position_scale = 1.0 / factor;
        self
    }

    /// The angle parameters, as the fused GPU decoder computes them: `theta_scale`, the
    /// per-frequency divisors, the position scale, and whether pairs are half-split.
    pub fn params(&self) -> (f32, Option<&[f32]>, f32, bool) {
        (
            self.theta_scale,
            self.factors.as_deref(),
            self.position_scale,
            self.style == Style::HalfSplit,
        )
    }

    /// Tables for positions `start..start + len`, computed as ggml computes its RoPE cache
    /// (what llama.cpp runs): the angle starts at the position and is multiplied by
    /// `theta_scale` from one frequency to the next, in f32, then divided by the frequency's
    /// factor and scaled; `cosf`/`sinf` of that. The rounding of that running product is part
    /// of llama.cpp's numerics, and matching it keeps our Q and K equal to its bit for bit.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> Result<Tables> {
        let half = self.half;
        let (mut cos, mut sin) = (
            Vec::with_capacity(len * half),
            Vec::with_capacity(len * half),
        );
        let (theta_scale, factors) = self.frequencies_until(start + len);
        let m = self.magnitude;
        for p in start..start + len {
            let mut theta = p as f32;
            for i in 0..half {
                let t = match factors {
                    Some(f) => theta / f[i],
                    None => theta,
                };
                let t = self.position_scale * t;
                cos.push(m * t.cos());
                sin.push(m * t.sin());
                theta *= theta_scale;
            }
        }
        Ok(Tables {
            cos: Tensor::from_vec(cos, (len, half), device)?,
            sin: Tensor::from_vec(sin, (len, half), device)?,
        })
    }

    /// The frequency ratio and divisors of a pass that ends at `end` positions.
    fn frequencies_until(&self, end: usize) -> (f32, Option<&[f32]>) {
        match &self.beyond {
            Some(Beyond::DynamicNtk {
                factor,
                original,
                base,
            }) if end > *original => {
                let d = (2 * self.half) as f64;
                let grown =
                    (factor * end as f64 / *original as f64 - (factor - 1.0)).powf(d / (d - 2.0));
                (
                    ((base * grown) as f32).powf(-2.0 / d as f32),
                    self.factors.as_deref(),
                )
            }
            Some(Beyond::LongFactors { original, factors }) if end > *original => {
                (self.theta_scale, Some(factors))
            }
            _ => (self.theta_scale, self.factors.as_deref()),
        }
    }

    /// Tables for one new position of each sequence, at the position each of `caches` is at
    /// (a batched decode step).
    pub fn tables_each(
        &self,
        caches: &[&mut crate::engine::cache::Cache],
        device: &Device,
    ) -> Result<Vec<Tables>> {
        caches
            .iter()
            .map(|c| self.tables(c.pos(), 1, device))
            .collect()
    }

    /// Rotates `x` shaped `(batch, heads, len, head_dim)`. A head wider than this RoPE's
    /// dimensions (partial RoPE, `partial_rotary_factor` < 1) has its leading dimensions
    /// rotated and the rest passed through, as transformers' `apply_rotary_pos_emb` does.
    pub fn apply(&self, x: &Tensor, t: &Tables) -> Result<Tensor> {
        let rotated = 2 * self.half;
        let width = x.dim(candle_core::D::Minus1)?;
        if width > rotated {
            let head = self.apply(&x.narrow(candle_core::D::Minus1, 0, rotated)?, t)?;
            let pass = x.narrow(candle_core::D::Minus1, rotated, width - rotated)?;
            return Ok(Tensor::cat(&[&head, &pass], candle_core::D::Minus1)?.contiguous()?);
        }
        let x = x.contiguous()?;
        if let Some(y) = self.apply_cpu(&x, t)? {
            return Ok(y);
        }
        let (cos, sin) = (t.cos.to_dtype(x.dtype())?, t.sin.to_dtype(x.dtype())?);
        Ok(match self.style {
            Style::HalfSplit => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            Style::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
        })
    }

    /// The CPU form for f32, rounded as ggml's `rope` rounds (its C++ is compiled with
    /// contraction, so one product of each pair is fused): `x0·c − x1·s` as
    /// `fma(x0, c, −(x1·s))` and `x0·s + x1·c` as `fma(x0, s, x1·c)`.
    fn apply_cpu(&self, x: &Tensor, t: &Tables) -> Result<Option<Tensor>> {
        let (b, h, l, d) = x.dims4()?;
        if d != 2 * self.half || t.cos.dims() != [l, self.half] {
            return Ok(None);
        }
        let (half, style) = (self.half, self.style);
        let out = host::with_f32(&t.cos, |cos| {
            host::with_f32(&t.sin, |sin| {
                host::with_f32(x, |x| {
                    let mut y = vec![0f32; x.len()];
                    rope::rotate(x, &mut y, cos, sin, half, l, style == Style::Interleaved);
                    y
                })
            })
        })?;
        match out {
            Some(Ok(Some(Ok(Some(y))))) => Ok(Some(Tensor::from_vec(y, (b, h, l, d), x.device())?)),
            Some(Ok(Some(Err(e)))) | Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }
}

/// llama3 RoPE scaling as Hugging Face's `rope_scaling` describes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    /// Overall factor (`factor`).
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_context: f64,
}

/// The per-frequency divisors of llama3 scaling, the values llama.cpp's converter stores as
/// `rope_freqs.weight`: high frequencies keep their speed, low ones slow by `factor`, and the
/// band between blends the two.
pub fn llama3_freq_factors(head_dim: usize, base: f64, s: Llama3Scaling) -> Vec<f32> {
    let low_wavelen = s.original_context / s.low_freq_factor;
    let high_wavelen = s.original_context / s.high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                s.factor
            } else {
                let smooth = (s.original_context / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            };
            divisor as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_factors_keep_high_frequencies_and_slow_low_ones() {
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192.0,
        };
        let f = llama3_freq_factors(128, 500_000.0, s);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        // Monotone through the blended band.
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
        assert!(f.iter().any(|&x| x > 1.0 && x < 8.0));
    }

    fn naive(x: &[f32], pos: usize, base: f64, style: Style) -> Vec<f32> {
        let d = x.len();
        let mut out = x.to_vec();
        for i in 0..d / 2 {
            let theta = pos as f64 / base.powf(2.0 * i as f64 / d as f64);
            let (c, s) = (theta.cos() as f32, theta.sin() as f32);
            let (a, b) = match style {
                Style::HalfSplit => (i, i + d / 2),
                Style::Interleaved => (2 * i, 2 * i + 1),
            };
            out[a] = x[a] * c - x[b] * s;
            out[b] = x[a] * s + x[b] * c;
        }
        out
    }

    #[test]
    fn partial_rope_rotates_the_leading_dimensions_and_passes_the_rest() {
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.3 - 1.0).collect();
        let rope = Rope::new(8, 10_000.0, Style::HalfSplit);
        let t = rope.tables(5, 1, &Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.clone(), (1, 1, 1, 12), &Device::Cpu).unwrap();
        let y: Vec<f32> = rope
            .apply(&xt, &t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = naive(&x[..8], 5, 10_000.0, Style::HalfSplit);
        for (a, b) in y[..8].iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_eq!(y[8..], x[8..]);
    }

    #[test]
    fn both_styles_rotate_the_right_pairs() {
        let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 1.0).collect();
        for style in [Style::HalfSplit, Style::Interleaved] {
            let rope = Rope::new(8, 10_000.0, style);
            let t = rope.tables(5, 1, &Device::Cpu).unwrap();
            let xt = Tensor::from_vec(x.clone(), (1, 1, 1, 8), &Device::Cpu).unwrap();
            let y: Vec<f32> = rope
                .apply(&xt, &t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in y.iter().zip(naive(&x, 5, 10_000.0, style)) {
                assert!((a - b).abs() < 1e-5, "{style:?}: {a} vs {b}");
            }
        }
    }
}
