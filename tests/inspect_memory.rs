//! `inspect`'s memory estimate against the cache the engine really reserves: tiny models of
//! the families whose layers are not all full KV (sliding windows, KV shared across layers,
//! per-layer KV widths, recurrent state), their context filled. (LFM2's hybrid, which the
//! shared tiny-model writer cannot make, is checked in its own tests.)

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use mlcli::engine::cache::LayerKind;
use mlcli::engine::{Engine, LoadOptions};
use mlcli::formats::gguf::Gguf;
use mlcli::inspect::machine::Machine;
use mlcli::inspect::{summary, Model};
use mlcli::models::{self, testing};

const CTX: usize = 2048;

/// The bytes per cached value the engine keeps for the model at `path`: f16 keys and values
/// (as llama.cpp keeps them by default), f32 where its layers cache an MLA latent (the
/// absorbed attention reads it as f32).
fn cache_value_bytes(path: &Path) -> u64 {
    let gguf = Gguf::open(path).expect("gguf");
    let model = models::load_gguf(&gguf, &Device::Cpu).expect("loads");
    let latent = model
        .cache_layout()
        .iter()
        .any(|k| matches!(k, LayerKind::Latent { .. }));
    if latent {
        4
    } else {
        2
    }
}

/// (estimated cache bytes at the engine's storage type, bytes the engine reserved with its
/// context full, the estimate if every layer held full KV).
fn estimate_and_reserved(family: &str) -> (u64, u64, u64) {
    let spec = models::family(family).expect("family");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    let arch = spec
        .gguf_architecture()
        .expect("GGUF architecture")
        .to_string();
    testing::write_tiny_gguf_with(spec, &path, 3, GgmlDType::F32, None, |meta| {
        testing::set_meta(
            meta,
            &format!("{arch}.context_length"),
            Value::U32(CTX as u32),
        )
    })
    .expect("tiny model");
    let model = Model::open(&path).expect("opens");
    let s = summary::summarize(&model, Some(CTX as u64), Machine::default());
    assert!(s.support.runnable, "{family}: {:?}", s.support.reasons);
    let bytes = cache_value_bytes(&path);
    let estimate = match bytes {
        2 => s.memory.kv_cache_f16,
        _ => s.memory.kv_cache_f32,
    }
    .expect("estimate");
    let d = &s.dims;
    let all_full = d.layers.unwrap()
        * d.kv_heads.unwrap()
        * (d.head_dim.unwrap() + d.value_head_dim.unwrap_or(d.head_dim.unwrap()))
        * CTX as u64
        * bytes;
    let mut engine = Engine::load(
        &path,
        &LoadOptions {
            ctx_size: Some(CTX),
            ..LoadOptions::default()
        },
    )
    .expect("loads");
    let tokens: Vec<u32> = (0..CTX as u32).map(|i| 4 + i % 90).collect();
    engine.feed(&tokens).expect("fills the context");
    (estimate, engine.cache_bytes() as u64, all_full)
}

/// The estimate is what the engine reserves (windows: at most what a window entry grows to,
/// so within the last doubling of its buffer), and less than full KV in every layer.
fn check(family: &str) {
    let (estimate, reserved, all_full) = estimate_and_reserved(family);
    assert!(
        reserved <= estimate && estimate - reserved <= estimate / 10,
        "{family}: estimated {estimate} B, the engine reserved {reserved} B"
    );
    assert!(
        estimate < all_full,
        "{family}: {estimate} B is no less than full KV everywhere ({all_full} B)"
    );
}

#[test]
fn gpt_oss_sliding_layers_are_capped_at_their_window() {
    check("gpt_oss");
}

#[test]
fn gemma4_shared_kv_and_per_layer_widths_are_counted() {
    check("gemma4");
}

#[test]
fn qwen3_5_recurrent_state_is_fixed() {
    check("qwen3_5");
}

#[test]
fn deepseek_latent_cache_counts_one_latent_per_position() {
    check("deepseek_v3");
}
