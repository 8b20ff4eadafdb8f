//! Borrowing the f32 data of contiguous CPU tensors, for the kernels that work on slices (no
//! copy, unlike `to_vec1`), and the small element-wise sums models need between products.

use candle_core::{DType, Storage, Tensor};

use crate::Result;

/// Calls `f` with the elements of `t` when it is a contiguous f32 tensor on the CPU; `None`
/// (without calling `f`) otherwise.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    Ok(Some(f(&cpu.as_slice::<f32>()?[start..end])))
}

/// `a + b` for two tensors of one shape: on the calling thread for contiguous f32 CPU tensors
/// (a residual or an expert sum: candle's CPU add splits even these over its own barrier pool,
/// which stalls whenever another process holds a core), candle's add otherwise. The same
/// numbers either way.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() == b.dims() {
        let sum = with_f32(a, |x| {
            with_f32(b, |y| {
                x.iter().zip(y).map(|(x, y)| x + y).collect::<Vec<f32>>()
            })
        })?;
        if let Some(Some(sum)) = sum.transpose()? {
            return Ok(Tensor::from_vec(sum, a.shape(), a.device())?);
        }
    }
    Ok((a + b)?)
}

/// A vector of `len` elements, every one of which `fill` writes (through the pointer it is
/// given) before the vector is returned; no time is spent zeroing it first.
///
/// # Safety
/// `fill` must write all `len` elements, and only those.
pub unsafe fn filled(len: usize, fill: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(v.as_mut_ptr());
    // SAFETY: the caller promises every element was written.
    unsafe { v.set_len(len) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn contiguous_f32_is_borrowed_and_anything_else_declined() {
        let t = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let sum = with_f32(&t.narrow(0, 1, 1).unwrap(), |s| s.iter().sum::<f32>()).unwrap();
        assert_eq!(sum, Some(3.0 + 4.0 + 5.0));
        assert!(with_f32(&t.t().unwrap(), |s| s.len()).unwrap().is_none());
        let ints = t.to_dtype(DType::U32).unwrap();
        assert!(with_f32(&ints, |s| s.len()).unwrap().is_none());
    }

    #[test]
    fn add_equals_candles_add_for_every_layout() {
        let a = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let b = (a.clone() * 0.37).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Host sum, a transposed (candle's) operand, and a broadcast one.
        assert_eq!(flat(&add(&a, &b).unwrap()), flat(&(&a + &b).unwrap()));
        let (at, bt) = (a.t().unwrap(), b.t().unwrap());
        assert_eq!(flat(&add(&at, &bt).unwrap()), flat(&(&at + &bt).unwrap()));
        assert!(add(&a, &b.narrow(0, 0, 1).unwrap()).is_err());
        assert_eq!(add(&a, &b).unwrap().dims(), &[2, 3]);
    }
}
