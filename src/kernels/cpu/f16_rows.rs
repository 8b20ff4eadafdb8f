//! f16 → f32 widening of the KV cache's rows (the cache holds f16 on the CPU, as llama.cpp's
//! does), for the attention paths that multiply in f32. Every f16 value is exactly an f32, so
//! each form gives the same bits: portable (the `half` crate), F16C eight lanes at a time, and
//! AVX-512 sixteen at a time, picked at run time like the products ([`super::gemv::kernel`]).

use candle_core::{DType, Storage, Tensor};
use half::f16;

use super::gemv::kernel;
#[cfg(target_arch = "x86_64")]
use super::gemv::Kernel;
use crate::Result;

/// `dst[i] = src[i]` as f32, for slices of one length.
pub fn widen(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen: slices of different lengths");
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the AVX-512 kernel is chosen only on CPUs with AVX-512 F/BW (and F16C).
        Kernel::Avx512Vnni => unsafe { widen_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the AVX2 kernel is chosen only on CPUs with AVX2, FMA and F16C.
        Kernel::Avx2 => unsafe { widen_f16c(src, dst) },
        _ => widen_portable(src, dst),
    }
}

/// [`widen`] in software.
pub(crate) fn widen_portable(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// [`widen`] with F16C, eight values per instruction.
///
/// # Safety
/// The CPU must have F16C and AVX; `src` and `dst` must be equally long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
pub(crate) unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n8 = src.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    widen_portable(&src[n8..], &mut dst[n8..]);
}

/// [`widen`] with AVX-512, sixteen values per instruction.
///
/// # Safety
/// The CPU must have AVX-512 F (and F16C, for the tail); `src` and `dst` must be equally long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx,f16c")]
pub(crate) unsafe fn widen_avx512(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n16 = src.len() / 16 * 16;
    for i in (0..n16).step_by(16) {
        let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
        _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
    }
    widen_f16c(&src[n16..], &mut dst[n16..]);
}

/// `t` (f16, on the CPU, any layout) as a contiguous f32 tensor of the same shape; `None` for
/// anything else.
pub fn widened(t: &Tensor) -> Result<Option<Tensor>> {
    if !t.device().is_cpu() || t.dtype() != DType::F16 {
        return Ok(None);
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let src = &cpu.as_slice::<f16>()?[start..end];
    let mut out = vec![0f32; src.len()];
    widen(src, &mut out);
    Ok(Some(Tensor::from_vec(out, t.shape(), t.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every f16 bit pattern (NaNs included: their bits, not their values, are compared) at
    /// an odd length, so every form also runs its tail.
    fn all_f16() -> Vec<f16> {
        (0..=u16::MAX)
            .map(f16::from_bits)
            .chain([f16::ONE])
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn portable_widening_is_exact() {
        let src = all_f16();
        let mut dst = vec![0f32; src.len()];
        widen_portable(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            if !s.is_nan() {
                assert_eq!(f16::from_f32(*d), *s);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_forms_equal_the_portable_one_bit_for_bit() {
        let src = all_f16();
        let mut want = vec![0f32; src.len()];
        widen_portable(&src, &mut want);
        if is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c") {
            for len in [src.len(), 7, 8, 9, 0] {
                let mut got = vec![0f32; len];
                // SAFETY: checked just above.
                unsafe { widen_f16c(&src[..len], &mut got) };
                assert_eq!(bits(&got), bits(&want[..len]), "f16c, {len}");
            }
        } else {
            eprintln!("skipped F16C: this CPU lacks it");
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c") {
            for len in [src.len(), 15, 16, 17, 31, 0] {
                let mut got = vec![0f32; len];
                // SAFETY: checked just above.
                unsafe { widen_avx512(&src[..len], &mut got) };
                assert_eq!(bits(&got), bits(&want[..len]), "avx512, {len}");
            }
        } else {
            eprintln!("skipped AVX-512: this CPU lacks it");
        }
        // And the dispatched form, whichever this CPU picks.
        let mut got = vec![0f32; src.len()];
        widen(&src, &mut got);
        assert_eq!(bits(&got), bits(&want));
    }

    #[test]
    fn a_strided_f16_view_widens_to_its_values_and_other_tensors_are_declined() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .affine(0.37, -2.0)
            .unwrap()
            .reshape((1, 2, 3, 4))
            .unwrap();
        let h = x.to_dtype(DType::F16).unwrap();
        let view = h.narrow(2, 1, 2).unwrap();
        let got = widened(&view).unwrap().expect("an f16 CPU tensor");
        assert_eq!(got.dims(), &[1, 2, 2, 4]);
        let want = view.to_dtype(DType::F32).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&flat(&got)), bits(&flat(&want)));
        assert!(widened(&x).unwrap().is_none());
    }
}
