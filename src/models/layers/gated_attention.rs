//! Attention with an output gate (Qwen3.5, Qwen3-Next): the query projection is twice as
//! wide, each head's rows holding its query and then its gate; the attention output is
//! multiplied by `sigmoid(gate)` before the output projection. Per-head Q/K RMSNorm before
//! RoPE (which may rotate only part of each head); the keys, values and scores are those of
//! [`super::attention`].

use candle_core::Tensor;

use super::attention::{self, attend_cached};
use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::{Rope, Tables};
use crate::engine::cache::{Cache, LayerKind};
use crate::formats::weights::Vb;
use crate::Result;

/// One gated attention layer's weights.
#[derive(Clone, Debug)]
pub struct GatedAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    cfg: attention::Config,
}

impl GatedAttention {
    /// Loads `q_proj` (`2 · heads · head_dim` rows), `k_proj`, `v_proj`, `o_proj`, `q_norm`
    /// and `k_norm` under `vb`. `cfg.qk_norm` gives the norms' epsilon and `1 + w` form;
    /// biases follow `cfg.qkv_bias` and `cfg.o_bias`.
    pub fn load(vb: &Vb, cfg: &attention::Config) -> Result<Self> {
        let (h, d) = (cfg.hidden, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.n_heads * d, cfg.n_kv_heads * d);
        let (eps, offset) = cfg.qk_norm.unwrap_or((1e-6, false));
        Ok(Self {
            q: Linear::load(&vb.pp("q_proj"), h, 2 * q_dim, cfg.qkv_bias)?,
            k: Linear::load(&vb.pp("k_proj"), h, kv_dim, cfg.qkv_bias)?,
            v: Linear::load(&vb.pp("v_proj"), h, kv_dim, cfg.qkv_bias)?,
            o: Linear::load(&vb.pp("o_proj"), q_dim, h, cfg.o_bias)?,
            q_norm: RmsNorm::load(&vb.pp("q_norm"), d, eps, offset)?,
            k_norm: RmsNorm::load(&vb.pp("k_norm"), d, eps, offset)?,
            cfg: cfg.clone(),
        })
    }

    /// What this layer keeps in the cache.
    pub fn cache_kind(&self) -> LayerKind {
        match self.cfg.sliding_window {
            Some(w) => LayerKind::Window(w),
            None => LayerKind::Full,
        }
    }

    /// Attends `x` (`(1, L, hidden)`) at the cache position, storing its keys and values in
    /// layer `layer` of `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, l, _) = x.dims3()?;
        let d = c.head_dim;
        // 1. Project; each query head's rows are [query | gate]: (B, L, H, 2D) -> 2 × (B, L, H, D).
        let qg = self.q.forward(x)?.reshape((b, l, c.n_heads, 2 * d))?;
        let q = qg.narrow(3, 0, d)?;
        let gate = qg.narrow(3, d, d)?.reshape((b, l, c.n_heads * d))?;
        let k = self.k.forward(x)?.reshape((b, l, c.n_kv_heads, d))?;
        let v = self.v.forward(x)?.reshape((b, l, c.n_kv_heads, d))?;
        // 2. Per-head norms, (B, L, H, D) -> (B, H, L, D), RoPE.
        let q = self.q_norm.forward(&q)?.transpose(1, 2)?;
        let k = self.k_norm.forward(&k)?.transpose(1, 2)?;
        let q = rope.0.apply(&q, rope.1)?;
        let k = rope.0.apply(&k, rope.1)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        // 3. Cache and attend: (B, H, L, D) -> (B, L, H*D).
        let y = attend_cached(c, &q, &k, &v, cache, layer)?;
        let y = y.transpose(1, 2)?.reshape((b, l, c.n_heads * d))?;
        // 4. Gate, then the output projection.
        let y = (y * candle_nn::ops::sigmoid(&gate)?)?;
        self.o.forward(&y)
    }
}
