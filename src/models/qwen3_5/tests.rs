//! Qwen3.5's configuration reading.

use super::*;

/// Qwen3.5-9B's `text_config` keys that matter here (values as published).
pub(super) const CONFIG: &str = r#"{"architectures": ["Qwen3_5ForCausalLM"],
    "model_type": "qwen3_5_text", "attention_bias": false, "head_dim": 256,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 12288,
    "full_attention_interval": 4, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_value_head_dim": 128,
    "max_position_embeddings": 262144, "mtp_num_hidden_layers": 1,
    "num_attention_heads": 16, "num_hidden_layers": 32, "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "vocab_size": 248320,
    "rope_parameters": {"mrope_interleaved": true, "mrope_section": [11, 11, 10],
        "rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25}}"#;

fn hf(edits: &[(&str, &str)]) -> Result<Config> {
    let text = crate::models::testing::edited(CONFIG, edits);
    Config::from_hf(&HfConfig::parse(&text, "qwen3_5/config.json")?, false)
}

#[test]
fn qwen3_5_9b_reads_its_hybrid_layers_partial_rope_and_delta_net() {
    let c = hf(&[]).unwrap();
    assert_eq!((c.n_layers, c.hidden, c.head_dim, c.rotary_dim), (32, 4096, 256, 64));
    assert_eq!((c.n_heads, c.n_kv_heads, c.rope.base), (16, 4, 1e7));
    // Every fourth layer attends; the others are DeltaNet layers.
    assert_eq!(c.recurrent.iter().filter(|r| !**r).count(), 8);
    assert!(c.recurrent[0] && !c.recurrent[3]);
    let l = &c.linear;
    assert_eq!((l.k_heads, l.v_heads, l.k_dim, l.v_dim, l.kernel), (16, 32, 128, 128, 4));
    assert!(!l.v_heads_tiled);
    assert_eq!(c.ffn, Ffn::Dense(12288));
    assert!(c.untied_in.is_some());
}

#[test]
fn unsupported_values_are_refused_naming_file_key_and_value() {
    let e = hf(&[("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"")]).unwrap_err();
    assert!(
        e.to_string()
            .contains("qwen3_5/config.json: hidden_act = \"gelu\" is not supported"),
        "{e}"
    );
    let e = hf(&[("\"full_attention_interval\": 4,", "\"layer_types\": [\"mamba\"],")])
        .unwrap_err();
    assert!(e.to_string().contains("layer_types"), "{e}");
    let e = hf(&[("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"")]).unwrap_err();
    assert!(e.to_string().contains("rope_parameters"), "{e}");
    let e = hf(&[(
        "\"partial_rotary_factor\": 0.25",
        "\"partial_rotary_factor\": 1.5",
    )])
    .unwrap_err();
    assert!(e.to_string().contains("partial_rotary_factor = 1.5"), "{e}");
    let e = hf(&[("\"linear_num_value_heads\": 32", "\"linear_num_value_heads\": 24")])
        .unwrap_err();
    assert!(e.to_string().contains("value heads"), "{e}");
}
