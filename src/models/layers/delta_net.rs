//! Gated DeltaNet, the linear-attention mixer of Qwen3.5 and Qwen3-Next: input projections,
//! a short causal depthwise convolution (with its last `kernel - 1` inputs kept as state),
//! SiLU, L2-normed queries and keys, and the gated delta rule — a per-head `(d_k, d_v)` state
//! decayed by `exp(g)`, `g = -exp(A_log) · softplus(a + dt_bias)`, and corrected towards each
//! value with rate `β = sigmoid(b)` — followed by an RMSNorm gated by `SiLU(z)` and the output
//! projection.
//!
//! A prompt runs the chunked form of the delta rule (chunks of [`CHUNK`] positions: within a
//! chunk a triangular solve replaces the token loop, as transformers' `chunk_gated_delta_rule`
//! does); single tokens run the recurrent form. The two are the same function in exact
//! arithmetic, and a test holds them to that. The state lives in the engine's cache as
//! [`LayerKind::Recurrent`]: the convolution's last inputs `(kernel - 1, conv_dim)` and the
//! delta-rule state `(v_heads, d_k, d_v)`.
//!
//! Qwen3-Next stores the projections fused per key head (`in_proj_qkvz`, `in_proj_ba`); they
//! are split into the same layout after the product.
//!
//! Key heads may be fewer than value heads. Hugging Face weights group the value heads by
//! key head (value head `h` reads key head `h / (v_heads / k_heads)`); llama.cpp's converter
//! reorders them tiled (`h % k_heads`), which [`Config::v_heads_tiled`] declares.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::norm::RmsNorm;
use crate::engine::cache::{Cache, LayerKind};
use crate::formats::weights::{Vb, WeightFormat};
use crate::kernels::cpu::pool::Pool;
use crate::{Error, Result};

/// Positions per chunk of the chunked delta rule (transformers' default).
pub const CHUNK: usize = 64;

/// Shape and options of one Gated DeltaNet layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Model width.
    pub hidden: usize,
    /// Query/key heads.
    pub k_heads: usize,
    /// Value heads (a multiple of `k_heads`).
    pub v_heads: usize,
    /// Width of a query/key head.
    pub k_dim: usize,
    /// Width of a value head.
    pub v_dim: usize,
    /// Length of the causal convolution.
    pub kernel: usize,
    /// Epsilon of the gated output RMSNorm.
    pub eps: f64,
    /// Value heads are tiled over key heads (llama.cpp's order) rather than grouped.
    pub v_heads_tiled: bool,
}

impl Config {
    /// Channels of the convolution: queries, keys and values.
    pub fn conv_dim(&self) -> usize {
        2 * self.k_heads * self.k_dim + self.v_heads * self.v_dim
    }

    /// What the layer keeps in the cache: the convolution's last inputs and the state.
    pub fn cache_kind(&self) -> LayerKind {
        LayerKind::Recurrent(vec![
            vec![self.kernel.saturating_sub(1), self.conv_dim()],
            vec![self.v_heads, self.k_dim, self.v_dim],
        ])
    }

    /// Rejects shapes the layer cannot run.
    pub fn validate(&self) -> Result<()> {
        let ok = self.k_heads > 0
            && self.v_heads > 0
            && self.v_heads.is_multiple_of(self.k_heads)
            && self.k_dim > 0
            && self.v_dim > 0
            && self.kernel > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::UnsupportedConfig(format!(
                "linear attention: {} key heads of width {}, {} value heads of width {}, \
                 convolution of {}; supported: value heads a non-zero multiple of key heads, \
                 non-zero widths",
                self.k_heads, self.k_dim, self.v_heads, self.v_dim, self.kernel
            )))
        }
    }
}

/// One Gated DeltaNet layer's weights.
#[derive(Clone, Debug)]
pub struct GatedDeltaNet {
    qkvz: InProj,
    ba: RateProj,
    /// Convolution taps, `(kernel, conv_dim)`.
    conv: Vec<f32>,
    /// `-exp(A_log)` per value head.
    a: Vec<f32>,
    dt_bias: Vec<f32>,
    norm: RmsNorm,
    out: Linear,
    cfg: Config,
}

impl GatedDeltaNet {
    /// Loads `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`, `conv1d`, `A_log`,
    /// `dt_bias`, `norm` and `out_proj` under `vb`. A GGUF holds `-exp(A_log)` itself (the
    /// converter's `ssm_a`) and the convolution without its middle axis.
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let (h, c) = (cfg.hidden, cfg.conv_dim());
        let value = cfg.v_heads * cfg.v_dim;
        let gguf = vb.weights().format() == WeightFormat::Gguf;
        let conv = match gguf {
            true => vb.tensor("conv1d.weight", &[c, cfg.kernel])?,
            false => vb
                .tensor("conv1d.weight", &[c, 1, cfg.kernel])?
                .squeeze(1)?,
        };
        let a_log = vb.tensor("A_log", &[cfg.v_heads])?;
        let a = match gguf {
            true => a_log,
            false => a_log.exp()?.neg()?,
        };
        Ok(Self {
            qkvz: match vb.contains("in_proj_qkvz.weight") {
                true => {
                    InProj::PerKeyHead(Linear::load(&vb.pp("in_proj_qkvz"), h, c + value, false)?)
                }
                false => InProj::Separate {
                    qkv: Linear::load(&vb.pp("in_proj_qkv"), h, c, false)?,
                    z: Linear::load(&vb.pp("in_proj_z"), h, value, false)?,
                },
            },
            // Rates and decays of the state: kept f32 (a rounding error here compounds over
            // every later position).
            ba: match vb.contains("in_proj_ba.weight") {
                true => RateProj::PerKeyHead(Linear::load_f32(
                    &vb.pp("in_proj_ba"),
                    h,
                    2 * cfg.v_heads,
                )?),
                false => RateProj::Separate {
                    b: Linear::load_f32(&vb.pp("in_proj_b"), h, cfg.v_heads)?,
                    a: Linear::load_f32(&vb.pp("in_proj_a"), h, cfg.v_heads)?,
                },
            },
            conv: conv.t()?.flatten_all()?.to_vec1()?,
            a: a.to_vec1()?,
            dt_bias: vb.tensor("dt_bias", &[cfg.v_heads])?.to_vec1()?,
            norm: RmsNorm::load(&vb.pp("norm"), cfg.v_dim, cfg.eps, false)?,
            out: Linear::load(&vb.pp("out_proj"), value, h, false)?,
            cfg: cfg.clone(),
        })
    }

    /// The layer's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Mixes `x` (`(1, L, hidden)`) at the cache position, updating layer `layer`'s state.
    pub fn forward(&self, x: &Tensor, cache: &mut Cache, layer: usize) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, l, _) = x.dims3()?;
        if b != 1 {
            return Err(Error::Internal(format!(
                "linear attention runs one sequence, got a batch of {b}"
            )));
        }
        let (dev, dtype) = (x.device().clone(), x.dtype());
        let host = |t: Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        // 1. Projections: (1, L, hidden) -> qkv (L, conv_dim), z (L, V·dv), b and a (L, V).
        let (mixed, z) = match &self.qkvz {
            InProj::Separate { qkv, z } => (host(qkv.forward(x)?)?, z.forward(x)?),
            InProj::PerKeyHead(qkvz) => {
                let (mixed, z) = split_per_key_head(&host(qkvz.forward(x)?)?, c);
                let z = Tensor::from_vec(z, (1, l, c.v_heads * c.v_dim), &dev)?;
                (mixed, z.to_dtype(dtype)?)
            }
        };
        let (b_raw, a_raw) = match &self.ba {
            RateProj::Separate { b, a } => (host(b.forward(x)?)?, host(a.forward(x)?)?),
            RateProj::PerKeyHead(ba) => split_rates(&host(ba.forward(x)?)?, c),
        };
        let beta: Vec<f32> = b_raw
            .into_iter()
            .map(|v| 1.0 / (1.0 + (-v).exp()))
            .collect();
        let g: Vec<f32> = a_raw
            .chunks(c.v_heads)
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(h, &v)| self.a[h] * softplus(v + self.dt_bias[h]))
                    .collect::<Vec<_>>()
            })
            .collect();
        let state = cache.state(layer, &dev)?;
        // 2. Causal convolution over the kept inputs and these, then SiLU.
        let kept = host(state[0].clone())?;
        let (conv, kept) = causal_conv_silu(&kept, &mixed, &self.conv, c.kernel, c.conv_dim());
        state[0] = Tensor::from_vec(kept, state[0].shape(), &dev)?;
        // 3. Split q, k, v; L2-norm q and k, scale q, and give each value head its key head.
        let (q, k, v) = split_heads(&conv, c, l);
        // 4. The delta rule from the cached state: (L, V, dv).
        let mut s = host(state[1].clone())?;
        let inputs = Inputs {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            beta: &beta,
            heads: c.v_heads,
            dk: c.k_dim,
            dv: c.v_dim,
        };
        let y = match l {
            1 => recurrent(&inputs, &mut s),
            _ => chunked(&inputs, &mut s, CHUNK),
        };
        state[1] = Tensor::from_vec(s, state[1].shape(), &dev)?;
        // 5. Gated RMSNorm per value head, then the output projection.
        let y = Tensor::from_vec(y, (1, l, c.v_heads, c.v_dim), &dev)?.to_dtype(dtype)?;
        let z = z.reshape((1, l, c.v_heads, c.v_dim))?;
        let y = (self.norm.forward(&y)? * candle_nn::ops::silu(&z)?)?;
        self.out.forward(&y.reshape((1, l, c.v_heads * c.v_dim))?)
    }
}

/// The query/key/value/gate projections.
#[derive(Clone, Debug)]
enum InProj {
    /// `in_proj_qkv` (rows q | k | v, all heads each) and `in_proj_z` (Qwen3.5; Qwen3-Next's
    /// GGUF, which llama.cpp's converter splits so).
    Separate { qkv: Linear, z: Linear },
    /// `in_proj_qkvz` (Qwen3-Next): per key head, its query, its key, then the values and the
    /// gates of the value heads it serves.
    PerKeyHead(Linear),
}

/// The rate (`b`) and decay (`a`) projections.
#[derive(Clone, Debug)]
enum RateProj {
    /// `in_proj_b` and `in_proj_a`.
    Separate { b: Linear, a: Linear },
    /// `in_proj_ba` (Qwen3-Next): per key head, the `b` then the `a` of its value heads.
    PerKeyHead(Linear),
}

/// Qwen3-Next's fused `(L, k_heads · (2·dk + 2·r·dv))` projection as the convolution's input
/// `(L, conv_dim)` (q | k | v of all heads) and the gates `(L, V·dv)`; `r` value heads per key
/// head, grouped.
fn split_per_key_head(y: &[f32], c: &Config) -> (Vec<f32>, Vec<f32>) {
    let (dk, r) = (c.k_dim, c.v_heads / c.k_heads);
    let rv = r * c.v_dim;
    let per_head = 2 * dk + 2 * rv;
    let l = y.len() / (c.k_heads * per_head).max(1);
    let (mut mixed, mut z) = (
        Vec::with_capacity(l * c.conv_dim()),
        Vec::with_capacity(l * c.v_heads * c.v_dim),
    );
    for row in y.chunks(c.k_heads * per_head) {
        let head = |g: usize| &row[g * per_head..(g + 1) * per_head];
        for (from, len) in [(0, dk), (dk, dk), (2 * dk, rv)] {
            for g in 0..c.k_heads {
                mixed.extend_from_slice(&head(g)[from..from + len]);
            }
        }
        for g in 0..c.k_heads {
            z.extend_from_slice(&head(g)[2 * dk + rv..]);
        }
    }
    (mixed, z)
}

/// Qwen3-Next's fused `(L, k_heads · 2r)` rate projection as `b` and `a`, each `(L, V)`.
fn split_rates(y: &[f32], c: &Config) -> (Vec<f32>, Vec<f32>) {
    let r = c.v_heads / c.k_heads;
    let (mut b, mut a) = (
        Vec::with_capacity(y.len() / 2),
        Vec::with_capacity(y.len() / 2),
    );
    for head in y.chunks(2 * r) {
        b.extend_from_slice(&head[..r]);
        a.extend_from_slice(&head[r..]);
    }
    (b, a)
}

fn softplus(x: f32) -> f32 {
    // torch's softplus: linear above a threshold of 20.
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The depthwise causal convolution of `x` (`(L, channels)`) after `kept` (the previous
/// `kernel - 1` inputs), with `taps` `(kernel, channels)`, followed by SiLU. Returns the output
/// `(L, channels)` and the last `kernel - 1` inputs for the next pass.
fn causal_conv_silu(
    kept: &[f32],
    x: &[f32],
    taps: &[f32],
    kernel: usize,
    channels: usize,
) -> (Vec<f32>, Vec<f32>) {
    let all: Vec<f32> = kept.iter().chain(x).copied().collect();
    let l = x.len() / channels;
    let mut out = vec![0f32; l * channels];
    for (t, row) in out.chunks_mut(channels).enumerate() {
        for j in 0..kernel {
            let src = &all[(t + j) * channels..(t + j + 1) * channels];
            let w = &taps[j * channels..(j + 1) * channels];
            for ((o, s), w) in row.iter_mut().zip(src).zip(w) {
                *o += s * w;
            }
        }
        for o in row.iter_mut() {
            *o /= 1.0 + (-*o).exp();
        }
    }
    let keep = kernel.saturating_sub(1) * channels;
    (out, all[all.len() - keep..].to_vec())
}

/// Queries, keys (each `(L, V, dk)`: L2-normed, queries scaled by `dk^-1/2`, one per value
/// head) and values (`(L, V, dv)`) from the convolution's output `(L, conv_dim)`.
fn split_heads(conv: &[f32], c: &Config, l: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (kd, vd) = (c.k_heads * c.k_dim, c.v_heads * c.v_dim);
    let per_k = c.v_heads / c.k_heads;
    let scale = 1.0 / (c.k_dim as f32).sqrt();
    let (mut q, mut k) = (
        Vec::with_capacity(l * c.v_heads * c.k_dim),
        Vec::with_capacity(l * c.v_heads * c.k_dim),
    );
    let mut v = Vec::with_capacity(l * vd);
    for row in conv.chunks(c.conv_dim()) {
        let (rq, rk, rv) = (&row[..kd], &row[kd..2 * kd], &row[2 * kd..]);
        for h in 0..c.v_heads {
            let kh = match c.v_heads_tiled {
                true => h % c.k_heads,
                false => h / per_k,
            };
            let span = kh * c.k_dim..(kh + 1) * c.k_dim;
            q.extend(l2_normed(&rq[span.clone()], scale));
            k.extend(l2_normed(&rk[span], 1.0));
        }
        v.extend_from_slice(rv);
    }
    (q, k, v)
}

/// `x / sqrt(Σx² + 1e-6) · scale` (transformers' `l2norm`, FLA's epsilon).
fn l2_normed(x: &[f32], scale: f32) -> impl Iterator<Item = f32> + '_ {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() + 1e-6).sqrt();
    x.iter().map(move |v| v * inv * scale)
}

/// The delta rule's inputs for `L` positions, row-major: `q`, `k` `(L, heads, dk)`, `v`
/// `(L, heads, dv)`, log-decay `g` and rate `beta` `(L, heads)`.
pub struct Inputs<'a> {
    /// Queries (normed and scaled).
    pub q: &'a [f32],
    /// Keys (normed).
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// Log of each position's state decay (≤ 0).
    pub g: &'a [f32],
    /// Each position's update rate.
    pub beta: &'a [f32],
    /// Heads.
    pub heads: usize,
    /// Key width.
    pub dk: usize,
    /// Value width.
    pub dv: usize,
}

impl Inputs<'_> {
    fn len(&self) -> usize {
        self.g.len() / self.heads
    }
}

/// Runs `per_head(h, state_h, out_h)` for every head, in parallel, where `state_h` is head
/// `h`'s `(dk, dv)` state and `out_h` its `(L, dv)` outputs; returns the outputs as
/// `(L, heads, dv)`.
fn each_head(
    inp: &Inputs,
    state: &mut [f32],
    per_head: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let (l, hn, dv) = (inp.len(), inp.heads, inp.dv);
    let per_state = inp.dk * dv;
    let mut outs = vec![0f32; hn * l * dv]; // (heads, L, dv)
    let (sp, op) = (state.as_mut_ptr() as usize, outs.as_mut_ptr() as usize);
    Pool::global().run(hn, |heads| {
        for h in heads {
            // SAFETY: each head's state and output ranges are disjoint and written by this
            // unit alone; both buffers outlive `run`.
            let (s, o) = unsafe {
                (
                    std::slice::from_raw_parts_mut((sp as *mut f32).add(h * per_state), per_state),
                    std::slice::from_raw_parts_mut((op as *mut f32).add(h * l * dv), l * dv),
                )
            };
            per_head(h, s, o);
        }
    });
    let mut y = vec![0f32; l * hn * dv];
    for h in 0..hn {
        for t in 0..l {
            y[(t * hn + h) * dv..(t * hn + h + 1) * dv]
                .copy_from_slice(&outs[(h * l + t) * dv..(h * l + t + 1) * dv]);
        }
    }
    y
}

/// The recurrent delta rule, one position after another, from and into `state`
/// `(heads, dk, dv)`: returns the outputs `(L, heads, dv)`.
pub fn recurrent(inp: &Inputs, state: &mut [f32]) -> Vec<f32> {
    let (hn, dk, dv) = (inp.heads, inp.dk, inp.dv);
    each_head(inp, state, |h, s, out| {
        let mut delta = vec![0f32; dv];
        for (t, o) in out.chunks_mut(dv).enumerate() {
            let at = t * hn + h;
            let (q, k) = (
                &inp.q[at * dk..(at + 1) * dk],
                &inp.k[at * dk..(at + 1) * dk],
            );
            let v = &inp.v[at * dv..(at + 1) * dv];
            let (decay, beta) = (inp.g[at].exp(), inp.beta[at]);
            s.iter_mut().for_each(|x| *x *= decay);
            // delta = (v - Sᵀk)·β; S += k ⊗ delta; o = Sᵀq.
            delta.copy_from_slice(v);
            for (i, ki) in k.iter().enumerate() {
                for (d, sij) in delta.iter_mut().zip(&s[i * dv..(i + 1) * dv]) {
                    *d -= sij * ki;
                }
            }
            delta.iter_mut().for_each(|d| *d *= beta);
            for (i, (ki, qi)) in k.iter().zip(q).enumerate() {
                for ((sij, d), oj) in s[i * dv..(i + 1) * dv].iter_mut().zip(&delta).zip(&mut *o) {
                    *sij += ki * d;
                    *oj += *sij * qi;
                }
            }
        }
    })
}

/// The chunked delta rule (transformers' `chunk_gated_delta_rule`), chunks of `chunk`
/// positions, from and into `state` `(heads, dk, dv)`: returns the outputs `(L, heads, dv)`.
pub fn chunked(inp: &Inputs, state: &mut [f32], chunk: usize) -> Vec<f32> {
    let (hn, dk, dv, l) = (inp.heads, inp.dk, inp.dv, inp.len());
    each_head(inp, state, |h, s, out| {
        let mut t0 = 0;
        while t0 < l {
            let n = chunk.min(l - t0);
            let row = |x: &[f32], t: usize, d: usize| -> Vec<f32> {
                let at = (t0 + t) * hn + h;
                x[at * d..(at + 1) * d].to_vec()
            };
            let q: Vec<Vec<f32>> = (0..n).map(|t| row(inp.q, t, dk)).collect();
            let k: Vec<Vec<f32>> = (0..n).map(|t| row(inp.k, t, dk)).collect();
            let beta: Vec<f32> = (0..n).map(|t| inp.beta[(t0 + t) * hn + h]).collect();
            // Cumulative log-decay within the chunk.
            let mut gc = Vec::with_capacity(n);
            let mut acc = 0f32;
            for t in 0..n {
                acc += inp.g[(t0 + t) * hn + h];
                gc.push(acc);
            }
            // 1. Solve (I + strictly_lower(β k kᵀ ∘ decay)) [U W] = [βv  βk·exp(gc)] by
            //    forward substitution.
            let mut a = vec![0f32; n * n];
            for i in 0..n {
                for j in 0..i {
                    a[i * n + j] = beta[i] * dot(&k[i], &k[j]) * (gc[i] - gc[j]).exp();
                }
            }
            let mut u: Vec<Vec<f32>> = Vec::with_capacity(n);
            let mut w: Vec<Vec<f32>> = Vec::with_capacity(n);
            for i in 0..n {
                let mut ui: Vec<f32> = row(inp.v, i, dv).iter().map(|x| x * beta[i]).collect();
                let e = beta[i] * gc[i].exp();
                let mut wi: Vec<f32> = k[i].iter().map(|x| x * e).collect();
                for j in 0..i {
                    let aij = a[i * n + j];
                    axpy(&mut ui, -aij, &u[j]);
                    axpy(&mut wi, -aij, &w[j]);
                }
                u.push(ui);
                w.push(wi);
            }
            // 2. New values: what the state does not already predict, v_new = U − W S.
            let v_new: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    let mut x = u[i].clone();
                    for (wi, srow) in w[i].iter().zip(s.chunks(dv)) {
                        axpy(&mut x, -wi, srow);
                    }
                    x
                })
                .collect();
            // 3. Outputs: the decayed read of the state plus attention within the chunk.
            for i in 0..n {
                let o = &mut out[(t0 + i) * dv..(t0 + i + 1) * dv];
                let e = gc[i].exp();
                for (qi, srow) in q[i].iter().zip(s.chunks(dv)) {
                    axpy(o, qi * e, srow);
                }
                for j in 0..=i {
                    let aij = dot(&q[i], &k[j]) * (gc[i] - gc[j]).exp();
                    axpy(o, aij, &v_new[j]);
                }
            }
            // 4. State at the chunk's end: decayed, plus each position's decayed update.
            let last = gc[n - 1];
            s.iter_mut().for_each(|x| *x *= last.exp());
            for j in 0..n {
                let e = (last - gc[j]).exp();
                for (kj, srow) in k[j].iter().zip(s.chunks_mut(dv)) {
                    axpy(srow, kj * e, &v_new[j]);
                }
            }
            t0 += n;
        }
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += a · x`.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::kernels::cpu::gemv::test_values(n, seed)
    }

    fn normed(x: Vec<f32>, d: usize) -> Vec<f32> {
        x.chunks(d)
            .flat_map(|r| l2_normed(r, 1.0).collect::<Vec<_>>())
            .collect()
    }

    /// Random inputs for `l` positions of 3 heads (dk 8, dv 5).
    fn inputs(l: usize) -> [Vec<f32>; 5] {
        let (h, dk, dv) = (3, 8, 5);
        let q = normed(values(l * h * dk, 1), dk);
        let k = normed(values(l * h * dk, 2), dk);
        let v = values(l * h * dv, 3);
        let g = values(l * h, 4)
            .iter()
            .map(|x| -0.05 - 0.1 * x.abs())
            .collect();
        let beta = values(l * h, 5)
            .iter()
            .map(|x| 0.5 + 0.4 * x.tanh())
            .collect();
        [q, k, v, g, beta]
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn chunked_delta_rule_equals_the_recurrent_form_across_chunks() {
        let l = 150; // two full chunks of 64 and a partial one
        let [q, k, v, g, beta] = inputs(l);
        let inp = Inputs {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            beta: &beta,
            heads: 3,
            dk: 8,
            dv: 5,
        };
        let start = values(3 * 8 * 5, 6);
        let (mut s1, mut s2) = (start.clone(), start);
        let a = recurrent(&inp, &mut s1);
        let b = chunked(&inp, &mut s2, CHUNK);
        close(&b, &a, "outputs");
        close(&s2, &s1, "final state");
        // Chunks of any length agree too (here 7: many boundaries).
        let mut s3 = vec![0f32; s1.len()];
        let mut s4 = vec![0f32; s1.len()];
        close(
            &chunked(&inp, &mut s3, 7),
            &recurrent(&inp, &mut s4),
            "chunks of 7",
        );
    }

    #[test]
    fn the_delta_rule_writes_the_value_when_beta_is_one() {
        // With β = 1, no decay and a unit key, reading with the same key returns the value.
        let (k, v) = (vec![1.0, 0.0], vec![3.0, -2.0]);
        let inp = Inputs {
            q: &k,
            k: &k,
            v: &v,
            g: &[0.0],
            beta: &[1.0],
            heads: 1,
            dk: 2,
            dv: 2,
        };
        let mut s = vec![5.0, 5.0, 0.0, 0.0];
        assert_eq!(recurrent(&inp, &mut s), v);
        assert_eq!(s, [3.0, -2.0, 0.0, 0.0]);
    }

    #[test]
    fn convolution_with_kept_inputs_equals_convolution_of_the_whole() {
        let (ch, kernel) = (3, 4);
        let taps = values(kernel * ch, 7);
        let x = values(10 * ch, 8);
        let zeros = vec![0f32; (kernel - 1) * ch];
        let (whole, _) = causal_conv_silu(&zeros, &x, &taps, kernel, ch);
        let (first, kept) = causal_conv_silu(&zeros, &x[..6 * ch], &taps, kernel, ch);
        let (second, _) = causal_conv_silu(&kept, &x[6 * ch..], &taps, kernel, ch);
        let parts: Vec<f32> = first.into_iter().chain(second).collect();
        close(&parts, &whole, "split convolution");
        // Position 0 sees only itself: silu(x0 · last tap).
        let y0 = x[0] * taps[(kernel - 1) * ch];
        assert!((whole[0] - y0 / (1.0 + (-y0).exp())).abs() < 1e-6);
    }
}
