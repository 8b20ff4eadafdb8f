//! Bad input never panics: empty files, random bytes, GGUFs truncated anywhere, unknown
//! architectures and unsupported tensor types each give a one-line error naming what was found
//! (and what is supported) and exit status 2. Runs the real binary.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::quantized::GgmlDType;
use mlcli::models::{testing, FAMILIES};

fn mlcli(model: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["run", "--raw", "-n", "1"])
        .arg(model)
        .arg("hello")
        .output()
        .expect("mlcli runs")
}

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty: {:?}",
        out.stdout
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "'{n}' missing from: {stderr}");
    }
}

#[test]
fn empty_file_is_rejected_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    assert_clean_failure(&mlcli(&p), &["empty file", "GGUF"]);
}

#[test]
fn random_bytes_are_rejected_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("random.gguf");
    let mut x: u32 = 12345;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(&p, bytes).unwrap();
    assert_clean_failure(&mlcli(&p), &["unrecognised content"]);
}

#[test]
fn truncated_gguf_is_rejected_cleanly_at_every_kind_of_offset() {
    let d = tempfile::tempdir().unwrap();
    let full_path = d.path().join("full.gguf");
    testing::write_tiny_gguf(FAMILIES[0], &full_path, 1, GgmlDType::Q8_0, None).unwrap();
    let full = std::fs::read(&full_path).unwrap();
    // In the magic, the counts, the metadata, the tensor directory and the tensor data.
    for cut in [2, 10, 30, 200, 700, full.len() / 2, full.len() - 1] {
        let p = d.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &full[..cut]).unwrap();
        let out = mlcli(&p);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_clean_failure(&out, &[]);
        assert!(
            stderr.contains("truncated")
                || stderr.contains("unrecognised")
                || stderr.contains("malformed"),
            "cut {cut}: {stderr}"
        );
    }
}

#[test]
fn unknown_architecture_lists_the_supported_ones() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rwkv.gguf");
    testing::write_tiny_gguf(FAMILIES[0], &p, 1, GgmlDType::F32, Some("rwkv7")).unwrap();
    let mut needles = vec!["unsupported architecture 'rwkv7'"];
    needles.extend(
        FAMILIES
            .iter()
            .flat_map(|f| f.gguf_architectures.iter().copied()),
    );
    assert_clean_failure(&mlcli(&p), &needles);
}

/// A minimal GGUF whose one tensor is stored as IQ3_S (type 21).
fn gguf_with_iq3_s_tensor() -> Vec<u8> {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    string(&mut b, "llama");
    string(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&256u64.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&21u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 2 * 110]);
    b
}

#[test]
fn unsupported_tensor_type_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("iq3.gguf");
    std::fs::write(&p, gguf_with_iq3_s_tensor()).unwrap();
    assert_clean_failure(&mlcli(&p), &["token_embd.weight", "IQ3_S", "Q4_K"]);
}

/// A tiny llama checkpoint in safetensors form, then `edit` applied to its directory.
fn broken_checkpoint(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("hf");
    mlcli::models::testing::write_tiny_hf(&mlcli::models::llama::SPEC, &dir, 1).unwrap();
    edit(&dir);
    d
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut c: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut c);
    std::fs::write(&p, serde_json::to_string(&c).unwrap()).unwrap();
}

fn edit_tensors(
    dir: &Path,
    f: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) {
    let p = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, &p).unwrap();
}

#[test]
fn safetensors_checkpoint_with_unknown_architecture_lists_the_supported_ones() {
    let d = broken_checkpoint(|dir| {
        edit_config(dir, |c| {
            c.insert(
                "architectures".into(),
                serde_json::json!(["RwkvForCausalLM"]),
            );
        })
    });
    assert_clean_failure(
        &mlcli(&d.path().join("hf")),
        &["RwkvForCausalLM", "LlamaForCausalLM", "Gemma3ForCausalLM"],
    );
}

#[test]
fn safetensors_checkpoint_missing_a_config_key_names_it() {
    let d = broken_checkpoint(|dir| {
        edit_config(dir, |c| {
            c.remove("hidden_size");
        })
    });
    assert_clean_failure(
        &mlcli(&d.path().join("hf")),
        &["hidden_size", "config.json"],
    );
}

#[test]
fn safetensors_checkpoint_with_an_unsupported_rope_type_names_the_key_and_value() {
    let d = broken_checkpoint(|dir| {
        edit_config(dir, |c| {
            c.remove("rope_theta");
            c.remove("rope_scaling");
            c.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_type": "frobnicate", "rope_theta": 10000.0}),
            );
        })
    });
    assert_clean_failure(
        &mlcli(&d.path().join("hf")),
        &[
            "config.json",
            "rope_parameters.rope_type",
            "frobnicate",
            "default, linear, dynamic, yarn, llama3, longrope",
        ],
    );
}

#[test]
fn safetensors_checkpoint_missing_a_tensor_names_it() {
    let d = broken_checkpoint(|dir| {
        edit_tensors(dir, |t| {
            t.remove("model.layers.1.mlp.up_proj.weight");
        })
    });
    assert_clean_failure(
        &mlcli(&d.path().join("hf")),
        &["missing tensor", "model.layers.1.mlp.up_proj.weight"],
    );
}

#[test]
fn safetensors_checkpoint_with_a_leftover_tensor_names_it() {
    let d = broken_checkpoint(|dir| {
        edit_tensors(dir, |t| {
            let extra =
                candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu)
                    .unwrap();
            t.insert("model.layers.0.mystery.weight".into(), extra);
        })
    });
    assert_clean_failure(
        &mlcli(&d.path().join("hf")),
        &["model.layers.0.mystery.weight"],
    );
}

#[test]
fn safetensors_checkpoint_with_an_integer_weight_names_its_dtype() {
    let d = broken_checkpoint(|dir| {
        edit_tensors(dir, |t| {
            let w = t["model.norm.weight"]
                .to_dtype(candle_core::DType::I64)
                .unwrap();
            t.insert("model.norm.weight".into(), w);
        })
    });
    assert_clean_failure(
        &mlcli(&d.path().join("hf")),
        &["model.norm.weight", "I64", "BF16"],
    );
}

#[test]
fn safetensors_checkpoint_without_tokenizer_json_says_so() {
    let d = broken_checkpoint(|dir| std::fs::remove_file(dir.join("tokenizer.json")).unwrap());
    assert_clean_failure(&mlcli(&d.path().join("hf")), &["tokenizer.json"]);
}

#[test]
fn lone_safetensors_file_needs_its_config() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("model.safetensors"), b"\x02\0\0\0\0\0\0\0{}").unwrap();
    assert_clean_failure(
        &mlcli(&d.path().join("model.safetensors")),
        &["config.json"],
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_malformed_reference_is_named_once() {
    let out = mlcli(Path::new("nosuch/../x"));
    assert_clean_failure(&out, &["'nosuch/../x' is not a model reference"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("nosuch/../x").count(), 1, "{stderr}");
}
