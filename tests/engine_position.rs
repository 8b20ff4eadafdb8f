//! One engine, one position: prompt, generate, go back into the prompt, regenerate. The
//! position the engine reports is the cache's, on the CPU path (full KV, and the sliding-
//! window entries of Gemma 3) and on the fused CUDA decoder where a GPU is present.

use std::ops::ControlFlow;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use mlcli::engine::{Engine, GenerateParams, LoadOptions, SamplingParams, StopReason};
use mlcli::models::testing::{self, real_model, GEMMA3, SMOLLM2};
use mlcli::Error;

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(n),
        ignore_eos: true,
        ..GenerateParams::default()
    }
}

fn generate(engine: &mut Engine, prompt: &[u32], n: usize) -> mlcli::engine::Stats {
    engine
        .generate(prompt, &greedy(n), &mut |_| ControlFlow::Continue(()))
        .expect("generates")
}

/// The scenario, on an engine loaded from `model` on `device`.
fn prompt_generate_truncate_regenerate(model: &str, device: Device) {
    let opts = LoadOptions {
        device,
        ..LoadOptions::default()
    };
    let mut engine = Engine::load(&real_model(model), &opts).expect("loads");
    let prompt = engine
        .raw_tokens(
            "The capital of France is Paris, and the capital of Italy is",
            true,
        )
        .unwrap();
    // 1. Prompt and 12 tokens: every token but the last sampled one is in the cache.
    let first = generate(&mut engine, &prompt, 12);
    assert_eq!(first.reused_tokens, 0);
    assert_eq!(engine.cached_len(), prompt.len() + 11, "{model}");
    // 2. Back into the prompt.
    let k = prompt.len() - 3;
    assert_eq!(
        engine.rewind(k),
        k,
        "{model}: full and window KV go back exactly"
    );
    assert_eq!(engine.cached_len(), k);
    assert_eq!(engine.rewind(10_000), k, "{model}: never forward");
    // 3. Regenerate: the kept prefix is reused and the reply is the same.
    let second = generate(&mut engine, &prompt, 12);
    assert_eq!(second.reused_tokens, k, "{model}");
    assert_eq!(second.tokens, first.tokens, "{model}: same greedy reply");
    assert_eq!(engine.cached_len(), prompt.len() + 11, "{model}");
    // 4. A cold engine agrees.
    engine.reset();
    assert_eq!(engine.cached_len(), 0);
    let cold = generate(&mut engine, &prompt, 12);
    assert_eq!(cold.tokens, first.tokens, "{model}: cold rerun");
    // 5. A full context stops generation at the context size, and the position with it.
    let ctx = prompt.len() + 5;
    engine.set_ctx_size(ctx).unwrap();
    let full = generate(&mut engine, &prompt, 50);
    assert_eq!(full.stop_reason, StopReason::ContextFull, "{model}");
    assert_eq!(engine.cached_len(), ctx, "{model}");
    // 6. A prompt that cannot fit is refused; the engine still works afterwards.
    let long: Vec<u32> = prompt.iter().chain(&prompt).copied().collect();
    let err = engine
        .generate(&long, &greedy(4), &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(matches!(err, Error::ContextFull { .. }), "{model}: {err}");
    assert!(engine.cached_len() <= ctx);
    let again = generate(&mut engine, &prompt, 4);
    assert_eq!(again.tokens[..], first.tokens[..4], "{model}");
}

#[test]
fn one_position_through_prompt_generate_truncate_regenerate_on_the_cpu() {
    prompt_generate_truncate_regenerate(SMOLLM2, Device::Cpu);
    prompt_generate_truncate_regenerate(GEMMA3, Device::Cpu);
}

#[test]
fn one_position_on_the_fused_decoder_where_compiled() {
    match Device::new_cuda(0) {
        Ok(dev) => {
            prompt_generate_truncate_regenerate(SMOLLM2, dev.clone());
            prompt_generate_truncate_regenerate(GEMMA3, dev);
        }
        Err(e) => eprintln!("no CUDA device ({e}): skipped"),
    }
}

/// Gemma 3's local layers keep only their window (3 positions in the tiny model) and some
/// slack: going back within what they hold is exact, further back restarts the sequence,
/// and either way the logits are those of a cold run, bit for bit (chunks of 100 tokens
/// everywhere, so every product sees the same rows).
#[test]
fn a_windowed_cache_goes_back_exactly_or_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma3.gguf");
    let spec = mlcli::models::family("gemma3").unwrap();
    testing::write_tiny_gguf(spec, &path, 5, GgmlDType::F32, None).unwrap();
    let opts = LoadOptions {
        ctx_size: Some(2000),
        batch_size: 100,
        ..LoadOptions::default()
    };
    let mut engine = Engine::load(&path, &opts).unwrap();
    let tokens: Vec<u32> = (0..1200u32).map(|i| (i * 37 + 11) % 128).collect();
    let bytes_at_start = engine.cache_bytes();
    let cold = engine.feed(&tokens).unwrap();
    assert_eq!(engine.cached_len(), 1200);
    assert!(engine.cache_bytes() > bytes_at_start);
    // Within the held range.
    assert_eq!(engine.rewind(1100), 1100);
    let warm = engine.feed(&tokens[1100..]).unwrap();
    assert_eq!(cold, warm, "rewind to 1100");
    // Long gone from the window layers: the engine restarts at 0.
    assert_eq!(engine.rewind(100), 0);
    let rerun = engine.feed(&tokens).unwrap();
    assert_eq!(cold, rerun, "restart");
    assert_eq!(engine.cached_len(), 1200);
}
