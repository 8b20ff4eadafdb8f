//! Synthetic models of `bench --synthetic`: the preset table and llama.cpp's quantization mixes
//! reproduce the real test models tensor for tensor, every preset loads through its family's
//! own code, and a model written with `--write-gguf` is the one benchmarked in memory.

use std::collections::BTreeSet;

use candle_core::Device;
use mlcli::bench::presets::{self, Choice};
use mlcli::bench::synthetic;
use mlcli::engine::{Engine, LoadOptions};
use mlcli::formats::ggml_types;
use mlcli::formats::gguf_header;
use mlcli::models::synthetic::plan;
use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};
use mlcli::models::FAMILIES;

/// (name, GGUF dims, type name) of every tensor.
type Directory = BTreeSet<(String, Vec<u64>, String)>;

fn planned(choice: &Choice) -> Directory {
    let p = &choice.preset;
    let spec = FAMILIES.iter().find(|f| f.id == p.family).unwrap();
    plan(spec, &p.dims, p.tied_embeddings, p.rope_freqs, p.extra)
        .unwrap()
        .iter()
        .map(|t| {
            let name = choice.mix.type_for(t, p.dims.layers).name();
            let dims = t.shape.iter().rev().map(|&d| d as u64).collect();
            (t.name.clone(), dims, name.to_string())
        })
        .collect()
}

fn in_file(file: &str) -> Directory {
    let h = gguf_header::read(&real_model(file)).unwrap();
    h.tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dims.clone(),
                ggml_types::name_of(t.type_id),
            )
        })
        .collect()
}

#[test]
fn presets_reproduce_the_real_test_models_tensor_for_tensor() {
    for (preset, file) in [
        ("smollm2-135m:q4_1", SMOLLM2),
        ("gemma3-270m:q4_k_m", GEMMA3),
    ] {
        let want = in_file(file);
        let have = planned(&presets::parse(preset).unwrap());
        let missing: Vec<_> = want.difference(&have).take(5).collect();
        let extra: Vec<_> = have.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{preset} vs {file}: missing {missing:?}, extra {extra:?}"
        );
    }
}

fn engine(choice: &Choice, seed: u64) -> Engine {
    let tok = synthetic::made_up_tokenizer(choice.preset.dims.vocab).unwrap();
    let parts = synthetic::build(choice, seed, tok, &Device::Cpu).unwrap();
    let gguf = parts.into_gguf(choice).unwrap();
    Engine::from_gguf(&gguf, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", choice.label()))
}

#[test]
fn every_preset_cut_to_one_layer_loads_through_its_family_with_finite_logits() {
    for p in presets::PRESETS {
        let mut choice = presets::parse(&format!("{}:q4_0", p.name)).unwrap();
        choice.preset.dims.layers = 1;
        let mut e = engine(&choice, 3);
        assert_eq!(e.info().family, p.family, "{}", p.name);
        assert_eq!(e.info().vocab_size, p.dims.vocab, "{}", p.name);
        let logits = e.feed(&[1, 300, 7, 42]).unwrap();
        assert_eq!(logits.len(), p.dims.vocab, "{}", p.name);
        assert!(logits.iter().all(|x| x.is_finite()), "{}", p.name);
    }
}

#[test]
fn a_written_synthetic_model_is_the_one_benchmarked_in_memory() {
    let choice = presets::parse("llama-tiny:q4_k").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let tok = synthetic::made_up_tokenizer(choice.preset.dims.vocab).unwrap();
    synthetic::build(&choice, 9, tok, &Device::Cpu)
        .unwrap()
        .write(&path)
        .unwrap();
    let mut from_file = Engine::load(&path, &LoadOptions::default()).unwrap();
    let mut in_memory = engine(&choice, 9);
    let tokens = [1, 17, 300, 5, 511];
    let logits = from_file.feed(&tokens).unwrap();
    assert_eq!(logits, in_memory.feed(&tokens).unwrap());
    assert_eq!(from_file.name(), "llama-tiny:q4_k (synthetic)");
    let mut other_seed = engine(&choice, 10);
    assert_ne!(other_seed.feed(&tokens).unwrap(), logits);
}

#[test]
fn a_written_mxfp4_model_is_the_one_benchmarked_in_memory() {
    // gpt-oss-20b's layout and types (MXFP4 experts, Q8_0 elsewhere), narrowed.
    let mut choice = presets::parse("gpt-oss-20b:mxfp4").unwrap();
    let d = &mut choice.preset.dims;
    (d.layers, d.hidden, d.heads, d.kv_heads, d.vocab) = (2, 256, 4, 2, 512);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt-oss.gguf");
    let tok = synthetic::made_up_tokenizer(choice.preset.dims.vocab).unwrap();
    synthetic::build(&choice, 4, tok, &Device::Cpu)
        .unwrap()
        .write(&path)
        .unwrap();
    let h = gguf_header::read(&path).unwrap();
    let ty = |name: &str| {
        let t = h.tensors.iter().find(|t| t.name == name).unwrap();
        ggml_types::name_of(t.type_id)
    };
    assert_eq!(ty("blk.1.ffn_down_exps.weight"), "MXFP4");
    assert_eq!(ty("blk.1.attn_k.weight"), "Q8_0");
    let mut from_file = Engine::load(&path, &LoadOptions::default()).unwrap();
    let mut in_memory = engine(&choice, 4);
    let tokens = [1, 17, 300, 5, 511];
    let logits = from_file.feed(&tokens).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    assert_eq!(logits, in_memory.feed(&tokens).unwrap());
}

#[test]
fn a_written_latent_attention_model_is_the_one_benchmarked_in_memory() {
    // DeepSeek-V2-Lite's layout and Q4_K_M types (MLA widths as published), narrowed: 2
    // blocks (dense, then experts), 8 experts of 256.
    let mut choice = presets::parse("deepseek-v2-lite:q4_k_m").unwrap();
    let d = &mut choice.preset.dims;
    (d.layers, d.hidden, d.heads, d.vocab, d.ffn) = (2, 256, 4, 512, 512);
    let extra: Vec<(&'static str, u32)> = choice
        .preset
        .extra
        .iter()
        .map(|&(k, v)| match k {
            "expert_count" => (k, 8),
            "expert_feed_forward_length" => (k, 256),
            _ => (k, v),
        })
        .collect();
    choice.preset.extra = Box::leak(extra.into_boxed_slice());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deepseek.gguf");
    let tok = synthetic::made_up_tokenizer(choice.preset.dims.vocab).unwrap();
    synthetic::build(&choice, 4, tok, &Device::Cpu)
        .unwrap()
        .write(&path)
        .unwrap();
    let h = gguf_header::read(&path).unwrap();
    let ty = |name: &str| {
        let t = h.tensors.iter().find(|t| t.name == name).unwrap();
        ggml_types::name_of(t.type_id)
    };
    // Rows of 128 (W_UK's) are no whole Q4_K block: llama-quantize's fallback, Q5_0.
    assert_eq!(ty("blk.0.attn_k_b.weight"), "Q5_0");
    assert_eq!(ty("blk.0.attn_v_b.weight"), "Q4_K");
    assert_eq!(ty("blk.1.ffn_gate_exps.weight"), "Q4_K");
    let mut from_file = Engine::load(&path, &LoadOptions::default()).unwrap();
    let mut in_memory = engine(&choice, 4);
    let tokens = [1, 17, 300, 5, 511];
    let logits = from_file.feed(&tokens).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    assert_eq!(logits, in_memory.feed(&tokens).unwrap());
}
