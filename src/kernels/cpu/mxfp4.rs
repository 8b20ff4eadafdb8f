//! Products of MXFP4 weights ([`crate::formats::mxfp4`]) with activations on the CPU, in
//! integers: the weights' codes are read in place as ggml's doubled e2m1 values (integers
//! -12..12), the activations are quantized to **16 bits** per block of 32 (`q = round(x ·
//! 32767 / max|x|)`, scale `d = max|x| / 32767`), and each block's products are exact i32
//! sums (`madd_epi16`: i16 × i16 → i32), scaled once by `2^(e - 128) · d` into f32.
//!
//! Why 16 bits: llama.cpp rounds the activations to 8 bits per block of 32 (its Q8_0) for
//! this type, and on gpt-oss's experts that moved the logits of the tiny reference model by
//! several percent, where the reference (transformers on the dequantized weights) holds us
//! to half a percent. Sixteen bits move each activation by at most `max|x| / 65534` (2^-16
//! of the block's largest), far below that bound (the oracle's `gpt-oss-mxfp4` case: worst
//! relative RMS error 1.80e-4, against 1.79e-4 with f32 activations), and cost no more than
//! eight would: the weights' values are looked up with one byte shuffle of the 16 codes,
//! widened to i16 and multiplied in one `madd` per 32 values, where f32 activations took a
//! conversion and a multiply-add per 8 (about 15 vector operations per block, against 8).
//! VNNI's `vpdpwssd` would add nothing: every block's sums go to f32 at once, as its scale
//! is its own.
//!
//! Every kernel computes the same integers and the same float steps, so all agree bit for
//! bit: per block, lane `l` of sixteen holds the exact `v[2l]·q[2l] + v[2l+1]·q[2l+1]` (at
//! most 2·12·32767, exact in f32), fused into the lane's running sum as `lane · s + sum`
//! with `s = 2^(e - 128) · d` rounded once; the lanes are then folded to eight (`s[l] +
//! s[l + 8]`) and added as `hsum_float_8` does (`fp8::fold16`). The AVX-512 kernel
//! holds the sixteen lanes in one register, the AVX2 one in two (elements 0..16, 16..32),
//! the portable one in an array. Rows go in pairs over the CPU pool (two independent chains
//! per input); each activation row is quantized once per product (the quantization's AVX2
//! form gives the portable one's integers and scales), and every input runs against the pair
//! while its rows are in cache, up to four inputs per pass over the pair's blocks (two with
//! AVX2), so a block's codes are decoded once for all of them.

use super::fp8::{fold16, LANES};
use super::gemv::{nearest_int, Kernel};
use crate::formats::mxfp4::{e8m0_half, BLOCK, BLOCK_BYTES, VALUES};

/// The largest quantized activation.
const QMAX: f32 = 32767.0;

/// Activation values from which a product quantizes its inputs on the pool: about 20 µs of
/// work on one thread.
const PARALLEL_QUANTIZE: usize = 1 << 16;

/// [`e8m0_half`] of every exponent byte, looked up per block.
static HALF_SCALES: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut e = 0;
    while e < 256 {
        t[e] = e8m0_half(e as u8);
        e += 1;
    }
    t
};

/// Activations quantized per block of 32: `x ≈ qs · d` with `|qs| ≤ 32767`.
pub(crate) struct Q16 {
    qs: Vec<i16>,
    d: Vec<f32>,
}

/// Quantizes `x` (a multiple of 32 long): per block `q = round(x · 32767 / max|x|)` (ties to
/// even), `d = max|x| / 32767`. A block holding a NaN or an infinity gets zeros and a NaN
/// `d`, so its products are NaN. With `simd` (only where the CPU has AVX2, FMA and F16C) the
/// AVX2 form runs, with the same results.
pub(crate) fn quantize(x: &[f32], simd: bool) -> Q16 {
    let mut q = Q16 {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(x.len() / BLOCK),
    };
    for (block, out) in x.chunks_exact(BLOCK).zip(q.qs.chunks_exact_mut(BLOCK)) {
        #[cfg(target_arch = "x86_64")]
        let d = if simd {
            // SAFETY: the caller asks for SIMD only where the CPU has AVX2, FMA and F16C.
            unsafe { quantize_block_avx2(block, out) }
        } else {
            quantize_block(block, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let d = {
            let _ = simd;
            quantize_block(block, out)
        };
        q.d.push(d);
    }
    q
}

/// One block of [`quantize`]: the values into `out`; the scale.
fn quantize_block(block: &[f32], out: &mut [i16]) -> f32 {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !amax.is_finite() || block.iter().any(|v| v.is_nan()) {
        out.fill(0);
        return f32::NAN;
    }
    let id = if amax > 0.0 { QMAX / amax } else { 0.0 };
    for (o, v) in out.iter_mut().zip(block) {
        // |v · id| ≤ 32767·(1 + 2^-23) rounds within i16, and `nearest_int` holds there.
        *o = nearest_int(v * id) as i16;
    }
    amax / QMAX
}

/// [`quantize_block`] in AVX2, with the same results (the conversion rounds to nearest even,
/// as `nearest_int` does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_avx2(block: &[f32], out: &mut [i16]) -> f32 {
    use std::arch::x86_64::*;
    assert!(block.len() == BLOCK && out.len() == BLOCK);
    let p = block.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let (mut m, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for x in v {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps::<1>(m4, m4)));
    if !amax.is_finite() || _mm256_movemask_ps(nan) != 0 {
        out.fill(0);
        return f32::NAN;
    }
    let id = _mm256_set1_ps(if amax > 0.0 { QMAX / amax } else { 0.0 });
    let mut r = [_mm256_setzero_si256(); 4];
    for (r, x) in r.iter_mut().zip(v) {
        *r = _mm256_cvtps_epi32(_mm256_mul_ps(x, id));
    }
    // The packs interleave 128-bit lanes; the permutes restore element order.
    let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(r[0], r[1]));
    let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, lo);
    _mm256_storeu_si256(out.as_mut_ptr().add(16) as *mut __m256i, hi);
    amax / QMAX
}

/// The integer value of element `j` of a block (low nibbles hold 0..16, high ones 16..32).
#[inline(always)]
fn value(block: &[u8], j: usize) -> i32 {
    let byte = block[1 + j % 16];
    let code = if j < 16 { byte & 0x0F } else { byte >> 4 };
    VALUES[code as usize] as i32
}

/// One row against `x`, lane by lane (portable).
fn dot_portable(row: &[u8], x: &Q16) -> f32 {
    let mut acc = [0f32; LANES];
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let s = HALF_SCALES[block[0] as usize] * x.d[b];
        let q = &x.qs[b * BLOCK..(b + 1) * BLOCK];
        for (l, a) in acc.iter_mut().enumerate() {
            let lane = value(block, 2 * l) * q[2 * l] as i32
                + value(block, 2 * l + 1) * q[2 * l + 1] as i32;
            *a = (lane as f32).mul_add(s, *a);
        }
    }
    fold16(acc)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{HALF_SCALES, Q16};
    use crate::formats::mxfp4::{BLOCK, BLOCK_BYTES, VALUES};
    use crate::kernels::cpu::gemv::{halves_ps, hsum, prefetch_ahead};

    /// The 32 values of the block at `p` as i8, in element order: the 16 code bytes in both
    /// halves, the high half shifted down a nibble, masked, then looked up in the table.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn values(p: *const u8) -> __m256i {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(VALUES.as_ptr() as *const __m128i));
        let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(1) as *const __m128i));
        let shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
        let codes = _mm256_and_si256(_mm256_srlv_epi32(q, shift), _mm256_set1_epi8(0x0F));
        _mm256_shuffle_epi8(table, codes)
    }

    /// The blocks both rows have, checked against every input.
    fn blocks(ra: &[u8], rb: &[u8], xs: &[Q16]) -> usize {
        let nb = ra.len().min(rb.len()) / BLOCK_BYTES;
        assert!(xs
            .iter()
            .all(|x| x.qs.len() >= nb * BLOCK && x.d.len() >= nb));
        nb
    }

    /// Rows `ra` and `rb` against the `M` inputs `xs` with AVX2: per row and input, lanes
    /// 0..8 in one register and 8..16 in another.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn pair_avx2<const M: usize>(
        ra: &[u8],
        rb: &[u8],
        xs: &[Q16],
    ) -> [[f32; 2]; M] {
        assert_eq!(xs.len(), M);
        let nb = blocks(ra, rb, xs);
        let mut acc = [[[_mm256_setzero_ps(); 2]; 2]; M];
        for b in 0..nb {
            let p = [
                ra.as_ptr().add(b * BLOCK_BYTES),
                rb.as_ptr().add(b * BLOCK_BYTES),
            ];
            let mut w = [[_mm256_setzero_si256(); 2]; 2];
            let mut sw = [0f32; 2];
            for r in 0..2 {
                prefetch_ahead(p[r]);
                let v = values(p[r]);
                w[r] = [
                    _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
                    _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v)),
                ];
                sw[r] = HALF_SCALES[*p[r] as usize];
            }
            for j in 0..M {
                let x = &xs[j];
                let xp = x.qs.as_ptr().add(b * BLOCK);
                let xv = [
                    _mm256_loadu_si256(xp as *const __m256i),
                    _mm256_loadu_si256(xp.add(16) as *const __m256i),
                ];
                // In bounds: `blocks` checked that every input has `nb` scales.
                let dx = *x.d.get_unchecked(b);
                for r in 0..2 {
                    let s = _mm256_set1_ps(sw[r] * dx);
                    for h in 0..2 {
                        let lanes = _mm256_cvtepi32_ps(_mm256_madd_epi16(w[r][h], xv[h]));
                        acc[j][r][h] = _mm256_fmadd_ps(lanes, s, acc[j][r][h]);
                    }
                }
            }
        }
        let mut out = [[0f32; 2]; M];
        for j in 0..M {
            for r in 0..2 {
                out[j][r] = hsum(_mm256_add_ps(acc[j][r][0], acc[j][r][1]));
            }
        }
        out
    }

    /// Rows `ra` and `rb` against the `M` inputs `xs` with AVX-512: per row and input, the
    /// sixteen lanes in one register.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn pair_avx512<const M: usize>(
        ra: &[u8],
        rb: &[u8],
        xs: &[Q16],
    ) -> [[f32; 2]; M] {
        assert_eq!(xs.len(), M);
        let nb = blocks(ra, rb, xs);
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for b in 0..nb {
            let p = [
                ra.as_ptr().add(b * BLOCK_BYTES),
                rb.as_ptr().add(b * BLOCK_BYTES),
            ];
            prefetch_ahead(p[0]);
            prefetch_ahead(p[1]);
            let w = [
                _mm512_cvtepi8_epi16(values(p[0])),
                _mm512_cvtepi8_epi16(values(p[1])),
            ];
            let sw = [HALF_SCALES[*p[0] as usize], HALF_SCALES[*p[1] as usize]];
            for j in 0..M {
                let x = &xs[j];
                let xv = _mm512_loadu_si512(x.qs.as_ptr().add(b * BLOCK) as *const _);
                // In bounds: `blocks` checked that every input has `nb` scales.
                let dx = *x.d.get_unchecked(b);
                for r in 0..2 {
                    let lanes = _mm512_cvtepi32_ps(_mm512_madd_epi16(w[r], xv));
                    acc[j][r] = _mm512_fmadd_ps(lanes, _mm512_set1_ps(sw[r] * dx), acc[j][r]);
                }
            }
        }
        let mut out = [[0f32; 2]; M];
        for j in 0..M {
            for r in 0..2 {
                let (lo, hi) = halves_ps(acc[j][r]);
                out[j][r] = hsum(_mm256_add_ps(lo, hi));
            }
        }
        out
    }
}

/// Rows `ra` and `rb` against every input of `xs`: `put(j, a · x_j, b · x_j)`.
fn pair_products(
    kernel: Kernel,
    ra: &[u8],
    rb: &[u8],
    xs: &[Q16],
    mut put: impl FnMut(usize, f32, f32),
) {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Scalar {
        // SAFETY: SIMD kernels are selected only when the CPU reports their features
        // (`gemv::kernel()`, or a slower one forced in tests).
        return unsafe { simd_products(kernel == Kernel::Avx512Vnni, ra, rb, xs, put) };
    }
    let _ = kernel;
    for (j, x) in xs.iter().enumerate() {
        put(j, dot_portable(ra, x), dot_portable(rb, x));
    }
}

/// [`pair_products`] with AVX-512 (`wide`) or AVX2, inputs taken in groups of as many as
/// keep the running sums in registers (2·M of 32 zmm; 2·2·M of 16 ymm).
///
/// # Safety
/// Only on CPUs with AVX2, FMA and F16C, and with AVX-512 F and BW when `wide`.
#[cfg(target_arch = "x86_64")]
unsafe fn simd_products(
    wide: bool,
    ra: &[u8],
    rb: &[u8],
    xs: &[Q16],
    mut put: impl FnMut(usize, f32, f32),
) {
    let group = if wide { 4 } else { 2 };
    let mut vals = [[0f32; 2]; 4];
    for (g, xs) in xs.chunks(group).enumerate() {
        macro_rules! run {
            ($form:ident, $m:literal) => {
                vals[..$m].copy_from_slice(&x86::$form::<$m>(ra, rb, xs))
            };
        }
        match (wide, xs.len()) {
            (false, 1) => run!(pair_avx2, 1),
            (false, _) => run!(pair_avx2, 2),
            (true, 1) => run!(pair_avx512, 1),
            (true, 2) => run!(pair_avx512, 2),
            (true, 3) => run!(pair_avx512, 3),
            (true, _) => run!(pair_avx512, 4),
        }
        for (t, [a, b]) in vals[..xs.len()].iter().enumerate() {
            put(group * g + t, *a, *b);
        }
    }
}

/// `out[j·n + i] = W[i] · x[j]` for MXFP4 `weights` holding `n` rows of `k` values (`k` a
/// multiple of 32) and `x` holding `m` rows of `k` (`out`: `m × n`). Each product is what the
/// single-row one computes, whatever `m`.
pub fn matmul(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    let row_bytes = k / BLOCK * BLOCK_BYTES;
    let m = x.len() / k.max(1);
    assert!(
        k.is_multiple_of(BLOCK)
            && x.len() == m * k
            && out.len() == m * n
            && weights.len() >= n * row_bytes
    );
    // Each input quantized once; on the pool when there are many (a prompt's), where the
    // work outweighs a second hand-out to the pool's threads.
    let simd = kernel != Kernel::Scalar;
    let mut xs: Vec<Q16> = (0..m)
        .map(|_| Q16 {
            qs: Vec::new(),
            d: Vec::new(),
        })
        .collect();
    let xs_addr = xs.as_mut_ptr() as usize;
    let quantize_all = |inputs: std::ops::Range<usize>| {
        for j in inputs {
            let q = quantize(&x[j * k..(j + 1) * k], simd);
            // SAFETY: each input index is handed to one thread, which alone writes its entry
            // of `xs` (`j < m`), and `xs` outlives the call.
            unsafe { *(xs_addr as *mut Q16).add(j) = q };
        }
    };
    if m * k >= PARALLEL_QUANTIZE {
        super::pool::Pool::global().run(m, quantize_all);
    } else {
        quantize_all(0..m);
    }
    let row = |i: usize| &weights[i * row_bytes..(i + 1) * row_bytes];
    let out_addr = out.as_mut_ptr() as usize;
    super::pool::Pool::global().run(n.div_ceil(2), |pairs| {
        for p in pairs {
            let (a, b) = (2 * p, (2 * p + 1).min(n - 1));
            pair_products(kernel, row(a), row(b), &xs, |j, va, vb| {
                // SAFETY: each pair of rows is handed to one thread, which writes only its
                // rows' entries of `out` (`j < m`), and `out` outlives the call.
                unsafe {
                    *(out_addr as *mut f32).add(j * n + a) = va;
                    *(out_addr as *mut f32).add(j * n + b) = vb;
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::mxfp4;
    use crate::kernels::cpu::gemv::{kernel, test_values};

    /// Each row's product with `x` in f64 (weights dequantized): `(product, bound)`, the
    /// bound being what quantizing `x` may move it (`Σ |w| · d / 2` over the blocks) plus
    /// room for f32 rounding.
    fn exact(w: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<(f64, f64)> {
        let mut dense = vec![0f32; n * k];
        mxfp4::dequantize(w, &mut dense);
        let q = quantize(x, false);
        dense
            .chunks_exact(k)
            .map(|r| {
                let (mut sum, mut bound) = (0f64, 0f64);
                for (i, (a, v)) in r.iter().zip(x).enumerate() {
                    let (a, v) = (*a as f64, *v as f64);
                    sum += a * v;
                    bound += a.abs() * (q.d[i / BLOCK] as f64 / 2.0 + v.abs() * 1e-5);
                }
                (sum, bound)
            })
            .collect()
    }

    /// Each row's product with the quantized activations in f64 (every term exact), and
    /// the sum of the terms' magnitudes.
    fn with_quantized_x(w: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<(f64, f64)> {
        let mut dense = vec![0f32; n * k];
        mxfp4::dequantize(w, &mut dense);
        let q = quantize(x, false);
        dense
            .chunks_exact(k)
            .map(|r| {
                let terms = r.iter().zip(&q.qs).enumerate();
                terms.fold((0.0, 0.0), |(s, size), (i, (a, v))| {
                    let t = *a as f64 * *v as f64 * q.d[i / BLOCK] as f64;
                    (s + t, size + t.abs())
                })
            })
            .collect()
    }

    fn kernels() -> Vec<Kernel> {
        let mut ks = vec![Kernel::Scalar];
        if kernel() != Kernel::Scalar {
            ks.push(Kernel::Avx2);
        }
        if kernel() == Kernel::Avx512Vnni {
            ks.push(Kernel::Avx512Vnni);
        }
        ks
    }

    fn weights(n: usize, k: usize, seed: u32) -> Vec<u8> {
        let mut values = test_values(n * k, seed);
        // A zero, and a block of one large value: codes 0/8 and a high exponent.
        values[5] = 0.0;
        values[k.min(n * k - 1)] = 40.0;
        mxfp4::quantize(&values)
    }

    #[test]
    fn quantized_activations_are_within_half_a_step() {
        let mut x = test_values(32 * 8, 7);
        x[40] = 1e4;
        x[70] = -3e-3;
        for v in &mut x[96..128] {
            *v = 0.0;
        }
        let q = quantize(&x, false);
        for (i, v) in x.iter().enumerate() {
            let d = q.d[i / BLOCK];
            let back = q.qs[i] as f32 * d;
            assert!(
                (back - v).abs() <= d * 0.5001,
                "{i}: {v} vs {back} (step {d})"
            );
        }
        // The largest of a block maps to ±32767; a block of zeros to zeros.
        assert_eq!(q.qs[40], 32767);
        assert!(q.qs[96..128].iter().all(|&v| v == 0) && q.d[3] == 0.0);
        let mut bad = [1f32; 64];
        (bad[3], bad[40]) = (f32::NAN, f32::INFINITY);
        let bad = quantize(&bad, false);
        assert!(bad.d.iter().all(|d| d.is_nan()) && bad.qs.iter().all(|&v| v == 0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_quantization_equals_the_portable_one() {
        if kernel() == Kernel::Scalar {
            return;
        }
        let mut x = test_values(32 * 8, 9);
        // Ties after scaling (a block whose largest is 32767 scales by 1), a block of zeros,
        // a NaN, an infinity, a negative largest value.
        x[..4].copy_from_slice(&[32767.0, 0.5, 1.5, -2.5]);
        x[32..64].fill(0.0);
        (x[70], x[100], x[130]) = (f32::NAN, f32::NEG_INFINITY, -7.0);
        let (a, b) = (quantize(&x, false), quantize(&x, true));
        assert_eq!(a.qs, b.qs);
        let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.d), bits(&b.d));
        assert_eq!(a.qs[..4], [32767, 0, 2, -2]);
    }

    #[test]
    fn every_kernel_equals_the_portable_one_and_the_exact_product() {
        // 48 rows (pairs) and 47 (a last row alone), 9 blocks and 1.
        for (n, k) in [(48, 288), (47, 256), (3, 32)] {
            let w = weights(n, k, 1);
            let mut x = test_values(k, 2);
            x[3] = 9.0;
            let exact = exact(&w, n, k, &x);
            let integer = with_quantized_x(&w, n, k, &x);
            let mut portable = vec![0f32; n];
            matmul(&w, n, k, &x, &mut portable, Kernel::Scalar);
            let rows = portable.iter().zip(&exact).zip(&integer).enumerate();
            for (i, ((got, (e, bound)), (q, size))) in rows {
                let got = *got as f64;
                // The integers are exact; only the per-block scaling and the sums round.
                assert!((got - q).abs() <= 1e-6 * size, "row {i}: {got} vs {q}");
                assert!(
                    (got - e).abs() <= *bound,
                    "row {i}: {got} vs {e} (bound {bound})"
                );
            }
            for kern in kernels() {
                let mut out = vec![0f32; n];
                matmul(&w, n, k, &x, &mut out, kern);
                for (i, (a, b)) in out.iter().zip(&portable).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{kern:?} {n}x{k} row {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_agrees_bit_for_bit_and_batches_equal_single_rows() {
        let (n, k) = (21, 288);
        let w = weights(n, k, 3);
        for m in [2, 5, 9] {
            let x = test_values(m * k, 4 + m as u32);
            let runs: Vec<Vec<f32>> = kernels()
                .into_iter()
                .map(|kern| {
                    let mut out = vec![0f32; m * n];
                    matmul(&w, n, k, &x, &mut out, kern);
                    for j in 0..m {
                        let mut one = vec![0f32; n];
                        matmul(&w, n, k, &x[j * k..(j + 1) * k], &mut one, kern);
                        assert_eq!(one, out[j * n..(j + 1) * n].to_vec(), "{kern:?} input {j}");
                    }
                    out
                })
                .collect();
            for (i, r) in runs.iter().enumerate().skip(1) {
                assert_eq!(
                    r, &runs[0],
                    "kernel {i} against the portable one, {m} inputs"
                );
            }
        }
    }
}
