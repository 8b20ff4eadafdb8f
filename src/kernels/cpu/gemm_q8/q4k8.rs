//! Q4_K prompt tiles of eight weight rows interleaved eight bytes at a time, as llama.cpp's
//! repacked `q4_K_8x8` kernels lay them out, so that sums of one sub-block's products add up
//! in 16 bits before its scale multiplies them.
//!
//! A register holds eight bytes of each of eight rows (one quarter of a 32-element
//! sub-block); against the activations' matching eight bytes, broadcast, `vpmaddubsw` gives
//! each row four pair sums. The four quarters of a sub-block share the rows' scales, so their
//! pair sums are added as i16 (four pair sums of nibbles times i8 are at most 15,360) and one
//! `vpdpwssd` scales them into each row's two i32 lanes: five multiplying instructions per
//! 1,024 products where the two-row layout ([`super::avx512`]) needs eight. Each super-block's
//! integer per row and activation is the exact integer of the portable form
//! ([`crate::kernels::cpu::kdots::q4k_dot`]), so the float chains, and the products, are
//! the same bit for bit.

use std::arch::x86_64::*;

use super::avx512::{f16, Acts};
use super::{Weights, C, QK_K};
use crate::kernels::cpu::repacked::Repacked;

/// Weight rows per tile.
pub(super) const R: usize = 8;
/// Bytes per Q4_K super-block.
const BYTES: usize = 144;

/// A tile unpacked: per block of 32 (`b`), four registers of eight bytes of each row
/// (`w[4b + quarter]`, row `r` in 64-bit lane `r`) and the rows' scales (`s[b]`, row `r` in
/// i16 lanes `4r..4r+4`); per super-block the minimums (`m[2sb + h]`: row `r`'s minimum
/// `4h + q` in i16 lane `4r + q`) and `d`, `dmin` (row `r` in lanes `2r`, `2r + 1`).
struct Tile {
    w: Vec<__m512i>,
    s: Vec<__m512i>,
    m: Vec<__m512i>,
    d: Vec<__m512>,
    dmin: Vec<__m512>,
}

/// Unpacks the `rows` rows at `w` (missing rows of a last, partial tile repeat its first
/// row; their results are not stored).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack(w: &[u8], rows: usize, k: usize) -> Tile {
    let supers = k / QK_K;
    let blocks = 8 * supers;
    let row_bytes = supers * BYTES;
    let mut t = Tile {
        w: vec![_mm512_setzero_si512(); 4 * blocks],
        s: vec![_mm512_setzero_si512(); blocks],
        m: vec![_mm512_setzero_si512(); 2 * supers],
        d: vec![_mm512_setzero_ps(); supers],
        dmin: vec![_mm512_setzero_ps(); supers],
    };
    let words = t.w.as_mut_ptr() as *mut u64;
    const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    for sb in 0..supers {
        let mut scales = [[0i16; 32]; 8];
        let mut mins = [[0i16; 32]; 2];
        let (mut d, mut dmin) = ([0f32; 16], [0f32; 16]);
        for r in 0..R {
            let blk = w
                .as_ptr()
                .add(if r < rows { r * row_bytes } else { 0 } + sb * BYTES);
            let sc = std::slice::from_raw_parts(blk.add(4), 12);
            for j in 0..8 {
                let (s, m) = crate::kernels::cpu::kdots::q4k_scale_min(sc, j);
                scales[j][4 * r..4 * r + 4].fill(s as i16);
                mins[j / 4][4 * r + j % 4] = m as i16;
            }
            d[2 * r..2 * r + 2].fill(f16(blk));
            dmin[2 * r..2 * r + 2].fill(f16(blk.add(2)));
            // Sub-blocks 2p and 2p + 1 are the low and high nibbles of bytes 32p..32p+32.
            for p in 0..4 {
                for q in 0..4 {
                    let word = (blk.add(16 + 32 * p + 8 * q) as *const u64).read_unaligned();
                    let b = 8 * sb + 2 * p;
                    *words.add(8 * (4 * b + q) + r) = word & LOW;
                    *words.add(8 * (4 * (b + 1) + q) + r) = (word >> 4) & LOW;
                }
            }
        }
        for (j, s) in scales.iter().enumerate() {
            t.s[8 * sb + j] = _mm512_loadu_si512(s.as_ptr() as *const _);
        }
        for (h, m) in mins.iter().enumerate() {
            t.m[2 * sb + h] = _mm512_loadu_si512(m.as_ptr() as *const _);
        }
        t.d[sb] = _mm512_loadu_ps(d.as_ptr());
        t.dmin[sb] = _mm512_loadu_ps(dmin.as_ptr());
    }
    t
}

/// [`unpack`] for rows `r0..r0 + rows` of a repacked matrix (whole tiles: half a group of
/// sixteen, `r0` a multiple of eight): the same tile from the group's bytes, whose scales,
/// minimums and four-value runs need no unpacking of six-bit fields.
fn unpack_repacked(w: &Repacked, r0: usize, rows: usize) -> Tile {
    use crate::kernels::cpu::q4k16::{scale_min, word, D, DMIN, QS, SUPER};
    let supers = w.dims2().1 / QK_K;
    let blocks = 8 * supers;
    let group = w.group(r0 / 16);
    let first = r0 % 16;
    let mut words = vec![0u64; 8 * 4 * blocks];
    let mut s = vec![[0i16; 32]; blocks];
    let mut m = vec![[0i16; 32]; 2 * supers];
    let mut d = vec![[0f32; 16]; supers];
    let mut dmin = vec![[0f32; 16]; supers];
    const LOW: u32 = 0x0F0F_0F0F;
    for sb in 0..supers {
        let blk = &group[sb * SUPER..(sb + 1) * SUPER];
        for r in 0..R {
            // Rows past `rows` repeat the tile's first row (whole tiles have none).
            let g = first + if r < rows { r } else { 0 };
            let half = |at: usize| half::f16::from_le_bytes([blk[at + 2 * g], blk[at + 2 * g + 1]]);
            d[sb][2 * r..2 * r + 2].fill(half(D).to_f32());
            dmin[sb][2 * r..2 * r + 2].fill(half(DMIN).to_f32());
            for j in 0..8 {
                let (sc, mn) = scale_min(blk, j, g);
                s[8 * sb + j][4 * r..4 * r + 4].fill(sc as i16);
                m[2 * sb + j / 4][4 * r + j % 4] = mn as i16;
                for q in 0..4 {
                    let at = QS + 256 * j + 64 * q + 4 * g;
                    let v = word(blk, at);
                    words[8 * (4 * (8 * sb + j) + q) + r] =
                        (v & LOW) as u64 | (((v >> 4) & LOW) as u64) << 32;
                }
            }
        }
    }
    // SAFETY: plain loads from arrays of 64 bytes each (the CPU has AVX-512: the caller runs
    // this kernel only there).
    unsafe {
        Tile {
            w: words
                .chunks_exact(8)
                .map(|c| _mm512_loadu_si512(c.as_ptr() as *const _))
                .collect(),
            s: s.iter()
                .map(|v| _mm512_loadu_si512(v.as_ptr() as *const _))
                .collect(),
            m: m.iter()
                .map(|v| _mm512_loadu_si512(v.as_ptr() as *const _))
                .collect(),
            d: d.iter().map(|v| _mm512_loadu_ps(v.as_ptr())).collect(),
            dmin: dmin.iter().map(|v| _mm512_loadu_ps(v.as_ptr())).collect(),
        }
    }
}

/// Both rows of a pair of activations' per-row totals (`v` holds a row's two halves in lanes
/// `2r`, `2r + 1`): lane `2r` gets activation `a`'s total, lane `2r + 1` activation `b`'s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn totals(a: __m512i, b: __m512i) -> __m512 {
    let a = _mm512_add_epi32(a, _mm512_shuffle_epi32::<0b10_11_00_01>(a));
    let b = _mm512_add_epi32(b, _mm512_shuffle_epi32::<0b10_11_00_01>(b));
    _mm512_cvtepi32_ps(_mm512_mask_blend_epi32(0xAAAA, a, b))
}

/// Eight bytes at `p` in every 64-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn eights(p: *const i8) -> __m512i {
    _mm512_set1_epi64((p as *const i64).read_unaligned())
}

/// The tile's products with activation rows `group`: `[activation][row]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn tile(t: &Tile, a: &Acts, group: [usize; C]) -> [[f32; R]; C] {
    let blocks = a.blocks;
    let supers = blocks / 8;
    let (tw, ts, ax) = (t.w.as_ptr(), t.s.as_ptr(), a.x.as_ptr());
    let mut acc = [_mm512_setzero_ps(); C / 2];
    let mut accm = [_mm512_setzero_ps(); C / 2];
    for sb in 0..supers {
        let mut isum = [_mm512_setzero_si512(); C];
        for b in 8 * sb..8 * sb + 8 {
            let w = [
                *tw.add(4 * b),
                *tw.add(4 * b + 1),
                *tw.add(4 * b + 2),
                *tw.add(4 * b + 3),
            ];
            let s = *ts.add(b);
            for c in 0..C {
                let x = ax.add((group[c] * blocks + b) * 32);
                let mut p = _mm512_maddubs_epi16(w[0], eights(x));
                p = _mm512_add_epi16(p, _mm512_maddubs_epi16(w[1], eights(x.add(8))));
                p = _mm512_add_epi16(p, _mm512_maddubs_epi16(w[2], eights(x.add(16))));
                p = _mm512_add_epi16(p, _mm512_maddubs_epi16(w[3], eights(x.add(24))));
                isum[c] = _mm512_dpwssd_epi32(isum[c], p, s);
            }
        }
        // Minimums times the activations' sums per 32 (Q4_K's are at i16 positions 0..8).
        let mut imin = [_mm512_setzero_si512(); C];
        for (c, m) in imin.iter_mut().enumerate() {
            let bs = a.kbs.as_ptr().add(group[c] * supers + sb) as *const i8;
            let lo = _mm512_dpwssd_epi32(
                _mm512_setzero_si512(),
                *t.m.as_ptr().add(2 * sb),
                eights(bs),
            );
            *m = _mm512_dpwssd_epi32(lo, *t.m.as_ptr().add(2 * sb + 1), eights(bs.add(8)));
        }
        for h in 0..C / 2 {
            let d8 = |c: usize| _mm512_set1_ps(*a.d.as_ptr().add(group[c] * blocks + 8 * sb));
            let dx = _mm512_mask_blend_ps(0xAAAA, d8(2 * h), d8(2 * h + 1));
            let d = _mm512_mul_ps(*t.d.as_ptr().add(sb), dx);
            let dmin = _mm512_mul_ps(*t.dmin.as_ptr().add(sb), dx);
            acc[h] = _mm512_fmadd_ps(totals(isum[2 * h], isum[2 * h + 1]), d, acc[h]);
            accm[h] = _mm512_fmadd_ps(totals(imin[2 * h], imin[2 * h + 1]), dmin, accm[h]);
        }
    }
    let mut out = [[0f32; R]; C];
    for h in 0..C / 2 {
        let mut all = [0f32; 16];
        _mm512_storeu_ps(all.as_mut_ptr(), _mm512_sub_ps(acc[h], accm[h]));
        for r in 0..R {
            out[2 * h][r] = all[2 * r];
            out[2 * h + 1][r] = all[2 * r + 1];
        }
    }
    out
}

/// The products of the Q4_K weight rows of `tiles` (tiles of `R` rows, the last maybe partial,
/// `n` rows in all) with every activation row, written to `out[c * n + row]`
/// ([`super::sweep`]).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI, AVX2, FMA and F16C; `weights` holds `n` rows of `k`
/// values; `acts` are Q4_K's activations for `k`; `out` has room for `acts.rows × n`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn rows(
    weights: Weights,
    tiles: std::ops::Range<usize>,
    n: usize,
    k: usize,
    acts: &Acts,
    out: *mut f32,
) {
    // About 24 KiB of activations per block.
    let block = (24 * 1024 / (k + 64).max(1)).max(1).next_multiple_of(C);
    let row_bytes = k / QK_K * BYTES;
    // SAFETY: the caller's CPU has the features; `out` has room for every tile's rows.
    super::sweep(
        tiles,
        n,
        (acts.rows, block),
        out,
        |r0, rows| match weights {
            Weights::Stored(w) => unsafe {
                unpack(&w[r0 * row_bytes..(r0 + rows) * row_bytes], rows, k)
            },
            Weights::Repacked(w) => unpack_repacked(w, r0, rows),
        },
        |t, group| unsafe { tile(t, acts, group) },
    );
}
