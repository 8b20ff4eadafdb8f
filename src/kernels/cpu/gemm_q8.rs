//! Batched products (prompt processing: many activation rows at once) of Q4_1, Q5_0, Q8_0,
//! Q4_K and Q6_K weights on CPUs with AVX-512 VNNI, the way llama.cpp computes them:
//! activations quantized to 8 bits per block of 32 (exactly as for single rows,
//! [`super::gemv::quantize`]) and integer dot products (`vpdpbusd`), scaled per block.
//!
//! Without it the legacy types were dequantized to f32 and multiplied by candle's f32 GEMM,
//! which runs AVX2 code here (45% of Gemma 3's prompt time), and the k-quants went through
//! candle's repacked kernels, which keep a second, repacked copy of every such weight (36 MiB
//! of Gemma 3's peak RSS). Q4_K runs in tiles of eight interleaved rows ([`q4k8`]); the other
//! tiles are 4 weight rows by 4 activation rows, two blocks of 32 per 512-bit register. Each
//! tile's weights are unpacked once to unsigned bytes plus per-lane scales (a lane holds 4
//! elements, so Q6_K's 16-element scales fit), and the unsigned offset (16 for Q5_0, 32 for
//! Q6_K, 128 for Q8_0) is taken out through the activations' four-element sums, which
//! `vpdpbusd` adds for free as its accumulator input.

use candle_core::quantized::GgmlDType;

use super::gemv::QK;
#[cfg(target_arch = "x86_64")]
use super::gemv::{quantize, quantize_k};
use super::repacked::{Format as RepackFormat, Repacked};

/// Elements per step: two blocks.
const PAIR: usize = 2 * QK;
/// Weight rows per tile.
const R: usize = 4;
/// Activation rows per tile.
#[cfg(target_arch = "x86_64")]
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
    #[cfg(target_arch = "x86_64")]
    fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q4K)
    }

    /// What the unsigned weight bytes carry above the signed value.
    #[cfg(target_arch = "x86_64")]
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
    let weights = Weights::Stored(weights);
    // SAFETY: the tiles below write every (activation row, weight row) entry exactly once.
    Some(unsafe { super::host::filled(m * n, |out| run_tiles(format, weights, n, k, &acts, out)) })
}

/// [`gemm`] for k-quant weights repacked in groups of sixteen rows ([`super::repacked`]):
/// the same products, bit for bit.
pub fn gemm_repacked(w: &Repacked, x: &[f32]) -> Option<Vec<f32>> {
    let (n, k) = w.dims2();
    if !available() || !x.len().is_multiple_of(k) {
        return None;
    }
    let format = match w.format() {
        RepackFormat::Q4K => Format::Q4K,
    };
    let m = x.len() / k;
    let acts = avx512::pack_acts(format, x, k);
    let weights = Weights::Repacked(w);
    // SAFETY: the tiles below write every (activation row, weight row) entry exactly once.
    Some(unsafe { super::host::filled(m * n, |out| run_tiles(format, weights, n, k, &acts, out)) })
}

/// Where the weight rows are: as stored, or repacked in groups of sixteen (read by the
/// x86-64 kernels only; elsewhere [`available`] is false).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Weights<'a> {
    Stored(&'a [u8]),
    Repacked(&'a Repacked),
}

/// Spreads the tiles of `n` weight rows over the pool, writing `out` (`m × n`).
fn run_tiles(
    format: Format,
    weights: Weights,
    n: usize,
    k: usize,
    acts: &avx512::Acts,
    out: *mut f32,
) {
    let out_addr = out as usize;
    // Q4_K in tiles of eight interleaved rows (unpacked: a byte per element and 64 bytes of
    // scales per block of 32 and tile), the others in tiles of four (two bytes per element).
    #[cfg(target_arch = "x86_64")]
    let (rows_per_tile, tile_bytes) = match format {
        Format::Q4K => (q4k8::R, q4k8::R * k + k / QK * 64),
        _ => (R, R * (k / PAIR) * 128),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (rows_per_tile, tile_bytes) = (R, R * (k / PAIR) * 128);
    // Each unit of work is a range of tiles that passes over all activations: few, large
    // ranges (each unpacked into at most ~512 KiB, about half of L2) read the activations
    // fewest times.
    let pool = super::pool::Pool::global();
    let tiles = n.div_ceil(rows_per_tile);
    let unpacked_bytes = tiles * tile_bytes;
    // A multiple of the thread count, so every thread gets the same share (5 units on two
    // threads would leave one idle for a fifth of the product).
    let threads = pool.threads();
    let units = (unpacked_bytes.div_ceil(512 * 1024).div_ceil(threads) * threads).min(tiles);
    let per_unit = tiles.div_ceil(units);
    pool.run(tiles.div_ceil(per_unit), |units| {
        let range = units.start * per_unit..(units.end * per_unit).min(tiles);
        // SAFETY: the CPU has AVX-512 VNNI (`available`); each range of tiles writes only its
        // own columns of `out`, which outlives the call.
        #[cfg(target_arch = "x86_64")]
        if format == Format::Q4K {
            unsafe { q4k8::rows(weights, range, n, k, acts, out_addr as *mut f32) };
            return;
        }
        unsafe { avx512::rows(format, weights, range, n, k, acts, out_addr as *mut f32) };
    });
}

/// The products of the weight tiles `tiles` (`RR` rows each, the last maybe partial, `n` rows
/// in all) with every activation row: each tile unpacked once (`unpack(its first row, its
/// row count)`), then the activation rows, `m` in blocks of
/// `block` (few enough to stay in L1 while every tile passes over them), `C` at a time:
/// `product(tile, group)` gives `[activation][row]`, stored at `out[c * n + row]`. A last,
/// partial group repeats its first row; those results are not stored.
///
/// # Safety
/// `out` has room for `m × n` values.
#[cfg(target_arch = "x86_64")]
unsafe fn sweep<T, const RR: usize>(
    tiles: std::ops::Range<usize>,
    n: usize,
    (m, block): (usize, usize),
    out: *mut f32,
    unpack: impl Fn(usize, usize) -> T,
    product: impl Fn(&T, [usize; C]) -> [[f32; RR]; C],
) {
    let tiles: Vec<(usize, usize, T)> = tiles
        .map(|t| {
            let r0 = t * RR;
            let rows = RR.min(n - r0);
            (r0, rows, unpack(r0, rows))
        })
        .collect();
    let mut b0 = 0;
    while b0 < m {
        let b1 = (b0 + block).min(m);
        for (r0, rows, t) in &tiles {
            let mut c0 = b0;
            while c0 < b1 {
                let cols = C.min(b1 - c0);
                let mut group = [c0; C];
                for (c, g) in group.iter_mut().enumerate().take(cols) {
                    *g = c0 + c;
                }
                let sums = product(t, group);
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

#[cfg(target_arch = "x86_64")]
mod q4k8;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{quantize, quantize_k, Format, C, PAIR, QK, QK_K, R};
    use crate::kernels::cpu::gemv::Q8;

    /// One weight tile (up to `R` rows) unpacked: per pair of blocks, 64 unsigned bytes and
    /// 16 lanes of scales (and minimums, Q4_1), lanes 0..8 for the first block.
    struct Unpacked {
        w: Vec<__m512i>,
        d: Vec<__m512>,
        m: Vec<__m512>,
        /// Q6_K, per row pair and block: each row's integer scales for `vpdpwssd` against
        /// `vpmaddubsw`'s pair sums, one per eight i16 lanes (a scale covers 16 elements).
        ks: Vec<__m512i>,
        /// Q6_K, per row pair and super-block: `d` in each row's lanes.
        kd: Vec<__m512>,
        /// Q6_K, per row pair and super-block, as 32 i16 for `vpmaddwd`: the sixteen scales
        /// per row times −32 (its offset's share).
        kpack: Vec<__m512i>,
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn f16(p: *const u8) -> f32 {
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
            Format::Q5_0 => crate::kernels::cpu::q5_0::unsigned_avx2(blk),
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
            Format::Q4K => unreachable!("Q4_K unpacks in tiles of eight rows (q4k8)"),
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

    /// A tile's rows in pairs, block by block: entry `[rp · blocks + b]` holds block `b` of
    /// rows `2rp` (lanes 0..8) and `2rp + 1` (lanes 8..16).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack(format: Format, w: &[u8], rows: usize, k: usize) -> Unpacked {
        let row_bytes = format.row_bytes(k);
        let (pairs, blocks) = (k / PAIR, k / QK);
        let kq = matches!(format, Format::Q4K | Format::Q6K);
        let supers = if kq { k / QK_K } else { 0 };
        let mut u = Unpacked {
            w: vec![_mm512_setzero_si512(); R / 2 * blocks],
            d: vec![_mm512_setzero_ps(); if kq { 0 } else { R / 2 * blocks }],
            m: vec![
                _mm512_setzero_ps();
                if format.has_min() && !kq {
                    R / 2 * blocks
                } else {
                    0
                }
            ],
            ks: vec![_mm512_setzero_si512(); if kq { R / 2 * blocks } else { 0 }],
            kd: vec![_mm512_setzero_ps(); R / 2 * supers],
            kpack: vec![_mm512_setzero_si512(); R / 2 * supers],
        };
        // Missing rows of a last, partial tile repeat the tile's first row; their results are
        // not stored.
        let row = |r: usize| w.as_ptr().add(if r < rows { r * row_bytes } else { 0 });
        for rp in 0..R / 2 {
            let (ra, rb) = (row(2 * rp), row(2 * rp + 1));
            for p in 0..pairs {
                // Two blocks of one row per vector, regrouped into one block of two rows:
                // the low 256 bits of both (block 2p), then the high ones (block 2p + 1).
                let (wa, da, ma) = unpack_pair(format, ra, p);
                let (wb, db, mb) = unpack_pair(format, rb, p);
                let at = rp * blocks + 2 * p;
                u.w[at] = _mm512_shuffle_i64x2::<0x44>(wa, wb);
                u.w[at + 1] = _mm512_shuffle_i64x2::<0xEE>(wa, wb);
                if kq {
                    continue;
                }
                u.d[at] = _mm512_shuffle_f32x4::<0x44>(da, db);
                u.d[at + 1] = _mm512_shuffle_f32x4::<0xEE>(da, db);
                if format.has_min() {
                    u.m[at] = _mm512_shuffle_f32x4::<0x44>(ma, mb);
                    u.m[at + 1] = _mm512_shuffle_f32x4::<0xEE>(ma, mb);
                }
            }
            if kq {
                unpack_q6k(&mut u, rp, (ra, rb), blocks, supers);
            }
        }
        u
    }

    /// The integer scales, offset shares and super-block scales of a row pair of Q6_K.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack_q6k(
        u: &mut Unpacked,
        rp: usize,
        rows: (*const u8, *const u8),
        blocks: usize,
        supers: usize,
    ) {
        let bytes = Format::Q6K.block().1;
        for sb in 0..supers {
            let (a, b) = (rows.0.add(sb * bytes), rows.1.add(sb * bytes));
            let at = rp * supers + sb;
            let mut pack = [0i16; 32];
            let mut lanes = [[0i16; 32]; 8];
            for (half, blk) in [a, b].into_iter().enumerate() {
                let sc = blk.add(192) as *const i8;
                for (j, l) in lanes.iter_mut().enumerate() {
                    l[16 * half..16 * half + 8].fill(*sc.add(2 * j) as i16);
                    l[16 * half + 8..16 * half + 16].fill(*sc.add(2 * j + 1) as i16);
                }
                // The offset of 32 taken out as -32 * scale (in i16: at most 4096).
                for g in 0..16 {
                    pack[16 * half + g] = -32 * *sc.add(g) as i16;
                }
            }
            u.kd[at] = halves(f16(a.add(208)), f16(b.add(208)));
            u.kpack[at] = _mm512_loadu_si512(pack.as_ptr() as *const _);
            for (j, l) in lanes.iter().enumerate() {
                u.ks[rp * blocks + 8 * sb + j] = _mm512_loadu_si512(l.as_ptr() as *const _);
            }
        }
    }

    /// The activations as the tiles read them: per row and block of 32, the block's bytes
    /// (loaded into both halves of a register, one per weight row of a pair), the `vpdpbusd`
    /// start value (`-offset ×` each lane's four-element sum; formats with an offset), the
    /// block's scale and (formats with a minimum) its scaled sum.
    pub(super) struct Acts {
        pub(super) x: Vec<i8>,
        start: Vec<[i32; 8]>,
        pub(super) d: Vec<f32>,
        s: Vec<f32>,
        /// k-quants, per row and super-block, as 32 i16: Q4_K's sums per 32 (positions 0..8,
        /// for [`super::q4k8`]), Q6_K's sums per 16 (twice, for `vpmaddwd` against the
        /// weights' `kpack`).
        pub(super) kbs: Vec<__m512i>,
        pub(super) blocks: usize,
        pub(super) rows: usize,
    }

    /// Quantizes the `k`-long rows of `x` and packs them, rows split over the CPU pool.
    pub(super) fn pack_acts(format: Format, x: &[f32], k: usize) -> Acts {
        let blocks = k / QK;
        let m = x.len() / k;
        let total = m * blocks;
        let kq = matches!(format, Format::Q4K | Format::Q6K);
        let supers = if kq { k / QK_K } else { 0 };
        // SAFETY (all three): all-zero bytes are valid vectors.
        let offset = format.offset() != 0 && !kq;
        let mut p = Acts {
            x: vec![0; total * QK],
            start: vec![[0; 8]; if offset { total } else { 0 }],
            d: vec![0.0; total],
            s: vec![0.0; if format.has_min() { total } else { 0 }],
            kbs: vec![unsafe { _mm512_setzero_si512() }; m * supers],
            blocks,
            rows: m,
        };
        let ptrs = (
            p.x.as_mut_ptr() as usize,
            p.start.as_mut_ptr() as usize,
            p.d.as_mut_ptr() as usize,
            p.s.as_mut_ptr() as usize,
        );
        let kbs_ptr = p.kbs.as_mut_ptr() as usize;
        crate::kernels::cpu::pool::Pool::global().run(m, |rows| {
            for row in rows {
                let x = &x[row * k..(row + 1) * k];
                // As ggml: k-quant weights meet Q8_K activations, the others Q8_0/Q8_1.
                let q = match format {
                    Format::Q4K | Format::Q6K => quantize_k(x),
                    _ => quantize(x),
                };
                // SAFETY: the CPU has AVX-512 VNNI (checked by the caller); each row writes
                // only its own `blocks` (and `supers`) entries of the vectors, which outlive
                // the call.
                unsafe {
                    pack_row(format, &q, row * blocks, blocks, ptrs);
                    for sb in 0..supers {
                        let sums: Vec<i16> = q.qs[sb * QK_K..(sb + 1) * QK_K]
                            .chunks_exact(16)
                            .map(|c| c.iter().map(|&v| v as i16).sum())
                            .collect();
                        let mut pack = [0i16; 32];
                        if format == Format::Q4K {
                            for j in 0..8 {
                                pack[j] = sums[2 * j] + sums[2 * j + 1];
                            }
                        } else {
                            pack[..16].copy_from_slice(&sums);
                            pack[16..].copy_from_slice(&sums);
                        }
                        *(kbs_ptr as *mut __m512i).add(row * supers + sb) =
                            _mm512_loadu_si512(pack.as_ptr() as *const _);
                    }
                };
            }
        });
        p
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn pack_row(
        format: Format,
        a: &Q8,
        at: usize,
        blocks: usize,
        (px, pstart, pd, ps): (usize, usize, usize, usize),
    ) {
        let offset = _mm512_set1_epi8(format.offset() as i8);
        let kq = matches!(format, Format::Q4K | Format::Q6K);
        std::ptr::copy_nonoverlapping(a.qs.as_ptr(), (px as *mut i8).add(at * QK), blocks * QK);
        for b in 0..blocks {
            if format.offset() != 0 && !kq {
                let x = load_both(a.qs.as_ptr().add(b * QK));
                let start = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, x),
                );
                _mm256_storeu_si256(
                    (pstart as *mut [i32; 8]).add(at + b) as *mut __m256i,
                    _mm512_castsi512_si256(start),
                );
            }
            *(pd as *mut f32).add(at + b) = a.d[b];
            if format.has_min() {
                *(ps as *mut f32).add(at + b) = a.s[b];
            }
        }
    }

    /// 32 activation bytes in both halves of a register.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn load_both(p: *const i8) -> __m512i {
        _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i))
    }

    /// The products of weight rows `rows` (whole tiles of `R`, the last one maybe partial,
    /// `n` rows in all) with every activation row, written to `out[c * n + row]`. Activation
    /// rows go in blocks small enough to stay in L1 while every tile of the range passes over
    /// them; the tiles are unpacked once.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn rows(
        format: Format,
        weights: super::Weights,
        tiles: std::ops::Range<usize>,
        n: usize,
        k: usize,
        acts: &Acts,
        out: *mut f32,
    ) {
        // About 24 KiB of activations per block (each block of 32 loaded as 64 bytes).
        let per_row = acts.blocks * 2 * 64;
        let block = (24 * 1024 / per_row.max(1)).max(1).next_multiple_of(C);
        let row_bytes = format.row_bytes(k);
        super::sweep(
            tiles,
            n,
            (acts.rows, block),
            out,
            // SAFETY: the caller's CPU has AVX-512 VNNI.
            |r0, rows| match weights {
                super::Weights::Stored(w) => unsafe {
                    unpack(format, &w[r0 * row_bytes..(r0 + rows) * row_bytes], rows, k)
                },
                super::Weights::Repacked(_) => {
                    unreachable!("only Q4_K is repacked, and Q4_K runs in tiles of eight rows")
                }
            },
            |u, group| match format {
                Format::Q4K => unreachable!("Q4_K runs in tiles of eight rows (q4k8)"),
                Format::Q6K => unsafe { tile_q6k(u, acts, group) },
                Format::Q4_1 => unsafe { tile::<true>(u, acts, group) },
                _ => unsafe { tile::<false>(u, acts, group) },
            },
        );
    }

    /// `R × C` dot products over the whole rows: `[activation][weight]`, each summed in
    /// ggml's order (as `vec_dot_q4_1_q8_1` and its kin sum them): block after block, the
    /// scale product times the eight lane sums fused into one eight-lane chain, minimums times
    /// scaled sums fused into a second chain, the lanes summed as `hsum_float_8` sums them. A
    /// vector holds that chain for two weight rows, so it stays 512 bits wide.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile<const MIN: bool>(u: &Unpacked, a: &Acts, group: [usize; C]) -> [[f32; R]; C] {
        const P: usize = R / 2;
        let blocks = a.blocks;
        let (uw, ud, um) = (u.w.as_ptr(), u.d.as_ptr(), u.m.as_ptr());
        let (ax, ast, ad, asx) = (a.x.as_ptr(), a.start.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
        let with_start = !a.start.is_empty();
        let mut acc = [[_mm512_setzero_ps(); P]; C];
        let mut mins = [[_mm512_setzero_ps(); P]; C];
        for b in 0..blocks {
            let mut w = [_mm512_setzero_si512(); P];
            let mut d = [_mm512_setzero_ps(); P];
            let mut m = [_mm512_setzero_ps(); P];
            for rp in 0..P {
                w[rp] = *uw.add(rp * blocks + b);
                d[rp] = *ud.add(rp * blocks + b);
                if MIN {
                    m[rp] = *um.add(rp * blocks + b);
                }
            }
            for c in 0..C {
                let j = group[c] * blocks + b;
                let x = load_both(ax.add(j * QK));
                let start = match with_start {
                    true => {
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(ast.add(j) as *const __m256i))
                    }
                    false => _mm512_setzero_si512(),
                };
                let dx = _mm512_set1_ps(*ad.add(j));
                for rp in 0..P {
                    let dot = _mm512_dpbusd_epi32(start, w[rp], x);
                    let scale = _mm512_mul_ps(d[rp], dx);
                    acc[c][rp] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc[c][rp]);
                    if MIN {
                        mins[c][rp] =
                            _mm512_fmadd_ps(m[rp], _mm512_set1_ps(*asx.add(j)), mins[c][rp]);
                    }
                }
            }
        }
        let mut sums = [[0f32; R]; C];
        for c in 0..C {
            for rp in 0..P {
                let (lo, hi) = crate::kernels::cpu::gemv::halves_ps(acc[c][rp]);
                sums[c][2 * rp] = crate::kernels::cpu::gemv::hsum(lo);
                sums[c][2 * rp + 1] = crate::kernels::cpu::gemv::hsum(hi);
                if MIN {
                    let (lo, hi) = crate::kernels::cpu::gemv::halves_ps(mins[c][rp]);
                    sums[c][2 * rp] += _mm256_cvtss_f32(lo);
                    sums[c][2 * rp + 1] += _mm256_cvtss_f32(hi);
                }
            }
        }
        sums
    }

    /// One super-block's integer sums of a tile: `[activation][row pair]`, per row (half)
    /// and lane, `start` plus the sub-block scales times their four-element products.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn super_isums(
        u: &Unpacked,
        a: &Acts,
        group: [usize; C],
        (sb, start): (usize, [[__m512i; R / 2]; C]),
    ) -> [[__m512i; R / 2]; C] {
        const P: usize = R / 2;
        let blocks = a.blocks;
        let (uw, uks, ax) = (u.w.as_ptr(), u.ks.as_ptr(), a.x.as_ptr());
        let mut isum = start;
        for j in 0..8 {
            let b = 8 * sb + j;
            let mut w = [_mm512_setzero_si512(); P];
            let mut sc = [_mm512_setzero_si512(); P];
            for rp in 0..P {
                w[rp] = *uw.add(rp * blocks + b);
                sc[rp] = *uks.add(rp * blocks + b);
            }
            for c in 0..C {
                let x = load_both(ax.add((group[c] * blocks + b) * QK));
                for rp in 0..P {
                    // Unsigned weights (at most 63) times i8 in pairs fit i16 (2·63·128);
                    // `vpdpwssd` weights each pair sum by its scale and adds it, so each i32
                    // lane gets scale · (its four products), as a `vpdpbusd` then a 32-bit
                    // multiply gave it, in two instructions, not three.
                    let pairs = _mm512_maddubs_epi16(w[rp], x);
                    isum[c][rp] = _mm512_dpwssd_epi32(isum[c][rp], pairs, sc[rp]);
                }
            }
        }
        isum
    }

    /// `R × C` Q6_K dot products, `[activation][weight]`, with llama.cpp's rounding (see
    /// [`crate::kernels::cpu::kdots`]): per super-block the eight lanes of integers, less the
    /// offset's share, fused into an eight-lane chain with `d·d8`, summed as `hsum_float_8`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile_q6k(u: &Unpacked, a: &Acts, group: [usize; C]) -> [[f32; R]; C] {
        const P: usize = R / 2;
        let supers = a.blocks / 8;
        let mut acc = [[_mm512_setzero_ps(); P]; C];
        for sb in 0..supers {
            // Each lane starts at its offset's share, −32 · Σ bsum · scale (ggml's order of
            // integer sums does not matter: they are exact).
            let mut start = [[_mm512_setzero_si512(); P]; C];
            for (c, s) in start.iter_mut().enumerate() {
                let bs = *a.kbs.as_ptr().add(group[c] * supers + sb);
                for (rp, s) in s.iter_mut().enumerate() {
                    *s = _mm512_madd_epi16(bs, *u.kpack.as_ptr().add(rp * supers + sb));
                }
            }
            let isum = super_isums(u, a, group, (sb, start));
            for c in 0..C {
                let dx = _mm512_set1_ps(*a.d.as_ptr().add(group[c] * a.blocks + 8 * sb));
                for rp in 0..P {
                    let (at, lanes) = (rp * supers + sb, isum[c][rp]);
                    let d = _mm512_mul_ps(dx, *u.kd.as_ptr().add(at));
                    acc[c][rp] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), acc[c][rp]);
                }
            }
        }
        let mut sums = [[0f32; R]; C];
        for c in 0..C {
            for rp in 0..P {
                let (lo, hi) = crate::kernels::cpu::gemv::halves_ps(acc[c][rp]);
                sums[c][2 * rp] = crate::kernels::cpu::gemv::hsum(lo);
                sums[c][2 * rp + 1] = crate::kernels::cpu::gemv::hsum(hi);
            }
        }
        sums
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Format;

    pub(super) struct Acts;

    pub(super) fn pack_acts(_: Format, _: &[f32], _: usize) -> Acts {
        unreachable!("`available` is false off x86-64")
    }

    pub(super) unsafe fn rows(
        _: Format,
        _: super::Weights,
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
    use crate::kernels::cpu::gemv::{exact_product, kernel, test_values};
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
    fn k_quant_tiles_equal_the_portable_single_row_dots_bit_for_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        use super::super::kdots;
        for (dtype, q6) in [(GgmlDType::Q4K, false), (GgmlDType::Q6K, true)] {
            // Partial tiles on both sides (n and m not multiples of 4 or 8) and several
            // super-blocks per row.
            for (m, n, k) in [(1, 3, 256), (6, 9, 768), (9, 8, 1024), (5, 17, 512)] {
                let w = Tensor::from_vec(test_values(n * k, 17), (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let data = q.data().unwrap();
                let row_bytes = data.len() / n;
                let x = test_values(m * k, 18);
                let out = gemm(dtype, &data, n, k, &x).expect("supported");
                for (c, (xr, got)) in x.chunks_exact(k).zip(out.chunks_exact(n)).enumerate() {
                    let xq = kdots::quantize(xr);
                    for (r, g) in got.iter().enumerate() {
                        let row = &data[r * row_bytes..(r + 1) * row_bytes];
                        let want = match q6 {
                            true => kdots::q6k_dot(row, &xq),
                            false => kdots::q4k_dot(row, &xq),
                        };
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{dtype:?} m={m} n={n} [{c}][{r}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn repacked_tiles_equal_the_stored_rows_tiles_bit_for_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for (m, n, k) in [(9, 16, 256), (13, 48, 768), (40, 32, 1024)] {
            let w = Tensor::from_vec(test_values(n * k, 21), (n, k), &Device::Cpu).unwrap();
            let x = test_values(m * k, 22);
            let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
            let w = q.data().unwrap();
            let packed = Repacked::pack(RepackFormat::Q4K, &w, n, k).unwrap();
            let want = gemm(GgmlDType::Q4K, &w, n, k, &x).expect("supported");
            let got = gemm_repacked(&packed, &x).expect("supported");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "m={m} n={n} k={k}");
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
