//! The portable fallback kernels (`MLCLI_CPU_KERNELS=scalar`) and the SIMD ones chosen at run
//! time give equivalent logits on the real models: SmolLM2 decodes through the Q4_1 kernel,
//! Gemma 3 through the Q5_0 one (random-data agreement is in the unit tests). Tokens are fed
//! one at a time so every quantized product takes the single-row kernels.
//!
//! The logits test switches a process-wide environment variable; the pool test only sets it
//! for the processes it starts.

use candle_core::Device;
use mlcli::engine::{Engine, LoadOptions};
use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};

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

#[test]
fn scalar_and_simd_kernels_give_the_same_logits_on_real_models() {
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
        std::env::remove_var("MLCLI_CPU_KERNELS");
        let fast = token_by_token(&mut engine, &tokens);
        std::env::set_var("MLCLI_CPU_KERNELS", "scalar");
        let portable = token_by_token(&mut engine, &tokens);
        std::env::remove_var("MLCLI_CPU_KERNELS");
        let max = fast
            .iter()
            .zip(&portable)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let rms = (fast
            .iter()
            .zip(&portable)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / fast.len() as f32)
            .sqrt();
        eprintln!(
            "{model}: max |Δ| {max}, rms {rms}; top-5 {:?} vs {:?}",
            top(&fast, 5),
            top(&portable, 5)
        );
        // The kernels compute the same integer dot products and differ only in the order of
        // float additions; the next layer's 8-bit rounding of activations turns those last-bit
        // differences into noise of the size of that rounding itself. So the bar is the
        // reference's bar for two correct implementations: same top-1, 4 of the top-5 shared,
        // max |Δ| < 2, rms < 0.7.
        let (tf, tp) = (top(&fast, 5), top(&portable, 5));
        assert_eq!(tf[0], tp[0], "{model}: top-1");
        assert!(
            tf.iter().filter(|i| tp.contains(i)).count() >= 4,
            "{model}: top-5"
        );
        assert!(max < 2.0 && rms < 0.7, "{model}: max {max}, rms {rms}");
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
