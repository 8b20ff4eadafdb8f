//! `mlcli bench` end to end with the real binary on tiny random-weight models (schema only:
//! performance is never asserted): the JSON schema snapshot, every test kind and depth, the
//! formats, thread sweeps in child processes, `bench compare` and `--max-regress` exit codes on
//! crafted reports, and usage errors.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn mlcli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(args)
        .output()
        .expect("mlcli runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes the tiny synthetic llama to `dir/tiny.gguf` through `--write-gguf`.
fn tiny_gguf(dir: &Path) -> String {
    let path = dir.join("tiny.gguf");
    let p = path.to_str().unwrap().to_string();
    let (code, _, err) = mlcli(&[
        "bench",
        "--synthetic",
        "llama-tiny:q8_0",
        "--write-gguf",
        &p,
    ]);
    assert_eq!(code, Some(0), "{err}");
    p
}

/// The shape of a JSON value: leaves become their type names, arrays their first element's.
fn schema(v: &Value) -> Value {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "integer".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => Value::Array(a.first().map(schema).into_iter().collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), schema(v))).collect()),
    }
}

// Peak RSS comes from Linux's /proc; elsewhere it is null and the schema differs.
#[cfg(target_os = "linux")]
#[test]
fn a_tiny_model_file_is_benchmarked_end_to_end_with_the_snapshot_schema() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf(dir.path());
    let (code, out, err) = mlcli(&[
        "bench", "-m", &model, "-r", "1", "-p", "8", "-n", "4", "--pg", "8,4", "-d", "0,4", "-o",
        "json", "--device", "cpu",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.is_empty(),
        "progress must stay off when stderr is not a terminal: {err}"
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    let rows = report["results"].as_array().unwrap();
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(
        tests,
        [
            "pp8",
            "tg4",
            "pp8+tg4",
            "pp8 @ d4",
            "tg4 @ d4",
            "pp8+tg4 @ d4"
        ]
    );
    for r in rows {
        let test = r["test"].as_str().unwrap();
        assert_eq!(r["repetitions"], 1, "{test}");
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 1, "{test}");
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0, "{test}");
        assert!(r["ttft_ms"].as_f64().unwrap() > 0.0, "{test}");
        let generates = r["n_gen"].as_u64().unwrap() > 0;
        assert_eq!(r["itl_p50_ms"].is_number(), generates, "{test}");
        assert_eq!(r["tokenize_ms"].is_number(), r["n_prompt"] != 0, "{test}");
        let needed = r["n_depth"].as_u64().unwrap()
            + r["n_prompt"].as_u64().unwrap()
            + r["n_gen"].as_u64().unwrap();
        assert_eq!(r["n_ctx"].as_u64().unwrap(), needed, "{test}");
        assert_eq!(r["peak_gpu_bytes"], Value::Null);
    }
    let m = &report["record"]["models"][0];
    assert_eq!(m["sha256_prefix"].as_str().unwrap().len(), 16);
    assert_eq!(m["quant_mix"][0]["type"], "Q8_0");
    // Lists of names whose length depends on the build and the machine.
    let mut report = report;
    for key in ["features", "cpu_features", "simd_in_use"] {
        report["record"][key] = serde_json::json!(["name"]);
    }
    insta::assert_json_snapshot!("bench_json_schema", schema(&report));
}

#[test]
fn synthetic_models_run_in_memory_and_every_format_has_one_row_per_test() {
    let args = [
        "bench",
        "--synthetic",
        "llama-tiny:q4_0",
        "-r",
        "1",
        "-p",
        "8",
        "-n",
        "4",
    ];
    let run = |format: &str| {
        let (code, out, err) = mlcli(&[&args[..], &["-o", format]].concat());
        assert_eq!(code, Some(0), "{format}: {err}");
        out
    };
    let lines: Vec<Value> = run("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["model_file"], "synthetic:llama-tiny:q4_0");
    assert_eq!(
        lines[0]["record"]["models"][0]["sha256_prefix"],
        Value::Null
    );
    // A made-up tokenizer's speed means nothing: not reported.
    assert_eq!(lines[0]["tokenize_ms"], Value::Null);
    let csv = run("csv");
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.lines().next().unwrap().starts_with("model,model_file,"));
    let md = run("md");
    assert!(md.lines().nth(2).unwrap().contains("| pp8 |"), "{md}");
    assert!(md.contains("| tg4 |") && md.contains("\nmlcli "), "{md}");
}

#[test]
fn several_thread_counts_run_one_child_each_and_merge() {
    let (code, out, err) = mlcli(&[
        "bench",
        "--synthetic",
        "llama-tiny:q4_0",
        "-r",
        "1",
        "-p",
        "8",
        "-n",
        "0",
        "-t",
        "1-2",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let threads: Vec<u64> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n_threads"].as_u64().unwrap())
        .collect();
    assert_eq!(threads, [1, 2]);
    assert_eq!(report["record"]["models"].as_array().unwrap().len(), 1);
}

/// A report with one row per `(test, avg_ts)`.
fn crafted(dir: &Path, name: &str, rows: &[(&str, f64)]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(test, ts)| {
            serde_json::json!({
                "model": "m", "model_file": "m.gguf", "model_type": "llama 1M Q8_0",
                "model_size": 1000, "model_n_params": 1000, "backend": "CPU", "device": "cpu",
                "dtype": "f32", "n_threads": 2, "n_batch": 512, "n_ctx": 512, "n_prompt": 512,
                "n_gen": 0, "n_depth": 0, "test": test, "repetitions": 1,
                "samples_ns": [1], "samples_ts": [ts], "avg_ns": 1, "stddev_ns": 0,
                "avg_ts": ts, "stddev_ts": 0.0, "median_ts": ts, "ttft_ms": 1.0,
                "itl_p50_ms": null, "itl_p95_ms": null, "tokenize_ms": null,
                "sampling_ms": 0.0, "load_s": 0.0, "peak_rss_bytes": null,
                "peak_gpu_bytes": null
            })
        })
        .collect();
    let report = serde_json::json!({
        "schema": "mlcli-bench/1",
        "record": mlcli::bench::record::machine_record(),
        "results": rows,
    });
    let path = dir.join(name);
    std::fs::write(&path, report.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn compare_prints_ratios_and_max_regress_sets_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let old = crafted(dir.path(), "old.json", &[("pp512", 100.0), ("tg128", 50.0)]);
    let new = crafted(dir.path(), "new.json", &[("pp512", 97.0), ("tg128", 40.0)]);
    let (code, out, err) = mlcli(&["bench", "compare", &old, &new]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("| m | pp512 | 2 | cpu | 100.00 ± 0.00 | 97.00 ± 0.00 | 0.970 |"),
        "{out}"
    );
    assert!(out.contains("| 0.800 |"), "{out}");
    let gate = |limit: &str| mlcli(&["bench", "compare", &old, &new, "--max-regress", limit]);
    let (code, _, err) = gate("5%");
    assert_eq!(code, Some(1), "tg128 is 20% slower: {err}");
    assert!(
        err.contains("1 row(s) slower") && err.contains("tg128"),
        "{err}"
    );
    assert_eq!(gate("25%").0, Some(0));
    assert_eq!(gate("fast").0, Some(2));
    let other = crafted(dir.path(), "other.json", &[("pp64", 1.0)]);
    let (code, _, err) = mlcli(&["bench", "compare", &old, &other]);
    assert_eq!(code, Some(2), "no common row: {err}");
    std::fs::write(dir.path().join("junk.json"), "{}").unwrap();
    let junk = dir.path().join("junk.json");
    assert_eq!(
        mlcli(&["bench", "compare", &old, junk.to_str().unwrap()]).0,
        Some(2)
    );
}

#[test]
fn a_run_against_a_baseline_fails_only_beyond_max_regress() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--synthetic",
        "llama-tiny:q4_0",
        "-r",
        "1",
        "-p",
        "8",
        "-n",
        "0",
    ];
    let (code, out, err) = mlcli(&[&args[..], &["-o", "json"]].concat());
    assert_eq!(code, Some(0), "{err}");
    let mut report: Value = serde_json::from_str(&out).unwrap();
    for (name, ts) in [("fast.json", 1e12), ("slow.json", 1e-3)] {
        report["results"][0]["avg_ts"] = ts.into();
        std::fs::write(dir.path().join(name), report.to_string()).unwrap();
    }
    let with = |baseline: &str| {
        let b = dir.path().join(baseline);
        let b = b.to_str().unwrap().to_string();
        mlcli(&[&args[..], &["--baseline", &b, "--max-regress", "5%"]].concat())
    };
    let (code, out, err) = with("fast.json");
    assert_eq!(code, Some(1), "far slower than a 1e12 t/s baseline: {err}");
    assert!(
        out.contains("| pp8 |"),
        "the report still goes to stdout: {out}"
    );
    assert!(err.contains("| baseline t/s |"), "{err}");
    assert_eq!(with("slow.json").0, Some(0));
}

#[test]
fn bad_flags_are_usage_errors_that_say_what_is_expected() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench"], "no model"),
        (&["bench", "--synthetic", "llama-1b:q9"], "q4_k_m"),
        (
            &["bench", "--synthetic", "mixtral-8x7b:q4_k"],
            "unknown preset 'mixtral-8x7b'",
        ),
        (
            &["bench", "--synthetic", "llama-tiny:q4_0", "-p", "8-1"],
            "backwards",
        ),
        (
            &["bench", "--synthetic", "llama-tiny:q4_0", "--pg", "8"],
            "PROMPT,GEN",
        ),
        (
            &["bench", "--synthetic", "llama-tiny:q4_0", "--dtype", "f16"],
            "f32 only",
        ),
        (
            &[
                "bench",
                "--synthetic",
                "llama-tiny:q4_0",
                "-p",
                "0",
                "-n",
                "0",
            ],
            "no test",
        ),
        (
            &["bench", "-m", "x.gguf", "--write-gguf", "y.gguf"],
            "exactly one --synthetic",
        ),
        (
            &[
                "bench",
                "--synthetic",
                "llama-tiny:q4_0",
                "-p",
                "8",
                "-n",
                "0",
                "-c",
                "4",
            ],
            "the context holds 4",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, err) = mlcli(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
