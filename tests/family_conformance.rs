//! Conformance of every registered family on tiny random weights (built with candle's
//! `gguf_file::write`): loads with no unused tensors, finite logits of the right shape,
//! token-by-token decode equals one full prefill, a multi-token chunk after single-token steps
//! equals the full prefill, and a reset gives identical reruns.

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use mlcli::formats::gguf::Gguf;
use mlcli::models::testing::{self, VOCAB};
use mlcli::models::{self, CausalLm, FamilySpec, Tracer, FAMILIES};

const TOKENS: [u32; 11] = [5, 17, 99, 3, 64, 127, 0, 42, 42, 8, 77];

fn load(spec: &FamilySpec, dtype: GgmlDType) -> (tempfile::TempDir, Box<dyn CausalLm>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    testing::write_tiny_gguf(spec, &path, 42, dtype, None).unwrap();
    let gguf = Gguf::open(&path).unwrap();
    let model = models::load_gguf(&gguf, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: tiny model does not load: {e}", spec.id));
    (dir, model)
}

/// Feeds `chunks` in order into a fresh cache; returns the logits after each chunk.
fn feed(model: &dyn CausalLm, chunks: &[&[u32]]) -> Vec<Vec<f32>> {
    let mut cache = models::new_cache(model, 64).unwrap();
    chunks
        .iter()
        .map(|c| {
            models::step(model, c, &Device::Cpu, &mut cache, None)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

fn assert_close(spec: &str, what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
    let max = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        max <= 1e-4 * scale,
        "{spec}: {what}: max |Δ| {max} (scale {scale})"
    );
}

fn each_family(dtype: GgmlDType, check: impl Fn(&FamilySpec, &dyn CausalLm)) {
    for spec in FAMILIES {
        let (_dir, model) = load(spec, dtype);
        check(spec, model.as_ref());
    }
}

#[test]
fn every_family_gives_finite_logits_of_vocab_size() {
    each_family(GgmlDType::F32, |spec, m| {
        let out = feed(m, &[&TOKENS]);
        assert_eq!(out[0].len(), VOCAB, "{}", spec.id);
        assert!(
            out[0].iter().all(|x| x.is_finite()),
            "{}: non-finite logits",
            spec.id
        );
        assert_eq!(m.info().family, spec.id);
        assert_eq!(m.info().kind, spec.kind, "{}", spec.id);
    });
}

#[test]
fn incremental_decode_equals_full_prefill() {
    for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
        each_family(dtype, |spec, m| {
            let full = feed(m, &[&TOKENS]);
            let singles: Vec<&[u32]> = TOKENS.chunks(1).collect();
            let steps = feed(m, &singles);
            assert_close(spec.id, "token-by-token", &full[0], &steps[steps.len() - 1]);
            // Every intermediate step equals the prefill of that prefix.
            for n in [1, 4, 7] {
                let prefix = feed(m, &[&TOKENS[..n]]);
                assert_close(spec.id, &format!("prefix {n}"), &prefix[0], &steps[n - 1]);
            }
        });
    }
}

#[test]
fn chunk_after_single_token_steps_equals_full_prefill() {
    each_family(GgmlDType::F32, |spec, m| {
        let full = feed(m, &[&TOKENS]);
        let mixed = feed(
            m,
            &[&TOKENS[..1], &TOKENS[1..2], &TOKENS[2..3], &TOKENS[3..]],
        );
        assert_close(spec.id, "singles then chunk", &full[0], &mixed[3]);
        let chunks = feed(m, &[&TOKENS[..4], &TOKENS[4..5], &TOKENS[5..]]);
        assert_close(spec.id, "chunk, single, chunk", &full[0], &chunks[2]);
    });
}

#[test]
fn reset_gives_identical_reruns() {
    each_family(GgmlDType::Q8_0, |spec, m| {
        let mut cache = models::new_cache(m, 64).unwrap();
        let step = |cache: &mut models::Cache| -> Vec<f32> {
            models::step(m, &TOKENS, &Device::Cpu, cache, None)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let a = step(&mut cache);
        cache.reset();
        let b = step(&mut cache);
        assert_eq!(a, b, "{}: rerun after reset differs", spec.id);
    });
}

struct CountingTracer(Vec<usize>);

impl Tracer for CountingTracer {
    fn record(&mut self, layer: usize, point: &str, value: &Tensor) {
        assert_eq!(point, "block_out");
        assert_eq!(value.dims3().unwrap().2, testing::HIDDEN);
        self.0.push(layer);
    }
}

#[test]
fn every_family_reports_each_block_to_the_tracer() {
    each_family(GgmlDType::F32, |spec, m| {
        let mut cache = models::new_cache(m, 64).unwrap();
        let mut tracer = CountingTracer(Vec::new());
        models::step(m, &TOKENS[..3], &Device::Cpu, &mut cache, Some(&mut tracer)).unwrap();
        let want: Vec<usize> = (0..m.info().n_layers).collect();
        assert_eq!(tracer.0, want, "{}: tracer calls", spec.id);
    });
}

#[test]
fn long_prefill_through_the_dense_path_agrees_with_incremental_decode() {
    // Chunks take the dequantize-and-GEMM prefill path; single tokens take quantized dot
    // products (8-bit activations), hence the looser tolerance.
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % VOCAB as u32).collect();
    // Q4_1 single tokens take our own SIMD kernel (`layers::q4_1`).
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1] {
        each_family(dtype, |spec, m| {
            let full = feed(m, &[&tokens]);
            let singles: Vec<&[u32]> = tokens.chunks(1).collect();
            let steps = feed(m, &singles);
            let last = &steps[steps.len() - 1];
            let scale = full[0].iter().fold(1f32, |a, x| a.max(x.abs()));
            let max = full[0]
                .iter()
                .zip(last)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(
                max <= 0.05 * scale,
                "{}: {dtype:?}: max |Δ| {max} (scale {scale})",
                spec.id
            );
        });
    }
}
