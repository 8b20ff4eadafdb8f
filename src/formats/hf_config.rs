//! A Hugging Face `config.json` with typed getters, the safetensors counterpart of
//! [`super::gguf::Gguf`]'s metadata getters. Families read their `Config::from_hf` through it;
//! a missing or mistyped key becomes an error that names the key and the file.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// A parsed `config.json` (or a nested object of one, such as `text_config`).
#[derive(Clone, Debug)]
pub struct HfConfig {
    map: Map<String, Value>,
    /// Where the keys came from, for error messages (`config.json`, `config.json: text_config`).
    origin: String,
}

impl HfConfig {
    /// Reads and parses `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses JSON text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Self {
                map,
                origin: origin.to_string(),
            }),
            Ok(other) => Err(Error::MalformedConfig {
                file: origin.to_string(),
                key: String::new(),
                why: format!("holds {}, not a JSON object", kind(&other)),
            }),
            Err(e) => Err(Error::MalformedConfig {
                file: origin.to_string(),
                key: String::new(),
                why: format!("not valid JSON: {e}"),
            }),
        }
    }

    /// A config from an already parsed object.
    pub fn from_map(map: Map<String, Value>, origin: &str) -> Self {
        Self {
            map,
            origin: origin.to_string(),
        }
    }

    /// Where the keys came from (`config.json`, `config.json: text_config`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The underlying JSON object.
    pub fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The first entry of `architectures` (e.g. `LlamaForCausalLM`).
    pub fn architecture(&self) -> Result<&str> {
        match self.map.get("architectures") {
            Some(Value::Array(a)) => match a.first() {
                Some(Value::String(s)) => Ok(s),
                _ => Err(self.bad("architectures", "a non-empty list of strings")),
            },
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.bad("architectures", "a list of strings")),
            None => Err(self.missing("architectures")),
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A nested object (`text_config`, `rope_scaling`), when present and not null.
    pub fn sub(&self, key: &str) -> Option<HfConfig> {
        match self.map.get(key) {
            Some(Value::Object(m)) => Some(Self {
                map: m.clone(),
                origin: format!("{}: {key}", self.origin),
            }),
            _ => None,
        }
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional non-negative integer (absent or null: `None`).
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }

    /// A required non-negative integer stored under any of `keys` (a key renamed between
    /// transformers versions, e.g. `num_experts` / `num_local_experts`); the first present wins.
    pub fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for key in keys {
            if let Some(v) = self.opt_usize(key)? {
                return Ok(v);
            }
        }
        Err(self.missing(&keys.join("' or '")))
    }

    /// A required number.
    pub fn float(&self, key: &str) -> Result<f64> {
        self.opt_float(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional number (absent or null: `None`).
    pub fn opt_float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a number")),
        }
    }

    /// A required number that is positive and finite as an `f32` too (a norm epsilon, a RoPE
    /// base): NaN, zero, negative or overflowing values are refused naming the key and file.
    pub fn positive(&self, key: &str) -> Result<f64> {
        self.opt_positive(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional number that, when present, is positive and finite (see [`Self::positive`]).
    pub fn opt_positive(&self, key: &str) -> Result<Option<f64>> {
        match self.opt_float(key)? {
            Some(v) if !is_positive(v) => Err(self.bad(key, "a positive finite number")),
            v => Ok(v),
        }
    }

    /// The value of `key` with transformers' semantics for a `int | None` field with a default:
    /// absent gives `default`, an explicit `null` gives `None`.
    pub fn opt_usize_or(&self, key: &str, default: Option<usize>) -> Result<Option<usize>> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(_) => self.opt_usize(key),
        }
    }

    /// An optional boolean (absent or null: `None`).
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(key, "true or false")),
        }
    }

    /// An optional string (absent or null: `None`).
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a string")),
        }
    }

    /// Integers given as one number or a list (`eos_token_id`).
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| one(v).ok_or_else(|| self.bad(key, "a list of token ids")))
                .collect(),
            Some(v) => one(v)
                .map(|id| vec![id])
                .ok_or_else(|| self.bad(key, "a token id or a list of them")),
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingConfigKey {
            key: key.to_string(),
            origin: self.origin.clone(),
        }
    }

    fn bad(&self, key: &str, expected: &'static str) -> Error {
        Error::BadMetadata {
            key: format!("{} in {}", key, self.origin),
            expected,
            found: self
                .map
                .get(key)
                .map(|v| {
                    let s = v.to_string();
                    if s.chars().count() > 60 {
                        format!("{}…", s.chars().take(60).collect::<String>())
                    } else {
                        s
                    }
                })
                .unwrap_or_default(),
        }
    }
}

/// True for a number that is positive and finite both as an `f64` and once rounded to the
/// `f32` the kernels compute with (`1e-50` rounds to 0, `1e39` to infinity).
pub fn is_positive(v: f64) -> bool {
    let f = v as f32;
    v.is_finite() && v > 0.0 && f.is_finite() && f > 0.0
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> HfConfig {
        HfConfig::parse(text, "config.json").unwrap()
    }

    #[test]
    fn typed_getters_read_present_keys_and_default_absent_ones() {
        let c = cfg(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576,
            "rms_norm_eps":1e-5,"tie_word_embeddings":true,"head_dim":null,
            "eos_token_id":[2,3],"bos_token_id":1,"rope_scaling":{"factor":8.0}}"#);
        assert_eq!(c.architecture().unwrap(), "LlamaForCausalLM");
        assert_eq!(c.usize("hidden_size").unwrap(), 576);
        assert_eq!(c.opt_usize("head_dim").unwrap(), None);
        assert_eq!(c.float("rms_norm_eps").unwrap(), 1e-5);
        assert_eq!(c.opt_bool("tie_word_embeddings").unwrap(), Some(true));
        assert_eq!(c.ids("eos_token_id").unwrap(), vec![2, 3]);
        assert_eq!(c.ids("bos_token_id").unwrap(), vec![1]);
        assert_eq!(c.ids("pad_token_id").unwrap(), Vec::<u32>::new());
        assert_eq!(c.sub("rope_scaling").unwrap().float("factor").unwrap(), 8.0);
    }

    #[test]
    fn positive_numbers_refuse_zero_negative_and_what_f32_cannot_hold() {
        let c = cfg(r#"{"a":1e-6,"zero":0,"neg":-1.0,"tiny":1e-50,"huge":1e39,"n":null}"#);
        assert_eq!(c.positive("a").unwrap(), 1e-6);
        assert_eq!(c.opt_positive("n").unwrap(), None);
        for key in ["zero", "neg", "tiny", "huge"] {
            let e = c.positive(key).unwrap_err().to_string();
            assert!(
                e.contains(key) && e.contains("config.json") && e.contains("positive"),
                "{e}"
            );
        }
        assert!(c.positive("absent").is_err());
    }

    #[test]
    fn absent_and_null_differ_where_transformers_has_a_default() {
        let c = cfg(r#"{"w":7,"n":null}"#);
        assert_eq!(c.opt_usize_or("w", Some(4096)).unwrap(), Some(7));
        assert_eq!(c.opt_usize_or("n", Some(4096)).unwrap(), None);
        assert_eq!(c.opt_usize_or("absent", Some(4096)).unwrap(), Some(4096));
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let c = cfg(r#"{"hidden_size":"wide"}"#);
        let e = c.usize("hidden_size").unwrap_err().to_string();
        assert!(
            e.contains("hidden_size") && e.contains("config.json"),
            "{e}"
        );
        let e = c.usize("num_hidden_layers").unwrap_err().to_string();
        assert!(
            e.contains("num_hidden_layers") && e.contains("config.json"),
            "{e}"
        );
        assert!(c.architecture().is_err());
        assert!(HfConfig::parse("[1]", "config.json").is_err());
    }
}
