//! Q4_K products of one to four activation rows with four stored weight rows at a time on
//! CPUs with AVX2 (no AVX-512), in the numerics of [`super::kdots`] (bit for bit): the form
//! that reads weights which stay in their mapped file (MoE experts, `MLCLI_REPACK=0`).
//!
//! The one-row AVX2 dot spends about as much per super-block on bookkeeping (unpacking the
//! twelve scale bytes in scalar code, broadcasting each scale from a general register, two
//! horizontal sums, two scalar multiply-adds) as on its products. Four rows share it: two
//! rows' 16-byte headers per register are unpacked together with ggml's word masks (as
//! [`super::kquads`] does four per register), each scale reaches its products by one byte
//! shuffle, the four rows' integer and minimum sums are transposed and added in one tree, and
//! one eight-lane multiply-add advances all four rows' two float chains
//! (`acc += isum · d·d8`, `accm += imin · dmin·d8`), each lane the portable form's scalar step.

use std::arch::x86_64::*;

use super::kdots::{Q4K_BYTES, Q8K, QK_K};

/// `vpshufb` indices that put unpacked scale byte `j` of each 128-bit lane into every i16 lane.
const fn spread(j: i8) -> [i8; 32] {
    let mut v = [-128i8; 32];
    let mut i = 0;
    while i < 32 {
        v[i] = j;
        i += 2;
    }
    v
}

/// The spreads of the eight sub-blocks' scales.
const SPREADS: [[i8; 32]; 8] = [
    spread(0),
    spread(1),
    spread(2),
    spread(3),
    spread(4),
    spread(5),
    spread(6),
    spread(7),
];

/// `vpshufb` indices that widen bytes 8..16 of each 128-bit lane (a row's minimums) to i16,
/// for a register of `N` bytes (32 here, 64 in [`super::kquads`]).
pub(crate) const fn widen_mins<const N: usize>() -> [i8; N] {
    let mut v = [-128i8; N];
    let mut i = 0;
    while i < N {
        v[i] = 8 + (i % 16 / 2) as i8;
        i += 2;
    }
    v
}

/// [`widen_mins`] for one AVX2 register.
const MINS: [i8; 32] = widen_mins();

/// Two rows' 16-byte headers (`d`, `dmin`, twelve scale bytes), one per 128-bit lane, as
/// ggml's word masks unpack them: per lane the eight 6-bit scales in bytes 0..8 and the eight
/// minimums in bytes 8..16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack(h: __m256i) -> __m256i {
    let (k1, k2, k3) = (0x3F3F3F3F, 0x0F0F0F0F, 0x30303030);
    // Per lane: [u0 & k1, (u2 & k2) | ((u0 >> 6) & 3) << 4, u1 & k1,
    //            ((u2 >> 4) & k2) | ((u1 >> 6) & 3) << 4], u0..u2 its scale words.
    let words = _mm256_srlv_epi32(
        _mm256_shuffle_epi32::<0b11_10_11_01>(h),
        _mm256_set_epi32(4, 0, 0, 0, 4, 0, 0, 0),
    );
    let highs = _mm256_srli_epi32::<2>(_mm256_shuffle_epi32::<0b10_00_01_00>(h));
    _mm256_or_si256(
        _mm256_and_si256(words, _mm256_set_epi32(k2, k1, k2, k1, k2, k1, k2, k1)),
        _mm256_and_si256(highs, _mm256_set_epi32(k3, 0, k3, 0, k3, 0, k3, 0)),
    )
}

/// Super-block `b` of each of the four Q4_K rows at `rows`, with a quarter of the next
/// quad's bytes (`ahead` of the first row) asked for, in order.
///
/// # Safety
/// Each row holds at least `b + 1` super-blocks.
#[inline(always)]
pub(crate) unsafe fn super_block(
    (rows, ahead): ([*const u8; 4], usize),
    b: usize,
) -> [*const u8; 4] {
    let next = rows[0].wrapping_add(ahead + b * 4 * Q4K_BYTES);
    for line in 0..9 {
        _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line) as *const i8);
    }
    // A plain loop: `map` might not be inlined into the target-feature callers (see `kquads`).
    let mut blk = rows;
    for r in &mut blk {
        *r = r.add(b * Q4K_BYTES);
    }
    blk
}

/// The products of the Q4_K rows at `rows` (each `supers` super-blocks) with each of `M`
/// activation rows: `[activation][row]`, each the portable [`super::kdots::q4k_dot`]'s bit
/// for bit. The bytes `ahead` of the first row (the next quad) are prefetched a quarter row
/// per super-block.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; each row pointer addresses `supers · 144` readable bytes;
/// each activation row covers `supers` super-blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4k_quad<const M: usize>(
    (rows, ahead): ([*const u8; 4], usize),
    supers: usize,
    xs: [&Q8K; M],
) -> [[f32; 4]; M] {
    let low = _mm256_set1_epi8(0x0F);
    // Plain loops, not `array::map`: `map` is not compiled with this function's target
    // features (see `kquads`).
    let mut spreads = [_mm256_setzero_si256(); 8];
    for (v, s) in spreads.iter_mut().zip(&SPREADS) {
        *v = _mm256_loadu_si256(s.as_ptr() as *const __m256i);
    }
    let mins16 = _mm256_loadu_si256(MINS.as_ptr() as *const __m256i);
    // [d0, dmin0, d1, dmin1, ..] to [d0..d3, dmin0..dmin3].
    let chains = _mm256_set_epi32(7, 5, 3, 1, 6, 4, 2, 0);
    let mut acc = [_mm256_setzero_ps(); M];
    for b in 0..supers {
        let blk = super_block((rows, ahead), b);
        let head = |r: usize| _mm_loadu_si128(blk[r] as *const __m128i);
        let (h01, h23) = (
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(head(0)), head(1)),
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(head(2)), head(3)),
        );
        let (u01, u23) = (unpack(h01), unpack(h23));
        // Each row's minimums times the activations' sums per 32: four i32 in its lane.
        let (m01, m23) = (
            _mm256_shuffle_epi8(u01, mins16),
            _mm256_shuffle_epi8(u23, mins16),
        );
        let mut mins = [[_mm256_setzero_si256(); 2]; M];
        for (m, x) in mins.iter_mut().zip(&xs) {
            let sums = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                x.sums32.as_ptr().add(b) as *const __m128i
            ));
            *m = [_mm256_madd_epi16(m01, sums), _mm256_madd_epi16(m23, sums)];
        }
        let scales = [
            _mm256_permute2x128_si256::<0x00>(u01, u01),
            _mm256_permute2x128_si256::<0x11>(u01, u01),
            _mm256_permute2x128_si256::<0x00>(u23, u23),
            _mm256_permute2x128_si256::<0x11>(u23, u23),
        ];
        let mut isum = [[_mm256_setzero_si256(); 4]; M];
        for r in 0..4 {
            let qs = blk[r].add(16);
            for p in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * p) as *const __m256i);
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                let s0 = _mm256_shuffle_epi8(scales[r], spreads[2 * p]);
                let s1 = _mm256_shuffle_epi8(scales[r], spreads[2 * p + 1]);
                for (isum, x) in isum.iter_mut().zip(&xs) {
                    // Pairs of nibble × i8 products fit i16 (at most 2·15·128); one `madd`
                    // weights them by the sub-block's scale into i32.
                    let xq = x.qs.as_ptr().add(b * QK_K + 64 * p);
                    let x0 = _mm256_loadu_si256(xq as *const __m256i);
                    let x1 = _mm256_loadu_si256(xq.add(32) as *const __m256i);
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), s0);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), s1);
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(p0, p1));
                }
            }
        }
        // d and dmin of the four rows: each header's first dword, [d0, dmin0, .., d3, dmin3].
        let firsts = _mm256_unpacklo_epi32(h01, h23);
        let firsts = _mm_unpacklo_epi32(
            _mm256_castsi256_si128(firsts),
            _mm256_extracti128_si256::<1>(firsts),
        );
        let scale = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(firsts), chains);
        for j in 0..M {
            let ints = reduce(&isum[j], mins[j]);
            let scale = _mm256_mul_ps(scale, _mm256_set1_ps(xs[j].d[b]));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), scale, acc[j]);
        }
    }
    differences(&acc)
}

/// Four rows' products from their two chains per activation row, `[acc0..acc3, accm0..accm3]`:
/// `acc − accm` (the portable form's last step; [`super::kquads`] ends the same way).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn differences<const M: usize>(acc: &[__m256; M]) -> [[f32; 4]; M] {
    let mut out = [[0f32; 4]; M];
    for (o, acc) in out.iter_mut().zip(acc) {
        let mut all = [0f32; 8];
        _mm256_storeu_ps(all.as_mut_ptr(), *acc);
        for (r, v) in o.iter_mut().enumerate() {
            *v = all[r] - all[4 + r];
        }
    }
    out
}

/// The four rows' integer sums (`isum`, one register per row) and minimum sums (`mins`: rows
/// 0 and 1, then 2 and 3, four i32 in each row's lane) as `[isum0..isum3, imin0..imin3]`
/// (exact, as any order of integer additions is).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce(isum: &[__m256i; 4], mins: [__m256i; 2]) -> __m256i {
    // Per lane [Σ row 0, Σ row 1, Σ row 2, Σ row 3] after two rounds of pairwise adds, then
    // the two lanes added.
    let t = _mm256_hadd_epi32(
        _mm256_hadd_epi32(isum[0], isum[1]),
        _mm256_hadd_epi32(isum[2], isum[3]),
    );
    let isums = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
    // Lane 0 [r0, r2, r0, r2] and lane 1 [r1, r3, r1, r3], then interleaved.
    let m = _mm256_hadd_epi32(mins[0], mins[1]);
    let m = _mm256_hadd_epi32(m, m);
    let imins = _mm_unpacklo_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(isums), imins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::gemv::{kernel, test_values, Kernel};
    use crate::kernels::cpu::kdots;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    #[test]
    fn four_rows_at_once_equal_the_portable_dots_bit_for_bit() {
        if kernel() == Kernel::Scalar {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let (n, k) = (6, 1024);
        let w = Tensor::from_vec(test_values(n * k, 61), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let data = q.data().unwrap();
        let row_bytes = data.len() / n;
        let row = |i: usize| data[i * row_bytes..].as_ptr();
        let xs: Vec<_> = (62..66)
            .map(|s| kdots::quantize(&test_values(k, s)))
            .collect();
        // Rows in every slot, one repeated as a partial quad repeats its rows.
        for rows in [[0, 1, 2, 3], [5, 4, 3, 2], [4, 5, 5, 5]] {
            let at = (rows.map(row), 0);
            // SAFETY: the CPU has AVX2, FMA and F16C (a SIMD tier); every row holds k values.
            let (one, four) = unsafe {
                (
                    q4k_quad(at, k / QK_K, [&xs[0]]),
                    q4k_quad(at, k / QK_K, [&xs[0], &xs[1], &xs[2], &xs[3]]),
                )
            };
            assert_eq!(one[0].map(f32::to_bits), four[0].map(f32::to_bits));
            for (x, got) in xs.iter().zip(&four) {
                for (g, &r) in got.iter().zip(&rows) {
                    let want = kdots::q4k_dot(&data[r * row_bytes..(r + 1) * row_bytes], x);
                    assert_eq!(g.to_bits(), want.to_bits(), "row {r}: {g} vs {want}");
                }
            }
        }
    }
}
