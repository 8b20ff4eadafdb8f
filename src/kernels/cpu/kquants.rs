//! Matrix-vector products for k-quant weights (Q2_K…Q6_K) on the CPU: candle's per-row dot
//! products (AVX2 where the CPU has it), with the activations quantized once to Q8_K and the
//! rows run on our pool ([`super::pool`]). candle runs these on its own barrier pool, whose
//! workers would spin beside ours (Gemma 3 decoding lost 30% to that) and which stalls when
//! another process takes a core.

use candle_core::quantized::k_quants::{BlockQ2K, BlockQ3K, BlockQ5K, GgmlType};
use candle_core::quantized::GgmlDType;

/// `out[b·n + i] = W[i] · x_b` for `weights` holding `n` rows of `k` values of a k-quant
/// `dtype` and `x` holding `m ≥ 1` rows of activations; `None` when `dtype` is not one, or
/// the bytes do not hold such rows.
pub fn gemv(
    dtype: GgmlDType,
    weights: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
) -> Option<()> {
    match dtype {
        GgmlDType::Q2K => gemv_as::<BlockQ2K>(weights, n, k, x, out),
        GgmlDType::Q3K => gemv_as::<BlockQ3K>(weights, n, k, x, out),
        // Ours, rounded as llama.cpp rounds them (see `kdots`).
        GgmlDType::Q4K => super::kdots::gemv(false, weights, n, k, x, out),
        GgmlDType::Q5K => gemv_as::<BlockQ5K>(weights, n, k, x, out),
        GgmlDType::Q6K => super::kdots::gemv(true, weights, n, k, x, out),
        _ => None,
    }
}

fn gemv_as<T: GgmlType>(
    weights: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
) -> Option<()> {
    let block = T::BLCK_SIZE;
    let dot_block = T::VecDotType::BLCK_SIZE;
    if k == 0 || !k.is_multiple_of(block) || !k.is_multiple_of(dot_block) {
        return None;
    }
    let m = x.len() / k;
    if m == 0 || x.len() != m * k || out.len() != m * n {
        return None;
    }
    let per_row = k / block;
    let size = std::mem::size_of::<T>();
    if weights.len() < n * per_row * size
        || !(weights.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return None;
    }
    // SAFETY: k-quant blocks are `repr(C)` structs of integers and f16 values, valid for any
    // bytes; the length and the alignment were checked above.
    let blocks: &[T] =
        unsafe { std::slice::from_raw_parts(weights.as_ptr() as *const T, n * per_row) };
    let xqs: Vec<Vec<T::VecDotType>> = x
        .chunks_exact(k)
        .map(|x| {
            let mut xq = vec![T::VecDotType::zeros(); k / dot_block];
            T::VecDotType::from_float(x, &mut xq);
            xq
        })
        .collect();
    super::gemv::par_rows(n, out, |i, b| {
        T::vec_dot(k, &blocks[i * per_row..(i + 1) * per_row], &xqs[b])
    });
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    #[test]
    fn products_match_the_dequantized_weights() {
        let (n, k) = (40, 512);
        let w = super::super::gemv::test_values(n * k, 3);
        let x = super::super::gemv::test_values(k, 4);
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let exact = super::super::gemv::exact_product(&q, &x);
            let mut out = vec![0f32; n];
            gemv(dtype, &q.data().unwrap(), n, k, &x, &mut out).unwrap();
            for (o, e) in out.iter().zip(&exact) {
                assert!(
                    (o - e).abs() < 0.05 * (1.0 + e.abs()),
                    "{dtype:?}: {o} vs {e}"
                );
            }
        }
        let mut out = vec![0f32; n];
        assert!(gemv(GgmlDType::Q8_0, &[], n, k, &x, &mut out).is_none());
    }
}
