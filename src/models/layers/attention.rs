//! Grouped-query attention with the options our families need: Q/K/V biases, a fused QKV
//! matrix, per-head Q/K RMSNorm, a sliding window, logit soft-capping, and a custom score scale
//! (in [`Config`]); no RoPE (NoPE layers), Q/K RMSNorm over the whole projection, a value
//! RMSNorm without weights, keys that serve as values, keys and values read from an earlier
//! layer, and learned per-head sinks (in [`Options`], which the many `Config` literals need
//! not name). Keys and values go through the engine's KV cache; query heads are grouped onto
//! their KV head by a reshape, so K/V are never copied per query head.

use candle_core::{DType, Device, Tensor};

use super::linear::Linear;
use super::norm::RmsNorm;
use super::qkv::{self, KvSource, Qkv};
use super::rope::{Rope, Tables};
use crate::engine::cache::{Cache, KvView, LayerKind};
use crate::formats::weights::Vb;
use crate::kernels::cpu::{attn_few, attn_tiles, f16_rows};
use crate::Result;

/// Shape and options of one attention layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Model width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplier applied to `q·k`.
    pub scale: f64,
    /// Q/K/V projections carry biases.
    pub qkv_bias: bool,
    /// The output projection carries a bias.
    pub o_bias: bool,
    /// Q/K/V are one stacked matrix (`qkv_proj`, Phi-3).
    pub fused_qkv: bool,
    /// Per-head RMSNorm on Q and K before RoPE: `(eps, unit_offset)`.
    pub qk_norm: Option<(f64, bool)>,
    /// Each query sees at most this many most recent positions (itself included).
    pub sliding_window: Option<usize>,
    /// `cap * tanh(score / cap)` before the softmax.
    pub softcap: Option<f64>,
    /// The scale multiplies the queries rather than the scores (llama.cpp's Gemma graphs;
    /// it changes how queries round to f16 in the few-queries kernel).
    pub scale_queries: bool,
}

/// Rarer switches of an attention layer, beside its [`Config`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Positions enter only through the causal mask: no RoPE (SmolLM3's NoPE layers).
    pub no_rope: bool,
    /// The Q/K RMSNorm of [`Config::qk_norm`] spans the whole projection (`heads × head_dim`
    /// weights, OLMo 2/3) rather than each head.
    pub qk_norm_whole: bool,
    /// The leaf names of the output projection and the Q/K norms.
    pub names: Names,
    /// Where keys and values come from: the layer's own projections, its key projection
    /// alone (the values are the unnormed keys, Gemma 4's `attention_k_eq_v`), or the earlier
    /// layer the cache shares with this one (`LayerKind::Shared`: no K/V projections, nothing
    /// stored).
    pub kv: KvSource,
    /// Per-head RMSNorm without weights on the values, with the Q/K norms' epsilon (Gemma 4).
    pub v_norm: bool,
    /// A learned logit per query head (`sinks`, gpt-oss) joins each softmax's denominator,
    /// with no value: attention may put weight on "nothing".
    pub sinks: bool,
}

/// Leaf names, under the layer's prefix, of the tensors whose names differ between families
/// (the Q/K/V projections are `q_proj`, `k_proj`, `v_proj` everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    /// The output projection (`o_proj`).
    pub o: &'static str,
    /// The query norm (`q_norm`).
    pub q_norm: &'static str,
    /// The key norm (`k_norm`).
    pub k_norm: &'static str,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            o: "o_proj",
            q_norm: "q_norm",
            k_norm: "k_norm",
        }
    }
}

/// One attention layer's weights.
#[derive(Clone, Debug)]
pub struct Attention {
    qkv: Qkv,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    v_norm: Option<RmsNorm>,
    /// One logit per query head (`Options::sinks`), f32 `(n_heads,)`.
    sinks: Option<Tensor>,
    cfg: Config,
    opts: Options,
}

impl Attention {
    /// Loads `q_proj`, `k_proj`, `v_proj` (or `qkv_proj`), `o_proj` (and `q_norm`, `k_norm`)
    /// under `vb`.
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        Self::load_with(vb, cfg, Options::default())
    }

    /// [`Attention::load`] with the switches of `opts`.
    pub fn load_with(vb: &Vb, cfg: &Config, opts: Options) -> Result<Self> {
        let (h, q_dim, kv_dim) = (
            cfg.hidden,
            cfg.n_heads * cfg.head_dim,
            cfg.n_kv_heads * cfg.head_dim,
        );
        let norm = |name: &str, whole: usize| -> Result<Option<RmsNorm>> {
            let dim = if opts.qk_norm_whole {
                whole
            } else {
                cfg.head_dim
            };
            cfg.qk_norm
                .map(|(eps, offset)| RmsNorm::load(&vb.pp(name), dim, eps, offset))
                .transpose()
        };
        let v_norm = match (opts.v_norm, cfg.qk_norm) {
            (false, _) => None,
            (true, Some((eps, _))) => Some(RmsNorm::unscaled(cfg.head_dim, eps, vb.device())?),
            (true, None) => {
                return Err(crate::Error::Internal(
                    "a value norm takes the epsilon of Q/K norms, and this layer has none".into(),
                ))
            }
        };
        Ok(Self {
            qkv: Qkv::load_with(
                vb,
                qkv::Dims {
                    hidden: h,
                    q: q_dim,
                    kv: kv_dim,
                },
                cfg.qkv_bias,
                cfg.fused_qkv,
                opts.kv,
            )?,
            o: Linear::load(&vb.pp(opts.names.o), q_dim, h, cfg.o_bias)?,
            q_norm: norm(opts.names.q_norm, q_dim)?,
            k_norm: match opts.kv {
                KvSource::Shared => None,
                _ => norm(opts.names.k_norm, kv_dim)?,
            },
            v_norm: match opts.kv {
                KvSource::Shared => None,
                _ => v_norm,
            },
            sinks: match opts.sinks {
                true => Some(vb.tensor("sinks", &[cfg.n_heads])?),
                false => None,
            },
            cfg: cfg.clone(),
            opts,
        })
    }

    /// The switches beyond [`Config`].
    pub fn options(&self) -> Options {
        self.opts
    }

    /// What this layer keeps in the cache: its window when it has one, else every position.
    /// (A layer that reads another layer's keys and values is declared `LayerKind::Shared`
    /// by its family, which knows the other layer.)
    pub fn cache_kind(&self) -> LayerKind {
        match self.cfg.sliding_window {
            Some(w) => LayerKind::Window(w),
            None => LayerKind::Full,
        }
    }

    /// The projections, the optional per-head Q/K norms and the configuration.
    pub fn parts(&self) -> (&Qkv, &Linear, Option<&RmsNorm>, Option<&RmsNorm>, &Config) {
        (
            &self.qkv,
            &self.o,
            self.q_norm.as_ref(),
            self.k_norm.as_ref(),
            &self.cfg,
        )
    }

    /// Attends `x` (`(1, L, hidden)`) at the cache position, storing its keys and values in
    /// layer `layer` of `cache` (or reading those of the layer it shares).
    pub fn forward(
        &self,
        x: &Tensor,
        rope: (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<Tensor> {
        let (q, kv) = self.project(x)?;
        let (q, kv, pos) = self.store_rotated(q, kv, rope, cache, layer)?;
        // Long prompts: on the CPU in tiles ([`attn_tiles`]), elsewhere in blocks of queries,
        // each against only the keys it can see: the causal half of the score matrix is
        // never computed.
        let y = attend_in_blocks(
            &self.cfg,
            &q,
            &kv,
            (pos, self.sinks()?.as_deref()),
            QUERY_BLOCK,
        )?;
        self.output(&y)
    }

    /// Attends one new position of each of several sequences: row `i` of `x`
    /// (`(B, 1, hidden)`) at the position of `caches[i]`, rotated by `tables[i]`. The
    /// projections run once for the batch; each row attends to its own sequence's keys.
    pub fn forward_batch(
        &self,
        x: &Tensor,
        rope: &Rope,
        tables: &[Tables],
        caches: &mut [&mut Cache],
        layer: usize,
    ) -> Result<Tensor> {
        let (q, kv) = self.project(x)?;
        let sinks = self.sinks()?;
        // Each row's keys go into its own cache first; then every row attends in one
        // submission to the pool (one row at a time when the few-query path does not apply).
        let mut seen = Vec::with_capacity(caches.len());
        let mut qs = Vec::with_capacity(caches.len());
        for (i, (cache, t)) in caches.iter_mut().zip(tables).enumerate() {
            let row = |t: &Tensor| t.narrow(0, i, 1);
            let kv_i = match &kv {
                Some((k, v)) => Some((row(k)?, row(v)?.contiguous()?)),
                None => None,
            };
            let (q, kv, pos) = self.store_rotated(row(&q)?, kv_i, (rope, t), cache, layer)?;
            qs.push(q);
            seen.push((kv, pos));
        }
        let y = match attend_batch(&self.cfg, &qs, &seen, sinks.as_deref())? {
            Some(y) => y,
            None => {
                let mut rows = Vec::with_capacity(qs.len());
                for (q, (kv, pos)) in qs.iter().zip(&seen) {
                    rows.push(attend_in_blocks(
                        &self.cfg,
                        q,
                        kv,
                        (*pos, sinks.as_deref()),
                        QUERY_BLOCK,
                    )?);
                }
                Tensor::cat(&rows, 0)?
            }
        };
        self.output(&y)
    }

    /// Projects `x` (`(B, L, hidden)`) to queries and, unless the layer reads another
    /// layer's, keys and values: `(B, heads, L, D)` each (values contiguous), with the Q/K/V
    /// norms applied and no RoPE yet.
    #[allow(clippy::type_complexity)]
    fn project(&self, x: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let c = &self.cfg;
        let (b, l, _) = x.dims3()?;
        // 1. Project (and norm the whole projections, OLMo), split heads:
        //    (B, L, H*D) -> (B, L, H, D).
        let (q, kv) = self.qkv.forward(x)?;
        let norm = |n: &Option<RmsNorm>, t: Tensor, whole: bool| -> Result<Tensor> {
            match n {
                Some(n) if self.opts.qk_norm_whole == whole => n.forward(&t),
                _ => Ok(t),
            }
        };
        let q = norm(&self.q_norm, q, true)?.reshape((b, l, c.n_heads, c.head_dim))?;
        // 2. Optional per-head norm, then (B, L, H, D) -> (B, H, L, D).
        let q = norm(&self.q_norm, q, false)?.transpose(1, 2)?;
        let kv = match kv {
            Some((k, v)) => {
                let k = norm(&self.k_norm, k, true)?.reshape((b, l, c.n_kv_heads, c.head_dim))?;
                let k = norm(&self.k_norm, k, false)?.transpose(1, 2)?;
                let mut v = v.reshape((b, l, c.n_kv_heads, c.head_dim))?;
                if let Some(n) = &self.v_norm {
                    v = n.forward(&v)?;
                }
                Some((k, v.transpose(1, 2)?.contiguous()?))
            }
            None => None,
        };
        Ok((q, kv))
    }

    /// RoPE on `t` (unless the layer has none), contiguous either way.
    fn rotate(&self, t: Tensor, rope: (&Rope, &Tables)) -> Result<Tensor> {
        match self.opts.no_rope {
            true => Ok(t.contiguous()?),
            false => rope.0.apply(&t, rope.1),
        }
    }

    /// Rotates `q` and the keys and stores keys and values in layer `layer` of `cache`, or
    /// (without them) reads those of the layer this one shares, as they stand after this
    /// pass: the rotated queries, the keys they see and the position of the first query.
    fn store_rotated(
        &self,
        q: Tensor,
        kv: Option<(Tensor, Tensor)>,
        rope: (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<(Tensor, KvView, usize)> {
        let pos = cache.pos();
        let q = self.rotate(q, rope)?;
        let kv = match kv {
            Some((k, v)) => cache.append_kv(layer, &self.rotate(k, rope)?, &v)?,
            None => cache.shared_kv(layer)?,
        };
        Ok((q, kv, pos))
    }

    /// The layer's sink logit per query head, if it has sinks.
    fn sinks(&self) -> Result<Option<Vec<f32>>> {
        Ok(self.sinks.as_ref().map(|s| s.to_vec1()).transpose()?)
    }

    /// The output projection of attended values: (B, H, L, D) -> (B, L, hidden).
    fn output(&self, y: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, _, l, _) = y.dims4()?;
        let y = y.transpose(1, 2)?.reshape((b, l, c.n_heads * c.head_dim))?;
        self.o.forward(&y)
    }
}

/// Stores `k`, `v` (`(B, KV, L, D)`, after RoPE) in layer `layer` of `cache` and attends
/// `q` (`(B, H, L, D)`, at the cache position) to every key the layer holds: `(B, H, L, D)`.
/// For attention layers that project and rotate in their own way (Qwen3.5's gated queries).
pub fn attend_cached(
    c: &Config,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut Cache,
    layer: usize,
) -> Result<Tensor> {
    let pos = cache.pos();
    let kv = cache.append_kv(layer, k, v)?;
    attend_in_blocks(c, q, &kv, (pos, None), QUERY_BLOCK)
}

/// [`attend`] for blocks of at most `block` queries at a time.
fn attend_in_blocks(
    c: &Config,
    q: &Tensor,
    kv: &KvView,
    (pos, sinks): (usize, Option<&[f32]>),
    block: usize,
) -> Result<Tensor> {
    let l = q.dim(2)?;
    // Prompts on the CPU: the tiled kernel holds no score matrix, so it takes them whole.
    if l >= attn_few::MAX_QUERIES {
        let (first_key, k, v) = visible(c, kv, pos, l)?;
        let span = span(c, pos, first_key);
        if let Some(y) = attn_tiles::attend_tiled(q, &k, &v, span, few_logits(c), sinks)? {
            return Ok(y);
        }
    }
    if l <= block {
        return attend(c, q, kv, pos, sinks);
    }
    let mut parts = Vec::with_capacity(l.div_ceil(block));
    let mut i0 = 0;
    while i0 < l {
        let lb = block.min(l - i0);
        let qb = q.narrow(2, i0, lb)?.contiguous()?;
        parts.push(attend(c, &qb, kv, pos + i0, sinks)?);
        i0 += lb;
    }
    Ok(Tensor::cat(&parts, 2)?)
}

/// Queries `q` (`(B, H, L, D)`, at positions `pos..pos + L`) against the cached keys and
/// values (`(B, KV, ≥ pos + L - start, D)` from position `start`): `(B, H, L, D)`. With
/// `sinks` (one logit per query head) each softmax also counts that logit, which has no
/// value.
fn attend(
    c: &Config,
    q: &Tensor,
    kv: &KvView,
    pos: usize,
    sinks: Option<&[f32]>,
) -> Result<Tensor> {
    let (b, _, l, _) = q.dims4()?;
    let (first_key, k, v) = visible(c, kv, pos, l)?;
    let n_keys = pos + l - first_key;
    // A few queries on the CPU (decoding, short prompts): read the cache in place, in
    // llama.cpp's flash-attention numerics.
    if l < attn_few::MAX_QUERIES {
        let span = span(c, pos, first_key);
        if let Some(y) = attn_few::attend_few(q, &k, &v, span, few_logits(c), sinks)? {
            return Ok(y);
        }
    }
    // The products below are f32: the CPU cache's f16 rows are widened (exactly).
    let (k, v) = match q.dtype() {
        DType::F32 => (
            f16_rows::widened(&k)?.unwrap_or(k),
            f16_rows::widened(&v)?.unwrap_or(v),
        ),
        _ => (k, v),
    };
    // Group query heads onto their KV head: (B, H, L, D) -> (B, KV, rep*L, D).
    let rep = c.n_heads / c.n_kv_heads;
    let q = q.reshape((b, c.n_kv_heads, rep * l, c.head_dim))?;
    let mut scores = (q.matmul(&k.t()?)? * c.scale)?; // (B, KV, rep*L, keys)
    if let Some(cap) = c.softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    if l > 1 {
        let mask = causal_mask(l, pos, first_key, c.sliding_window, q.device())?;
        scores = scores
            .reshape((b, c.n_kv_heads, rep, l, n_keys))?
            .broadcast_add(&mask)?
            .reshape((b, c.n_kv_heads, rep * l, n_keys))?;
    }
    let probs = match sinks {
        None => candle_nn::ops::softmax_last_dim(&scores)?,
        Some(s) => {
            // One more column per row, the row's head's sink: softmax, then drop it.
            let column = Tensor::from_slice(s, (1, c.n_kv_heads, rep, 1, 1), q.device())?
                .to_dtype(scores.dtype())?
                .broadcast_as((b, c.n_kv_heads, rep, l, 1))?
                .reshape((b, c.n_kv_heads, rep * l, 1))?;
            let all = Tensor::cat(&[&scores, &column], 3)?;
            candle_nn::ops::softmax_last_dim(&all)?
                .narrow(3, 0, n_keys)?
                .contiguous()?
        }
    };
    // Weighted values: (B, KV, rep*L, D) -> (B, H, L, D).
    Ok(probs.matmul(&v)?.reshape((b, c.n_heads, l, c.head_dim))?)
}

/// Rows `q[i]` (`(1, H, L, D)` each, at `seen[i].1`) against their own sequences' keys
/// `seen[i].0` in one pool submission: `(B, H, L, D)`, each row as [`attend`] gives it alone;
/// `None` when the few-query path does not take them all (then each row goes alone).
fn attend_batch(
    c: &Config,
    qs: &[Tensor],
    seen: &[(KvView, usize)],
    sinks: Option<&[f32]>,
) -> Result<Option<Tensor>> {
    let l = match qs.first() {
        Some(q) => q.dim(2)?,
        None => return Ok(None),
    };
    if l >= attn_few::MAX_QUERIES || qs.iter().any(|q| q.dim(2).ok() != Some(l)) {
        return Ok(None);
    }
    let mut views = Vec::with_capacity(seen.len());
    for (kv, pos) in seen {
        let (first_key, k, v) = visible(c, kv, *pos, l)?;
        views.push((k, v, span(c, *pos, first_key)));
    }
    let keys: Vec<attn_few::Keys> = views
        .iter()
        .map(|(k, v, span)| attn_few::Keys { k, v, span: *span })
        .collect();
    let q = Tensor::cat(qs, 0)?;
    attn_few::attend_few_batch(&q, &keys, few_logits(c), sinks)
}

/// The keys and values `l` queries at `pos` see, from the first visible position (none after
/// the last query, none before the first one's window): `(first_key, k, v)`.
fn visible(c: &Config, kv: &KvView, pos: usize, l: usize) -> Result<(usize, Tensor, Tensor)> {
    let first_key = match c.sliding_window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    let Some(skip) = first_key.checked_sub(kv.start) else {
        return Err(crate::Error::Internal(format!(
            "attention at position {pos} needs keys from {first_key}; the cache holds them from {}",
            kv.start
        )));
    };
    let n_keys = pos + l - first_key;
    Ok((
        first_key,
        kv.k.narrow(2, skip, n_keys)?,
        kv.v.narrow(2, skip, n_keys)?,
    ))
}

/// Where the few-query kernel's queries and keys sit.
fn span(c: &Config, pos: usize, first_key: usize) -> attn_few::Span {
    attn_few::Span {
        pos,
        first_key,
        window: c.sliding_window,
    }
}

/// The few-query kernel's score scale and soft cap for this layer.
fn few_logits(c: &Config) -> (attn_few::Scale, Option<f32>) {
    let scale = match c.scale_queries {
        true => attn_few::Scale::Query(c.scale as f32),
        false => attn_few::Scale::Scores(c.scale as f32),
    };
    (scale, c.softcap.map(|c| c as f32))
}

/// Queries per block when a prompt is attended in blocks.
const QUERY_BLOCK: usize = 128;

/// Additive mask `(L, keys)`: query `i` (at `pos + i`) sees key `j` (at `first_key + j`) when
/// the key is not in its future and, with a window, within the window.
pub(crate) fn causal_mask(
    l: usize,
    pos: usize,
    first_key: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let n_keys = pos + l - first_key;
    let mut m = vec![0f32; l * n_keys];
    for i in 0..l {
        let qp = pos + i;
        for j in 0..n_keys {
            let kp = first_key + j;
            let visible = kp <= qp && window.is_none_or(|w| qp - kp < w);
            if !visible {
                m[i * n_keys + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(m, (l, n_keys), device)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attending_in_blocks_equals_attending_at_once() {
        let dev = Device::Cpu;
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        // Sinks below, among and above the scores (|q·k| · 0.25 stays under 1.4 here).
        let sinks = [-2.0, 0.3, 1.0, 5.0];
        for (window, sinks) in [(None, None), (Some(50), None), (Some(50), Some(&sinks[..]))] {
            let c = Config {
                hidden: 64,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 16,
                scale: 0.25,
                qkv_bias: false,
                o_bias: false,
                fused_qkv: false,
                qk_norm: None,
                sliding_window: window,
                softcap: None,
                scale_queries: false,
            };
            // 10 cached positions, then 77 new queries.
            let (pos, l, keys) = (10, 77, 87);
            let q = Tensor::from_vec(values(4 * l * 16, 1), (1, 4, l, 16), &dev).unwrap();
            // Keys and values as the CPU cache holds them: f16.
            let kv16 = |seed| {
                Tensor::from_vec(values(2 * keys * 16, seed), (1, 2, keys, 16), &dev)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap()
            };
            let kv = KvView {
                k: kv16(2),
                v: kv16(3),
                start: 0,
            };
            let once: Vec<f32> = attend(&c, &q, &kv, pos, sinks)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let blocks: Vec<f32> = attend_in_blocks(&c, &q, &kv, (pos, sinks), 16)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(once.len(), blocks.len());
            // Blocks of 16 take the few-queries kernel, whose value sums are held in f16.
            for (a, b) in once.iter().zip(&blocks) {
                assert!(
                    (a - b).abs() < 4e-3 * a.abs().max(0.25),
                    "{window:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn mask_hides_the_future_and_what_left_the_window() {
        let m: Vec<Vec<f32>> = causal_mask(3, 2, 0, Some(2), &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        let vis: Vec<Vec<bool>> = m
            .iter()
            .map(|r| r.iter().map(|v| *v == 0.0).collect())
            .collect();
        // query positions 2, 3, 4 over keys 0..=4, window 2
        assert_eq!(vis[0], [false, true, true, false, false]);
        assert_eq!(vis[1], [false, false, true, true, false]);
        assert_eq!(vis[2], [false, false, false, true, true]);
    }
}
