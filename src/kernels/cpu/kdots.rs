//! Q4_K and Q6_K dot products with Q8_K activations, rounded as llama.cpp's CPU kernels round
//! them, so that a k-quant model's logits can equal llama.cpp's bit for bit:
//!
//! - **Q4_K** (what ggml's repacked 8×8 `gemv` computes on x86, for one token and for the
//!   last `n mod 4` tokens of a batch): per super-block of 256, the exact integer
//!   `Σ scale_j · (q·q8)_j` over its eight sub-blocks and `Σ min_j · bsum_j`, then two fused
//!   chains across super-blocks, `acc += isum · (d·d8)` and `accm += imin · (dmin·d8)`; the
//!   result is `acc − accm`. Its `gemm`, for the other tokens of a batch, fuses every 64
//!   values rather than every 256, so there our products differ from llama.cpp's in the
//!   last bits (Gemma 3's first-step logits by 0.13 rms; its top-5 order holds).
//! - **Q6_K** (`ggml_vec_dot_q6_K_q8_K`'s AVX2 form): per super-block, eight i32 lanes (lane
//!   `l` sums elements `4l..4l+4` of each 32-element run, times its 16-element scale), less
//!   `32 · Σ bsum·scale` over scale groups `2l, 2l+1`; the lanes fused into one eight-lane
//!   chain with `d8·d`, summed as `hsum_float_8`.
//!
//! Integers are exact whichever way they are summed, so only the float steps are pinned
//! down; the AVX2 forms here and the batched tiles ([`super::gemm_q8`]) compute the same
//! integers and the same float steps.

use half::f16;

/// Elements per super-block.
pub(crate) const QK_K: usize = 256;
/// Bytes per Q4_K super-block.
pub(crate) const Q4K_BYTES: usize = 144;
/// Bytes per Q6_K super-block.
pub(crate) const Q6K_BYTES: usize = 210;

/// Activations quantized as ggml's Q8_K: values, one f32 scale per super-block, and sums of
/// the values per 16.
pub(crate) struct Q8K {
    pub(crate) qs: Vec<i8>,
    pub(crate) d: Vec<f32>,
    pub(crate) bsums: Vec<i32>,
    /// The sums per sub-block of 32 as i16 (at most 32·128), per super-block: what Q4_K's
    /// minimums multiply, formed once per activation row for every kernel.
    pub(crate) sums32: Vec<[i16; 8]>,
    /// `bsums` as i16 (each at most 16·128), per super-block: what Q6_K's offset multiplies
    /// in the AVX2 form.
    #[cfg(target_arch = "x86_64")]
    pub(crate) bsums16: Vec<[i16; 16]>,
}

/// Quantizes `x` (a multiple of 256 long) to Q8_K ([`super::gemv::quantize_k`]).
pub(crate) fn quantize(x: &[f32]) -> Q8K {
    let q = super::gemv::quantize_k(x);
    let d = q.d.iter().step_by(QK_K / 32).copied().collect();
    let bsums: Vec<i32> =
        q.qs.chunks_exact(16)
            .map(|c| c.iter().map(|&v| v as i32).sum())
            .collect();
    let sums32 = sub_block_sums(&bsums);
    #[cfg(target_arch = "x86_64")]
    let bsums16 = bsums
        .chunks_exact(16)
        .map(|s| std::array::from_fn(|j| s[j] as i16))
        .collect();
    Q8K {
        qs: q.qs,
        d,
        bsums,
        sums32,
        #[cfg(target_arch = "x86_64")]
        bsums16,
    }
}

/// The activations' sums per sub-block of 32 (pairs of Q8_K's sums per 16, `bsums`), as i16,
/// per super-block: what Q4_K's minimums multiply.
fn sub_block_sums(bsums: &[i32]) -> Vec<[i16; 8]> {
    bsums
        .chunks_exact(16)
        .map(|s| std::array::from_fn(|j| (s[2 * j] + s[2 * j + 1]) as i16))
        .collect()
}

pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Scale and minimum of Q4_K sub-block `j` (6 bits each, packed in 12 bytes).
pub(crate) fn q4k_scale_min(sc: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (sc[j] & 63, sc[j + 4] & 63)
    } else {
        (
            (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4),
            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
        )
    }
}

/// Q4_K row · Q8_K activations, portable form: the reference every kernel is tested against
/// (the portable products run [`super::kdots_portable`]).
#[cfg(test)]
pub(crate) fn q4k_dot(row: &[u8], x: &Q8K) -> f32 {
    let (mut acc, mut accm) = (0f32, 0f32);
    for (b, blk) in row.chunks_exact(Q4K_BYTES).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let (sc, qs) = (&blk[4..16], &blk[16..]);
        let xq = &x.qs[b * QK_K..(b + 1) * QK_K];
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..8 {
            let (s, m) = q4k_scale_min(sc, j);
            let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let dot: i32 = bytes
                .iter()
                .zip(&xq[32 * j..32 * j + 32])
                .map(|(&q, &v)| (if j % 2 == 0 { q & 15 } else { q >> 4 }) as i32 * v as i32)
                .sum();
            isum += s as i32 * dot;
            imin += m as i32 * (x.bsums[16 * b + 2 * j] + x.bsums[16 * b + 2 * j + 1]);
        }
        acc = (isum as f32).mul_add(d * x.d[b], acc);
        accm = (imin as f32).mul_add(dmin * x.d[b], accm);
    }
    acc - accm
}

/// The unsigned 6-bit value (0..64) of element `e` of a Q6_K super-block.
#[cfg(test)]
fn q6k_value(blk: &[u8], e: usize) -> u8 {
    let (h, idx, t) = (e / 128, (e % 128) / 32, e % 32);
    let ql = blk[64 * h + (idx % 2) * 32 + t];
    let nib = if idx < 2 { ql & 15 } else { ql >> 4 };
    let qh = (blk[128 + 32 * h + t] >> (2 * idx)) & 3;
    nib | (qh << 4)
}

/// The eight lane sums of one Q6_K super-block, offset removed as ggml removes it.
#[cfg(test)]
fn q6k_lanes(blk: &[u8], xq: &[i8], bsums: &[i32]) -> [i32; 8] {
    let scales = &blk[192..208];
    let mut lanes = [0i32; 8];
    for v in 0..8 {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let mut dot = 0i32;
            for t in 0..4 {
                let e = 32 * v + 4 * l + t;
                dot += q6k_value(blk, e) as i32 * xq[e] as i32;
            }
            *lane += scales[(32 * v + 4 * l) / 16] as i8 as i32 * dot;
        }
    }
    for (l, lane) in lanes.iter_mut().enumerate() {
        let sub = bsums[2 * l] * scales[2 * l] as i8 as i32
            + bsums[2 * l + 1] * scales[2 * l + 1] as i8 as i32;
        *lane -= sub << 5;
    }
    lanes
}

/// Q6_K row · Q8_K activations, portable form: the reference every kernel is tested against.
#[cfg(test)]
pub(crate) fn q6k_dot(row: &[u8], x: &Q8K) -> f32 {
    let mut acc = [0f32; 8];
    for (b, blk) in row.chunks_exact(Q6K_BYTES).enumerate() {
        let d = x.d[b] * f16_at(blk, 208);
        let lanes = q6k_lanes(
            blk,
            &x.qs[b * QK_K..(b + 1) * QK_K],
            &x.bsums[16 * b..16 * b + 16],
        );
        for (a, &l) in acc.iter_mut().zip(&lanes) {
            *a = d.mul_add(l as f32, *a);
        }
    }
    hsum8(&acc)
}

/// `hsum_float_8`'s order: halves added, then pairs `(0, 2)` and `(1, 3)`, then those two.
pub(crate) fn hsum8(a: &[f32; 8]) -> f32 {
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{q4k_scale_min, Q4K_BYTES, Q6K_BYTES, Q8K, QK_K};

    /// The two f16 values at `p` and `p + 2` as f32, by the F16C instruction (exact, as the
    /// portable conversion is; `half`'s call checks for F16C on every use).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// The f16 value at `p` as f32 (two bytes read, no more).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_one(p: *const u8) -> f32 {
        let bits = (p as *const u16).read_unaligned() as i32;
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }

    /// The sums of `a`'s eight i32 lanes and of `b`'s four, together (exact, as any order
    /// of integer additions is).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_pair(a: __m256i, b: __m128i) -> (i32, i32) {
        let a = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        let h = _mm_hadd_epi32(a, b);
        let h = _mm_hadd_epi32(h, h);
        (_mm_cvtsi128_si32(h), _mm_extract_epi32::<1>(h))
    }

    /// The eight 6-bit scales and eight minimums of a Q4_K super-block (its 12 packed bytes).
    /// (Unpacking with whole-word masks measured 20% slower here: unrolled, this loop is
    /// branch-free shifts and masks.)
    #[inline]
    fn scales_mins(sc: &[u8]) -> ([i16; 8], [i16; 8]) {
        let (mut s, mut m) = ([0i16; 8], [0i16; 8]);
        for j in 0..8 {
            let (a, b) = q4k_scale_min(sc, j);
            (s[j], m[j]) = (a as i16, b as i16);
        }
        (s, m)
    }

    /// The same integers and float steps as the portable form: per sub-block the u8×i8
    /// products summed in pairs (i16, at most 2·15·127) are weighted by the sub-block's scale
    /// in one `madd` (i32), so no 32-bit multiply is needed; the minimums' term is one `madd`
    /// of the eight minimums with the activation sums per 32.
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q4k_dot(row: &[u8], x: &Q8K) -> f32 {
        q4k_dots::<1>(row, [x])[0]
    }

    /// The products of rows `rows` (`row_bytes` each, in `weights`) with one activation row,
    /// row `i`'s into `out[i]`: a decode step's loop, with no call and no copy per row.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the rows are Q6_K (`q6`) or Q4_K covering `x`; `out` is
    /// valid for writes at every index in `rows`, which nothing else touches during the call.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn one_activation(
        q6: bool,
        (weights, row_bytes): (&[u8], usize),
        rows: std::ops::Range<usize>,
        x: &Q8K,
        out: *mut f32,
    ) {
        for i in rows {
            let row = &weights[i * row_bytes..(i + 1) * row_bytes];
            let [v] = if q6 {
                q6k_dots::<1>(row, [x])
            } else {
                q4k_dots::<1>(row, [x])
            };
            *out.add(i) = v;
        }
    }

    /// [`q4k_dot`] of one row with `M` activation rows at once (several sequences decoding
    /// together): each block's nibbles are loaded and split once for all of them; every
    /// product is the single-row one, bit for bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q4k_dots<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
        let (mut acc, mut accm) = ([0f32; M], [0f32; M]);
        let low = _mm256_set1_epi8(0x0F);
        for (b, blk) in row.chunks_exact(Q4K_BYTES).enumerate() {
            crate::kernels::cpu::gemv::prefetch_ahead(blk.as_ptr());
            let (d, dmin) = f16_pair(blk.as_ptr());
            let (sc, mn) = scales_mins(&blk[4..16]);
            let mut isum = [_mm256_setzero_si256(); M];
            for p in 0..4 {
                let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * p) as *const __m256i);
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                let (s0, s1) = (
                    _mm256_set1_epi16(sc[2 * p]),
                    _mm256_set1_epi16(sc[2 * p + 1]),
                );
                for (j, x) in xs.iter().enumerate() {
                    let xq = x.qs.as_ptr().add(b * QK_K);
                    let x0 = _mm256_loadu_si256(xq.add(64 * p) as *const __m256i);
                    let x1 = _mm256_loadu_si256(xq.add(64 * p + 32) as *const __m256i);
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), s0);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), s1);
                    isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p0, p1));
                }
            }
            let mins = _mm_loadu_si128(mn.as_ptr() as *const __m128i);
            for (j, x) in xs.iter().enumerate() {
                // Σ_j min_j · (bsum_2j + bsum_2j+1): one madd of the eight minimums with the
                // activations' sums per 32 (i16, at most 32·127), four i32 lanes.
                let sums = _mm_loadu_si128(x.sums32.as_ptr().add(b) as *const __m128i);
                let (isum, imin) = hsum_pair(isum[j], _mm_madd_epi16(mins, sums));
                acc[j] = (isum as f32).mul_add(d * x.d[b], acc[j]);
                accm[j] = (imin as f32).mul_add(dmin * x.d[b], accm[j]);
            }
        }
        std::array::from_fn(|j| acc[j] - accm[j])
    }

    #[cfg(test)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q6k_dot(row: &[u8], x: &Q8K) -> f32 {
        q6k_dots::<1>(row, [x])[0]
    }

    /// `vpshufb` indices, per 128-bit lane, that spread i16 scale `2i` (of a lane holding
    /// eight) over the low lane's eight words and `2i + 1` over the high lane's.
    const SCALE_PAIRS: [[u8; 32]; 4] = {
        let mut v = [[0u8; 32]; 4];
        let mut i = 0;
        while i < 4 {
            let mut b = 0;
            while b < 32 {
                v[i][b] = (4 * i + 2 * (b / 16) + b % 2) as u8;
                b += 1;
            }
            i += 1;
        }
        v
    };

    /// [`q6k_dot`] of one row with `M` activation rows at once: each block's 6-bit values
    /// are assembled once for all of them; every product is the single-row one, bit for bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn q6k_dots<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
        let mut acc = [_mm256_setzero_ps(); M];
        let (low, three) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        for (b, blk) in row.chunks_exact(Q6K_BYTES).enumerate() {
            crate::kernels::cpu::gemv::prefetch_ahead(blk.as_ptr());
            crate::kernels::cpu::gemv::prefetch_ahead(blk.as_ptr().add(128));
            let scales = blk.as_ptr().add(192) as *const i8;
            let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales as *const __m128i));
            let mut sumi = [_mm256_setzero_si256(); M];
            for h in 0..2 {
                // Scales 8h..8h + 8 (i16) in both lanes, for the pairs' in-lane shuffles.
                let half = if h == 0 {
                    _mm256_permute2x128_si256::<0x00>(scales16, scales16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(scales16, scales16)
                };
                let l0 = _mm256_loadu_si256(blk.as_ptr().add(64 * h) as *const __m256i);
                let l1 = _mm256_loadu_si256(blk.as_ptr().add(64 * h + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * h) as *const __m256i);
                let hi = |shift: i32| {
                    let bits = match shift {
                        0 => _mm256_and_si256(qh, three),
                        2 => _mm256_and_si256(_mm256_srli_epi16::<2>(qh), three),
                        4 => _mm256_and_si256(_mm256_srli_epi16::<4>(qh), three),
                        _ => _mm256_and_si256(_mm256_srli_epi16::<6>(qh), three),
                    };
                    _mm256_slli_epi16::<4>(bits)
                };
                let vecs = [
                    _mm256_or_si256(_mm256_and_si256(l0, low), hi(0)),
                    _mm256_or_si256(_mm256_and_si256(l1, low), hi(2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l0), low), hi(4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l1), low), hi(6)),
                ];
                for (idx, w) in vecs.into_iter().enumerate() {
                    // Pairs of 6-bit × i8 products fit i16 (at most 2·63·128); the scale
                    // of each 16 values weights them in the same madd that sums them.
                    // Scale 8h + 2·idx eight times, then the next one eight times (i16):
                    // one in-lane shuffle of the scales widened once per block, where
                    // ggml's shuffle, widen per pair took three (a block from the L2
                    // cache, one thread, Zen 3: 38 → 30 cycles).
                    let sc = _mm256_shuffle_epi8(
                        half,
                        _mm256_loadu_si256(SCALE_PAIRS[idx].as_ptr() as *const __m256i),
                    );
                    for (j, x) in xs.iter().enumerate() {
                        let xq = x.qs.as_ptr().add(b * QK_K);
                        let v = _mm256_loadu_si256(xq.add(128 * h + 32 * idx) as *const __m256i);
                        sumi[j] = _mm256_add_epi32(
                            sumi[j],
                            _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), sc),
                        );
                    }
                }
            }
            let dw = f16_one(blk.as_ptr().add(208));
            for (j, x) in xs.iter().enumerate() {
                let d = x.d[b] * dw;
                // The offset of 32, taken out per lane as ggml does: 32·(bsum·scale) over
                // scale groups 2l and 2l + 1 (one madd of i16 pairs).
                let bs = _mm256_loadu_si256(x.bsums16.as_ptr().add(b) as *const __m256i);
                let sub = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, scales16));
                let si = _mm256_sub_epi32(sumi[j], sub);
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(si), acc[j]);
            }
        }
        std::array::from_fn(|j| crate::kernels::cpu::gemv::hsum(acc[j]))
    }
}

/// `out[i] = W[i] · x` for Q4_K (`q6` false) or Q6_K (`q6` true) `weights` holding `n` rows
/// of `k` values (`k` a multiple of 256); `None` when the bytes do not hold them.
pub(crate) fn gemv(
    q6: bool,
    weights: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
) -> Option<()> {
    let row_bytes = k / QK_K * if q6 { Q6K_BYTES } else { Q4K_BYTES };
    let m = x.len() / k.max(1);
    if k == 0
        || !k.is_multiple_of(QK_K)
        || m == 0
        || x.len() != m * k
        || out.len() != m * n
        || weights.len() < n * row_bytes
    {
        return None;
    }
    products(
        q6,
        super::gemv::kernel(),
        (weights, row_bytes),
        n,
        k,
        x,
        out,
    );
    Some(())
}

/// The products of [`gemv`] (its sizes checked) by the kernels of `form`, which the CPU must
/// have: AVX-512 VNNI's four rows at a time ([`super::kquads`]), the AVX2 dots, or the
/// portable ones.
fn products(
    q6: bool,
    form: super::gemv::Kernel,
    (weights, row_bytes): (&[u8], usize),
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let xqs: Vec<_> = x.chunks_exact(k).map(quantize).collect();
    #[cfg(target_arch = "x86_64")]
    if form == super::gemv::Kernel::Avx512Vnni {
        // SAFETY: that kernel means the CPU has AVX-512 F/BW/VNNI, AVX2, FMA and F16C; the
        // caller checked the sizes.
        unsafe { super::kquads::products(true, q6, (weights, row_bytes), n, &xqs, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if form == super::gemv::Kernel::Avx2 && !q6 && xqs.len() <= 4 && quads() {
        // SAFETY: that kernel means the CPU has AVX2, FMA and F16C; the rows are Q4_K; the
        // caller checked the sizes.
        unsafe { super::kquads::products(false, q6, (weights, row_bytes), n, &xqs, out) };
        return;
    }
    let out_addr = out.as_mut_ptr() as usize;
    // One activation row (decode): each thread's rows in one AVX2 loop.
    #[cfg(target_arch = "x86_64")]
    if form == super::gemv::Kernel::Avx2 && xqs.len() == 1 {
        super::pool::Pool::global().run(n, |rows| {
            // SAFETY: that kernel means the CPU has AVX2, FMA and F16C; the caller checked the
            // sizes; each range of rows is handed to one thread, which writes only its entries
            // of `out` (`n` values), and `out` outlives the call.
            unsafe {
                avx2::one_activation(
                    q6,
                    (weights, row_bytes),
                    rows,
                    &xqs[0],
                    out_addr as *mut f32,
                )
            };
        });
        return;
    }
    // Weight rows split over the pool once; each thread takes its rows [`ROW_BLOCK`] at a
    // time against every group of up to four activation rows, so a row comes from memory
    // once per call and stays in L1 while the groups (in L2) pass over it.
    super::pool::Pool::global().run(n, |rows| {
        let mut vals = [0f32; GROUP];
        let mut first = rows.start;
        while first < rows.end {
            let block = first..(first + ROW_BLOCK).min(rows.end);
            for (g, group) in xqs.chunks(GROUP).enumerate() {
                for i in block.clone() {
                    let row = &weights[i * row_bytes..(i + 1) * row_bytes];
                    let vals = &mut vals[..group.len()];
                    dots(q6, form, row, group, vals);
                    for (j, v) in vals.iter().enumerate() {
                        // SAFETY: every row index is handed to one thread, which writes only
                        // its entries of `out` (`m × n`, the caller checked), and `out`
                        // outlives the call.
                        unsafe { *(out_addr as *mut f32).add((GROUP * g + j) * n + i) = *v };
                    }
                }
            }
            first = block.end;
        }
    });
}

/// Whether AVX2 takes Q4_K's stored rows four at a time ([`super::kquads_avx2`]; on unless
/// `MLCLI_KQUADS=0`, which keeps one row at a time, to compare).
#[cfg(target_arch = "x86_64")]
fn quads() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MLCLI_KQUADS").map_or(true, |v| v != "0"))
}

/// Activation rows one pass of the AVX2/portable dots shares each block's unpacked weights
/// and scales among.
const GROUP: usize = 8;

/// Weight rows a thread reads against all activation groups before the next ones (eight
/// rows of 4096 Q4_K values are 18 KiB).
const ROW_BLOCK: usize = 8;

/// The products of one row with a group of one to four activation rows, into `vals`, by the
/// AVX2 dots or the portable ones.
fn dots(q6: bool, form: super::gemv::Kernel, row: &[u8], group: &[Q8K], vals: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if form != super::gemv::Kernel::Scalar {
        // SAFETY: a non-scalar kernel means the CPU has AVX2, FMA and F16C.
        unsafe { simd_dots(q6, row, group, vals) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = form;
    super::kdots_portable::dots(q6, row, group, vals);
}

/// The AVX2 products of one row with a group of one to four activation rows, into `vals`.
///
/// # Safety
/// Only on CPUs with AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
unsafe fn simd_dots(q6: bool, row: &[u8], group: &[Q8K], vals: &mut [f32]) {
    macro_rules! dots {
        ($m:literal, [$($j:literal),*]) => {{
            let xs = [$(&group[$j]),*];
            let v: [f32; $m] = if q6 { avx2::q6k_dots::<$m>(row, xs) } else { avx2::q4k_dots::<$m>(row, xs) };
            vals.copy_from_slice(&v);
        }};
    }
    match group.len() {
        1 => dots!(1, [0]),
        2 => dots!(2, [0, 1]),
        3 => dots!(3, [0, 1, 2]),
        4 => dots!(4, [0, 1, 2, 3]),
        5 => dots!(5, [0, 1, 2, 3, 4]),
        6 => dots!(6, [0, 1, 2, 3, 4, 5]),
        7 => dots!(7, [0, 1, 2, 3, 4, 5, 6]),
        _ => dots!(8, [0, 1, 2, 3, 4, 5, 6, 7]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    #[test]
    fn simd_and_portable_forms_agree_bit_for_bit_and_with_the_exact_product() {
        let (n, k) = (12, 768);
        let w = super::super::gemv::test_values(n * k, 21);
        let x = super::super::gemv::test_values(k, 22);
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        for (dtype, q6) in [(GgmlDType::Q4K, false), (GgmlDType::Q6K, true)] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let data = q.data().unwrap();
            let exact = super::super::gemv::exact_product(&q, &x);
            let xq = quantize(&x);
            let row_bytes = data.len() / n;
            for (i, e) in exact.iter().enumerate() {
                let row = &data[i * row_bytes..(i + 1) * row_bytes];
                let portable = if q6 {
                    q6k_dot(row, &xq)
                } else {
                    q4k_dot(row, &xq)
                };
                assert!(
                    (portable - e).abs() < 0.05 * (1.0 + e.abs()),
                    "{dtype:?}: {portable} vs {e}"
                );
                // The portable kernels, which unpack each super-block once for several
                // activation rows, against this reference.
                let mut kernel = [0f32; 3];
                let xs = [quantize(&x), quantize(&x), quantize(&x)];
                super::super::kdots_portable::dots(q6, row, &xs, &mut kernel);
                for v in kernel {
                    assert_eq!(
                        v.to_bits(),
                        portable.to_bits(),
                        "{dtype:?} row {i}, portable"
                    );
                }
                #[cfg(target_arch = "x86_64")]
                if super::super::gemv::kernel() != super::super::gemv::Kernel::Scalar {
                    // SAFETY: a non-scalar kernel means AVX2, FMA and F16C.
                    let simd = unsafe {
                        if q6 {
                            avx2::q6k_dot(row, &xq)
                        } else {
                            avx2::q4k_dot(row, &xq)
                        }
                    };
                    assert_eq!(simd.to_bits(), portable.to_bits(), "{dtype:?} row {i}");
                }
            }
        }
    }

    #[test]
    fn every_form_gives_the_portable_products_bit_for_bit_for_several_activation_rows() {
        use super::super::gemv::{kernel, Kernel};
        // Ten rows: two whole quads and a partial one.
        let (n, k) = (10, 512);
        let w = super::super::gemv::test_values(n * k, 31);
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        // Every form this CPU runs, chosen here rather than through the process-wide kernel
        // switch, which other tests running beside this one rely on.
        let best = kernel();
        let forms = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni]
            .into_iter()
            .filter(|&f| {
                f == Kernel::Scalar || f == Kernel::Avx2 && best != Kernel::Scalar || f == best
            });
        for form in forms {
            for (dtype, q6) in [(GgmlDType::Q4K, false), (GgmlDType::Q6K, true)] {
                let q = QTensor::quantize(&w, dtype).unwrap();
                let data = q.data().unwrap();
                let rows = (&data[..], data.len() / n);
                for m in [1, 2, 3, 4, 5, 8, 11] {
                    let x = super::super::gemv::test_values(m * k, 40 + m as u32);
                    let mut all = vec![0f32; m * n];
                    products(q6, form, rows, n, k, &x, &mut all);
                    for (b, xb) in x.chunks_exact(k).enumerate() {
                        let mut one = vec![0f32; n];
                        products(q6, Kernel::Scalar, rows, n, k, xb, &mut one);
                        let got: Vec<u32> = all[b * n..(b + 1) * n]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect();
                        let want: Vec<u32> = one.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "{dtype:?} {form:?}: {m} rows, row {b}");
                    }
                }
            }
        }
    }
}
