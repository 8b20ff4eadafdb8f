//! Gated short convolution (LFM2's `conv` blocks): `in_proj` makes three streams B, C, x; the
//! product B·x goes through a causal depthwise convolution of a few taps, whose output C gates
//! before `out_proj`. The convolution's memory (its last `taps - 1` inputs) is recurrent state
//! in the engine's cache, so decoding one token costs the same at any position.
//! [`causal_conv`] is the convolution alone, for other mixers with a short causal convolution.

use candle_core::{Tensor, D};

use super::linear::Linear;
use crate::engine::cache::{Cache, LayerKind};
use crate::formats::weights::{Vb, WeightFormat};
use crate::Result;

/// A depthwise causal convolution over positions: `x` `(L, C)` continues the inputs `state`
/// `(taps - 1, C)` (the previous positions, zeros at the start); `weight` `(C, taps)`, tap
/// `taps - 1` on the current position. Returns the output `(L, C)` and the new state (the
/// last `taps - 1` inputs).
pub fn causal_conv(
    x: &Tensor,
    state: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (l, _) = x.dims2()?;
    let (_, taps) = weight.dims2()?;
    let keep = taps - 1;
    // 1. The inputs the window reads: (taps - 1 + L, C).
    let all = Tensor::cat(&[state, x], 0)?;
    // 2. Sum of the taps: out[t] = Σ_j w[:, j] · all[t + j].
    let mut y = all
        .narrow(0, 0, l)?
        .broadcast_mul(&weight.narrow(1, 0, 1)?.t()?)?;
    for j in 1..taps {
        let tap = weight.narrow(1, j, 1)?.t()?; // (1, C)
        y = (y + all.narrow(0, j, l)?.broadcast_mul(&tap)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let state = all.narrow(0, l, keep)?.contiguous()?;
    Ok((y, state))
}

/// Shape and options of one short-convolution block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Model width (the channels).
    pub hidden: usize,
    /// Taps of the convolution (`conv_L_cache`, at least 2).
    pub taps: usize,
    /// The projections and the convolution carry biases (`conv_bias`).
    pub bias: bool,
}

/// One short-convolution block's weights.
#[derive(Clone, Debug)]
pub struct ShortConv {
    in_proj: Linear,
    conv: Tensor,
    conv_bias: Option<Tensor>,
    out_proj: Linear,
    cfg: Config,
}

impl ShortConv {
    /// Loads `in_proj`, `conv` and `out_proj` under `vb`. `conv.weight` is `(hidden, 1, taps)`
    /// in safetensors (a PyTorch `Conv1d`) and `(hidden, taps)` in GGUF.
    pub fn load(vb: &Vb, cfg: Config) -> Result<Self> {
        let h = cfg.hidden;
        let conv = match vb.weights().format() {
            WeightFormat::Safetensors => vb
                .pp("conv")
                .tensor("weight", &[h, 1, cfg.taps])?
                .reshape((h, cfg.taps))?,
            WeightFormat::Gguf => vb.pp("conv").tensor("weight", &[h, cfg.taps])?,
        };
        Ok(Self {
            in_proj: Linear::load(&vb.pp("in_proj"), h, 3 * h, cfg.bias)?,
            conv,
            conv_bias: match cfg.bias {
                true => Some(vb.pp("conv").tensor("bias", &[h])?),
                false => None,
            },
            out_proj: Linear::load(&vb.pp("out_proj"), h, h, cfg.bias)?,
            cfg,
        })
    }

    /// What this block keeps in the cache: the last `taps - 1` inputs of the convolution.
    pub fn cache_kind(&self) -> LayerKind {
        LayerKind::Recurrent(vec![vec![self.cfg.taps - 1, self.cfg.hidden]])
    }

    /// Mixes `x` (`(1, L, hidden)`) at the cache position, reading and updating layer
    /// `layer`'s state in `cache`.
    pub fn forward(&self, x: &Tensor, cache: &mut Cache, layer: usize) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        // 1. Three streams: (1, L, 3h) -> B, C, x, each (L, h).
        let bcx = self.in_proj.forward(x)?.reshape((l, 3 * h))?;
        let (bg, cg, xs) = (
            bcx.narrow(D::Minus1, 0, h)?,
            bcx.narrow(D::Minus1, h, h)?,
            bcx.narrow(D::Minus1, 2 * h, h)?,
        );
        // 2. Convolution of B·x, continuing the state.
        let state = cache.state(layer, x.device())?;
        let dtype = bcx.dtype();
        let bx = (bg * xs)?.to_dtype(candle_core::DType::F32)?;
        let (conv, next) = causal_conv(&bx, &state[0], &self.conv, self.conv_bias.as_ref())?;
        state[0] = next;
        // 3. Gate by C and project out: (L, h) -> (1, L, h).
        let y = (cg * conv.to_dtype(dtype)?)?.reshape((b, l, h))?;
        self.out_proj.forward(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn convolution_matches_the_formula_and_carries_its_state() {
        // Two channels, three taps; channel 1's weights pick out the input two steps back.
        let w = t(&[0.5, -1.0, 2.0, 1.0, 0.0, 0.0], (2, 3));
        let x = t(&[1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0], (4, 2));
        let zero = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (y, s) = causal_conv(&x, &zero, &w, None).unwrap();
        let y: Vec<Vec<f32>> = y.to_vec2().unwrap();
        // Channel 0 at t=2: 0.5·1 − 1·2 + 2·3 = 4.5; channel 1 at t=2: input at t=0 = 10.
        assert_eq!(y[0], [2.0, 0.0]);
        assert_eq!(y[2], [4.5, 10.0]);
        assert_eq!(s.to_vec2::<f32>().unwrap(), [[3.0, 30.0], [4.0, 40.0]]);
        // The same inputs one at a time, through the state, give the same outputs.
        let mut state = zero;
        for (i, row) in y.iter().enumerate() {
            let xi = x.narrow(0, i, 1).unwrap();
            let (yi, next) = causal_conv(&xi, &state, &w, None).unwrap();
            assert_eq!(&yi.to_vec2::<f32>().unwrap()[0], row, "step {i}");
            state = next;
        }
    }
}
