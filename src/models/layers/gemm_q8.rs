//! Batched products (prompt processing: many activation rows at once) of Q4_1, Q5_0, Q8_0,
//! Q4_K and Q6_K weights on CPUs with AVX-512 VNNI, the way llama.cpp computes them:
//! activations quantized to 8 bits per block of 32 (exactly as for single rows,
//! [`super::gemv::quantize`]) and integer dot products (`vpdpbusd`), scaled per block.
//!
//! Without it the legacy types were dequantized to f32 and multiplied by candle's f32 GEMM,
//! which runs AVX2 code here (45% of Gemma 3's prompt time), and the k-quants went through
//! candle's repacked kernels, which keep a second, repacked copy of every such weight (36 MiB
//! of Gemma 3's peak RSS). Tiles are 4 weight rows by 4 activation rows, two blocks of 32 per
//! 512-bit register; each tile's weights are unpacked once to unsigned bytes plus per-lane
//! scales (a lane holds 4 elements, so Q6_K's 16-element scales fit), and the unsigned offset
//! (16 for Q5_0, 32 for Q6_K, 128 for Q8_0) is taken out through the activations'
//! four-element sums, which `vpdpbusd` adds for free as its accumulator input.

use candle_core::quantized::GgmlDType;

#[cfg(target_arch = "x86_64")]
use super::gemv::quantize;
use super::gemv::QK;

/// Elements per step: two blocks.
const PAIR: usize = 2 * QK;
/// Weight rows per tile.
const R: usize = 4;
/// Activation rows per tile.
const C: usize = 4;
/// Elements per k-quant super-block.
const QK_K: usize = 256;

/// Whether the batched kernel runs on this CPU (it needs AVX-512 VNNI; the portable and AVX2
/// paths keep the dequantized GEMM).
pub fn available() -> bool {
    super::gemv::kernel() == super::gemv::Kernel::Avx512Vnni
}

/// The block formats the kernel reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q5_0 => Some(Self::Q5_0),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q4K => Some(Self::Q4K),
            GgmlDType::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }

    /// Elements and bytes per block.
    fn block(self) -> (usize, usize) {
        match self {
            Self::Q4_1 => (QK, 20),
            Self::Q5_0 => (QK, 22),
            Self::Q8_0 => (QK, 34),
            Self::Q4K => (QK_K, 144),
            Self::Q6K => (QK_K, 210),
        }
    }

    fn row_bytes(self, k: usize) -> usize {
        let (elems, bytes) = self.block();
        k / elems * bytes
    }

    /// Whether weights carry a minimum per block (`d·q + m`).
    fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q4K)
    }

    /// What the unsigned weight bytes carry above the signed value.
    fn offset(self) -> u8 {
        match self {
            Self::Q4_1 | Self::Q4K => 0,
            Self::Q5_0 => 16,
            Self::Q6K => 32,
            Self::Q8_0 => 128,
        }
    }
}

/// `x (m × k) · Wᵀ`, `m × n`, for `weights` holding `n` rows of `k` values of `dtype`; `None`
/// (computing nothing) when the kernel does not apply: another type, `k` not a multiple of 64
/// (256 for k-quants), or a CPU without AVX-512 VNNI.
pub fn gemm(dtype: GgmlDType, weights: &[u8], n: usize, k: usize, x: &[f32]) -> Option<Vec<f32>> {
    let format = Format::of(dtype)?;
    if !available() || k == 0 || !k.is_multiple_of(format.block().0.max(PAIR)) {
        return None;
    }
    if !x.len().is_multiple_of(k) || weights.len() < n * format.row_bytes(k) {
        return None;
    }
    let m = x.len() / k;
    let acts = avx512::pack_acts(format, x, k);
    // SAFETY: the tiles below write every (activation row, weight row) entry exactly once.
    Some(unsafe { super::host::filled(m * n, |out| run_tiles(format, weights, n, k, &acts, out)) })
}

/// Spreads the tiles of `n` weight rows over the pool, writing `out` (`m × n`).
fn run_tiles(
    format: Format,
    weights: &[u8],
    n: usize,
    k: usize,
    acts: &avx512::Acts,
    out: *mut f32,
) {
    let out_addr = out as usize;
    // Each unit of work is a range of tiles that passes over all activations: few, large
    // ranges (each unpacked into at most ~512 KiB, about half of L2) read the activations
    // fewest times.
    let pool = super::pool::Pool::global();
    let tiles = n.div_ceil(R);
    let unpacked_bytes = tiles * R * (k / PAIR) * 128;
    // A multiple of the thread count, so every thread gets the same share (5 units on two
    // threads would leave one idle for a fifth of the product).
    let threads = pool.threads();
    let units = (unpacked_bytes.div_ceil(512 * 1024).div_ceil(threads) * threads).min(tiles);
    let per_unit = tiles.div_ceil(units);
    pool.run(tiles.div_ceil(per_unit), |units| {
        let range = units.start * per_unit..(units.end * per_unit).min(tiles);
        // SAFETY: the CPU has AVX-512 VNNI (`available`); each range of tiles writes only its
        // own columns of `out`, which outlives the call.
        unsafe { avx512::rows(format, weights, range, n, k, acts, out_addr as *mut f32) };
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{quantize, Format, C, PAIR, R};
    use crate::models::layers::gemv::Q8;

    /// One weight tile (up to `R` rows) unpacked: per pair of blocks, 64 unsigned bytes and
    /// 16 lanes of scales (and minimums, Q4_1), lanes 0..8 for the first block.
    struct Unpacked {
        w: Vec<__m512i>,
        d: Vec<__m512>,
        m: Vec<__m512>,
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        let h = i16::from_le_bytes([*p, *p.add(1)]) as i32;
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn halves(a: f32, b: f32) -> __m512 {
        _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b))
    }

    /// 32 unsigned weight bytes of one block, in element order.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn block_bytes(format: Format, blk: *const u8) -> __m256i {
        let nibbles = |packed: __m128i| {
            _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                _mm256_set1_epi8(0x0F),
            )
        };
        match format {
            Format::Q8_0 => _mm256_xor_si256(
                _mm256_loadu_si256(blk.add(2) as *const __m256i),
                _mm256_set1_epi8(-128),
            ),
            Format::Q4_1 => nibbles(_mm_loadu_si128(blk.add(4) as *const __m128i)),
            Format::Q4K | Format::Q6K => unreachable!("k-quants unpack whole pairs"),
            Format::Q5_0 => crate::models::layers::q5_0::unsigned_avx2(blk),
        }
    }

    /// One pair of blocks (elements `64·p .. 64·p + 64` of a row): the unsigned bytes, the
    /// per-lane scales and (formats with one) the per-lane minimums.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack_pair(format: Format, row: *const u8, p: usize) -> (__m512i, __m512, __m512) {
        let join = |a: __m256i, b: __m256i| _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        match format {
            Format::Q4_1 | Format::Q5_0 | Format::Q8_0 => {
                let bb = format.block().1;
                let (a, b) = (row.add(2 * p * bb), row.add((2 * p + 1) * bb));
                let m = if format == Format::Q4_1 {
                    halves(f16(a.add(2)), f16(b.add(2)))
                } else {
                    _mm512_setzero_ps()
                };
                (
                    join(block_bytes(format, a), block_bytes(format, b)),
                    halves(f16(a), f16(b)),
                    m,
                )
            }
            Format::Q4K => {
                // 144-byte super-blocks: d, dmin, 12 bytes of 6-bit scales and minimums for
                // eight sub-blocks of 32, then 32 bytes per pair of sub-blocks: the first
                // sub-block in the low nibbles, the second in the high ones.
                let sb = row.add(p / 4 * 144);
                let j = p % 4;
                let (d, dmin) = (f16(sb), f16(sb.add(2)));
                let sc = std::slice::from_raw_parts(sb.add(4), 12);
                let scale_min = |i: usize| {
                    if i < 4 {
                        ((sc[i] & 63) as f32, (sc[i + 4] & 63) as f32)
                    } else {
                        (
                            ((sc[i + 4] & 0x0F) | ((sc[i - 4] >> 6) << 4)) as f32,
                            ((sc[i + 4] >> 4) | ((sc[i] >> 6) << 4)) as f32,
                        )
                    }
                };
                let ((sa, ma), (sb_, mb)) = (scale_min(2 * j), scale_min(2 * j + 1));
                let q = _mm256_loadu_si256(sb.add(16 + 32 * j) as *const __m256i);
                let low = _mm256_set1_epi8(0x0F);
                (
                    join(
                        _mm256_and_si256(q, low),
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), low),
                    ),
                    halves(d * sa, d * sb_),
                    halves(-dmin * ma, -dmin * mb),
                )
            }
            Format::Q6K => {
                // 210-byte super-blocks: 128 bytes of low nibbles, 64 of high bit pairs, 16
                // signed scales (one per 16 elements), d. Each half of 128 elements takes 64
                // low-nibble bytes and 32 high-bit bytes; its first pair of 32-element blocks
                // uses the low nibbles and bits 0-3, the second the high nibbles and bits 4-7.
                let sb = row.add(p / 4 * 210);
                let (half, second) = ((p % 4) / 2, p % 2 == 1);
                let ql = sb.add(64 * half);
                let qh = _mm256_loadu_si256(sb.add(128 + 32 * half) as *const __m256i);
                let (l0, l1) = (
                    _mm256_loadu_si256(ql as *const __m256i),
                    _mm256_loadu_si256(ql.add(32) as *const __m256i),
                );
                let low = _mm256_set1_epi8(0x0F);
                let three = _mm256_set1_epi8(3);
                let (l0, l1, h0, h1) = if second {
                    (
                        _mm256_and_si256(_mm256_srli_epi16(l0, 4), low),
                        _mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 4), three),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 6), three),
                    )
                } else {
                    (
                        _mm256_and_si256(l0, low),
                        _mm256_and_si256(l1, low),
                        _mm256_and_si256(qh, three),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), three),
                    )
                };
                let a = _mm256_or_si256(l0, _mm256_slli_epi16(h0, 4));
                let b = _mm256_or_si256(l1, _mm256_slli_epi16(h1, 4));
                let d = f16(sb.add(208));
                let scales = sb.add(192) as *const i8;
                // Elements 64·(p % 4) .. of the super-block: scales by 16 elements, so lanes
                // (4 elements each) 0..4 of a block take one scale and 4..8 the next.
                let first = 4 * (p % 4);
                let s = |i: usize| d * *scales.add(first + i) as f32;
                let lanes = _mm512_setr_ps(
                    s(0),
                    s(0),
                    s(0),
                    s(0),
                    s(1),
                    s(1),
                    s(1),
                    s(1),
                    s(2),
                    s(2),
                    s(2),
                    s(2),
                    s(3),
                    s(3),
                    s(3),
                    s(3),
                );
                (join(a, b), lanes, _mm512_setzero_ps())
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack(format: Format, w: &[u8], rows: usize, k: usize) -> Unpacked {
        let row_bytes = format.row_bytes(k);
        let pairs = k / PAIR;
        let mut u = Unpacked {
            w: Vec::with_capacity(R * pairs),
            d: Vec::with_capacity(R * pairs),
            m: Vec::with_capacity(if format.has_min() { R * pairs } else { 0 }),
        };
        for r in 0..R {
            // Missing rows of a last, partial tile repeat the tile's first row; their results
            // are not stored.
            let row = w.as_ptr().add(if r < rows { r * row_bytes } else { 0 });
            for p in 0..pairs {
                let (wv, dv, mv) = unpack_pair(format, row, p);
                u.w.push(wv);
                u.d.push(dv);
                if format.has_min() {
                    u.m.push(mv);
                }
            }
        }
        u
    }

    /// The activations as the tiles read them: per row and pair of blocks, the 64 bytes, the
    /// 16 lanes of scales, the `vpdpbusd` start value (`-offset ×` the lane's four-element
    /// sum) and, for Q4_1, the scaled sums spread over each block's lanes.
    pub(super) struct Acts {
        x: Vec<__m512i>,
        d: Vec<__m512>,
        start: Vec<__m512i>,
        s: Vec<__m512>,
        pairs: usize,
        rows: usize,
    }

    /// Quantizes the `k`-long rows of `x` and packs them, rows split over the CPU pool.
    pub(super) fn pack_acts(format: Format, x: &[f32], k: usize) -> Acts {
        let pairs = k / PAIR;
        let m = x.len() / k;
        let total = m * pairs;
        let q4_1 = format.has_min();
        // SAFETY (all four): all-zero bytes are valid vectors.
        let mut p = Acts {
            x: vec![unsafe { _mm512_setzero_si512() }; total],
            d: vec![unsafe { _mm512_setzero_ps() }; total],
            start: vec![unsafe { _mm512_setzero_si512() }; total],
            s: vec![unsafe { _mm512_setzero_ps() }; if q4_1 { total } else { 0 }],
            pairs,
            rows: m,
        };
        let ptrs = (
            p.x.as_mut_ptr() as usize,
            p.d.as_mut_ptr() as usize,
            p.start.as_mut_ptr() as usize,
            p.s.as_mut_ptr() as usize,
        );
        crate::models::layers::pool::Pool::global().run(m, |rows| {
            for row in rows {
                let q = quantize(&x[row * k..(row + 1) * k]);
                // SAFETY: the CPU has AVX-512 VNNI (checked by the caller); each row writes
                // only its own `pairs` entries of the vectors, which outlive the call.
                unsafe { pack_row(format, &q, row * pairs, pairs, ptrs) };
            }
        });
        p
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn pack_row(
        format: Format,
        a: &Q8,
        at: usize,
        pairs: usize,
        (px, pd, pstart, ps): (usize, usize, usize, usize),
    ) {
        let offset = _mm512_set1_epi8(format.offset() as i8);
        for i in 0..pairs {
            let x = _mm512_loadu_si512(a.qs.as_ptr().add(i * PAIR) as *const _);
            *(px as *mut __m512i).add(at + i) = x;
            *(pd as *mut __m512).add(at + i) = halves(a.d[2 * i], a.d[2 * i + 1]);
            *(pstart as *mut __m512i).add(at + i) = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, x),
            );
            if format.has_min() {
                // Each block's minimum times its scaled sum, spread over its 8 lanes.
                *(ps as *mut __m512).add(at + i) = halves(a.s[2 * i] / 8.0, a.s[2 * i + 1] / 8.0);
            }
        }
    }

    /// The products of weight rows `rows` (whole tiles of `R`, the last one maybe partial,
    /// `n` rows in all) with every activation row, written to `out[c * n + row]`. Activation
    /// rows go in blocks small enough to stay in L1 while every tile of the range passes over
    /// them; the tiles are unpacked once.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn rows(
        format: Format,
        weights: &[u8],
        tiles: std::ops::Range<usize>,
        n: usize,
        k: usize,
        acts: &Acts,
        out: *mut f32,
    ) {
        let row_bytes = format.row_bytes(k);
        let unpacked: Vec<(usize, usize, Unpacked)> = tiles
            .map(|t| {
                let r0 = t * R;
                let rows = R.min(n - r0);
                let w = &weights[r0 * row_bytes..(r0 + rows) * row_bytes];
                (r0, rows, unpack(format, w, rows, k))
            })
            .collect();
        let m = acts.rows;
        // About 16 KiB of activations per block.
        let per_row = acts.pairs * 3 * 64;
        let block = (24 * 1024 / per_row.max(1)).max(1).next_multiple_of(C);
        let mut b0 = 0;
        while b0 < m {
            let b1 = (b0 + block).min(m);
            for (r0, rows, u) in &unpacked {
                let mut c0 = b0;
                while c0 < b1 {
                    let cols = C.min(b1 - c0);
                    // A last, partial group repeats its first row; those results are not stored.
                    let mut group = [c0; C];
                    for (c, g) in group.iter_mut().enumerate().take(cols) {
                        *g = c0 + c;
                    }
                    let sums = if format.has_min() {
                        tile::<true>(u, acts, group)
                    } else {
                        tile::<false>(u, acts, group)
                    };
                    for (c, row) in sums.iter().enumerate().take(cols) {
                        for (r, &v) in row.iter().enumerate().take(*rows) {
                            *out.add((c0 + c) * n + r0 + r) = v;
                        }
                    }
                    c0 += C;
                }
            }
            b0 = b1;
        }
    }

    /// `R × C` dot products over the whole rows: `[activation][weight]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile<const MIN: bool>(u: &Unpacked, a: &Acts, group: [usize; C]) -> [[f32; R]; C] {
        let pairs = a.pairs;
        let (uw, ud, um) = (u.w.as_ptr(), u.d.as_ptr(), u.m.as_ptr());
        let (ax, ad, ast, asx) = (a.x.as_ptr(), a.d.as_ptr(), a.start.as_ptr(), a.s.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); R]; C];
        for p in 0..pairs {
            let mut w = [_mm512_setzero_si512(); R];
            let mut d = [_mm512_setzero_ps(); R];
            for r in 0..R {
                w[r] = *uw.add(r * pairs + p);
                d[r] = *ud.add(r * pairs + p);
            }
            for c in 0..C {
                let j = group[c] * pairs + p;
                let (x, dx, start) = (*ax.add(j), *ad.add(j), *ast.add(j));
                for r in 0..R {
                    let dot = _mm512_dpbusd_epi32(start, w[r], x);
                    let scale = _mm512_mul_ps(d[r], dx);
                    acc[c][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[c][r]);
                    if MIN {
                        acc[c][r] = _mm512_fmadd_ps(*um.add(r * pairs + p), *asx.add(j), acc[c][r]);
                    }
                }
            }
        }
        let mut sums = [[0f32; R]; C];
        for c in 0..C {
            for r in 0..R {
                sums[c][r] = _mm512_reduce_add_ps(acc[c][r]);
            }
        }
        sums
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Format;
    use crate::models::layers::gemv::Q8;

    pub(super) struct Acts;

    pub(super) fn pack_acts(_: Format, _: &[f32], _: usize) -> Acts {
        unreachable!("`available` is false off x86-64")
    }

    pub(super) unsafe fn rows(
        _: Format,
        _: &[u8],
        _: std::ops::Range<usize>,
        _: usize,
        _: usize,
        _: &Acts,
        _: *mut f32,
    ) {
        unreachable!("`available` is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::layers::gemv::{exact_product, kernel, test_values};
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    #[test]
    fn batched_products_equal_the_single_row_kernels() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            for (m, n, k) in [(1, 4, 64), (5, 6, 128), (9, 13, 640), (16, 8, 2048)] {
                let w = Tensor::from_vec(test_values(n * k, 5), (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let data = q.data().unwrap();
                let x = test_values(m * k, 6);
                let out = gemm(dtype, &data, n, k, &x).expect("supported");
                let gemv = match dtype {
                    GgmlDType::Q4_1 => super::super::q4_1::gemv,
                    GgmlDType::Q5_0 => super::super::q5_0::gemv,
                    _ => super::super::q8_0::gemv,
                };
                for (row, got) in x.chunks_exact(k).zip(out.chunks_exact(n)) {
                    let mut want = vec![0f32; n];
                    gemv(&data, n, k, row, &mut want, kernel());
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{dtype:?} m={m} n={n} k={k}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn batched_k_quant_products_equal_candles_single_row_ones() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            for (m, n, k) in [(3, 5, 256), (8, 8, 1024)] {
                let w = Tensor::from_vec(test_values(n * k, 11), (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let data = q.data().unwrap();
                let x = test_values(m * k, 12);
                let out = gemm(dtype, &data, n, k, &x).expect("supported");
                let mut largest = 0f32;
                for (row, got) in x.chunks_exact(k).zip(out.chunks_exact(n)) {
                    let mut want = vec![0f32; n];
                    super::super::kquants::gemv(dtype, &data, n, k, row, &mut want).unwrap();
                    let exact = exact_product(&q, row);
                    for ((g, w), e) in got.iter().zip(&want).zip(&exact) {
                        // Both quantize the activations (ours per 32 values, candle's per
                        // 256), each off the exact product by a few hundredths here.
                        assert!((g - e).abs() < 0.15, "{dtype:?}: {g} vs exact {e}");
                        assert!((w - e).abs() < 0.15, "{dtype:?}: candle {w} vs exact {e}");
                        largest = largest.max(e.abs());
                    }
                }
                // Products this large would expose a misplaced scale or nibble.
                assert!(largest > 1.0, "test data too small: {largest}");
            }
        }
    }

    #[test]
    fn unsupported_shapes_and_types_are_declined() {
        let x = vec![0f32; 96];
        assert!(gemm(GgmlDType::Q2K, &[0; 1000], 4, 96, &x).is_none());
        assert!(gemm(GgmlDType::Q4K, &[0; 1000], 4, 96, &x).is_none());
        assert!(gemm(GgmlDType::Q8_0, &[0; 1000], 4, 96, &x).is_none());
    }
}
