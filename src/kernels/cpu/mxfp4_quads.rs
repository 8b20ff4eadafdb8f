//! MXFP4 products four weight rows at a time (x86-64: AVX-512 and AVX2), in the integers and
//! float steps of [`super::mxfp4`], so every form equals the portable one bit for bit.
//!
//! One token's products stream the weights from memory once, and the pairs of rows that ran
//! before read two places 1.5 KB apart, each prefetched 2 KB ahead of itself: the hardware
//! saw four interleaved streams and the kernel read at about half of what the K-quant quads
//! ([`super::kquads`]) reach. Here a pass reads four consecutive rows (one contiguous run of
//! `4 · row_bytes`) and, per block, prefetches the next four rows' bytes in order, 68 bytes a
//! step, so the run that follows is in L1 when the pass gets there. Up to four inputs share
//! each block's decoded weights (AVX-512; AVX2's sixteen registers hold one input's sums).

use std::arch::x86_64::*;

use super::gemv::{halves_ps, hsum};
use super::mxfp4::{HALF_SCALES, Q16, ROWS};
use crate::formats::mxfp4::{BLOCK, BLOCK_BYTES, VALUES};

/// Four rows' first bytes, and how far ahead of the first the next rows start (their bytes
/// are prefetched; any distance is safe, prefetches never fault).
pub(crate) type Quad = ([*const u8; ROWS], usize);

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

/// Asks for the `rows · 17` bytes at `next`, one block's share of the next rows (68 or 34
/// bytes: their first and last lines, so none is skipped).
#[inline(always)]
fn prefetch_next(next: *const u8, rows: usize) {
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(next as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(rows * BLOCK_BYTES - 1) as *const i8);
    }
}

/// The rows of `quad` (each `nb` blocks) against the `M` inputs `xs` with AVX-512:
/// `[input][row]`, per row and input the sixteen lanes in one register.
///
/// # Safety
/// The CPU has AVX-512 F and BW, AVX2, FMA and F16C; each row pointer addresses `nb · 17`
/// readable bytes; `xs` holds `M` inputs of at least `nb` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn quad_avx512<const M: usize>(
    quad: Quad,
    nb: usize,
    xs: &[Q16],
) -> [[f32; ROWS]; M] {
    assert!(xs.len() == M && xs.iter().all(|x| x.covers(nb)));
    let mut acc = [[_mm512_setzero_ps(); ROWS]; M];
    for b in 0..nb {
        prefetch_next(
            quad.0[0].wrapping_add(quad.1 + b * ROWS * BLOCK_BYTES),
            ROWS,
        );
        // Loops, not closures: a closure does not inherit the target features, and its
        // intrinsics would be calls.
        let (mut w, mut sw) = ([_mm512_setzero_si512(); ROWS], [0f32; ROWS]);
        for r in 0..ROWS {
            let p = quad.0[r].add(b * BLOCK_BYTES);
            w[r] = _mm512_cvtepi8_epi16(values(p));
            sw[r] = HALF_SCALES[*p as usize];
        }
        for (acc, x) in acc.iter_mut().zip(xs) {
            // In bounds: every input covers `nb` blocks (asserted above).
            let xv = _mm512_loadu_si512(x.qs.as_ptr().add(b * BLOCK) as *const _);
            let dx = *x.d.get_unchecked(b);
            for r in 0..ROWS {
                let lanes = _mm512_cvtepi32_ps(_mm512_madd_epi16(w[r], xv));
                acc[r] = _mm512_fmadd_ps(lanes, _mm512_set1_ps(sw[r] * dx), acc[r]);
            }
        }
    }
    let mut out = [[0f32; ROWS]; M];
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (o, a) in out.iter_mut().zip(acc) {
            let (lo, hi) = halves_ps(*a);
            *o = hsum(_mm256_add_ps(lo, hi));
        }
    }
    out
}

/// `R` rows (each `nb` blocks; the next `R` rows' bytes start `ahead` after the first) against
/// the `M` inputs `xs` with AVX2: `[input][row]`, per row and input lanes 0..8 in one register
/// and 8..16 in another. Sixteen registers hold the running sums of four rows and one input
/// (`R = 4, M = 1`) or of two rows and two inputs (`R = 2, M = 2`), not both.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; each row pointer addresses `nb · 17` readable bytes; `xs`
/// holds `M` inputs of at least `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_avx2<const R: usize, const M: usize>(
    (rows, ahead): ([*const u8; R], usize),
    nb: usize,
    xs: &[Q16],
) -> [[f32; R]; M] {
    assert!(xs.len() == M && xs.iter().all(|x| x.covers(nb)));
    let mut acc = [[[_mm256_setzero_ps(); 2]; R]; M];
    for b in 0..nb {
        prefetch_next(rows[0].wrapping_add(ahead + b * R * BLOCK_BYTES), R);
        let mut xv = [([_mm256_setzero_si256(); 2], 0f32); M];
        for (xv, x) in xv.iter_mut().zip(xs) {
            let xp = x.qs.as_ptr().add(b * BLOCK);
            // In bounds: every input covers `nb` blocks (asserted above).
            xv.0 = [
                _mm256_loadu_si256(xp as *const __m256i),
                _mm256_loadu_si256(xp.add(16) as *const __m256i),
            ];
            xv.1 = *x.d.get_unchecked(b);
        }
        for r in 0..R {
            let p = rows[r].add(b * BLOCK_BYTES);
            let v = values(p);
            let w = [
                _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
                _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v)),
            ];
            let sw = HALF_SCALES[*p as usize];
            for (acc, (xv, dx)) in acc.iter_mut().zip(&xv) {
                let s = _mm256_set1_ps(sw * dx);
                for h in 0..2 {
                    let lanes = _mm256_cvtepi32_ps(_mm256_madd_epi16(w[h], xv[h]));
                    acc[r][h] = _mm256_fmadd_ps(lanes, s, acc[r][h]);
                }
            }
        }
    }
    let mut out = [[0f32; R]; M];
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (o, [lo, hi]) in out.iter_mut().zip(acc) {
            *o = hsum(_mm256_add_ps(*lo, *hi));
        }
    }
    out
}
