//! Gated feed-forward networks: SwiGLU (SiLU gate) and GeGLU (GELU-tanh gate, Gemma).

use candle_core::Tensor;

use super::linear::Linear;
use crate::formats::weights::Vb;
use crate::Result;

/// The gate's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU, Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// `down(act(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
}

impl Mlp {
    /// Loads `gate_proj`, `up_proj`, `down_proj` under `vb`.
    pub fn load(vb: &Vb, hidden: usize, ffn: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(&vb.pp("gate_proj"), hidden, ffn, false)?,
            up: Linear::load(&vb.pp("up_proj"), hidden, ffn, false)?,
            down: Linear::load(&vb.pp("down_proj"), ffn, hidden, false)?,
            act,
        })
    }

    /// Applies the network to `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?;
        let g = match self.act {
            Activation::Silu => candle_nn::ops::silu(&g)?,
            Activation::GeluTanh => g.gelu()?,
        };
        self.down.forward(&(g * self.up.forward(x)?)?)
    }
}
