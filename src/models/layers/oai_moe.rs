//! gpt-oss's mixture of experts (llama.cpp's `LLM_FFN_SWIGLU_OAI_MOE`): a router with a
//! bias, the top `k` logits then a softmax over them ([`Router::TopKSoftmax`]), and experts
//! whose three projections carry biases and whose activation is the clamped SwiGLU
//! `(clamp(up, ±limit) + 1) · g · sigmoid(alpha · g)` with `g = min(gate, limit)`.
//!
//! The experts load from any of three layouts:
//! - transformers' (`GptOssExperts`): `experts.gate_up_proj` `(E, hidden, 2·ffn)` with gate
//!   and up interleaved along the output (gate at even columns), `experts.down_proj`
//!   `(E, ffn, hidden)`, both stored input-major, and `experts.{gate_up,down}_proj_bias`; or
//!   the same matrices as MXFP4 `*_blocks` / `*_scales` (output-major, blocks along the
//!   input), as the published checkpoints store them;
//! - GGUF (llama.cpp's converter): `ffn_{gate,up,down}_exps.{weight,bias}`, stacked per
//!   projection, gate and up apart;
//! - one tensor per expert and projection (`experts.E.{gate,up,down}_proj.{weight,bias}`),
//!   what `mlcli export` writes.
//!
//! Routing and the per-expert batches are [`super::moe::dispatch`]. References: HF
//! `modeling_gpt_oss.py` (`GptOssExperts`, `GptOssTopKRouter`), llama.cpp
//! `src/llama-graph.cpp` (`build_moe_ffn`), ggml `ggml_compute_forward_swiglu_oai_f32`.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::moe::{self, Router};
use crate::formats::blocks::Blocks;
use crate::formats::weights::{Matrix, Vb, WeightFormat};
use crate::Result;

/// Shape, routing and activation of one block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Experts per layer.
    pub n_experts: usize,
    /// Experts each token uses.
    pub n_used: usize,
    /// Width of one expert.
    pub ffn: usize,
    /// The sigmoid's gain (`swiglu_alpha`, 1.702).
    pub alpha: f32,
    /// The clamp (`swiglu_limit`, 7).
    pub limit: f32,
}

impl Config {
    /// Rejects shapes that cannot route.
    pub fn validate(&self) -> Result<()> {
        moe::Config {
            n_experts: self.n_experts,
            n_used: self.n_used,
            ffn: self.ffn,
            router: Router::TopKSoftmax,
            names: moe::QWEN_NAMES,
        }
        .validate()
    }
}

/// One expert: gate, up and down projections, each with its bias.
#[derive(Clone, Debug)]
struct Expert {
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The block.
#[derive(Clone, Debug)]
pub struct OaiMoe {
    router: Linear,
    experts: Vec<Expert>,
    cfg: Config,
}

impl OaiMoe {
    /// Loads `router` and `experts` under `vb` (the block's prefix, `model.layers.N.mlp`).
    pub fn load(vb: &Vb, hidden: usize, cfg: &Config) -> Result<Self> {
        let n = cfg.n_experts;
        // The router stays f32, as llama.cpp keeps it: a rounded logit can swap experts.
        let r = vb.pp("router");
        let router = Linear::load_f32(&r, hidden, n)?.with_bias(r.tensor("bias", &[n])?);
        let ex = vb.pp("experts");
        let transformers = ex.contains("gate_up_proj") || ex.contains("gate_up_proj_blocks");
        let experts = match transformers {
            true => load_transformers(&ex, hidden, cfg)?,
            false => load_apart(vb, hidden, cfg)?,
        };
        Ok(Self {
            router,
            experts,
            cfg: *cfg,
        })
    }

    /// Applies the block to `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.dims().to_vec();
        let hidden = shape.last().copied().unwrap_or(0);
        let xs = x.reshape(((), hidden))?; // (T, hidden)
                                           // 1. Router logits (T, E) with their bias; top k, then a softmax over those k.
        let routes = moe::routes(
            &self.router.forward(&xs)?,
            Router::TopKSoftmax,
            self.cfg.n_used,
        )?;
        // 2. Each chosen expert on its tokens: biased projections, clamped SwiGLU.
        let out = moe::dispatch(&xs, &routes, self.experts.len(), |e, rows| {
            let ex = &self.experts[e];
            let (g, u) = (ex.gate.forward(rows)?, ex.up.forward(rows)?);
            ex.down
                .forward(&swiglu_oai(&g, &u, self.cfg.alpha, self.cfg.limit)?)
        })?;
        Ok(out.reshape(shape)?)
    }
}

/// `(clamp(u, -limit, limit) + 1) · g / (1 + exp(-alpha · g))` with `g = min(gate, limit)`,
/// element by element, as ggml computes it (in f32).
pub fn swiglu_oai(gate: &Tensor, up: &Tensor, alpha: f32, limit: f32) -> Result<Tensor> {
    let dtype = gate.dtype();
    let g: Vec<f32> = gate.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let u: Vec<f32> = up.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let out: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| {
            let x = g.min(limit);
            let y = u.clamp(-limit, limit);
            x / (1.0 + (alpha * -x).exp()) * (y + 1.0)
        })
        .collect();
    Ok(Tensor::from_vec(out, gate.shape(), gate.device())?.to_dtype(dtype)?)
}

/// Gate and up stored apart per projection: GGUF's stacked tensors or one per expert.
fn load_apart(vb: &Vb, hidden: usize, cfg: &Config) -> Result<Vec<Expert>> {
    let (n, f) = (cfg.n_experts, cfg.ffn);
    let gate = vb.experts("gate_proj", n, &[f, hidden])?;
    let up = vb.experts("up_proj", n, &[f, hidden])?;
    let down = vb.experts("down_proj", n, &[hidden, f])?;
    let bias = |leaf: &str, width: usize| -> Result<Vec<Tensor>> {
        let ex = vb.pp("experts");
        match vb.weights().format() {
            WeightFormat::Gguf => {
                let stacked = ex.tensor(&format!("*.{leaf}.bias"), &[n, width])?;
                (0..n).map(|e| Ok(stacked.get(e)?)).collect()
            }
            WeightFormat::Safetensors => (0..n)
                .map(|e| ex.pp(e).pp(leaf).tensor("bias", &[width]))
                .collect(),
        }
    };
    let (gb, ub, db) = (
        bias("gate_proj", f)?,
        bias("up_proj", f)?,
        bias("down_proj", hidden)?,
    );
    Ok(gate
        .into_iter()
        .zip(up)
        .zip(down)
        .zip(gb.into_iter().zip(ub).zip(db))
        .map(|(((g, u), d), ((gb, ub), db))| Expert {
            gate: Linear::from_matrix(g).with_bias(gb),
            up: Linear::from_matrix(u).with_bias(ub),
            down: Linear::from_matrix(d).with_bias(db),
        })
        .collect())
}

/// transformers' layout under `ex` (`model.layers.N.mlp.experts`): stacked, gate and up
/// interleaved; dense (input-major) or MXFP4 blocks (output-major).
fn load_transformers(ex: &Vb, hidden: usize, cfg: &Config) -> Result<Vec<Expert>> {
    let (n, f) = (cfg.n_experts, cfg.ffn);
    let (gate, up, down) = match ex.contains("gate_up_proj_blocks") {
        true => {
            let gate_up = ex
                .mxfp4_pair("gate_up_proj", &[n, 2 * f, hidden])?
                .split(n)?;
            let down = ex.mxfp4_pair("down_proj", &[n, hidden, f])?.split(n)?;
            let rows = |m: &Blocks, first: usize| -> Result<Matrix> {
                let picked = m.select_rows((first..2 * f).step_by(2))?;
                ex.blocks_weight(picked)
            };
            let gate = gate_up
                .iter()
                .map(|m| rows(m, 0))
                .collect::<Result<Vec<_>>>()?;
            let up = gate_up
                .iter()
                .map(|m| rows(m, 1))
                .collect::<Result<Vec<_>>>()?;
            let down = down
                .into_iter()
                .map(|m| ex.blocks_weight(m))
                .collect::<Result<Vec<_>>>()?;
            (gate, up, down)
        }
        false => dense_transformers(ex, hidden, cfg)?,
    };
    // Biases (E, 2·ffn) interleaved like the outputs, and (E, hidden).
    let gate_up_bias = ex.tensor("gate_up_proj_bias", &[n, 2 * f])?;
    let down_bias = ex.tensor("down_proj_bias", &[n, hidden])?;
    let mut experts = Vec::with_capacity(n);
    for (e, ((g, u), d)) in gate.into_iter().zip(up).zip(down).enumerate() {
        let pairs = gate_up_bias.get(e)?.reshape((f, 2))?;
        experts.push(Expert {
            gate: Linear::from_matrix(g).with_bias(pairs.narrow(1, 0, 1)?.flatten_all()?),
            up: Linear::from_matrix(u).with_bias(pairs.narrow(1, 1, 1)?.flatten_all()?),
            down: Linear::from_matrix(d).with_bias(down_bias.get(e)?),
        });
    }
    Ok(experts)
}

type Projections = (Vec<Matrix>, Vec<Matrix>, Vec<Matrix>);

/// The dense transformers layout: per expert, `gate_up_proj[e]ᵀ` split into its even (gate)
/// and odd (up) rows, and `down_proj[e]ᵀ`, each kept or quantized as stored weights are.
fn dense_transformers(ex: &Vb, hidden: usize, cfg: &Config) -> Result<Projections> {
    let (n, f) = (cfg.n_experts, cfg.ffn);
    let gate_up = ex.stored("gate_up_proj", &[n, hidden, 2 * f])?;
    let down = ex.stored("down_proj", &[n, f, hidden])?;
    let (mut gates, mut ups, mut downs) = (Vec::new(), Vec::new(), Vec::new());
    for e in 0..n {
        if ex.check_only() {
            // Nothing is read when only checking: zeros of each shape (untouched pages).
            let zeros = |r: usize, c: usize| Tensor::zeros((r, c), DType::F32, ex.device());
            gates.push(ex.dense_matrix(zeros(f, hidden)?)?);
            ups.push(ex.dense_matrix(zeros(f, hidden)?)?);
            downs.push(ex.dense_matrix(zeros(hidden, f)?)?);
            continue;
        }
        // (hidden, 2·ffn) -> (ffn, 2, hidden): row pairs (gate, up).
        let pairs = gate_up.get(e)?.t()?.contiguous()?.reshape((f, 2, hidden))?;
        let half =
            |i: usize| -> Result<Tensor> { Ok(pairs.narrow(1, i, 1)?.squeeze(1)?.contiguous()?) };
        gates.push(ex.dense_matrix(half(0)?)?);
        ups.push(ex.dense_matrix(half(1)?)?);
        downs.push(ex.dense_matrix(down.get(e)?.t()?.contiguous()?)?);
    }
    Ok((gates, ups, downs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Device;

    #[test]
    fn the_clamped_swiglu_follows_its_formula_and_clamps_both_inputs() {
        let dev = Device::Cpu;
        let g = Tensor::new(&[0.0f32, 1.0, -2.0, 9.0, 3.0], &dev).unwrap();
        let u = Tensor::new(&[1.0f32, -1.0, 0.5, 2.0, -8.0], &dev).unwrap();
        let y: Vec<f32> = swiglu_oai(&g, &u, 1.702, 7.0).unwrap().to_vec1().unwrap();
        let f = |g: f32, u: f32| g / (1.0 + (-1.702 * g).exp()) * (u + 1.0);
        let want = [
            f(0.0, 1.0),
            f(1.0, -1.0),
            f(-2.0, 0.5),
            f(7.0, 2.0),
            f(3.0, -7.0),
        ];
        assert_eq!(y, want);
        assert_eq!(y[1], 0.0); // up = -1 zeroes the output: the "+ 1"
    }

    #[test]
    fn a_block_equals_routing_and_experts_computed_by_hand() {
        let dev = Device::Cpu;
        let (hidden, f, n, k) = (32, 8, 3, 2);
        let mut rng = crate::models::synthetic::Rng::new(3);
        let mut t = |shape: &[usize]| rng.tensor(shape, 0.0, 1.0).unwrap();
        let router_w = t(&[n, hidden]);
        let router_b = t(&[n]);
        let experts: Vec<[Tensor; 6]> = (0..n)
            .map(|_| {
                [
                    t(&[f, hidden]),
                    t(&[f]),
                    t(&[f, hidden]),
                    t(&[f]),
                    t(&[hidden, f]),
                    t(&[hidden]),
                ]
            })
            .collect();
        let dense = |w: &Tensor, b: &Tensor| {
            Linear::from_matmul(QMatMul::Tensor(w.clone())).with_bias(b.clone())
        };
        let block = OaiMoe {
            router: dense(&router_w, &router_b),
            experts: experts
                .iter()
                .map(|[gw, gb, uw, ub, dw, db]| Expert {
                    gate: dense(gw, gb),
                    up: dense(uw, ub),
                    down: dense(dw, db),
                })
                .collect(),
            cfg: Config {
                n_experts: n,
                n_used: k,
                ffn: f,
                alpha: 1.702,
                limit: 1.5,
            },
        };
        let x = t(&[1, 5, hidden]);
        let y: Vec<Vec<f32>> = block
            .forward(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let lin = |x: &Tensor, w: &Tensor, b: &Tensor| {
            x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap()
        };
        for (i, row) in y.iter().enumerate() {
            let xt = x.squeeze(0).unwrap().narrow(0, i, 1).unwrap();
            let logits: Vec<f32> = lin(&xt, &router_w, &router_b)
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let top = &order[..k];
            let norm: f32 = top
                .iter()
                .map(|&e| (logits[e] - logits[top[0]]).exp())
                .sum();
            let mut want = vec![0f32; hidden];
            for &e in top {
                let [gw, gb, uw, ub, dw, db] = &experts[e];
                let (g, u): (Vec<f32>, Vec<f32>) = (
                    lin(&xt, gw, gb).flatten_all().unwrap().to_vec1().unwrap(),
                    lin(&xt, uw, ub).flatten_all().unwrap().to_vec1().unwrap(),
                );
                let h: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(&g, &u)| {
                        let g = g.min(1.5);
                        g * (1.0 / (1.0 + (-1.702 * g).exp())) * (u.clamp(-1.5, 1.5) + 1.0)
                    })
                    .collect();
                let h = Tensor::from_vec(h, (1, f), &dev).unwrap();
                let out: Vec<f32> = lin(&h, dw, db).flatten_all().unwrap().to_vec1().unwrap();
                let w = (logits[e] - logits[top[0]]).exp() / norm;
                for (o, v) in want.iter_mut().zip(out) {
                    *o += w * v;
                }
            }
            for (a, b) in row.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "token {i}: {a} vs {b}"
                );
            }
        }
    }
}
