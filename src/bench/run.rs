//! Running one test on a loaded engine, through the engine's own decode loop: like
//! llama-bench, the forward passes see seeded random token ids (BOS first when the model adds
//! one), the test starts from an empty cache filled to its depth, and a warm-up run is left out.
//! Tokenization (of English text of the prompt's length) and sampling are timed apart from the
//! forward passes, which alone count towards tokens per second.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::memory::{self, GpuMemoryMonitor};
use super::report::Row;
use super::stats;
use super::sweep::Case;
use crate::engine::{Engine, GenerateParams, SamplingParams, StopReason};
use crate::formats::tokenizer::EncodeOptions;
use crate::models::synthetic::Rng;
use crate::{Error, Result};

/// English text whose tokenization is timed (repeated to the prompt's length).
const PASSAGE: &str = "The lighthouse keeper climbed the spiral stairs every evening at dusk, \
counting the one hundred and twelve steps out of habit rather than need. From the lamp room he \
could see the fishing boats returning to the harbour, their wakes drawing pale lines across the \
darkening water. He wound the clockwork, trimmed the wick, and wrote the weather in his log: \
wind from the south-west, a light swell, visibility good. Later, when the beam swept across the \
rocks, he would make tea and read until midnight, listening to the sea. ";

/// The model a row belongs to, as known before the tests run.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFacts {
    /// Display name.
    pub name: String,
    /// The file, or `synthetic:PRESET`.
    pub file: String,
    /// Family, size class and file type, e.g. `llama 135M Q4_1`.
    pub model_type: String,
    /// Bytes of tensor data.
    pub size: u64,
    /// Parameters.
    pub n_params: u64,
    /// Seconds to load or build it.
    pub load_s: f64,
    /// Whether the tokenizer is a real one (its timing is then reported).
    pub real_tokenizer: bool,
}

/// How tests are run and labelled.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Measured repetitions.
    pub repetitions: usize,
    /// Run the test once first, unmeasured.
    pub warmup: bool,
    /// Seed of the token ids and the sampler.
    pub seed: u64,
    /// CPU threads (as configured for this process).
    pub n_threads: usize,
    /// `CPU`, `CUDA`, `Metal`.
    pub backend: String,
    /// Device label, e.g. `cpu`.
    pub device: String,
    /// Activation type label.
    pub dtype: String,
    /// Prompt tokens per forward pass (the engine's batch size).
    pub n_batch: usize,
    /// Sample this process's GPU memory during the test.
    pub monitor_gpu: bool,
}

/// What one repetition measured.
struct Sample {
    forward: Duration,
    ttft: Duration,
    gaps: Vec<Duration>,
    sampling: Duration,
    tokenize: Option<Duration>,
}

/// The test's token ids, drawn like llama-bench draws them.
fn token_ids(engine: &Engine, n: usize, seed: u64) -> Vec<u32> {
    let vocab = engine.info().vocab_size.max(1) as u64;
    let mut rng = Rng::new(seed);
    let tok = engine.tokenizer();
    let bos = tok.bos_id().filter(|_| tok.adds_bos());
    (0..n)
        .map(|i| match bos {
            Some(b) if i == 0 => b,
            _ => (rng.next_u64() % vocab) as u32,
        })
        .collect()
}

/// English text of at least `n` tokens.
fn text_of(engine: &Engine, n: usize) -> Result<String> {
    let opts = EncodeOptions {
        add_bos: false,
        parse_special: false,
    };
    let per = engine.tokenizer().encode(PASSAGE, opts)?.len().max(1);
    Ok(PASSAGE.repeat(n.div_ceil(per).max(1)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `case` on `engine` and summarises it as a row.
pub fn run_case(
    engine: &mut Engine,
    case: &Case,
    model: &ModelFacts,
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) -> Result<Row> {
    let t = case.test;
    let needed = t.ctx_needed();
    let ctx = if case.ctx == 0 { needed } else { case.ctx };
    engine.set_ctx_size(ctx)?;
    engine.ensure_fits(needed)?;
    // A tg test feeds one token as its "prompt", then one per generated token but the last.
    let prompt_len = t.n_depth + t.n_prompt.max(1);
    let ids = token_ids(engine, prompt_len, settings.seed);
    let max_tokens = match (t.n_prompt, t.n_gen) {
        (_, 0) => 1,
        (0, n) => n,
        (_, n) => n + 1,
    };
    let params = GenerateParams {
        sampling: SamplingParams {
            seed: settings.seed,
            ..SamplingParams::default()
        },
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let text = if model.real_tokenizer && t.n_prompt > 0 {
        Some(text_of(engine, t.n_prompt)?)
    } else {
        None
    };
    memory::reset_peak_rss();
    let gpu = settings
        .monitor_gpu
        .then(|| GpuMemoryMonitor::start(Duration::from_millis(100)));
    let warmups = usize::from(settings.warmup);
    let mut samples = Vec::with_capacity(settings.repetitions);
    for i in 0..warmups + settings.repetitions {
        let label = if i < warmups {
            "warm-up".to_string()
        } else {
            format!("run {}/{}", i + 1 - warmups, settings.repetitions)
        };
        progress(&format!("{} {}: {label}", model.name, t));
        engine.reset();
        if t.n_depth > 0 {
            engine.feed(&ids[..t.n_depth])?;
        }
        let tokenize = match &text {
            Some(text) => {
                let start = Instant::now();
                let n = engine
                    .tokenizer()
                    .encode(
                        text,
                        EncodeOptions {
                            add_bos: false,
                            parse_special: false,
                        },
                    )?
                    .len();
                // Scale to the prompt's length (the text holds a few more tokens).
                let per_token = start.elapsed().as_secs_f64() / n.max(1) as f64;
                Some(Duration::from_secs_f64(per_token * t.n_prompt as f64))
            }
            None => None,
        };
        let stats = engine.generate(&ids, &params, &mut |_| ControlFlow::Continue(()))?;
        if stats.stop_reason != StopReason::MaxTokens || stats.generated_tokens != max_tokens {
            return Err(Error::Internal(format!(
                "{t}: generation stopped after {} of {max_tokens} tokens ({:?})",
                stats.generated_tokens, stats.stop_reason
            )));
        }
        if i < warmups {
            continue;
        }
        let times = &stats.token_times;
        samples.push(Sample {
            forward: stats.prompt_time + stats.decode_forward_time,
            ttft: times.first().copied().unwrap_or_default(),
            gaps: times.windows(2).map(|w| w[1] - w[0]).collect(),
            sampling: stats.sampling_time,
            tokenize,
        });
    }
    let peak_gpu_bytes = gpu.and_then(GpuMemoryMonitor::finish);
    Ok(summarise(
        case,
        ctx,
        model,
        settings,
        &samples,
        peak_gpu_bytes,
    ))
}

fn summarise(
    case: &Case,
    n_ctx: usize,
    model: &ModelFacts,
    settings: &Settings,
    samples: &[Sample],
    peak_gpu_bytes: Option<u64>,
) -> Row {
    let t = case.test;
    let ns: Vec<f64> = samples
        .iter()
        .map(|s| s.forward.as_nanos() as f64)
        .collect();
    let ts: Vec<f64> = ns.iter().map(|ns| t.n_tokens() as f64 * 1e9 / ns).collect();
    let gaps: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.gaps.iter().map(|g| ms(*g)))
        .collect();
    let tokenize: Vec<f64> = samples.iter().filter_map(|s| s.tokenize.map(ms)).collect();
    let mean_ms = |f: fn(&Sample) -> Duration| {
        stats::mean(&samples.iter().map(|s| ms(f(s))).collect::<Vec<_>>())
    };
    Row {
        model: model.name.clone(),
        model_file: model.file.clone(),
        model_type: model.model_type.clone(),
        model_size: model.size,
        model_n_params: model.n_params,
        backend: settings.backend.clone(),
        device: settings.device.clone(),
        dtype: settings.dtype.clone(),
        n_threads: settings.n_threads,
        n_batch: settings.n_batch,
        n_ctx,
        n_prompt: t.n_prompt,
        n_gen: t.n_gen,
        n_depth: t.n_depth,
        test: t.to_string(),
        repetitions: samples.len(),
        samples_ns: ns.iter().map(|&x| x as u64).collect(),
        avg_ns: stats::mean(&ns) as u64,
        stddev_ns: stats::stddev(&ns) as u64,
        avg_ts: stats::mean(&ts),
        stddev_ts: stats::stddev(&ts),
        median_ts: stats::median(&ts).unwrap_or(0.0),
        samples_ts: ts,
        ttft_ms: mean_ms(|s| s.ttft),
        itl_p50_ms: stats::percentile(&gaps, 50.0),
        itl_p95_ms: stats::percentile(&gaps, 95.0),
        tokenize_ms: (!tokenize.is_empty()).then(|| stats::mean(&tokenize)),
        sampling_ms: mean_ms(|s| s.sampling),
        load_s: model.load_s,
        peak_rss_bytes: memory::peak_rss_bytes(),
        peak_gpu_bytes,
        memory_read_gbs: None,
        weights_read_bytes: None,
    }
}
