//! gpt-oss: configuration reading, and the engine's properties on tiny models with dense and
//! MXFP4 experts (decode equals prefill across the sliding window, chunks after single steps,
//! a second chat turn resumes from the cache).

use super::*;
use crate::formats::blocks::{BlockType, Blocks};
use crate::formats::gguf::MemoryTensor;
use crate::models::CausalLm;
use candle_core::Device;

/// gpt-oss-20b's `config.json` (values as published).
const CONFIG: &str = r#"{"architectures": ["GptOssForCausalLM"], "attention_bias": true,
    "attention_dropout": 0.0, "eos_token_id": 200002, "experts_per_token": 4,
    "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
    "initializer_range": 0.02, "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention",
        "full_attention", "sliding_attention", "full_attention", "sliding_attention",
        "full_attention", "sliding_attention", "full_attention", "sliding_attention",
        "full_attention", "sliding_attention", "full_attention", "sliding_attention",
        "full_attention", "sliding_attention", "full_attention", "sliding_attention",
        "full_attention", "sliding_attention", "full_attention", "sliding_attention",
        "full_attention"],
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "output_router_logits": false, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn",
        "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
        "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128,
    "swiglu_limit": 7.0, "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0",
    "use_cache": true, "vocab_size": 201088}"#;

fn hf(edits: &[(&str, &str)]) -> Result<Config> {
    let text = crate::models::testing::edited(CONFIG, edits);
    Config::from_hf(&HfConfig::parse(&text, "gpt-oss/config.json")?)
}

#[test]
fn gpt_oss_20b_reads_its_window_yarn_experts_and_clamp() {
    let c = hf(&[]).unwrap();
    let d = c.dims;
    assert_eq!((d.n_layers, d.hidden, d.head_dim), (24, 2880, 64));
    assert_eq!((d.n_heads, d.n_kv_heads, d.vocab_size), (64, 8, 201_088));
    assert_eq!(
        (c.rope.base, c.eps, c.sliding_window),
        (150_000.0, 1e-5, 128)
    );
    assert_eq!(c.sliding.iter().filter(|s| **s).count(), 12);
    assert!(c.sliding[0] && !c.sliding[1] && c.attn_bias);
    let RopeScaling::Yarn(y) = &c.rope.scaling else {
        panic!("not YaRN: {:?}", c.rope.scaling)
    };
    assert_eq!((y.factor, y.original, y.truncate), (32.0, 4096.0, false));
    let m = c.moe;
    assert_eq!((m.n_experts, m.n_used, m.ffn), (32, 4, 2880));
    assert_eq!((m.alpha, m.limit), (1.702, 7.0));
    assert!(c.untied_in.is_some());
    // The attention of a sliding layer sees 128 positions; a full one every position.
    assert_eq!(c.attention(0).sliding_window, Some(128));
    assert_eq!(c.attention(1).sliding_window, None);
}

#[test]
fn absent_keys_take_the_class_defaults() {
    // No RoPE keys at all: GptOssConfig's YaRN (factor 32, no truncation).
    let c = hf(&[(
        r#""rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
        "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},"#,
        "",
    )])
    .unwrap();
    let RopeScaling::Yarn(y) = &c.rope.scaling else {
        panic!("not YaRN: {:?}", c.rope.scaling)
    };
    assert_eq!((y.factor, y.truncate), (32.0, false));
    // No layer types: every other layer slides, from layer 0.
    let c = hf(&[(r#""layer_types": ["#, r#""unused_types": ["#)]).unwrap();
    assert_eq!(&c.sliding[..4], [true, false, true, false]);
    let c = hf(&[(
        r#""swiglu_limit": 7.0,"#,
        r#""swiglu_limit": 3.0, "swiglu_alpha": 2.0,"#,
    )])
    .unwrap();
    assert_eq!((c.moe.alpha, c.moe.limit), (2.0, 3.0));
}

#[test]
fn unsupported_values_are_refused_naming_file_key_and_value() {
    let e = hf(&[(r#""quant_method": "mxfp4""#, r#""quant_method": "fp8""#)]).unwrap_err();
    assert!(
        e.to_string().contains(
            "gpt-oss/config.json: quantization_config.quant_method = \"fp8\" is not supported"
        ),
        "{e}"
    );
    let e = hf(&[(
        r#"["sliding_attention", "full_attention", "#,
        r#"["chunked", "full_attention", "#,
    )])
    .unwrap_err();
    assert!(e.to_string().contains("layer_types"), "{e}");
    let e = hf(&[(
        r#""num_experts_per_tok": 4"#,
        r#""num_experts_per_tok": 40"#,
    )])
    .unwrap_err();
    assert!(e.to_string().contains("40 experts used"), "{e}");
    let e = hf(&[(r#""swiglu_limit": 7.0"#, r#""swiglu_limit": 0.0"#)]).unwrap_err();
    assert!(e.to_string().contains("swiglu_limit"), "{e}");
}

/// The tiny random-weight model (F32), in `dir`; with `mxfp4` its expert matrices are
/// quantized to MXFP4 (the rest as written).
fn tiny(dir: &std::path::Path, mxfp4: bool) -> Box<dyn CausalLm> {
    let path = dir.join("tiny.gguf");
    let dtype = candle_core::quantized::GgmlDType::F32;
    crate::models::testing::write_tiny_gguf(&SPEC, &path, 9, dtype, None).unwrap();
    let gguf = Gguf::open(&path).unwrap();
    if !mxfp4 {
        return crate::models::load_gguf(&gguf, &Device::Cpu).unwrap();
    }
    let tensors: Vec<(String, MemoryTensor)> = gguf
        .tensor_names()
        .map(|name| {
            let t = gguf.tensor(name, &Device::Cpu).unwrap();
            let m = if name.ends_with("_exps.weight") {
                let values: Vec<f32> = t
                    .dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                Blocks::quantize(BlockType::Mxfp4, &values, t.shape().dims().to_vec())
                    .unwrap()
                    .into()
            } else {
                t.into()
            };
            (name.to_string(), m)
        })
        .collect();
    let meta = gguf.content().metadata.clone().into_iter().collect();
    let mem = Gguf::from_memory("tiny-mxfp4", meta, tensors).unwrap();
    crate::models::load_gguf(&mem, &Device::Cpu).unwrap()
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
fn decode_and_chunks_equal_one_prefill_across_the_window() {
    let dir = tempfile::tempdir().unwrap();
    // Windows of 5 on layers 0 and 2. 40 tokens: every pass takes the few-query attention;
    // 70: the prompt takes the matmul attention (its f32 sums differ from decoding's f16
    // ones in the last bits).
    for (mxfp4, n) in [(false, 70), (true, 40), (true, 70)] {
        let m = tiny(dir.path(), mxfp4);
        let tokens = prompt(n);
        let new_cache = || crate::models::new_cache(m.as_ref(), 128).unwrap();
        let full = feed(m.as_ref(), &mut new_cache(), &[&tokens]);
        let singles: Vec<&[u32]> = tokens.chunks(1).collect();
        let steps = feed(m.as_ref(), &mut new_cache(), &singles);
        assert_close(
            &format!("mxfp4 {mxfp4}, {n} steps"),
            &full[0],
            &steps[n - 1],
        );
        let mixed = feed(
            m.as_ref(),
            &mut new_cache(),
            &[&tokens[..3], &tokens[3..4], &tokens[4..5], &tokens[5..]],
        );
        assert_close(
            &format!("mxfp4 {mxfp4}, {n} in chunks"),
            &full[0],
            &mixed[3],
        );
    }
}

#[test]
fn mxfp4_experts_stay_close_to_the_dense_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = prompt(12);
    let run = |mxfp4| {
        let m = tiny(dir.path(), mxfp4);
        let mut cache = crate::models::new_cache(m.as_ref(), 64).unwrap();
        feed(m.as_ref(), &mut cache, &[&tokens]).remove(0)
    };
    let (dense, quantized) = (run(false), run(true));
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let diff: Vec<f32> = dense.iter().zip(&quantized).map(|(a, b)| a - b).collect();
    // 4-bit experts move the logits, but not past a fraction of their scale.
    let rel = rms(&diff) / rms(&dense);
    assert!(rel > 1e-4 && rel < 0.3, "relative RMS {rel}");
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
    assert_eq!(from_gguf.sliding, [true, false, true]);
    assert_eq!(from_gguf.sliding, from_hf.sliding);
    assert_eq!(from_gguf.moe, from_hf.moe);
    assert_eq!(from_gguf.dims, from_hf.dims);
    assert_eq!(from_gguf.rope, from_hf.rope);
    assert_eq!(from_gguf.sliding_window, from_hf.sliding_window);
}

#[test]
fn the_second_chat_turn_reuses_the_first_turns_cache_and_replies_as_a_cold_run() {
    use crate::engine::{Engine, GenerateParams, LoadOptions, Message, SamplingParams};
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    crate::models::testing::write_tiny_hf(&SPEC, &hf, 5).unwrap();
    // The harmony template's system message alone outgrows the tiny model's 256 positions
    // (its vocabulary spells it byte by byte): ChatML keeps the turns short.
    let opts = LoadOptions {
        chat_template: crate::formats::chat_template::builtin("chatml").map(str::to_string),
        ..LoadOptions::default()
    };
    let mut engine = Engine::load(&hf, &opts).unwrap();
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
    // Turn 1's prompt (past the window of 5 of the sliding layers) is reused.
    assert!(second.reused_tokens >= turn1_len - 1, "{second:?}");
    engine.reset();
    let (cold, third, _) = reply(&mut engine, &conversation);
    assert_eq!(third.reused_tokens, 0);
    assert_eq!(warm, cold);
}
