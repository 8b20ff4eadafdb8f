//! Shared machinery of our CPU matrix-vector kernels for quantized weights (`q4_1`, `q5_0`):
//! activations quantized to 8 bits per block of 32 (ggml's Q8_0/Q8_1), run-time kernel
//! selection (AVX2 or portable scalar; `MLCLI_CPU_KERNELS=scalar` forces the fallback, for
//! testing), and rows split over candle's thread pool.

/// Elements per block, for the weights and the quantized activations alike.
pub(crate) const QK: usize = 32;

/// Activations quantized per block of 32: values, scales, and per-block sums of the values
/// (as integers and scaled).
pub(crate) struct Q8 {
    pub(crate) qs: Vec<i8>,
    pub(crate) d: Vec<f32>,
    pub(crate) sum: Vec<i32>,
    pub(crate) s: Vec<f32>,
}

/// Quantizes `x` (a multiple of 32 long) exactly as ggml's Q8_0/Q8_1 do: values rounded to
/// nearest at scale `amax / 127`, the scale (and the scaled sum) then stored as f16, so our
/// single-row products see the activations candle's and llama.cpp's batched ones see.
pub(crate) fn quantize(x: &[f32]) -> Q8 {
    let nb = x.len() / QK;
    let mut q = Q8 {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(nb),
        sum: Vec::with_capacity(nb),
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
        q.d.push(half::f16::from_f32(d).to_f32());
        q.sum.push(sum);
        q.s.push(half::f16::from_f32(d * sum as f32).to_f32());
    }
    q
}

/// Which kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable code.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 kernels, plus AVX-512 VNNI where a type has one (Q8_0).
    Avx512Vnni,
}

/// The best kernel for this CPU (`MLCLI_CPU_KERNELS=scalar` forces the portable fallback,
/// `MLCLI_CPU_KERNELS=avx2` the AVX2 kernels on AVX-512 machines).
pub fn kernel() -> Kernel {
    if std::env::var("MLCLI_CPU_KERNELS").is_ok_and(|v| v == "scalar") {
        return Kernel::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        if vnni && !std::env::var("MLCLI_CPU_KERNELS").is_ok_and(|v| v == "avx2") {
            return Kernel::Avx512Vnni;
        }
        return Kernel::Avx2;
    }
    Kernel::Scalar
}

/// A row · activations dot product for one weight type.
pub(crate) type Dot = unsafe fn(&[u8], &Q8) -> f32;

/// The dot products of one weight type, by kernel.
pub(crate) struct Dots {
    /// Bytes per block of 32 weights.
    pub(crate) block_bytes: usize,
    /// Portable code.
    pub(crate) scalar: fn(&[u8], &Q8) -> f32,
    /// Needs avx2, fma and f16c.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx2: Dot,
    /// Needs avx512f, avx512bw and avx512vnni (else the AVX2 one runs).
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512: Option<Dot>,
}

/// `out[i] = W[i] · x` for `weights` holding `n` rows of `k` values (`k` a multiple of 32) in
/// the block format of `dots`.
pub(crate) fn gemv(
    dots: &Dots,
    weights: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
    kernel: Kernel,
) {
    let row_bytes = k / QK * dots.block_bytes;
    assert!(
        k.is_multiple_of(QK) && x.len() == k && out.len() == n && weights.len() >= n * row_bytes
    );
    let xq = quantize(x);
    #[cfg(target_arch = "x86_64")]
    let simd: Option<Dot> = match kernel {
        Kernel::Scalar => None,
        Kernel::Avx2 => Some(dots.avx2),
        Kernel::Avx512Vnni => Some(dots.avx512.unwrap_or(dots.avx2)),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd: Option<Dot> = None;
    let scalar = dots.scalar;
    par_rows(out, |i| {
        let row = &weights[i * row_bytes..(i + 1) * row_bytes];
        match simd {
            // SAFETY: SIMD kernels are selected only when the CPU reports their features
            // (`kernel()`); a type without an AVX-512 kernel runs its AVX2 one.
            Some(dot) => unsafe { dot(row, &xq) },
            None => scalar(row, &xq),
        }
    });
}

/// `out[i] = row_dot(i)` for every row, rows split over [`super::pool::Pool`].
pub(crate) fn par_rows(out: &mut [f32], row_dot: impl Fn(usize) -> f32 + Sync) {
    let out_addr = out.as_mut_ptr() as usize;
    super::pool::Pool::global().run(out.len(), |rows| {
        for i in rows {
            let v = row_dot(i);
            // SAFETY: every row index is handed to exactly one thread, and `out` outlives the call.
            unsafe { *(out_addr as *mut f32).add(i) = v };
        }
    });
}

/// How far ahead of the block being multiplied the SIMD kernels ask for weight bytes. The
/// hardware prefetcher alone left one thread streaming a model's weights from L3/DRAM at
/// 7–10 GB/s; with software prefetch 2 KiB ahead SmolLM2's 210 Q4_1 products per token went
/// from 6.9 to 3.7 ms (the same rows, in cache, run at ~21 GB/s either way). Reading past the
/// end of a matrix is harmless: prefetches never fault.
pub(crate) const PREFETCH_BYTES: usize = 2048;

/// Asks for the cache line [`PREFETCH_BYTES`] after `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(p: *const u8) {
    use std::arch::x86_64::*;
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8) };
}

/// The sum of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(acc: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let hi = _mm256_extractf128_ps(acc, 1);
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Pseudo-random values in [-1, 1), for kernel tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Checks a kernel pair against the dequantized product for weights of type `dtype`.
#[cfg(test)]
pub(crate) fn check_kernels(
    dtype: candle_core::quantized::GgmlDType,
    gemv: impl Fn(&[u8], usize, usize, &[f32], &mut [f32], Kernel),
) {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    let (n, k) = (48, 256);
    let w = Tensor::from_vec(test_values(n * k, 1), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let x = test_values(k, 2);
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
    let scalar = run(Kernel::Scalar);
    let mut others = vec![kernel()];
    if kernel() == Kernel::Avx512Vnni {
        others.push(Kernel::Avx2);
    }
    for other in others {
        let best = run(other);
        for ((s, b), e) in scalar.iter().zip(&best).zip(&exact) {
            assert!(
                (s - b).abs() < 1e-4 * (1.0 + e.abs()),
                "{dtype:?}: scalar {s} vs {other:?} {b}"
            );
            assert!((s - e).abs() < 0.1, "{dtype:?}: quantized {s} vs exact {e}");
        }
    }
    // The product must depend on the input: a wrong layout would not track it.
    let max_exact = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_exact > 0.5, "test data too small to be meaningful");
}
