//! Matrix-vector products for IQ4_XS weights ([`crate::formats::iq4`]) on the CPU. The maths
//! is ggml's `vec_dot_iq4_xs_q8_K`: activations quantized per super-block of 256 to 8 bits
//! (Q8_K, [`super::kdots::quantize`]), weights `d · (ls - 32) · VALUES[code]` with a 6-bit
//! `ls` per sub-block of 32.
//!
//! Two forms, each ggml's own, which differ in the last bits as ggml's do:
//! - AVX2 (also what CPUs with AVX-512 run): per super-block the exact integer sum of
//!   `(ls - 32) · VALUES[code] · q` in eight i32 lanes (the table looked up with one byte
//!   shuffle per half sub-block, `|w| × (q with w's sign)` in pairs, one `madd` by the
//!   sub-block's scale), then `d · d_x × lanes` fused into one eight-lane chain, summed as
//!   `hsum_float_8`.
//! - portable: per sub-block `sum += (d · d_x · (ls - 32)) · Σ VALUES[code] · q`.
//!
//! Weight rows are split over the pool; each row's super-blocks are unpacked once for up to
//! four activation rows, and every product is the one a single row gets, bit for bit.

use super::gemv::{block_sum, Kernel};
use super::kdots::{quantize, Q8K, QK_K};
use crate::formats::iq4::{xs_scale, VALUES, XS_BLOCK_BYTES as BYTES};

/// Activation rows one pass over a weight row serves.
const GROUP: usize = 4;

/// The f16 scale of a super-block.
fn scale(block: &[u8]) -> f32 {
    half::f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// The portable products of one weight row with `M` activation rows.
fn portable<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
    let mut sums = [0f32; M];
    for (b, blk) in row.chunks_exact(BYTES).enumerate() {
        let d = scale(blk);
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

/// The AVX2 products of one weight row with `M` activation rows (ggml's order, above).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; every activation row covers the weight row.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
    use std::arch::x86_64::*;
    let table = _mm_loadu_si128(VALUES.as_ptr() as *const __m128i);
    let low = _mm_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); M];
    for (b, blk) in row.chunks_exact(BYTES).enumerate() {
        super::gemv::prefetch_ahead(blk.as_ptr());
        let mut sumi = [[_mm256_setzero_si256(); 2]; M];
        for pair in 0..4 {
            let mut w = [_mm256_setzero_si256(); 2];
            for (h, w) in w.iter_mut().enumerate() {
                let codes = _mm_loadu_si128(blk.as_ptr().add(8 + 32 * pair + 16 * h) as *const _);
                *w = _mm256_set_m128i(
                    _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(codes, 4), low)),
                    _mm_shuffle_epi8(table, _mm_and_si128(codes, low)),
                );
            }
            let ls = [
                _mm256_set1_epi16(xs_scale(blk, 2 * pair) as i16),
                _mm256_set1_epi16(xs_scale(blk, 2 * pair + 1) as i16),
            ];
            let abs = [_mm256_sign_epi8(w[0], w[0]), _mm256_sign_epi8(w[1], w[1])];
            for (x, s) in xs.iter().zip(sumi.iter_mut()) {
                let xq = x.qs.as_ptr().add(b * QK_K + 64 * pair);
                for h in 0..2 {
                    let v = _mm256_loadu_si256(xq.add(32 * h) as *const __m256i);
                    let p16 = _mm256_maddubs_epi16(abs[h], _mm256_sign_epi8(v, w[h]));
                    s[h] = _mm256_add_epi32(_mm256_madd_epi16(p16, ls[h]), s[h]);
                }
            }
        }
        let d = scale(blk);
        for ((x, s), a) in xs.iter().zip(&sumi).zip(acc.iter_mut()) {
            let sum = _mm256_cvtepi32_ps(_mm256_add_epi32(s[0], s[1]));
            *a = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[b]), sum, *a);
        }
    }
    std::array::from_fn(|j| super::gemv::hsum(acc[j]))
}

/// `vals[j]` = `row` · `xs[j]` by the form of `kernel`, [`GROUP`] activation rows at a time.
fn row_dots(kernel: Kernel, row: &[u8], xs: &[Q8K], vals: &mut [f32]) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    for (xs, vals) in xs.chunks(GROUP).zip(vals.chunks_mut(GROUP)) {
        macro_rules! group {
            ($($j:literal),*) => {{
                let xs = [$(&xs[$j]),*];
                #[cfg(target_arch = "x86_64")]
                if kernel != Kernel::Scalar {
                    // SAFETY: a SIMD kernel is chosen only where the CPU has AVX2, FMA and
                    // F16C (`gemv::kernel()`); the caller checked the sizes.
                    vals.copy_from_slice(&unsafe { avx2(row, xs) });
                    continue;
                }
                vals.copy_from_slice(&portable(row, xs));
            }};
        }
        match xs.len() {
            1 => group!(0),
            2 => group!(0, 1),
            3 => group!(0, 1, 2),
            _ => group!(0, 1, 2, 3),
        }
    }
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
    let xqs: Vec<Q8K> = x.chunks_exact(k).map(quantize).collect();
    super::gemv::par_rows_all(n, out, |i, vals| {
        row_dots(
            kernel,
            &weights[i * row_bytes..(i + 1) * row_bytes],
            &xqs,
            vals,
        )
    });
}

#[cfg(test)]
mod tests {
    use super::super::gemv::{check_blocks, test_values, Kernel};
    use crate::formats::iq4;

    #[test]
    fn kernels_agree_with_each_other_and_with_the_dequantized_product() {
        let (n, k) = (48, 512);
        let data = iq4::quantize_xs(&test_values(n * k, 1));
        let mut dense = vec![0f32; n * k];
        iq4::dequantize_xs(&data, &mut dense);
        check_blocks("IQ4_XS", &data, &dense, (n, k), super::gemv);
    }

    #[test]
    fn batched_rows_get_the_one_row_bits_on_every_tier() {
        let (n, k, m) = (10, 512, 11);
        let data = iq4::quantize_xs(&test_values(n * k, 3));
        let x = test_values(m * k, 4);
        let mut kernels = vec![Kernel::Scalar];
        if super::super::gemv::kernel() != Kernel::Scalar {
            kernels.push(Kernel::Avx2);
        }
        for kernel in kernels {
            let mut all = vec![0f32; m * n];
            super::gemv(&data, n, k, &x, &mut all, kernel);
            for (b, row) in x.chunks_exact(k).enumerate() {
                let mut one = vec![0f32; n];
                super::gemv(&data, n, k, row, &mut one, kernel);
                assert_eq!(one, all[b * n..(b + 1) * n], "{kernel:?} row {b}");
            }
        }
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
