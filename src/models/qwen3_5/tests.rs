//! Qwen3.5: configuration reading, and the engine's properties on tiny hybrid models (decode
//! equals prefill across the delta rule's chunks, turns resume from snapshots, a full context
//! is refused).

use super::*;
use crate::models::CausalLm;

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
    assert_eq!(
        (c.n_layers, c.hidden, c.head_dim, c.rotary_dim),
        (32, 4096, 256, 64)
    );
    assert_eq!((c.n_heads, c.n_kv_heads, c.rope.base), (16, 4, 1e7));
    // Every fourth layer attends; the others are DeltaNet layers.
    assert_eq!(c.recurrent.iter().filter(|r| !**r).count(), 8);
    assert!(c.recurrent[0] && !c.recurrent[3]);
    let l = &c.linear;
    assert_eq!(
        (l.k_heads, l.v_heads, l.k_dim, l.v_dim, l.kernel),
        (16, 32, 128, 128, 4)
    );
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
    let e = hf(&[(
        "\"full_attention_interval\": 4,",
        "\"layer_types\": [\"mamba\"],",
    )])
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
    let e = hf(&[(
        "\"linear_num_value_heads\": 32",
        "\"linear_num_value_heads\": 24",
    )])
    .unwrap_err();
    assert!(e.to_string().contains("value heads"), "{e}");
}

/// The tiny random-weight model of `spec` (F32), in `dir`.
fn tiny(spec: &FamilySpec, dir: &std::path::Path) -> Box<dyn CausalLm> {
    let path = dir.join("tiny.gguf");
    let dtype = candle_core::quantized::GgmlDType::F32;
    crate::models::testing::write_tiny_gguf(spec, &path, 9, dtype, None).unwrap();
    let gguf = Gguf::open(&path).unwrap();
    crate::models::load_gguf(&gguf, &candle_core::Device::Cpu).unwrap()
}

/// The logits after each of `chunks`, fed in order into `cache`.
fn feed(m: &dyn CausalLm, cache: &mut crate::models::Cache, chunks: &[&[u32]]) -> Vec<Vec<f32>> {
    chunks
        .iter()
        .map(|c| {
            crate::models::step(m, c, &candle_core::Device::Cpu, cache, None)
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
fn decode_and_chunks_equal_one_prefill_across_delta_rule_chunks() {
    let dir = tempfile::tempdir().unwrap();
    for spec in [&SPEC, &crate::models::qwen3_5_moe::SPEC] {
        let m = tiny(spec, dir.path());
        let tokens = prompt(150); // chunks of 64, 64 and 22
        let new_cache = || crate::models::new_cache(m.as_ref(), 256).unwrap();
        let full = feed(m.as_ref(), &mut new_cache(), &[&tokens]);
        let singles: Vec<&[u32]> = tokens.chunks(1).collect();
        let steps = feed(m.as_ref(), &mut new_cache(), &singles);
        assert_close(spec.id, &full[0], &steps[149]);
        let mixed = feed(
            m.as_ref(),
            &mut new_cache(),
            &[&tokens[..70], &tokens[70..71], &tokens[71..]],
        );
        assert_close(spec.id, &full[0], &mixed[2]);
    }
}

#[test]
fn a_turn_resumes_from_the_snapshot_at_the_turn_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&SPEC, dir.path());
    let turn1 = prompt(20);
    let (reply_a, reply_b): (Vec<u32>, Vec<u32>) = (vec![3, 4, 5], vec![9, 8, 7, 6]);
    let mut cache = crate::models::new_cache(m.as_ref(), 64).unwrap();
    feed(m.as_ref(), &mut cache, &[&turn1]);
    cache.snapshot().unwrap();
    feed(m.as_ref(), &mut cache, &[&reply_a]);
    // DeltaNet state cannot step back token by token: only to the snapshot.
    assert_eq!(cache.rewind(22), 20);
    let warm = feed(m.as_ref(), &mut cache, &[&reply_b]);
    let cold_tokens: Vec<u32> = turn1.iter().chain(&reply_b).copied().collect();
    let mut cold_cache = crate::models::new_cache(m.as_ref(), 64).unwrap();
    let cold = feed(m.as_ref(), &mut cold_cache, &[&cold_tokens]);
    assert_close("resumed turn", &cold[0], &warm[0]);
}

#[test]
fn a_full_context_is_refused_and_leaves_the_cache_usable() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&SPEC, dir.path());
    let mut cache = crate::models::new_cache(m.as_ref(), 16).unwrap();
    feed(m.as_ref(), &mut cache, &[&prompt(10)]);
    let e = crate::models::step(
        m.as_ref(),
        &prompt(8),
        &candle_core::Device::Cpu,
        &mut cache,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ContextFull { .. }), "{e}");
    assert_eq!(cache.pos(), 10);
    let more = feed(m.as_ref(), &mut cache, &[&[1, 2]]);
    let mut fresh = crate::models::new_cache(m.as_ref(), 16).unwrap();
    let tokens: Vec<u32> = prompt(10).into_iter().chain([1, 2]).collect();
    assert_close(
        "after refusal",
        &feed(m.as_ref(), &mut fresh, &[&tokens])[0],
        &more[0],
    );
}

#[test]
fn gguf_metadata_gives_the_same_config_as_the_exported_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let dtype = candle_core::quantized::GgmlDType::F32;
    crate::models::testing::write_tiny_gguf(&SPEC, &path, 1, dtype, None).unwrap();
    let from_gguf = Config::from_gguf(&Gguf::open(&path).unwrap(), &DENSE).unwrap();
    let hf_dir = dir.path().join("hf");
    crate::models::testing::write_tiny_hf(&SPEC, &hf_dir, 1).unwrap();
    let from_hf = Config::from_hf(
        &HfConfig::from_file(&hf_dir.join("config.json")).unwrap(),
        false,
    )
    .unwrap();
    assert_eq!(from_gguf.recurrent, [true, false, true]);
    assert_eq!((from_gguf.rotary_dim, from_hf.rotary_dim), (8, 8));
    // Only the value-head order differs between the formats.
    assert!(from_gguf.linear.v_heads_tiled && !from_hf.linear.v_heads_tiled);
    let untiled = delta_net::Config {
        v_heads_tiled: false,
        eps: from_hf.linear.eps, // stored as f32 in the GGUF
        ..from_gguf.linear.clone()
    };
    assert_eq!(untiled, from_hf.linear);
    assert_eq!(from_gguf.recurrent, from_hf.recurrent);
}

#[test]
fn the_second_chat_turn_resumes_from_the_first_turns_snapshot_and_replies_as_a_cold_run() {
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
    // Regenerating goes back to the snapshot before the last prompt token (the DeltaNet
    // state cannot step back from the end of the reply) and gives the same reply.
    let (again, regenerated, _) = reply(&mut engine, &conversation);
    assert_eq!(regenerated.reused_tokens, turn1_len - 1);
    assert_eq!(again, answer);
    conversation.push(Message::new("assistant", answer));
    conversation.push(Message::new("user", "And then?"));
    let (warm, second, _) = reply(&mut engine, &conversation);
    // Recurrent state goes back at most to the snapshot before turn 1's last prompt token
    // (here the whole cache matches: turn 1 with its reply).
    assert!(second.reused_tokens >= turn1_len - 1, "{second:?}");
    engine.reset();
    let (cold, third, _) = reply(&mut engine, &conversation);
    assert_eq!(third.reused_tokens, 0);
    assert_eq!(warm, cold);
}
