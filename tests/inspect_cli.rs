//! `mlcli inspect` output as users and scripts see it, on both real models: snapshots (insta)
//! of the summary, the compact tensor table and the JSON envelope, with this machine's RAM and
//! GPU figures filtered out; every view answers `--json` with the documented envelope; views
//! exclude each other; a bad pattern or tensor name is a usage error (exit 2).

use std::process::{Command, Output};

use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};
use serde_json::Value;

fn mlcli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(args)
        .output()
        .expect("mlcli runs")
}

/// Runs `mlcli inspect MODEL ARGS`; returns stdout, asserting success and a quiet stderr.
fn inspect(model: &str, args: &[&str]) -> String {
    let path = real_model(model);
    let mut all = vec!["inspect", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = mlcli(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{args:?}: stderr: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 stdout")
}

/// Hides what depends on the machine running the test (RAM, GPU, and what fits in them).
fn machine_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"(fits in RAM +).*", "$1[machine]"),
        (r"(fits on GPU +).*", "$1[machine]"),
        (
            r#"("(?:ram_total|ram_available|gpu_total|gpu_note|fits_(?:ram|gpu)_f(?:16|32))": )[^,\n]+"#,
            r#"$1"[machine]""#,
        ),
    ]
}

macro_rules! snapshot {
    ($name:expr, $text:expr) => {
        insta::with_settings!({filters => machine_filters()}, {
            insta::assert_snapshot!($name, $text);
        });
    };
}

#[test]
fn summary_of_smollm2() {
    snapshot!("summary_smollm2", inspect(SMOLLM2, &[]));
}

#[test]
fn summary_of_gemma3() {
    snapshot!("summary_gemma3", inspect(GEMMA3, &[]));
}

#[test]
fn compact_tensor_table_of_smollm2() {
    snapshot!("tensors_smollm2", inspect(SMOLLM2, &["--tensors"]));
}

#[test]
fn compact_tensor_table_of_gemma3() {
    snapshot!("tensors_gemma3", inspect(GEMMA3, &["--tensors"]));
}

#[test]
fn summary_json_of_smollm2() {
    snapshot!("summary_json_smollm2", inspect(SMOLLM2, &["--json"]));
}

#[test]
fn summary_json_of_gemma3() {
    snapshot!(
        "summary_json_gemma3",
        inspect(GEMMA3, &["--json", "-c", "1024"])
    );
}

#[test]
fn tensor_json_of_one_block() {
    snapshot!(
        "tensors_json_smollm2_block0",
        inspect(SMOLLM2, &["--tensors", r"^blk\.0\.", "--json"])
    );
}

#[test]
fn every_view_answers_json_in_the_envelope() {
    let views: &[(&str, &[&str])] = &[
        ("summary", &[]),
        ("metadata", &["--metadata"]),
        ("tensors", &["--tensors"]),
        ("dump", &["--dump", "output_norm.weight", "--limit", "4"]),
        ("stats", &["--stats", "norm"]),
        ("tokenize", &["--tokenize", "Hi"]),
        ("template", &["--template"]),
        ("logits", &["--logits", "Hi", "--top", "3"]),
        ("layer_trace", &["--layer-trace", "Hi"]),
    ];
    for (view, args) in views {
        let mut all = args.to_vec();
        all.push("--json");
        let v: Value = serde_json::from_str(&inspect(SMOLLM2, &all)).expect("JSON");
        assert_eq!(v["schema_version"], 1, "{view}");
        assert_eq!(v["view"], *view, "{view}");
        assert_eq!(v["file"], SMOLLM2, "{view}");
        assert!(
            v.get(*view).is_some_and(|d| !d.is_null()),
            "{view}: no data"
        );
    }
}

#[test]
fn dump_prints_dequantized_values_of_the_tensor_asked_for() {
    let v: Value = serde_json::from_str(&inspect(
        SMOLLM2,
        &["--dump", "blk.0.attn_q.weight", "--limit", "40", "--json"],
    ))
    .expect("JSON");
    let d = &v["dump"];
    assert_eq!(d["dtype"], "Q4_1");
    assert_eq!(d["elements"], 576 * 576);
    assert_eq!(d["truncated"], true);
    let values = d["values"].as_array().expect("values");
    assert_eq!(values.len(), 40);
    // Q4_1: each block of 32 is d * q + m with q in 0..16, so a block holds at most 16
    // distinct values, and they are evenly spaced.
    let mut block: Vec<f64> = values[..32]
        .iter()
        .map(|x| x.as_f64().expect("f32"))
        .collect();
    block.sort_by(f64::total_cmp);
    block.dedup();
    assert!(
        block.len() <= 16,
        "{} distinct values in a Q4_1 block",
        block.len()
    );
}

#[test]
fn views_exclude_each_other_and_bad_input_is_a_usage_error() {
    let path = real_model(SMOLLM2);
    let p = path.to_str().expect("utf-8 path");
    let both = mlcli(&["inspect", p, "--metadata", "--tensors"]);
    assert_eq!(both.status.code(), Some(2));
    let bad_re = mlcli(&["inspect", p, "--tensors", "("]);
    assert_eq!(bad_re.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_re.stderr).contains("pattern"));
    let missing = mlcli(&["inspect", p, "--dump", "attn_q.weight"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no tensor named 'attn_q.weight'") && err.contains("blk.0.attn_q.weight"),
        "{err}"
    );
}

#[test]
fn metadata_full_expands_arrays_that_the_table_abbreviates() {
    let short: Value =
        serde_json::from_str(&inspect(SMOLLM2, &["--metadata", "--json"])).expect("JSON");
    let full: Value =
        serde_json::from_str(&inspect(SMOLLM2, &["--metadata", "--full", "--json"])).expect("JSON");
    let tokens = |v: &Value| {
        v["metadata"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["key"] == "tokenizer.ggml.tokens")
            .cloned()
            .expect("tokens entry")
    };
    let (s, f) = (tokens(&short), tokens(&full));
    assert_eq!(
        (s["len"].as_u64(), s["truncated"].as_bool()),
        (Some(49152), Some(true))
    );
    assert_eq!(s["value"].as_array().map(Vec::len), Some(8));
    assert_eq!(f["truncated"], false);
    assert_eq!(f["value"].as_array().map(Vec::len), Some(49152));
    assert_eq!(
        f["value"].as_array().map(|v| &v[..8]),
        s["value"].as_array().map(|v| &v[..])
    );
    let text = inspect(SMOLLM2, &["--metadata"]);
    assert!(text.contains("(49152 elements)"), "{text}");
}

#[test]
fn memory_estimate_follows_the_context_size() {
    let at = |c: &str| -> Value {
        let v: Value = serde_json::from_str(&inspect(SMOLLM2, &["--json", "-c", c])).expect("JSON");
        v["summary"]["memory"].clone()
    };
    let (small, large) = (at("1024"), at("0"));
    assert_eq!(large["ctx_size"], 8192, "-c 0 is the model's context");
    // 30 layers × 3 KV heads × (64 + 64) × tokens × 2 bytes.
    assert_eq!(small["kv_cache_f16"], 30 * 3 * 128 * 1024 * 2);
    assert_eq!(large["kv_cache_f32"], 30 * 3 * 128 * 8192 * 4);
    assert_eq!(small["weights"], large["weights"]);
}
