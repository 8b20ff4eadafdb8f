//! Products of MXFP4 weights ([`crate::formats::mxfp4`]) with f32 activations on the CPU.
//!
//! The activations stay f32: llama.cpp rounds them to 8 bits per block of 32 (its Q8_0) for
//! this type, and on gpt-oss's experts that moved the logits of the tiny reference model by
//! several percent, where the reference (transformers on the dequantized weights) holds us
//! to half a percent. MXFP4 values are small integers times a power of two, so a dequantized
//! weight times an activation rounds exactly as the integer times the activation, scaled:
//! each kernel multiplies the block's integers (ggml's doubled e2m1 values) with the
//! activations in f32, then scales by `2^(e - 128)`.
//!
//! Every kernel computes in one order, so all agree bit for bit: per block, lane `l` of eight
//! holds `Σ_g v[8g + l] · x[8g + l]` (a multiply then three fused multiply-adds, `g` = 0..3),
//! which is fused into the lane's running sum as `d · partial + sum`; the eight lanes are
//! then added as `((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))`. The AVX2 kernel does it
//! in one 8-lane register per row, the AVX-512 one with two rows per 16-lane register, the
//! portable one lane by lane. Rows go in pairs over the CPU pool; a batch of inputs runs
//! every input against a pair of rows while the rows are in cache.

use super::gemv::Kernel;
use crate::formats::mxfp4::{e8m0_half, BLOCK, BLOCK_BYTES, VALUES};

/// The integer value of element `j` of a block (low nibbles hold 0..16, high ones 16..32).
#[inline(always)]
fn value(block: &[u8], j: usize) -> f32 {
    let byte = block[1 + j % 16];
    let code = if j < 16 { byte & 0x0F } else { byte >> 4 };
    VALUES[code as usize] as f32
}

/// The eight lanes summed in the order of [`super::gemv::hsum`] (ggml's `hsum_float_8`).
#[inline(always)]
fn hsum8(s: [f32; 8]) -> f32 {
    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
}

/// One row against `x`, lane by lane (portable).
fn dot_portable(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let d = e8m0_half(block[0]);
        let xb = &x[b * BLOCK..(b + 1) * BLOCK];
        for (l, a) in acc.iter_mut().enumerate() {
            let mut p = value(block, l) * xb[l];
            for g in 1..4 {
                p = value(block, 8 * g + l).mul_add(xb[8 * g + l], p);
            }
            *a = d.mul_add(p, *a);
        }
    }
    hsum8(acc)
}

/// The block at `p` as signed bytes: elements 0..16 and 16..32.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes(p: *const u8) -> (std::arch::x86_64::__m128i, std::arch::x86_64::__m128i) {
    use std::arch::x86_64::*;
    let table = _mm_loadu_si128(VALUES.as_ptr() as *const __m128i);
    let m4 = _mm_set1_epi8(0x0F);
    let q = _mm_loadu_si128(p.add(1) as *const __m128i);
    (
        _mm_shuffle_epi8(table, _mm_and_si128(q, m4)),
        _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), m4)),
    )
}

/// The eight-lane partial of one block of one row (see the module doc).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn partial_avx2(
    p: *const u8,
    x: &[std::arch::x86_64::__m256; 4],
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let (lo, hi) = codes(p);
    let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
    let s = _mm256_mul_ps(f(lo), x[0]);
    let s = _mm256_fmadd_ps(f(_mm_srli_si128(lo, 8)), x[1], s);
    let s = _mm256_fmadd_ps(f(hi), x[2], s);
    _mm256_fmadd_ps(f(_mm_srli_si128(hi, 8)), x[3], s)
}

/// Two rows against `x` with AVX2 (one 8-lane chain each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_pair_avx2(ra: &[u8], rb: &[u8], x: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let nb = ra.len().min(rb.len()) / BLOCK_BYTES;
    assert!(x.len() >= nb * BLOCK);
    let (mut acc_a, mut acc_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for b in 0..nb {
        let (pa, pb) = (
            ra.as_ptr().add(b * BLOCK_BYTES),
            rb.as_ptr().add(b * BLOCK_BYTES),
        );
        super::gemv::prefetch_ahead(pa);
        super::gemv::prefetch_ahead(pb);
        let xp = x.as_ptr().add(b * BLOCK);
        let xv = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(xp.add(o)));
        acc_a = _mm256_fmadd_ps(_mm256_set1_ps(e8m0_half(*pa)), partial_avx2(pa, &xv), acc_a);
        acc_b = _mm256_fmadd_ps(_mm256_set1_ps(e8m0_half(*pb)), partial_avx2(pb, &xv), acc_b);
    }
    (super::gemv::hsum(acc_a), super::gemv::hsum(acc_b))
}

/// Two rows against `x` with AVX-512, row `a` in the low eight lanes of each register and
/// row `b` in the high eight, each lane computing what the AVX2 kernel's lane computes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_pair_avx512(ra: &[u8], rb: &[u8], x: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let nb = ra.len().min(rb.len()) / BLOCK_BYTES;
    assert!(x.len() >= nb * BLOCK);
    let mut acc = _mm512_setzero_ps();
    let both = |v: __m256| _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(v)));
    for b in 0..nb {
        let (pa, pb) = (
            ra.as_ptr().add(b * BLOCK_BYTES),
            rb.as_ptr().add(b * BLOCK_BYTES),
        );
        super::gemv::prefetch_ahead(pa);
        super::gemv::prefetch_ahead(pb);
        let xp = x.as_ptr().add(b * BLOCK);
        let xv = [0, 8, 16, 24].map(|o| both(_mm256_loadu_ps(xp.add(o))));
        let ((la, ha), (lb, hb)) = (codes(pa), codes(pb));
        // Eight values of each row side by side: [a 8g..8g+8 | b 8g..8g+8].
        let f = |v: __m128i| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
        let s = _mm512_mul_ps(f(_mm_unpacklo_epi64(la, lb)), xv[0]);
        let s = _mm512_fmadd_ps(f(_mm_unpackhi_epi64(la, lb)), xv[1], s);
        let s = _mm512_fmadd_ps(f(_mm_unpacklo_epi64(ha, hb)), xv[2], s);
        let s = _mm512_fmadd_ps(f(_mm_unpackhi_epi64(ha, hb)), xv[3], s);
        let d = super::gemv::split_ps(e8m0_half(*pa), e8m0_half(*pb));
        acc = _mm512_fmadd_ps(d, s, acc);
    }
    super::gemv::hsum_halves(acc)
}

type DotPair = unsafe fn(&[u8], &[u8], &[f32]) -> (f32, f32);

/// The pair kernel for `kernel`, `None` for the portable code.
fn pair_kernel(kernel: Kernel) -> Option<DotPair> {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Scalar => None,
        Kernel::Avx2 => Some(dot_pair_avx2 as DotPair),
        Kernel::Avx512Vnni => Some(dot_pair_avx512 as DotPair),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        None
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
    let row = |i: usize| &weights[i * row_bytes..(i + 1) * row_bytes];
    let input = |j: usize| &x[j * k..(j + 1) * k];
    let out_addr = out.as_mut_ptr() as usize;
    // SAFETY (both writers): each row index (or pair) is handed to one thread, which writes
    // only its rows' entries of `out`, and `out` outlives the call.
    let write = |j: usize, i: usize, v: f32| unsafe { *(out_addr as *mut f32).add(j * n + i) = v };
    let Some(pair) = pair_kernel(kernel) else {
        return super::pool::Pool::global().run(n, |rows| {
            for i in rows {
                for j in 0..m {
                    write(j, i, dot_portable(row(i), input(j)));
                }
            }
        });
    };
    super::pool::Pool::global().run(n.div_ceil(2), |pairs| {
        for p in pairs {
            let (a, b) = (2 * p, (2 * p + 1).min(n - 1));
            for j in 0..m {
                // SAFETY: SIMD kernels are selected only when the CPU reports their features
                // (`gemv::kernel()`, or a slower one forced in tests).
                let (va, vb) = unsafe { pair(row(a), row(b), input(j)) };
                write(j, a, va);
                write(j, b, vb);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::mxfp4;
    use crate::kernels::cpu::gemv::{kernel, test_values};

    /// The dequantize-then-multiply product in this module's order: weights dequantized to
    /// f32 first, then per block and lane the same chain of fused multiply-adds, added into
    /// the lane's sum (a weight `v·d` times `x` rounds as `d · (v·x)`, `d` being a power of
    /// two), lanes added as `hsum8`.
    fn dequantized(w: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
        let mut dense = vec![0f32; n * k];
        mxfp4::dequantize(w, &mut dense);
        dense
            .chunks_exact(k)
            .map(|r| {
                let mut acc = [0f32; 8];
                for (wb, xb) in r.chunks_exact(BLOCK).zip(x.chunks_exact(BLOCK)) {
                    for (l, a) in acc.iter_mut().enumerate() {
                        let mut p = wb[l] * xb[l];
                        for g in 1..4 {
                            p = wb[8 * g + l].mul_add(xb[8 * g + l], p);
                        }
                        *a += p;
                    }
                }
                hsum8(acc)
            })
            .collect()
    }

    /// The exact product in f64.
    fn exact(w: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f64> {
        let mut dense = vec![0f32; n * k];
        mxfp4::dequantize(w, &mut dense);
        dense
            .chunks_exact(k)
            .map(|r| r.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum())
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
    fn every_kernel_equals_the_dequantize_then_multiply_product() {
        // 48 rows (pairs) and 47 (a last row alone), 9 blocks and 1.
        for (n, k) in [(48, 288), (47, 256), (3, 32)] {
            let w = weights(n, k, 1);
            let x = test_values(k, 2);
            let (want, exact) = (dequantized(&w, n, k, &x), exact(&w, n, k, &x));
            for kern in kernels() {
                let mut out = vec![0f32; n];
                matmul(&w, n, k, &x, &mut out, kern);
                for (i, ((a, b), e)) in out.iter().zip(&want).zip(&exact).enumerate() {
                    // The same operations in the same order, `d` scaling exactly: the
                    // partial of scaled weights is `d · partial`, so `sum + that` rounds as
                    // the kernels' fused `d · partial + sum`.
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{kern:?} {n}x{k} row {i}: {a} vs {b}"
                    );
                    assert!(
                        (*a as f64 - e).abs() < 1e-5 * e.abs().max(1.0),
                        "{a} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_agrees_bit_for_bit_and_batches_equal_single_rows() {
        let (n, k, m) = (21, 288, 5);
        let w = weights(n, k, 3);
        let x = test_values(m * k, 4);
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
            assert_eq!(r, &runs[0], "kernel {i} against the portable one");
        }
    }
}
