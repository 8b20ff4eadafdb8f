//! DeepSeek-V3: configuration reading (published V3 and V2-Lite shapes, DeepSeek-V2's own
//! class, refusals), the latent cache's size, and the engine's properties on the tiny model
//! (decode equals prefill, chunks after single steps, a rewind, a second chat turn resumed
//! from the cache).

use super::*;
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::models::layers::grouped_moe::Scoring;
use crate::models::layers::mla;
use crate::models::rope_config::RopeScaling;
use candle_core::Device;

/// DeepSeek-V3's `config.json` (values as published, less its FP8 `quantization_config`).
const CONFIG: &str = r#"{"architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false,
    "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1,
    "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
    "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1, "pretraining_tp": 1, "q_lora_rank": 1536,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
        "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
    "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
    "v_head_dim": 128, "vocab_size": 129280}"#;

fn hf(edits: &[(&str, &str)]) -> crate::Result<Config> {
    let text = crate::models::testing::edited(CONFIG, edits);
    Config::from_hf(&HfConfig::parse(&text, "deepseek-v3/config.json")?)
}

#[test]
fn deepseek_v3_reads_its_latent_attention_router_and_yarn_scale() {
    let c = hf(&[]).unwrap();
    let (d, m) = (c.dims, c.mla);
    assert_eq!(
        (d.n_layers, d.hidden, d.n_heads, d.vocab_size),
        (61, 7168, 128, 129_280)
    );
    assert_eq!((m.q_lora_rank, m.kv_lora_rank), (Some(1536), 512));
    assert_eq!((m.qk_nope, m.qk_rope, m.v_head), (128, 64, 128));
    assert_eq!((c.ffn, c.first_dense, c.mtp_layers), (18432, 3, 1));
    assert!(c.rope_interleave && c.untied_in.is_some());
    let RopeScaling::Yarn(y) = &c.rope.scaling else {
        panic!("not YaRN: {:?}", c.rope.scaling)
    };
    // mscale = mscale_all_dim: the rotation keeps magnitude 1 ...
    assert_eq!((y.factor, y.original, y.magnitude), (40.0, 4096.0, 1.0));
    // ... and the scores gain (0.1 ln 40 + 1)^2.
    let mscale = 0.1 * 40f64.ln() + 1.0;
    assert!(
        (m.scale - mscale * mscale / 192f64.sqrt()).abs() < 1e-12,
        "{}",
        m.scale
    );
    let moe = c.moe;
    assert_eq!(
        (moe.n_experts, moe.n_used, moe.ffn, moe.shared_ffn),
        (256, 8, 2048, 2048)
    );
    assert_eq!((moe.n_group, moe.topk_group, moe.scale), (8, 4, 2.5));
    assert!(moe.norm_topk_prob && moe.scoring == Scoring::Sigmoid);
}

#[test]
fn the_latent_cache_is_a_fraction_of_the_expanded_keys_and_values() {
    let c = hf(&[]).unwrap();
    // 61 layers × (512 + 64) f16 values against 61 × 128 heads × (192 + 128).
    assert_eq!(c.cache_bytes_per_token(2), 61 * 576 * 2);
    assert_eq!(c.expanded_kv_bytes_per_token(2), 61 * 128 * 320 * 2);
    assert_eq!(c.cache_bytes_per_token(2), 70_272);
}

#[test]
fn a_null_q_lora_rank_is_a_plain_query_projection_and_absent_keys_take_class_defaults() {
    let c = hf(&[(r#""q_lora_rank": 1536"#, r#""q_lora_rank": null"#)]).unwrap();
    assert_eq!(c.mla.q_lora_rank, None);
    // Without the key, DeepseekV3Config's 1536.
    let c = hf(&[(r#""q_lora_rank": 1536,"#, "")]).unwrap();
    assert_eq!(c.mla.q_lora_rank, Some(1536));
    // Plain RoPE: no extra score scale.
    let c = hf(&[(
        r#""rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
        "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},"#,
        "",
    )])
    .unwrap();
    assert_eq!(c.rope.scaling, RopeScaling::None);
    assert!((c.mla.scale - 1.0 / 192f64.sqrt()).abs() < 1e-12);
}

#[test]
fn unsupported_values_are_refused_naming_file_key_and_value() {
    for (from, to, key) in [
        (
            r#""scoring_func": "sigmoid""#,
            r#""scoring_func": "softmax""#,
            "scoring_func",
        ),
        (
            r#""hidden_act": "silu""#,
            r#""hidden_act": "gelu""#,
            "hidden_act",
        ),
        (
            r#""attention_bias": false"#,
            r#""attention_bias": true"#,
            "attention_bias",
        ),
    ] {
        let e = hf(&[(from, to)]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("deepseek-v3/config.json: {key} = ")),
            "{e}"
        );
        assert!(e.contains("supported"), "{e}");
    }
    // An export of a GGUF writes llama.cpp's number: 2 (sigmoid) runs, 1 (softmax) is refused.
    assert!(hf(&[(r#""scoring_func": "sigmoid""#, r#""scoring_func": 2"#)]).is_ok());
    let e = hf(&[(r#""scoring_func": "sigmoid""#, r#""scoring_func": 1"#)]).unwrap_err();
    assert!(
        e.to_string().contains("scoring_func = 1 is not supported"),
        "{e}"
    );
    let e = hf(&[(r#""n_group": 8"#, r#""n_group": 3"#)]).unwrap_err();
    assert!(e.to_string().contains("3 equal groups"), "{e}");
    // Groups of one expert, 4 of them eligible: too few for 8 per token.
    let e = hf(&[(r#""n_group": 8"#, r#""n_group": 256"#)]).unwrap_err();
    assert!(
        e.to_string()
            .contains("8 experts used per token out of the 4"),
        "{e}"
    );
    let e = hf(&[(r#""qk_rope_head_dim": 64"#, r#""qk_rope_head_dim": 63"#)]).unwrap_err();
    assert!(e.to_string().contains("qk_rope_head_dim 63"), "{e}");
}

/// DeepSeek-V2-Lite's `config.json` (values as published, less `auto_map`).
const V2_LITE: &str = r#"{"architectures": ["DeepseekV2ForCausalLM"], "attention_bias": false,
    "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000,
    "eos_token_id": 100001, "first_k_dense_replace": 1, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64,
    "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16,
    "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16,
    "pretraining_tp": 1, "q_lora_rank": null, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
        "mscale": 0.707, "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
        "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
    "seq_aux": true, "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy",
    "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
    "v_head_dim": 128, "vocab_size": 102400}"#;

fn v2(edits: &[(&str, &str)]) -> crate::Result<Config> {
    let text = crate::models::testing::edited(V2_LITE, edits);
    Config::from_hf(&HfConfig::parse(&text, "deepseek-v2/config.json")?)
}

#[test]
fn deepseek_v2_lite_reads_its_softmax_greedy_router_and_yarn_scale() {
    use crate::models::layers::grouped_moe::GroupRank;
    let c = v2(&[]).unwrap();
    let (d, m) = (c.dims, c.mla);
    assert_eq!(
        (d.n_layers, d.hidden, d.n_heads, d.vocab_size),
        (27, 2048, 16, 102_400)
    );
    assert_eq!((m.q_lora_rank, m.kv_lora_rank), (None, 512));
    assert_eq!((c.ffn, c.first_dense, c.mtp_layers), (10944, 1, 0));
    assert!(c.rope_interleave && c.untied_in.is_some());
    // mscale(40, 0.707)² on the scores.
    let mscale = 0.1 * 0.707 * 40f64.ln() + 1.0;
    let want = mscale * mscale / 192f64.sqrt();
    assert!((m.scale - want).abs() < 1e-12, "{} vs {want}", m.scale);
    let moe = c.moe;
    assert_eq!(
        (moe.n_experts, moe.n_used, moe.ffn, moe.shared_ffn),
        (64, 6, 1408, 2816)
    );
    assert_eq!((moe.n_group, moe.topk_group, moe.scale), (1, 1, 1.0));
    assert_eq!(
        (moe.scoring, moe.group_rank),
        (Scoring::Softmax, GroupRank::Best)
    );
    assert!(!moe.norm_topk_prob);
    // DeepSeek-V2 and V2.5: groups, ranked by their best score. `greedy` reads no groups (null
    // there as transformers saves its defaults); `rope_interleave` is not a V2 key.
    let groups = [
        (r#""n_group": 1"#, r#""n_group": 8"#),
        (r#""topk_group": 1"#, r#""topk_group": 3"#),
        (
            r#""topk_method": "greedy""#,
            r#""topk_method": "group_limited_greedy""#,
        ),
        (
            r#""routed_scaling_factor": 1.0"#,
            r#""routed_scaling_factor": 16.0"#,
        ),
    ];
    let c = v2(&groups).unwrap();
    assert_eq!((c.moe.n_group, c.moe.topk_group, c.moe.scale), (8, 3, 16.0));
    let c = v2(&[
        (r#""n_group": 1"#, r#""n_group": null"#),
        (
            r#""use_cache": true"#,
            r#""use_cache": true, "rope_interleave": false"#,
        ),
    ])
    .unwrap();
    assert_eq!((c.moe.n_group, c.rope_interleave), (1, true));
}

#[test]
fn deepseek_v2_values_its_class_cannot_run_are_refused() {
    for (from, to, key) in [
        (
            r#""scoring_func": "softmax""#,
            r#""scoring_func": "sigmoid""#,
            "scoring_func",
        ),
        (
            r#""norm_topk_prob": false"#,
            r#""norm_topk_prob": true"#,
            "norm_topk_prob",
        ),
        (
            r#""topk_method": "greedy""#,
            r#""topk_method": "noaux_tc""#,
            "topk_method",
        ),
        (
            r#""topk_method": "greedy""#,
            r#""topk_method": null"#,
            "topk_method",
        ),
        (
            r#""num_experts_per_tok": 6"#,
            r#""num_experts_per_tok": null"#,
            "num_experts_per_tok",
        ),
        (
            r#""attention_bias": false"#,
            r#""attention_bias": true"#,
            "attention_bias",
        ),
        (
            r#""moe_layer_freq": 1"#,
            r#""moe_layer_freq": 2"#,
            "moe_layer_freq",
        ),
        (
            r#""use_cache": true"#,
            r#""use_cache": true, "mlp_bias": true"#,
            "mlp_bias",
        ),
    ] {
        let e = v2(&[(from, to)]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("deepseek-v2/config.json: {key} = ")),
            "{e}"
        );
        assert!(e.contains("supported"), "{e}");
    }
    // group_limited_greedy needs its groups.
    let e = v2(&[
        (
            r#""topk_method": "greedy""#,
            r#""topk_method": "group_limited_greedy""#,
        ),
        (r#""n_group": 1"#, r#""n_group": null"#),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("n_group = null"), "{e}");
}

/// The tiny random-weight model (F32) in `dir`.
fn tiny(dir: &std::path::Path) -> Box<dyn CausalLm> {
    let path = dir.join("tiny.gguf");
    let dtype = candle_core::quantized::GgmlDType::F32;
    crate::models::testing::write_tiny_gguf(&SPEC, &path, 9, dtype, None).unwrap();
    crate::models::load_gguf(&Gguf::open(&path).unwrap(), &Device::Cpu).unwrap()
}

/// The logits after each of `chunks`, fed in order into `cache`.
fn feed(m: &dyn CausalLm, cache: &mut crate::models::Cache, chunks: &[&[u32]]) -> Vec<Vec<f32>> {
    chunks
        .iter()
        .map(|c| {
            crate::models::step(m, c, &Device::Cpu, cache, None)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
    let max = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(max <= 1e-4 * scale, "{what}: max |Δ| {max} (scale {scale})");
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 128).collect()
}

#[test]
fn the_cache_holds_one_latent_per_layer_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    // kv_lora_rank 32: the values are the latent's first 32 columns.
    assert_eq!(
        m.cache_layout(),
        vec![LayerKind::Latent { value_width: 32 }; 3]
    );
    let mut cache = crate::models::new_cache(m.as_ref(), 64).unwrap();
    feed(m.as_ref(), &mut cache, &[&prompt(10)]);
    // Three layers of (32 + 8) f32 values per position, in buffers of at least 64 positions.
    assert_eq!(cache.reserved_bytes(), 3 * 64 * 40 * 4);
}

#[test]
fn decode_chunks_and_a_rewind_equal_one_prefill() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    // 150 tokens: the prompt's queries go in two blocks of the latent attention.
    let n = 150;
    let tokens = prompt(n);
    let new_cache = || crate::models::new_cache(m.as_ref(), 256).unwrap();
    let full = feed(m.as_ref(), &mut new_cache(), &[&tokens]);
    let singles: Vec<&[u32]> = tokens.chunks(1).collect();
    let steps = feed(m.as_ref(), &mut new_cache(), &singles);
    assert_close("token by token", &full[0], &steps[n - 1]);
    let mixed = feed(
        m.as_ref(),
        &mut new_cache(),
        &[&tokens[..3], &tokens[3..4], &tokens[4..5], &tokens[5..]],
    );
    assert_close("chunks after single steps", &full[0], &mixed[3]);
    // Go back from 150 to 100 positions, then feed the rest again.
    let mut cache = new_cache();
    feed(m.as_ref(), &mut cache, &[&tokens, &prompt(7)]);
    assert_eq!(cache.rewind(100), 100);
    let again = feed(m.as_ref(), &mut cache, &[&tokens[100..]]);
    assert_close("after a rewind", &full[0], &again[0]);
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
    assert_eq!(from_gguf.mla.q_lora_rank, Some(32));
    assert_eq!((from_gguf.first_dense, from_gguf.moe.n_group), (1, 2));
    // The GGUF holds the epsilon as f32.
    assert_eq!(from_gguf.mla.eps as f32, from_hf.mla.eps as f32);
    let mla = |c: &Config| mla::Config { eps: 0.0, ..c.mla };
    assert_eq!(mla(&from_gguf), mla(&from_hf));
    assert_eq!(from_gguf.moe, from_hf.moe);
    assert_eq!(from_gguf.dims, from_hf.dims);
    assert_eq!(from_gguf.first_dense, from_hf.first_dense);
}

#[test]
fn the_second_chat_turn_reuses_the_first_turns_cache_and_replies_as_a_cold_run() {
    use crate::engine::{Engine, GenerateParams, LoadOptions, Message, SamplingParams};
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    crate::models::testing::write_tiny_hf(&SPEC, &hf, 5).unwrap();
    let mut engine = Engine::load(&hf, &LoadOptions::default()).unwrap();
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(6),
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let reply = |engine: &mut Engine, messages: &[Message]| {
        let tokens = engine.chat_tokens(messages).unwrap();
        let mut text = String::new();
        let stats = engine
            .generate(&tokens, &params, &mut |t| {
                text.push_str(t);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        (text, stats, tokens.len())
    };
    let mut conversation = vec![Message::new("user", "Hi there!")];
    let (answer, first, turn1_len) = reply(&mut engine, &conversation);
    assert_eq!(first.reused_tokens, 0);
    conversation.push(Message::new("assistant", answer));
    conversation.push(Message::new("user", "And then?"));
    let (warm, second, _) = reply(&mut engine, &conversation);
    assert!(second.reused_tokens >= turn1_len - 1, "{second:?}");
    engine.reset();
    let (cold, third, _) = reply(&mut engine, &conversation);
    assert_eq!(third.reused_tokens, 0);
    assert_eq!(warm, cold);
}
