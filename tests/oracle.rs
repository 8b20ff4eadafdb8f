//! The reference oracle: mlcli's logits against transformers' for tiny random-weight
//! checkpoints of every family (one directory per case, made on first use by
//! `scripts/oracle/run.sh` into mlcli's cache, see `models::testing::oracle_fixtures`:
//! transformers 5 wrote the safetensors and config.json, llama.cpp's converter the GGUF).
//! Each case is fed one token at a time (the decode path, against transformers' logits with
//! its KV cache) and all at once (the prompt path); every position must agree with
//! transformers: relative RMS error under 5e-3 of the logits'
//! RMS, the same top-1 (unless transformers' top two are closer than our error), and at least
//! 4 of the top 5.

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use mlcli::formats::gguf::Gguf;
use mlcli::formats::hf_config::HfConfig;
use mlcli::formats::weights::{Precision, Quant};
use mlcli::models::{self, CausalLm, FAMILIES};
use serde_json::Value;

/// Bound on the relative RMS error of f16-weight forms (the f16 KV cache rounds too).
const REL_RMS: f32 = 5e-3;
/// Bound for in-situ Q8_0 quantization of the safetensors weights.
const REL_RMS_Q8_0: f32 = 5e-2;

struct Case {
    dir: PathBuf,
    name: String,
    family: String,
    /// Why the case has no GGUF (what llama.cpp's converter cannot write), if it has none.
    gguf_skip: Option<String>,
    tokens: Vec<u32>,
    /// transformers' logits at every position, from one pass over all tokens.
    logits: Vec<Vec<f32>>,
    /// transformers' logits at every position, one token per pass (its KV cache).
    logits_stepwise: Vec<Vec<f32>>,
}

fn oracle_dir() -> PathBuf {
    models::testing::oracle_fixtures()
}

fn cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(oracle_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("oracle.json").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("oracle.json")).unwrap())
                    .unwrap();
            let nums = |v: &Value| -> Vec<f32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            };
            Case {
                name: v["case"].as_str().unwrap().to_string(),
                family: v["family"].as_str().unwrap().to_string(),
                gguf_skip: v["gguf_skip"].as_str().map(String::from),
                tokens: nums(&v["tokens"]).into_iter().map(|t| t as u32).collect(),
                logits: v["logits"].as_array().unwrap().iter().map(nums).collect(),
                logits_stepwise: v["logits_stepwise"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(nums)
                    .collect(),
                dir,
            }
        })
        .collect()
}

/// How far `ours` is from `reference` at one position.
struct Agreement {
    rel_rms: f32,
    top1_same: bool,
    near_tie: bool,
    top5_shared: usize,
}

fn top(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

fn agreement(ours: &[f32], reference: &[f32]) -> Agreement {
    let n = reference.len() as f32;
    let err = (ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        / n)
        .sqrt();
    let scale = (reference.iter().map(|b| b * b).sum::<f32>() / n).sqrt();
    let max_err = ours
        .iter()
        .zip(reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let (t_ours, t_ref) = (top(ours, 5), top(reference, 5));
    Agreement {
        rel_rms: err / scale.max(1e-12),
        top1_same: t_ours[0] == t_ref[0],
        near_tie: reference[t_ref[0]] - reference[t_ref[1]] <= 2.0 * max_err,
        top5_shared: t_ours.iter().filter(|t| t_ref.contains(t)).count(),
    }
}

/// Logits at every position, one token per pass, and the last position of one pass over all.
fn run(model: &dyn CausalLm, tokens: &[u32]) -> (Vec<Vec<f32>>, Vec<f32>) {
    let ctx = tokens.len().max(64);
    let mut cache = models::new_cache(model, ctx).unwrap();
    let stepwise = tokens
        .iter()
        .map(|t| {
            models::step(model, &[*t], &Device::Cpu, &mut cache, None)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    let mut cache = models::new_cache(model, ctx).unwrap();
    let whole = models::step(model, tokens, &Device::Cpu, &mut cache, None)
        .unwrap()
        .to_vec1()
        .unwrap();
    (stepwise, whole)
}

/// Checks `model` against the case: the first disagreement, if any. Prints the worst
/// relative RMS error, the positions with the same top-1 and the fewest top-5 shared.
fn check(case: &Case, form: &str, model: &dyn CausalLm, bound: f32) -> Option<String> {
    let (stepwise, whole) = run(model, &case.tokens);
    let last = case.logits.len() - 1;
    let mut worst = (0f32, 0usize, 5usize);
    let mut failure = None;
    let rows = stepwise
        .iter()
        .enumerate()
        .map(|(i, ours)| (format!("position {i}"), ours, &case.logits_stepwise[i]))
        .chain(std::iter::once((
            format!("position {last}, whole prompt"),
            &whole,
            &case.logits[last],
        )));
    for (at, ours, reference) in rows {
        let a = agreement(ours, reference);
        let why = if a.rel_rms >= bound {
            Some(format!(
                "relative RMS error {:.2e} ≥ {bound:.0e}",
                a.rel_rms
            ))
        } else if !a.top1_same && !a.near_tie {
            Some("top-1 differs from transformers'".to_string())
        } else if a.top5_shared < 4 {
            Some(format!("only {} of transformers' top 5", a.top5_shared))
        } else {
            None
        };
        if let (Some(why), None) = (why, &failure) {
            failure = Some(format!("{} ({form}), {at}: {why}", case.name));
        }
        worst.0 = worst.0.max(a.rel_rms);
        worst.1 += usize::from(a.top1_same);
        worst.2 = worst.2.min(a.top5_shared);
    }
    eprintln!(
        "oracle: {:<24} {:<12} worst rel. RMS {:.1e}, top-1 same at {}/{} positions, top-5 shared ≥ {}",
        case.name,
        form,
        worst.0,
        worst.1,
        case.tokens.len() + 1,
        worst.2
    );
    failure
}

/// Runs `check` over every case `load` gives a model for and fails naming every case that
/// disagrees.
fn check_all(form: &str, bound: f32, load: impl Fn(&Case) -> Option<Box<dyn CausalLm>>) {
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|case| check(case, form, load(case)?.as_ref(), bound))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn safetensors(case: &Case, quant: Option<Quant>) -> Box<dyn CausalLm> {
    let config = HfConfig::from_file(&case.dir.join("config.json")).unwrap();
    let precision = Precision {
        dtype: DType::F32,
        quant,
    };
    models::load_safetensors(
        &config,
        &[case.dir.join("model.safetensors")],
        precision,
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}: safetensors do not load: {e}", case.name))
}

#[test]
fn every_family_has_an_oracle_case() {
    let cases = cases();
    for spec in FAMILIES {
        assert!(
            cases.iter().any(|c| c.family == spec.id),
            "family '{}' has no case in scripts/oracle/cases.py",
            spec.id
        );
    }
    for c in &cases {
        assert!(
            FAMILIES.iter().any(|f| f.id == c.family),
            "oracle case {} names an unknown family '{}'",
            c.name,
            c.family
        );
    }
}

#[test]
fn safetensors_written_by_transformers_match_its_logits() {
    check_all("safetensors", REL_RMS, |case| Some(safetensors(case, None)));
}

#[test]
fn gguf_written_by_llama_cpp_converter_matches_transformers() {
    check_all("gguf", REL_RMS, |case| {
        if let Some(why) = &case.gguf_skip {
            eprintln!("oracle: {:<24} gguf         none: {why}", case.name);
            return None;
        }
        let gguf = Gguf::open(&case.dir.join("model.gguf")).unwrap();
        Some(
            models::load_gguf(&gguf, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: GGUF does not load: {e}", case.name)),
        )
    });
}

#[test]
fn q8_0_quantized_in_situ_stays_near_transformers() {
    check_all("q8_0", REL_RMS_Q8_0, |case| {
        Some(safetensors(case, Some(GgmlDType::Q8_0.into())))
    });
}

/// The worst relative RMS error of `model` against the case, over every position.
fn worst_rel_rms(case: &Case, model: &dyn CausalLm) -> f32 {
    let (stepwise, whole) = run(model, &case.tokens);
    let last = case.logits.len() - 1;
    stepwise
        .iter()
        .zip(&case.logits_stepwise)
        .chain(std::iter::once((&whole, &case.logits[last])))
        .map(|(ours, reference)| agreement(ours, reference).rel_rms)
        .fold(0f32, f32::max)
}

/// In-situ MXFP4 (`--quant mxfp4`) against transformers' f16 logits. Four-bit weights move
/// these random-weight models' logits by 5–90% of their RMS, so the oracle's top-k rules do
/// not apply; the bound is MXFP4's peer instead: Q4_0 (4.5 bits a weight, an f16 scale per
/// 32) quantized the same way. MXFP4 (4.25 bits, a power-of-two scale per 32, values on the
/// e2m1 grid) may be somewhat worse, and on every case it is at most 1.5 times Q4_0's error
/// (1.33 at worst when this was written), which a wrong block layout, scale or rounding would
/// exceed by far.
#[test]
fn mxfp4_quantized_in_situ_stays_as_near_transformers_as_q4_0() {
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|case| {
            let mx = worst_rel_rms(case, safetensors(case, Some(Quant::Mxfp4)).as_ref());
            let q4 = worst_rel_rms(
                case,
                safetensors(case, Some(GgmlDType::Q4_0.into())).as_ref(),
            );
            eprintln!(
                "oracle: {:<24} mxfp4        worst rel. RMS {mx:.1e} (q4_0 {q4:.1e})",
                case.name
            );
            (mx > 1.5 * q4).then(|| format!("{}: MXFP4 {mx:.2e} > 1.5 × Q4_0 {q4:.2e}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
