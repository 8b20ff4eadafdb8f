//! Multi-head latent attention (DeepSeek-V2/V3): keys and values come from one compressed
//! latent per position, and the cache holds only that latent (`kv_lora_rank` values, RMS-normed)
//! and the shared rotary key (`qk_rope_head_dim` values), not per-head keys and values.
//!
//! The query is `q_proj(x)` or, with `q_lora_rank`, `q_b_proj(norm(q_a_proj(x)))`; each head is
//! split into a part without position (`qk_nope_head_dim`) and a rotary part. transformers
//! expands the latent into per-head keys `[W_UK·c, k_rope]` and values `W_UV·c`; we use the
//! *absorbed* form for every pass, prompts included: `W_UK` is folded into the query
//! (`q_nope·W_UK` is a `kv_lora_rank`-wide query against the latent itself), attention runs as
//! one key/value head of width `kv_lora_rank + rope` over the cached latents, and `W_UV` is
//! applied to the attended latent. It is the same sum in another order; one path serves
//! decoding and prompts alike (so a prompt after cached turns needs no re-expansion of the
//! cache), at the cost of wider score dot products on long prompts.
//!
//! `kv_b_proj` (safetensors, `(heads × (nope + v), kv_lora)`) is split into `W_UK` and `W_UV`
//! at load; llama.cpp's GGUF stores the two already split (`attn_k_b`, transposed, and
//! `attn_v_b`). Quantized GGUF halves stay as stored and run through the quantized kernels per
//! head ([`PerHead`]), as llama.cpp runs them; otherwise both are kept as f32 per-head
//! matrices.

use candle_core::Tensor;

use super::attention::causal_mask;
use super::linear::Linear;
use super::norm::RmsNorm;
use super::per_head::PerHead;
use super::rope::{Rope, Tables};
use crate::engine::cache::{Cache, LayerKind};
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// Shape of one MLA layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Model width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Rank of the query compression (`q_lora_rank`); `None`: a plain query projection.
    pub q_lora_rank: Option<usize>,
    /// Width of the key/value latent (`kv_lora_rank`).
    pub kv_lora_rank: usize,
    /// Per-head query/key width without position (`qk_nope_head_dim`).
    pub qk_nope: usize,
    /// Per-head rotary width, shared by all heads' keys (`qk_rope_head_dim`).
    pub qk_rope: usize,
    /// Per-head value width (`v_head_dim`).
    pub v_head: usize,
    /// Epsilon of the latent RMSNorms.
    pub eps: f64,
    /// Multiplier of `q·k` (`1/sqrt(nope + rope)`, times YaRN's mscale²).
    pub scale: f64,
}

impl Config {
    /// Cache width per position and layer: the latent and the rotary key.
    pub fn cache_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope
    }
}

/// Queries per block when a prompt is attended in blocks (bounds the score matrix).
const QUERY_BLOCK: usize = 128;

#[derive(Clone, Debug)]
enum Query {
    Plain(Linear),
    LowRank { a: Linear, norm: RmsNorm, b: Linear },
}

/// One MLA layer's weights.
#[derive(Clone, Debug)]
pub struct Mla {
    q: Query,
    kv_a: Linear,
    kv_norm: RmsNorm,
    /// `W_UK` per head, nope → kv_lora: `q_nope · W_UK` is the absorbed query.
    w_uk: PerHead,
    /// `W_UV` per head, kv_lora → v.
    w_uv: PerHead,
    o: Linear,
    cfg: Config,
}

impl Mla {
    /// Loads the layer under `vb` (the layer's `self_attn`).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let c = cfg;
        let (h, qk) = (c.n_heads, c.qk_nope + c.qk_rope);
        let q = match c.q_lora_rank {
            None => Query::Plain(Linear::load(&vb.pp("q_proj"), c.hidden, h * qk, false)?),
            Some(r) => Query::LowRank {
                a: Linear::load(&vb.pp("q_a_proj"), c.hidden, r, false)?,
                norm: RmsNorm::load(&vb.pp("q_a_layernorm"), r, c.eps, false)?,
                b: Linear::load(&vb.pp("q_b_proj"), r, h * qk, false)?,
            },
        };
        let (w_uk, w_uv) = match vb.contains("kv_b_proj.weight") {
            true => {
                let kv_b = vb
                    .pp("kv_b_proj")
                    .tensor("weight", &[h * (c.qk_nope + c.v_head), c.kv_lora_rank])?;
                let kv_b = kv_b.reshape((h, c.qk_nope + c.v_head, c.kv_lora_rank))?;
                dense_halves(
                    kv_b.narrow(1, 0, c.qk_nope)?.contiguous()?,
                    kv_b.narrow(1, c.qk_nope, c.v_head)?,
                )?
            }
            false => Self::load_split(vb, c)?,
        };
        Ok(Self {
            q,
            kv_a: Linear::load(
                &vb.pp("kv_a_proj_with_mqa"),
                c.hidden,
                c.cache_width(),
                false,
            )?,
            kv_norm: RmsNorm::load(&vb.pp("kv_a_layernorm"), c.kv_lora_rank, c.eps, false)?,
            w_uk,
            w_uv,
            o: Linear::load(&vb.pp("o_proj"), h * c.v_head, c.hidden, false)?,
            cfg: *cfg,
        })
    }

    /// `W_UK` and `W_UV` from llama.cpp's split `attn_k_b` (`(heads, kv_lora, nope)`) and
    /// `attn_v_b` (`(heads, v, kv_lora)`): each head's matrix as stored when the kernels read
    /// its type on this device (decided from the header, before either tensor is taken),
    /// else dense.
    fn load_split(vb: &Vb, c: &Config) -> Result<(PerHead, PerHead)> {
        let (h, r) = (c.n_heads, c.kv_lora_rank);
        let (k_b, v_b) = (vb.pp("k_b_proj"), vb.pp("v_b_proj"));
        // A head's rows must be whole blocks of its type (a K-quant head of 128 values is not).
        let per_head = |part: &Vb, width: usize| {
            part.stored_quant("weight")
                .is_some_and(|t| PerHead::reads(t) && width.is_multiple_of(t.block_size()))
        };
        if vb.device().is_cpu()
            && !vb.check_only()
            && per_head(&k_b, c.qk_nope)
            && per_head(&v_b, r)
        {
            let uk = PerHead::quantized(k_b.stacked("weight", h, &[r, c.qk_nope])?)?;
            let uv = PerHead::quantized(v_b.stacked("weight", h, &[c.v_head, r])?)?;
            return match (uk, uv) {
                (Some(uk), Some(uv)) => Ok((uk, uv)),
                _ => Err(Error::Internal(
                    "MLA per-head weights of a type the header promised".into(),
                )),
            };
        }
        dense_halves(
            k_b.tensor("weight", &[h, r, c.qk_nope])?
                .transpose(1, 2)?
                .contiguous()?,
            v_b.tensor("weight", &[h, c.v_head, r])?,
        )
    }

    /// What this layer keeps in the cache: one latent per position.
    pub fn cache_kind(&self) -> LayerKind {
        LayerKind::Latent {
            value_width: self.cfg.kv_lora_rank,
        }
    }

    /// Attends `x` (`(1, L, hidden)`) at the cache position, storing its latents in layer
    /// `layer` of `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        (rope, tables): (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, l, _) = x.dims3()?;
        let (h, r) = (c.n_heads, c.kv_lora_rank);
        // 1. Queries: (1, L, H*(nope+rope)) -> (1, H, L, nope+rope), split and rotated.
        let q = match &self.q {
            Query::Plain(p) => p.forward(x)?,
            Query::LowRank { a, norm, b } => b.forward(&norm.forward(&a.forward(x)?)?)?,
        };
        let q = q
            .reshape((b, l, h, c.qk_nope + c.qk_rope))?
            .transpose(1, 2)?;
        let q_nope = q.narrow(3, 0, c.qk_nope)?.contiguous()?;
        let q_rope = rope.apply(&q.narrow(3, c.qk_nope, c.qk_rope)?, tables)?;
        // 2. The latent: (1, L, kv_lora + rope) -> normed latent | rotated shared key.
        let kv = self.kv_a.forward(x)?;
        let latent = self.kv_norm.forward(&kv.narrow(2, 0, r)?)?;
        let k_rope = kv.narrow(2, r, c.qk_rope)?.reshape((b, 1, l, c.qk_rope))?;
        let k_rope = rope.apply(&k_rope, tables)?;
        let latent = Tensor::cat(&[&latent.reshape((b, 1, l, r))?, &k_rope], 3)?;
        // 3. Cache: every latent held, (1, 1, pos + L, kv_lora + rope); values its first
        //    kv_lora columns.
        let pos = cache.pos();
        let held = cache.append_latent(layer, &latent)?;
        // 4. Absorb W_UK: (H, L, nope) x (H, nope, kv_lora) -> (1, H, L, kv_lora), then the
        //    query against the latent is [absorbed | rotary], (1, H, L, kv_lora + rope).
        let q_abs = self.w_uk.forward(&q_nope.squeeze(0)?)?.unsqueeze(0)?;
        let q = Tensor::cat(&[&q_abs, &q_rope], 3)?;
        // 5. Attention over the latents, in blocks of queries: (1, H, L, kv_lora).
        let mut parts = Vec::with_capacity(l.div_ceil(QUERY_BLOCK));
        let mut i0 = 0;
        while i0 < l {
            let lb = QUERY_BLOCK.min(l - i0);
            let qb = q.narrow(2, i0, lb)?;
            parts.push(self.attend(&qb, (&held.k, &held.v), pos + i0)?);
            i0 += lb;
        }
        let y = Tensor::cat(&parts, 2)?;
        // 6. W_UV per head: (H, L, kv_lora) x (H, kv_lora, v) -> (1, L, H*v), output.
        let y = self
            .w_uv
            .forward(&y.squeeze(0)?)?
            .transpose(0, 1)?
            .reshape((b, l, h * c.v_head))?;
        self.o.forward(&y)
    }

    /// Queries `q` (`(1, H, L, D)` at positions `pos..pos + L`) against the latents `k`
    /// (`(1, 1, ≥ pos + L, D)`) with values `v` (their first `kv_lora` columns):
    /// `(1, H, L, kv_lora)`.
    fn attend(&self, q: &Tensor, (k, v): (&Tensor, &Tensor), pos: usize) -> Result<Tensor> {
        let c = &self.cfg;
        let (_, h, l, d) = q.dims4()?;
        let n_keys = pos + l;
        let (k, v) = (k.narrow(2, 0, n_keys)?, v.narrow(2, 0, n_keys)?);
        // One key head for every query head: (1, 1, H*L, D) x (1, 1, D, keys).
        let q = q.contiguous()?.reshape((1, 1, h * l, d))?;
        let mut scores = (q.matmul(&k.t()?)? * c.scale)?;
        if l > 1 {
            let mask = causal_mask(l, pos, 0, None, q.device())?.to_dtype(scores.dtype())?;
            scores = scores
                .reshape((1, h, l, n_keys))?
                .broadcast_add(&mask)?
                .reshape((1, 1, h * l, n_keys))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let v = v.contiguous()?;
        Ok(probs.matmul(&v)?.reshape((1, h, l, c.kv_lora_rank))?)
    }
}

/// Dense heads from `W_UK` `(heads, nope, kv_lora)` and `W_UV` `(heads, v, kv_lora)`.
fn dense_halves(w_uk: Tensor, w_uv: Tensor) -> Result<(PerHead, PerHead)> {
    Ok((
        PerHead::dense(w_uk)?,
        PerHead::dense(w_uv.transpose(1, 2)?.contiguous()?)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The absorbed form equals transformers' expanded form: per-head keys
    /// `[W_UK·c, k_rope]`, values `W_UV·c`, softmax, on the same numbers.
    #[test]
    fn absorbed_attention_equals_the_expanded_form() {
        let dev = Device::Cpu;
        let (h, nope, rope_d, r, v_d, keys) = (3, 4, 2, 5, 3, 6);
        let vals = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        let t =
            |n: usize, shape: &[usize], seed| Tensor::from_vec(vals(n, seed), shape, &dev).unwrap();
        let w_uk = t(h * nope * r, &[h, nope, r], 1);
        let w_uv = t(h * v_d * r, &[h, v_d, r], 2);
        let lat = t(keys * r, &[keys, r], 3);
        let k_rope = t(keys * rope_d, &[keys, rope_d], 4);
        let q_nope = t(h * nope, &[h, 1, nope], 5);
        let q_rope = t(h * rope_d, &[h, 1, rope_d], 6);
        let scale = 0.7;
        // Expanded: k_h = [lat·W_UK[h]^T, k_rope], v_h = lat·W_UV[h]^T.
        let mut want = Vec::new();
        for i in 0..h {
            let wk = w_uk.get(i).unwrap();
            let k_nope = lat.matmul(&wk.t().unwrap()).unwrap(); // (keys, nope)
            let k = Tensor::cat(&[&k_nope, &k_rope], 1).unwrap();
            let q = Tensor::cat(&[&q_nope.get(i).unwrap(), &q_rope.get(i).unwrap()], 1).unwrap();
            let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
            let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
            let v = lat.matmul(&w_uv.get(i).unwrap().t().unwrap()).unwrap();
            want.extend(
                p.matmul(&v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        // Absorbed: q' = [q_nope·W_UK, q_rope] against [lat, k_rope]; values lat; then W_UV.
        let cfg = Config {
            hidden: 1,
            n_heads: h,
            q_lora_rank: None,
            kv_lora_rank: r,
            qk_nope: nope,
            qk_rope: rope_d,
            v_head: v_d,
            eps: 1e-6,
            scale,
        };
        let q_abs = q_nope.matmul(&w_uk).unwrap(); // (H, 1, r)
        let q = Tensor::cat(&[&q_abs, &q_rope], 2)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let held = Tensor::cat(&[&lat, &k_rope], 1)
            .unwrap()
            .reshape((1, 1, keys, r + rope_d))
            .unwrap();
        let mla = Mla {
            q: Query::Plain(Linear::from_matmul(
                candle_core::quantized::QMatMul::Tensor(
                    Tensor::zeros((1, 1), DType::F32, &dev).unwrap(),
                ),
            )),
            kv_a: Linear::from_matmul(candle_core::quantized::QMatMul::Tensor(
                Tensor::zeros((1, 1), DType::F32, &dev).unwrap(),
            )),
            kv_norm: RmsNorm::unscaled(r, 1e-6, &dev).unwrap(),
            w_uk: PerHead::dense(w_uk.clone()).unwrap(),
            w_uv: PerHead::dense(w_uv.transpose(1, 2).unwrap().contiguous().unwrap()).unwrap(),
            o: Linear::from_matmul(candle_core::quantized::QMatMul::Tensor(
                Tensor::zeros((1, 1), DType::F32, &dev).unwrap(),
            )),
            cfg,
        };
        let y = mla
            .attend(&q, (&held, &held.narrow(3, 0, r).unwrap()), keys - 1)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let y = mla.w_uv.forward(&y).unwrap();
        let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                "{got:?} vs {want:?}"
            );
        }
    }
}
