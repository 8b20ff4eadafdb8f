//! Sparse mixture-of-experts feed-forward block without fused kernels, so it runs on the CPU
//! and on any device: a router linear (`gate`) scores the experts, each token keeps its top
//! `k`, and the block's output is the routing-weighted sum of those experts' SwiGLU outputs.
//!
//! Routing happens on the host (a few numbers per token). Then, for each expert that received
//! tokens, its rows are gathered (`index_select`), run through the expert's three linears as
//! one batch, scaled by their routing weights and added into their tokens' output rows (in
//! place on the CPU; `index_add` elsewhere). A decode step therefore runs only `k` experts,
//! and a prefill runs each chosen expert once.
//!
//! A [`SharedExpert`] (every token, sigmoid-gated) may sit beside the routed ones.
//!
//! Gemma 4 composes its block from the parts: [`Experts`] stored as two stacked tensors
//! (`gate_up_proj`, `down_proj`) with GELU-tanh, routed by a [`ScaledRouter`] that reads
//! another input than the experts do.
//!
//! Router variants, as the reference implementations declare them:
//! - [`Router::SoftmaxTopK`]: softmax over all experts, top-k, optionally renormalise the k
//!   weights (`norm_topk_prob`: true for Qwen3-MoE, false for Qwen2-MoE).
//! - [`Router::TopKSoftmax`]: top-k over the logits, softmax over those k (Mixtral's paper and
//!   llama.cpp's description; equal to `SoftmaxTopK { renormalize: true }` in exact maths).

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::mlp::{Activation, Mlp};
use super::norm::RmsNorm;
use crate::formats::weights::Vb;
use crate::kernels::cpu::host;
use crate::{Error, Result};

/// How routing weights come from router logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    /// Softmax over every expert, then the top `k`; `renormalize` rescales the kept weights
    /// to sum to 1.
    SoftmaxTopK {
        /// Divide the kept weights by their sum (`norm_topk_prob`).
        renormalize: bool,
    },
    /// The top `k` logits, then a softmax over just those.
    TopKSoftmax,
}

impl Router {
    /// The chosen experts of one token and their weights, best first. Ties go to the lower
    /// expert index.
    pub fn route(self, logits: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(k);
        match self {
            Self::SoftmaxTopK { renormalize } => {
                let probs = softmax(logits);
                let kept: Vec<(usize, f32)> = order.iter().map(|&e| (e, probs[e])).collect();
                if !renormalize {
                    return kept;
                }
                let sum: f32 = kept.iter().map(|(_, w)| w).sum();
                kept.into_iter().map(|(e, w)| (e, w / sum)).collect()
            }
            Self::TopKSoftmax => {
                let top: Vec<f32> = order.iter().map(|&e| logits[e]).collect();
                order.into_iter().zip(softmax(&top)).collect()
            }
        }
    }
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|v| v / sum).collect()
}

/// Where a family stores the block's weights (under the layer's prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    /// The block (`mlp` for Qwen, `block_sparse_moe` for Mixtral).
    pub block: &'static str,
    /// The router linear under the block (`gate`).
    pub router: &'static str,
    /// Each expert's gate projection (`experts.E.{gate}.weight`).
    pub gate: &'static str,
    /// Each expert's up projection.
    pub up: &'static str,
    /// Each expert's down projection.
    pub down: &'static str,
}

/// Qwen MoE naming: `mlp.gate`, `mlp.experts.E.{gate,up,down}_proj`.
pub const QWEN_NAMES: Names = Names {
    block: "mlp",
    router: "gate",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
};

/// Shape and routing of one MoE block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Experts per layer.
    pub n_experts: usize,
    /// Experts each token uses (`k`).
    pub n_used: usize,
    /// Width of one expert's MLP.
    pub ffn: usize,
    /// How logits become weights.
    pub router: Router,
    /// Where the weights are.
    pub names: Names,
}

impl Config {
    /// Rejects shapes that cannot route.
    pub fn validate(&self) -> Result<()> {
        if self.n_experts == 0 || self.ffn == 0 {
            return Err(Error::UnsupportedConfig(format!(
                "mixture of experts needs experts of non-zero width, found {} experts of width {}",
                self.n_experts, self.ffn
            )));
        }
        if self.n_used == 0 || self.n_used > self.n_experts {
            return Err(Error::UnsupportedConfig(format!(
                "{} experts used per token out of {}; supported: 1 to {}",
                self.n_used, self.n_experts, self.n_experts
            )));
        }
        Ok(())
    }
}

/// A sparse MoE feed-forward block with SwiGLU experts.
#[derive(Clone, Debug)]
pub struct SparseMoe {
    router: Linear,
    experts: Experts,
    cfg: Config,
}

impl SparseMoe {
    /// Loads the router and the experts from `vb` (the layer's prefix).
    pub fn load(vb: &Vb, hidden: usize, cfg: &Config) -> Result<Self> {
        let n = cfg.n_experts;
        let vb = vb.pp(cfg.names.block);
        // The router stays f32, as llama.cpp keeps it: a rounded logit can swap experts.
        let router = Linear::load_f32(&vb.pp(cfg.names.router), hidden, n)?;
        let names = [cfg.names.gate, cfg.names.up, cfg.names.down];
        Ok(Self {
            router,
            experts: Experts::load(&vb, n, names, (hidden, cfg.ffn))?,
            cfg: *cfg,
        })
    }

    /// The router linear (`(experts, hidden)`, f32).
    pub fn router(&self) -> &Linear {
        &self.router
    }

    /// The experts.
    pub fn experts(&self) -> &Experts {
        &self.experts
    }

    /// Shape and routing.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Applies the block to `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.dims().to_vec();
        let hidden = shape.last().copied().unwrap_or(0);
        let xs = x.reshape(((), hidden))?; // (T, hidden)
                                           // 1. Router logits (T, E), routed on the host.
        let routes = routes(&self.router.forward(&xs)?, self.cfg.router, self.cfg.n_used)?;
        // 2. The chosen experts, weighted.
        Ok(self.experts.forward(&xs, &routes)?.reshape(shape)?)
    }
}

/// Expert MLPs and the routed, weighted sum over them.
#[derive(Clone, Debug)]
pub struct Experts {
    mlps: Vec<Mlp>,
}

impl Experts {
    /// Experts over ready networks, indexed as given.
    pub fn new(mlps: Vec<Mlp>) -> Self {
        Self { mlps }
    }

    /// Loads `n` SwiGLU experts whose gate, up and down projections are named `names`
    /// (`experts.E.{name}.weight` under `vb`, or the stacked GGUF tensors the name table maps
    /// them to); `dims` is `(hidden, ffn)`.
    pub fn load(
        vb: &Vb,
        n: usize,
        names: [&str; 3],
        (hidden, ffn): (usize, usize),
    ) -> Result<Self> {
        let [gate, up, down] = names;
        let gate = vb.experts(gate, n, &[ffn, hidden])?;
        let up = vb.experts(up, n, &[ffn, hidden])?;
        let down = vb.experts(down, n, &[hidden, ffn])?;
        let mlps = gate
            .into_iter()
            .zip(up)
            .zip(down)
            .map(|((g, u), d)| {
                Mlp::from_linears(
                    Linear::from_matrix(g),
                    Linear::from_matrix(u),
                    Linear::from_matrix(d),
                    Activation::Silu,
                )
            })
            .collect();
        Ok(Self { mlps })
    }

    /// Loads `n` experts stored as two stacked tensors under `vb`: `gate_up_proj`
    /// (`(n, 2 * ffn, hidden)`, gate rows first) and `down_proj` (`(n, hidden, ffn)`), as
    /// transformers 5 stores Gemma 4's experts and llama.cpp's `ffn_gate_up_exps` /
    /// `ffn_down_exps`.
    pub fn load_stacked(
        vb: &Vb,
        n: usize,
        (hidden, ffn): (usize, usize),
        act: Activation,
    ) -> Result<Self> {
        let gate_up = vb.stacked("gate_up_proj", n, &[2 * ffn, hidden])?;
        let down = vb.stacked("down_proj", n, &[hidden, ffn])?;
        let mlps = gate_up
            .into_iter()
            .zip(down)
            .map(|(gu, d)| {
                Mlp::from_stacked(Linear::from_matrix(gu), ffn, Linear::from_matrix(d), act)
            })
            .collect();
        Ok(Self { mlps })
    }

    /// The experts' networks, by index.
    pub fn mlps(&self) -> &[Mlp] {
        &self.mlps
    }

    /// How many experts there are.
    pub fn len(&self) -> usize {
        self.mlps.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.mlps.is_empty()
    }

    /// Rows `xs` (`(T, hidden)`), row `t` through the experts of `routes[t]` (index,
    /// weight): the weighted sums, `(T, hidden)`.
    ///
    /// For each expert that received rows: gather them (`n_e, hidden`), run the expert, scale
    /// each row by its weight, add into the output rows. Experts go in index order, so a
    /// row's sum is accumulated in the same order whatever else is in the batch.
    pub fn forward(&self, xs: &Tensor, routes: &[Vec<(usize, f32)>]) -> Result<Tensor> {
        if let [route] = routes {
            if let Some(y) = super::expert_step::one_token(&self.mlps, xs, route)? {
                return Ok(y);
            }
        }
        dispatch(xs, routes, self.mlps.len(), |e, rows| {
            self.mlps[e].forward(rows)
        })
    }
}

/// Gemma 4's router: the input RMS-normed without weights, times a learned per-channel
/// `scale` and `hidden^-1/2`, projected to expert logits (kept f32, as llama.cpp keeps the
/// router); softmax over every expert, the top `k` renormalised to sum to 1, and each weight
/// multiplied by its expert's `per_expert_scale`.
#[derive(Clone, Debug)]
pub struct ScaledRouter {
    norm: RmsNorm,
    /// `scale · hidden^-1/2`, `(hidden)`.
    scale: Tensor,
    proj: Linear,
    per_expert: Vec<f32>,
    k: usize,
}

impl ScaledRouter {
    /// Loads `proj.weight` (`(n, hidden)`), `scale` (`(hidden)`) and `per_expert_scale`
    /// (`(n)`) under `vb` (the router's prefix); `k` experts per token.
    pub fn load(vb: &Vb, hidden: usize, n: usize, k: usize, eps: f64) -> Result<Self> {
        if k == 0 || k > n {
            return Err(Error::UnsupportedConfig(format!(
                "{k} experts used per token out of {n}; supported: 1 to {n}"
            )));
        }
        let scale = (vb.tensor("scale", &[hidden])? * (hidden as f64).powf(-0.5))?;
        Ok(Self {
            norm: RmsNorm::unscaled(hidden, eps, vb.device())?,
            scale,
            proj: Linear::load_f32(&vb.pp("proj"), hidden, n)?,
            per_expert: vb.tensor("per_expert_scale", &[n])?.to_vec1()?,
            k,
        })
    }

    /// The experts and weights of each row of `xs` (`(T, hidden)`), best first.
    pub fn route(&self, xs: &Tensor) -> Result<Vec<Vec<(usize, f32)>>> {
        let x = self
            .norm
            .forward(xs)?
            .broadcast_mul(&self.scale.to_dtype(xs.dtype())?)?;
        let logits: Vec<Vec<f32>> = self.proj.forward(&x)?.to_dtype(DType::F32)?.to_vec2()?;
        let softmax_top_k = Router::SoftmaxTopK { renormalize: true };
        Ok(logits
            .iter()
            .map(|l| {
                softmax_top_k
                    .route(l, self.k)
                    .into_iter()
                    .map(|(e, w)| (e, w * self.per_expert[e]))
                    .collect()
            })
            .collect())
    }
}

/// Each token's experts and weights, chosen on the host by `router` (keeping `k`) from its
/// row of router logits `(T, E)`.
pub fn routes(logits: &Tensor, router: Router, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    let logits: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    Ok(logits.iter().map(|l| router.route(l, k)).collect())
}

/// The routed sum `Σ w · expert_e(x)` for every token of `xs` (`(T, hidden)`), `routes[t]`
/// holding token `t`'s experts and weights: each expert with tokens gets its rows gathered
/// (`(n_e, hidden)`), runs once (`expert(e, rows)`), and its rows, scaled by their weights,
/// are added into the output. Experts go in index order, so a token's sum is accumulated in
/// the same order whatever else is in the batch.
pub fn dispatch(
    xs: &Tensor,
    routes: &[Vec<(usize, f32)>],
    n_experts: usize,
    expert: impl Fn(usize, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let device = xs.device();
    let (mut rows, mut weights) = (vec![Vec::new(); n_experts], vec![Vec::new(); n_experts]);
    for (t, route) in routes.iter().enumerate() {
        for &(e, w) in route {
            let (Some(r), Some(ws)) = (rows.get_mut(e), weights.get_mut(e)) else {
                return Err(Error::Internal(format!(
                    "expert {e} routed among {n_experts}"
                )));
            };
            r.push(t as u32);
            ws.push(w);
        }
    }
    if !device.is_cpu() || xs.dtype() != DType::F32 {
        let mut out = xs.zeros_like()?;
        for e in 0..n_experts {
            let rows_e = std::mem::take(&mut rows[e]);
            if rows_e.is_empty() {
                continue;
            }
            let count = rows_e.len();
            let idx = Tensor::from_vec(rows_e, count, device)?;
            let w = Tensor::from_vec(std::mem::take(&mut weights[e]), (count, 1), device)?
                .to_dtype(xs.dtype())?;
            let y = expert(e, &xs.index_select(&idx, 0)?)?.broadcast_mul(&w)?;
            out = out.index_add(&idx, &y, 0)?;
        }
        return Ok(out);
    }
    // On the CPU the weighted rows are added in place into one buffer: `index_add` would copy
    // the whole `(T, hidden)` output once per expert (a prompt's worth per expert, every layer).
    let (tokens, hidden) = xs.dims2()?;
    let mut out = vec![0f32; tokens * hidden];
    for e in 0..n_experts {
        let rows_e = std::mem::take(&mut rows[e]);
        if rows_e.is_empty() {
            continue;
        }
        // A decode step's one row is the input itself.
        let input = match tokens {
            1 => xs.clone(),
            _ => {
                let count = rows_e.len();
                xs.index_select(&Tensor::from_slice(&rows_e, count, device)?, 0)?
            }
        };
        let y = expert(e, &input)?.contiguous()?;
        let mut add = |y: &[f32]| -> Result<()> {
            if y.len() != rows_e.len() * hidden {
                return Err(Error::Internal(format!(
                    "expert {e} gave {} values for {} rows of {hidden}",
                    y.len(),
                    rows_e.len()
                )));
            }
            for ((&t, w), y) in rows_e.iter().zip(&weights[e]).zip(y.chunks_exact(hidden)) {
                let o = &mut out[t as usize * hidden..(t as usize + 1) * hidden];
                // `y · w`, then added: the two roundings of `broadcast_mul` and `index_add`.
                for (o, y) in o.iter_mut().zip(y) {
                    *o += y * w;
                }
            }
            Ok(())
        };
        match host::with_f32(&y, &mut add)? {
            Some(r) => r?,
            None => add(&y.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)?,
        }
    }
    Ok(Tensor::from_vec(out, (tokens, hidden), device)?)
}

/// A shared expert beside the routed ones (Qwen2-MoE, Qwen3-Next, Qwen3.5-MoE): a SwiGLU
/// network every token goes through, scaled per token by `sigmoid(shared_expert_gate · x)`.
#[derive(Clone, Debug)]
pub struct SharedExpert {
    mlp: Mlp,
    gate: Linear,
}

impl SharedExpert {
    /// Loads `shared_expert.{gate,up,down}_proj` of width `ffn` and `shared_expert_gate`
    /// (one row) under `vb` (the block's prefix, e.g. `mlp`).
    pub fn load(vb: &Vb, hidden: usize, ffn: usize) -> Result<Self> {
        Ok(Self {
            mlp: Mlp::load(
                &vb.pp("shared_expert"),
                hidden,
                ffn,
                Activation::Silu,
                false,
            )?,
            gate: Linear::load_f32(&vb.pp("shared_expert_gate"), hidden, 1)?,
        })
    }

    /// The gated shared expert's output for `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::sigmoid(&self.gate.forward(x)?)?;
        Ok(self.mlp.forward(x)?.broadcast_mul(&gate)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;

    fn close(a: &[(usize, f32)], b: &[(usize, f32)]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for ((ea, wa), (eb, wb)) in a.iter().zip(b) {
            assert_eq!(ea, eb, "{a:?} vs {b:?}");
            assert!((wa - wb).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    // Logits (1, 3, 2, 0): exp = (e, e^3, e^2, 1), sum 31.192875; softmax
    // (0.0871443, 0.6439143, 0.2368828, 0.0320586). Top 2: experts 1 and 2.
    const LOGITS: [f32; 4] = [1.0, 3.0, 2.0, 0.0];

    #[test]
    fn softmax_then_top_k_keeps_the_full_softmax_weights() {
        let r = Router::SoftmaxTopK { renormalize: false };
        close(&r.route(&LOGITS, 2), &[(1, 0.643_914_3), (2, 0.236_882_8)]);
    }

    #[test]
    fn softmax_then_top_k_renormalises_when_asked() {
        // 0.6439143 / 0.8807971 = sigmoid(1) = 0.7310586.
        let r = Router::SoftmaxTopK { renormalize: true };
        close(&r.route(&LOGITS, 2), &[(1, 0.731_058_6), (2, 0.268_941_4)]);
        close(&r.route(&LOGITS, 1), &[(1, 1.0)]);
    }

    #[test]
    fn top_k_then_softmax_weighs_only_the_kept_logits() {
        // softmax(3, 2) = (sigmoid(1), 1 - sigmoid(1)).
        close(
            &Router::TopKSoftmax.route(&LOGITS, 2),
            &[(1, 0.731_058_6), (2, 0.268_941_4)],
        );
        // k = 3: softmax(3, 2, 1) = (0.6652410, 0.2447285, 0.0900306).
        close(
            &Router::TopKSoftmax.route(&LOGITS, 3),
            &[(1, 0.665_241), (2, 0.244_728_5), (0, 0.090_030_6)],
        );
    }

    #[test]
    fn ties_go_to_the_lower_expert() {
        let r = Router::TopKSoftmax;
        close(&r.route(&[0.5, 2.0, 2.0, 2.0], 2), &[(1, 0.5), (2, 0.5)]);
    }

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::models::synthetic::Rng::new(seed);
        rng.tensor(shape, 0.0, 1.0).unwrap()
    }

    fn dense(t: &Tensor) -> Linear {
        Linear::from_matmul(QMatMul::Tensor(t.clone()))
    }

    /// One token through every expert, combined with weights computed independently of
    /// `Router::route` (full softmax, sort, renormalise).
    fn naive(x: &Tensor, router: &Tensor, experts: &[[Tensor; 3]], k: usize) -> Vec<f32> {
        let logits: Vec<f32> = x
            .matmul(&router.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let mut ranked: Vec<usize> = (0..logits.len()).collect();
        ranked.sort_by(|a, b| logits[*b].partial_cmp(&logits[*a]).unwrap());
        let kept = &ranked[..k];
        let norm: f32 = kept.iter().map(|&e| exp[e]).sum();
        let mut out = vec![0f32; x.dims()[1]];
        for &e in kept {
            let [g, u, d] = &experts[e];
            let gate = candle_nn::ops::silu(&x.matmul(&g.t().unwrap()).unwrap()).unwrap();
            let up = x.matmul(&u.t().unwrap()).unwrap();
            let y: Vec<f32> = (gate * up)
                .unwrap()
                .matmul(&d.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (o, v) in out.iter_mut().zip(y) {
                *o += exp[e] / norm * v;
            }
        }
        out
    }

    #[test]
    fn block_equals_a_naive_per_token_dense_computation() {
        let (hidden, ffn, n, k, tokens) = (8, 6, 4, 2, 7);
        let router = rand(&[n, hidden], 1);
        let experts: Vec<[Tensor; 3]> = (0..n as u64)
            .map(|e| {
                [
                    rand(&[ffn, hidden], 10 + e),
                    rand(&[ffn, hidden], 20 + e),
                    rand(&[hidden, ffn], 30 + e),
                ]
            })
            .collect();
        let x = rand(&[1, tokens, hidden], 2);
        for r in [
            Router::SoftmaxTopK { renormalize: true },
            Router::TopKSoftmax,
        ] {
            let block = SparseMoe {
                router: dense(&router),
                experts: Experts::new(
                    experts
                        .iter()
                        .map(|[g, u, d]| {
                            Mlp::from_linears(dense(g), dense(u), dense(d), Activation::Silu)
                        })
                        .collect(),
                ),
                cfg: Config {
                    n_experts: n,
                    n_used: k,
                    ffn,
                    router: r,
                    names: QWEN_NAMES,
                },
            };
            let y = block.forward(&x).unwrap();
            assert_eq!(y.dims(), &[1, tokens, hidden]);
            let y: Vec<Vec<f32>> = y.squeeze(0).unwrap().to_vec2().unwrap();
            let mut used = std::collections::HashSet::new();
            for (t, row) in y.iter().enumerate() {
                let xt = x.squeeze(0).unwrap().narrow(0, t, 1).unwrap();
                let want = naive(&xt, &router, &experts, k);
                for (a, b) in row.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "{r:?} token {t}: {a} vs {b}"
                    );
                }
                let l: Vec<f32> = xt
                    .matmul(&router.t().unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                used.extend(r.route(&l, k).into_iter().map(|(e, _)| e));
            }
            // The batch must exercise more than k experts, or grouping is not tested.
            assert!(used.len() > k, "{used:?}");
        }
    }

    #[test]
    fn unroutable_shapes_are_rejected() {
        let cfg = |n_experts, n_used| Config {
            n_experts,
            n_used,
            ffn: 4,
            router: Router::TopKSoftmax,
            names: QWEN_NAMES,
        };
        assert!(cfg(4, 2).validate().is_ok());
        assert!(cfg(4, 5).validate().is_err());
        assert!(cfg(4, 0).validate().is_err());
        assert!(cfg(0, 0).validate().is_err());
    }

    #[test]
    fn scaled_router_norms_scales_and_weighs_each_expert() {
        let (hidden, n, k, eps) = (8, 4, 2, 1e-6);
        let proj = rand(&[n, hidden], 3);
        let scale = rand(&[hidden], 4);
        let x = rand(&[3, hidden], 5);
        let per = vec![0.5f32, 2.0, 1.5, 0.25];
        let router = ScaledRouter {
            norm: RmsNorm::unscaled(hidden, eps, &candle_core::Device::Cpu).unwrap(),
            scale: (scale.clone() * (hidden as f64).powf(-0.5)).unwrap(),
            proj: dense(&proj),
            per_expert: per.clone(),
            k,
        };
        let routes = router.route(&x).unwrap();
        let (xs, scale, proj): (Vec<Vec<f32>>, Vec<f32>, Vec<Vec<f32>>) = (
            x.to_vec2().unwrap(),
            scale.to_vec1().unwrap(),
            proj.to_vec2().unwrap(),
        );
        for (t, row) in xs.iter().enumerate() {
            // transformers' Gemma4TextRouter, step by step.
            let ms = row.iter().map(|v| v * v).sum::<f32>() / hidden as f32;
            let z: Vec<f32> = row
                .iter()
                .zip(&scale)
                .map(|(v, s)| v / (ms + eps as f32).sqrt() * s / (hidden as f32).sqrt())
                .collect();
            let logits: Vec<f32> = proj
                .iter()
                .map(|w| w.iter().zip(&z).map(|(a, b)| a * b).sum())
                .collect();
            let probs = softmax(&logits);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
            let sum: f32 = order[..k].iter().map(|&e| probs[e]).sum();
            let want: Vec<(usize, f32)> = order[..k]
                .iter()
                .map(|&e| (e, probs[e] / sum * per[e]))
                .collect();
            assert_eq!(routes[t].len(), k);
            for ((ea, wa), (eb, wb)) in routes[t].iter().zip(&want) {
                assert_eq!(ea, eb, "token {t}: {:?} vs {want:?}", routes[t]);
                assert!(
                    (wa - wb).abs() < 1e-5,
                    "token {t}: {:?} vs {want:?}",
                    routes[t]
                );
            }
        }
    }
}
