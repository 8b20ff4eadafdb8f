//! Gemma 4's configuration readers (published `config.json` values, transformers 5.25's
//! `per_layer_config` form, refusals), and the engine's properties on tiny models with
//! sliding and full blocks of different head widths, KV sharing, per-layer inputs and (in
//! the MoE one) experts: decode equals prefill, chunks after single steps, nothing cached for
//! sharing blocks, and chat reuse through the engine.

use std::ops::ControlFlow;

use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::*;
use crate::engine::{Engine, GenerateParams, LoadOptions, Message, SamplingParams};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::models::rope_config::{RopeConfig, RopeScaling};
use crate::models::testing;
use crate::models::{self, Cache};

/// gemma-4-E4B's `text_config` (values as published; transformers fills the rest).
const E4B: &str = r#"{"architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text",
    "hidden_size": 2560, "num_hidden_layers": 42, "intermediate_size": 10240,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
    "global_head_dim": 512, "vocab_size": 262144, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 131072, "sliding_window": 512,
    "final_logit_softcapping": 30.0, "use_double_wide_mlp": false,
    "num_kv_shared_layers": 18, "hidden_size_per_layer_input": 256,
    "vocab_size_per_layer_input": 262144, "attention_k_eq_v": false,
    "enable_moe_block": false, "tie_word_embeddings": true,
    "hidden_activation": "gelu_pytorch_tanh",
    "rope_parameters": {
        "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                           "rope_type": "proportional"},
        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}}}"#;

/// gemma-4-26B-A4B's `text_config` (values as published; `layer_types` left to the default).
const A4B: &str = r#"{"architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text",
    "hidden_size": 2816, "num_hidden_layers": 30, "intermediate_size": 2112,
    "num_attention_heads": 16, "num_key_value_heads": 8, "num_global_key_value_heads": 2,
    "head_dim": 256, "global_head_dim": 512, "vocab_size": 262144, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 262144, "sliding_window": 1024,
    "final_logit_softcapping": 30.0, "use_double_wide_mlp": false,
    "num_kv_shared_layers": 0, "hidden_size_per_layer_input": 0, "attention_k_eq_v": true,
    "enable_moe_block": true, "num_experts": 128, "top_k_experts": 8,
    "moe_intermediate_size": 704, "tie_word_embeddings": true,
    "use_bidirectional_attention": "vision"}"#;

fn hf(base: &str, edits: &[(&str, &str)]) -> Result<Config> {
    let text = testing::edited(base, edits);
    config(&ConfigSource::Hf(&HfConfig::parse(
        &text,
        "gemma4/config.json",
    )?))
}

#[test]
fn e4b_reads_its_layer_types_head_widths_kv_sharing_and_per_layer_inputs() {
    let c = hf(E4B, &[]).unwrap();
    assert_eq!(c.layers.len(), 42);
    let full: Vec<usize> = (0..42).filter(|&i| !c.layers[i].sliding).collect();
    assert_eq!(full, [5, 11, 17, 23, 29, 35, 41]);
    assert_eq!((c.layers[0].head_dim, c.layers[5].head_dim), (256, 512));
    assert!(c.layers.iter().all(|l| l.n_kv_heads == 2 && l.ffn == 10240));
    // The last 18 read the last earlier block of their type: 22 (sliding), 23 (full).
    assert_eq!(c.layers[23].kv, LayerKv::Own);
    assert_eq!(c.layers[24].kv, LayerKv::SharedWith(22));
    assert_eq!(c.layers[29].kv, LayerKv::SharedWith(23));
    assert_eq!(c.layers[41].kv, LayerKv::SharedWith(23));
    assert_eq!(
        c.per_layer_input,
        Some(PerLayerInput {
            width: 256,
            vocab: 262_144
        })
    );
    assert_eq!((c.sliding_window, c.final_softcap), (512, Some(30.0)));
    let proportional = RopeScaling::Proportional {
        partial: 0.25,
        factor: 1.0,
    };
    assert_eq!(
        (c.rope_full.base, &c.rope_full.scaling),
        (1e6, &proportional)
    );
    assert_eq!(c.rope_sliding, RopeConfig::plain(1e4));
    // Without rope_parameters, Gemma4TextConfig's defaults are the same.
    let start = E4B.find(",\n    \"rope_parameters\"").unwrap();
    let bare = format!("{}}}", &E4B[..start]);
    let d = hf(&bare, &[]).unwrap();
    assert_eq!((d.rope_full, d.rope_sliding), (c.rope_full, c.rope_sliding));
    // E2B's double-wide MLPs: the sharing blocks' MLPs are twice as wide.
    let c = hf(
        E4B,
        &[(
            "\"use_double_wide_mlp\": false",
            "\"use_double_wide_mlp\": true",
        )],
    )
    .unwrap();
    assert_eq!((c.layers[23].ffn, c.layers[24].ffn), (10240, 20480));
}

#[test]
fn a4b_reads_experts_and_keys_as_values_on_full_blocks() {
    let c = hf(A4B, &[]).unwrap();
    assert_eq!(
        c.experts,
        Some(ExpertShape {
            n_experts: 128,
            n_used: 8,
            ffn: 704
        })
    );
    assert_eq!(c.per_layer_input, None);
    let (s, f) = (&c.layers[0], &c.layers[5]);
    assert_eq!((s.kv, s.n_kv_heads, s.head_dim), (LayerKv::Own, 8, 256));
    assert_eq!(
        (f.kv, f.n_kv_heads, f.head_dim),
        (LayerKv::KeysAsValues, 2, 512)
    );
    assert!(!c.layers[29].sliding, "the last block is a full one");
    // Without attention_k_eq_v transformers ignores the global KV heads.
    let c = hf(
        A4B,
        &[("\"attention_k_eq_v\": true", "\"attention_k_eq_v\": false")],
    )
    .unwrap();
    assert_eq!((c.layers[5].kv, c.layers[5].n_kv_heads), (LayerKv::Own, 8));
}

#[test]
fn per_layer_config_as_transformers_saves_it_equals_the_global_keys() {
    let global = hf(A4B, &[]).unwrap();
    let full: Vec<String> = (0..30)
        .filter(|i| (i + 1) % 6 == 0)
        .map(|i| format!("\"{i}\": {{\"head_dim\": 512, \"num_key_value_heads\": 2}}"))
        .collect();
    let per_layer = format!(
        "\"per_layer_config\": {{{}}}, \"global_head_dim\": 7,",
        full.join(", ")
    );
    let saved = hf(A4B, &[("\"global_head_dim\": 512,", &per_layer)]).unwrap();
    assert_eq!(saved, global);
    let e = hf(
        A4B,
        &[(
            "\"global_head_dim\": 512,",
            "\"per_layer_config\": {\"5\": {\"sliding_window\": 8}},",
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("per_layer_config.5.sliding_window = 8"), "{e}");
}

#[test]
fn unsupported_values_are_refused_naming_what_runs() {
    for (edit, want) in [
        (
            (
                "\"hidden_activation\": \"gelu_pytorch_tanh\"",
                "\"hidden_activation\": \"silu\"",
            ),
            "hidden_activation = \"silu\" is not supported; supported: gelu_pytorch_tanh",
        ),
        (
            ("\"attention_k_eq_v\": false", "\"attention_bias\": true"),
            "attention_bias = true",
        ),
        (
            (
                "\"attention_k_eq_v\": false",
                "\"use_bidirectional_attention\": \"all\"",
            ),
            "use_bidirectional_attention = \"all\"",
        ),
        (
            (
                "\"num_kv_shared_layers\": 18",
                "\"num_kv_shared_layers\": 42",
            ),
            "num_kv_shared_layers = 42",
        ),
        (
            (
                "\"rope_type\": \"default\"",
                "\"rope_type\": \"frobnicate\"",
            ),
            "rope_type = 'frobnicate'",
        ),
        (
            (
                "\"rope_type\": \"proportional\"",
                "\"rope_type\": \"default\"",
            ),
            "partial_rotary_factor = 0.25",
        ),
    ] {
        let e = hf(E4B, &[edit]).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    // Sharing that leaves the full blocks no earlier full block to read from.
    let e = hf(
        E4B,
        &[(
            "\"num_kv_shared_layers\": 18",
            "\"num_kv_shared_layers\": 37",
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("num_kv_shared_layers = 37"), "{e}");
}

/// The registry's tiny model (sliding, full with keys as values, full sharing block 1's KV)
/// and one with experts in every block.
fn tiny(moe: bool, dtype: GgmlDType) -> (tempfile::TempDir, Box<dyn CausalLm>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma4.gguf");
    write(moe, &path, dtype);
    let gguf = Gguf::open(&path).unwrap();
    let model = models::load_gguf(&gguf, &Device::Cpu).unwrap();
    (dir, model)
}

const MOE_METADATA: &[(&str, u32)] = &[
    ("attention.key_length", 32),
    ("attention.value_length", 32),
    ("attention.key_length_swa", 16),
    ("attention.value_length_swa", 16),
    ("attention.sliding_window", 3),
    ("expert_count", 4),
    ("expert_used_count", 2),
    ("expert_feed_forward_length", 32),
    ("synthetic.swa_period", 2),
    ("synthetic.global_kv_heads", 1),
    ("synthetic.global_k_eq_v", 1),
];

fn write(moe: bool, path: &std::path::Path, dtype: GgmlDType) {
    let spec = FamilySpec {
        tiny: TinyConfig {
            metadata: if moe {
                MOE_METADATA
            } else {
                SPEC.tiny.metadata
            },
            ..SPEC.tiny
        },
        ..SPEC
    };
    testing::write_tiny_gguf(&spec, path, 11, dtype, None).unwrap();
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
fn sharing_blocks_keep_nothing_and_the_moe_model_says_so() {
    let (_dir, m) = tiny(false, GgmlDType::F32);
    let layout = m.cache_layout();
    assert_eq!(
        layout,
        [LayerKind::Window(3), LayerKind::Full, LayerKind::Shared(1)]
    );
    assert_eq!(m.info().kind, Kind::Dense);
    let (_dir, m) = tiny(true, GgmlDType::F32);
    assert_eq!(
        m.cache_layout(),
        [LayerKind::Window(3), LayerKind::Full, LayerKind::Full]
    );
    assert_eq!(m.info().kind, Kind::Moe);
}

#[test]
fn incremental_decode_and_chunks_equal_one_prefill() {
    for (moe, dtype) in [
        (false, GgmlDType::F32),
        (false, GgmlDType::Q8_0),
        (true, GgmlDType::F32),
    ] {
        let (_dir, m) = tiny(moe, dtype);
        let what = |s: &str| format!("{s} (experts: {moe}, {dtype:?})");
        let full = feed(m.as_ref(), &[&TOKENS]);
        let singles: Vec<&[u32]> = TOKENS.chunks(1).collect();
        let steps = feed(m.as_ref(), &singles);
        assert_close(&what("token by token"), &full[0], &steps[TOKENS.len() - 1]);
        for n in [1, 2, 5] {
            let prefix = feed(m.as_ref(), &[&TOKENS[..n]]);
            assert_close(&what(&format!("prefix {n}")), &prefix[0], &steps[n - 1]);
        }
        let mixed = feed(m.as_ref(), &[&TOKENS[..1], &TOKENS[1..2], &TOKENS[2..]]);
        assert_close(&what("singles then a chunk"), &full[0], &mixed[2]);
        let chunks = feed(m.as_ref(), &[&TOKENS[..4], &TOKENS[4..5], &TOKENS[5..]]);
        assert_close(&what("chunk, single, chunk"), &full[0], &chunks[2]);
    }
}

#[test]
fn rewinding_within_the_window_equals_a_cold_run() {
    let (_dir, m) = tiny(false, GgmlDType::F32);
    let cold = feed(m.as_ref(), &[&TOKENS]);
    let mut cache = models::new_cache(m.as_ref(), 64).unwrap();
    step(m.as_ref(), &mut cache, &TOKENS[..6]);
    step(m.as_ref(), &mut cache, &[9, 10, 11]);
    assert_eq!(cache.rewind(6), 6);
    let warm = step(m.as_ref(), &mut cache, &TOKENS[6..]);
    assert_close("after a rewind", &cold[0], &warm);
}

#[test]
fn chat_turn_two_reuses_the_cache_and_replies_as_a_cold_run() {
    for moe in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gemma4.gguf");
        write(moe, &path, GgmlDType::Q8_0);
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
        assert!(
            second.reused_tokens > 0,
            "turn 2 reused nothing (experts: {moe})"
        );
        engine.reset();
        let (cold, third) = reply(&mut engine, &conversation);
        assert_eq!(third.reused_tokens, 0);
        assert_eq!(warm, cold, "experts: {moe}");
    }
}
