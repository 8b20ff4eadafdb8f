//! LFM2's configuration readers, and the engine's properties on a tiny hybrid model
//! (convolution and attention blocks, which the shared synthetic writer cannot make): decode
//! equals prefill, chunks after single steps, rewinding to a snapshot of the convolution
//! state, and chat reuse through the engine.

use std::ops::ControlFlow;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use super::*;
use crate::engine::{Engine, GenerateParams, LoadOptions, Message, SamplingParams};
use crate::models::synthetic::{self, Rng};
use crate::models::testing::{self, FFN, HEADS, HIDDEN, KV_HEADS, VOCAB};
use crate::models::{self, Cache};

/// LFM2-350M's `config.json` keys that matter here (values as published, 6 layers).
const CONFIG: &str = r#"{"architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2",
    "block_auto_adjust_ff_dim": true, "block_ff_dim": 6656, "block_ffn_dim_multiplier": 1.0,
    "block_multiple_of": 256, "conv_L_cache": 3, "conv_bias": false, "hidden_size": 1024,
    "intermediate_size": 6656, "max_position_embeddings": 128000, "norm_eps": 1e-05,
    "num_attention_heads": 16, "num_hidden_layers": 6, "num_key_value_heads": 8,
    "layer_types": ["conv", "conv", "full_attention", "conv", "conv", "full_attention"],
    "rope_theta": 1000000.0, "tie_embedding": true, "vocab_size": 65536}"#;

fn hf(edits: &[(&str, &str)]) -> Result<Config> {
    let text = testing::edited(CONFIG, edits);
    config(&ConfigSource::Hf(&HfConfig::parse(
        &text,
        "lfm2/config.json",
    )?))
}

#[test]
fn config_reads_layer_kinds_and_the_adjusted_ffn_width() {
    let c = hf(&[]).unwrap();
    assert_eq!(c.attention, [false, false, true, false, false, true]);
    // 2/3 of 6656 is 4437, rounded up to a multiple of 256: 4608 (LFM2-350M's width).
    assert_eq!((c.ffn, c.conv.taps, c.untied_in.is_none()), (4608, 3, true));
    let c = hf(&[(
        "\"block_auto_adjust_ff_dim\": true",
        "\"block_auto_adjust_ff_dim\": false",
    )]);
    assert_eq!(c.unwrap().ffn, 6656);
    let bad = hf(&[("\"conv\", \"conv\", \"full", "\"mamba\", \"conv\", \"full")]);
    assert!(bad.unwrap_err().to_string().contains("layer_types"));
    let bad = hf(&[("\"conv_L_cache\": 3", "\"conv_L_cache\": 1")]);
    assert!(bad.unwrap_err().to_string().contains("conv_L_cache"));
}

/// Layer kinds of the tiny hybrid: convolutions around one attention block.
const ATTENTION: [bool; 4] = [false, true, false, false];

/// Writes a tiny hybrid LFM2 GGUF (f32 or `dtype` matrices) with the tiny tokenizer.
fn write_hybrid(path: &std::path::Path, dtype: GgmlDType) {
    write_hybrid_with(path, dtype, |_| {});
}

/// [`write_hybrid`] with the metadata changed by `edit`.
fn write_hybrid_with(
    path: &std::path::Path,
    dtype: GgmlDType,
    edit: impl FnOnce(&mut testing::Meta),
) {
    let mut rng = Rng::new(5);
    let d = synthetic::Dims {
        layers: ATTENTION.len(),
        hidden: HIDDEN,
        heads: HEADS,
        kv_heads: KV_HEADS,
        head_dim: HIDDEN / HEADS,
        ffn: FFN,
        vocab: VOCAB,
        context: 256,
    };
    let mut meta = synthetic::metadata("lfm2", &d, 1e-5, 10_000.0, &[("shortconv.l_cache", 3)]);
    let kv = ATTENTION.map(|a| gguf_file::Value::U32(if a { KV_HEADS as u32 } else { 0 }));
    testing::set_meta(
        &mut meta,
        "lfm2.attention.head_count_kv",
        gguf_file::Value::Array(kv.to_vec()),
    );
    meta.extend(testing::tiny_tokenizer_metadata());
    edit(&mut meta);
    let (h, q, kvd) = (HIDDEN, HIDDEN, KV_HEADS * HIDDEN / HEADS);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![VOCAB, h]),
        ("token_embd_norm.weight".into(), vec![h]),
    ];
    for (i, &attn) in ATTENTION.iter().enumerate() {
        let mut block: Vec<(&str, Vec<usize>)> = vec![
            ("attn_norm.weight", vec![h]),
            ("ffn_norm.weight", vec![h]),
            ("ffn_gate.weight", vec![FFN, h]),
            ("ffn_up.weight", vec![FFN, h]),
            ("ffn_down.weight", vec![h, FFN]),
        ];
        block.extend(match attn {
            true => vec![
                ("attn_q.weight", vec![q, h]),
                ("attn_k.weight", vec![kvd, h]),
                ("attn_v.weight", vec![kvd, h]),
                ("attn_output.weight", vec![h, q]),
                ("attn_q_norm.weight", vec![HIDDEN / HEADS]),
                ("attn_k_norm.weight", vec![HIDDEN / HEADS]),
            ],
            false => vec![
                ("shortconv.conv.weight", vec![h, 3]),
                ("shortconv.in_proj.weight", vec![3 * h, h]),
                ("shortconv.out_proj.weight", vec![h, h]),
            ],
        });
        tensors.extend(block.into_iter().map(|(n, s)| (format!("blk.{i}.{n}"), s)));
    }
    let tensors: Vec<(String, QTensor)> = tensors
        .into_iter()
        .map(|(name, shape)| {
            let t = if name.ends_with("norm.weight") {
                rng.tensor(&shape, 1.0, 0.2).unwrap()
            } else {
                let spread = 1.0 / (shape[shape.len() - 1] as f32).sqrt();
                rng.tensor(&shape, 0.0, spread).unwrap()
            };
            let ty = match shape.len() == 2 && shape[1] % 32 == 0 {
                true => dtype,
                false => GgmlDType::F32,
            };
            (name, QTensor::quantize(&t, ty).unwrap())
        })
        .collect();
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

fn hybrid(dtype: GgmlDType) -> (tempfile::TempDir, Box<dyn CausalLm>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lfm2.gguf");
    write_hybrid(&path, dtype);
    let gguf = Gguf::open(&path).unwrap();
    let model = models::load_gguf(&gguf, &Device::Cpu).unwrap();
    (dir, model)
}

const TOKENS: [u32; 11] = [5, 17, 99, 3, 64, 127, 0, 42, 42, 8, 77];

fn step(m: &dyn CausalLm, cache: &mut Cache, tokens: &[u32]) -> Vec<f32> {
    models::step(m, tokens, &Device::Cpu, cache, None)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Logits after each chunk, fed in order into a fresh cache.
fn feed(m: &dyn CausalLm, chunks: &[&[u32]]) -> Vec<Vec<f32>> {
    let mut cache = models::new_cache(m, 64).unwrap();
    chunks.iter().map(|c| step(m, &mut cache, c)).collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
    let max = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(max <= 1e-4 * scale, "{what}: max |Δ| {max} (scale {scale})");
}

#[test]
fn gguf_layer_kinds_come_from_the_per_layer_kv_heads_and_odd_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lfm2.gguf");
    let read = |edit: &dyn Fn(&mut testing::Meta)| {
        write_hybrid_with(&path, GgmlDType::F32, edit);
        Config::from_gguf(&Gguf::open(&path).unwrap())
    };
    let c = read(&|_| {}).unwrap();
    assert_eq!(
        (c.attention.as_slice(), c.dims.n_kv_heads),
        (&ATTENTION[..], KV_HEADS)
    );
    let kv = |counts: [u32; 4]| {
        move |m: &mut testing::Meta| {
            let v = counts.map(gguf_file::Value::U32).to_vec();
            testing::set_meta(
                m,
                "lfm2.attention.head_count_kv",
                gguf_file::Value::Array(v),
            );
        }
    };
    let e = read(&kv([0, 2, 0, 1])).unwrap_err().to_string();
    assert!(
        e.contains("lfm2.attention.head_count_kv = [0, 2, 0, 1]"),
        "{e}"
    );
    let window = |m: &mut testing::Meta| {
        testing::set_meta(m, "lfm2.attention.sliding_window", gguf_file::Value::U32(8));
    };
    let e = read(&window).unwrap_err().to_string();
    assert!(e.contains("sliding_window"), "{e}");
}

#[test]
fn the_hybrid_keeps_convolution_state_and_kv_in_its_cache_layout() {
    let (_dir, m) = hybrid(GgmlDType::F32);
    let layout = m.cache_layout();
    assert_eq!(layout[1], LayerKind::Full);
    assert_eq!(layout[0], LayerKind::Recurrent(vec![vec![2, HIDDEN]]));
    assert_eq!(m.info().n_layers, ATTENTION.len());
}

#[test]
fn incremental_decode_and_chunks_equal_one_prefill() {
    for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
        let (_dir, m) = hybrid(dtype);
        let full = feed(m.as_ref(), &[&TOKENS]);
        let singles: Vec<&[u32]> = TOKENS.chunks(1).collect();
        let steps = feed(m.as_ref(), &singles);
        assert_close("token by token", &full[0], &steps[TOKENS.len() - 1]);
        for n in [1, 2, 5] {
            let prefix = feed(m.as_ref(), &[&TOKENS[..n]]);
            assert_close(&format!("prefix {n}"), &prefix[0], &steps[n - 1]);
        }
        let mixed = feed(m.as_ref(), &[&TOKENS[..1], &TOKENS[1..2], &TOKENS[2..]]);
        assert_close("singles then a chunk", &full[0], &mixed[2]);
        let chunks = feed(m.as_ref(), &[&TOKENS[..4], &TOKENS[4..5], &TOKENS[5..]]);
        assert_close("chunk, single, chunk", &full[0], &chunks[2]);
    }
}

#[test]
fn rewinding_restores_the_convolution_state_of_a_snapshot() {
    let (_dir, m) = hybrid(GgmlDType::F32);
    let cold = feed(m.as_ref(), &[&TOKENS]);
    let mut cache = models::new_cache(m.as_ref(), 64).unwrap();
    // Turn 1: the prompt up to its last token, a snapshot, the last token, a reply.
    step(m.as_ref(), &mut cache, &TOKENS[..5]);
    cache.snapshot().unwrap();
    step(m.as_ref(), &mut cache, &TOKENS[5..6]);
    step(m.as_ref(), &mut cache, &[9, 10, 11]);
    // Turn 2 shares 6 tokens: the state cannot be cut there, so the cache goes back to the
    // snapshot and the rest is fed again.
    assert_eq!(cache.rewind(6), 5);
    let warm = step(m.as_ref(), &mut cache, &TOKENS[5..]);
    assert_close("after the snapshot", &cold[0], &warm);
    // Going back to the current position keeps everything.
    assert_eq!(cache.rewind(TOKENS.len()), TOKENS.len());
    // Going back before every snapshot restarts the sequence.
    assert_eq!(cache.rewind(3), 0);
    let again = step(m.as_ref(), &mut cache, &TOKENS);
    assert_close("after a restart", &cold[0], &again);
}

#[test]
fn chat_turn_two_reuses_the_cache_and_replies_as_a_cold_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lfm2.gguf");
    write_hybrid(&path, GgmlDType::Q8_0);
    let mut engine = Engine::load(&path, &LoadOptions::default()).unwrap();
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
                ControlFlow::Continue(())
            })
            .unwrap();
        (text, stats)
    };
    let mut conversation = vec![Message::new("user", "Hi there")];
    let (answer, first) = reply(&mut engine, &conversation);
    assert_eq!(first.reused_tokens, 0);
    conversation.push(Message::new("assistant", answer));
    conversation.push(Message::new("user", "And again"));
    let (warm, second) = reply(&mut engine, &conversation);
    assert!(second.reused_tokens > 0, "turn 2 reused nothing");
    engine.reset();
    let (cold, third) = reply(&mut engine, &conversation);
    assert_eq!(third.reused_tokens, 0);
    assert_eq!(warm, cold);
}

#[test]
fn inspect_estimates_the_cache_the_engine_reserves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hybrid.gguf");
    write_hybrid(&path, GgmlDType::F32);
    let ctx = testing::CONTEXT;
    let model = crate::inspect::Model::open(&path).unwrap();
    let machine = crate::inspect::machine::Machine::default();
    let s = crate::inspect::summary::summarize(&model, Some(ctx as u64), machine);
    let opts = LoadOptions {
        ctx_size: Some(ctx),
        ..LoadOptions::default()
    };
    let mut engine = Engine::load(&path, &opts).unwrap();
    let tokens: Vec<u32> = (0..ctx as u32).map(|i| 4 + i % 90).collect();
    engine.feed(&tokens).unwrap();
    // Three convolution blocks keep (2, HIDDEN) f32 each, whatever the context; the one
    // attention block keeps keys and values of every position, in f16 as the engine does.
    let state = 3 * 2 * HIDDEN as u64 * 4;
    assert_eq!(s.memory.recurrent_state, Some(state));
    assert_eq!(s.memory.kv_cache_f16, Some(engine.cache_bytes() as u64));
    for (estimate, bytes) in [(s.memory.kv_cache_f16, 2), (s.memory.kv_cache_f32, 4)] {
        let kv = 2 * KV_HEADS * (HIDDEN / HEADS) * ctx * bytes;
        assert_eq!(estimate, Some(state + kv as u64));
    }
}

#[test]
fn the_hybrid_exports_to_safetensors_that_give_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hybrid.gguf");
    write_hybrid(&path, GgmlDType::F32);
    let gguf = crate::formats::gguf::Gguf::open(&path).unwrap();
    let from_gguf = models::load_gguf(&gguf, &Device::Cpu).unwrap();
    let hf = dir.path().join("hf");
    crate::convert::gguf_to_hf(&gguf, &hf, Default::default()).unwrap();
    let config = HfConfig::from_file(&hf.join("config.json")).unwrap();
    let files = [hf.join("model.safetensors")];
    let from_hf =
        models::load_safetensors(&config, &files, Default::default(), &Device::Cpu).unwrap();
    let a = feed(from_gguf.as_ref(), &[&TOKENS]);
    let b = feed(from_hf.as_ref(), &[&TOKENS]);
    assert_close("exported", &a[0], &b[0]);
}
