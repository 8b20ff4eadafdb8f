//! Checks on configuration values that every family makes the same way: numbers that must be
//! positive and finite (norm epsilons, RoPE bases, scales) read from GGUF metadata, the one
//! wording of a refused value, and tables of keys whose non-default values change the maths
//! in ways mlcli does not implement. `config.json`'s counterparts are
//! [`HfConfig::positive`](crate::formats::hf_config::HfConfig::positive) and [`refuse_hf`].

use std::fmt::Display;

use serde_json::Value as Json;

use crate::formats::gguf::Gguf;
use crate::formats::hf_config::{is_positive, HfConfig};
use crate::{Error, Result};

/// A GGUF float that must be positive and finite (as an `f32` too): NaN, zero or a negative
/// value would run and print nothing (every logit NaN), so it is refused where it is read.
pub fn positive(g: &Gguf, key: &str) -> Result<f64> {
    let v = g.float(key)?;
    if is_positive(v) {
        Ok(v)
    } else {
        Err(Error::BadMetadata {
            key: key.to_string(),
            expected: "a positive finite number",
            found: v.to_string(),
        })
    }
}

/// [`positive`] for an optional key: `None` when absent.
pub fn opt_positive(g: &Gguf, key: &str) -> Result<Option<f64>> {
    g.opt(key, positive)
}

/// The refusal of a value mlcli does not implement: where it was found, the key, the value,
/// and what is supported.
pub fn refused(origin: &str, key: &str, value: impl Display, supported: &str) -> Error {
    Error::UnsupportedConfig(format!(
        "{origin}: {key} = {value} is not supported; supported: {supported}"
    ))
}

/// A `config.json` key whose value changes the forward pass in a way this build does not
/// implement unless it is one of the accepted values.
#[derive(Clone, Copy, Debug)]
pub struct HfRefusal {
    /// The key.
    pub key: &'static str,
    /// The values that run (JSON literals; an absent key or `null` always runs).
    pub accepted: &'static [&'static str],
    /// What is supported, for the message.
    pub supported: &'static str,
}

/// Refuses the first key of `table` present in `h` with a value outside its accepted ones.
pub fn refuse_hf(h: &HfConfig, table: &[HfRefusal]) -> Result<()> {
    for r in table {
        let Some(v) = h.get(r.key) else { continue };
        let ok = r
            .accepted
            .iter()
            .any(|lit| serde_json::from_str::<Json>(lit).is_ok_and(|a| same(&a, v)));
        if !ok {
            return Err(refused(h.origin(), r.key, v, r.supported));
        }
    }
    Ok(())
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn same(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// transformers 5's `layer_types` (`sliding_attention` / `full_attention` per layer) as
/// "is a sliding-window layer", when the file lists them; any other type, or a list of
/// another length than the model's layers, is refused naming the file.
pub fn sliding_layers(h: &HfConfig, n_layers: usize) -> Result<Option<Vec<bool>>> {
    let Some(v) = h.get("layer_types") else {
        return Ok(None);
    };
    let bad = |why: String| Error::MalformedConfig {
        file: h.origin().to_string(),
        key: "layer_types: ".into(),
        why,
    };
    let Some(list) = v.as_array() else {
        return Err(bad(format!("{v} is not a list of layer types")));
    };
    if list.len() != n_layers {
        return Err(bad(format!(
            "lists {} layers, num_hidden_layers is {n_layers}",
            list.len()
        )));
    }
    list.iter()
        .map(|t| match t.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            _ => Err(refused(
                h.origin(),
                "layer_types",
                t,
                "sliding_attention, full_attention",
            )),
        })
        .collect::<Result<Vec<bool>>>()
        .map(Some)
}

/// A GGUF metadata key (without the architecture prefix) whose value changes the forward
/// pass in a way this build does not implement unless it equals the accepted one.
#[derive(Clone, Copy, Debug)]
pub struct GgufRefusal {
    /// The key after `{arch}.`.
    pub key: &'static str,
    /// The value that runs (an absent key always runs).
    pub accepted: Accepted,
    /// What is supported, for the message.
    pub supported: &'static str,
}

/// The one value of a [`GgufRefusal`] that runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accepted {
    /// This boolean.
    Bool(bool),
    /// This number (integers compared as floats).
    Number(f64),
    /// No value: the key must be absent.
    Absent,
}

/// Refuses the first key of `table` present in `g` (as `{arch}.{key}`) with another value.
pub fn refuse_gguf(g: &Gguf, arch: &str, table: &[GgufRefusal]) -> Result<()> {
    for r in table {
        let key = format!("{arch}.{}", r.key);
        if !g.has(&key) {
            continue;
        }
        let found = match r.accepted {
            Accepted::Bool(want) => {
                let v = g.bool(&key)?;
                (v != want).then(|| v.to_string())
            }
            Accepted::Number(want) => {
                let v = g.float(&key)?;
                (v != want).then(|| v.to_string())
            }
            Accepted::Absent => Some(match g.float(&key) {
                Ok(v) => v.to_string(),
                Err(_) => "(present)".to_string(),
            }),
        };
        if let Some(value) = found {
            return Err(refused(
                &g.path().display().to_string(),
                &key,
                value,
                r.supported,
            ));
        }
    }
    Ok(())
}

/// GGUF keys no family here implements, refused wherever they appear with another value
/// (llama.cpp's converter writes them for other architectures; a file of ours that carries
/// one was made by something else and means another model).
pub const GGUF_COMMON: &[GgufRefusal] = &[
    GgufRefusal {
        key: "attention.causal",
        accepted: Accepted::Bool(true),
        supported: "true (causal attention)",
    },
    GgufRefusal {
        key: "expert_gating_func",
        accepted: Accepted::Number(1.0),
        supported: "1 (softmax)",
    },
    GgufRefusal {
        key: "expert_weights_scale",
        accepted: Accepted::Number(1.0),
        supported: "1.0",
    },
    GgufRefusal {
        key: "expert_shared_count",
        accepted: Accepted::Number(0.0),
        supported: "0 (no shared experts)",
    },
    GgufRefusal {
        key: "leading_dense_block_count",
        accepted: Accepted::Number(0.0),
        supported: "0 (every block alike)",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_file_the_key_the_value_and_what_runs() {
        let h = HfConfig::parse(r#"{"a": 2, "b": 1.0, "c": null}"#, "dir/config.json").unwrap();
        let table = |key| {
            [HfRefusal {
                key,
                accepted: &["1"],
                supported: "1 only",
            }]
        };
        assert!(refuse_hf(&h, &table("b")).is_ok(), "1.0 equals 1");
        assert!(refuse_hf(&h, &table("c")).is_ok(), "null is the default");
        assert!(refuse_hf(&h, &table("absent")).is_ok());
        let e = refuse_hf(&h, &table("a")).unwrap_err().to_string();
        assert_eq!(
            e,
            "unsupported configuration: dir/config.json: a = 2 is not supported; supported: 1 only"
        );
    }
}
