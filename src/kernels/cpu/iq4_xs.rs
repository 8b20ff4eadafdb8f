//! Matrix-vector products for IQ4_XS weights ([`crate::formats::iq4`]) on the CPU. The maths
//! is ggml's `vec_dot_iq4_xs_q8_K`: activations quantized per super-block of 256 to 8 bits
//! (Q8_K, [`super::kdots::quantize`]), weights `d · (ls - 32) · VALUES[code]` with a 6-bit
//! `ls` per sub-block of 32.
//!
//! Two forms, which differ in the last bits as ggml's AVX2 and scalar ones do:
//! - AVX2 (also what CPUs with AVX-512 run): per super-block the exact integer sum of
//!   `(ls - 32) · VALUES[code] · q` in eight i32 lanes, then `d · d_x × lanes` fused into one
//!   eight-lane chain, summed as `hsum_float_8` (ggml's steps; the lanes hold other terms than
//!   ggml's, see [`avx2`]).
//! - portable: ggml's scalar form, per sub-block `sum += (d · d_x · (ls - 32)) · Σ
//!   VALUES[code] · q`.
//!
//! Weight rows are split over the pool; each row's super-blocks are unpacked once for up to
//! four activation rows, and every product is the one a single row gets, bit for bit.

use super::gemv::{block_sum, Kernel};
use super::kdots::{f16_at, quantize, Q8K, QK_K};
use crate::formats::iq4::{xs_scale, VALUES, XS_BLOCK_BYTES as BYTES};

/// Activation rows one pass over a weight row serves.
const GROUP: usize = 4;

/// The portable products of one weight row with `M` activation rows.
fn portable<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
    let mut sums = [0f32; M];
    for (b, blk) in row.chunks_exact(BYTES).enumerate() {
        let d = f16_at(blk, 0);
        let mut q = [[0i8; 32]; 8];
        for (j, sub) in q.iter_mut().enumerate() {
            for (t, &byte) in blk[8 + 16 * j..8 + 16 * (j + 1)].iter().enumerate() {
                sub[t] = VALUES[(byte & 0x0F) as usize];
                sub[t + 16] = VALUES[(byte >> 4) as usize];
            }
        }
        let ls: [f32; 8] = std::array::from_fn(|j| xs_scale(blk, j) as f32);
        for (x, sum) in xs.iter().zip(sums.iter_mut()) {
            let d4d8 = d * x.d[b];
            let runs = x.qs[b * QK_K..(b + 1) * QK_K].as_chunks::<32>().0;
            for ((sub, l), xq) in q.iter().zip(&ls).zip(runs) {
                *sum += (d4d8 * l) * block_sum(sub, xq) as f32;
            }
        }
    }
    sums
}

/// One activation row as the AVX2 form reads it: Q8_K's values rearranged per pair of
/// sub-blocks `A`, `B` (64 values) as `[A 0..16 | B 0..16]` then `[A 16..32 | B 16..32]`, the
/// order in which one 32-byte load of the pair's codes yields their values (low nibbles,
/// then high nibbles), their magnitudes in the same order, and the super-blocks' scales.
#[cfg(target_arch = "x86_64")]
struct Paired {
    qs: Vec<i8>,
    abs: Vec<u8>,
    d: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
impl Paired {
    fn new(x: Q8K) -> Self {
        let mut qs = vec![0i8; x.qs.len()];
        for (src, dst) in x.qs.chunks_exact(64).zip(qs.chunks_exact_mut(64)) {
            let (a, b) = src.split_at(32);
            dst[..16].copy_from_slice(&a[..16]);
            dst[16..32].copy_from_slice(&b[..16]);
            dst[32..48].copy_from_slice(&a[16..]);
            dst[48..].copy_from_slice(&b[16..]);
        }
        let abs = qs.iter().map(|v| v.unsigned_abs()).collect();
        Self { qs, abs, d: x.d }
    }
}

/// The eight sub-block scales `ls - 32` of the super-block at `blk`, each as two equal i16
/// halves of an i32 lane (what `madd` multiplies pairs by).
///
/// # Safety
/// The CPU has AVX2; `blk` addresses a whole super-block.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales(blk: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // Sub-block j's low four bits are bits 4j.. of the four low-bit bytes read as a u32, its
    // high two bits 2j.. of the u16 before them.
    let low = _mm256_set1_epi32((blk.add(4) as *const i32).read_unaligned());
    let high = _mm256_set1_epi32((blk.add(2) as *const u16).read_unaligned() as i32);
    let low = _mm256_and_si256(
        _mm256_srlv_epi32(low, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
        _mm256_set1_epi32(15),
    );
    let high = _mm256_and_si256(
        _mm256_srlv_epi32(high, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
        _mm256_set1_epi32(3),
    );
    let ls = _mm256_sub_epi32(
        _mm256_or_si256(low, _mm256_slli_epi32(high, 4)),
        _mm256_set1_epi32(32),
    );
    _mm256_or_si256(
        _mm256_and_si256(ls, _mm256_set1_epi32(0xFFFF)),
        _mm256_slli_epi32(ls, 16),
    )
}

/// The AVX2 products of one weight row with `M` activation rows: per pair of sub-blocks one
/// load of their 32 bytes of codes, the values of the low nibbles and of the high ones
/// looked up with one shuffle each, `|q| × (w with q's sign)` (the magnitudes formed once per
/// activation row for every weight row, so a product takes one sign operation where ggml's
/// `|w| × (q with w's sign)` takes two) summed in pairs and multiplied by the sub-blocks'
/// scales (one per 128-bit half) into eight exact i32 lanes per super-block, then
/// `d · d_x × lanes` fused into one eight-lane chain per activation row, summed as
/// `hsum_float_8`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; every activation row covers the weight row.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2<const M: usize>(row: &[u8], xs: [&Paired; M]) -> [f32; M] {
    use std::arch::x86_64::*;
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(VALUES.as_ptr() as *const __m128i));
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); M];
    for (b, blk) in row.chunks_exact(BYTES).enumerate() {
        let p = blk.as_ptr();
        // A super-block spans two or three cache lines: ask for each.
        super::gemv::prefetch_ahead(p);
        super::gemv::prefetch_ahead(p.wrapping_add(64));
        super::gemv::prefetch_ahead(p.wrapping_add(BYTES - 1));
        let ls = scales(p);
        let mut sum = [_mm256_setzero_si256(); M];
        for pair in 0..4 {
            let codes = _mm256_loadu_si256(p.add(8 + 32 * pair) as *const __m256i);
            let w = [
                _mm256_shuffle_epi8(table, _mm256_and_si256(codes, low)),
                _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(codes, 4), low)),
            ];
            let i = 2 * pair as i32;
            let sc = _mm256_permutevar8x32_epi32(
                ls,
                _mm256_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1),
            );
            for (x, s) in xs.iter().zip(sum.iter_mut()) {
                let at = b * QK_K + 64 * pair;
                let (xq, xa) = (x.qs.as_ptr().add(at), x.abs.as_ptr().add(at));
                for (h, &w) in w.iter().enumerate() {
                    let v = _mm256_loadu_si256(xq.add(32 * h) as *const __m256i);
                    let a = _mm256_loadu_si256(xa.add(32 * h) as *const __m256i);
                    let p16 = _mm256_maddubs_epi16(a, _mm256_sign_epi8(w, v));
                    *s = _mm256_add_epi32(_mm256_madd_epi16(p16, sc), *s);
                }
            }
        }
        // The f16 scale converted in place (a call to a software conversion here made the
        // compiler keep every load of the super-block on the stack across it).
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p as *const u16).read_unaligned() as i32,
        )));
        for ((x, s), a) in xs.iter().zip(&sum).zip(acc.iter_mut()) {
            let dd = _mm256_set1_ps(d * x.d[b]);
            *a = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(*s), *a);
        }
    }
    std::array::from_fn(|j| super::gemv::hsum(acc[j]))
}

/// The activation rows as the form of `kernel` reads them.
enum Acts {
    Portable(Vec<Q8K>),
    #[cfg(target_arch = "x86_64")]
    Avx2(Vec<Paired>),
}

/// `out[b·n + i]` = row `i` · `xs[b]` for the weight rows `rows` (of `row_bytes` bytes each),
/// [`GROUP`] activation rows at a time, by `form` (a function of one row and up to
/// [`GROUP`] activation rows).
///
/// # Safety
/// `out` holds `xs.len() · n` values and this call is the only writer of its entries of
/// `rows`; `form` is safe to call with these rows.
#[inline(always)]
unsafe fn rows_with<X>(
    (weights, row_bytes): (&[u8], usize),
    rows: std::ops::Range<usize>,
    xs: &[X],
    (out, n): (*mut f32, usize),
    form: impl Fn(&[u8], &[X], &mut [f32]),
) {
    let mut vals = [0f32; GROUP];
    for i in rows {
        let row = &weights[i * row_bytes..(i + 1) * row_bytes];
        for (g, xs) in xs.chunks(GROUP).enumerate() {
            let vals = &mut vals[..xs.len()];
            form(row, xs, vals);
            for (j, &v) in vals.iter().enumerate() {
                *out.add((g * GROUP + j) * n + i) = v;
            }
        }
    }
}

/// `vals` = `row` · each of `xs` (one to [`GROUP`] activation rows) by `form`.
macro_rules! group {
    ($form:expr, $row:expr, $xs:expr, $vals:expr) => {
        match $xs {
            [a] => $vals.copy_from_slice(&$form($row, [a])),
            [a, b] => $vals.copy_from_slice(&$form($row, [a, b])),
            [a, b, c] => $vals.copy_from_slice(&$form($row, [a, b, c])),
            [a, b, c, d] => $vals.copy_from_slice(&$form($row, [a, b, c, d])),
            _ => unreachable!("groups of one to four"),
        }
    };
}

/// [`rows_with`] by the AVX2 form, the whole range in one function compiled for AVX2 (a call
/// per row cost about a fifth of a row's work).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; as [`rows_with`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_rows(
    weights: (&[u8], usize),
    rows: std::ops::Range<usize>,
    xs: &[Paired],
    out: (*mut f32, usize),
) {
    rows_with(weights, rows, xs, out, |row, xs, vals| {
        group!(|r, x| avx2(r, x), row, xs, vals)
    });
}

/// `out[b·n + i] = W[i] · x_b` for IQ4_XS `weights` holding `n` rows of `k` values (`k` a
/// multiple of 256) and `x` holding one or more rows of `k` activations.
///
/// # Panics
/// When the sizes disagree (the callers check them).
pub fn gemv(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    let row_bytes = k / QK_K * BYTES;
    let m = x.len() / k.max(1);
    assert!(
        k.is_multiple_of(QK_K)
            && m >= 1
            && x.len() == m * k
            && out.len() == m * n
            && weights.len() >= n * row_bytes
    );
    let xqs = x.chunks_exact(k).map(quantize);
    let acts = match kernel {
        Kernel::Scalar => Acts::Portable(xqs.collect()),
        #[cfg(target_arch = "x86_64")]
        _ => Acts::Avx2(xqs.map(Paired::new).collect()),
        #[cfg(not(target_arch = "x86_64"))]
        _ => Acts::Portable(xqs.collect()),
    };
    let out_addr = out.as_mut_ptr() as usize;
    super::pool::Pool::global().run(n, |rows| {
        let out = (out_addr as *mut f32, n);
        let weights = (weights, row_bytes);
        // SAFETY: every row index is handed to one thread, which writes only its entries of
        // `out` (`m × n` values, which outlives the call); the AVX2 form is chosen only where
        // the CPU has AVX2, FMA and F16C (`gemv::kernel()`); the sizes were checked above.
        unsafe {
            match &acts {
                Acts::Portable(xs) => rows_with(weights, rows, xs, out, |row, xs, vals| {
                    group!(portable, row, xs, vals)
                }),
                #[cfg(target_arch = "x86_64")]
                Acts::Avx2(xs) => avx2_rows(weights, rows, xs, out),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::gemv::{check_block_type, test_values, Codec, Kernel};
    use crate::formats::iq4;

    #[test]
    fn kernels_agree_with_each_other_the_dequantized_product_and_one_row_alone() {
        let forms: Codec = (iq4::quantize_xs, iq4::dequantize_xs);
        check_block_type("IQ4_XS", forms, (48, 512, 11), super::gemv);
    }

    #[test]
    fn the_simd_form_follows_ggmls_order_within_rounding_of_the_portable_one() {
        // Sub-block scales of both signs and the extremes of the table.
        let (n, k) = (6, 1024);
        let mut w = test_values(n * k, 5);
        for (i, v) in w.iter_mut().enumerate() {
            *v *= 1.0 + (i / 32 % 7) as f32;
        }
        let data = iq4::quantize_xs(&w);
        let x = test_values(k, 6);
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        super::gemv(&data, n, k, &x, &mut a, Kernel::Scalar);
        super::gemv(&data, n, k, &x, &mut b, super::super::gemv::kernel());
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
