//! Shared machinery of our CPU matrix-vector kernels for quantized weights (`q4_1`, `q5_0`,
//! `q8_0`): activations quantized to 8 bits per block of 32 (ggml's Q8_0/Q8_1), run-time
//! kernel selection (AVX-512 VNNI, AVX2 or portable scalar; `MLCLI_CPU_KERNELS=scalar` or
//! [`force_kernel`] forces the fallback, for testing), software prefetch of the weights, and
//! rows split over our CPU pool ([`super::pool`]).

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

/// Quantizes `x` (a multiple of 32 long) exactly as ggml's Q8_0/Q8_1 do on x86 (its AVX
/// code, which is what llama.cpp runs here): values times `127 / amax`, rounded to nearest
/// even, the scale `amax / 127` (and the scaled sum) then stored as f16, so our single-row
/// products see the activations candle's and llama.cpp's batched ones see.
pub(crate) fn quantize(x: &[f32]) -> Q8 {
    let nb = x.len() / QK;
    let mut q = Q8 {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(nb),
        sum: Vec::with_capacity(nb),
        s: Vec::with_capacity(nb),
    };
    #[cfg(target_arch = "x86_64")]
    let simd = kernel() != Kernel::Scalar;
    for (b, block) in x.chunks_exact(QK).enumerate() {
        let out = &mut q.qs[b * QK..(b + 1) * QK];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a non-scalar kernel means the CPU has AVX2 (`kernel()`).
        let (d, sum) = if simd {
            unsafe { quantize_block_avx2(block, out) }
        } else {
            quantize_block(block, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (d, sum) = quantize_block(block, out);
        q.d.push(half::f16::from_f32(d).to_f32());
        q.sum.push(sum);
        q.s.push(half::f16::from_f32(d * sum as f32).to_f32());
    }
    q
}

/// One block of 32: the values into `out`, and the scale and sum.
fn quantize_block(block: &[f32], out: &mut [i8]) -> (f32, i32) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (o, v) in out.iter_mut().zip(block) {
        *o = (v * id).round_ties_even() as i8;
        sum += *o as i32;
    }
    (amax / 127.0, sum)
}

/// [`quantize_block`] in AVX2, with the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_avx2(block: &[f32], out: &mut [i8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    assert!(block.len() == QK && out.len() == QK);
    let p = block.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for x in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *x));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    let amax = _mm_cvtss_f32(m4);
    let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
    let r = v.map(|x| {
        _mm256_cvtps_epi32(_mm256_round_ps(
            _mm256_mul_ps(x, id),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        ))
    });
    // i32 -> i16 -> i8 packs interleave 128-bit lanes; the permute restores element order.
    let lo = _mm256_packs_epi32(r[0], r[1]);
    let hi = _mm256_packs_epi32(r[2], r[3]);
    let bytes = _mm256_packs_epi16(lo, hi);
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, bytes);
    let s = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
    let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01));
    (amax / 127.0, _mm_cvtsi128_si32(s4))
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

/// The kernel that runs: the best for this CPU, decided once per process
/// (`MLCLI_CPU_KERNELS=scalar` forces the portable fallback, `MLCLI_CPU_KERNELS=avx2` the
/// AVX2 kernels on AVX-512 machines), unless [`force_kernel`] says otherwise.
pub fn kernel() -> Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    let best = *KERNEL.get_or_init(detect);
    match FORCED.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Kernel::Scalar,
        2 if best != Kernel::Scalar => Kernel::Avx2,
        _ => best,
    }
}

/// 0: no override; 1: scalar; 2: AVX2 (see [`force_kernel`]).
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Makes every later product in this process use `kernel` (a slower one than the CPU allows:
/// `Scalar`, or `Avx2` on an AVX-512 machine), or the best again with `None`. For tests that
/// compare the portable kernels with the fast ones in one process.
pub fn force_kernel(kernel: Option<Kernel>) {
    let v = match kernel {
        None | Some(Kernel::Avx512Vnni) => 0,
        Some(Kernel::Scalar) => 1,
        Some(Kernel::Avx2) => 2,
    };
    FORCED.store(v, std::sync::atomic::Ordering::Relaxed);
}

fn detect() -> Kernel {
    let forced = std::env::var("MLCLI_CPU_KERNELS").ok();
    if forced.as_deref() == Some("scalar") {
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
        if vnni && forced.as_deref() != Some("avx2") {
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

#[cfg(all(test, target_arch = "x86_64"))]
#[test]
fn simd_quantization_equals_the_portable_one() {
    if kernel() == Kernel::Scalar {
        return;
    }
    let mut x = test_values(32 * 64, 9);
    // Ties (x.5 after scaling), zeros and a block of zeros.
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = 1.5;
    x[3] = -2.5;
    for v in &mut x[32..64] {
        *v = 0.0;
    }
    for block in x.chunks_exact(32) {
        let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
        let want = quantize_block(block, &mut a);
        // SAFETY: the CPU has AVX2 (`kernel()` is not scalar).
        let got = unsafe { quantize_block_avx2(block, &mut b) };
        assert_eq!((a, want), (b, got));
    }
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

/// `W · x` with the dequantized weights of `q` (`(n, k)`), in f32: what the kernels'
/// results are checked against.
#[cfg(test)]
pub(crate) fn exact_product(q: &candle_core::quantized::QTensor, x: &[f32]) -> Vec<f32> {
    use candle_core::{Device, Tensor};
    let xt = Tensor::from_vec(x.to_vec(), (x.len(), 1), &Device::Cpu).unwrap();
    q.dequantize(&Device::Cpu)
        .unwrap()
        .matmul(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
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
    let exact = exact_product(&q, &x);
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
