//! The portable fallback kernels (`MLCLI_CPU_KERNELS=scalar`, or `gemv::force_kernel` in one
//! process) and the SIMD ones chosen at run time give equivalent logits on the real models:
//! SmolLM2 runs through the Q4_1 and Q8_0 kernels, Gemma 3 through the Q5_0 and Q8_0 ones (and
//! its k-quants through the batched int8 tiles). Both the single-row kernels (tokens fed one at
//! a time) and the batched ones (the whole prompt at once: the first-step logits) are compared;
//! random-data agreement is in the unit tests. MXFP4 experts (gpt-oss) give the same logits
//! bit for bit whichever kernel runs them, and so do FP8 block-scaled linear layers and the
//! widening of the f16 KV cache.

use candle_core::Device;
use mlcli::engine::{Engine, LoadOptions};
use mlcli::kernels::cpu::gemv::{force_kernel, Kernel};
use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};

/// Held while a test runs with a kernel forced: the switch is process-wide, and the tests of
/// this file run side by side.
static FORCED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn token_by_token(engine: &mut Engine, tokens: &[u32]) -> Vec<f32> {
    engine.reset();
    let mut last = Vec::new();
    for &t in tokens {
        last = engine.feed(&[t]).expect("forward");
    }
    last
}

fn top(logits: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    order.truncate(k);
    order
}

/// The reference's bar for two correct implementations: same top-1, 4 of the top-5 shared,
/// max |Δ| < 2, rms < 0.7. The kernels compute the same integer dot products (the batched
/// fallback: f32 products of dequantized weights) and differ in the order of float additions;
/// the next layer's 8-bit rounding of activations turns those differences into noise of the
/// size of that rounding itself.
fn assert_equivalent(what: &str, fast: &[f32], portable: &[f32]) {
    let max = fast
        .iter()
        .zip(portable)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let rms = (fast
        .iter()
        .zip(portable)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        / fast.len() as f32)
        .sqrt();
    let (tf, tp) = (top(fast, 5), top(portable, 5));
    eprintln!("{what}: max |Δ| {max}, rms {rms}; top-5 {tf:?} vs {tp:?}");
    assert_eq!(tf[0], tp[0], "{what}: top-1");
    assert!(
        tf.iter().filter(|i| tp.contains(i)).count() >= 4,
        "{what}: top-5"
    );
    assert!(max < 2.0 && rms < 0.7, "{what}: max {max}, rms {rms}");
    // The two runs really took different code.
    assert!(max > 0.0, "{what}: identical logits: did the fallback run?");
}

#[test]
fn scalar_and_simd_kernels_give_the_same_logits_on_real_models() {
    if mlcli::kernels::cpu::gemv::kernel() == Kernel::Scalar {
        eprintln!("skipped: this CPU runs the portable kernels only");
        return;
    }
    for model in [SMOLLM2, GEMMA3] {
        let opts = LoadOptions {
            device: Device::Cpu,
            ctx_size: Some(64),
            ..LoadOptions::default()
        };
        let mut engine = Engine::load(&real_model(model), &opts).expect("loads");
        let tokens = engine
            .raw_tokens("The capital of France is", false)
            .expect("tokenizes");
        let mut run = |kernel: Option<Kernel>| {
            let _forced = FORCED.lock().unwrap_or_else(|p| p.into_inner());
            force_kernel(kernel);
            let one_by_one = token_by_token(&mut engine, &tokens);
            engine.reset();
            let batched = engine.feed(&tokens).expect("forward");
            force_kernel(None);
            (one_by_one, batched)
        };
        let (fast_steps, fast_batch) = run(None);
        let (portable_steps, portable_batch) = run(Some(Kernel::Scalar));
        assert_equivalent(
            &format!("{model}, token by token"),
            &fast_steps,
            &portable_steps,
        );
        assert_equivalent(
            &format!("{model}, whole prompt"),
            &fast_batch,
            &portable_batch,
        );
    }
}

/// Rows are split over the pool's threads, but each row is computed by the same code whichever
/// thread runs it, so the text is identical with one thread and with two, byte for byte. Gemma 3
/// covers every single-row kernel: Q5_0, Q8_0 and the k-quants.
#[test]
fn thread_count_does_not_change_the_text() {
    let run = |threads: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlcli"))
            .args([
                "run",
                "--raw",
                "--temp",
                "0",
                "-n",
                "24",
                "--ignore-eos",
                "-t",
                threads,
            ])
            .arg(real_model(GEMMA3))
            .arg("The capital of France is")
            .env_remove("MLCLI_CPU_KERNELS")
            .output()
            .expect("mlcli runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let (one, two) = (run("1"), run("2"));
    assert!(!one.trim().is_empty());
    assert_eq!(one, two);
}

/// gpt-oss's layout with MXFP4 experts and f32 everything else, narrowed: every kernel that
/// depends on the CPU here (MXFP4 products, few-query attention) computes in one order, so the
/// logits are the same bits with the portable, AVX2 and AVX-512 kernels.
#[test]
fn mxfp4_experts_give_the_same_logits_with_every_kernel() {
    use candle_core::quantized::GgmlDType;
    use mlcli::bench::{presets, synthetic};
    let mut choice = presets::parse("gpt-oss-20b:mxfp4").unwrap();
    choice.mix.base = GgmlDType::F32;
    let d = &mut choice.preset.dims;
    (d.layers, d.hidden, d.heads, d.kv_heads, d.vocab) = (2, 256, 4, 2, 512);
    let tok = synthetic::made_up_tokenizer(d.vocab).unwrap();
    let gguf = synthetic::build(&choice, 5, tok, &Device::Cpu)
        .unwrap()
        .into_gguf(&choice)
        .unwrap();
    let mut engine = Engine::from_gguf(&gguf, &LoadOptions::default()).expect("loads");
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % 500 + 3).collect();
    let mut run = |kernel: Option<Kernel>| {
        let _forced = FORCED.lock().unwrap_or_else(|p| p.into_inner());
        force_kernel(kernel);
        let one_by_one = token_by_token(&mut engine, &tokens);
        engine.reset();
        let batched = engine.feed(&tokens).expect("forward");
        force_kernel(None);
        (one_by_one, batched)
    };
    let best = run(None);
    assert!(best.0.iter().all(|x| x.is_finite()));
    for kernel in [Kernel::Scalar, Kernel::Avx2] {
        assert_eq!(run(Some(kernel)), best, "{kernel:?}");
    }
}

/// An FP8 block-scaled linear layer (a partial block in each direction) gives the same bits
/// with the portable, AVX2 and (where the CPU has it) AVX-512 kernel, for one input row and a
/// batch, each near the dequantize-then-multiply product computed in f64.
#[test]
fn fp8_layers_give_the_same_bits_with_every_kernel() {
    use candle_core::Tensor;
    use mlcli::formats::fp8::{Fp8, Scheme};
    use mlcli::formats::weights::Matrix;
    use mlcli::models::layers::linear::Linear;
    let (n, k) = (70, 200);
    let wave = |i: usize, f: f32| ((i as f32 * f).sin() * 3.0).powi(3);
    let values: Vec<f32> = (0..n * k).map(|i| wave(i, 0.37)).collect();
    let w = Fp8::quantize(&values, (n, k), Scheme { block: [32, 128] }).unwrap();
    let dense = w.dequantize();
    let layer = Linear::from_matrix(Matrix::Fp8(Box::new(w)));
    for m in [1, 5] {
        let x: Vec<f32> = (0..m * k).map(|i| wave(i, 0.11)).collect();
        let input = Tensor::from_vec(x.clone(), (1, m, k), &Device::Cpu).unwrap();
        let run = |kernel: Option<Kernel>| -> Vec<f32> {
            let _forced = FORCED.lock().unwrap_or_else(|p| p.into_inner());
            force_kernel(kernel);
            let y = layer.forward(&input).expect("forward");
            force_kernel(None);
            y.flatten_all().unwrap().to_vec1().unwrap()
        };
        let best = run(None);
        for (j, row) in best.chunks(n).enumerate() {
            for (i, y) in row.iter().enumerate() {
                let terms = (0..k).map(|c| dense[i * k + c] as f64 * x[j * k + c] as f64);
                let (exact, size) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                assert!((*y as f64 - exact).abs() < 1e-6 * size, "{y} vs {exact}");
            }
        }
        for kernel in [Kernel::Scalar, Kernel::Avx2] {
            assert_eq!(run(Some(kernel)), best, "{kernel:?}, {m} rows");
        }
    }
}

/// The CPU KV cache's f16 rows widen to f32 (for attention's f32 products) to the same bits
/// with the portable, F16C and (where the CPU has it) AVX-512 conversion: every f16 value,
/// at a length that leaves a tail for each form.
#[test]
fn kv_rows_widen_to_the_same_bits_with_every_kernel() {
    use mlcli::kernels::cpu::f16_rows::widen;
    let src: Vec<half::f16> = (0..=u16::MAX)
        .map(half::f16::from_bits)
        .chain([half::f16::ONE; 13])
        .collect();
    let run = |kernel: Option<Kernel>| -> Vec<u32> {
        let _forced = FORCED.lock().unwrap_or_else(|p| p.into_inner());
        force_kernel(kernel);
        let mut out = vec![0f32; src.len()];
        widen(&src, &mut out);
        force_kernel(None);
        out.iter().map(|x| x.to_bits()).collect()
    };
    let best = run(None);
    let exact = src
        .iter()
        .zip(&best)
        .all(|(h, &b)| h.is_nan() || half::f16::from_f32(f32::from_bits(b)) == *h);
    assert!(exact, "a widened value does not round back to its f16");
    for kernel in [Kernel::Scalar, Kernel::Avx2] {
        assert_eq!(run(Some(kernel)), best, "{kernel:?}");
    }
}
