//! Tests of reading Gemma 3 configurations from `config.json` and GGUF.

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

use super::*;
use crate::models::testing;

/// Gemma-3-1B-it's `config.json` keys that matter here (values as published, with
/// transformers 5's `layer_types` shortened to the first 6 layers).
const CONFIG: &str = r#"{"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
    "attention_bias": false, "attn_logit_softcapping": null, "final_logit_softcapping": null,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152,
    "intermediate_size": 6912, "max_position_embeddings": 32768, "num_attention_heads": 4,
    "num_hidden_layers": 6, "num_key_value_heads": 1, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": null,
    "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
    "vocab_size": 262144}"#;

fn hf(edits: &[(&str, &str)]) -> Result<Config> {
    let text = crate::models::testing::edited(CONFIG, edits);
    config(&ConfigSource::Hf(&HfConfig::parse(
        &text,
        "gemma/config.json",
    )?))
}

fn gguf(edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    testing::write_tiny_gguf_with(&SPEC, &path, 1, GgmlDType::F32, None, edit).unwrap();
    config(&ConfigSource::Gguf(&Gguf::open(&path).unwrap()))
}

#[test]
fn config_json_values_gemma3_cannot_run_are_refused_naming_file_key_and_value() {
    for (from, to, needle) in [
        (
            "\"gelu_pytorch_tanh\"",
            "\"silu\"",
            "hidden_activation = \"silu\"",
        ),
        (
            "\"attention_bias\"",
            "\"use_bidirectional_attention\": true, \"attention_bias\"",
            "use_bidirectional_attention = true",
        ),
        (
            "\"query_pre_attn_scalar\": 256",
            "\"query_pre_attn_scalar\": 0",
            "query_pre_attn_scalar",
        ),
        (
            "\"final_logit_softcapping\": null",
            "\"final_logit_softcapping\": -30",
            "final_logit_softcapping",
        ),
        (
            "\"rope_local_base_freq\": 10000",
            "\"rope_local_base_freq\": 0",
            "rope_local_base_freq",
        ),
        (
            "\"rms_norm_eps\": 1e-06",
            "\"rms_norm_eps\": 0",
            "rms_norm_eps",
        ),
        (
            "\"sliding_window\": 512",
            "\"sliding_window\": 0",
            "sliding_window",
        ),
    ] {
        let e = hf(&[(from, to)]).unwrap_err().to_string();
        assert!(e.contains(needle), "{to}: '{needle}' missing from: {e}");
        assert!(
            e.contains("gemma/config.json") || e.contains("gemma3:"),
            "{e}"
        );
    }
}

#[test]
fn config_json_keys_of_gemma3_are_honoured_with_its_class_defaults() {
    let c = hf(&[]).unwrap();
    assert_eq!(c.local, [true, true, true, true, true, false]);
    assert_eq!(
        (c.sliding_window, c.attn_softcap, c.attn_bias),
        (Some(512), None, false)
    );
    assert_eq!(c.attn_scale, 1.0 / 16.0);
    let c = hf(&[
        (
            "\"attn_logit_softcapping\": null",
            "\"attn_logit_softcapping\": 50.0",
        ),
        ("\"attention_bias\": false", "\"attention_bias\": true"),
        ("\"query_pre_attn_scalar\": 256,", ""),
        ("\"head_dim\": 256", "\"head_dim\": 64"),
        ("\"sliding_window\": 512", "\"sliding_window\": null"),
    ])
    .unwrap();
    assert_eq!((c.attn_softcap, c.attn_bias), (Some(50.0), true));
    // query_pre_attn_scalar defaults to 256 whatever the head width.
    assert_eq!((c.head_dim, c.attn_scale), (64, 1.0 / 16.0));
    assert_eq!(c.sliding_window, None);
    let types = "\"layer_types\": [\"full_attention\", \"sliding_attention\", \
        \"full_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\"], \
        \"vocab_size\"";
    let c = hf(&[("\"vocab_size\"", types)]).unwrap();
    assert_eq!(c.local, [false, true, false, false, true, false]);
}

#[test]
fn gguf_without_a_window_is_all_global_and_the_27b_scales_by_hidden_over_heads() {
    let c = gguf(|m| m.retain(|(k, _)| k != "gemma3.attention.sliding_window")).unwrap();
    assert!(c.local.iter().all(|l| !l), "{:?}", c.local);
    let c = gguf(|_| {}).unwrap();
    assert_eq!(c.attn_scale, 1.0 / (c.head_dim as f64).sqrt());
    let c = gguf(|m| testing::set_meta(m, "gemma3.block_count", Value::U32(62))).unwrap();
    assert_eq!(c.attn_scale, 1.0 / ((c.hidden / c.n_heads) as f64).sqrt());
    let c = gguf(|m| testing::set_meta(m, "gemma3.attention.scale", Value::F32(0.5))).unwrap();
    assert_eq!(c.attn_scale, 0.5);
    let e = gguf(|m| testing::set_meta(m, "gemma3.final_logit_softcapping", Value::F32(0.0)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gemma3.final_logit_softcapping") && e.contains("found 0"),
        "{e}"
    );
    let e = gguf(|m| testing::set_meta(m, "gemma3.rope.dimension_count", Value::U32(16)));
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("gemma3.rope.dimension_count = 16") && e.contains("partial RoPE"),
        "{e}"
    );
}
