//! `act(gate) * up` in one pass over CPU f32 tensors, for the gated MLPs: SiLU (SwiGLU) and
//! GELU-tanh (GeGLU). candle computes the activation with libm's `tanhf`/`expf` one element at
//! a time and then multiplies in a second pass and a second buffer; in Gemma 3's prompt
//! processing that was 11% of the time. Here SiLU is `v · sigmoid(v)` over a vectorizable
//! `exp`, GELU-tanh is ggml's f16 table (see [`gelu_tanh`]), and the work is split over the
//! CPU pool.

use candle_core::{Device, Tensor};

use super::host;

use crate::kernels::Activation;
use crate::Result;

/// `sqrt(2 / pi)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `exp(x)` as ggml's vectorized `ggml_v_expf` computes it (Arm's optimized-routines
/// algorithm, max error ~1.5 ulp): `n = round(x / ln 2)` by the `1.5 · 2^23` trick, the
/// remainder `b` in two fused steps, a degree-5 polynomial in fused multiply-adds, then
/// scaled by `2^n`. Every step rounds as ggml's does, so SiLU here equals llama.cpp's bit for
/// bit; the compiler vectorizes loops over it (with FMA where the CPU has it).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let c = f32::from_bits;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let z = x.mul_add(c(0x3fb8_aa3b), ROUND); // 1/ln 2
    let n = z - ROUND;
    let b = (-n).mul_add(c(0x3f31_7200), x); // ln 2, high part
    let b = (-n).mul_add(c(0x35bf_be8e), b); // ln 2, low part
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    if n > 127.0 {
        f32::INFINITY
    } else if n < -126.0 {
        // Below f32's normal range: ggml's result is subnormal or zero, which every caller
        // here adds to 1.
        0.0
    } else {
        // `2^n` is a normal f32, so this one rounding is ggml's `scalef`.
        j * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
}

/// GELU-tanh as ggml computes it on the CPU (what llama.cpp runs): the input rounded to f16
/// and looked up in a table of 65,536 f16 results, 0 below -10 and the identity above 10. Its
/// results differ from the f32 formula by up to ~1e-3 relative, and Gemma 3's logits are
/// sensitive enough to that for the order of near-tied candidates to follow it (" Paris" vs
/// " known" after "The capital of France is"), so we compute what llama.cpp computes.
#[inline(always)]
fn gelu_tanh(v: f32, table: &[f32; 65536]) -> f32 {
    if v <= -10.0 {
        0.0
    } else if v >= 10.0 {
        v
    } else {
        table[half::f16::from_f32(v).to_bits() as usize]
    }
}

/// The table of [`gelu_tanh`], built once.
fn gelu_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (bits, out) in t.iter_mut().enumerate() {
            let x = half::f16::from_bits(bits as u16).to_f32();
            // ggml's reference formula in f32, rounded to f16.
            // `1 + A·x·x` is one fused multiply-add in ggml's build (contraction on).
            let inner = (0.044_715 * x).mul_add(x, 1.0);
            let g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh());
            *out = half::f16::from_f32(g).to_f32();
        }
        t
    })
}

#[inline(always)]
fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

#[inline(always)]
fn apply_loop(act: Activation, g: &[f32], u: &[f32], out: &mut [f32]) {
    match act {
        Activation::Silu => {
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                *o = silu(g) * u;
            }
        }
        Activation::GeluTanh => {
            let table = gelu_table();
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                *o = gelu_tanh(g, table) * u;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2(act: Activation, g: &[f32], u: &[f32], out: &mut [f32]) {
    apply_loop(act, g, u, out)
}

/// `out[i] = act(g[i]) * u[i]`.
pub fn apply(act: Activation, g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { apply_avx2(act, g, u, out) };
    }
    apply_loop(act, g, u, out)
}

/// `out[i] = act(g[i]) * u[i]`, in chunks of 4096 elements over the CPU pool (a single
/// token's few thousand run inline).
fn apply_chunks(act: Activation, g: &[f32], u: &[f32], out: *mut f32) {
    let out_addr = out as usize;
    super::pool::Pool::global().run(g.len().div_ceil(CHUNK), |chunks| {
        let start = chunks.start * CHUNK;
        let end = (chunks.end * CHUNK).min(g.len());
        // SAFETY: chunk ranges are disjoint and within `out`, which outlives the call.
        let dst = unsafe {
            std::slice::from_raw_parts_mut((out_addr as *mut f32).add(start), end - start)
        };
        apply(act, &g[start..end], &u[start..end], dst);
    });
}

/// Elements per unit of work on the pool.
const CHUNK: usize = 4096;

/// `act(gate) * up` for contiguous f32 CPU tensors of one shape; `None` for anything else (the
/// caller then uses candle's ops).
pub fn forward(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    if !gate.device().is_cpu()
        || gate.dtype() != candle_core::DType::F32
        || up.dtype() != candle_core::DType::F32
        || gate.dims() != up.dims()
    {
        return Ok(None);
    }
    let out = host::with_f32(gate, |g| {
        host::with_f32(up, |u| {
            // SAFETY: the chunks below cover every element once.
            unsafe { host::filled(g.len(), |out| apply_chunks(act, g, u, out)) }
        })
    })?;
    let Some(Some(out)) = out.transpose()? else {
        return Ok(None);
    };
    Ok(Some(Tensor::from_vec(out, gate.dims(), &Device::Cpu)?))
}

/// `act(gate) * up` for a contiguous f32 CPU tensor `(..., 2·ffn)` holding each row's gate
/// then its up values (a stacked gate/up product): `(..., ffn)`; `None` for anything else.
pub fn forward_stacked(act: Activation, y: &Tensor, ffn: usize) -> Result<Option<Tensor>> {
    let dims = y.dims();
    if !y.device().is_cpu()
        || y.dtype() != candle_core::DType::F32
        || ffn == 0
        || dims.last() != Some(&(2 * ffn))
    {
        return Ok(None);
    }
    let out = host::with_f32(y, |y| {
        let rows = y.len() / (2 * ffn);
        // SAFETY: the row ranges below are disjoint and cover every output element once.
        unsafe {
            host::filled(rows * ffn, |out| {
                let out_addr = out as usize;
                let per = CHUNK.div_ceil(ffn).max(1);
                super::pool::Pool::global().run(rows.div_ceil(per), |units| {
                    for r in units.start * per..(units.end * per).min(rows) {
                        let row = &y[2 * ffn * r..2 * ffn * (r + 1)];
                        let dst = std::slice::from_raw_parts_mut(
                            (out_addr as *mut f32).add(ffn * r),
                            ffn,
                        );
                        apply(act, &row[..ffn], &row[ffn..], dst);
                    }
                });
            })
        }
    })?;
    let Some(out) = out else {
        return Ok(None);
    };
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = ffn;
    }
    Ok(Some(Tensor::from_vec(out, shape, &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(act: Activation, v: f64) -> f64 {
        match act {
            Activation::Silu => v / (1.0 + (-v).exp()),
            Activation::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
            }
        }
    }

    #[test]
    fn exp_is_accurate_over_the_float_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            assert!(rel < 2.5e-7, "exp({x}): relative error {rel}");
            x += 0.0137;
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert_eq!(silu(-1000.0), 0.0);
        assert_eq!(silu(1000.0), 1000.0);
    }

    #[test]
    fn gates_match_the_exact_formulas() {
        let vs: Vec<f32> = (-4000..4000)
            .map(|i| i as f32 * 0.005)
            .chain([-1e4, -100.0, -1e-6, 0.0, 1e-6, 100.0, 1e4])
            .collect();
        let ones = vec![1f32; vs.len()];
        for act in [Activation::Silu, Activation::GeluTanh] {
            let mut out = vec![0f32; vs.len()];
            apply(act, &vs, &ones, &mut out);
            // GELU goes through f16 (ggml's table): the input's rounding moves the result by
            // up to ~1e-3 of the input, the output's by 2^-11 relative.
            let tolerance = match act {
                Activation::Silu => 1e-6,
                Activation::GeluTanh => 2e-3,
            };
            for (&v, &o) in vs.iter().zip(&out) {
                let e = exact(act, v as f64);
                assert!(
                    (o as f64 - e).abs() <= tolerance * (1.0 + e.abs()),
                    "{act:?}({v}) = {o}, exact {e}"
                );
            }
        }
    }

    #[test]
    fn gelu_is_ggmls_f16_table() {
        let table = gelu_table();
        // Exactly representable f16 inputs: the f32 formula rounded to f16.
        for x in [-3.0f32, -0.5, 0.0, 0.25, 1.0, 2.5, 9.5] {
            let want = half::f16::from_f32(
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh()),
            )
            .to_f32();
            assert_eq!(gelu_tanh(x, table), want, "gelu({x})");
        }
        assert_eq!(gelu_tanh(-10.5, table), 0.0);
        assert_eq!(gelu_tanh(12.0, table), 12.0);
        // Inputs round to f16 first: 1.0001 reads as 1.0.
        assert_eq!(gelu_tanh(1.0001, table), gelu_tanh(1.0, table));
    }

    #[test]
    fn fused_tensors_equal_candles_ops() {
        let dev = Device::Cpu;
        let g = Tensor::from_vec(
            super::super::gemv::test_values(3 * 5000, 7),
            (3, 5000),
            &dev,
        )
        .unwrap()
        .affine(6.0, 0.0)
        .unwrap();
        let u = Tensor::from_vec(
            super::super::gemv::test_values(3 * 5000, 8),
            (3, 5000),
            &dev,
        )
        .unwrap();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let want = match act {
                Activation::Silu => candle_nn::ops::silu(&g).unwrap(),
                Activation::GeluTanh => g.gelu().unwrap(),
            };
            let want: Vec<f32> = (want * &u)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = forward(act, &g, &u)
                .unwrap()
                .expect("contiguous f32 on the CPU")
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // GELU: ggml's f16 table against candle's f32 formula.
            let tolerance = match act {
                Activation::Silu => 2e-6,
                Activation::GeluTanh => 2e-3,
            };
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= tolerance * (1.0 + b.abs()),
                    "{act:?}: {a} vs {b}"
                );
            }
        }
        // A strided gate falls back.
        assert!(forward(Activation::Silu, &g.t().unwrap(), &u.t().unwrap())
            .unwrap()
            .is_none());
    }
}
