//! Matrix-vector products for Q8_0 weights on the CPU: ggml's `vec_dot_q8_0_q8_0` (weights and
//! activations both 8-bit per block of 32, one f16 scale each). candle has a SIMD kernel for it,
//! but its single-row products did not spread well over threads; Gemma 3's tied 262k × 640 output
//! matrix is Q8_0 and dominated decoding. AVX2 kernel and portable fallback as in [`super::gemv`].

use half::f16;

use super::gemv::{Dots, Kernel, Q8, QK};

/// Bytes per block: f16 scale, 32 signed bytes.
const BLOCK_BYTES: usize = 34;

fn dot_scalar(row: &[u8], x: &Q8) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let acc: i32 = block[2..]
            .iter()
            .zip(xq)
            .map(|(&w, &v)| w as i8 as i32 * v as i32)
            .sum();
        sum += d * x.d[b] * acc as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &Q8) -> f32 {
    use std::arch::x86_64::*;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let ones = _mm256_set1_epi16(1);
    let block = |b: usize, block: &[u8]| {
        let d =
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                i16::from_le_bytes([block[0], block[1]]) as i32,
            )));
        let w = _mm256_loadu_si256(block.as_ptr().add(2) as *const __m256i);
        let v = _mm256_loadu_si256(x.qs.as_ptr().add(b * QK) as *const __m256i);
        // maddubs multiplies unsigned by signed: |w| times v with w's sign moved onto v.
        let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(v, w));
        let sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
        (_mm256_set1_ps(d * x.d[b]), sum)
    };
    let mut blocks = row.chunks_exact(BLOCK_BYTES).enumerate();
    while let Some((b, blk)) = blocks.next() {
        // Two blocks are 68 bytes: one prefetch per block reaches every cache line.
        super::gemv::prefetch_ahead(blk.as_ptr());
        let (s, p) = block(b, blk);
        acc0 = _mm256_fmadd_ps(s, p, acc0);
        if let Some((b, blk)) = blocks.next() {
            super::gemv::prefetch_ahead(blk.as_ptr());
            let (s, p) = block(b, blk);
            acc1 = _mm256_fmadd_ps(s, p, acc1);
        }
    }
    super::gemv::hsum(_mm256_add_ps(acc0, acc1))
}

/// Two blocks per step in one 512-bit register: `vpdpbusd` sums four u8 × i8 products per
/// lane, lanes 0..8 holding the first block and 8..16 the second, each then scaled by its own
/// pair of scales.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_avx512(row: &[u8], x: &Q8) -> f32 {
    use std::arch::x86_64::*;
    let nb = row.len() / BLOCK_BYTES;
    let scale_of = |b: usize| {
        let blk = row.as_ptr().add(b * BLOCK_BYTES);
        let h = i16::from_le_bytes([*blk, *blk.add(1)]) as i32;
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))) * x.d[b]
    };
    let mut acc = _mm512_setzero_ps();
    let mut b = 0;
    while b + 2 <= nb {
        let (pa, pb) = (
            row.as_ptr().add(b * BLOCK_BYTES + 2),
            row.as_ptr().add((b + 1) * BLOCK_BYTES + 2),
        );
        super::gemv::prefetch_ahead(pa);
        super::gemv::prefetch_ahead(pb);
        let w = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(pa as *const __m256i)),
            _mm256_loadu_si256(pb as *const __m256i),
            1,
        );
        let v = _mm512_loadu_si512(x.qs.as_ptr().add(b * QK) as *const _);
        // vpdpbusd takes unsigned × signed: |w| against v carrying w's sign.
        let negative = _mm512_movepi8_mask(w);
        let v = _mm512_mask_sub_epi8(v, negative, _mm512_setzero_si512(), v);
        let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), v);
        let scales = _mm512_mask_blend_ps(
            0xFF00,
            _mm512_set1_ps(scale_of(b)),
            _mm512_set1_ps(scale_of(b + 1)),
        );
        acc = _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(sums), acc);
        b += 2;
    }
    let mut total = _mm512_reduce_add_ps(acc);
    if b < nb {
        // An odd last block.
        let blk = &row[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
        let acc: i32 = blk[2..]
            .iter()
            .zip(&x.qs[b * QK..(b + 1) * QK])
            .map(|(&w, &v)| w as i8 as i32 * v as i32)
            .sum();
        total += scale_of(b) * acc as f32;
    }
    total
}

/// The Q8_0 kernels.
const DOTS: Dots = Dots {
    block_bytes: BLOCK_BYTES,
    scalar: dot_scalar,
    #[cfg(target_arch = "x86_64")]
    avx2: dot_avx2,
    #[cfg(target_arch = "x86_64")]
    avx512: Some(dot_avx512),
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
