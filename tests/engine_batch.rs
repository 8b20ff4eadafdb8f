//! Several sequences decoded together give each the reply it gets alone: the batched passes
//! of the llama and Gemma 3 graphs (one weight read for every sequence, each sequence at its
//! own position and window), the one-after-another default of the other families (Qwen 3.5's
//! recurrent state), prefix reuse per sequence, sequences that end while others go on, and
//! prompts fed in chunks (as the server admits them) equal to prompts fed whole.

use std::ops::ControlFlow;

use candle_core::quantized::GgmlDType;
use mlcli::engine::{Engine, LoadOptions, Step};
use mlcli::models::testing::{self, real_model, GEMMA3, SMOLLM2};

mod reference;
use reference::greedy;

/// Generates a reply to each prompt alone (sequence 0, reset between them).
fn one_by_one(engine: &mut Engine, prompts: &[Vec<u32>], lens: &[usize]) -> Vec<Vec<u32>> {
    prompts
        .iter()
        .zip(lens)
        .map(|(p, &n)| {
            engine.reset();
            engine
                .generate(p, &greedy(n), &mut |_| ControlFlow::Continue(()))
                .expect("generates")
                .tokens
        })
        .collect()
}

/// Generates every reply at once, sequence `i` for prompt `i`, one batched pass per token.
fn together(engine: &mut Engine, prompts: &[Vec<u32>], lens: &[usize]) -> Vec<Vec<u32>> {
    let mut running = Vec::new();
    let mut replies = vec![Vec::new(); prompts.len()];
    for (seq, (p, &n)) in prompts.iter().zip(lens).enumerate() {
        // The prompt fed 3 tokens at a time, as the server feeds a long one between the
        // decode steps of the others: the same reply as fed whole.
        let (mut generation, mut prefill) = engine.begin(seq, p, &greedy(n), None).unwrap();
        let next = loop {
            if let Some(next) = engine.prefill(&mut prefill, &mut generation, 3).unwrap() {
                break next;
            }
        };
        let room = engine.room(seq).unwrap();
        match generation.advance(&next, room, &mut |_| ControlFlow::Continue(())) {
            Ok(Step::Feed(t)) => running.push((seq, t, generation)),
            other => panic!("sequence {seq} ended at once: {other:?}"),
        }
    }
    while !running.is_empty() {
        let mut work: Vec<_> = running
            .iter_mut()
            .map(|(seq, t, g)| (*seq, *t, g))
            .collect();
        let nexts = engine.decode_batch(&mut work).expect("batched pass");
        let mut kept = Vec::new();
        for ((seq, _, mut g), next) in running.drain(..).zip(nexts) {
            let room = engine.room(seq).unwrap();
            match g.advance(&next, room, &mut |_| ControlFlow::Continue(())) {
                Ok(Step::Feed(t)) => kept.push((seq, t, g)),
                Ok(Step::Done(_)) => {
                    replies[seq] = g
                        .finish(mlcli::engine::StopReason::MaxTokens, &mut |_| {
                            ControlFlow::Continue(())
                        })
                        .tokens
                }
                Err(e) => panic!("sequence {seq}: {e}"),
            }
        }
        running = kept;
    }
    replies
}

/// Four prompts of different lengths (so each sequence is at its own position), replies of
/// different lengths (so the batch shrinks as they end).
fn check(engine: &mut Engine, what: &str) {
    let texts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived",
        "1, 2, 3, 4,",
        "def fibonacci(n):",
    ];
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| engine.raw_tokens(t, true).unwrap())
        .collect();
    let lens = [12, 9, 12, 5];
    let alone = one_by_one(engine, &prompts, &lens);
    engine.set_parallel(4).unwrap();
    assert_eq!(engine.parallel(), 4);
    engine.reset();
    let batched = together(engine, &prompts, &lens);
    assert_eq!(
        batched, alone,
        "{what}: batched replies differ from single ones"
    );
    // The same prompts again: each sequence reuses its own conversation.
    let again = together(engine, &prompts, &lens);
    assert_eq!(again, alone, "{what}: rerun with cached prefixes");
    for (seq, p) in prompts.iter().enumerate() {
        assert_eq!(engine.pick_sequence(p, &[0, 1, 2, 3]), Some(seq), "{what}");
    }
}

#[test]
fn smollm2_batched_decode_equals_single() {
    let mut engine = Engine::load(&real_model(SMOLLM2), &LoadOptions::default()).unwrap();
    check(&mut engine, "SmolLM2");
}

#[test]
fn gemma3_sequences_together_equal_single() {
    let mut engine = Engine::load(&real_model(GEMMA3), &LoadOptions::default()).unwrap();
    check(&mut engine, "Gemma 3");
}

/// The same on the AVX2 tier (CPUs without AVX-512, forced here where the CPU has more), whose
/// prompts run the one-row kernels in chunks rather than the int8 tiles. Every kernel tier
/// gives the same bits, so the other tests of this binary running meanwhile are unaffected.
#[test]
fn sequences_together_equal_single_on_the_avx2_tier() {
    use mlcli::kernels::cpu::gemv::{force_kernel, kernel, Kernel};
    if kernel() == Kernel::Scalar {
        eprintln!("skipped: this CPU has no AVX2");
        return;
    }
    force_kernel(Some(Kernel::Avx2));
    for (name, what) in [(SMOLLM2, "SmolLM2 (AVX2)"), (GEMMA3, "Gemma 3 (AVX2)")] {
        let mut engine = Engine::load(&real_model(name), &LoadOptions::default()).unwrap();
        check(&mut engine, what);
    }
    force_kernel(None);
}

#[test]
fn recurrent_sequences_together_equal_single() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["qwen3_5", "qwen3"] {
        let path = dir.path().join(format!("{id}.gguf"));
        let spec = mlcli::models::family(id).unwrap();
        testing::write_tiny_gguf(spec, &path, 3, GgmlDType::Q8_0, None).unwrap();
        let mut engine = Engine::load(&path, &LoadOptions::default()).unwrap();
        check(&mut engine, id);
    }
}
