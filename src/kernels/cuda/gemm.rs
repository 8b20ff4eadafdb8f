//! Long prompts' products through cuBLAS: each quantized weight matrix is unpacked to bf16 and
//! multiplied with the prompt's bf16 activations on the tensor cores, in f32.
//!
//! The int8 tiles (`mmq`) scale every 32-value product in f32 and reload the packed weights for
//! each 64 tokens (about 40 int8 TOPS on an H100); past [`MIN_TOKENS`] tokens, unpacking a
//! matrix once and handing it to cuBLAS's bf16 products is faster (Qwen3 8B Q4_K_M pp512 on
//! an H100: 3,132 → 16,660 t/s, docs/cuda.md). The values multiplied are the tiles' own (the
//! weights' `a·q + b`, the q8 activations' `d·q`), each rounded once to bf16; `cuda_parity`
//! holds the result to the CPU build as it holds the tiles'. `MLCLI_CUDA_GEMM=0` switches it
//! off.

use std::ffi::c_void;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cublas::{result, sys, CudaBlas};
use candle_core::cuda_backend::cudarc::driver::CudaStream;

use super::kernels::{Kernels, Mat, Ptr};
use super::{zeros, DevBuf};
use crate::{Error, Result};

/// Prompts of at least this many tokens take cuBLAS; shorter ones the int8 tiles.
pub const MIN_TOKENS: usize = 128;

/// A cuBLAS handle on the decoder's stream with bf16 scratch for one unpacked matrix and one
/// prompt's activations.
pub struct Gemm {
    blas: CudaBlas,
    w: DevBuf<u16>,
    x: DevBuf<u16>,
    /// Values `w` and `x` hold.
    room: (usize, usize),
}

fn blas_err(what: &str) -> impl Fn(result::CublasError) -> Error + '_ {
    move |e| Error::Device(format!("cuBLAS {what}: {e:?}"))
}

impl Gemm {
    /// Scratch for matrices of up to `weights` values and inputs of up to `inputs` values.
    pub fn new(stream: &Arc<CudaStream>, weights: usize, inputs: usize) -> Result<Self> {
        let blas = CudaBlas::new(stream.clone()).map_err(blas_err("creating a handle"))?;
        Ok(Self {
            blas,
            w: DevBuf::new(zeros(stream, weights)?, stream),
            x: DevBuf::new(zeros(stream, inputs)?, stream),
            room: (weights, inputs),
        })
    }

    /// `y_m = W_m · x` for `n` tokens of the q8 input `xq` (`k` wide), each output `(n, rows)`
    /// f32; `add0` (0 for none) must be the first output, which is then added to in place.
    pub fn products(
        &self,
        kern: &Kernels,
        mats: &[(Mat, Ptr)],
        add0: Ptr,
        xq: Ptr,
        k: usize,
        n: usize,
    ) -> Result<()> {
        if add0 != 0 && mats.first().is_none_or(|m| m.1 != add0) {
            return Err(Error::Internal(
                "cuBLAS products add only into their own first output".into(),
            ));
        }
        let too_big = mats.iter().any(|(m, _)| m.rows * k > self.room.0);
        if too_big || n * k > self.room.1 {
            return Err(Error::Internal(format!(
                "cuBLAS products of {n} × {k} past the scratch sized at load"
            )));
        }
        kern.q8_bf16(xq, n * k / 32, self.x.ptr)?;
        for (i, &(m, out)) in mats.iter().enumerate() {
            kern.unpack_bf16(m, k, self.w.ptr)?;
            let (alpha, beta) = (1.0f32, if i == 0 && add0 != 0 { 1.0f32 } else { 0.0 });
            // Column-major: C (rows × n) = Wᵀ (the row-major (rows, k) matrix read as k × rows,
            // transposed) · X (the row-major (n, k) input read as k × n).
            // SAFETY: `w` holds `rows · k` and `x` `n · k` bf16 values (sized at `new` for the
            // largest), `out` holds `n · rows` f32; all on the handle's stream.
            unsafe {
                result::gemm_ex(
                    *self.blas.handle(),
                    sys::cublasOperation_t::CUBLAS_OP_T,
                    sys::cublasOperation_t::CUBLAS_OP_N,
                    m.rows as i32,
                    n as i32,
                    k as i32,
                    (&alpha as *const f32).cast::<c_void>(),
                    self.w.ptr as *const c_void,
                    sys::cudaDataType::CUDA_R_16BF,
                    k as i32,
                    self.x.ptr as *const c_void,
                    sys::cudaDataType::CUDA_R_16BF,
                    k as i32,
                    (&beta as *const f32).cast::<c_void>(),
                    out as *mut c_void,
                    sys::cudaDataType::CUDA_R_32F,
                    m.rows as i32,
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(blas_err("bf16 GEMM"))?;
        }
        Ok(())
    }
}
