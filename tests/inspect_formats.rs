//! `inspect` reads what this build cannot run: GGUF tensors of types this build lacks
//! (IQ3_S, TQ2_0, IQ2_XXS, ids no table knows) are shown and named while `run` refuses the
//! file naming the type; MXFP4 and IQ4_XS (not candle's, ours) are named and read; FP8 block-scaled
//! safetensors weights are dumped times their scales; unknown architectures are summarised with the supported list; safetensors
//! checkpoints (one file, a directory, shards through an index) show their tensors, values and
//! config. Files are built here byte by byte.

use std::path::Path;
use std::process::{Command, Output};

use mlcli::formats::gguf_builder::{array, Builder};
use mlcli::formats::gguf_header::{Value as G, ValueType};
use mlcli::formats::safetensors_header;
use serde_json::{json, Value};

fn mlcli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(args)
        .output()
        .expect("mlcli runs")
}

fn inspect_json(path: &Path, args: &[&str]) -> Value {
    let p = path.to_str().expect("utf-8 path");
    let mut all = vec!["inspect", p];
    all.extend_from_slice(args);
    all.push("--json");
    let out = mlcli(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The file's first tensor is listed with type `dtype`, `bytes` long, as supported.
fn assert_listed_as_supported(path: &Path, dtype: &str, bytes: u64) {
    let t = inspect_json(path, &["--tensors"]);
    let row = &t["tensors"]["rows"][0];
    assert_eq!(
        (row["dtype"].as_str(), row["bytes"].as_u64()),
        (Some(dtype), Some(bytes))
    );
    assert_eq!(row["supported"], true);
}

/// Every value of tensor `name` as `inspect --dump` gives them.
fn dumped(path: &Path, name: &str) -> Vec<f64> {
    let dump = inspect_json(path, &["--dump", name, "--limit", "0"]);
    dump["dump"]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A llama-architecture GGUF whose FFN weight is IQ3_S (type id 21).
fn iq3_s_gguf(path: &Path) {
    Builder::new()
        .meta("general.architecture", G::Str("llama".into()))
        .meta("llama.block_count", G::U32(1))
        .meta("llama.context_length", G::U32(128))
        .meta("llama.embedding_length", G::U32(256))
        .meta("llama.feed_forward_length", G::U32(256))
        .meta("llama.attention.head_count", G::U32(4))
        .meta("tokenizer.ggml.model", G::Str("llama".into()))
        .meta(
            "tokenizer.ggml.tokens",
            array(
                ValueType::String,
                vec![G::Str("<s>".into()), G::Str("a".into())],
            ),
        )
        .tensor(
            "output_norm.weight",
            &[4],
            0,
            f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
        )
        .zeroed_tensor("blk.0.ffn_down.weight", &[256, 4], 21)
        .zeroed_tensor("blk.0.ffn_up.weight", &[256, 2], 35)
        .zeroed_tensor("blk.0.ffn_gate.weight", &[256, 1], 16)
        .write(path)
        .expect("written");
}

#[test]
fn iq3_s_gguf_is_inspected_and_run_names_the_type() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("iq.gguf");
    iq3_s_gguf(&p);
    let s = inspect_json(&p, &[]);
    let s = &s["summary"];
    assert_eq!(s["support"]["runnable"], false);
    assert_eq!(s["support"]["family"], "llama");
    let reasons = s["support"]["reasons"].to_string();
    for t in ["IQ3_S", "TQ2_0", "IQ2_XXS"] {
        assert!(
            reasons.contains(&format!("{t}: not supported by this build")),
            "{reasons}"
        );
    }
    let mix: Vec<(&str, u64)> = s["quant_mix"]
        .as_array()
        .expect("mix")
        .iter()
        .map(|m| {
            (
                m["dtype"].as_str().expect("dtype"),
                m["bytes"].as_u64().expect("bytes"),
            )
        })
        .collect();
    assert!(mix.contains(&("IQ3_S", 4 * 110)), "{mix:?}");
    // The text view says it in words too.
    let text =
        String::from_utf8(mlcli(&["inspect", p.to_str().expect("path")]).stdout).expect("UTF-8");
    assert!(
        text.contains("IQ3_S: not supported by this build"),
        "{text}"
    );
    // The tensor table keeps the tensor with its size and offset.
    let t = inspect_json(&p, &["--tensors", "ffn_down"]);
    let row = &t["tensors"]["rows"][0];
    assert_eq!(
        (row["dtype"].as_str(), row["bytes"].as_u64()),
        (Some("IQ3_S"), Some(440))
    );
    assert_eq!(row["supported"], false);
    assert_eq!(row["problem"], Value::Null);
    // Stats skip it with the reason; the readable tensor still gets its numbers.
    let st = inspect_json(&p, &["--stats"]);
    let rows = st["stats"].as_array().expect("rows");
    assert_eq!(rows[0]["stats"]["mean"], 2.5);
    assert!(
        rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("IQ3_S")),
        "{}",
        rows[1]
    );
    // The closing count does not pass the unread tensors off as free of NaN and Inf.
    let text = mlcli(&["inspect", p.to_str().expect("path"), "--stats"]);
    let text = String::from_utf8(text.stdout).expect("UTF-8");
    assert!(
        text.ends_with("4 tensors, 0 of the 1 read with NaN or Inf values, 3 could not be read\n"),
        "{text}"
    );
    // Dumping it is an error naming the type (exit 2).
    let dump = mlcli(&[
        "inspect",
        p.to_str().expect("path"),
        "--dump",
        "blk.0.ffn_down.weight",
    ]);
    assert_eq!(dump.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dump.stderr).contains("IQ3_S"));
    // run refuses the file, naming the tensor and its type.
    let run = mlcli(&["run", "--raw", "-n", "1", p.to_str().expect("path"), "hi"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'blk.0.ffn_down.weight' has type IQ3_S") && err.contains("supported:"),
        "{err}"
    );
}

#[test]
fn mxfp4_tensors_are_named_supported_and_dumped() {
    use mlcli::formats::mxfp4;
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("mx.gguf");
    // Two rows of 32 values on the MXFP4 grid (exponent 128: the doubled e2m1 values / 2).
    let values: Vec<f32> = (0..64)
        .map(|i| f32::from(mxfp4::VALUES[i % 16]) / 2.0 * if i < 32 { 1.0 } else { 4.0 })
        .collect();
    Builder::new()
        .meta("general.architecture", G::Str("gpt-oss".into()))
        .tensor(
            "blk.0.ffn_up_exps.weight",
            &[32, 2],
            39,
            mxfp4::quantize(&values),
        )
        .write(&p)
        .expect("written");
    assert_listed_as_supported(&p, "MXFP4", 34);
    let want: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(dumped(&p, "blk.0.ffn_up_exps.weight"), want);
}

#[test]
fn iq4_xs_tensors_are_named_supported_and_dumped() {
    use mlcli::formats::iq4;
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("iq4.gguf");
    // One super-block: d = 0.5, sub-block i's scale 33 + i (so ls - 32 = 1 + i), codes j % 16.
    let mut block = vec![0u8; iq4::XS_BLOCK_BYTES];
    block[..2].copy_from_slice(&[0x00, 0x38]); // f16 0.5
    let mut high = 0u16;
    for i in 0..8 {
        let ls = 33 + i as u16;
        block[4 + i / 2] |= ((ls & 15) as u8) << (4 * (i % 2));
        high |= (ls >> 4) << (2 * i);
    }
    block[2..4].copy_from_slice(&high.to_le_bytes());
    for (j, b) in block[8..].iter_mut().enumerate() {
        *b = (j % 16) as u8 | (((j + 3) % 16) as u8) << 4;
    }
    Builder::new()
        .meta("general.architecture", G::Str("llama".into()))
        .tensor("blk.0.ffn_up.weight", &[256, 1], 23, block)
        .write(&p)
        .expect("written");
    assert_listed_as_supported(&p, "IQ4_XS", 136);
    // Value t of sub-block i: byte 16i + t % 16, its low nibble for t < 16, else its high.
    let want: Vec<f64> = (0..256)
        .map(|e| {
            let (i, t) = (e / 32, e % 32);
            let j = 16 * i + t % 16;
            let code = if t < 16 { j % 16 } else { (j + 3) % 16 };
            0.5 * (1 + i) as f64 * f64::from(iq4::VALUES[code])
        })
        .collect();
    assert_eq!(dumped(&p, "blk.0.ffn_up.weight"), want);
}

#[test]
fn fp8_tensors_are_named_and_dumped_times_their_block_scales() {
    let d = tempfile::tempdir().expect("tempdir");
    // 3 × 5 E4M3 ones (0x38) in blocks of 2 × 4: scales 2 × 2, the last blocks partial.
    let scales = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    std::fs::write(
        d.path().join("model.safetensors"),
        safetensors_header::build(
            &[],
            &[
                ("w.weight", "F8_E4M3", &[3, 5], &[0x38; 15]),
                ("w.weight_scale_inv", "F32", &[2, 2], &scales),
            ],
        ),
    )
    .expect("safetensors");
    let config = |block: Value| {
        let q = json!({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": block});
        let c = json!({"architectures": ["LlamaForCausalLM"], "quantization_config": q});
        std::fs::write(d.path().join("config.json"), c.to_string()).expect("config");
    };
    config(json!([2, 4]));
    let t = inspect_json(d.path(), &["--tensors"]);
    assert_eq!(t["tensors"]["rows"][0]["dtype"], "F8_E4M3");
    assert_eq!(t["tensors"]["rows"][0]["supported"], true);
    let dump = inspect_json(d.path(), &["--dump", "w.weight"]);
    assert_eq!(dump["dump"]["dtype"], "F8_E4M3 × w.weight_scale_inv");
    #[rustfmt::skip]
    assert_eq!(dump["dump"]["values"], json!([1.0, 1.0, 1.0, 1.0, 2.0,
                                               1.0, 1.0, 1.0, 1.0, 2.0,
                                               3.0, 3.0, 3.0, 3.0, 4.0]));
    // Scales that do not cover the blocks config.json declares are named.
    config(json!([1, 4]));
    let out = mlcli(&[
        "inspect",
        d.path().to_str().expect("path"),
        "--dump",
        "w.weight",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w.weight_scale_inv") && err.contains("[3, 2]"),
        "{err}"
    );
}

#[test]
fn unknown_type_ids_and_architectures_are_named_not_guessed() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("odd.gguf");
    Builder::new()
        .meta("general.architecture", G::Str("rwkv7".into()))
        .tensor("x", &[4], 99, vec![0; 4])
        .write(&p)
        .expect("written");
    let s = inspect_json(&p, &[]);
    let reasons = s["summary"]["support"]["reasons"].to_string();
    assert!(
        reasons.contains("unsupported architecture 'rwkv7'"),
        "{reasons}"
    );
    assert!(
        reasons.contains("llama") && reasons.contains("gemma3"),
        "{reasons}"
    );
    assert!(reasons.contains("type#99"), "{reasons}");
    let t = inspect_json(&p, &["--tensors", "--full"]);
    let row = &t["tensors"]["rows"][0];
    assert_eq!(row["dtype"], "type#99");
    assert_eq!(row["bytes"], Value::Null);
    assert!(row["problem"]
        .as_str()
        .is_some_and(|e| e.contains("unknown type id 99")));
}

/// A two-shard Hugging Face checkpoint with an index, config and tokenizer files.
fn hf_dir(dir: &Path, index_extra: Option<(&str, &str)>) {
    let norm = f32_bytes(&[0.5, -1.0, 2.0, f32::NAN]);
    // bf16 of 1.0, -2.0, 0.5 and 3.0: the top halves of the f32 bit patterns.
    let bf16: Vec<u8> = [1.0f32, -2.0, 0.5, 3.0]
        .iter()
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    std::fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        safetensors_header::build(
            &[("format", "pt")],
            &[("model.norm.weight", "F32", &[4], &norm)],
        ),
    )
    .expect("shard 1");
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        safetensors_header::build(
            &[],
            &[
                ("model.layers.0.mlp.up_proj.weight", "BF16", &[2, 2], &bf16),
                ("model.layers.1.mlp.up_proj.weight", "BF16", &[2, 2], &bf16),
            ],
        ),
    )
    .expect("shard 2");
    let mut map = json!({
        "model.norm.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.mlp.up_proj.weight": "model-00002-of-00002.safetensors",
        "model.layers.1.mlp.up_proj.weight": "model-00002-of-00002.safetensors",
    });
    if let Some((k, v)) = index_extra {
        map[k] = json!(v);
    }
    let index = json!({"metadata": {"total_size": 32}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "intermediate_size": 2, "max_position_embeddings": 2048,
        "rope_theta": 10000.0, "vocab_size": 3,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let tokenizer = json!({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "<s>": 2}, "merges": []},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("tokenizer");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "chat_template": "{{ messages[0]['content'] }}"}).to_string(),
    )
    .expect("tokenizer config");
}

#[test]
fn sharded_safetensors_directory_is_inspected_through_its_index() {
    let d = tempfile::tempdir().expect("tempdir");
    hf_dir(d.path(), None);
    let s = inspect_json(d.path(), &[]);
    let s = &s["summary"];
    assert_eq!(s["format"]["name"], "safetensors");
    assert_eq!(s["format"]["files"], 2);
    assert_eq!(s["architecture"], "LlamaForCausalLM");
    assert_eq!(s["support"]["family"], "llama");
    // The toy config lacks rms_norm_eps: inspect reads it as run does and says so (run's
    // refusal is checked at the end).
    assert_eq!(s["support"]["runnable"], false, "{}", s["support"]);
    assert!(
        s["support"]["reasons"]
            .to_string()
            .contains("missing key 'rms_norm_eps'"),
        "{}",
        s["support"]
    );
    assert_eq!(s["parameters"], 12);
    assert_eq!(
        (s["dims"]["layers"].as_u64(), s["dims"]["kv_heads"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(s["tokenizer"]["model"], "BPE");
    assert_eq!(s["tokenizer"]["special"][0]["id"], 2);
    assert_eq!(s["chat_template"]["present"], true);
    assert_eq!(s["problems"], json!([]));
    // Tensors, folded per layer, with their shard.
    let t = inspect_json(d.path(), &["--tensors"]);
    assert_eq!(
        t["tensors"]["groups"][1]["name"],
        "model.layers.{0,1}.mlp.up_proj.weight"
    );
    assert_eq!(
        t["tensors"]["rows"][1]["file"],
        "model-00002-of-00002.safetensors"
    );
    // Values: bf16 widened exactly; NaN counted, not averaged.
    let dump = inspect_json(d.path(), &["--dump", "model.layers.1.mlp.up_proj.weight"]);
    assert_eq!(dump["dump"]["values"], json!([1.0, -2.0, 0.5, 3.0]));
    let st = inspect_json(d.path(), &["--stats", "norm"]);
    let norm = &st["stats"][0]["stats"];
    assert_eq!(
        (norm["nan"].as_u64(), norm["min"].as_f64()),
        (Some(1), Some(-1.0))
    );
    assert_eq!(norm["mean"], 0.5);
    // The chat template renders from tokenizer_config.json.
    let tpl = inspect_json(d.path(), &["--template"]);
    assert_eq!(tpl["template"]["rendered"], "You are a helpful assistant.");
    // The index file itself and a single shard are accepted as the model argument too.
    let via_index = inspect_json(&d.path().join("model.safetensors.index.json"), &[]);
    assert_eq!(via_index["summary"]["tensor_count"], 3);
    let one = inspect_json(
        &d.path().join("model-00001-of-00002.safetensors"),
        &["--tensors"],
    );
    assert_eq!(one["tensors"]["rows"].as_array().map(Vec::len), Some(1));
    // run loads it and stops cleanly at the first thing this toy checkpoint lacks.
    let run = mlcli(&["run", "--raw", d.path().to_str().expect("path"), "hi"]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("rms_norm_eps"), "{err}");
}

#[test]
fn index_entries_without_a_tensor_are_reported_as_problems() {
    let d = tempfile::tempdir().expect("tempdir");
    hf_dir(
        d.path(),
        Some(("lm_head.weight", "model-00001-of-00002.safetensors")),
    );
    let s = inspect_json(d.path(), &[]);
    let problems = s["summary"]["problems"].to_string();
    assert!(problems.contains("'lm_head.weight'"), "{problems}");
}
