//! A linear layer over candle's `QMatMul`, which covers dense and quantized weights alike, or
//! over MXFP4, IQ4_NL or IQ4_XS blocks or FP8 block-scaled bytes, which our own kernels
//! compute ([`crate::kernels::cpu::mxfp4`], [`crate::kernels::cpu::iq4_nl`],
//! [`crate::kernels::cpu::iq4_xs`], [`crate::kernels::cpu::fp8`]).

use std::sync::{Arc, Mutex};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use crate::kernels::cpu::pool::Pool;
use crate::kernels::cpu::repacked::{Format as RepackFormat, Repacked};
use crate::kernels::cpu::{
    fp8, gemm_q8, gemv, host, iq4_nl, iq4_xs, kquants, mxfp4, q4_1, q5_0, q8_0,
};

use crate::formats::blocks::{BlockType, Blocks};
use crate::formats::fp8::Fp8;
use crate::formats::weights::{Matrix, Vb};
use crate::{Error, Result};

/// `y = x W^T (+ b)`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
}

/// From this many rows on, our int8 tiles ([`gemm_q8`]) multiply where the CPU has them.
const DENSE_MIN_ROWS: usize = 2;

/// Up to this many rows (a few sequences decoding together, a short prompt) go through the
/// single-row kernels, each weight row read once for all of them: below it the tiles' unpacking
/// costs more than it saves. Without the tiles (no AVX-512 VNNI), more rows go through the
/// same kernels [`CHUNK_ROWS`] at a time (AVX2, or the portable forms on other CPUs, ARM
/// included), so every product is the one a single row gets: a prompt fed in chunks, or
/// sequences decoding together, get the bits each row gets alone.
const FEW_ROWS: usize = 8;

impl Linear {
    /// Loads `{vb}.weight` shaped `(out, in)` and `{vb}.bias` when `bias` is true.
    pub fn load(vb: &Vb, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let mut weight = vb.matmul("weight", &[out_dim, in_dim])?;
        if vb.device().is_cpu() && !vb.check_only() {
            if let Some(packed) = repacked(&weight)? {
                weight = Matrix::Repacked(Arc::new(packed));
                // The stored rows are not read again: their pages leave the resident set.
                vb.forget("weight");
            }
        }
        let bias = if bias {
            Some(vb.tensor("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Loads `{vb}.weight` shaped `(out, in)` as f32 whatever it is stored as and whatever
    /// in-situ quantization was asked for: for the few-row projections whose outputs pick
    /// experts or set rates (routers, gates), which llama.cpp keeps unquantized too.
    pub fn load_f32(vb: &Vb, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = QMatMul::Tensor(vb.tensor("weight", &[out_dim, in_dim])?);
        Ok(Self::from_matmul(weight))
    }

    /// A layer over an already loaded weight (e.g. a tied embedding table).
    pub fn from_qtensor(weight: Arc<QTensor>) -> Result<Self> {
        Ok(Self::from_matmul(QMatMul::from_arc(weight)?))
    }

    /// A layer over a ready weight without bias (e.g. one expert split from a stacked tensor).
    pub fn from_matmul(weight: QMatMul) -> Self {
        Self::from_matrix(Matrix::Candle(weight))
    }

    /// A layer over a ready weight of any kind, without bias.
    pub fn from_matrix(weight: Matrix) -> Self {
        Self { weight, bias: None }
    }

    /// The layer with `bias` (`(out,)`, f32) added to its output.
    pub fn with_bias(self, bias: Tensor) -> Self {
        Self {
            bias: Some(bias),
            ..self
        }
    }

    /// The quantized weight of a layer without bias (what the fused GPU decoder runs), if so.
    pub fn quantized(&self) -> Option<&Arc<QTensor>> {
        match (&self.weight, &self.bias) {
            (Matrix::Candle(QMatMul::QTensor(w)), None) => Some(w),
            _ => None,
        }
    }

    /// The unquantized weight of a layer without bias (a router kept in f32), if so.
    pub fn dense(&self) -> Option<&Tensor> {
        match (&self.weight, &self.bias) {
            (Matrix::Candle(QMatMul::Tensor(w)), None) => Some(w),
            _ => None,
        }
    }

    /// The weight's `(out, in)`.
    pub fn dims(&self) -> Vec<usize> {
        self.weight.dims()
    }

    /// One layer computing `parts` side by side (their output rows stacked in order), when
    /// they share an input width, a weight type and bias-or-not; `None` otherwise. Each output
    /// row is computed as its part computes it, so results are the same bit for bit, with one
    /// product (one pass over the input, one dispatch or kernel launch) instead of several.
    pub fn stack(parts: &[&Linear]) -> Result<Option<Linear>> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let has_bias = first.bias.is_some();
        if parts.iter().any(|p| p.bias.is_some() != has_bias) {
            return Ok(None);
        }
        // Weights of our own kinds: every part of the kind, stacked by the kind's own rule
        // (`None`: kept apart).
        macro_rules! stacked {
            ($kind:ident, $stack:expr, $wrap:expr) => {{
                let ms = all_of(parts, |w| match w {
                    Matrix::$kind(m) => Some(&**m),
                    _ => None,
                });
                match ms.and_then(|ms| $stack(&ms)) {
                    Some(m) => $wrap(m),
                    None => return Ok(None),
                }
            }};
        }
        let weight = match &first.weight {
            Matrix::Repacked(_) => {
                stacked!(Repacked, Repacked::stack, |m| Matrix::Repacked(Arc::new(m)))
            }
            // FP8: a block of scales straddling two parts keeps them apart.
            Matrix::Fp8(_) => stacked!(Fp8, Fp8::stack_rows, |m| Matrix::Fp8(Box::new(m))),
            Matrix::Blocks(_) => stacked!(Blocks, Blocks::stack_rows, Matrix::blocks),
            Matrix::Candle(QMatMul::QTensor(w0)) => {
                let (dtype, dev) = (w0.dtype(), w0.device());
                let k = w0.shape().dims2()?.1;
                let mut bytes = Vec::new();
                let mut rows = 0;
                for p in parts {
                    let Matrix::Candle(QMatMul::QTensor(w)) = &p.weight else {
                        return Ok(None);
                    };
                    let (n, kk) = w.shape().dims2()?;
                    if w.dtype() != dtype || kk != k {
                        return Ok(None);
                    }
                    bytes.extend_from_slice(&w.data()?);
                    rows += n;
                }
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(bytes),
                    &dev,
                    dtype,
                )?;
                Matrix::Candle(QMatMul::from_arc(Arc::new(QTensor::new(
                    storage,
                    (rows, k),
                )?))?)
            }
            Matrix::Candle(first_weight @ (QMatMul::Tensor(_) | QMatMul::TensorF16(_))) => {
                let mut ws = Vec::with_capacity(parts.len());
                for p in parts {
                    match (first_weight, &p.weight) {
                        (QMatMul::Tensor(_), Matrix::Candle(QMatMul::Tensor(w)))
                        | (QMatMul::TensorF16(_), Matrix::Candle(QMatMul::TensorF16(w))) => {
                            ws.push(w.clone())
                        }
                        _ => return Ok(None),
                    }
                }
                if ws
                    .iter()
                    .any(|w| w.dtype() != ws[0].dtype() || w.dim(1).ok() != ws[0].dim(1).ok())
                {
                    return Ok(None);
                }
                let w = Tensor::cat(&ws, 0)?;
                Matrix::Candle(match first_weight {
                    QMatMul::TensorF16(_) => QMatMul::TensorF16(w),
                    _ => QMatMul::Tensor(w),
                })
            }
        };
        let bias = if has_bias {
            let bs: Vec<Tensor> = parts.iter().filter_map(|p| p.bias.clone()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Some(Linear { weight, bias }))
    }

    /// Applies the layer to `(..., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = match &self.weight {
            Matrix::Candle(w) => w,
            Matrix::Blocks(m) => return self.add_bias(blocks_forward(m, x)?),
            Matrix::Fp8(m) => return self.add_bias(fp8_forward(m, x)?),
            Matrix::Repacked(m) => return self.add_bias(repacked_forward(m, x)?),
        };
        let y = match self.vector_via_own_kernel(weight, x)? {
            Some(y) => y,
            None => match self.batched(weight, x)? {
                Some(y) => y,
                None => match weight {
                    // Dense weights kept in f16/bf16 (`--dtype`): compute in their dtype.
                    QMatMul::Tensor(w) if w.dtype() != x.dtype() => weight
                        .forward(&x.to_dtype(w.dtype())?)?
                        .to_dtype(x.dtype())?,
                    _ => weight.forward(x)?,
                },
            },
        };
        self.add_bias(y)
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// The batched (prefill) path on the CPU: our int8 tiles for Q4_1, Q5_0, Q8_0, Q4_K and
    /// Q6_K where the CPU has AVX-512 VNNI ([`gemm_q8`]), else our single-row kernels in
    /// chunks for every type they read ([`rows_in_chunks`]), else the dequantized f32 GEMM
    /// for the types candle has no SIMD kernel for (candle's own kernels for the rest).
    fn batched(&self, weight: &QMatMul, x: &Tensor) -> Result<Option<Tensor>> {
        let QMatMul::QTensor(w) = weight else {
            return Ok(None);
        };
        let (n, k) = w.shape().dims2()?;
        let rows = x.elem_count() / k.max(1);
        let out_shape = out_shape(x, n);
        if rows >= DENSE_MIN_ROWS && x.device().is_cpu() && gemm_q8::available() {
            let data = w.data()?;
            let product = |input: &[f32]| gemm_q8::gemm(w.dtype(), &data, n, k, input);
            if let Some(y) = rows_product_tensor(x, &out_shape, product)? {
                return Ok(Some(y));
            }
        }
        if rows > FEW_ROWS && x.device().is_cpu() && own_rows_kernel(w.dtype()).is_some() {
            let data = w.data()?;
            let product = |input: &[f32]| {
                let mut out = vec![0f32; input.len() / k * n];
                rows_in_chunks(w.dtype(), &data, (n, k), input, &mut out).then_some(out)
            };
            if let Some(y) = rows_product_tensor(x, &out_shape, product)? {
                return Ok(Some(y));
            }
        }
        let has_fast_kernel =
            matches!(w.dtype(), GgmlDType::Q4K | GgmlDType::Q6K | GgmlDType::Q8_0);
        if rows <= FEW_ROWS || !x.device().is_cpu() || has_fast_kernel {
            return Ok(None);
        }
        let dense = w.dequantize(x.device())?;
        let y = x.reshape((rows, k))?.matmul(&dense.t()?)?;
        Ok(Some(y.reshape(out_shape)?))
    }

    /// Single rows (and up to [`FEW_ROWS`]: several sequences decoding together) against CPU
    /// quantized weights go through our kernels (Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) or candle's
    /// k-quant dot products on our pool ([`kquants`]).
    fn vector_via_own_kernel(&self, weight: &QMatMul, x: &Tensor) -> Result<Option<Tensor>> {
        let QMatMul::QTensor(w) = weight else {
            return Ok(None);
        };
        let (n, k) = w.shape().dims2()?;
        let rows = x.elem_count() / k.max(1);
        if !x.device().is_cpu() || rows * k != x.elem_count() || !(1..=FEW_ROWS).contains(&rows) {
            return Ok(None);
        }
        if own_rows_kernel(w.dtype()).is_none() {
            return Ok(None);
        }
        let input: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let mut out = vec![0f32; rows * n];
        if !quantized_rows(w, &input, &mut out)? {
            return Ok(None);
        }
        Ok(Some(
            Tensor::from_vec(out, out_shape(x, n), x.device())?.to_dtype(x.dtype())?,
        ))
    }

    /// True when weights of `dtype` have a single-row kernel ([`Linear::rows_into`]).
    pub fn has_rows_kernel(dtype: GgmlDType) -> bool {
        own_rows_kernel(dtype).is_some()
    }

    /// True when [`Linear::rows_into`] computes this layer's products: a CPU weight our
    /// single-row kernels read, and no bias.
    pub fn takes_rows(&self) -> bool {
        match (&self.weight, &self.bias) {
            (Matrix::Candle(QMatMul::QTensor(w)), None) => {
                w.device().is_cpu() && own_rows_kernel(w.dtype()).is_some()
            }
            (Matrix::Repacked(_), None) => true,
            _ => false,
        }
    }

    /// True when `rows` activation rows are few enough for [`Linear::rows_into`].
    pub fn rows_fit(rows: usize) -> bool {
        (1..=FEW_ROWS).contains(&rows)
    }

    /// `out = x W^T` on slices, for up to [`FEW_ROWS`] rows of `x` (`rows × in`, `out` holding
    /// `rows × out`) against a CPU weight our single-row kernels read (Q4_1, Q5_0, Q8_0, and
    /// the k-quants): the numbers [`Linear::forward`] gives, without tensors around them, for
    /// callers that run many small products in one pool submission (each product then runs
    /// on the calling thread). `false`, with `out` untouched, for any other weight or shape.
    pub fn rows_into(&self, x: &[f32], out: &mut [f32]) -> Result<bool> {
        match (&self.weight, &self.bias) {
            (Matrix::Candle(QMatMul::QTensor(w)), None) => quantized_rows(w, x, out),
            (Matrix::Repacked(w), None) => {
                if !few_rows_fit(w.dims2(), x, out) {
                    return Ok(false);
                }
                w.products(x, out, gemv::kernel());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// One product for [`rows_on_threads`]: the layer, its input rows, its output.
pub type RowsJob<'a> = (&'a Linear, &'a [f32], Mutex<&'a mut [f32]>);

/// Each job's [`Linear::rows_into`] whole on one thread, all in one pool submission (many small
/// products: a decode step's heads or experts); false when a layer declined its product.
pub fn rows_on_threads(jobs: &[RowsJob<'_>]) -> Result<bool> {
    let outcome: Mutex<Result<bool>> = Mutex::new(Ok(true));
    Pool::global().run(jobs.len(), |range| {
        for (l, x, out) in &jobs[range] {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let r = l.rows_into(x, &mut out);
            if !matches!(r, Ok(true)) {
                *outcome.lock().unwrap_or_else(|p| p.into_inner()) = r;
            }
        }
    });
    outcome.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// `weight` repacked for our CPU kernels, where that pays: Q4_K rows in groups of sixteen
/// ([`Repacked`]) on CPUs with AVX2 or AVX-512 VNNI (their kernels need less than half the
/// instructions per weight byte of the stored rows' ones). `MLCLI_REPACK=0` keeps the stored
/// rows.
fn repacked(weight: &Matrix) -> Result<Option<Repacked>> {
    let Matrix::Candle(QMatMul::QTensor(w)) = weight else {
        return Ok(None);
    };
    let Some(format) = RepackFormat::of(w.dtype()) else {
        return Ok(None);
    };
    if !w.device().is_cpu()
        || gemv::kernel() == gemv::Kernel::Scalar
        || std::env::var("MLCLI_REPACK").is_ok_and(|v| v == "0")
    {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    Ok(Repacked::pack(format, &w.data()?, n, k))
}

/// `x W^T` for a repacked `W` ([`Repacked`]), on the CPU: our tiles for prompts where the CPU
/// has them, the single-row kernels for the rest.
fn repacked_forward(w: &Repacked, x: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2();
    let rows = x.elem_count() / k.max(1);
    if rows > FEW_ROWS && gemm_q8::available() {
        let product = |input: &[f32]| gemm_q8::gemm_repacked(w, input);
        if let Some(y) = rows_product_tensor(x, &out_shape(x, n), product)? {
            return Ok(y);
        }
    }
    own_kernel_forward(x, (n, k), w.format().name(), |input, out| {
        w.products(input, out, gemv::kernel())
    })
}

/// The weights of `parts` as `kind` sees them, when it sees every one (weights of one kind,
/// for [`Linear::stack`]).
fn all_of<'a, T>(
    parts: &[&'a Linear],
    kind: impl Fn(&'a Matrix) -> Option<&'a T>,
) -> Option<Vec<&'a T>> {
    parts.iter().map(|p| kind(&p.weight)).collect()
}

/// Whether `x` holds 1 to [`FEW_ROWS`] whole rows for a `(n, k)` weight and `out` their
/// products ([`Linear::rows_into`]).
fn few_rows_fit((n, k): (usize, usize), x: &[f32], out: &[f32]) -> bool {
    let rows = x.len() / k.max(1);
    rows * k == x.len() && out.len() == rows * n && (1..=FEW_ROWS).contains(&rows)
}

/// [`Linear::rows_into`] for the quantized weight `w`.
fn quantized_rows(w: &QTensor, x: &[f32], out: &mut [f32]) -> Result<bool> {
    if !w.device().is_cpu() {
        return Ok(false);
    }
    let (n, k) = w.shape().dims2()?;
    if !few_rows_fit((n, k), x, out) {
        return Ok(false);
    }
    Ok(rows_product(w.dtype(), &w.data()?, (n, k), x, out))
}

/// `product` of `x`'s values in f32 (read in place where they already are) as a tensor of
/// `out_shape` in `x`'s dtype, or `None` when `product` declines.
fn rows_product_tensor(
    x: &Tensor,
    out_shape: &[usize],
    product: impl Fn(&[f32]) -> Option<Vec<f32>>,
) -> Result<Option<Tensor>> {
    let out = match host::with_f32(x, &product)? {
        Some(out) => out,
        None => product(&x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?),
    };
    out.map(|out| -> Result<Tensor> {
        let y = Tensor::from_vec(out, out_shape.to_vec(), x.device())?;
        Ok(y.to_dtype(x.dtype())?)
    })
    .transpose()
}

/// Activation rows per call of the single-row kernels in [`rows_in_chunks`]: their quantized
/// activations (about `k` bytes each) stay in L2 while every weight row passes over them.
const CHUNK_ROWS: usize = 32;

/// [`rows_product`] for any number of activation rows, [`CHUNK_ROWS`] at a time: where the
/// CPU has no int8 tiles ([`gemm_q8`]), prompts get the numbers single rows get, bit for bit,
/// so a prompt's last token, a cached prefix's continuation and a lone decode step agree.
fn rows_in_chunks(
    dtype: GgmlDType,
    data: &[u8],
    (n, k): (usize, usize),
    x: &[f32],
    out: &mut [f32],
) -> bool {
    in_chunks((n, k), x, out, |x, out| {
        rows_product(dtype, data, (n, k), x, out)
    })
}

/// `product` of each [`CHUNK_ROWS`] rows of `x` (`k` wide) into their `n`-wide rows of `out`,
/// in order; `false` as soon as one declines.
fn in_chunks(
    (n, k): (usize, usize),
    x: &[f32],
    out: &mut [f32],
    mut product: impl FnMut(&[f32], &mut [f32]) -> bool,
) -> bool {
    x.chunks(CHUNK_ROWS * k)
        .zip(out.chunks_mut(CHUNK_ROWS * n))
        .all(|(x, out)| product(x, out))
}

/// `out = x W^T` by our single-row kernels for `W` of `dtype` (`data`, `n × k`), each product
/// the single-row one; `false` when no such kernel reads `dtype`.
fn rows_product(
    dtype: GgmlDType,
    data: &[u8],
    (n, k): (usize, usize),
    x: &[f32],
    out: &mut [f32],
) -> bool {
    match own_rows_kernel(dtype) {
        Some(Some(gemv)) => {
            gemv(data, n, k, x, out, gemv::kernel());
            true
        }
        Some(None) => kquants::gemv(dtype, data, n, k, x, out).is_some(),
        None => false,
    }
}

/// A product of our single-row kernels: `(weights, n, k, x, out, kernel)`.
type RowsKernel = fn(&[u8], usize, usize, &[f32], &mut [f32], gemv::Kernel);

/// The single-row kernel for `dtype`: `Some(Some(_))` ours, `Some(None)` the k-quants
/// ([`kquants::gemv`]), `None` neither.
fn own_rows_kernel(dtype: GgmlDType) -> Option<Option<RowsKernel>> {
    match dtype {
        GgmlDType::Q4_1 => Some(Some(q4_1::gemv as RowsKernel)),
        GgmlDType::Q5_0 => Some(Some(q5_0::gemv as RowsKernel)),
        GgmlDType::Q8_0 => Some(Some(q8_0::gemv as RowsKernel)),
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => {
            Some(None)
        }
        _ => None,
    }
}

/// `x W^T` for `W` (`(n, k)`) of one of our block types on the CPU: every row of `x`
/// (`(..., k)`) against every row of `W`, in f32. IQ4 rows go through their single-row
/// kernels [`CHUNK_ROWS`] activation rows at a time, so every product is the one-row one.
fn blocks_forward(w: &Blocks, x: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2();
    let ty = w.block_type();
    own_kernel_forward(x, (n, k), ty.name(), |input, out| {
        let kernel = gemv::kernel();
        let rows: RowsKernel = match ty {
            BlockType::Mxfp4 => return mxfp4::matmul(w.data(), n, k, input, out, kernel),
            BlockType::Iq4Nl => iq4_nl::gemv,
            BlockType::Iq4Xs => iq4_xs::gemv,
        };
        in_chunks((n, k), input, out, |x, out| {
            rows(w.data(), n, k, x, out, kernel);
            true
        });
    })
}

/// `x W^T` for FP8 `W` (`(n, k)`) on the CPU, in f32, as [`mxfp4_forward`].
fn fp8_forward(w: &Fp8, x: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2();
    own_kernel_forward(x, (n, k), "FP8", |input, out| {
        fp8::matmul(w, input, out, gemv::kernel())
    })
}

/// `x W^T` for a `(n, k)` weight of a type only our CPU kernels read (`ty`, for the error):
/// `product(input, out)` over the rows of `x` in f32, read in place where they already are.
fn own_kernel_forward(
    x: &Tensor,
    (n, k): (usize, usize),
    ty: &str,
    product: impl Fn(&[f32], &mut [f32]),
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Err(Error::UnsupportedTensorType {
            tensor: format!("an {ty} weight of {n} × {k}"),
            found: format!("{ty} on {:?}", x.device()),
            supported: format!("{ty} on the CPU"),
        });
    }
    let rows = x.elem_count() / k.max(1);
    let mut out = vec![0f32; rows * n];
    if host::with_f32(x, |input| product(input, &mut out))?.is_none() {
        let input: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        product(&input, &mut out);
    }
    Ok(Tensor::from_vec(out, out_shape(x, n), x.device())?.to_dtype(x.dtype())?)
}

/// `x`'s shape with its last dimension (the input width) replaced by `n` outputs.
fn out_shape(x: &Tensor, n: usize) -> Vec<usize> {
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quantized(rows: usize, k: usize, seed: u32, dtype: GgmlDType) -> Linear {
        let w = gemv::test_values(rows * k, seed);
        let w = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        Linear::from_qtensor(Arc::new(QTensor::quantize(&w, dtype).unwrap())).unwrap()
    }

    #[test]
    fn stacked_layers_give_each_parts_numbers_bit_for_bit() {
        let k = 256;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4K] {
            let parts = [
                quantized(12, k, 1, dtype),
                quantized(4, k, 2, dtype),
                quantized(4, k, 3, dtype),
            ];
            let stacked = Linear::stack(&[&parts[0], &parts[1], &parts[2]])
                .unwrap()
                .expect("same type and width");
            // One token (the single-row kernels) and five (the batched path).
            for m in [1, 5] {
                let x =
                    Tensor::from_vec(gemv::test_values(m * k, 9), (1, m, k), &Device::Cpu).unwrap();
                let got: Vec<f32> = stacked
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want: Vec<Tensor> = parts.iter().map(|p| p.forward(&x).unwrap()).collect();
                let want: Vec<f32> = Tensor::cat(&want, 2)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(got, want, "{dtype:?}, {m} rows");
            }
        }
    }

    /// A prompt's rows get the products each row gets alone (a lone decode step, the rest of
    /// a cached prompt), bit for bit: through the int8 tiles (AVX-512 VNNI) and through the
    /// one-row kernels in chunks (AVX2), across more than one chunk.
    #[test]
    fn prompt_rows_get_the_single_row_products_bit_for_bit() {
        let (k, m) = (256, 2 * CHUNK_ROWS + 5);
        let forms: &[Option<gemv::Kernel>] = match gemv::kernel() {
            gemv::Kernel::Scalar => {
                eprintln!("skipped: the portable path multiplies prompts in f32");
                return;
            }
            _ => &[None, Some(gemv::Kernel::Avx2)],
        };
        let x = gemv::test_values(m * k, 5);
        let types = [
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ];
        for (dtype, &form) in types.iter().flat_map(|d| forms.iter().map(move |f| (d, f))) {
            let layer = quantized(24, k, 3, *dtype);
            let bits = |rows: usize, x: &[f32]| -> Vec<u32> {
                let x = Tensor::from_vec(x.to_vec(), (1, rows, k), &Device::Cpu).unwrap();
                let y = layer.forward(&x).unwrap().flatten_all().unwrap();
                y.to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            gemv::force_kernel(form);
            let together = bits(m, &x);
            let alone: Vec<u32> = x.chunks(k).flat_map(|row| bits(1, row)).collect();
            gemv::force_kernel(None);
            assert_eq!(together, alone, "{dtype:?}, {form:?}");
        }
    }

    fn mxfp4(rows: usize, k: usize, seed: u32) -> Linear {
        let w = Blocks::quantize(
            BlockType::Mxfp4,
            &gemv::test_values(rows * k, seed),
            vec![rows, k],
        )
        .unwrap();
        Linear::from_matrix(Matrix::blocks(w))
    }

    #[test]
    fn mxfp4_layers_stack_and_give_their_dequantized_products() {
        let k = 96;
        let parts = [mxfp4(5, k, 1), mxfp4(3, k, 2)];
        let stacked = Linear::stack(&[&parts[0], &parts[1]])
            .unwrap()
            .expect("same width");
        for m in [1, 4] {
            let x = Tensor::from_vec(gemv::test_values(m * k, 9), (1, m, k), &Device::Cpu).unwrap();
            let got = stacked.forward(&x).unwrap();
            let want: Vec<Tensor> = parts.iter().map(|p| p.forward(&x).unwrap()).collect();
            let want = Tensor::cat(&want, 2).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&got), flat(&want), "{m} rows");
            // Against the dequantized weights in f32.
            let Matrix::Blocks(w) = &stacked.weight else {
                panic!("not MXFP4")
            };
            let values = w.dequantize();
            let dense = Tensor::from_vec(values.clone(), (8, k), &Device::Cpu).unwrap();
            let exact = flat(&x.broadcast_matmul(&dense.t().unwrap()).unwrap());
            // The kernel rounds the activations to 16 bits per block of 32, each by at most
            // max|x| / 65534.
            let amax = flat(&x).iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in flat(&got).iter().zip(&exact).enumerate() {
                let row = &values[i % 8 * k..(i % 8 + 1) * k];
                let moved = row.iter().map(|v| v.abs()).sum::<f32>() * amax / 65534.0;
                assert!(
                    (a - b).abs() <= moved + 1e-5 * (1.0 + b.abs()),
                    "{a} vs {b}"
                );
            }
        }
        // MXFP4 does not stack with other types.
        let q = quantized(4, 256, 3, GgmlDType::Q8_0);
        assert!(Linear::stack(&[&mxfp4(4, 256, 4), &q]).unwrap().is_none());
    }

    #[test]
    fn fp8_layers_of_whole_row_blocks_stack_bit_for_bit() {
        use crate::formats::fp8::Scheme;
        let (k, scheme) = (80, Scheme { block: [4, 32] });
        let fp8 = |rows: usize, seed: u32| {
            let w = gemv::test_values(rows * k, seed);
            Linear::from_matrix(Matrix::Fp8(Box::new(
                Fp8::quantize(&w, (rows, k), scheme).unwrap(),
            )))
        };
        let parts = [fp8(8, 1), fp8(4, 2), fp8(3, 3)];
        let stacked = Linear::stack(&[&parts[0], &parts[1], &parts[2]])
            .unwrap()
            .expect("whole row blocks before the last part");
        for m in [1, 4] {
            let x = Tensor::from_vec(gemv::test_values(m * k, 9), (1, m, k), &Device::Cpu).unwrap();
            let want: Vec<Tensor> = parts.iter().map(|p| p.forward(&x).unwrap()).collect();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = flat(&Tensor::cat(&want, 2).unwrap());
            assert_eq!(flat(&stacked.forward(&x).unwrap()), want, "{m} rows");
        }
        assert!(Linear::stack(&[&parts[2], &parts[0]]).unwrap().is_none());
    }

    #[test]
    fn layers_of_different_types_or_widths_are_not_stacked() {
        let a = quantized(4, 256, 1, GgmlDType::Q4_1);
        let b = quantized(4, 256, 2, GgmlDType::Q8_0);
        let c = quantized(4, 512, 3, GgmlDType::Q4_1);
        assert!(Linear::stack(&[&a, &b]).unwrap().is_none());
        assert!(Linear::stack(&[&a, &c]).unwrap().is_none());
        assert!(Linear::stack(&[]).unwrap().is_none());
    }
}
