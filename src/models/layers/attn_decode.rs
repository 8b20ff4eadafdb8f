//! Attention for one new token on the CPU: each query head against its KV head's cached rows,
//! read in place from the cache. candle's path (a transposed-matmul per layer, a softmax, a
//! second matmul) repacked the whole key block on every call: after 512 tokens of context that
//! was ~230 µs per layer, and generation fell from 117 to 65 tok/s on SmolLM2. Here a query
//! head streams its keys once for the scores and its values once for the weighted sum.

use candle_core::{DType, Storage, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::Result;

/// `softmax(scale · q·Kᵀ [soft-capped]) · V` for one query position.
///
/// `q` is `(1, H, 1, D)` f32, `k` and `v` are `(1, KV, n, D)` f32 or f16 views (of the cache:
/// rows of one head contiguous), all on the CPU; `None` for anything else. Returns
/// `(1, H, 1, D)`.
pub fn attend_one(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    softcap: Option<f32>,
) -> Result<Option<Tensor>> {
    let (b, h, l, d) = q.dims4()?;
    let (kb, kv, n, kd) = k.dims4()?;
    if b != 1 || l != 1 || kb != 1 || kd != d || v.dims4()? != (1, kv, n, d) || kv == 0 {
        return Ok(None);
    }
    if !h.is_multiple_of(kv) || n == 0 {
        return Ok(None);
    }
    let out = super::host::with_f32(q, |q| {
        rows(k, d, |k_rows| {
            rows(v, d, |v_rows| {
                let rep = h / kv;
                // SAFETY: one unit per query head, each writing only its own D outputs.
                unsafe {
                    super::host::filled(h * d, |out| {
                        let out_addr = out as usize;
                        super::pool::Pool::global().run(h, |heads| {
                            for head in heads {
                                let g = head / rep;
                                let dst = std::slice::from_raw_parts_mut(
                                    (out_addr as *mut f32).add(head * d),
                                    d,
                                );
                                one_head(
                                    &q[head * d..(head + 1) * d],
                                    &k_rows[g],
                                    &v_rows[g],
                                    scale,
                                    softcap,
                                    dst,
                                );
                            }
                        });
                    })
                }
            })
        })
    })?;
    match out {
        Some(Ok(Some(Ok(Some(out))))) => Ok(Some(Tensor::from_vec(out, (1, h, 1, d), q.device())?)),
        Some(Ok(Some(Err(e)))) | Some(Err(e)) => Err(e),
        _ => Ok(None),
    }
}

/// The cached rows of one head, `n × d`, in the cache's precision.
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Rows<'_> {
    /// Row `j` as f32 (converted into `buf` when the cache holds f16).
    #[inline(always)]
    fn row<'b>(&'b self, j: usize, buf: &'b mut [f32]) -> &'b [f32] {
        let d = buf.len();
        match self {
            Rows::F32(s) => &s[j * d..(j + 1) * d],
            Rows::F16(s) => {
                s[j * d..(j + 1) * d].convert_to_f32_slice(buf);
                buf
            }
        }
    }

    fn len(&self, d: usize) -> usize {
        match self {
            Rows::F32(s) => s.len() / d,
            Rows::F16(s) => s.len() / d,
        }
    }
}

/// Calls `f` with, per head of `t` (`(1, heads, n, d)`, f32 or f16 on the CPU, each head's rows
/// contiguous), its `n × d` rows; `None` when `t` is laid out otherwise.
fn rows<R>(t: &Tensor, d: usize, f: impl FnOnce(&[Rows]) -> R) -> Result<Option<R>> {
    if !t.device().is_cpu() || !matches!(t.dtype(), DType::F32 | DType::F16) {
        return Ok(None);
    }
    let (_, heads, n, _) = t.dims4()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let stride = layout.stride();
    if stride.len() != 4 || stride[3] != 1 || stride[2] != d {
        return Ok(None);
    }
    let start = layout.start_offset();
    let mut per_head = Vec::with_capacity(heads);
    for g in 0..heads {
        let from = start + g * stride[1];
        let rows = match t.dtype() {
            DType::F16 => cpu
                .as_slice::<f16>()?
                .get(from..from + n * d)
                .map(Rows::F16),
            _ => cpu
                .as_slice::<f32>()?
                .get(from..from + n * d)
                .map(Rows::F32),
        };
        let Some(rows) = rows else {
            return Ok(None);
        };
        per_head.push(rows);
    }
    Ok(Some(f(&per_head)))
}

/// One query head: scores over `k` rows, softmax, weighted sum of `v` rows into `out`.
fn one_head(q: &[f32], k: &Rows, v: &Rows, scale: f32, softcap: Option<f32>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::gemv::kernel() != super::gemv::Kernel::Scalar {
        // SAFETY: a non-scalar kernel means the CPU has AVX2 and FMA.
        return unsafe { one_head_avx2(q, k, v, scale, softcap, out) };
    }
    one_head_portable(q, k, v, scale, softcap, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_head_avx2(
    q: &[f32],
    k: &Rows,
    v: &Rows,
    scale: f32,
    softcap: Option<f32>,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let d = q.len();
    let (Rows::F16(k), Rows::F16(v)) = (k, v) else {
        return one_head_portable(q, k, v, scale, softcap, out);
    };
    if !d.is_multiple_of(8) {
        return one_head_portable(q, &Rows::F16(k), &Rows::F16(v), scale, softcap, out);
    }
    // f16 rows converted eight at a time inside the products (F16C), no row buffer.
    let n = k.len() / d;
    let mut scores = Vec::with_capacity(n);
    for row in k.chunks_exact(d) {
        let mut acc = _mm256_setzero_ps();
        for i in (0..d).step_by(8) {
            let kv = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(i) as *const __m128i));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i)), kv, acc);
        }
        let s = super::gemv::hsum(acc) * scale;
        scores.push(match softcap {
            Some(cap) => cap * (s / cap).tanh(),
            None => s,
        });
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in &mut scores {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (p, row) in scores.iter().zip(v.chunks_exact(d)) {
        let w = _mm256_set1_ps(p / sum);
        for i in (0..d).step_by(8) {
            let vv = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(i) as *const __m128i));
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(o, _mm256_fmadd_ps(w, vv, _mm256_loadu_ps(o)));
        }
    }
}

#[inline(always)]
fn one_head_portable(
    q: &[f32],
    k: &Rows,
    v: &Rows,
    scale: f32,
    softcap: Option<f32>,
    out: &mut [f32],
) {
    let d = q.len();
    let mut buf = vec![0f32; d];
    let mut scores: Vec<f32> = (0..k.len(d))
        .map(|j| {
            let s = dot(q, k.row(j, &mut buf)) * scale;
            match softcap {
                Some(cap) => cap * (s / cap).tanh(),
                None => s,
            }
        })
        .collect();
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in &mut scores {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (j, p) in scores.iter().enumerate() {
        let w = p / sum;
        for (o, x) in out.iter_mut().zip(v.row(j, &mut buf)) {
            *o += w * x;
        }
    }
}

/// A dot product in eight independent lanes (so it vectorizes), summed at the end.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, rep: usize) -> Vec<f32> {
        let (_, h, _, d) = q.dims4().unwrap();
        let kv = k.dim(1).unwrap();
        let q = q.reshape((1, kv, rep, d)).unwrap();
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&v.contiguous().unwrap())
            .unwrap()
            .reshape((1, h, 1, d))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn one_token_equals_the_matmul_softmax_matmul_path() {
        let dev = Device::Cpu;
        let values = |n: usize, seed: u32| crate::models::layers::gemv::test_values(n, seed);
        let (h, kv, d, cap, n) = (6, 2, 20, 40, 33);
        // A cache-like buffer with room for 40 positions, of which 33 are used.
        let kbuf = Tensor::from_vec(values(kv * cap * d, 1), (1, kv, cap, d), &dev).unwrap();
        let vbuf = Tensor::from_vec(values(kv * cap * d, 2), (1, kv, cap, d), &dev).unwrap();
        let (k, v) = (kbuf.narrow(2, 3, n).unwrap(), vbuf.narrow(2, 3, n).unwrap());
        let q = Tensor::from_vec(values(h * d, 3), (1, h, 1, d), &dev).unwrap();
        let got: Vec<f32> = attend_one(&q, &k, &v, 0.7, None)
            .unwrap()
            .expect("cache views are supported")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = reference(&q, &k, &v, 0.7, h / kv);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // An f16 cache is read as it is.
        let (kh, vh) = (
            kbuf.to_dtype(DType::F16).unwrap(),
            vbuf.to_dtype(DType::F16).unwrap(),
        );
        let (kh, vh) = (kh.narrow(2, 3, n).unwrap(), vh.narrow(2, 3, n).unwrap());
        let got: Vec<f32> = attend_one(&q, &kh, &vh, 0.7, None)
            .unwrap()
            .expect("f16 cache views are supported")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = reference(
            &q,
            &kh.to_dtype(DType::F32).unwrap(),
            &vh.to_dtype(DType::F32).unwrap(),
            0.7,
            h / kv,
        );
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "f16: {a} vs {b}");
        }
        // Two query positions are not this kernel's job.
        let q2 = Tensor::from_vec(values(h * 2 * d, 4), (1, h, 2, d), &dev).unwrap();
        assert!(attend_one(&q2, &k, &v, 0.7, None).unwrap().is_none());
    }
}
