//! Matrix-vector products for Q5_0 weights on the CPU. candle 0.11 computes Q5_0 dot products
//! with scalar code only; Gemma 3's Q4_K_M files keep most block weights in Q5_0 (and
//! `--quant q4k` falls back to it), so decoding spent most of its time there. The maths is
//! ggml's `vec_dot_q5_0_q8_0`: activations quantized per block of 32 to 8 bits, weights
//! `d * (q - 16)` with 5-bit `q`; AVX2 kernel and portable fallback as in [`super::gemv`].

use half::f16;

use super::gemv::{Dots, Kernel, Unpacked, Q8, QK};

/// Bytes per block: f16 scale, 4 bytes of fifth bits, 16 bytes of low nibbles.
const BLOCK_BYTES: usize = 22;

fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

fn high_bits(block: &[u8]) -> u32 {
    u32::from_le_bytes([block[2], block[3], block[4], block[5]])
}

/// A block's 5-bit values less 16 and its scale, for the portable products
/// ([`super::gemv::portable_dots`]): element `j` from byte `j`'s low nibble and bit `j` of the
/// high bits, element `j + 16` from its high nibble and bit `j + 16`.
#[inline(always)]
fn unpack(block: &[u8]) -> Unpacked {
    let qh = high_bits(block);
    let mut q = [0i8; QK];
    for (j, &byte) in block[6..BLOCK_BYTES].iter().enumerate() {
        let lo = (byte & 0x0F) | (((qh >> j) & 1) << 4) as u8;
        let hi = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
        q[j] = lo as i8 - 16;
        q[j + 16] = hi as i8 - 16;
    }
    Unpacked {
        q,
        d: scale(block),
        min: None,
    }
}

/// One weight row's portable products with every activation row.
fn portable(row: &[u8], xs: &[Q8], vals: &mut [f32]) {
    super::gemv::portable_dots((BLOCK_BYTES, unpack), row, xs, vals)
}

/// The 32 weights of one block as unsigned bytes `q + 16` (0..31), in element order; also
/// what the batched tiles ([`super::gemm_q8`]) multiply.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unsigned_avx2(block: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let qh = i32::from_le_bytes([*block.add(2), *block.add(3), *block.add(4), *block.add(5)]);
    // Fifth bits: byte i of the vector takes byte i / 8 of `qh`, then tests bit i % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    let fifth = _mm256_and_si256(set, _mm256_set1_epi8(0x10));
    // Low nibbles: elements 0..16 from the low halves, 16..32 from the high halves.
    let packed = _mm_loadu_si128(block.add(6) as *const __m128i);
    let lo = _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
        _mm256_set1_epi8(0x0F),
    );
    _mm256_or_si256(lo, fifth)
}

/// One block: the 32 products summed in eight i32 lanes (four elements each, signed, as
/// ggml sums them), as floats, and the block's scale in all eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_avx2(
    block: &[u8],
    x: &Q8,
    b: usize,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use super::rows256::Format;
    use std::arch::x86_64::*;
    assert!(block.len() >= BLOCK_BYTES && x.qs.len() >= (b + 1) * QK);
    let d = super::gemv::f16_splat(block.as_ptr());
    let sums = Avx2::sums(Avx2::unpack(block.as_ptr()), x.qs.as_ptr().add(b * QK));
    (_mm256_cvtepi32_ps(sums), d)
}

/// Q5_0 for [`super::rows256`] (and the one-row blocks): the weights signed (`q - 16`, as
/// ggml's AVX2 kernel makes them), multiplied as Q8_0's are.
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
        _mm256_sub_epi8(unsigned_avx2(block), _mm256_set1_epi8(16))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sums(w: std::arch::x86_64::__m256i, xq: *const i8) -> std::arch::x86_64::__m256i {
        super::rows256::signed_sums(w, xq)
    }
}

/// Two rows, each in ggml's order (one chain of eight lanes, each block's `d·d_x × lane
/// sums` fused into it), interleaved so the two chains overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_pair_avx2(ra: &[u8], rb: &[u8], x: &Q8) -> (f32, f32) {
    super::gemv::pair_chains::<false>(ra, rb, x, BLOCK_BYTES, |blk, b| {
        use std::arch::x86_64::*;
        let (sums, d) = block_avx2(blk, x, b);
        (_mm256_mul_ps(d, _mm256_set1_ps(x.d[b])), sums, 0.0)
    })
}

/// Q5_0 for [`super::rows512`]: the weights unsigned (0..32), the offset of 16 starting
/// each lane's sum.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl super::rows512::Format for Avx512 {
    const BYTES: usize = BLOCK_BYTES;
    const MIN: bool = false;
    type Weights = std::arch::x86_64::__m512i;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack(a: *const u8, b: *const u8) -> Self::Weights {
        use std::arch::x86_64::*;
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(unsigned_avx2(a)), unsigned_avx2(b))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn sums(w: Self::Weights, x: &Q8, b: usize) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        assert!(x.sum4.len() >= 8 * (b + 1));
        let lanes = _mm256_loadu_si256(x.sum4.as_ptr().add(8 * b) as *const __m256i);
        let start = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_slli_epi32::<4>(_mm512_broadcast_i64x4(lanes)),
        );
        _mm512_dpbusd_epi32(start, w, super::rows512::both_halves(x, b))
    }
}

/// The Q5_0 kernels.
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
    avx512: Some(super::rows512::rows::<Avx512>),
    #[cfg(target_arch = "x86_64")]
    avx512_from: 1,
};

/// `out[i] = W[i] · x` for Q5_0 `weights` holding `n` rows of `k` values (`k` a multiple of 32).
pub fn gemv(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    super::gemv::gemv(&DOTS, weights, n, k, x, out, kernel)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_agree_with_each_other_and_with_the_dequantized_product() {
        super::super::gemv::check_kernels(candle_core::quantized::GgmlDType::Q5_0, super::gemv);
    }
}
