//! The safetensors path on a real checkpoint: SmolLM2 exported from its GGUF by `mlcli export`
//! (dequantized weights, un-permuted Q/K, tokenizer.json from the GGUF vocabulary) tokenizes
//! exactly like the GGUF, and — as f32 and quantized in situ to Q8_0 — matches llama.cpp's
//! greedy reference up to the robust prefix with first-step logits close to the GGUF run's.

mod reference;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use mlcli::convert::{self, ExportOptions};
use mlcli::engine::{Engine, GenerateParams, LoadOptions, SamplingParams};
use mlcli::formats::gguf::Gguf;
use mlcli::formats::tokenizer::{EncodeOptions, HfSpecials, Tokenizer};
use mlcli::formats::weights::Precision;
use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};
use reference::{ids, reference};
use serde_json::Value;

/// `file` exported into the test's scratch directory (re-exported every run, so it always
/// reflects the current exporter).
fn export(file: &str, dtype: DType) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("safetensors_parity-{file}"));
    let _ = std::fs::remove_dir_all(&dir);
    let gguf = Gguf::open(&real_model(file)).expect("GGUF opens");
    let opts = ExportOptions {
        dtype,
        ..ExportOptions::default()
    };
    convert::gguf_to_hf(&gguf, &dir, opts).expect("export works");
    dir
}

/// The SmolLM2 checkpoint (f32), exported once per test process.
fn exported() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| export(SMOLLM2, DType::F32))
}

/// Gemma 3 (bf16: SentencePiece tokenizer, folded norms, 262k vocabulary).
fn exported_gemma() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| export(GEMMA3, DType::BF16))
}

fn smollm2_case() -> Value {
    reference()["greedy_cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["model_file"].as_str() == Some(SMOLLM2))
        .expect("a SmolLM2 case")
        .clone()
}

fn load(path: &Path, quant: Option<GgmlDType>) -> Engine {
    Engine::load(
        path,
        &LoadOptions {
            device: Device::Cpu,
            ctx_size: Some(512),
            precision: Precision {
                dtype: DType::F32,
                quant: quant.map(Into::into),
            },
            ..LoadOptions::default()
        },
    )
    .expect("model loads")
}

fn top(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    order.truncate(k);
    order
}

#[test]
fn exported_tokenizer_json_tokenizes_like_the_gguf() {
    check_tokenizer(exported(), SMOLLM2, "smollm2");
}

#[test]
fn exported_sentencepiece_tokenizer_json_tokenizes_like_the_gguf() {
    check_tokenizer(exported_gemma(), GEMMA3, "gemma3");
}

fn check_tokenizer(dir: &Path, file: &str, key: &str) {
    let specials = HfSpecials::from_tokenizer_config(
        &serde_json::from_str(
            &std::fs::read_to_string(dir.join("tokenizer_config.json")).expect("config"),
        )
        .expect("JSON"),
    );
    let hf = Tokenizer::from_hf(&dir.join("tokenizer.json"), &specials).expect("tokenizer.json");
    let gguf = Gguf::open(&real_model(file)).expect("GGUF");
    let native = Tokenizer::from_gguf(gguf.content()).expect("GGUF tokenizer");
    let mut texts: Vec<String> = reference()["tokenizer_cases"][key]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["text"].as_str().expect("text").to_string())
        .collect();
    for case in reference()["greedy_cases"].as_array().expect("cases") {
        if case["model_file"].as_str() == Some(file) {
            texts.push(case["rendered_prompt"].as_str().expect("prompt").into());
        }
    }
    texts.push(
        "Mixed: naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, عربى, emoji 🦀🚀, \
         tabs\tand\nnewlines,  double  spaces, numbers 1234567 3.14159, code `fn main() {}` \
         <|im_start|>user <start_of_turn>model"
            .into(),
    );
    for text in &texts {
        for parse_special in [false, true] {
            let opts = EncodeOptions {
                add_bos: true,
                parse_special,
            };
            let want = native.encode(text, opts).expect("GGUF encodes");
            let got = hf.encode(text, opts).expect("tokenizer.json encodes");
            assert_eq!(got, want, "{text:?} (parse_special {parse_special})");
            assert_eq!(hf.decode(&got), native.decode(&want), "{text:?}");
        }
    }
    assert_eq!(hf.vocab_size(), native.vocab_size());
    assert_eq!(hf.bos_id(), native.bos_id());
    assert_eq!(hf.eos_id(), native.eos_id());
    assert_eq!(hf.adds_bos(), native.adds_bos());
    assert_eq!(hf.end_of_generation_ids(), native.end_of_generation_ids());
}

/// Greedy ids up to the robust prefix equal llama.cpp's; first-step logits agree with the GGUF
/// run's (same top-1, at least 4 of its top-5).
fn assert_matches_reference_and_gguf(quant: Option<GgmlDType>) {
    let case = smollm2_case();
    let prompt = ids(&case["prompt_token_ids"]);
    let mut st = load(exported(), quant);
    let mut gguf = load(&real_model(SMOLLM2), None);
    assert_eq!(
        st.raw_tokens(case["rendered_prompt"].as_str().expect("prompt"), false)
            .expect("tokenizes"),
        prompt
    );
    let a = st.feed(&prompt).expect("safetensors forward");
    let b = gguf.feed(&prompt).expect("GGUF forward");
    let (ta, tb) = (top(&a, 5), top(&b, 5));
    assert_eq!(ta[0], tb[0], "{quant:?}: top-1 {ta:?} vs GGUF {tb:?}");
    let shared = ta.iter().filter(|i| tb.contains(i)).count();
    assert!(shared >= 4, "{quant:?}: top-5 {ta:?} vs GGUF {tb:?}");
    let set: HashSet<u32> = ta.into_iter().collect();
    assert!(set.contains(&ids(&case["generated_token_ids"])[0]));

    let robust = case["robust_prefix_len"].as_u64().expect("robust") as usize;
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(robust),
        ignore_eos: true,
        ..GenerateParams::default()
    };
    st.reset();
    let stats = st
        .generate(&prompt, &params, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("generates");
    assert_eq!(
        stats.tokens,
        ids(&case["generated_token_ids"])[..robust],
        "{quant:?}: greedy ids"
    );
}

#[test]
fn f32_safetensors_matches_llama_cpp_and_the_gguf() {
    assert_matches_reference_and_gguf(None);
}

#[test]
fn q8_0_in_situ_quantization_matches_llama_cpp_and_the_gguf() {
    assert_matches_reference_and_gguf(Some(GgmlDType::Q8_0));
}

#[test]
fn sharded_export_loads_through_its_index_like_a_single_file() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("safetensors_parity-sharded");
    let _ = std::fs::remove_dir_all(&dir);
    let gguf = Gguf::open(&real_model(SMOLLM2)).expect("GGUF");
    let summary = convert::gguf_to_hf(
        &gguf,
        &dir,
        ExportOptions {
            dtype: DType::BF16,
            max_shard_bytes: 100 << 20,
        },
    )
    .expect("export");
    let shards = summary
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "safetensors"))
        .count();
    assert!(shards >= 2, "{:?}", summary.files);
    assert!(dir.join("model.safetensors.index.json").is_file());
    let case = smollm2_case();
    let prompt = ids(&case["prompt_token_ids"]);
    let mut sharded = load(&dir, None);
    let mut single = load(exported(), None);
    let (a, b) = (
        sharded.feed(&prompt).expect("sharded"),
        single.feed(&prompt).expect("single"),
    );
    // bf16 weights against f32 ones: the same winner, logits within rounding.
    assert_eq!(top(&a, 1), top(&b, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gemma3_bf16_safetensors_agrees_with_its_gguf() {
    let case = reference()["greedy_cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["model_file"].as_str() == Some(GEMMA3))
        .expect("a Gemma 3 case")
        .clone();
    let prompt = ids(&case["prompt_token_ids"]);
    let mut st = load(exported_gemma(), None);
    let mut gguf = load(&real_model(GEMMA3), None);
    let (a, b) = (
        st.feed(&prompt).expect("safetensors"),
        gguf.feed(&prompt).expect("GGUF"),
    );
    let (ta, tb) = (top(&a, 5), top(&b, 5));
    assert_eq!(ta[0], tb[0], "top-1 {ta:?} vs GGUF {tb:?}");
    assert!(
        ta.iter().filter(|i| tb.contains(i)).count() >= 4,
        "{ta:?} vs {tb:?}"
    );
}
