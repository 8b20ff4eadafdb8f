//! Matrix-vector products for IQ4_NL weights ([`crate::formats::iq4`]) on the CPU. The maths
//! is ggml's `vec_dot_iq4_nl_q8_0`: activations quantized per block of 32 to 8 bits (Q8_0),
//! weights `d · VALUES[code]`; per block the exact integer sum of `VALUES[code] · q`, scaled
//! by `d · d_x` into f32. The AVX2 kernel looks the sixteen values up with one byte shuffle
//! per half block and multiplies them as Q5_0's signed weights are ([`super::q5_0`]); like
//! every type of [`super::gemv`], its products chain the blocks' scaled lane sums in one
//! eight-lane chain per row (ggml's IQ4_NL kernel alternates two chains, which can differ in
//! the last bits), and its batched form ([`super::rows256`]) gives the one-row bits. The
//! portable form is ggml's scalar one. Without an AVX-512 form, CPUs with AVX-512 run the
//! AVX2 one.

use half::f16;

use super::gemv::{Dots, Kernel, Unpacked, Q8, QK};
use crate::formats::iq4::{NL_BLOCK_BYTES as BLOCK_BYTES, VALUES};

/// A block's values (table entries) and scale, for the portable products
/// ([`super::gemv::portable_dots`]): element `j` from byte `j`'s low nibble, element `j + 16`
/// from its high nibble.
#[inline(always)]
fn unpack(block: &[u8]) -> Unpacked {
    let mut q = [0i8; QK];
    for (j, &byte) in block[2..BLOCK_BYTES].iter().enumerate() {
        q[j] = VALUES[(byte & 0x0F) as usize];
        q[j + 16] = VALUES[(byte >> 4) as usize];
    }
    Unpacked {
        q,
        d: f16::from_le_bytes([block[0], block[1]]).to_f32(),
        min: None,
    }
}

/// One weight row's portable products with every activation row.
fn portable(row: &[u8], xs: &[Q8], vals: &mut [f32]) {
    super::gemv::portable_dots((BLOCK_BYTES, unpack), row, xs, vals)
}

/// IQ4_NL for [`super::rows256`] (and the one-row blocks): the table's values looked up as
/// signed bytes, multiplied as Q8_0's are.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl super::rows256::Format for Avx2 {
    const BYTES: usize = BLOCK_BYTES;
    const MIN: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(block: *const u8) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let table = _mm_loadu_si128(VALUES.as_ptr() as *const __m128i);
        let codes = _mm_loadu_si128(block.add(2) as *const __m128i);
        let low = _mm_set1_epi8(0x0F);
        // Elements 0..16 from the low nibbles, 16..32 from the high ones.
        _mm256_set_m128i(
            _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(codes, 4), low)),
            _mm_shuffle_epi8(table, _mm_and_si128(codes, low)),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sums(w: std::arch::x86_64::__m256i, xq: *const i8) -> std::arch::x86_64::__m256i {
        super::rows256::signed_sums(w, xq)
    }
}

/// Two rows, each in one chain of eight lanes (each block's `d·d_x × lane sums` fused into
/// it), interleaved so the two chains overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_pair_avx2(ra: &[u8], rb: &[u8], x: &Q8) -> (f32, f32) {
    use super::rows256::Format;
    super::gemv::pair_chains::<false>(ra, rb, x, BLOCK_BYTES, |blk, b| {
        use std::arch::x86_64::*;
        assert!(blk.len() >= BLOCK_BYTES && x.qs.len() >= (b + 1) * QK);
        let d = super::gemv::f16_splat(blk.as_ptr());
        let sums = Avx2::sums(Avx2::unpack(blk.as_ptr()), x.qs.as_ptr().add(b * QK));
        (
            _mm256_mul_ps(d, _mm256_set1_ps(x.d[b])),
            _mm256_cvtepi32_ps(sums),
            0.0,
        )
    })
}

/// The IQ4_NL kernels.
const DOTS: Dots = Dots {
    block_bytes: BLOCK_BYTES,
    portable,
    #[cfg(target_arch = "x86_64")]
    avx2: dot_pair_avx2,
    #[cfg(target_arch = "x86_64")]
    avx2_rows: super::rows256::rows::<Avx2>,
    #[cfg(target_arch = "x86_64")]
    avx2_group: 8,
    #[cfg(target_arch = "x86_64")]
    avx512: None,
    #[cfg(target_arch = "x86_64")]
    avx512_from: 1,
};

/// `out[b·n + i] = W[i] · x_b` for IQ4_NL `weights` holding `n` rows of `k` values (`k` a
/// multiple of 32) and `x` holding one or more rows of `k` activations.
pub fn gemv(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    super::gemv::gemv(&DOTS, weights, n, k, x, out, kernel)
}

#[cfg(test)]
mod tests {
    use super::super::gemv::{check_block_type, Codec};
    use crate::formats::iq4;

    #[test]
    fn kernels_agree_with_each_other_the_dequantized_product_and_one_row_alone() {
        let forms: Codec = (iq4::quantize_nl, iq4::dequantize_nl);
        check_block_type("IQ4_NL", forms, (48, 256, 11), super::gemv);
    }
}
