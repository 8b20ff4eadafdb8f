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
//! the portable one in an array. Rows go four at a time over the CPU pool, each pass reading
//! one contiguous run and prefetching the next in order ([`super::mxfp4_quads`]); each
//! activation row is quantized once per product (the quantization's AVX2 form gives the
//! portable one's integers and scales), and every input runs against the four rows while
//! they are in cache, up to four inputs per pass over their blocks (with AVX2, one input
//! per four rows or two per pair of them), so a block's codes are decoded once for all.

use super::fp8::{fold16, LANES};
use super::gemv::{nearest_int, Kernel};
#[cfg(target_arch = "x86_64")]
use super::mxfp4_quads as quads;
use crate::formats::mxfp4::{e8m0_half, BLOCK, BLOCK_BYTES, VALUES};

/// Weight rows per pass: one contiguous run of memory, read in order.
pub(super) const ROWS: usize = 4;

/// The largest quantized activation.
const QMAX: f32 = 32767.0;

/// Activation values from which a product quantizes its inputs on the pool: about 20 µs of
/// work on one thread.
const PARALLEL_QUANTIZE: usize = 1 << 16;

/// [`e8m0_half`] of every exponent byte, looked up per block.
pub(super) static HALF_SCALES: [f32; 256] = {
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
    pub(super) qs: Vec<i16>,
    pub(super) d: Vec<f32>,
}

impl Q16 {
    /// Whether the input holds at least `nb` blocks.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn covers(&self, nb: usize) -> bool {
        self.qs.len() >= nb * BLOCK && self.d.len() >= nb
    }
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

/// [`quad_products`] with AVX2, whose sixteen registers hold the running sums of four rows
/// for one input or of two rows for two: one input runs against all four rows, several run
/// two at a time against each pair of them (each pair's pass prefetching the next pair).
///
/// # Safety
/// As [`simd_quads`], on CPUs with AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_rows(
    quad: quads::Quad,
    nb: usize,
    xs: &[Q16],
    mut put: impl FnMut(usize, [f32; ROWS]),
) {
    let ([r0, r1, r2, r3], ahead) = quad;
    if xs.len() == 1 {
        return put(0, quads::rows_avx2::<4, 1>(quad, nb, xs)[0]);
    }
    let mut vals = [[0f32; ROWS]; 2];
    for (g, group) in xs.chunks(2).enumerate() {
        for (half, rows) in [[r0, r1], [r2, r3]].into_iter().enumerate() {
            let pair = (rows, ahead / 2);
            let v: &[[f32; 2]] = match group.len() {
                1 => &quads::rows_avx2::<2, 1>(pair, nb, group),
                _ => &quads::rows_avx2::<2, 2>(pair, nb, group),
            };
            for (t, v) in v.iter().enumerate() {
                vals[t][2 * half..2 * half + 2].copy_from_slice(v);
            }
        }
        for (t, v) in vals[..group.len()].iter().enumerate() {
            put(2 * g + t, *v);
        }
    }
}

/// `out[j·n + i] = W[i] · x[j]` for MXFP4 `weights` holding `n` rows of `k` values (`k` a
/// multiple of 32) and `x` holding `m` rows of `k` (`out`: `m × n`). Each product is what the
/// single-row one computes, whatever `m`. Rows go four at a time over the CPU pool (a last,
/// partial four repeats its last row).
pub fn matmul(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    let row_bytes = k / BLOCK * BLOCK_BYTES;
    let m = x.len() / k.max(1);
    assert!(
        k.is_multiple_of(BLOCK)
            && x.len() == m * k
            && out.len() == m * n
            && weights.len() >= n * row_bytes
    );
    let xs = quantize_inputs(x, k, kernel != Kernel::Scalar);
    let out_addr = out.as_mut_ptr() as usize;
    super::pool::Pool::global().run(n.div_ceil(ROWS), |quads| {
        for q in quads {
            let r0 = ROWS * q;
            let rows = std::array::from_fn(|i| (r0 + i).min(n - 1));
            quad_products(kernel, (weights, row_bytes), rows, &xs, |j, vals| {
                for (i, v) in vals.iter().enumerate().take(n - r0) {
                    // SAFETY: each four rows are handed to one thread, which writes only
                    // their entries of `out` (`j < m`), and `out` outlives the call.
                    unsafe { *(out_addr as *mut f32).add(j * n + r0 + i) = *v };
                }
            });
        }
    });
}

/// Each row of `x` (`k` values each) quantized, on the pool when there are many (a
/// prompt's), where the work outweighs a second hand-out to the pool's threads.
fn quantize_inputs(x: &[f32], k: usize, simd: bool) -> Vec<Q16> {
    let m = x.len() / k.max(1);
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
    xs
}

/// Rows `rows` of `weights` (rows of `row_bytes`) against every input of `xs`:
/// `put(j, [row · x_j for each row])`.
fn quad_products(
    kernel: Kernel,
    (weights, row_bytes): (&[u8], usize),
    rows: [usize; ROWS],
    xs: &[Q16],
    mut put: impl FnMut(usize, [f32; ROWS]),
) {
    let row = |i: usize| &weights[i * row_bytes..(i + 1) * row_bytes];
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Scalar {
        let quad = (rows.map(|i| row(i).as_ptr()), ROWS * row_bytes);
        let nb = row_bytes / BLOCK_BYTES;
        let wide = kernel == Kernel::Avx512Vnni;
        // SAFETY: SIMD kernels are selected only when the CPU reports their features
        // (`gemv::kernel()`, or a slower one forced in tests); each row pointer comes from a
        // slice of `row_bytes`, `nb` blocks, which every input covers (`matmul` checked).
        return unsafe { simd_quads(wide, quad, nb, xs, put) };
    }
    let _ = kernel;
    for (j, x) in xs.iter().enumerate() {
        put(j, rows.map(|i| dot_portable(row(i), x)));
    }
}

/// [`quad_products`] with AVX-512 (`wide`: inputs four at a time, as many as keep the
/// running sums in registers, 4·M of 32 zmm) or AVX2 ([`avx2_rows`]).
///
/// # Safety
/// Only on CPUs with AVX2, FMA and F16C, and with AVX-512 F and BW when `wide`; as
/// [`quads::quad_avx512`] for the rows and inputs.
#[cfg(target_arch = "x86_64")]
unsafe fn simd_quads(
    wide: bool,
    quad: quads::Quad,
    nb: usize,
    xs: &[Q16],
    mut put: impl FnMut(usize, [f32; ROWS]),
) {
    if !wide {
        return avx2_rows(quad, nb, xs, put);
    }
    for (g, group) in xs.chunks(4).enumerate() {
        macro_rules! run {
            ($m:literal) => {
                for (t, v) in quads::quad_avx512::<$m>(quad, nb, group)
                    .into_iter()
                    .enumerate()
                {
                    put(4 * g + t, v)
                }
            };
        }
        match group.len() {
            1 => run!(1),
            2 => run!(2),
            3 => run!(3),
            _ => run!(4),
        }
    }
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
        // Whole fours of rows and a last four of one, two and three; every count of inputs
        // a pass takes (AVX-512: groups of up to four; AVX2: one, or pairs), and more.
        for (n, m) in (21..=24).flat_map(|n| (1..=9).map(move |m| (n, m))) {
            batch_equals_single_rows(n, m);
        }
    }

    /// The `m` inputs' products with `n` rows, by every kernel, equal the portable ones, and
    /// each input's products equal its own single-input ones.
    fn batch_equals_single_rows(n: usize, m: usize) {
        let k = 288;
        let w = weights(n, k, 3);
        let x = test_values(m * k, 4 + m as u32);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let runs: Vec<Vec<u32>> = kernels()
            .into_iter()
            .map(|kern| {
                let mut out = vec![0f32; m * n];
                matmul(&w, n, k, &x, &mut out, kern);
                for j in 0..m {
                    let mut one = vec![0f32; n];
                    matmul(&w, n, k, &x[j * k..(j + 1) * k], &mut one, kern);
                    let batch = &out[j * n..(j + 1) * n];
                    assert_eq!(
                        bits(&one),
                        bits(batch),
                        "{kern:?} {n} rows, input {j} of {m}"
                    );
                }
                bits(&out)
            })
            .collect();
        for (i, r) in runs.iter().enumerate().skip(1) {
            assert_eq!(
                r, &runs[0],
                "kernel {i} against the portable one, {n} rows, {m} inputs"
            );
        }
    }
}
