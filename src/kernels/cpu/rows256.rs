//! Products of two weight rows of a block-of-32 format (Q4_1, Q5_0, Q8_0) with up to eight
//! activation rows at once, with AVX2: each block's weights unpacked once for every
//! activation row (a prompt's rows, several sequences decoding together), the rows' values
//! and scales read side by side from the group ([`Group`]), and each product in the one-row
//! kernel's order ([`super::gemv::pair_chains`]: one chain of eight lanes per row,
//! `d·d_x × lane sums` fused into it, a minimum's `m · s_x` in a scalar chain), so every
//! product is the single-row one bit for bit, however many rows run together.

use std::arch::x86_64::*;

use super::gemv::{hsum, prefetch_next_pair, QK};
use super::rows512::Group;

/// Activation rows one pass shares its unpacked weights among (eight chains of one weight
/// row fit the sixteen registers).
pub(crate) const MAX_ACTS: usize = 8;

/// Blocks whose scales [`row`] computes ahead of their products.
const SCALE_CHUNK: usize = 64;

/// A block format as these kernels read it.
pub(crate) trait Format {
    /// Bytes per block of 32 weights; the f16 scale is the first two.
    const BYTES: usize;
    /// The block's f16 minimum follows its scale (Q4_1): `m · s_x` joins the product.
    const MIN: bool;

    /// One row's block (a pointer to it), prepared for every activation row.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the pointer addresses a whole block.
    unsafe fn unpack(block: *const u8) -> __m256i;

    /// The lane sums of an unpacked block with a block of activations (`xq`: its 32
    /// values): eight i32 lanes (four products each, as ggml sums them).
    ///
    /// # Safety
    /// As [`Format::unpack`]; `xq` addresses a whole block's values.
    unsafe fn sums(w: __m256i, xq: *const i8) -> __m256i;
}

/// A block's 32 signed weights `w` times the activations at `xq`, as ggml's
/// `mul_sum_i8_pairs` sums them: |w| × (x with w's sign), pairs to i16, then eight i32 lanes
/// of four products. `|w|` is the same for every activation row, so a loop over them computes
/// it once.
///
/// # Safety
/// The CPU has AVX2; `xq` addresses 32 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn signed_sums(w: __m256i, xq: *const i8) -> __m256i {
    let v = _mm256_loadu_si256(xq as *const __m256i);
    let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(v, w));
    _mm256_madd_epi16(prod, _mm256_set1_epi16(1))
}

/// The f16 at `p` and in each of the next `n - 1 < 8` blocks of `F` as f32 (0 past them).
#[inline(always)]
unsafe fn halves<F: Format>(p: *const u8, n: usize) -> __m256 {
    let at = |i: usize| (p.add(i * F::BYTES) as *const i16).read_unaligned();
    if n == 8 {
        // Eight whole blocks, the common case, apart: without a test per value the loads
        // go straight into the vector.
        return _mm256_cvtph_ps(_mm_set_epi16(
            at(7),
            at(6),
            at(5),
            at(4),
            at(3),
            at(2),
            at(1),
            at(0),
        ));
    }
    let h = |i: usize| if i < n { at(i) } else { 0 };
    _mm256_cvtph_ps(_mm_set_epi16(
        h(7),
        h(6),
        h(5),
        h(4),
        h(3),
        h(2),
        h(1),
        h(0),
    ))
}

/// The products of row `r` with each of the group's first `M` activation rows: `M` chains
/// side by side, so one row at a time keeps its accumulators in registers (a pair of rows
/// with four activation rows did not fit sixteen of them).
#[inline(always)]
unsafe fn row<F: Format, const M: usize>(r: &[u8], g: &Group) -> [f32; M] {
    let blocks = r.len() / F::BYTES;
    assert!(
        M <= 8
            && g.xs.len() == M
            && g.q8.len() >= blocks * M
            && g.d8.len() >= blocks * M
            && (!F::MIN || g.sums8.len() >= blocks)
    );
    let (q8, d8, sums8) = (g.q8.as_ptr(), g.d8.as_ptr(), g.sums8.as_ptr());
    let mut acc = [_mm256_setzero_ps(); M];
    let mut min = [0f32; M];
    // The row's scales (and minimums) as f32, a chunk of blocks ahead and eight at a time:
    // converted one block at a time in the loop below, the one f16 went in through a partial
    // register write that waited on an accumulator of the block before.
    // Not zeroed (sixteen stores for every row and group): every place a block reads is
    // written first, eight at a time.
    let mut dw = [std::mem::MaybeUninit::<f32>::uninit(); SCALE_CHUNK];
    let mut mw = [std::mem::MaybeUninit::<f32>::uninit(); SCALE_CHUNK];
    for first in (0..blocks).step_by(SCALE_CHUNK) {
        let chunk = first..(first + SCALE_CHUNK).min(blocks);
        for eight in (0..chunk.len()).step_by(8) {
            let p = r.as_ptr().add((first + eight) * F::BYTES);
            let n = (chunk.len() - eight).min(8);
            _mm256_storeu_ps(dw.as_mut_ptr().add(eight) as *mut f32, halves::<F>(p, n));
            if F::MIN {
                let m = halves::<F>(p.add(2), n);
                _mm256_storeu_ps(mw.as_mut_ptr().add(eight) as *mut f32, m);
            }
        }
        for b in chunk {
            let p = r.as_ptr().add(b * F::BYTES);
            prefetch_next_pair(r, b, F::BYTES);
            let w = F::unpack(p);
            let d = _mm256_broadcast_ss(dw[b - first].assume_init_ref());
            let xq = q8.add(b * M) as *const i8;
            let dx = d8.add(b * M) as *const f32;
            for j in 0..M {
                if F::MIN {
                    min[j] = mw[b - first]
                        .assume_init()
                        .mul_add((*sums8.add(b))[j], min[j]);
                }
                let sums = F::sums(w, xq.add(j * QK));
                // `d·d_x`, as the one-row kernel rounds it.
                let scale = _mm256_mul_ps(d, _mm256_loadu_ps(dx.add(8 * j)));
                acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[j]);
            }
        }
    }
    std::array::from_fn(|j| {
        if F::MIN {
            hsum(acc[j]) + min[j]
        } else {
            hsum(acc[j])
        }
    })
}

/// The products of rows `ra` and `rb` with each of the group's first `M` activation rows.
#[inline(always)]
unsafe fn pair<F: Format, const M: usize>(ra: &[u8], rb: &[u8], g: &Group) -> [(f32, f32); M] {
    let (a, b) = (row::<F, M>(ra, g), row::<F, M>(rb, g));
    std::array::from_fn(|j| (a[j], b[j]))
}

/// [`super::rows512::Rows`] for the format `F`, with AVX2 only.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `ra` and `rb` hold whole blocks, each `xs[j]` as many;
/// `out` holds `xs.len() ≤` [`MAX_ACTS`] entries.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows<F: Format>(ra: &[u8], rb: &[u8], g: &Group, out: &mut [(f32, f32)]) {
    assert!(out.len() == g.xs.len());
    match g.xs.len() {
        1 => out.copy_from_slice(&pair::<F, 1>(ra, rb, g)),
        2 => out.copy_from_slice(&pair::<F, 2>(ra, rb, g)),
        3 => out.copy_from_slice(&pair::<F, 3>(ra, rb, g)),
        4 => out.copy_from_slice(&pair::<F, 4>(ra, rb, g)),
        5 => out.copy_from_slice(&pair::<F, 5>(ra, rb, g)),
        6 => out.copy_from_slice(&pair::<F, 6>(ra, rb, g)),
        7 => out.copy_from_slice(&pair::<F, 7>(ra, rb, g)),
        8 => out.copy_from_slice(&pair::<F, 8>(ra, rb, g)),
        n => panic!("{n} activation rows at once; at most {MAX_ACTS}"),
    }
}
