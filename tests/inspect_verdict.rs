//! `inspect`'s verdict agrees with `run`: on tiny models and on hostile copies of them (a RoPE
//! base or norm epsilon of NaN, 0 or below, an unsupported key, in GGUF metadata and in
//! `config.json`), `inspect` says "runs with this build" exactly when `run` runs, and when
//! `run` refuses (exit 2, one line naming the key and value), `inspect` gives the same reason;
//! likewise for a missing, misshapen, badly typed or left-over tensor (inspect loads the
//! weights as `run` does, without reading their data).
//! Runs the real binary.

use std::path::Path;
use std::process::Command;

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use mlcli::models::{llama, testing};
use serde_json::json;

/// What `run` did: `None` when it ran, else its one line of error.
fn run(model: &Path) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["run", "--raw", "-n", "1"])
        .arg(model)
        .arg("hello")
        .output()
        .expect("mlcli runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return None;
    }
    assert_eq!(out.status.code(), Some(2), "{}: {stderr}", model.display());
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty: {:?}",
        out.stdout
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Some(stderr)
}

/// `inspect`'s verdict: `None` when it says the model runs, else its reasons.
fn inspect(model: &Path) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["inspect", "--json"])
        .arg(model)
        .output()
        .expect("mlcli runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let support = &v["summary"]["support"];
    match support["runnable"].as_bool() {
        Some(true) => None,
        _ => Some(
            support["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .filter_map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// Asserts that `run` and `inspect` agree on `model`, and that a refusal names `needles`.
fn agree(model: &Path, needles: &[&str]) {
    let (ran, verdict) = (run(model), inspect(model));
    match (&ran, &verdict) {
        (None, None) => assert!(needles.is_empty(), "{} ran: {needles:?}", model.display()),
        (Some(err), Some(reasons)) => {
            assert!(!needles.is_empty(), "{}: {err}", model.display());
            for n in needles {
                assert!(err.contains(n), "run: '{n}' missing from: {err}");
                assert!(
                    reasons.contains(n),
                    "inspect: '{n}' missing from: {reasons}"
                );
            }
        }
        _ => panic!(
            "{}: run says {ran:?}, inspect says {verdict:?}",
            model.display()
        ),
    }
}

#[test]
fn gguf_rope_bases_and_epsilons_that_are_nan_zero_or_negative_fail_both_alike() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, Value, &[&str])] = &[
        ("llama.rope.freq_base", Value::F32(10_000.0), &[]),
        (
            "llama.rope.freq_base",
            Value::F32(f32::NAN),
            &["llama.rope.freq_base", "NaN"],
        ),
        (
            "llama.rope.freq_base",
            Value::F32(0.0),
            &["llama.rope.freq_base", "found 0"],
        ),
        (
            "llama.rope.freq_base",
            Value::F32(-1e4),
            &["llama.rope.freq_base", "found -10000"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::NAN),
            &["layer_norm_rms_epsilon", "NaN"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(0.0),
            &["layer_norm_rms_epsilon", "found 0"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(-1e-5),
            &["layer_norm_rms_epsilon", "found -0.0000"],
        ),
        (
            "llama.attention.causal",
            Value::Bool(false),
            &["llama.attention.causal = false"],
        ),
    ];
    for (i, (key, value, needles)) in cases.iter().enumerate() {
        let p = d.path().join(format!("m{i}.gguf"));
        testing::write_tiny_gguf_with(&llama::SPEC, &p, 1, GgmlDType::Q8_0, None, |m| {
            testing::set_meta(m, key, value.clone())
        })
        .unwrap();
        agree(&p, needles);
    }
}

/// A tiny llama checkpoint in safetensors form with `edit` applied to its `config.json`.
fn checkpoint(
    root: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let dir = root.join(name);
    testing::write_tiny_hf(&llama::SPEC, &dir, 1).unwrap();
    let p = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, c.to_string()).unwrap();
    dir
}

#[test]
fn config_json_values_run_refuses_are_reasons_inspect_gives() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, serde_json::Value, &[&str])] = &[
        ("rms_norm_eps", json!(1e-6), &[]),
        (
            "rms_norm_eps",
            json!(0),
            &["rms_norm_eps", "config.json", "found 0"],
        ),
        (
            "rms_norm_eps",
            json!(-1e-6),
            &["rms_norm_eps", "config.json", "found -1e-6"],
        ),
        (
            "rope_theta",
            json!(0.0),
            &["rope_theta", "config.json", "found 0"],
        ),
        (
            "rope_theta",
            json!(-1e4),
            &["rope_theta", "config.json", "found -10000"],
        ),
        (
            "hidden_act",
            json!("gelu"),
            &["config.json: hidden_act = \"gelu\"", "silu"],
        ),
    ];
    for (i, (key, value, needles)) in cases.iter().enumerate() {
        let dir = checkpoint(d.path(), &format!("hf{i}"), |c| {
            c[*key] = value.clone();
        });
        agree(&dir, needles);
    }
    // A lone weights file with its config.json beside it runs as its directory does.
    let dir = checkpoint(d.path(), "lone", |_| {});
    agree(&dir.join("model.safetensors"), &[]);
}

#[test]
fn nan_in_config_json_is_refused_by_both_as_invalid_json() {
    let d = tempfile::tempdir().unwrap();
    let dir = checkpoint(d.path(), "hf", |_| {});
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).unwrap();
    // Python's json module writes NaN, which is not JSON.
    let nan = text.replacen("\"rms_norm_eps\":", "\"rms_norm_eps\":NaN,\"x\":", 1);
    assert_ne!(nan, text);
    std::fs::write(&p, nan).unwrap();
    let err = run(&dir).expect("run refuses");
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );
    let reasons = inspect(&dir).expect("inspect refuses");
    assert!(reasons.contains("config.json"), "{reasons}");
}

#[test]
fn a_multimodal_checkpoint_is_judged_by_its_text_model_as_run_loads_it() {
    // The oracle's Gemma 3 multimodal checkpoint has no tokenizer.json: both stop there, not
    // at the architecture (inspect used to call Gemma3ForConditionalGeneration unsupported).
    let dir = mlcli::models::testing::oracle_fixtures().join("gemma3-multimodal");
    agree(&dir, &["tokenizer.json"]);
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["inspect", "--json"])
        .arg(&dir)
        .output()
        .expect("mlcli runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["summary"]["support"]["family"], "gemma3", "{v}");
}

/// Rewrites the GGUF at `path` through `edit` on its tensors (metadata kept).
fn edit_gguf_tensors(path: &Path, edit: impl FnOnce(&mut Vec<(String, QTensor)>)) {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut out, &metadata, &refs).unwrap();
}

#[test]
fn missing_misshapen_or_left_over_gguf_tensors_fail_both_alike() {
    let d = tempfile::tempdir().unwrap();
    let tiny = |name: &str| {
        let p = d.path().join(name);
        testing::write_tiny_gguf_with(&llama::SPEC, &p, 1, GgmlDType::Q8_0, None, |_| {}).unwrap();
        p
    };
    agree(&tiny("whole.gguf"), &[]);
    let missing = tiny("missing.gguf");
    edit_gguf_tensors(&missing, |t| {
        t.retain(|(n, _)| n != "blk.1.ffn_down.weight")
    });
    agree(&missing, &["missing tensor", "blk.1.ffn_down.weight"]);
    let misshapen = tiny("misshapen.gguf");
    edit_gguf_tensors(&misshapen, |t| {
        let i = t
            .iter()
            .position(|(n, _)| n == "blk.0.ffn_up.weight")
            .unwrap();
        let dense = t[i].1.dequantize(&Device::Cpu).unwrap();
        let k = dense.dim(1).unwrap();
        // A fresh tensor: candle quantizes a narrowed view's whole storage.
        let rows = dense.narrow(0, 0, 32).unwrap().flatten_all().unwrap();
        let cut = Tensor::from_vec(rows.to_vec1::<f32>().unwrap(), (32, k), &Device::Cpu).unwrap();
        t[i].1 = QTensor::quantize(&cut, GgmlDType::Q8_0).unwrap();
    });
    agree(
        &misshapen,
        &[
            "layers.0.mlp.up_proj.weight",
            "expected shape [96, 64], found [32, 64]",
        ],
    );
    let extra = tiny("extra.gguf");
    edit_gguf_tensors(&extra, |t| {
        let norm = t.iter().find(|(n, _)| n == "output_norm.weight").unwrap();
        let copy = QTensor::quantize(&norm.1.dequantize(&Device::Cpu).unwrap(), GgmlDType::F32);
        t.push(("blk.0.surprise.weight".into(), copy.unwrap()));
    });
    agree(&extra, &["blk.0.surprise.weight"]);
}

#[test]
fn missing_misshapen_or_badly_typed_safetensors_fail_both_alike() {
    let d = tempfile::tempdir().unwrap();
    let edit = |name: &str, f: &dyn Fn(&mut HashMap<String, Tensor>)| {
        let dir = checkpoint(d.path(), name, |_| {});
        let p = dir.join("model.safetensors");
        let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        f(&mut t);
        candle_core::safetensors::save(&t, &p).unwrap();
        dir
    };
    let down = "model.layers.0.mlp.down_proj.weight";
    let dir = edit("missing", &|t| {
        t.remove(down);
    });
    agree(&dir, &["missing tensor", down]);
    let dir = edit("misshapen", &|t| {
        let w = t[down].t().unwrap().contiguous().unwrap();
        t.insert(down.into(), w);
    });
    agree(&dir, &[down, "shape"]);
    let dir = edit("integer", &|t| {
        let w = t[down].to_dtype(DType::I64).unwrap();
        t.insert(down.into(), w);
    });
    agree(&dir, &[down, "I64"]);
}
