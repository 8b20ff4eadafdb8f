//! SmolLM3 (HF `SmolLM3ForCausalLM`; GGUF `smollm3`).
//!
//! The llama block where some layers have no RoPE (NoPE: positions enter only through the
//! causal mask): `no_rope_layers` lists 1 (RoPE) or 0 (NoPE) per layer, else every
//! `no_rope_layer_interval`-th layer (4) is NoPE. An optional sliding window covers the layers
//! `layer_types` marks `sliding_attention` (by default the NoPE layers, with
//! `use_sliding_window`). `attention_bias` and `mlp_bias` as in Llama; tied output by default.
//!
//! GGUF: llama.cpp's converter writes SmolLM3 as llama (Q/K rows permuted for interleaved
//! RoPE) under its own architecture, with no key for the NoPE layers: llama.cpp fixes the
//! interval at 4 and runs no sliding window, and so does this file.
//! References: HF `modular_smollm3.py`, llama.cpp `src/models/smollm3.cpp`. Reuses
//! [`super::llama`].

use super::llama::{Config, HfClass, Model, Sliding, BLOCK_TENSORS, LLAMA};
use super::values;
use super::{ConfigSource, FamilySpec, Kind, Quirks, TinyConfig};
use crate::formats::hf_config::HfConfig;
use crate::{Error, Result};

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "smollm3",
    kind: Kind::Dense,
    hf_architectures: &["SmolLM3ForCausalLM"],
    gguf_architectures: &["smollm3"],
    gguf_variants: &[],
    gguf_names: super::llama::BIAS_NAMES,
    quirks: Quirks {
        gguf_qk_permuted: true,
        ..Quirks::NONE
    },
    default_template: "chatml",
    hf_model_type: "smollm3",
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?, &SPEC)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: BLOCK_TENSORS,
        metadata: &[],
        fused_gate_up: false,
    },
};

/// `SmolLM3Config`: `attention_bias`, `mlp_bias`, 4 KV heads, RoPE base 2e6 and tied output
/// unless the file says otherwise; the window is read by [`sliding_layers`].
pub const SMOLLM3: HfClass = HfClass {
    sliding: Sliding::None,
    kv_heads: Some(4),
    rope_theta: 2_000_000.0,
    tied: true,
    ..LLAMA
};

/// The NoPE period llama.cpp fixes for `smollm3` files (and `SmolLM3Config`'s default).
const GGUF_NOPE_INTERVAL: usize = 4;

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => {
            let base = Config::from_gguf(g, "smollm3")?;
            Ok(Config {
                nope_layers: every_nth(base.n_layers, GGUF_NOPE_INTERVAL),
                // llama.cpp's SmolLM3 graph has no window, whatever the file says.
                sliding_window: None,
                ..base
            })
        }
        ConfigSource::Hf(h) => from_hf(h),
    }
}

/// Layers `i` with `(i + 1) % n == 0`.
fn every_nth(n_layers: usize, n: usize) -> Vec<usize> {
    (0..n_layers).filter(|i| (i + 1) % n == 0).collect()
}

fn from_hf(h: &HfConfig) -> Result<Config> {
    let base = Config::from_hf(h, &SMOLLM3)?;
    let n = base.n_layers;
    let nope_layers = nope_layers(h, n)?;
    let (sliding_window, full_layers) = sliding_layers(h, n, &nope_layers)?;
    Ok(Config {
        nope_layers,
        sliding_window,
        full_layers,
        ..base
    })
}

/// `no_rope_layers` (1: RoPE, 0: NoPE, at least one entry per layer), else every
/// `no_rope_layer_interval`-th layer.
fn nope_layers(h: &HfConfig, n_layers: usize) -> Result<Vec<usize>> {
    let Some(list) = h.get("no_rope_layers").filter(|v| !v.is_null()) else {
        let interval = h.opt_usize("no_rope_layer_interval")?.unwrap_or(4);
        if interval == 0 {
            return Err(values::refused(
                h.origin(),
                "no_rope_layer_interval",
                0,
                "a period of at least 1",
            ));
        }
        return Ok(every_nth(n_layers, interval));
    };
    let flags = list.as_array().filter(|a| a.len() >= n_layers);
    let Some(flags) = flags else {
        return Err(Error::MalformedConfig {
            file: h.origin().to_string(),
            key: "no_rope_layers: ".into(),
            why: format!("{list} is not a list of at least {n_layers} (num_hidden_layers) flags"),
        });
    };
    let mut nope = Vec::new();
    for (i, f) in flags.iter().take(n_layers).enumerate() {
        match f.as_u64() {
            Some(0) => nope.push(i),
            Some(1) => {}
            _ => {
                return Err(values::refused(
                    h.origin(),
                    &format!("no_rope_layers[{i}]"),
                    f,
                    "0 (NoPE) or 1 (RoPE)",
                ))
            }
        }
    }
    Ok(nope)
}

/// The window and the layers it does not cover, as transformers' masks apply them: on the
/// layers `layer_types` marks `sliding_attention`, else (with `use_sliding_window` and a
/// `sliding_window`) on the NoPE layers.
fn sliding_layers(
    h: &HfConfig,
    n_layers: usize,
    nope: &[usize],
) -> Result<(Option<usize>, Vec<usize>)> {
    let window = h.opt_usize("sliding_window")?;
    let sliding = match values::sliding_layers(h, n_layers)? {
        Some(s) => s,
        None => {
            let on = h.opt_bool("use_sliding_window")?.unwrap_or(false) && window.is_some();
            (0..n_layers).map(|i| on && nope.contains(&i)).collect()
        }
    };
    if !sliding.contains(&true) {
        return Ok((None, Vec::new()));
    }
    match window {
        None | Some(0) => Err(values::refused(
            h.origin(),
            "sliding_window",
            window.map_or("null".to_string(), |w| w.to_string()),
            "a window of at least 1 when layer_types has sliding_attention layers",
        )),
        Some(w) => Ok((Some(w), (0..n_layers).filter(|&i| !sliding[i]).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM3-3B's `config.json` keys that matter here (values as published).
    const CONFIG: &str = r#"{"architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3",
        "attention_bias": false, "hidden_act": "silu", "hidden_size": 2048,
        "intermediate_size": 11008, "max_position_embeddings": 65536,
        "num_attention_heads": 16, "num_hidden_layers": 8, "num_key_value_heads": 4,
        "no_rope_layer_interval": 4, "rms_norm_eps": 1e-06, "rope_theta": 5000000.0,
        "sliding_window": null, "use_sliding_window": false, "tie_word_embeddings": true,
        "vocab_size": 128256}"#;

    fn hf(edits: &[(&str, &str)]) -> Result<Config> {
        let text = crate::models::testing::edited(CONFIG, edits);
        config(&ConfigSource::Hf(&HfConfig::parse(
            &text,
            "smollm3/config.json",
        )?))
    }

    #[test]
    fn every_fourth_layer_is_nope_unless_listed() {
        let c = hf(&[]).unwrap();
        assert_eq!(c.nope_layers, vec![3, 7]);
        assert_eq!((c.sliding_window, c.rope.base), (None, 5_000_000.0));
        let c = hf(&[(
            "\"no_rope_layer_interval\": 4",
            "\"no_rope_layer_interval\": 2",
        )]);
        assert_eq!(c.unwrap().nope_layers, vec![1, 3, 5, 7]);
        let list = "\"no_rope_layers\": [1, 0, 1, 1, 1, 1, 1, 0, 1]";
        let c = hf(&[("\"no_rope_layer_interval\": 4", list)]).unwrap();
        assert_eq!(c.nope_layers, vec![1, 7]);
    }

    #[test]
    fn the_window_covers_the_nope_layers_when_switched_on() {
        let c = hf(&[
            ("\"sliding_window\": null", "\"sliding_window\": 16"),
            (
                "\"use_sliding_window\": false",
                "\"use_sliding_window\": true",
            ),
        ])
        .unwrap();
        assert_eq!(c.sliding_window, Some(16));
        assert_eq!(c.full_layers, vec![0, 1, 2, 4, 5, 6]);
        // A window without use_sliding_window stays off.
        let c = hf(&[("\"sliding_window\": null", "\"sliding_window\": 16")]).unwrap();
        assert_eq!(c.sliding_window, None);
    }

    /// The tiny model's safetensors with a NoPE middle layer under a window of 3: token-by-token
    /// decode equals one prefill (the registry's tiny SmolLM3 has 3 layers, so its GGUF has no
    /// NoPE layer: llama.cpp's period is 4).
    #[test]
    fn nope_and_window_layers_decode_as_they_prefill() {
        use crate::formats::weights::Precision;
        use candle_core::{DType, Device};
        let dir = tempfile::tempdir().unwrap();
        let hf_dir = dir.path().join("hf");
        crate::models::testing::write_tiny_hf(&SPEC, &hf_dir, 9).unwrap();
        let path = hf_dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        c["no_rope_layers"] = serde_json::json!([1, 0, 1]);
        c["use_sliding_window"] = serde_json::json!(true);
        c["sliding_window"] = serde_json::json!(3);
        std::fs::write(&path, c.to_string()).unwrap();
        let h = HfConfig::from_file(&path).unwrap();
        let files = [hf_dir.join("model.safetensors")];
        let precision = Precision {
            dtype: DType::F32,
            quant: None,
        };
        let m = crate::models::load_safetensors(&h, &files, precision, &Device::Cpu).unwrap();
        assert_eq!(m.cache_layout()[1], crate::models::LayerKind::Window(3));
        let tokens = [5u32, 17, 99, 3, 64, 127, 0, 42, 42, 8];
        let run = |chunks: &[&[u32]]| -> Vec<f32> {
            let mut cache = crate::models::new_cache(m.as_ref(), 32).unwrap();
            let mut last = Vec::new();
            for c in chunks {
                last = crate::models::step(m.as_ref(), c, &Device::Cpu, &mut cache, None)
                    .unwrap()
                    .to_vec1()
                    .unwrap();
            }
            last
        };
        let full = run(&[&tokens]);
        let singles: Vec<&[u32]> = tokens.chunks(1).collect();
        let steps = run(&singles);
        let scale = full.iter().fold(1f32, |a, x| a.max(x.abs()));
        let max = full
            .iter()
            .zip(&steps)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(max <= 1e-4 * scale, "max |Δ| {max} (scale {scale})");
    }

    #[test]
    fn bad_nope_lists_are_refused_naming_the_key() {
        let short = "\"no_rope_layers\": [1, 0]";
        let e = hf(&[("\"no_rope_layer_interval\": 4", short)]).unwrap_err();
        assert!(e.to_string().contains("no_rope_layers"), "{e}");
        let two = "\"no_rope_layers\": [1, 2, 1, 1, 1, 1, 1, 1]";
        let e = hf(&[("\"no_rope_layer_interval\": 4", two)]).unwrap_err();
        assert!(e.to_string().contains("no_rope_layers[1] = 2"), "{e}");
    }
}
