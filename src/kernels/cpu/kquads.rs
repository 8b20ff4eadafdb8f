//! Q4_K and Q6_K products of one to a few activation rows (decoding, several sequences
//! decoding together) on CPUs with AVX-512 VNNI, four weight rows at a time, in the numerics
//! of [`super::kdots`] (bit for bit).
//!
//! The single-row AVX2 dot spends more instructions on each super-block's bookkeeping
//! (unpacking twelve bytes of scales, broadcasting them, two horizontal sums, two scalar
//! multiply-adds) than on its products. Four rows share all of that: their 16-byte headers
//! (`d`, `dmin`, scales) are loaded into one register and unpacked together with ggml's word
//! masks; each row's scales reach its products through byte shuffles as i16 lanes for
//! `vpdpwssd`; the four rows' integer sums are transposed and added in one tree; and one
//! eight-lane multiply-add advances all four rows' two float chains (`acc += isum · d·d8`,
//! `accm += imin · dmin·d8`), each lane the scalar step of the portable form. Q6_K's rows
//! build their 6-bit values two runs of 32 per register and keep ggml's eight lanes per row.
//! Up to four activation rows share each quad's unpacked weights.

use std::arch::x86_64::*;

use super::kdots::{Q4K_BYTES, Q6K_BYTES, Q8K, QK_K};

/// `vpshufb` indices that spread scale bytes `a` (first 256 bits) and `b` (last 256 bits) of
/// each 128-bit lane into i16 lanes.
const fn spread(a: i8, b: i8) -> [i8; 64] {
    let mut v = [-128i8; 64];
    let mut i = 0;
    while i < 64 {
        v[i] = if i < 32 { a } else { b };
        i += 2;
    }
    v
}

/// Q4_K's scale spreads for sub-blocks (0, 2), (1, 3), (4, 6), (5, 7).
const SPREADS: [[i8; 64]; 4] = [spread(0, 2), spread(1, 3), spread(4, 6), spread(5, 7)];

/// `vpshufb` indices that widen bytes 8..16 of each 128-bit lane (a row's minimums) to i16.
const MINS: [i8; 64] = super::kquads_avx2::widen_mins();

/// Q6_K's `vpermw` indices: run pair `p`'s i16 lane `i` takes scale `4p + i/8`.
const Q6_SPREADS: [[i16; 32]; 4] = {
    let mut v = [[0i16; 32]; 4];
    let mut p = 0;
    while p < 4 {
        let mut i = 0;
        while i < 32 {
            v[p][i] = (4 * p + i / 8) as i16;
            i += 1;
        }
        p += 1;
    }
    v
};

/// Row `R`'s 128-bit lane of `v` in all four lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn lane<const R: i32>(v: __m512i) -> __m512i {
    _mm512_shuffle_i32x4::<R>(v, v)
}

/// The products of the Q4_K rows at `rows` (each `supers` super-blocks) with each of `M`
/// activation rows `x` (with their sums per 32, [`Q8K::sums32`]): `[activation][row]`. The weights'
/// unpacking is shared by all `M`; each product is the one-activation product, bit for bit.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI, AVX2, FMA and F16C; each row pointer addresses
/// `supers · 144` readable bytes; each `x` and its sums cover `supers` super-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn q4k_quad<const M: usize>(
    (rows, ahead): ([*const u8; 4], usize),
    supers: usize,
    xs: [(&Q8K, &[[i16; 8]]); M],
) -> [[f32; 4]; M] {
    let low = _mm512_set1_epi8(0x0F);
    // ggml's word masks over the twelve scale bytes (dwords 1..4 of each row's header):
    // scales 0..8 into bytes 0..8, minimums into bytes 8..16.
    let (k1, k2, k3) = (0x3F3F3F3F, 0x0F0F0F0F, 0x30303030);
    let low_masks = _mm512_set_epi32(
        k2, k1, k2, k1, k2, k1, k2, k1, k2, k1, k2, k1, k2, k1, k2, k1,
    );
    let high_masks = _mm512_set_epi32(k3, 0, k3, 0, k3, 0, k3, 0, k3, 0, k3, 0, k3, 0, k3, 0);
    let shifts = _mm512_set_epi32(4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0);
    // Plain loops, not `array::map`, here and below: `map` is not compiled with this
    // function's target features, so it was not inlined and every element went through a
    // call and memory (a tenth of Llama 3.2 1B's decoding time).
    let mut spreads = [_mm512_setzero_si512(); 4];
    for (v, s) in spreads.iter_mut().zip(&SPREADS) {
        *v = _mm512_loadu_si512(s.as_ptr() as *const _);
    }
    let mins16 = _mm512_loadu_si512(MINS.as_ptr() as *const _);
    let firsts = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    let chains = _mm256_set_epi32(7, 5, 3, 1, 6, 4, 2, 0);
    let mut acc = [_mm256_setzero_ps(); M];
    for b in 0..supers {
        // The next quad's bytes, in order: a quarter of a row's share per super-block.
        let blk = super::kquads_avx2::super_block((rows, ahead), b);
        let head = |r: usize| _mm_loadu_si128(blk[r] as *const __m128i);
        let h = _mm512_inserti32x4::<3>(
            _mm512_inserti32x4::<2>(
                _mm512_inserti32x4::<1>(_mm512_castsi128_si512(head(0)), head(1)),
                head(2),
            ),
            head(3),
        );
        // Per row: [u0 & k1, (u2 & k2) | ((u0 >> 6) & 3) << 4, u1 & k1,
        //           ((u2 >> 4) & k2) | ((u1 >> 6) & 3) << 4], u0..u2 its scale words.
        let words = _mm512_srlv_epi32(_mm512_shuffle_epi32::<0b11_10_11_01>(h), shifts);
        let highs = _mm512_srli_epi32::<2>(_mm512_shuffle_epi32::<0b10_00_01_00>(h));
        let unpacked = _mm512_or_si512(
            _mm512_and_si512(words, low_masks),
            _mm512_and_si512(highs, high_masks),
        );
        // Minimums times the activations' sums per 32: four i32 per row, in the row's lane.
        let mins16 = _mm512_shuffle_epi8(unpacked, mins16);
        let mut mins = [_mm512_setzero_si512(); M];
        for (m, (_, sums)) in mins.iter_mut().zip(&xs) {
            let block = _mm_loadu_si128(sums[b].as_ptr() as *const _);
            *m = _mm512_madd_epi16(mins16, _mm512_broadcast_i32x4(block));
        }
        // Sub-blocks (0, 2), (1, 3), (4, 6), (5, 7): the low and high nibbles of 64 bytes.
        let mut acts = [[_mm512_setzero_si512(); 4]; M];
        for (a, (x, _)) in acts.iter_mut().zip(&xs) {
            let xq = x.qs.as_ptr().add(b * QK_K) as *const __m512i;
            let (x01, x23) = (_mm512_loadu_si512(xq), _mm512_loadu_si512(xq.add(1)));
            let (x45, x67) = (_mm512_loadu_si512(xq.add(2)), _mm512_loadu_si512(xq.add(3)));
            *a = [
                _mm512_shuffle_i64x2::<0x44>(x01, x23),
                _mm512_shuffle_i64x2::<0xEE>(x01, x23),
                _mm512_shuffle_i64x2::<0x44>(x45, x67),
                _mm512_shuffle_i64x2::<0xEE>(x45, x67),
            ];
        }
        let scales = [
            lane::<0x00>(unpacked),
            lane::<0x55>(unpacked),
            lane::<0xAA>(unpacked),
            lane::<0xFF>(unpacked),
        ];
        let mut isum = [[_mm512_setzero_si512(); 4]; M];
        for r in 0..4 {
            let qs = blk[r].add(16) as *const __m512i;
            let (q0, q1) = (_mm512_loadu_si512(qs), _mm512_loadu_si512(qs.add(1)));
            let nibbles = [
                _mm512_and_si512(q0, low),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q0), low),
                _mm512_and_si512(q1, low),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q1), low),
            ];
            let mut sc = [_mm512_setzero_si512(); 4];
            for (c, s) in sc.iter_mut().zip(&spreads) {
                *c = _mm512_shuffle_epi8(scales[r], *s);
            }
            for (isum, x) in isum.iter_mut().zip(&acts) {
                for i in 0..4 {
                    // Pairs of nibble × i8 products fit i16; `vpdpwssd` weights them by the
                    // sub-block's scale into the row's i32 lanes.
                    let pairs = _mm512_maddubs_epi16(nibbles[i], x[i]);
                    isum[r] = _mm512_dpwssd_epi32(isum[r], pairs, sc[i]);
                }
            }
        }
        // d and dmin of the four rows, [d0..d3, dmin0..dmin3].
        let halves = _mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, h));
        let scale = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(halves), chains);
        for j in 0..M {
            let ints = reduce(&isum[j], mins[j], firsts);
            let scale = _mm256_mul_ps(scale, _mm256_set1_ps(xs[j].0.d[b]));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), scale, acc[j]);
        }
    }
    super::kquads_avx2::differences(&acc)
}

/// The four rows' integer sums (`isum`, one register per row) and minimum sums (`mins`, four
/// i32 in each row's 128-bit lane) as `[isum0..isum3, imin0..imin3]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn reduce(isum: &[__m512i; 4], mins: __m512i, firsts: __m512i) -> __m256i {
    // Transpose-and-add: per 128-bit lane [Σ row 0, Σ row 1, Σ row 2, Σ row 3], then the
    // four lanes added.
    let pair = |a, b| _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    let (s01, s23) = (pair(isum[0], isum[1]), pair(isum[2], isum[3]));
    let t = _mm512_add_epi32(
        _mm512_unpacklo_epi64(s01, s23),
        _mm512_unpackhi_epi64(s01, s23),
    );
    let t = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64::<1>(t));
    let isums = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
    // Each row's minimum sum: its lane's four i32 added, then the lanes' first elements.
    let m = _mm512_add_epi32(mins, _mm512_shuffle_epi32::<0b01_00_11_10>(mins));
    let m = _mm512_add_epi32(m, _mm512_shuffle_epi32::<0b10_11_00_01>(m));
    let imins = _mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, m));
    _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(isums), imins)
}

/// The products of the `R` Q6_K rows at `rows` (each `supers` super-blocks) with each of `M`
/// activation rows (with their sums per 16, [`Q8K::bsums16`]), `[activation][row]`, bytes `ahead` of the
/// rows prefetched as in [`q4k_quad`] (none when `ahead` is 0); the weights' unpacking is
/// shared by all `M`.
///
/// Per row and super-block the eight i32 lanes of ggml's AVX2 form (lane `l`: elements
/// `4l..4l+4` of every run of 32, each run's product weighted by its scale per 16, less
/// `32 · (bsum₂ₗ·scale₂ₗ + bsum₂ₗ₊₁·scale₂ₗ₊₁)`): two runs per register, whose halves are
/// added at the end, then `d·d8` fused into the row's eight-lane chain.
///
/// # Safety
/// As [`q4k_quad`], with rows of `supers · 210` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn q6k_rows<const R: usize, const M: usize>(
    (rows, ahead): ([*const u8; R], usize),
    supers: usize,
    xs: [(&Q8K, &[[i16; 16]]); M],
) -> [[f32; R]; M] {
    let (low, two) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    // Bits 2·idx of each high byte feed run idx: runs 0 and 1 (low nibbles), 2 and 3 (high).
    let shift_lo = _mm512_inserti64x4::<1>(_mm512_set1_epi16(0), _mm256_set1_epi16(2));
    let shift_hi = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(6));
    let mut spread = [_mm512_setzero_si512(); 4];
    for (v, s) in spread.iter_mut().zip(&Q6_SPREADS) {
        *v = _mm512_loadu_si512(s.as_ptr() as *const _);
    }
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    for b in 0..supers {
        let mut blk = rows;
        for r in &mut blk {
            *r = r.add(b * Q6K_BYTES);
        }
        if ahead > 0 {
            let next = rows[0].wrapping_add(ahead + b * R * Q6K_BYTES);
            for line in 0..(R * Q6K_BYTES).div_ceil(64) + 1 {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line) as *const i8);
            }
        }
        let mut acts = [[_mm512_setzero_si512(); 4]; M];
        let mut bsums = [_mm256_setzero_si256(); M];
        for ((a, bs), (x, sums)) in acts.iter_mut().zip(&mut bsums).zip(&xs) {
            let xq = x.qs.as_ptr().add(b * QK_K) as *const __m512i;
            for (i, v) in a.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(xq.add(i));
            }
            *bs = _mm256_loadu_si256(sums[b].as_ptr() as *const __m256i);
        }
        for r in 0..R {
            let p = blk[r];
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
            let wide = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(scales), scales);
            let mut isum = [_mm512_setzero_si512(); M];
            for h in 0..2 {
                let ql = _mm512_loadu_si512(p.add(64 * h) as *const __m512i);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
                let high = |shift| {
                    _mm512_and_si512(_mm512_slli_epi16::<4>(_mm512_srlv_epi16(qh, shift)), two)
                };
                let runs = [
                    _mm512_or_si512(_mm512_and_si512(ql, low), high(shift_lo)),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low),
                        high(shift_hi),
                    ),
                ];
                for (i, w) in runs.into_iter().enumerate() {
                    let pair = 2 * h + i;
                    let s = _mm512_permutexvar_epi16(spread[pair], wide);
                    for (isum, x) in isum.iter_mut().zip(&acts) {
                        let products = _mm512_maddubs_epi16(w, x[pair]);
                        *isum = _mm512_dpwssd_epi32(*isum, products, s);
                    }
                }
            }
            let bits = (p.add(208) as *const u16).read_unaligned() as i32;
            let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
            for j in 0..M {
                let lanes = _mm256_add_epi32(
                    _mm512_castsi512_si256(isum[j]),
                    _mm512_extracti64x4_epi64::<1>(isum[j]),
                );
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums[j], scales));
                let lanes = _mm256_sub_epi32(lanes, offset);
                let d = _mm256_set1_ps(xs[j].0.d[b] * dw);
                acc[j][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[j][r]);
            }
        }
    }
    let mut out = [[0f32; R]; M];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (v, a) in o.iter_mut().zip(a) {
            *v = super::gemv::hsum(*a);
        }
    }
    out
}

/// `out[j·n + i]` = row `i` of `weights` (`n` Q4_K rows, or Q6_K with `q6`, of `row_bytes`)
/// · `xs[j]`, four rows at a time over the CPU pool (a last, partial quad repeats its last
/// row); with one activation row a quad's Q6_K rows are read one after another. `wide` picks
/// the AVX-512 kernels; without it the Q4_K quads are [`super::kquads_avx2`]'s.
///
/// # Safety
/// With `wide` the CPU has AVX-512 F, BW and VNNI, AVX2, FMA and F16C; without it AVX2, FMA
/// and F16C, and `q6` is false. `weights` holds `n` rows of `row_bytes` (a whole number of
/// super-blocks), each `xs[j]` that many super-blocks, and `out` `xs.len() · n` values.
pub(crate) unsafe fn products(
    wide: bool,
    q6: bool,
    (weights, row_bytes): (&[u8], usize),
    n: usize,
    xs: &[Q8K],
    out: &mut [f32],
) {
    let supers = row_bytes / if q6 { Q6K_BYTES } else { Q4K_BYTES };
    let out_addr = out.as_mut_ptr() as usize;
    super::pool::Pool::global().run(n.div_ceil(4), |quads| {
        for q in quads {
            let r0 = 4 * q;
            let rows = std::array::from_fn(|i| weights[(r0 + i).min(n - 1) * row_bytes..].as_ptr());
            let store = |j: usize, v: [f32; 4]| {
                for (i, &v) in v.iter().enumerate().take(n - r0) {
                    // SAFETY: each quad writes only its own rows' entries of `out`, which
                    // outlives the call.
                    unsafe { *(out_addr as *mut f32).add(j * n + r0 + i) = v };
                }
            };
            let at = (rows, 4 * row_bytes);
            if q6 && xs.len() == 1 {
                // One activation row (decoding): each Q6_K row on its own, in order, its bytes
                // prefetched `PREFETCH_BYTES` ahead of itself as the one-row kernels do. Four
                // rows side by side streamed worse: on AMD Zen 4 the hardware prefetcher did
                // not follow two or four interleaved rows (without software prefetch the 1B
                // shape's decode fell from 25 to 13.5 t/s), and the quad's prefetch of the
                // next quad left it 2–4% behind one row at a time.
                let ahead = super::gemv::PREFETCH_BYTES;
                let mut v = [0f32; 4];
                for (v, &row) in v.iter_mut().zip(&rows).take(n - r0) {
                    let x = [(&xs[0], &xs[0].bsums16[..])];
                    // SAFETY: as the caller promised.
                    *v = unsafe { q6k_rows(([row], ahead), supers, x) }[0][0];
                }
                store(0, v);
                continue;
            }
            // Up to four activation rows share each quad's unpacked weights.
            for (g, group) in xs.chunks(4).enumerate() {
                let x4 = |j: usize| (&group[j], &group[j].sums32[..]);
                let x6 = |j: usize| (&group[j], &group[j].bsums16[..]);
                macro_rules! run {
                    ($($j:literal),+) => {{
                        // SAFETY: as the caller promised.
                        let v = unsafe {
                            match (q6, wide) {
                                (true, _) => q6k_rows(at, supers, [$(x6($j)),+]),
                                (false, true) => q4k_quad(at, supers, [$(x4($j)),+]),
                                (false, false) => {
                                    super::kquads_avx2::q4k_quad(at, supers, [$(&group[$j]),+])
                                }
                            }
                        };
                        for (j, v) in v.into_iter().enumerate() {
                            store(4 * g + j, v);
                        }
                    }};
                }
                match group.len() {
                    1 => run!(0),
                    2 => run!(0, 1),
                    3 => run!(0, 1, 2),
                    _ => run!(0, 1, 2, 3),
                }
            }
        }
    });
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
        if kernel() != Kernel::Avx512Vnni {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let (n, k) = (6, 1024);
        let w = Tensor::from_vec(test_values(n * k, 51), (n, k), &Device::Cpu).unwrap();
        for (dtype, q6) in [(GgmlDType::Q4K, false), (GgmlDType::Q6K, true)] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let data = q.data().unwrap();
            let row_bytes = data.len() / n;
            let row = |i: usize| data[i * row_bytes..].as_ptr();
            for seed in [52, 53] {
                let x = kdots::quantize(&test_values(k, seed));
                // Rows in every slot, one repeated as a partial quad repeats its rows.
                for rows in [[0, 1, 2, 3], [5, 4, 3, 2], [4, 5, 5, 5]] {
                    // SAFETY: the CPU has AVX-512 VNNI (checked above); every row holds k
                    // values.
                    let got = unsafe {
                        match q6 {
                            true => {
                                let sums = &x.bsums16;
                                let quad =
                                    q6k_rows((rows.map(row), 0), k / QK_K, [(&x, &sums[..])])[0];
                                // One row at a time, as decoding reads them: the same values.
                                let one = rows.map(|r| {
                                    q6k_rows(([row(r)], 0), k / QK_K, [(&x, &sums[..])])[0][0]
                                });
                                assert_eq!(quad.map(f32::to_bits), one.map(f32::to_bits));
                                quad
                            }
                            false => {
                                let sums = &x.sums32;
                                q4k_quad((rows.map(row), 0), k / QK_K, [(&x, &sums[..])])[0]
                            }
                        }
                    };
                    for (g, &r) in got.iter().zip(&rows) {
                        let bytes = &data[r * row_bytes..(r + 1) * row_bytes];
                        let want = match q6 {
                            true => kdots::q6k_dot(bytes, &x),
                            false => kdots::q4k_dot(bytes, &x),
                        };
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{dtype:?} row {r}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
