//! Matrix-vector products for Q8_0 weights on the CPU: ggml's `vec_dot_q8_0_q8_0` (weights and
//! activations both 8-bit per block of 32, one f16 scale each). candle has a SIMD kernel for it,
//! but its single-row products did not spread well over threads; Gemma 3's tied 262k × 640 output
//! matrix is Q8_0 and dominated decoding. AVX2 kernel and portable fallback as in [`super::gemv`].

use half::f16;

use super::gemv::{Dots, Kernel, Unpacked, Q8, QK};

/// Bytes per block: f16 scale, 32 signed bytes.
const BLOCK_BYTES: usize = 34;

/// A block's signed bytes and scale, for the portable products
/// ([`super::gemv::portable_dots`]).
#[inline(always)]
fn unpack(block: &[u8]) -> Unpacked {
    let mut q = [0i8; QK];
    for (o, &w) in q.iter_mut().zip(&block[2..BLOCK_BYTES]) {
        *o = w as i8;
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

/// One block: its scale times the activations' (in all lanes) and the eight lane sums (four
/// signed products each, as ggml's `mul_sum_i8_pairs_float` sums them), as floats.
#[cfg(target_arch = "x86_64")]
#[inline]
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
    let sum = _mm256_cvtepi32_ps(Avx2::sums(
        Avx2::unpack(block.as_ptr()),
        x.qs.as_ptr().add(b * QK),
    ));
    (_mm256_mul_ps(d, _mm256_set1_ps(x.d[b])), sum)
}

/// Q8_0 for [`super::rows256`] (and the one-row blocks): signed × signed as ggml does it,
/// |w| × (x with w's sign).
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
        _mm256_loadu_si256(block.add(2) as *const __m256i)
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
        let (scale, sums) = block_avx2(blk, x, b);
        (scale, sums, 0.0)
    })
}

/// Q8_0 for [`super::rows512`]: signed × signed as ggml does it, |w| × (x with w's sign).
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl super::rows512::Format for Avx512 {
    const BYTES: usize = BLOCK_BYTES;
    const MIN: bool = false;
    /// Both rows' |w|, and where w is negative.
    type Weights = (std::arch::x86_64::__m512i, std::arch::x86_64::__mmask64);

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn unpack(a: *const u8, b: *const u8) -> Self::Weights {
        use std::arch::x86_64::*;
        let w = super::rows512::join_rows(a.add(2), b.add(2));
        (_mm512_abs_epi8(w), _mm512_movepi8_mask(w))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn sums((w, negative): Self::Weights, x: &Q8, b: usize) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        let v = super::rows512::both_halves(x, b);
        let v = _mm512_mask_sub_epi8(v, negative, _mm512_setzero_si512(), v);
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, v)
    }
}

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

/// `out[i] = W[i] · x` for Q8_0 `weights` holding `n` rows of `k` values (`k` a multiple of 32).
pub fn gemv(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    super::gemv::gemv(&DOTS, weights, n, k, x, out, kernel)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_agree_with_each_other_and_with_the_dequantized_product() {
        super::super::gemv::check_kernels(candle_core::quantized::GgmlDType::Q8_0, super::gemv);
    }
}
