//! Tests of reading llama-like configurations: refusals and the llama and Mistral classes.

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

use super::*;
use crate::models::testing;

/// SmolLM2-135M's `config.json` keys that matter here (values as published).
const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "attention_bias": false, "hidden_act": "silu", "hidden_size": 576,
    "intermediate_size": 1536, "max_position_embeddings": 8192, "mlp_bias": false,
    "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
    "tie_word_embeddings": true, "vocab_size": 49152}"#;

/// The config with each `(from, to)` replacement made, read as `load` reads it.
fn hf(edits: &[(&str, &str)]) -> Result<Config> {
    let text = crate::models::testing::edited(CONFIG, edits);
    config(&ConfigSource::Hf(&HfConfig::parse(
        &text,
        "smollm2/config.json",
    )?))
}

/// A tiny llama GGUF with `key` set to `value`, read as `load` reads it.
fn gguf(key: &str, value: Value) -> Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    testing::write_tiny_gguf_with(&SPEC, &path, 1, GgmlDType::F32, None, |m| {
        testing::set_meta(m, key, value)
    })
    .unwrap();
    config(&ConfigSource::Gguf(&Gguf::open(&path).unwrap()))
}

#[test]
fn config_json_values_llama_cannot_run_are_refused_naming_file_key_and_value() {
    for (from, to, needles) in [
        (
            "\"silu\"",
            "\"gelu\"",
            &["hidden_act = \"gelu\"", "supported: silu"][..],
        ),
        (
            "1e-05",
            "0",
            &["rms_norm_eps", "positive finite", "found 0"],
        ),
        ("1e-05", "-1e-5", &["rms_norm_eps", "found -0.00001"]),
        ("1e-05", "1e-50", &["rms_norm_eps", "positive finite"]),
        ("100000,", "0,", &["rope_theta", "found 0"]),
        ("100000,", "-1e4,", &["rope_theta", "found -10000"]),
    ] {
        let e = hf(&[(from, to)]).unwrap_err().to_string();
        for n in needles.iter().chain(&["smollm2/config.json"]) {
            assert!(e.contains(n), "{to}: '{n}' missing from: {e}");
        }
    }
}

#[test]
fn config_json_keys_of_the_llama_and_mistral_classes_are_honoured() {
    let c = hf(&[]).unwrap();
    assert_eq!((c.qkv_bias, c.o_bias, c.mlp_bias), (false, false, false));
    assert_eq!((c.sliding_window, c.untied_in.as_deref()), (None, None));
    assert_eq!((c.n_kv_heads, c.rope.base, c.eps), (3, 1e5, 1e-5));
    let c = hf(&[("\"attention_bias\": false", "\"attention_bias\": true")]).unwrap();
    assert!(c.qkv_bias && c.o_bias && !c.mlp_bias);
    let c = hf(&[("\"mlp_bias\": false", "\"mlp_bias\": true")]).unwrap();
    assert!(c.mlp_bias && !c.o_bias);
    let untied = hf(&[(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    )]);
    assert_eq!(
        untied.unwrap().untied_in.as_deref(),
        Some("smollm2/config.json")
    );
    // LlamaForCausalLM has no sliding window: the key is not read.
    let c = hf(&[("\"vocab_size\"", "\"sliding_window\": 5, \"vocab_size\"")]).unwrap();
    assert_eq!(c.sliding_window, None);
    // MistralConfig: no biases, a window of 4096 unless given (null: none), 8 KV heads.
    let mistral = |more: &[(&str, &str)]| {
        let mut edits = vec![
            ("LlamaForCausalLM", "MistralForCausalLM"),
            ("\"attention_bias\": false", "\"attention_bias\": true"),
            ("\"num_key_value_heads\": 3,", ""),
            ("\"num_attention_heads\": 9", "\"num_attention_heads\": 16"),
        ];
        edits.extend_from_slice(more);
        hf(&edits).unwrap()
    };
    let c = mistral(&[]);
    assert_eq!(
        (c.sliding_window, c.n_kv_heads, c.qkv_bias),
        (Some(4096), 8, false)
    );
    let c = mistral(&[("\"vocab_size\"", "\"sliding_window\": null, \"vocab_size\"")]);
    assert_eq!(c.sliding_window, None);
    let c = mistral(&[("\"vocab_size\"", "\"sliding_window\": 7, \"vocab_size\"")]);
    assert_eq!(c.sliding_window, Some(7));
}

#[test]
fn gguf_values_llama_cannot_run_are_refused_naming_file_key_and_value() {
    for (key, value, needles) in [
        ("llama.rope.freq_base", Value::F32(f32::NAN), &["NaN"][..]),
        ("llama.rope.freq_base", Value::F32(0.0), &["found 0"]),
        ("llama.rope.freq_base", Value::F32(-1e4), &["found -10000"]),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(0.0),
            &["found 0"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(-1e-5),
            &["found -"],
        ),
        (
            "llama.attention.scale",
            Value::F32(f32::INFINITY),
            &["found inf"],
        ),
        (
            "llama.attention.causal",
            Value::Bool(false),
            &["= false", "supported: true"],
        ),
        (
            "llama.final_logit_softcapping",
            Value::F32(30.0),
            &["= 30", "no soft-capping"],
        ),
        (
            "llama.expert_gating_func",
            Value::U32(2),
            &["= 2", "1 (softmax)"],
        ),
        (
            "llama.expert_shared_count",
            Value::U32(1),
            &["= 1", "no shared experts"],
        ),
        (
            "llama.logit_scale",
            Value::F32(8.0),
            &["= 8", "granite has one"],
        ),
    ] {
        let e = gguf(key, value).unwrap_err().to_string();
        for n in needles.iter().chain(&[key]) {
            assert!(e.contains(n), "{key}: '{n}' missing from: {e}");
        }
    }
}

#[test]
fn gguf_attention_scale_is_the_score_multiplier() {
    let c = gguf("llama.attention.scale", Value::F32(0.125)).unwrap();
    assert_eq!(c.attention(0).scale, 0.125);
    let c = gguf("llama.attention.causal", Value::Bool(true)).unwrap();
    assert_eq!(c.attention(0).scale, 1.0 / (c.head_dim as f64).sqrt());
}
