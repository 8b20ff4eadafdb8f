//! Prompt attention on the CPU (from [`super::attn_few::MAX_QUERIES`] queries on): llama.cpp's
//! tiled flash-attention algorithm, in f32, on our pool.
//!
//! Per query head, tiles of [`QT`] queries meet tiles of [`KT`] keys: the scores are f32
//! products (each a chain of fused multiply-adds over the head's dimensions, in order, as
//! ggml's `simd_gemm` forms them), scaled, soft-capped and masked; each query row keeps a
//! running maximum and sum (the exponentials ggml's vectorized `expf`, as its softmax takes
//! them), rescaling what it has summed when a tile raises the maximum; the
//! values are weighed in with another chain of fused multiply-adds in key order; the sum is
//! divided out at the end by multiplying with its inverse. Key tiles no query of a tile sees
//! (its future, or before its window) are skipped, so a causal prompt computes half of the
//! score matrix, and no score matrix over all keys is ever held.
//!
//! The keys are widened from the cache's f16 once per call into rows of key positions per
//! dimension (the layout the score products read), the values into f32 rows; every query
//! tile of every head of a KV head reads them from there. The same loops are compiled for
//! AVX-512, for AVX2 and portably; each output is the same chain of the same operations in
//! all three, so they agree bit for bit.

use candle_core::Tensor;
use half::slice::HalfFloatSliceExt;

use super::attn_few::{finish_row, head_rows, Scale, Span};
use super::gemv::{kernel, Kernel};
use crate::Result;

/// Queries per tile.
pub const QT: usize = 32;
/// Keys per tile (llama.cpp's `GGML_FA_TILE_KV`).
pub const KT: usize = 64;

/// `softmax(scale · q·Kᵀ [soft-capped], masked) · V` for a prompt: `q` `(1, H, L, D)` f32,
/// `k` and `v` `(1, KV, n, D)` f16 views of the cache (each head's rows contiguous) covering
/// every key the queries see, placed by `span`; with `sinks` (one logit per query head) each
/// softmax also counts that logit, which has no value. Returns `(1, H, L, D)` f32, or `None`
/// when the tensors are not laid out so (the caller's general path takes them).
pub fn attend_tiled(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    span: Span,
    (scale, softcap): (Scale, Option<f32>),
    sinks: Option<&[f32]>,
) -> Result<Option<Tensor>> {
    let (b, h, l, d) = q.dims4()?;
    if b != 1 || l == 0 || d == 0 || sinks.is_some_and(|s| s.len() != h) {
        return Ok(None);
    }
    let (kb, kv, n, kd) = k.dims4()?;
    if kb != 1 || kd != d || kv == 0 || !h.is_multiple_of(kv) || v.dims4()? != (1, kv, n, d) {
        return Ok(None);
    }
    if span.keys(l - 1).end > n {
        return Ok(None);
    }
    let (Some(k_rows), Some(v_rows)) = (head_rows(k, d)?, head_rows(v, d)?) else {
        return Ok(None);
    };
    let (k_rows, v_rows) = (k_rows.slices()?, v_rows.slices()?);
    let keys = Widened::new(&k_rows, &v_rows, n, d);
    let q = q.contiguous()?;
    let rep = h / kv;
    let tiles = l.div_ceil(QT);
    let run = Run {
        keys: &keys,
        span,
        scale,
        softcap,
        sinks,
        kernel: kernel(),
    };
    let out = super::host::with_f32(&q, |q| {
        // SAFETY: one unit per (tile, head), each writing only its own rows' outputs.
        unsafe {
            super::host::filled(h * l * d, |out| {
                let out_addr = out as usize;
                // The last tiles see the most keys: they go first, so the pool's chunks end
                // with the light ones.
                super::pool::Pool::global().run(tiles * h, |units| {
                    for unit in units {
                        let (tile, head) = (tiles - 1 - unit / h, unit % h);
                        let rows = tile * QT..((tile + 1) * QT).min(l);
                        let at = (head * l + rows.start) * d;
                        let len = rows.len() * d;
                        let dst =
                            std::slice::from_raw_parts_mut((out_addr as *mut f32).add(at), len);
                        run.tile(&q[at..at + len], (head, head / rep), rows, dst);
                    }
                });
            })
        }
    })?;
    match out {
        Some(out) => Ok(Some(Tensor::from_vec(out, (1, h, l, d), q.device())?)),
        None => Ok(None),
    }
}

/// The keys and values of every KV head in f32: `kt[g]` holds dimension `c` of key `j` at
/// `c · np + j` (`np` = keys rounded up to a whole tile, the padding zero), `vw[g]` value row
/// `j` at `j · d`.
struct Widened {
    kt: Vec<Vec<f32>>,
    vw: Vec<Vec<f32>>,
    np: usize,
    d: usize,
}

impl Widened {
    fn new(k: &[&[half::f16]], v: &[&[half::f16]], n: usize, d: usize) -> Self {
        let np = n.next_multiple_of(KT);
        let heads = k.len();
        let mut kt: Vec<Vec<f32>> = (0..heads).map(|_| vec![0f32; d * np]).collect();
        let mut vw: Vec<Vec<f32>> = (0..heads).map(|_| vec![0f32; np * d]).collect();
        let tiles = np / KT;
        let kt_addr: Vec<usize> = kt.iter_mut().map(|t| t.as_mut_ptr() as usize).collect();
        let vw_addr: Vec<usize> = vw.iter_mut().map(|t| t.as_mut_ptr() as usize).collect();
        super::pool::Pool::global().run(heads * tiles, |units| {
            let mut row = vec![0f32; d];
            for unit in units {
                let (g, tile) = (unit / tiles, unit % tiles);
                let keys = tile * KT..((tile + 1) * KT).min(n);
                // SAFETY: each unit writes only its own tile's keys' columns of `kt[g]` and
                // rows of `vw[g]`, both of which outlive the pool's run.
                let (kt, vw) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(kt_addr[g] as *mut f32, d * np),
                        std::slice::from_raw_parts_mut(vw_addr[g] as *mut f32, np * d),
                    )
                };
                for j in keys {
                    k[g][j * d..(j + 1) * d].convert_to_f32_slice(&mut row);
                    for (c, &x) in row.iter().enumerate() {
                        kt[c * np + j] = x;
                    }
                    v[g][j * d..(j + 1) * d].convert_to_f32_slice(&mut vw[j * d..(j + 1) * d]);
                }
            }
        });
        Self { kt, vw, np, d }
    }
}

/// What every tile of one call shares.
struct Run<'a> {
    keys: &'a Widened,
    span: Span,
    scale: Scale,
    softcap: Option<f32>,
    sinks: Option<&'a [f32]>,
    kernel: Kernel,
}

impl Run<'_> {
    /// Query rows `rows` of head `head` (KV head `g`), `q` their values, into `out`.
    fn tile(
        &self,
        q: &[f32],
        (head, g): (usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                // SAFETY: the AVX-512 kernel means the CPU has AVX-512 F, AVX2 and FMA.
                unsafe { self.tile_avx512(q, (head, g), rows, out) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // SAFETY: a non-scalar kernel means the CPU has AVX2 and FMA.
                unsafe { self.tile_avx2(q, (head, g), rows, out) }
            }
            _ => self.tile_in::<1, 16>(q, (head, g), rows, out),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile_avx512(
        &self,
        q: &[f32],
        at: (usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        self.tile_in::<4, 64>(q, at, rows, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2(
        &self,
        q: &[f32],
        at: (usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        self.tile_in::<4, 16>(q, at, rows, out)
    }

    /// The tile's algorithm, with products in blocks of `RB` rows by `W` columns.
    #[inline(always)]
    fn tile_in<const RB: usize, const W: usize>(
        &self,
        q: &[f32],
        (head, g): (usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let Widened { kt, vw, np, d } = self.keys;
        let (d, np, m) = (*d, *np, rows.len());
        // Gemma's layers scale the queries, not the scores (llama.cpp scales Q by an op of
        // its own and passes 1).
        let mut qs = q.to_vec();
        let scale = match self.scale {
            Scale::Scores(s) => s,
            Scale::Query(s) => {
                for x in &mut qs {
                    *x *= s;
                }
                1.0
            }
        };
        // With a soft cap ggml folds the scale into the tanh argument.
        let scale = self.softcap.map_or(scale, |cap| scale / cap);
        let seen: Vec<std::ops::Range<usize>> = rows.clone().map(|i| self.span.keys(i)).collect();
        let from = seen.iter().map(|r| r.start).min().unwrap_or(0);
        let to = seen.iter().map(|r| r.end).max().unwrap_or(0);
        let (mut max, mut sum) = (vec![f32::NEG_INFINITY; m], vec![0f32; m]);
        out.fill(0.0);
        let mut s = vec![0f32; m * KT];
        let mut j0 = from / KT * KT;
        while j0 < to {
            s.fill(0.0);
            products::<RB, W>((&qs, d), (&kt[g][j0..], np), (d, KT), (&mut s, KT), m);
            for (r, keys) in seen.iter().enumerate() {
                let row = &mut s[r * KT..(r + 1) * KT];
                // The row's visible keys in this tile, `lo..hi`; the rest weigh 0.
                let lo = keys.start.clamp(j0, j0 + KT) - j0;
                let hi = keys.end.clamp(j0, j0 + KT) - j0;
                if lo >= hi {
                    row.fill(0.0);
                    continue;
                }
                for x in row.iter_mut() {
                    *x *= scale;
                }
                if let Some(cap) = self.softcap {
                    for x in &mut row[lo..hi] {
                        *x = x.tanh() * cap;
                    }
                }
                row[..lo].fill(f32::NEG_INFINITY);
                row[hi..].fill(f32::NEG_INFINITY);
                let tile_max = lanes_max(row);
                let new = max[r].max(tile_max);
                if new > max[r] {
                    let ms = (max[r] - new).exp();
                    for o in &mut out[r * d..(r + 1) * d] {
                        *o *= ms;
                    }
                    sum[r] *= ms;
                }
                max[r] = new;
                let mut lanes = [0f32; LANES];
                for chunk in row.chunks_exact_mut(LANES) {
                    for (lane, x) in lanes.iter_mut().zip(chunk) {
                        *x = exp_to_zero(*x - new);
                        *lane += *x;
                    }
                }
                sum[r] += lanes_sum(lanes);
            }
            // Masked and padding keys weigh 0 (the padding rows are 0 too).
            products::<RB, W>((&s, KT), (&vw[g][j0 * d..], d), (KT, d), (out, d), m);
            j0 += KT;
        }
        let sink = self.sinks.map(|s| s[head]);
        for (r, o) in out.chunks_exact_mut(d).enumerate() {
            finish_row(o, (max[r], sum[r]), sink);
        }
    }
}

/// Lanes of the vectorized row loops: the row's elements `i` with the same `i mod LANES` are
/// summed in order, then the lanes in a fixed tree, so every SIMD width gives the same sum.
const LANES: usize = 16;

/// The largest of `row`'s values (a multiple of [`LANES`] long), in lanes.
#[inline(always)]
fn lanes_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in row.chunks_exact(LANES) {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    lanes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// The lanes added pairwise: 16 → 8 → 4 → 2 → 1.
#[inline(always)]
fn lanes_sum(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// `eˣ` for `x ≤ 0` (and `-∞`), 0 below −87: ggml's vectorized `expf` (`ggml_v_expf`, a
/// degree-5 polynomial after a reduction by `ln 2`), written without branches so the row
/// loops compile to vector code. Within 2 units in the last place of eˣ.
#[inline(always)]
fn exp_to_zero(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let xc = x.max(-87.0);
    let shift = c(0x4b40_0000); // 1.5 · 2²³: adding it rounds to an integer in the mantissa
    let z = xc.mul_add(c(0x3fb8_aa3b), shift); // x / ln 2 + shift
    let n = z - shift;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), xc));
    let k = f32::from_bits((z.to_bits() << 23).wrapping_add(1f32.to_bits())); // 2ⁿ
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    let e = j.mul_add(k, k);
    if x < -87.0 {
        0.0
    } else {
        e
    }
}

/// `c[i][j] += Σ_k a[i][k] · b[k][j]` for `m` rows, `k` terms and `n` columns, each output
/// one chain of fused multiply-adds in `k` order starting from its value in `c` (so every
/// block shape gives the same bits); `(slice, row stride)` for each matrix.
#[inline(always)]
fn products<const RB: usize, const W: usize>(
    (a, sa): (&[f32], usize),
    (b, sb): (&[f32], usize),
    (k, n): (usize, usize),
    (c, sc): (&mut [f32], usize),
    m: usize,
) {
    let mut i = 0;
    while i < m {
        let rb = if i + RB <= m { RB } else { 1 };
        let mut j = 0;
        while j < n {
            match (rb == RB, j + W <= n) {
                (true, true) => block::<RB, W>(
                    (&a[i * sa..], sa),
                    (&b[j..], sb),
                    k,
                    (&mut c[i * sc + j..], sc),
                ),
                (true, false) => block::<RB, 1>(
                    (&a[i * sa..], sa),
                    (&b[j..], sb),
                    k,
                    (&mut c[i * sc + j..], sc),
                ),
                (false, true) => block::<1, W>(
                    (&a[i * sa..], sa),
                    (&b[j..], sb),
                    k,
                    (&mut c[i * sc + j..], sc),
                ),
                (false, false) => block::<1, 1>(
                    (&a[i * sa..], sa),
                    (&b[j..], sb),
                    k,
                    (&mut c[i * sc + j..], sc),
                ),
            }
            j += if j + W <= n { W } else { 1 };
        }
        i += rb;
    }
}

/// One `R × C` block of [`products`], its sums held in registers across the `k` terms.
#[inline(always)]
fn block<const R: usize, const C: usize>(
    (a, sa): (&[f32], usize),
    (b, sb): (&[f32], usize),
    k: usize,
    (c, sc): (&mut [f32], usize),
) {
    let mut acc = [[0f32; C]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        row.copy_from_slice(&c[r * sc..r * sc + C]);
    }
    for t in 0..k {
        let bt = &b[t * sb..t * sb + C];
        for (r, row) in acc.iter_mut().enumerate() {
            let x = a[r * sa + t];
            for (o, &y) in row.iter_mut().zip(bt) {
                *o = x.mul_add(y, *o);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        c[r * sc..r * sc + C].copy_from_slice(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::gemv::{force_kernel, test_values};
    use candle_core::Device;
    use half::f16;

    struct Case {
        h: usize,
        kv: usize,
        d: usize,
        l: usize,
        span: Span,
        n: usize,
        logits: (Scale, Option<f32>),
        sinks: Option<Vec<f32>>,
    }

    /// Straightforward attention in f64 over each query's visible keys.
    fn reference(c: &Case, q: &[f32], k: &[f16], v: &[f16]) -> Vec<f64> {
        let (scale, softcap) = c.logits;
        let mut out = vec![0f64; c.h * c.l * c.d];
        for head in 0..c.h {
            let g = head / (c.h / c.kv);
            for i in 0..c.l {
                let qi = &q[(head * c.l + i) * c.d..][..c.d];
                let keys = c.span.keys(i);
                let scores: Vec<f64> = keys
                    .clone()
                    .map(|j| {
                        let kj = &k[(g * c.n + j) * c.d..][..c.d];
                        let dot: f64 = qi.iter().zip(kj).map(|(a, b)| *a as f64 * b.to_f64()).sum();
                        let s = match scale {
                            Scale::Scores(s) | Scale::Query(s) => dot * s as f64,
                        };
                        softcap.map_or(s, |cap| cap as f64 * (s / cap as f64).tanh())
                    })
                    .collect();
                let sink = c.sinks.as_ref().map(|s| s[head] as f64);
                let max = scores
                    .iter()
                    .copied()
                    .chain(sink)
                    .fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 =
                    weights.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - max).exp());
                let o = &mut out[(head * c.l + i) * c.d..][..c.d];
                for (w, j) in weights.iter().zip(keys) {
                    let vj = &v[(g * c.n + j) * c.d..][..c.d];
                    for (o, x) in o.iter_mut().zip(vj) {
                        *o += w / total * x.to_f64();
                    }
                }
            }
        }
        out
    }

    fn run(c: &Case, q: &[f32], k: &[f16], v: &[f16]) -> Vec<f32> {
        let dev = Device::Cpu;
        let q = Tensor::from_vec(q.to_vec(), (1, c.h, c.l, c.d), &dev).unwrap();
        let k = Tensor::from_vec(k.to_vec(), (1, c.kv, c.n, c.d), &dev).unwrap();
        let v = Tensor::from_vec(v.to_vec(), (1, c.kv, c.n, c.d), &dev).unwrap();
        attend_tiled(&q, &k, &v, c.span, c.logits, c.sinks.as_deref())
            .unwrap()
            .expect("cache-like tensors are supported")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn cases() -> Vec<Case> {
        let span = |pos, first_key, window| Span {
            pos,
            first_key,
            window,
        };
        vec![
            // A whole prompt, GQA, heads of 64: several query and key tiles, partial last ones.
            Case {
                h: 4,
                kv: 2,
                d: 64,
                l: 100,
                span: span(0, 0, None),
                n: 100,
                logits: (Scale::Scores(0.125), None),
                sinks: None,
            },
            // A prompt after 100 cached positions, in a window of 50 (the first query sees
            // keys from position 51), one KV head, heads of 80 (not a multiple of the column
            // block), Gemma's query scale and a soft cap.
            Case {
                h: 3,
                kv: 1,
                d: 80,
                l: 70,
                span: span(100, 51, Some(50)),
                n: 119,
                logits: (Scale::Query(0.2), Some(30.0)),
                sinks: None,
            },
            // Sinks (gpt-oss), heads of 256.
            Case {
                h: 2,
                kv: 2,
                d: 256,
                l: 65,
                span: span(10, 0, None),
                n: 75,
                logits: (Scale::Scores(0.0625), None),
                sinks: Some(vec![0.5, 3.0]),
            },
        ]
    }

    /// Queries, and keys and values as the cache holds them (f16), from seeds `seed..seed + 3`.
    fn inputs(c: &Case, seed: u32) -> (Vec<f32>, Vec<f16>, Vec<f16>) {
        let halves = |seed| {
            test_values(c.kv * c.n * c.d, seed)
                .into_iter()
                .map(f16::from_f32)
                .collect()
        };
        (
            test_values(c.h * c.l * c.d, seed),
            halves(seed + 1),
            halves(seed + 2),
        )
    }

    #[test]
    fn tiles_agree_with_attention_in_f64() {
        for (t, c) in cases().iter().enumerate() {
            let (q, k, v) = inputs(c, 11 + 3 * t as u32);
            let want = reference(c, &q, &k, &v);
            let got = run(c, &q, &k, &v);
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 1e-5 * b.abs().max(0.1),
                    "case {t}, output {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn every_kernel_form_gives_the_same_bits() {
        for (t, c) in cases().iter().enumerate() {
            let (q, k, v) = inputs(c, 41 + 3 * t as u32);
            let best = run(c, &q, &k, &v);
            for form in [Kernel::Avx2, Kernel::Scalar] {
                force_kernel(Some(form));
                let got = run(c, &q, &k, &v);
                force_kernel(None);
                assert!(
                    got.iter()
                        .zip(&best)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {t}: {form:?} differs from {:?}",
                    kernel()
                );
            }
        }
    }

    #[test]
    fn the_row_exponential_is_expf_within_two_ulps_and_zero_far_below() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_to_zero(x), (x as f64).exp());
            let ulp = (want as f32).to_bits().abs_diff(got.to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert_eq!(exp_to_zero(0.0), 1.0);
        assert_eq!(exp_to_zero(-88.0), 0.0);
        assert_eq!(exp_to_zero(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn batches_and_foreign_layouts_are_declined() {
        let dev = Device::Cpu;
        let span = Span {
            pos: 0,
            first_key: 0,
            window: None,
        };
        let q = Tensor::zeros((2, 2, 64, 8), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 1, 64, 8), candle_core::DType::F16, &dev).unwrap();
        let logits = (Scale::Scores(1.0), None);
        assert!(attend_tiled(&q, &k, &k, span, logits, None)
            .unwrap()
            .is_none());
        let q = q.narrow(0, 0, 1).unwrap();
        let k32 = k.to_dtype(candle_core::DType::F32).unwrap();
        assert!(attend_tiled(&q, &k32, &k32, span, logits, None)
            .unwrap()
            .is_none());
        assert!(attend_tiled(&q, &k, &k, span, logits, None)
            .unwrap()
            .is_some());
    }
}
