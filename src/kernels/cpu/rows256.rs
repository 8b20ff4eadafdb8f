//! Products of two weight rows of a block-of-32 format (Q4_1, Q5_0, Q8_0) with up to four
//! activation rows at once, with AVX2: each block's weights unpacked once for every
//! activation row (a prompt's rows, several sequences decoding together) and each product in
//! the one-row kernel's order ([`super::gemv::pair_chains`]: one chain of eight lanes per row,
//! `d·d_x × lane sums` fused into it, a minimum's `m · s_x` in a scalar chain), so every
//! product is the single-row one bit for bit, however many rows run together.

use std::arch::x86_64::*;

use super::gemv::{hsum, prefetch_next_pair, Q8, QK};
use super::rows512::Group;

/// Activation rows one pass shares its unpacked weights among (eight chains of one weight
/// row fit the sixteen registers).
pub(crate) const MAX_ACTS: usize = 8;

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

    /// The lane sums of an unpacked block with a block of activations (`xq`: its 32 values,
    /// `sum4`: their eight sums of four, [`Q8::sum4`]): eight i32 lanes (four products each,
    /// as ggml sums them), any offset of the weights taken out.
    ///
    /// # Safety
    /// As [`Format::unpack`]; `xq` and `sum4` address a whole block's values and sums.
    unsafe fn sums(w: __m256i, xq: *const i8, sum4: *const i32) -> __m256i;
}

/// The f16 pair at `p` (scale, then minimum or the first weight bytes) as f32.
#[inline(always)]
unsafe fn head(p: *const u8) -> (f32, f32) {
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
    (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)))
}

/// The products of row `r` with each of `M` activation rows: `M` chains side by side, so
/// one row at a time keeps its accumulators in registers (a pair of rows with four
/// activation rows did not fit sixteen of them).
#[inline(always)]
unsafe fn row<F: Format, const M: usize>(r: &[u8], xs: [&Q8; M]) -> [f32; M] {
    let blocks = r.len() / F::BYTES;
    assert!(xs.iter().all(|x| x.qs.len() >= blocks * QK
        && x.d.len() >= blocks
        && x.sum4.len() >= 8 * blocks
        && (!F::MIN || x.s.len() >= blocks)));
    // The activation rows' arrays as pointers, read once rather than through each `Vec`
    // in the loop.
    let qs = xs.map(|x| x.qs.as_ptr());
    let ds = xs.map(|x| x.d.as_ptr());
    let ss = xs.map(|x| x.s.as_ptr());
    let sum4 = xs.map(|x| x.sum4.as_ptr());
    let mut acc = [_mm256_setzero_ps(); M];
    let mut min = [0f32; M];
    for b in 0..blocks {
        let p = r.as_ptr().add(b * F::BYTES);
        prefetch_next_pair(r, b, F::BYTES);
        let w = F::unpack(p);
        let (d, m) = head(p);
        for j in 0..M {
            if F::MIN {
                min[j] = m.mul_add(*ss[j].add(b), min[j]);
            }
            let sums = F::sums(w, qs[j].add(b * QK), sum4[j].add(8 * b));
            let scale = _mm256_set1_ps(d * *ds[j].add(b));
            acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[j]);
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

/// The products of rows `ra` and `rb` with each of `M` activation rows.
#[inline(always)]
unsafe fn pair<F: Format, const M: usize>(ra: &[u8], rb: &[u8], xs: [&Q8; M]) -> [(f32, f32); M] {
    let (a, b) = (row::<F, M>(ra, xs), row::<F, M>(rb, xs));
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
    match g.xs {
        [a] => out.copy_from_slice(&pair::<F, 1>(ra, rb, [a])),
        [a, b] => out.copy_from_slice(&pair::<F, 2>(ra, rb, [a, b])),
        [a, b, c] => out.copy_from_slice(&pair::<F, 3>(ra, rb, [a, b, c])),
        [a, b, c, d] => out.copy_from_slice(&pair::<F, 4>(ra, rb, [a, b, c, d])),
        [a, b, c, d, e] => out.copy_from_slice(&pair::<F, 5>(ra, rb, [a, b, c, d, e])),
        [a, b, c, d, e, f] => out.copy_from_slice(&pair::<F, 6>(ra, rb, [a, b, c, d, e, f])),
        [a, b, c, d, e, f, h] => out.copy_from_slice(&pair::<F, 7>(ra, rb, [a, b, c, d, e, f, h])),
        [a, b, c, d, e, f, h, i] => {
            out.copy_from_slice(&pair::<F, 8>(ra, rb, [a, b, c, d, e, f, h, i]))
        }
        _ => panic!("{} activation rows at once; at most {MAX_ACTS}", g.xs.len()),
    }
}
