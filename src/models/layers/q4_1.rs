//! Matrix-vector products for Q4_1 weights on the CPU. candle 0.11 computes Q4_1 dot products
//! with scalar code only, which made SmolLM2's decode several times slower than it should be.
//! This is the same maths as ggml's `vec_dot_q4_1_q8_1` (activations quantized per block of 32
//! to 8 bits), with an AVX2 kernel chosen at run time and a portable scalar fallback
//! (`MLCLI_CPU_KERNELS=scalar` forces it, for testing). Rows are split over candle's thread pool.

use half::f16;

/// Elements per block.
const QK: usize = 32;
/// Bytes per block: f16 scale, f16 minimum, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

/// Activations quantized per block of 32: values, scales and scaled sums.
struct Q8 {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

fn quantize(x: &[f32]) -> Q8 {
    let nb = x.len() / QK;
    let mut q = Q8 {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(nb),
        s: Vec::with_capacity(nb),
    };
    for (b, block) in x.chunks_exact(QK).enumerate() {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (j, v) in block.iter().enumerate() {
            let qv = (v * id).round() as i8;
            q.qs[b * QK + j] = qv;
            sum += qv as i32;
        }
        q.d.push(d);
        q.s.push(d * sum as f32);
    }
    q
}

fn scale_and_min(block: &[u8]) -> (f32, f32) {
    (
        f16::from_le_bytes([block[0], block[1]]).to_f32(),
        f16::from_le_bytes([block[2], block[3]]).to_f32(),
    )
}

fn dot_scalar(row: &[u8], x: &Q8) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let (d, m) = scale_and_min(block);
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let mut acc = 0i32;
        for (j, &byte) in block[4..].iter().enumerate() {
            acc += (byte & 0x0F) as i32 * xq[j] as i32 + (byte >> 4) as i32 * xq[j + 16] as i32;
        }
        sum += d * x.d[b] * acc as f32 + m * x.s[b];
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_avx2(
    block: &[u8],
    xq: *const i8,
    xd: f32,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256, f32) {
    use std::arch::x86_64::*;
    // Scale and minimum: two f16 in the first four bytes, converted together.
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
        block[0], block[1], block[2], block[3],
    ])));
    let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1)));
    // 16 bytes of nibbles -> 32 values: low nibbles are elements 0..16, high ones 16..32.
    let packed = _mm_loadu_si128(block.as_ptr().add(4) as *const __m128i);
    let w = _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
        _mm256_set1_epi8(0x0F),
    );
    let x = _mm256_loadu_si256(xq as *const __m256i);
    // u8 x i8 pairs summed to i16 (at most 2 * 15 * 127), then to i32.
    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
    (_mm256_set1_ps(d * xd), _mm256_cvtepi32_ps(prod), m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &Q8) -> f32 {
    use std::arch::x86_64::*;
    // Two accumulators so consecutive blocks do not wait on each other's FMA.
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut acc_min = 0f32;
    let mut blocks = row.chunks_exact(BLOCK_BYTES).enumerate();
    while let Some((b, block)) = blocks.next() {
        let (s, p, m) = block_avx2(block, x.qs.as_ptr().add(b * QK), x.d[b]);
        acc0 = _mm256_fmadd_ps(s, p, acc0);
        acc_min += m * x.s[b];
        if let Some((b, block)) = blocks.next() {
            let (s, p, m) = block_avx2(block, x.qs.as_ptr().add(b * QK), x.d[b]);
            acc1 = _mm256_fmadd_ps(s, p, acc1);
            acc_min += m * x.s[b];
        }
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let hi = _mm256_extractf128_ps(acc, 1);
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s) + acc_min
}

/// Which kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable code.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
}

/// The best kernel for this CPU (`MLCLI_CPU_KERNELS=scalar` forces the fallback).
pub fn kernel() -> Kernel {
    if std::env::var("MLCLI_CPU_KERNELS").is_ok_and(|v| v == "scalar") {
        return Kernel::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        return Kernel::Avx2;
    }
    Kernel::Scalar
}

/// `out[i] = W[i] · x` for Q4_1 `weights` holding `n` rows of `k` values (`k` a multiple of 32).
pub fn gemv(weights: &[u8], n: usize, k: usize, x: &[f32], out: &mut [f32], kernel: Kernel) {
    let row_bytes = k / QK * BLOCK_BYTES;
    assert!(k % QK == 0 && x.len() == k && out.len() == n && weights.len() >= n * row_bytes);
    let xq = quantize(x);
    let out_addr = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(n, |rows| {
        for i in rows {
            let row = &weights[i * row_bytes..(i + 1) * row_bytes];
            let v = match kernel {
                // SAFETY: Avx2 is only selected when the CPU reports avx2, fma and f16c.
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe { dot_avx2(row, &xq) },
                _ => dot_scalar(row, &xq),
            };
            // SAFETY: every row index is handed to exactly one thread, and `out` outlives the call.
            unsafe { *(out_addr as *mut f32).add(i) = v };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn kernels_agree_with_each_other_and_with_the_dequantized_product() {
        let (n, k) = (48, 256);
        let w = Tensor::from_vec(random(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let x = random(k, 2);
        // The exact product with the dequantized weights; ours differs only by the 8-bit
        // quantization of the activations.
        let xt = Tensor::from_vec(x.clone(), (k, 1), &Device::Cpu).unwrap();
        let exact: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .matmul(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let data = q.data().unwrap();
        let run = |kernel| {
            let mut out = vec![0f32; n];
            gemv(&data, n, k, &x, &mut out, kernel);
            out
        };
        let (scalar, best) = (run(Kernel::Scalar), run(kernel()));
        for ((s, b), e) in scalar.iter().zip(&best).zip(&exact) {
            assert!(
                (s - b).abs() < 1e-4 * (1.0 + e.abs()),
                "scalar {s} vs {:?} {b}",
                kernel()
            );
            assert!((s - e).abs() < 0.1, "quantized {s} vs exact {e}");
        }
        // The product must depend on the input: a wrong layout would not track it.
        let max_exact = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_exact > 0.5, "test data too small to be meaningful");
    }
}
