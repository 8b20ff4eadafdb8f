//! Matrix-vector products for Q4_1 weights on the CPU. candle 0.11 computes Q4_1 dot products
//! with scalar code only, which made SmolLM2's decode several times slower than it should be.
//! This is the same maths as ggml's `vec_dot_q4_1_q8_1` (activations quantized per block of 32
//! to 8 bits), with an AVX2 kernel, AVX-512 VNNI for several activation rows at once
//! ([`super::rows512`]) and a portable scalar fallback ([`super::gemv`]).

use half::f16;

use super::gemv::{Dots, Kernel, Unpacked, Q8, QK};

/// Bytes per block: f16 scale, f16 minimum, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

fn scale_and_min(block: &[u8]) -> (f32, f32) {
    (
        f16::from_le_bytes([block[0], block[1]]).to_f32(),
        f16::from_le_bytes([block[2], block[3]]).to_f32(),
    )
}

/// A block's nibbles as values 0..16 (low nibbles elements 0..16, high ones 16..32), its
/// scale and minimum, for the portable products ([`super::gemv::portable_dots`]).
#[inline(always)]
fn unpack(block: &[u8]) -> Unpacked {
    let (d, m) = scale_and_min(block);
    let mut q = [0i8; QK];
    for (j, &byte) in block[4..BLOCK_BYTES].iter().enumerate() {
        q[j] = (byte & 0x0F) as i8;
        q[j + 16] = (byte >> 4) as i8;
    }
    Unpacked { q, d, min: Some(m) }
}

/// One weight row's portable products with every activation row.
fn portable(row: &[u8], xs: &[Q8], vals: &mut [f32]) {
    super::gemv::portable_dots((BLOCK_BYTES, unpack), row, xs, vals)
}

/// Q4_1 for [`super::rows256`] (and the one-row blocks): 16 bytes of nibbles as 32 unsigned
/// values, low nibbles elements 0..16, high ones 16..32; its minimum's `m · s_x` in a second
/// chain.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl super::rows256::Format for Avx2 {
    const BYTES: usize = BLOCK_BYTES;
    const MIN: bool = true;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(block: *const u8) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let packed = _mm_loadu_si128(block.add(4) as *const __m128i);
        _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            _mm256_set1_epi8(0x0F),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sums(w: std::arch::x86_64::__m256i, xq: *const i8) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let v = _mm256_loadu_si256(xq as *const __m256i);
        // u8 x i8 pairs summed to i16 (at most 2 * 15 * 127), then to i32.
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), _mm256_set1_epi16(1))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_avx2(
    block: &[u8],
    x: &Q8,
    b: usize,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256, f32) {
    use super::rows256::Format;
    use std::arch::x86_64::*;
    // Scale and minimum: two f16 in the first four bytes, converted together.
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
        block[0], block[1], block[2], block[3],
    ])));
    let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1)));
    let prod = Avx2::sums(Avx2::unpack(block.as_ptr()), x.qs.as_ptr().add(b * QK));
    (_mm256_set1_ps(d * x.d[b]), _mm256_cvtepi32_ps(prod), m)
}

/// Two rows at once, each in ggml's order so products round as llama.cpp's do: one chain of
/// eight lanes, each block's `d·d_x × lane sums` fused into it, the minimums' `m · s_x` fused
/// into a second chain, and the lanes summed as ggml sums them ([`super::gemv::hsum`]). The
/// two rows' chains are independent, so neither waits on the other's latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_pair_avx2(ra: &[u8], rb: &[u8], x: &Q8) -> (f32, f32) {
    super::gemv::pair_chains::<true>(ra, rb, x, BLOCK_BYTES, |blk, b| block_avx2(blk, x, b))
}

/// Q4_1 for [`super::rows512`]: each row's 16 bytes of nibbles as 32 unsigned values (low
/// nibbles first, as the AVX2 block), its minimum's `m · s_x` in the second chain.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl super::rows512::Format for Avx512 {
    const BYTES: usize = BLOCK_BYTES;
    const MIN: bool = true;
    type Weights = std::arch::x86_64::__m512i;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack(a: *const u8, b: *const u8) -> Self::Weights {
        use std::arch::x86_64::*;
        let ab = _mm256_loadu2_m128i(b.add(4) as *const __m128i, a.add(4) as *const __m128i);
        // [qa, qa, qb, qb], the second and fourth quarters shifted to their high nibbles.
        let ab = _mm512_castsi256_si512(ab);
        let v = _mm512_shuffle_i64x2::<0b01_01_00_00>(ab, ab);
        let v = _mm512_mask_srli_epi16::<4>(v, 0xFF00_FF00, v);
        _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn sums(w: Self::Weights, x: &Q8, b: usize) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        // At most 4 · 15 · 127 per lane.
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, super::rows512::both_halves(x, b))
    }
}

/// The Q4_1 kernels.
const DOTS: Dots = Dots {
    block_bytes: BLOCK_BYTES,
    portable,
    #[cfg(target_arch = "x86_64")]
    avx2: dot_pair_avx2,
    #[cfg(target_arch = "x86_64")]
    avx2_rows: super::rows256::rows::<Avx2>,
    #[cfg(target_arch = "x86_64")]
    avx2_group: 4,
    #[cfg(target_arch = "x86_64")]
    avx512: Some(super::rows512::rows::<Avx512>),
    #[cfg(target_arch = "x86_64")]
    avx512_from: 2,
};

/// `out[i] = W[i] · x` for Q4_1 `weights` holding `n` rows of `k` values (`k` a multiple of 32).
pub fn gemv(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    super::gemv::gemv(&DOTS, weights, n, k, x, out, kernel)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_agree_with_each_other_and_with_the_dequantized_product() {
        super::super::gemv::check_kernels(candle_core::quantized::GgmlDType::Q4_1, super::gemv);
    }
}
