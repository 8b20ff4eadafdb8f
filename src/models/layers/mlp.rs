//! Gated feed-forward networks: SwiGLU (SiLU gate) and GeGLU (GELU-tanh gate, Gemma), with the
//! gate and up projections stored apart (`gate_proj`, `up_proj`) or stacked in one matrix
//! (Phi-3's `gate_up_proj`, rows gate|up) that is split after a single matmul.

use candle_core::{Tensor, D};

use super::linear::Linear;
use crate::formats::weights::Vb;
use crate::kernels::cpu::gated;
use crate::Result;

pub use crate::kernels::Activation;

/// The gate and up projections.
#[derive(Clone, Debug)]
enum GateUp {
    Separate {
        gate: Linear,
        up: Linear,
    },
    /// One `(2 * ffn, hidden)` matrix: the first `ffn` rows are the gate.
    Fused {
        gate_up: Linear,
        ffn: usize,
    },
}

/// `down(act(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    gate_up: GateUp,
    down: Linear,
    act: Activation,
}

impl Mlp {
    /// Loads `gate_proj`, `up_proj`, `down_proj` under `vb`, with their biases when `bias`
    /// (`mlp_bias`).
    pub fn load(vb: &Vb, hidden: usize, ffn: usize, act: Activation, bias: bool) -> Result<Self> {
        Self::load_named(
            vb,
            ["gate_proj", "up_proj", "down_proj"],
            (hidden, ffn),
            act,
            bias,
        )
    }

    /// [`Mlp::load`] with the gate, up and down projections named `names` (LFM2: `w1`, `w3`,
    /// `w2`); `dims` is `(hidden, ffn)`.
    pub fn load_named(
        vb: &Vb,
        names: [&str; 3],
        (hidden, ffn): (usize, usize),
        act: Activation,
        bias: bool,
    ) -> Result<Self> {
        let [gate_name, up_name, down_name] = names;
        let gate = Linear::load(&vb.pp(gate_name), hidden, ffn, bias)?;
        let up = Linear::load(&vb.pp(up_name), hidden, ffn, bias)?;
        // Stored apart, computed together on the CPU when both share a type (the same
        // numbers; see `Qkv::load`).
        let stacked = match vb.device().is_cpu() && !vb.check_only() {
            true => Linear::stack(&[&gate, &up])?,
            false => None,
        };
        let gate_up = match stacked {
            Some(gate_up) => {
                vb.pp(gate_name).forget("weight");
                vb.pp(up_name).forget("weight");
                GateUp::Fused { gate_up, ffn }
            }
            None => GateUp::Separate { gate, up },
        };
        Ok(Self {
            gate_up,
            down: Linear::load(&vb.pp(down_name), ffn, hidden, bias)?,
            act,
        })
    }

    /// Loads the stacked `gate_up_proj` (`2 * ffn` rows, gate first) and `down_proj`.
    pub fn load_fused(vb: &Vb, hidden: usize, ffn: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            gate_up: GateUp::Fused {
                gate_up: Linear::load(&vb.pp("gate_up_proj"), hidden, 2 * ffn, false)?,
                ffn,
            },
            down: Linear::load(&vb.pp("down_proj"), ffn, hidden, false)?,
            act,
        })
    }

    /// A network over ready layers (e.g. one expert of a mixture).
    pub fn from_linears(gate: Linear, up: Linear, down: Linear, act: Activation) -> Self {
        Self {
            gate_up: GateUp::Separate { gate, up },
            down,
            act,
        }
    }

    /// A network over ready layers whose gate and up projections are one stacked matrix
    /// (`2 * ffn` rows, gate first; e.g. one expert of Gemma 4's `experts.gate_up_proj`).
    pub fn from_stacked(gate_up: Linear, ffn: usize, down: Linear, act: Activation) -> Self {
        Self {
            gate_up: GateUp::Fused { gate_up, ffn },
            down,
            act,
        }
    }

    /// Gate, up, down and the activation, when gate and up are separate matrices.
    pub fn separate(&self) -> Option<(&Linear, &Linear, &Linear, Activation)> {
        match &self.gate_up {
            GateUp::Separate { gate, up } => Some((gate, up, &self.down, self.act)),
            GateUp::Fused { .. } => None,
        }
    }

    /// The layers in the order a caller running the products itself needs them, when every
    /// one takes rows ([`Linear::takes_rows`]): the first products, whose outputs laid end to
    /// end are `[gate | up]` (the two projections, or the one stacked matrix), then `down`
    /// and the activation. `None` otherwise.
    pub fn row_parts(&self) -> Option<(Vec<&Linear>, &Linear, Activation)> {
        let first = match &self.gate_up {
            GateUp::Separate { gate, up } => vec![gate, up],
            GateUp::Fused { gate_up, .. } => vec![gate_up],
        };
        let all = first.iter().all(|l| l.takes_rows()) && self.down.takes_rows();
        all.then_some((first, &self.down, self.act))
    }

    /// Applies the network to `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, u) = match &self.gate_up {
            GateUp::Separate { gate, up } => (gate.forward(x)?, up.forward(x)?),
            GateUp::Fused { gate_up, ffn } => {
                let y = gate_up.forward(x)?;
                if let Some(h) = gated::forward_stacked(self.act, &y, *ffn)? {
                    return self.down.forward(&h);
                }
                (
                    y.narrow(D::Minus1, 0, *ffn)?,
                    y.narrow(D::Minus1, *ffn, *ffn)?,
                )
            }
        };
        let h = match gated::forward(self.act, &g, &u)? {
            Some(h) => h,
            None => {
                let g = match self.act {
                    Activation::Silu => candle_nn::ops::silu(&g)?,
                    Activation::GeluTanh => g.gelu()?,
                };
                (g * u)?
            }
        };
        self.down.forward(&h)
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

    #[test]
    fn stacked_gate_up_equals_separate_projections() {
        let dev = Device::Cpu;
        let (hidden, ffn) = (8, 6);
        let gate = Tensor::randn(0f32, 1.0, (ffn, hidden), &dev).unwrap();
        let up = Tensor::randn(0f32, 1.0, (ffn, hidden), &dev).unwrap();
        let down = Tensor::randn(0f32, 1.0, (hidden, ffn), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, hidden), &dev).unwrap();
        let separate =
            Mlp::from_linears(linear(&gate), linear(&up), linear(&down), Activation::Silu);
        let fused = Mlp {
            gate_up: GateUp::Fused {
                gate_up: linear(&Tensor::cat(&[&gate, &up], 0).unwrap()),
                ffn,
            },
            down: linear(&down),
            act: Activation::Silu,
        };
        let a: Vec<f32> = separate
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = fused
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a.len(), 3 * hidden);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        // Swapping the halves must change the result: the split order matters.
        let swapped = Mlp {
            gate_up: GateUp::Fused {
                gate_up: linear(&Tensor::cat(&[&up, &gate], 0).unwrap()),
                ffn,
            },
            down: linear(&down),
            act: Activation::Silu,
        };
        let c: Vec<f32> = swapped
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(a.iter().zip(&c).any(|(p, q)| (p - q).abs() > 1e-3));
    }
}
