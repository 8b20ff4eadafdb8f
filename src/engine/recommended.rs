//! The sampling a model's own files recommend: llama.cpp's `general.sampling.*` keys in a GGUF
//! (gguf-py's `Keys.General.SAMPLING_*`), or `generation_config.json` beside safetensors.

use crate::formats::gguf::Gguf;
use crate::formats::gguf_value::Value;
use crate::formats::hf_config::HfConfig;
use crate::{Error, Result};

use super::settings::Preset;

/// What a model recommends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recommended {
    /// The settings it recommends.
    pub preset: Preset,
    /// Where they were read: `general.sampling.*` or `generation_config.json`.
    pub from: &'static str,
    /// Recommendations mlcli does not implement (`general.sampling.mirostat = 2`), for `-v`.
    pub ignored: Vec<String>,
}

/// The `general.sampling.*` keys mlcli applies.
const GGUF_PREFIX: &str = "general.sampling.";

/// Reads the `general.sampling.*` keys of `gguf`.
pub fn from_gguf(gguf: &Gguf) -> Result<Recommended> {
    from_gguf_metadata(&gguf.header().metadata)
}

/// Reads the `general.sampling.*` keys of GGUF metadata. As in llama.cpp, a `top_k` of 0 or
/// below keeps every token, and a `penalty_last_n` of -1 means the whole context.
pub fn from_gguf_metadata(metadata: &[(String, Value)]) -> Result<Recommended> {
    let mut r = Recommended {
        from: "general.sampling.*",
        ..Recommended::default()
    };
    for (key, value) in metadata {
        let Some(name) = key.strip_prefix(GGUF_PREFIX) else {
            continue;
        };
        let p = &mut r.preset;
        match name {
            "temp" => p.temp = Some(float(key, value)?),
            "top_k" => p.top_k = Some(usize::try_from(int(key, value)?).unwrap_or(0)),
            "top_p" => p.top_p = Some(float(key, value)?),
            "min_p" => p.min_p = Some(float(key, value)?),
            "penalty_repeat" => p.repeat_penalty = Some(float(key, value)?),
            "penalty_last_n" => {
                let n = int(key, value)?;
                p.repeat_last_n = Some(i32::try_from(n).map_err(|_| bad(key, value))?);
            }
            _ => r.ignored.push(format!("{key} = {}", shown(value))),
        }
    }
    Ok(r)
}

/// Reads `generation_config.json`: `temperature` (0 when `do_sample` is false), `top_k`,
/// `top_p`, `min_p` and `repetition_penalty`.
pub fn from_generation_config(gen: &HfConfig) -> Result<Recommended> {
    let sampling = gen.opt_bool("do_sample")? != Some(false);
    let f32_of = |key| -> Result<Option<f32>> { Ok(gen.opt_float(key)?.map(|v| v as f32)) };
    let preset = Preset {
        temp: if sampling {
            f32_of("temperature")?
        } else {
            Some(0.0)
        },
        top_k: gen.opt_usize("top_k")?,
        top_p: f32_of("top_p")?,
        min_p: f32_of("min_p")?,
        repeat_penalty: f32_of("repetition_penalty")?,
        ..Preset::default()
    };
    Ok(Recommended {
        preset,
        from: "generation_config.json",
        ignored: Vec::new(),
    })
}

fn float(key: &str, v: &Value) -> Result<f32> {
    v.as_f64().map(|x| x as f32).ok_or_else(|| bad(key, v))
}

fn int(key: &str, v: &Value) -> Result<i64> {
    v.as_int()
        .and_then(|x| i64::try_from(x).ok())
        .ok_or_else(|| bad(key, v))
}

fn bad(key: &str, v: &Value) -> Error {
    Error::BadMetadata {
        key: key.to_string(),
        expected: "a number (llama.cpp's recommended sampling)",
        found: shown(v),
    }
}

fn shown(v: &Value) -> String {
    v.as_str()
        .map(|s| format!("{s:?}"))
        .or_else(|| v.as_f64().map(|x| x.to_string()))
        .or_else(|| v.as_bool().map(|b| b.to_string()))
        .unwrap_or_else(|| v.type_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(entries: &[(&str, Value)]) -> Vec<(String, Value)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn gguf_sampling_keys_become_a_preset_and_the_rest_is_listed() {
        let r = from_gguf_metadata(&meta(&[
            ("general.name", Value::Str("x".into())),
            ("general.sampling.temp", Value::F32(0.6)),
            ("general.sampling.top_k", Value::I32(-1)),
            ("general.sampling.top_p", Value::F32(0.95)),
            ("general.sampling.min_p", Value::U32(0)),
            ("general.sampling.penalty_last_n", Value::I32(-1)),
            ("general.sampling.penalty_repeat", Value::F32(1.1)),
            ("general.sampling.mirostat", Value::I32(2)),
        ]))
        .unwrap();
        assert_eq!(
            r.preset,
            Preset {
                temp: Some(0.6),
                top_k: Some(0),
                top_p: Some(0.95),
                min_p: Some(0.0),
                repeat_penalty: Some(1.1),
                repeat_last_n: Some(-1),
                ..Preset::default()
            }
        );
        assert_eq!(r.ignored, ["general.sampling.mirostat = 2"]);
        assert_eq!(r.from, "general.sampling.*");
    }

    #[test]
    fn a_gguf_sampling_key_that_is_not_a_number_is_refused() {
        let err = from_gguf_metadata(&meta(&[(
            "general.sampling.temp",
            Value::Str("warm".into()),
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("general.sampling.temp") && err.contains("warm"),
            "{err}"
        );
    }

    #[test]
    fn generation_config_gives_its_sampling_and_greedy_when_do_sample_is_false() {
        let gen = HfConfig::parse(
            r#"{"temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.05}"#,
            "generation_config.json",
        )
        .unwrap();
        let r = from_generation_config(&gen).unwrap();
        assert_eq!(
            (r.preset.temp, r.preset.top_p, r.preset.repeat_penalty),
            (Some(0.2), Some(0.9), Some(1.05))
        );
        let gen = HfConfig::parse(
            r#"{"do_sample": false, "temperature": 0.6}"#,
            "generation_config.json",
        )
        .unwrap();
        assert_eq!(from_generation_config(&gen).unwrap().preset.temp, Some(0.0));
    }
}
