//! GLM-4.x MoE: configuration reading (GLM-4.5-Air's shape, refusals) and agreement of the
//! GGUF and `config.json` readers.

use super::*;

/// GLM-4.5-Air's `config.json`.
const CONFIG: &str = r#"{"architectures": ["Glm4MoeForCausalLM"], "attention_bias": true,
    "attention_dropout": 0.0, "pad_token_id": 151329, "eos_token_id": [151329, 151336, 151338],
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "partial_rotary_factor": 0.5,
    "initializer_range": 0.02, "intermediate_size": 10944, "max_position_embeddings": 131072,
    "model_type": "glm4_moe", "moe_intermediate_size": 1408, "norm_topk_prob": true,
    "num_attention_heads": 96, "n_group": 1, "topk_group": 1, "n_routed_experts": 128,
    "n_shared_experts": 1, "routed_scaling_factor": 1.0, "num_experts_per_tok": 8,
    "first_k_dense_replace": 1, "num_hidden_layers": 46, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 1000000,
    "num_nextn_predict_layers": 1, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.54.0", "use_cache": true, "use_qk_norm": false,
    "vocab_size": 151552}"#;

fn hf(edits: &[(&str, &str)]) -> Result<Config> {
    let text = crate::models::testing::edited(CONFIG, edits);
    Config::from_hf(&HfConfig::parse(&text, "glm-4.5-air/config.json")?)
}

#[test]
fn glm_4_5_air_reads_its_partial_rope_biases_and_router() {
    let c = hf(&[]).unwrap();
    let d = c.dims;
    assert_eq!(
        (d.n_layers, d.hidden, d.n_heads, d.n_kv_heads),
        (46, 4096, 96, 8)
    );
    assert_eq!((d.head_dim, c.rotary_dims, c.rope.base), (128, 64, 1e6));
    assert!(c.qkv_bias && !c.qk_norm && c.untied_in.is_some());
    assert_eq!((c.ffn, c.first_dense), (10944, 1));
    let m = c.moe;
    assert_eq!(
        (m.n_experts, m.n_used, m.ffn, m.shared_ffn),
        (128, 8, 1408, 1408)
    );
    assert_eq!((m.n_group, m.topk_group, m.scale), (1, 1, 1.0));
    assert!(m.norm_topk_prob && m.scoring == Scoring::Sigmoid);
    let a = c.attention();
    assert_eq!((a.qkv_bias, a.o_bias, a.qk_norm), (true, false, None));
    // Without the key, Glm4MoeConfig's half of each head rotates.
    let c = hf(&[(r#""partial_rotary_factor": 0.5,"#, "")]).unwrap();
    assert_eq!(c.rotary_dims, 64);
    let c = hf(&[(r#""use_qk_norm": false"#, r#""use_qk_norm": true"#)]).unwrap();
    assert_eq!(c.attention().qk_norm, Some((1e-5, false)));
}

#[test]
fn unsupported_values_are_refused_naming_file_key_and_value() {
    let e = hf(&[(r#""hidden_act": "silu""#, r#""hidden_act": "gelu""#)]).unwrap_err();
    assert!(
        e.to_string()
            .contains("glm-4.5-air/config.json: hidden_act = \"gelu\" is not supported"),
        "{e}"
    );
    let e = hf(&[(r#""n_group": 1"#, r#""n_group": 3"#)]).unwrap_err();
    assert!(e.to_string().contains("3 equal groups"), "{e}");
    let e = hf(&[(
        r#""partial_rotary_factor": 0.5"#,
        r#""partial_rotary_factor": 0.01"#,
    )])
    .unwrap_err();
    assert!(e.to_string().contains("rotary dimensions"), "{e}");
}

#[test]
fn gguf_metadata_gives_the_same_config_as_the_exported_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let dtype = candle_core::quantized::GgmlDType::F32;
    crate::models::testing::write_tiny_gguf(&SPEC, &path, 1, dtype, None).unwrap();
    let from_gguf = Config::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
    let hf_dir = dir.path().join("hf");
    crate::models::testing::write_tiny_hf(&SPEC, &hf_dir, 1).unwrap();
    let from_hf =
        Config::from_hf(&HfConfig::from_file(&hf_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((from_gguf.rotary_dims, from_gguf.first_dense), (8, 1));
    assert!(from_gguf.qkv_bias && from_gguf.qk_norm);
    assert_eq!(from_gguf.dims, from_hf.dims);
    assert_eq!(from_gguf.moe, from_hf.moe);
    assert_eq!(from_gguf.rotary_dims, from_hf.rotary_dims);
    assert_eq!(
        (from_gguf.qkv_bias, from_gguf.qk_norm, from_gguf.first_dense),
        (from_hf.qkv_bias, from_hf.qk_norm, from_hf.first_dense)
    );
}
