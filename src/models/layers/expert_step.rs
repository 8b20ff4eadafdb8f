//! A decode step's routed experts on the CPU in two pool submissions: every chosen expert's
//! gate and up products at once, then every down product, each product whole on one thread
//! ([`Linear::rows_into`]). Going expert by expert took three submissions per expert (24 a
//! layer for Qwen3-MoE's eight) plus the tensors around each, while the products themselves
//! are small (768 rows of 2048 for Qwen3 30B-A3B); the numbers are the same bit for bit.

use std::sync::Mutex;

use candle_core::{DType, Tensor};

use super::linear::{rows_on_threads, RowsJob};
use super::mlp::Mlp;
use crate::kernels::cpu::gated;
use crate::kernels::cpu::host;
use crate::kernels::cpu::pool::Pool;
use crate::Result;

/// One token's output through the experts of `route` (index, weight), added in expert order
/// as [`super::moe::dispatch`] adds them: `(1, hidden)`. `None` (nothing computed) unless `xs`
/// is one f32 CPU row and every chosen expert's layers take rows ([`Mlp::row_parts`]).
pub fn one_token(mlps: &[Mlp], xs: &Tensor, route: &[(usize, f32)]) -> Result<Option<Tensor>> {
    if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
        return Ok(None);
    }
    let (1, hidden) = xs.dims2()? else {
        return Ok(None);
    };
    let mut chosen = route.to_vec();
    // Stable: a repeated expert keeps its route order, as `dispatch` adds its rows.
    chosen.sort_by_key(|&(e, _)| e);
    let mut parts = Vec::with_capacity(chosen.len());
    for &(e, _) in &chosen {
        let Some(p) = mlps.get(e).and_then(Mlp::row_parts) else {
            return Ok(None);
        };
        parts.push(p);
    }
    // Every expert's `[gate | up]` must be `2·ffn` wide and its down `ffn → hidden`.
    let mut ffns = Vec::with_capacity(parts.len());
    for (first, down, _) in &parts {
        let width: usize = first.iter().map(|l| l.dims()[0]).sum();
        let ffn = width / 2;
        if !width.is_multiple_of(2) || first.iter().any(|l| l.dims()[1] != hidden) {
            return Ok(None);
        }
        if down.dims() != [hidden, ffn] {
            return Ok(None);
        }
        ffns.push(ffn);
    }
    let run = |x: &[f32]| -> Result<Option<Vec<f32>>> {
        // 1. Every gate and up product, into each expert's `[gate | up]`.
        let mut gate_up: Vec<Vec<f32>> = ffns.iter().map(|f| vec![0f32; 2 * f]).collect();
        let mut jobs: Vec<RowsJob> = Vec::new();
        for ((first, _, _), buf) in parts.iter().zip(&mut gate_up) {
            let mut rest = buf.as_mut_slice();
            for l in first {
                let (out, tail) = rest.split_at_mut(l.dims()[0]);
                jobs.push((l, x, Mutex::new(out)));
                rest = tail;
            }
        }
        if !products(&jobs)? {
            return Ok(None);
        }
        drop(jobs);
        // 2. The activation, on this thread (a few thousand values).
        let hs: Vec<Vec<f32>> = parts
            .iter()
            .zip(&gate_up)
            .zip(&ffns)
            .map(|(((_, _, act), gu), &f)| {
                let mut h = vec![0f32; f];
                gated::apply(*act, &gu[..f], &gu[f..], &mut h);
                h
            })
            .collect();
        // 3. Every down product.
        let mut ys = vec![vec![0f32; hidden]; parts.len()];
        let jobs: Vec<_> = parts
            .iter()
            .zip(&hs)
            .zip(&mut ys)
            .map(|(((_, down, _), h), y)| (*down, h.as_slice(), Mutex::new(y.as_mut_slice())))
            .collect();
        if !products(&jobs)? {
            return Ok(None);
        }
        drop(jobs);
        // 4. Weighted and added in expert order: `y · w`, then the sum, as `dispatch` rounds.
        let mut out = vec![0f32; hidden];
        for (y, &(_, w)) in ys.iter().zip(&chosen) {
            for (o, y) in out.iter_mut().zip(y) {
                *o += y * w;
            }
        }
        Ok(Some(out))
    };
    let out = match host::with_f32(xs, run)? {
        Some(out) => out?,
        None => run(&xs.flatten_all()?.to_vec1()?)?,
    };
    out.map(|out| Ok(Tensor::from_vec(out, (1, hidden), xs.device())?))
        .transpose()
}

/// Each `(layer, input, output)` product whole on one thread, in one pool submission, where
/// that keeps at least three quarters of the threads busy (any count of products on 2 or 3
/// threads; 16 products on 16); otherwise (8 products on 16 threads) one after another, each
/// split over the pool. False when a layer declined its product.
fn products(jobs: &[RowsJob]) -> Result<bool> {
    let threads = Pool::global().threads();
    let rounds = jobs.len().div_ceil(threads);
    if 4 * jobs.len() < 3 * threads * rounds {
        for (l, x, out) in jobs {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            if !l.rows_into(x, &mut out)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    rows_on_threads(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::gemv::test_values;
    use crate::models::layers::linear::Linear;
    use crate::models::layers::mlp::Activation;
    use crate::models::layers::moe::dispatch;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;
    use std::sync::Arc;

    fn linear(rows: usize, cols: usize, dtype: GgmlDType, seed: u32) -> Linear {
        let w = Tensor::from_vec(test_values(rows * cols, seed), (rows, cols), &Device::Cpu);
        let q = QTensor::quantize(&w.unwrap(), dtype).unwrap();
        Linear::from_qtensor(Arc::new(q)).unwrap()
    }

    #[test]
    fn one_submission_per_stage_gives_the_expert_by_expert_sums_bit_for_bit() {
        let (hidden, ffn) = (256, 512);
        let mut mlps = Vec::new();
        for e in 0..4u32 {
            let down = linear(hidden, ffn, GgmlDType::Q6K, 10 * e + 3);
            mlps.push(match e % 2 {
                // Gate and up apart, and stacked in one matrix (Gemma 4's experts).
                0 => Mlp::from_linears(
                    linear(ffn, hidden, GgmlDType::Q4K, 10 * e + 1),
                    linear(ffn, hidden, GgmlDType::Q4K, 10 * e + 2),
                    down,
                    Activation::Silu,
                ),
                _ => Mlp::from_stacked(
                    linear(2 * ffn, hidden, GgmlDType::Q4K, 10 * e + 1),
                    ffn,
                    down,
                    Activation::GeluTanh,
                ),
            });
        }
        let x = Tensor::from_vec(test_values(hidden, 99), (1, hidden), &Device::Cpu).unwrap();
        // One product a stage (run split over the pool) and several (whole, one a thread).
        for route in [
            vec![(1, 1.0f32)],
            vec![(2, 0.25), (0, 0.75)],
            vec![(3, 0.5), (1, 0.3), (0, 0.2)],
        ] {
            let got = one_token(&mlps, &x, &route)
                .unwrap()
                .expect("every layer takes rows");
            let want = dispatch(&x, std::slice::from_ref(&route), mlps.len(), |e, rows| {
                mlps[e].forward(rows)
            })
            .unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            assert_eq!(bits(&got), bits(&want), "route {route:?}");
        }
        // A layer without a rows kernel leaves the step to the expert-by-expert path.
        let dense = Tensor::zeros((hidden, ffn), DType::F32, &Device::Cpu).unwrap();
        let dense = Linear::from_matmul(candle_core::quantized::QMatMul::Tensor(dense));
        let (first, _, act) = mlps[0].row_parts().unwrap();
        let odd = Mlp::from_linears(first[0].clone(), first[1].clone(), dense, act);
        assert!(one_token(&[odd], &x, &[(0, 1.0)]).unwrap().is_none());
    }
}
