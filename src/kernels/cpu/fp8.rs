//! Products of FP8 block-scaled weights ([`crate::formats::fp8`]) with f32 activations on the
//! CPU, reading the weights' bytes in place (1 byte per weight; no dequantized copy).
//!
//! The activations stay f32: the reference is transformers on the dequantized weights, and
//! E4M3 values are not a small integer grid as MXFP4's are ([`super::mxfp4`] multiplies
//! integers), so an integer product would round the weights. What is cheap instead is the
//! decoding: a byte sign-extended to 16 bits, shifted left by 7 and with bit 14 cleared is
//! the f16 whose value is the byte's E4M3 value times `2^-8` (the exponent and mantissa
//! fields land in f16's, and the biases differ by 8; subnormals map to subnormals), which
//! F16C converts to f32 sixteen at a time: three integer operations and one conversion per
//! 16 weights, against ten operations for building the f32's fields. The `2^-8` is given
//! back through the block's scale, times 256: powers of two scale exactly, so the products
//! are those of the exact weights.
//!
//! Every kernel computes in one order, so all agree bit for bit: per block of the row (the
//! scale's columns; the last may be partial), lane `l` of sixteen holds `Σ w[t] · x[t]` (`w`
//! the weight's value times `2^-8`) over the block's elements `t ≡ l (mod 16)` as a chain of
//! fused multiply-adds from +0, which is fused into the lane's running sum as `(256 · scale)
//! · partial + sum`; the sixteen lanes are then
//! folded to eight (`s[l] + s[l + 8]`) and added as `((s0 + s4) + (s2 + s6)) + ((s1 + s5) +
//! (s3 + s7))`. The AVX2 kernel holds the sixteen lanes in two registers, the AVX-512 one in
//! one, the portable one in an array; a block's ragged end is padded with zero weights and
//! zero activations (adding `+0 · +0` to a chain that starts at +0 changes no bit). Rows go
//! over the CPU pool; a batch of inputs runs every input against a row while it is in cache.

use super::gemv::Kernel;
use crate::formats::fp8::{e4m3_to_f32, Fp8};

/// `2^-8`: the factor the f16 decoding leaves in every weight (f16's exponent bias, 15,
/// less E4M3's, 7).
const TWO_TO_MINUS_8: f32 = 1.0 / 256.0;

/// Lanes of the running sums.
pub(super) const LANES: usize = 16;

/// The sixteen lanes folded to eight and summed in the order of [`super::gemv::hsum`].
#[inline(always)]
pub(super) fn fold16(a: [f32; LANES]) -> f32 {
    let s: [f32; 8] = std::array::from_fn(|l| a[l] + a[l + 8]);
    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
}

/// One row (`row`, its `scales`, blocks of `width` columns) against `x`, lane by lane.
fn dot_portable(row: &[u8], scales: &[f32], width: usize, x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for ((wb, xb), &s) in row.chunks(width).zip(x.chunks(width)).zip(scales) {
        let mut p = [0f32; LANES];
        for (t, (&w, &xv)) in wb.iter().zip(xb).enumerate() {
            p[t % LANES] = (e4m3_to_f32(w) * TWO_TO_MINUS_8).mul_add(xv, p[t % LANES]);
        }
        for (a, p) in acc.iter_mut().zip(p) {
            *a = (s * 256.0).mul_add(p, *a);
        }
    }
    fold16(acc)
}

/// Sixteen bytes at `p`, zero-padded past `len`, and sixteen activations at `x` likewise: a
/// block's ragged end.
#[cfg(target_arch = "x86_64")]
#[inline]
fn padded(w: &[u8], x: &[f32]) -> ([u8; LANES], [f32; LANES]) {
    let (mut wb, mut xb) = ([0u8; LANES], [0f32; LANES]);
    wb[..w.len()].copy_from_slice(w);
    xb[..x.len()].copy_from_slice(&x[..w.len()]);
    (wb, xb)
}

/// Sixteen bytes to the f16 bits of their E4M3 values times `2^-8` (see the module doc).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode16(q: std::arch::x86_64::__m128i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let shifted = _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(q));
    _mm256_and_si256(shifted, _mm256_set1_epi16(0xBFFF_u16 as i16))
}

/// Sixteen elements into the two eight-lane partials.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step_avx2(w: *const u8, x: *const f32, p: &mut [std::arch::x86_64::__m256; 2]) {
    use std::arch::x86_64::*;
    let h = decode16(_mm_loadu_si128(w as *const __m128i));
    let lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    let hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h));
    p[0] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x), p[0]);
    p[1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x.add(8)), p[1]);
}

/// One row against `x` with AVX2: lanes 0..8 in one register, 8..16 in another.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], scales: &[f32], width: usize, x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() >= row.len());
    let mut acc = [_mm256_setzero_ps(); 2];
    for ((wb, xb), &s) in row.chunks(width).zip(x.chunks(width)).zip(scales) {
        let mut p = [_mm256_setzero_ps(); 2];
        let whole = wb.len() / LANES * LANES;
        for o in (0..whole).step_by(LANES) {
            if o % 64 == 0 {
                super::gemv::prefetch_ahead(wb.as_ptr().add(o));
            }
            step_avx2(wb.as_ptr().add(o), xb.as_ptr().add(o), &mut p);
        }
        if whole < wb.len() {
            let (w, x) = padded(&wb[whole..], &xb[whole..]);
            step_avx2(w.as_ptr(), x.as_ptr(), &mut p);
        }
        let s = _mm256_set1_ps(s * 256.0);
        acc[0] = _mm256_fmadd_ps(s, p[0], acc[0]);
        acc[1] = _mm256_fmadd_ps(s, p[1], acc[1]);
    }
    super::gemv::hsum(_mm256_add_ps(acc[0], acc[1]))
}

/// Sixteen elements into the sixteen-lane partial.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn step_avx512(
    w: *const u8,
    x: *const f32,
    p: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let wv = _mm512_cvtph_ps(decode16(_mm_loadu_si128(w as *const __m128i)));
    _mm512_fmadd_ps(wv, _mm512_loadu_ps(x), p)
}

/// One row against `x` with AVX-512 (F and BW only; it runs in the VNNI tier): the sixteen
/// lanes in one register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn dot_avx512(row: &[u8], scales: &[f32], width: usize, x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() >= row.len());
    let mut acc = _mm512_setzero_ps();
    for ((wb, xb), &s) in row.chunks(width).zip(x.chunks(width)).zip(scales) {
        let mut p = _mm512_setzero_ps();
        let whole = wb.len() / LANES * LANES;
        for o in (0..whole).step_by(LANES) {
            if o % 64 == 0 {
                super::gemv::prefetch_ahead(wb.as_ptr().add(o));
            }
            p = step_avx512(wb.as_ptr().add(o), xb.as_ptr().add(o), p);
        }
        if whole < wb.len() {
            let (w, x) = padded(&wb[whole..], &xb[whole..]);
            p = step_avx512(w.as_ptr(), x.as_ptr(), p);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(s * 256.0), p, acc);
    }
    let (lo, hi) = super::gemv::halves_ps(acc);
    super::gemv::hsum(_mm256_add_ps(lo, hi))
}

type Dot = unsafe fn(&[u8], &[f32], usize, &[f32]) -> f32;

/// The row kernel for `kernel`.
fn dot_kernel(kernel: Kernel) -> Dot {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Scalar => dot_portable as Dot,
        Kernel::Avx2 => dot_avx2 as Dot,
        Kernel::Avx512Vnni => dot_avx512 as Dot,
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        dot_portable as Dot
    }
}

/// `out[j·n + i] = W[i] · x[j]` for FP8 `w` of `n` rows of `k` and `x` holding `m` rows of `k`
/// (`out`: `m × n`). Each product is what the single-row one computes, whatever `m`.
pub fn matmul(w: &Fp8, x: &[f32], out: &mut [f32], kernel: Kernel) {
    let (n, k) = w.dims2();
    let m = x.len() / k.max(1);
    assert!(x.len() == m * k && out.len() == m * n);
    let [block_rows, width] = w.scheme().block;
    let per_row = k.div_ceil(width);
    let (values, scales) = (w.values(), w.scales());
    let dot = dot_kernel(kernel);
    super::gemv::par_rows(n, out, |i, j| {
        let row = &values[i * k..(i + 1) * k];
        let s = &scales[i / block_rows * per_row..(i / block_rows + 1) * per_row];
        // SAFETY: SIMD kernels are selected only when the CPU reports their features
        // (`gemv::kernel()`, or a slower one forced in tests).
        unsafe { dot(row, s, width, &x[j * k..(j + 1) * k]) }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::fp8::Scheme;
    use crate::kernels::cpu::gemv::{kernel, test_values};

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

    /// The row kernels this CPU runs, by name: the AVX-512 one wherever AVX-512 F and BW are,
    /// with or without the VNNI that selects it in [`matmul`].
    fn row_kernels() -> Vec<(&'static str, Dot)> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut ks: Vec<(&'static str, Dot)> = vec![("portable", dot_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if kernel() != Kernel::Scalar {
                ks.push(("avx2", dot_avx2));
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                ks.push(("avx512", dot_avx512));
            }
        }
        ks
    }

    /// Weights with a zero, a subnormal, the largest code and blocks of different scales.
    fn weights(n: usize, k: usize, block: [usize; 2], seed: u32) -> Fp8 {
        let mut v = test_values(n * k, seed);
        v[3] = 0.0;
        v[7] = 1e-6;
        v[k.min(n * k - 1)] = 40.0;
        Fp8::quantize(&v, (n, k), Scheme { block }).unwrap()
    }

    /// Dequantize, then multiply, in f64.
    fn exact(w: &Fp8, x: &[f32]) -> Vec<f64> {
        let (_, k) = w.dims2();
        w.dequantize()
            .chunks_exact(k)
            .map(|r| r.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum())
            .collect()
    }

    #[test]
    fn every_kernel_gives_the_dequantize_then_multiply_product_bit_for_bit_alike() {
        // Whole blocks; partial blocks in both directions (k = 200 in blocks of 128 and of 48,
        // with ragged ends of 8); narrow blocks; an odd row count.
        for (n, k, block) in [
            (32, 256, [16, 128]),
            (37, 200, [16, 128]),
            (20, 200, [7, 48]),
            (9, 40, [4, 20]),
            (5, 3, [2, 2]),
        ] {
            let w = weights(n, k, block, 1);
            let x = test_values(k, 2);
            let want = exact(&w, &x);
            let [block_rows, width] = block;
            let per_row = k.div_ceil(width);
            let runs: Vec<Vec<f32>> = row_kernels()
                .into_iter()
                .map(|(name, dot)| {
                    let out: Vec<f32> = (0..n)
                        .map(|i| {
                            let row = &w.values()[i * k..(i + 1) * k];
                            let s = &w.scales()[i / block_rows * per_row..][..per_row];
                            // SAFETY: `row_kernels` lists only kernels this CPU runs.
                            unsafe { dot(row, s, width, &x) }
                        })
                        .collect();
                    for (i, (a, e)) in out.iter().zip(&want).enumerate() {
                        let tol = 1e-5 * want.iter().map(|v| v.abs()).fold(1.0, f64::max);
                        assert!((*a as f64 - e).abs() < tol, "{name} {n}x{k} row {i}");
                    }
                    out
                })
                .collect();
            // Through the dispatch, with each kernel tier this CPU has.
            for kern in kernels() {
                let mut out = vec![0f32; n];
                matmul(&w, &x, &mut out, kern);
                assert_eq!(out, runs[0], "{kern:?}");
            }
            for r in &runs[1..] {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(r), bits(&runs[0]), "{n}x{k} in blocks of {block:?}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_f16_decoding_gives_every_bytes_value_times_two_to_the_minus_8() {
        use std::arch::x86_64::*;
        if kernel() == Kernel::Scalar {
            return;
        }
        let bytes: Vec<u8> = (0..=255).collect();
        for chunk in bytes.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: a non-scalar kernel means AVX2, FMA and F16C.
            unsafe {
                let h = decode16(_mm_loadu_si128(chunk.as_ptr() as *const __m128i));
                let (lo, hi) = (_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
                _mm256_storeu_ps(got.as_mut_ptr(), _mm256_cvtph_ps(lo));
                _mm256_storeu_ps(got.as_mut_ptr().add(8), _mm256_cvtph_ps(hi));
            }
            for (&b, g) in chunk.iter().zip(got) {
                let want = e4m3_to_f32(b) * TWO_TO_MINUS_8;
                assert_eq!(g.to_bits(), want.to_bits(), "byte {b:#04x}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn batches_equal_single_rows() {
        let (n, k, m) = (21, 200, 5);
        let w = weights(n, k, [8, 64], 3);
        let x = test_values(m * k, 4);
        for kern in kernels() {
            let mut out = vec![0f32; m * n];
            matmul(&w, &x, &mut out, kern);
            for j in 0..m {
                let mut one = vec![0f32; n];
                matmul(&w, &x[j * k..(j + 1) * k], &mut one, kern);
                assert_eq!(one, out[j * n..(j + 1) * n].to_vec(), "{kern:?} input {j}");
            }
        }
    }
}
