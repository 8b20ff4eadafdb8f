//! Every registered family loads the same weights from both formats: a tiny random-weight
//! GGUF and its Hugging Face export (safetensors, config.json, tokenizer.json) give the same
//! logits (f32: within 1e-5 of the logit scale), and in-situ Q8_0 quantization of the
//! safetensors weights stays within NMSE 1e-3 of them.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use mlcli::engine::{Engine, LoadOptions};
use mlcli::formats::gguf::Gguf;
use mlcli::formats::hf_config::HfConfig;
use mlcli::formats::weights::Precision;
use mlcli::models::testing;
use mlcli::models::{self, CausalLm, FAMILIES};

const TOKENS: [u32; 9] = [5, 17, 99, 3, 64, 127, 0, 42, 8];

fn logits(model: &dyn CausalLm) -> Vec<f32> {
    let mut cache = models::new_cache(model, 64).unwrap();
    models::step(model, &TOKENS, &Device::Cpu, &mut cache, None)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn nmse(a: &[f32], b: &[f32]) -> f32 {
    let err: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let energy: f32 = a.iter().map(|x| x * x).sum();
    err / energy.max(1e-12)
}

#[test]
fn every_family_gives_the_same_logits_from_gguf_and_safetensors() {
    for spec in FAMILIES {
        let tmp = tempfile::tempdir().unwrap();
        let gguf_path = tmp.path().join("tiny.gguf");
        let hf_dir = tmp.path().join("hf");
        testing::write_tiny_gguf(spec, &gguf_path, 7, GgmlDType::F32, None).unwrap();
        testing::write_tiny_hf(spec, &hf_dir, 7).unwrap();

        let gguf = Gguf::open(&gguf_path).unwrap();
        let from_gguf = models::load_gguf(&gguf, &Device::Cpu).unwrap();
        let config = HfConfig::from_file(&hf_dir.join("config.json")).unwrap();
        let files = vec![hf_dir.join("model.safetensors")];
        let load = |quant| {
            models::load_safetensors(
                &config,
                &files,
                Precision {
                    dtype: DType::F32,
                    quant,
                },
                &Device::Cpu,
            )
            .unwrap_or_else(|e| panic!("{}: safetensors do not load: {e}", spec.id))
        };
        let (a, b) = (logits(from_gguf.as_ref()), logits(load(None).as_ref()));
        let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
        let max = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            max <= 1e-5 * scale,
            "{}: max |Δ| {max} (scale {scale})",
            spec.id
        );
        let q = logits(load(Some(GgmlDType::Q8_0.into())).as_ref());
        let e = nmse(&a, &q);
        assert!(e <= 1e-3, "{}: Q8_0 NMSE {e}", spec.id);
    }
}

/// The logits of a GGUF and of its export (f32), with the GGUF's metadata edited by `edit`.
fn gguf_and_export_logits(
    spec: &models::FamilySpec,
    edit: impl FnOnce(&mut testing::Meta),
) -> (Vec<f32>, Vec<f32>) {
    let tmp = tempfile::tempdir().unwrap();
    let gguf_path = tmp.path().join("tiny.gguf");
    let hf_dir = tmp.path().join("hf");
    testing::write_tiny_gguf_with(spec, &gguf_path, 11, GgmlDType::F32, None, edit).unwrap();
    let gguf = Gguf::open(&gguf_path).unwrap();
    let from_gguf = models::load_gguf(&gguf, &Device::Cpu).unwrap();
    mlcli::convert::gguf_to_hf(&gguf, &hf_dir, Default::default())
        .unwrap_or_else(|e| panic!("{}: export fails: {e}", spec.id));
    let config = HfConfig::from_file(&hf_dir.join("config.json")).unwrap();
    let files = vec![hf_dir.join("model.safetensors")];
    let from_hf = models::load_safetensors(&config, &files, Precision::default(), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: the export does not load: {e}", spec.id));
    (logits(from_gguf.as_ref()), logits(from_hf.as_ref()))
}

fn assert_same(family: &str, (a, b): (Vec<f32>, Vec<f32>)) {
    let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
    let max = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        max <= 1e-5 * scale,
        "{family}: max |Δ| {max} (scale {scale})"
    );
}

#[test]
fn qwen3_5_with_fewer_key_heads_than_value_heads_exports_its_value_heads_grouped() {
    // 2 key heads for 4 value heads: llama.cpp's converter tiles the value heads, Hugging
    // Face groups them by key head.
    let qwen3_5 = models::family("qwen3_5").unwrap();
    let metadata: Vec<(&'static str, u32)> = qwen3_5
        .tiny
        .metadata
        .iter()
        .map(|&(k, v)| (k, if k == "ssm.group_count" { 2 } else { v }))
        .collect();
    let spec = models::FamilySpec {
        tiny: models::TinyConfig {
            metadata: metadata.leak(),
            ..qwen3_5.tiny
        },
        ..*qwen3_5
    };
    let (a, b) = gguf_and_export_logits(&spec, |_| {});
    assert_same("qwen3_5", (a, b));
}

/// DeepSeek's tiny spec with the router's scores as `gating` (llama.cpp's
/// `expert_gating_func`; the tiny writer adds V3's selection bias only for sigmoid).
fn deepseek(gating: u32) -> models::FamilySpec {
    let base = models::family("deepseek_v3").unwrap();
    let metadata: Vec<(&'static str, u32)> = base
        .tiny
        .metadata
        .iter()
        .map(|&(k, v)| (k, if k == "expert_gating_func" { gating } else { v }))
        .collect();
    models::FamilySpec {
        tiny: models::TinyConfig {
            metadata: metadata.leak(),
            ..base.tiny
        },
        ..*base
    }
}

#[test]
fn a_softmax_deepseek2_gguf_exports_as_deepseek_v2() {
    // llama.cpp writes DeepSeek-V2 as `deepseek2` with softmax scores (1): the export is
    // transformers' V2 class, its two groups as group_limited_greedy, and computes the same.
    let spec = deepseek(1);
    assert_same("deepseek_v2", gguf_and_export_logits(&spec, |_| {}));
    let tmp = tempfile::tempdir().unwrap();
    let gguf_path = tmp.path().join("v2.gguf");
    testing::write_tiny_gguf_with(&spec, &gguf_path, 11, GgmlDType::F32, None, |_| {}).unwrap();
    mlcli::convert::gguf_to_hf(
        &Gguf::open(&gguf_path).unwrap(),
        &tmp.path().join("hf"),
        Default::default(),
    )
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("hf/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "DeepseekV2ForCausalLM");
    assert_eq!(
        (&config["scoring_func"], &config["topk_method"]),
        (
            &serde_json::json!("softmax"),
            &serde_json::json!("group_limited_greedy")
        )
    );
    // A softmax router with normalised weights is no transformers class: refused by name.
    let path = tmp.path().join("normed.gguf");
    testing::write_tiny_gguf_with(&spec, &path, 11, GgmlDType::F32, None, |meta| {
        testing::set_meta(
            meta,
            "deepseek2.expert_weights_norm",
            candle_core::quantized::gguf_file::Value::Bool(true),
        )
    })
    .unwrap();
    let gguf = Gguf::open(&path).unwrap();
    let err = mlcli::convert::gguf_to_hf(&gguf, &tmp.path().join("n"), Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expert_weights_norm"), "{err}");
}

#[test]
fn exported_tiny_checkpoints_load_with_their_tokenizer_through_the_engine() {
    for spec in FAMILIES {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hf");
        testing::write_tiny_hf(spec, &dir, 3).unwrap();
        let mut engine = Engine::load(&dir, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", spec.id));
        assert_eq!(engine.info().family, spec.id);
        let ids = engine.raw_tokens("Hi there!", false).unwrap();
        assert_eq!(ids[0], 1, "{}: BOS first: {ids:?}", spec.id);
        // SentencePiece's space prefix stays in the decoded text, as in llama.cpp.
        assert_eq!(engine.tokenizer().decode(&ids), " Hi there!");
        let out = engine.feed(&ids).unwrap();
        assert_eq!(out.len(), testing::VOCAB);
    }
}

/// Rewrites `dir/config.json` through `edit`.
fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
}

fn safetensors_logits(dir: &std::path::Path) -> Vec<f32> {
    let config = HfConfig::from_file(&dir.join("config.json")).unwrap();
    let model = models::load_safetensors(
        &config,
        &[dir.join("model.safetensors")],
        Precision::default(),
        &Device::Cpu,
    )
    .unwrap();
    logits(model.as_ref())
}

/// Granite with every multiplier neutral is llama; with llama3 RoPE scaling in its
/// `config.json` it must scale its RoPE exactly as llama does (the shared RoPE builder).
#[test]
fn granite_with_llama3_rope_scaling_gives_the_llama_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = tmp.path().join("llama");
    testing::write_tiny_hf(models::family("llama").unwrap(), &llama, 11).unwrap();
    let head_dim = {
        let c = HfConfig::from_file(&llama.join("config.json")).unwrap();
        c.usize("hidden_size").unwrap() / c.usize("num_attention_heads").unwrap()
    };
    let granite = tmp.path().join("granite");
    std::fs::create_dir(&granite).unwrap();
    for f in std::fs::read_dir(&llama).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, granite.join(f.file_name().unwrap())).unwrap();
    }
    edit_config(&granite, |c| {
        c["architectures"] = serde_json::json!(["GraniteForCausalLM"]);
        c["model_type"] = "granite".into();
        c["embedding_multiplier"] = 1.0.into();
        c["residual_multiplier"] = 1.0.into();
        c["logits_scaling"] = 1.0.into();
        c["attention_multiplier"] = (1.0 / (head_dim as f64).sqrt()).into();
    });
    let unscaled = safetensors_logits(&granite);
    let scaling = serde_json::json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 4
    });
    for dir in [&llama, &granite] {
        edit_config(dir, |c| c["rope_scaling"] = scaling.clone());
    }
    let (a, b) = (safetensors_logits(&llama), safetensors_logits(&granite));
    let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
    let max = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(max <= 1e-5 * scale, "granite vs llama: max |Δ| {max}");
    let e = nmse(&unscaled, &b);
    assert!(
        e > 1e-4,
        "llama3 scaling changed nothing (NMSE {e}): the test cannot fail"
    );
}
