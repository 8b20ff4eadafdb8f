//! Attention for a few queries on the CPU (one new token, or a prompt shorter than
//! [`MAX_QUERIES`]), read in place from the KV cache, with the numerics of llama.cpp's CPU
//! flash attention for such batches:
//!
//! - each query row is rounded to f16, as ggml converts Q to the f16 cache's dot type;
//! - keys are visited in order with an online softmax, and the weighted sum of values is
//!   held in f16: every scaling and every `acc += w·v` is rounded to f16, as ggml's
//!   `VKQ16` accumulator is (llama.cpp's default cache is f16, so it takes that path);
//! - the sum is divided out at the end by multiplying with `1 / S`.
//!
//! That f16 accumulator moves logits by a few hundredths, enough to reorder near-tied
//! candidates; holding what llama.cpp holds is what makes `inspect --logits` list the
//! reference's top-5 in its order. Longer prompts go to [`super::attn_tiles`], llama.cpp's
//! tiled kernel (f32 throughout) for them.
//!
//! Reading the cache in place is also what keeps decoding fast: candle's matmul path
//! repacked the whole key block on every call (after 512 tokens of context that was ~230 µs
//! per layer on SmolLM2). The cache holds f16 rows, widened as they are loaded.

use std::ops::Deref;

use candle_core::{Storage, Tensor};
use half::f16;

#[cfg(target_arch = "x86_64")]
use super::attn_f16::{Avx2, Fp16};
use super::attn_f16::{F16Steps, Portable};
use crate::Result;

/// Batches of at least this many queries take the matmul path (llama.cpp's Q tile size:
/// from 64 queries on, it switches to its f32 tiled kernel).
pub const MAX_QUERIES: usize = 64;

/// Where the queries and keys sit: query `i` is at position `pos + i`, key row `j` at
/// `first_key + j`; a query sees the keys at or before it, and with a window only the
/// `window` most recent (itself included).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Position of the first query.
    pub pos: usize,
    /// Position of the first key row.
    pub first_key: usize,
    /// Sliding window, if any.
    pub window: Option<usize>,
}

impl Span {
    /// Key rows query `i` sees.
    pub(super) fn keys(&self, i: usize) -> std::ops::Range<usize> {
        let qp = self.pos + i;
        let from = match self.window {
            Some(w) => (qp + 1).saturating_sub(w).max(self.first_key),
            None => self.first_key,
        };
        from.saturating_sub(self.first_key)..qp + 1 - self.first_key
    }
}

/// `softmax(scale · q·Kᵀ [soft-capped], masked) · V` for `L < MAX_QUERIES` queries; with
/// `sinks` (one logit per query head, gpt-oss) each head's softmax has that extra logit in
/// its denominator, with no value, as ggml adds it after the keys.
///
/// `q` is `(1, H, L, D)` f32, `k` and `v` are `(1, KV, n, D)` f16 views (of the cache: rows of
/// one head contiguous) covering every key the queries see, all on the CPU; `None` for
/// anything else. Returns `(1, H, L, D)` f32.
pub fn attend_few(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    span: Span,
    logits: (Scale, Option<f32>),
    sinks: Option<&[f32]>,
) -> Result<Option<Tensor>> {
    attend_few_batch(q, &[Keys { k, v, span }], logits, sinks)
}

/// A sequence's key rows and value rows per KV head, and query heads per KV head.
type SeqRows<'a> = (Vec<&'a [f16]>, Vec<&'a [f16]>, usize);

/// One sequence's keys and values for [`attend_few_batch`]: `(1, KV, n, D)` f16 views and
/// where its queries and keys sit.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    /// The keys the sequence's queries see.
    pub k: &'a Tensor,
    /// Their values.
    pub v: &'a Tensor,
    /// The positions of the queries and the first key.
    pub span: Span,
}

/// [`attend_few`] for several sequences at once (sequences decoding together): row `b` of
/// `q` (`(B, H, L, D)` f32) attends to `seqs[b]`'s keys. Every (sequence, head, query) is one
/// unit of one pool submission, so a batch costs one hand-off to the pool threads per layer,
/// not one per sequence, and its units split evenly. Each row's result is the one
/// [`attend_few`] gives it alone, bit for bit. `None` when any sequence does not fit the
/// few-query path.
pub fn attend_few_batch(
    q: &Tensor,
    seqs: &[Keys],
    (scale, softcap): (Scale, Option<f32>),
    sinks: Option<&[f32]>,
) -> Result<Option<Tensor>> {
    let (b, h, l, d) = q.dims4()?;
    if sinks.is_some_and(|s| s.len() != h) || b != seqs.len() || b == 0 {
        return Ok(None);
    }
    if l == 0 || l >= MAX_QUERIES {
        return Ok(None);
    }
    let mut kvs = Vec::with_capacity(b);
    for s in seqs {
        let (kb, kv, n, kd) = s.k.dims4()?;
        if kb != 1 || kd != d || kv == 0 || !h.is_multiple_of(kv) {
            return Ok(None);
        }
        if s.v.dims4()? != (1, kv, n, d) || s.span.keys(l - 1).end > n {
            return Ok(None);
        }
        let (Some(k), Some(v)) = (head_rows(s.k, d)?, head_rows(s.v, d)?) else {
            return Ok(None);
        };
        kvs.push((k, v, kv));
    }
    let per_seq: Vec<SeqRows> = kvs
        .iter()
        .map(|(k, v, kv)| Ok((k.slices()?, v.slices()?, h / kv)))
        .collect::<Result<_>>()?;
    let q = q.contiguous()?;
    let out = super::host::with_f32(&q, |q| {
        // SAFETY: one unit per (sequence, head, query), each writing only its own D outputs.
        unsafe {
            super::host::filled(b * h * l * d, |out| {
                let out_addr = out as usize;
                super::pool::Pool::global().run(b * h * l, |units| {
                    for unit in units {
                        let (seq, head, i) = (unit / (h * l), unit / l % h, unit % l);
                        let (k_rows, v_rows, rep) = &per_seq[seq];
                        let g = head / rep;
                        let dst =
                            std::slice::from_raw_parts_mut((out_addr as *mut f32).add(unit * d), d);
                        let keys = seqs[seq].span.keys(i);
                        one_query(
                            &q[unit * d..(unit + 1) * d],
                            &k_rows[g][keys.start * d..keys.end * d],
                            &v_rows[g][keys.start * d..keys.end * d],
                            Logits {
                                scale,
                                softcap,
                                sink: sinks.map(|s| s[head]),
                            },
                            dst,
                        );
                    }
                });
            })
        }
    })?;
    match out {
        Some(out) => Ok(Some(Tensor::from_vec(out, (b, h, l, d), q.device())?)),
        None => Ok(None),
    }
}

/// The f16 CPU storage of a `(1, heads, n, d)` tensor whose heads' rows are each contiguous,
/// held while its per-head slices are read.
pub(super) struct HeadRows<G> {
    storage: G,
    /// Where each head's `n × d` rows start.
    starts: Vec<usize>,
    len: usize,
}

/// `None` when `t` is not f16 on the CPU with each head's rows contiguous.
pub(super) fn head_rows(
    t: &Tensor,
    d: usize,
) -> Result<Option<HeadRows<impl Deref<Target = Storage> + '_>>> {
    if !t.device().is_cpu() || t.dtype() != candle_core::DType::F16 {
        return Ok(None);
    }
    let (_, heads, n, _) = t.dims4()?;
    let (storage, layout) = t.storage_and_layout();
    let stride = layout.stride();
    if stride.len() != 4 || stride[3] != 1 || stride[2] != d {
        return Ok(None);
    }
    let start = layout.start_offset();
    let starts: Vec<usize> = (0..heads).map(|g| start + g * stride[1]).collect();
    let fits = match &*storage {
        Storage::Cpu(cpu) => {
            let have = cpu.as_slice::<f16>()?.len();
            starts.iter().all(|&from| from + n * d <= have)
        }
        _ => false,
    };
    Ok(fits.then_some(HeadRows {
        storage,
        starts,
        len: n * d,
    }))
}

impl<G: Deref<Target = Storage>> HeadRows<G> {
    /// Each head's rows (checked by [`head_rows`]; an error only if that check was wrong).
    pub(super) fn slices(&self) -> Result<Vec<&[f16]>> {
        let Storage::Cpu(cpu) = &*self.storage else {
            return Err(crate::Error::Internal("f16 key rows off the CPU".into()));
        };
        let data = cpu.as_slice::<f16>()?;
        self.starts
            .iter()
            .map(|&from| {
                data.get(from..from + self.len).ok_or_else(|| {
                    crate::Error::Internal("key rows past the end of their storage".into())
                })
            })
            .collect()
    }
}

/// How one query's logits are formed: the score scale, the optional soft cap, and the
/// optional sink logit of its head.
#[derive(Clone, Copy, Debug)]
pub struct Logits {
    /// The score scale.
    pub scale: Scale,
    /// `cap · tanh(s / cap)`.
    pub softcap: Option<f32>,
    /// An extra logit in the softmax's denominator (gpt-oss's attention sinks).
    pub sink: Option<f32>,
}

/// One query against the key and value rows it sees (`k`, `v`: whole rows of `q.len()`).
fn one_query(q: &[f32], k: &[f16], v: &[f16], logits: Logits, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::gemv::kernel() != super::gemv::Kernel::Scalar {
        if native_f16() {
            // SAFETY: checked just above, and a non-scalar kernel means AVX2, FMA and F16C.
            return unsafe { one_query_fp16(q, k, v, logits, out) };
        }
        // SAFETY: a non-scalar kernel means the CPU has AVX2, FMA and F16C.
        return unsafe { one_query_avx2(q, k, v, logits, out) };
    }
    online::<Portable>(q, k, v, logits, out)
}

/// Whether this CPU does f16 arithmetic (AVX512-FP16), as llama.cpp built for it then does.
#[cfg(target_arch = "x86_64")]
fn native_f16() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512fp16")
}

/// Compiled without `avx512fp16` itself: with it LLVM turns f16 ↔ f32 vector conversions
/// into one scalar conversion per element, which made decoding after 512 tokens twice as slow.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn one_query_fp16(q: &[f32], k: &[f16], v: &[f16], logits: Logits, out: &mut [f32]) {
    online::<Fp16>(q, k, v, logits, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_query_avx2(q: &[f32], k: &[f16], v: &[f16], logits: Logits, out: &mut [f32]) {
    online::<Avx2>(q, k, v, logits, out)
}

/// How the score scale is applied: to the scores (llama.cpp's default), or to the query
/// before it is rounded to f16 (Gemma: llama.cpp scales Q by a separate op and passes 1).
#[derive(Clone, Copy, Debug)]
pub enum Scale {
    /// `s = scale · (f16(q)·k)`.
    Scores(f32),
    /// `s = f16(scale · q)·k`.
    Query(f32),
}

/// ggml's one-row flash attention: scores in key order, running max `M` and sum `S`, values
/// accumulated in f16 precision; a sink logit joins `M` and `S` after the keys, as ggml
/// applies it (the values then in f32).
#[inline(always)]
fn online<S: F16Steps>(q: &[f32], k: &[f16], v: &[f16], logits: Logits, out: &mut [f32]) {
    let Logits {
        scale,
        softcap,
        sink,
    } = logits;
    let d = q.len();
    let mut q16 = [0f32; 512];
    let mut heap = Vec::new();
    let q16: &mut [f32] = if d <= q16.len() {
        &mut q16[..d]
    } else {
        heap.resize(d, 0.0);
        &mut heap
    };
    let scale = match scale {
        Scale::Scores(s) => {
            q16.copy_from_slice(q);
            s
        }
        Scale::Query(s) => {
            for (o, x) in q16.iter_mut().zip(q) {
                *o = x * s;
            }
            1.0
        }
    };
    S::round(q16);
    // With a soft cap ggml folds the scale into the tanh argument.
    let scale = softcap.map_or(scale, |cap| scale / cap);
    // The scores, then ggml's running maximum and the two factors of each step (`ms` scales
    // what was summed when a new maximum appears, `vs` weighs the new value), then the sum:
    // the same operations in the same order as ggml's single loop, but the `exp`s are
    // independent of each other and off the chain of f16 roundings that follows.
    let n = k.len() / d;
    let mut steps: Vec<(f32, bool)> = Vec::with_capacity(n);
    let mut max = f32::NEG_INFINITY;
    for krow in k.chunks_exact(d) {
        let mut s = S::dot(q16, krow) * scale;
        if let Some(cap) = softcap {
            s = cap * s.tanh();
        }
        if s > max {
            steps.push((max - s, true));
            max = s;
        } else {
            steps.push((s - max, false));
        }
    }
    for (arg, _) in &mut steps {
        *arg = arg.exp();
    }
    out.fill(0.0);
    let fast = S::accumulate(&steps, v, out);
    let mut sum = 0f32;
    for (&(e, rescale), vrow) in steps.iter().zip(v.chunks_exact(d)) {
        let (ms, vs) = if rescale { (e, 1.0) } else { (1.0, e) };
        if !fast {
            if rescale {
                S::scale(out, ms);
            }
            S::mad(out, vrow, vs);
        }
        // ggml's C is compiled with contraction on: this is one fused multiply-add there.
        sum = sum.mul_add(ms, vs);
    }
    finish_row(out, (max, sum), sink);
}

/// The end of one query row of ggml's flash attention: a sink logit joins the running
/// maximum and sum after the keys (the weighted values rescaled if it is the new maximum),
/// then the sum is divided out by multiplying with `1 / sum` (0 for an empty row).
pub(super) fn finish_row(out: &mut [f32], (max, mut sum): (f32, f32), sink: Option<f32>) {
    if let Some(s) = sink {
        let (ms, vs) = if s > max {
            let ms = (max - s).exp();
            for o in out.iter_mut() {
                *o *= ms;
            }
            (ms, 1.0)
        } else {
            (1.0, (s - max).exp())
        };
        // ggml's C is compiled with contraction on: one fused multiply-add there.
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for o in out {
        *o *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// `n` test values as the cache holds them (f16).
    fn halves(n: usize, seed: u32) -> Vec<f16> {
        crate::kernels::cpu::gemv::test_values(n, seed)
            .into_iter()
            .map(f16::from_f32)
            .collect()
    }

    /// matmul-softmax-matmul in f32 over the visible keys, for comparison.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, span: Span, scale: f64) -> Vec<f32> {
        let (_, h, l, d) = q.dims4().unwrap();
        let kv = k.dim(1).unwrap();
        let rep = h / kv;
        let mut out = Vec::new();
        for head in 0..h {
            for i in 0..l {
                let keys = span.keys(i);
                let qi = q.narrow(1, head, 1).unwrap().narrow(2, i, 1).unwrap();
                let kk = k.narrow(1, head / rep, 1).unwrap();
                let kk = kk.narrow(2, keys.start, keys.len()).unwrap();
                let vv = v.narrow(1, head / rep, 1).unwrap();
                let vv = vv.narrow(2, keys.start, keys.len()).unwrap();
                let s = (qi.matmul(&kk.t().unwrap()).unwrap() * scale).unwrap();
                let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
                let y: Vec<f32> = p
                    .matmul(&vv.contiguous().unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(y.len(), d);
                out.extend(y);
            }
        }
        out
    }

    #[test]
    fn few_queries_agree_with_f32_attention_to_f16_precision() {
        let dev = Device::Cpu;
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        let (h, kv, d, cap) = (6, 2, 80, 72);
        // A cache-like buffer with room for 72 positions (f16, and its values in f32 for the
        // reference); the view starts at row 3.
        let kbuf = Tensor::from_vec(halves(kv * cap * d, 1), (1, kv, cap, d), &dev).unwrap();
        let vbuf = Tensor::from_vec(halves(kv * cap * d, 2), (1, kv, cap, d), &dev).unwrap();
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        for (l, n, window) in [(1, 33, None), (5, 40, None), (7, 45, Some(9))] {
            let (k, v) = (kbuf.narrow(2, 3, n).unwrap(), vbuf.narrow(2, 3, n).unwrap());
            let span = Span {
                pos: 100 + n - l,
                first_key: 100,
                window,
            };
            let q = Tensor::from_vec(values(h * l * d, 3), (1, h, l, d), &dev).unwrap();
            let want = reference(&q, &f32s(&k), &f32s(&v), span, 0.3);
            let got: Vec<f32> = attend_few(&q, &k, &v, span, (Scale::Scores(0.3), None), None)
                .unwrap()
                .expect("cache views are supported")
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                // f16 accumulation: a few units in the last of its 11 bits.
                assert!(
                    (a - b).abs() < 4e-3 * b.abs().max(0.25),
                    "{l} {window:?}: {a} vs {b}"
                );
            }
        }
        // A batch of MAX_QUERIES is the matmul path's job.
        let l = MAX_QUERIES;
        let q = Tensor::from_vec(values(h * l * d, 4), (1, h, l, d), &dev).unwrap();
        let span = Span {
            pos: 0,
            first_key: 0,
            window: None,
        };
        let (k, v) = (kbuf.narrow(2, 0, l).unwrap(), vbuf.narrow(2, 0, l).unwrap());
        assert!(
            attend_few(&q, &k, &v, span, (Scale::Scores(0.3), None), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn sequences_attended_together_get_what_each_gets_alone() {
        let dev = Device::Cpu;
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        let (h, kv, d, cap) = (6, 2, 64, 90);
        // Three sequences' caches, each at its own position, one with a window; sinks too.
        let sinks = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5];
        let caches: Vec<(Tensor, Tensor, Span)> = [(40, None), (7, None), (85, Some(16))]
            .iter()
            .enumerate()
            .map(|(i, &(n, window))| {
                let seed = 10 + 2 * i as u32;
                let k = Tensor::from_vec(halves(kv * cap * d, seed), (1, kv, cap, d), &dev)
                    .unwrap()
                    .narrow(2, 0, n)
                    .unwrap();
                let v = Tensor::from_vec(halves(kv * cap * d, seed + 1), (1, kv, cap, d), &dev)
                    .unwrap()
                    .narrow(2, 0, n)
                    .unwrap();
                let span = Span {
                    pos: n - 1,
                    first_key: 0,
                    window,
                };
                (k, v, span)
            })
            .collect();
        let q = Tensor::from_vec(values(3 * h * d, 5), (3, h, 1, d), &dev).unwrap();
        let logits = (Scale::Scores(0.125), Some(30.0));
        let keys: Vec<Keys> = caches
            .iter()
            .map(|(k, v, span)| Keys { k, v, span: *span })
            .collect();
        let bits = |t: Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let together = attend_few_batch(&q, &keys, logits, Some(&sinks))
            .unwrap()
            .expect("cache views are supported");
        for (i, (k, v, span)) in caches.iter().enumerate() {
            let row = q.narrow(0, i, 1).unwrap();
            let alone = attend_few(&row, k, v, *span, logits, Some(&sinks))
                .unwrap()
                .expect("cache views are supported");
            assert_eq!(
                bits(together.narrow(0, i, 1).unwrap()),
                bits(alone),
                "sequence {i}"
            );
        }
        // A batch whose rows do not match its sequences is declined.
        assert!(attend_few_batch(&q, &keys[..2], logits, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_accumulator_holds_f16_values_like_ggml() {
        // Two keys with equal scores: acc = f16(f16(v0) + v1) / 2, not (v0 + v1) / 2.
        let (q, k) = ([0f32; 8], [f16::ZERO; 16]);
        let mut v = [f16::ZERO; 16];
        v[0] = f16::ONE;
        // Above half an f16 ulp of 1.0 (2^-11 ≈ 4.9e-4): 1 + 1e-3 rounds up to 1 + 2^-10.
        v[8] = f16::from_f32(1.0e-3);
        v[1] = f16::ONE;
        v[9] = f16::from_f32(4.0e-4); // below half an ulp: lost
        for (name, f) in variants() {
            let mut out = [0f32; 8];
            f(&q, &k, &v, plain(Scale::Scores(1.0), None), &mut out);
            assert_eq!(out[0], (1.0 + 2f32.powi(-10)) / 2.0, "{name}");
            assert_eq!(out[1], 0.5, "{name}");
        }
    }

    type OneQuery = fn(&[f32], &[f16], &[f16], Logits, &mut [f32]);

    fn plain(scale: Scale, softcap: Option<f32>) -> Logits {
        Logits {
            scale,
            softcap,
            sink: None,
        }
    }

    /// The portable form, and the AVX2 one where this CPU has it.
    fn variants() -> Vec<(&'static str, OneQuery)> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v: Vec<(&'static str, OneQuery)> = vec![("portable", online::<Portable>)];
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::gemv::kernel() != crate::kernels::cpu::gemv::Kernel::Scalar {
            // SAFETY: a non-scalar kernel means the CPU has AVX2, FMA and F16C.
            v.push(("avx2", |q, k, v, l, o| unsafe {
                one_query_avx2(q, k, v, l, o)
            }));
            if native_f16() {
                // SAFETY: checked just above.
                v.push(("fp16", |q, k, v, l, o| unsafe {
                    one_query_fp16(q, k, v, l, o)
                }));
            }
        }
        v
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16_steps_round_once_to_f16_over_whole_steps() {
        if crate::kernels::cpu::gemv::kernel() == crate::kernels::cpu::gemv::Kernel::Scalar
            || !native_f16()
        {
            eprintln!("skipped: this CPU has no AVX512-FP16");
            return;
        }
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        let r16 = |v: f32| half::f16::from_f32(v).to_f32();
        // 128 elements in f16 steps, 72 in ggml's scalar tail.
        let y0: Vec<f32> = values(200, 8).into_iter().map(r16).collect();
        let x = halves(200, 9);
        let w = 0.123_456_7f32;
        let mut y = y0.clone();
        // SAFETY: checked above; `Fp16` is only used under its target features.
        unsafe { fp16_mad(&mut y, &x, w) };
        let wh = r16(w) as f64;
        for i in 0..200 {
            let xi = x[i].to_f32();
            let want = if i < 128 {
                f16::from_f64(xi as f64 * wh + y0[i] as f64).to_f32()
            } else {
                r16(xi.mul_add(w, y0[i]))
            };
            assert_eq!(y[i].to_bits(), want.to_bits(), "element {i}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn fp16_mad(y: &mut [f32], x: &[f16], w: f32) {
        Fp16::mad(y, x, w)
    }

    #[test]
    fn every_form_agrees_bit_for_bit_below_one_f16_step() {
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        for (d, n, cap) in [(64, 37, None), (72, 9, Some(2.0))] {
            let (q, k, v) = (values(d, 5), halves(n * d, 6), halves(n * d, 7));
            let outs: Vec<Vec<f32>> = variants()
                .into_iter()
                .map(|(_, f)| {
                    let mut out = vec![0f32; d];
                    f(&q, &k, &v, plain(Scale::Scores(0.9), cap), &mut out);
                    out
                })
                .collect();
            assert!(outs.windows(2).all(|w| w[0] == w[1]), "d {d}");
        }
    }

    /// Heads of 128 and more (Qwen3's, Gemma's 256) summed a slice of columns at a time by
    /// the AVX2 form: the portable bits still, with new maxima past the first key.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_form_gives_the_portable_bits_for_wide_heads() {
        if crate::kernels::cpu::gemv::kernel() == crate::kernels::cpu::gemv::Kernel::Scalar {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        for (d, n) in [(128, 50), (192, 7), (256, 300), (256, 1)] {
            let (q, k, v) = (values(d, 11), halves(n * d, 12), halves(n * d, 13));
            let run = |f: OneQuery| {
                let mut out = vec![0f32; d];
                f(&q, &k, &v, plain(Scale::Scores(0.2), None), &mut out);
                out
            };
            // SAFETY: checked above: the CPU has AVX2, FMA and F16C.
            let avx2 = run(|q, k, v, l, o| unsafe { one_query_avx2(q, k, v, l, o) });
            assert_eq!(avx2, run(online::<Portable>), "d {d}, {n} keys");
            let rises = k
                .chunks_exact(d)
                .map(|kr| kr.iter().zip(&q).map(|(a, b)| a.to_f32() * b).sum::<f32>())
                .scan(f32::NEG_INFINITY, |max, s| {
                    let rise = s > *max;
                    *max = max.max(s);
                    Some(rise)
                })
                .filter(|&r| r)
                .count();
            assert!(n < 50 || rises > 2, "d {d}: the maximum rose {rises} times");
        }
    }

    #[test]
    fn a_sink_takes_its_share_of_the_softmax_in_every_form() {
        let values = |n: usize, seed: u32| crate::kernels::cpu::gemv::test_values(n, seed);
        let (d, n) = (64, 11);
        let (q, k, v) = (values(d, 8), halves(n * d, 9), halves(n * d, 10));
        // Scores are within ±0.9·d/3; a sink below, and one above, every score.
        for sink in [-3.0f32, 0.2, 40.0] {
            let run = |f: OneQuery, sink: Option<f32>| {
                let mut out = vec![0f32; d];
                let logits = Logits {
                    scale: Scale::Scores(0.9),
                    softcap: None,
                    sink,
                };
                f(&q, &k, &v, logits, &mut out);
                out
            };
            let outs: Vec<Vec<f32>> = variants()
                .into_iter()
                .map(|(_, f)| run(f, Some(sink)))
                .collect();
            assert!(outs.windows(2).all(|w| w[0] == w[1]), "sink {sink}");
            // softmax over [scores, sink] · [V, 0] = plain attention × (Σe^s / (Σe^s + e^sink)).
            let scores: Vec<f32> = k
                .chunks_exact(d)
                .map(|kr| 0.9 * kr.iter().zip(&q).map(|(a, b)| a.to_f32() * b).sum::<f32>())
                .collect();
            let max = scores.iter().fold(sink, |m, &s| m.max(s));
            let keys: f32 = scores.iter().map(|s| (s - max).exp()).sum();
            let share = keys / (keys + (sink - max).exp());
            let without = run(online::<Portable>, None);
            for (a, b) in outs[0].iter().zip(&without) {
                assert!(
                    (a - b * share).abs() < 4e-3 * (b * share).abs().max(0.05),
                    "sink {sink}: {a} vs {}",
                    b * share
                );
            }
        }
    }

    #[test]
    fn spans_follow_the_causal_mask_and_the_window() {
        let s = Span {
            pos: 10,
            first_key: 4,
            window: Some(3),
        };
        assert_eq!(s.keys(0), 4..7); // position 10 sees 8, 9, 10
        let s = Span {
            pos: 10,
            first_key: 0,
            window: None,
        };
        assert_eq!(s.keys(2), 0..13);
    }
}
