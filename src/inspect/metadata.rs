//! The metadata table: every key with its type and value. GGUF keys keep gguf-py's type names
//! (`UINT32`, `ARRAY[STRING]`); safetensors models show each shard's `__metadata__` and the
//! keys of `config.json`. Arrays are abbreviated to their first elements unless asked for whole.

use serde::Serialize;
use serde_json::Value as Json;

use super::{hf, Model};
use crate::formats::gguf_header::{Value, PREVIEW_ITEMS};

/// One metadata entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// The key (`llama.block_count`, `__metadata__.format`, `config.hidden_size`).
    pub key: String,
    /// The stored type: gguf-py's name for GGUF values, `STRING` for safetensors
    /// `__metadata__`, the JSON type (`number`, `string`, `array`, ...) for `config.json`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The value; arrays hold their first elements unless `truncated` is false.
    pub value: Json,
    /// Number of elements, for arrays.
    pub len: Option<u64>,
    /// True when `value` holds fewer elements than `len`.
    pub truncated: bool,
}

/// Every metadata entry; `full` keeps whole arrays.
pub fn entries(model: &Model, full: bool) -> Vec<Entry> {
    let limit = if full { usize::MAX } else { PREVIEW_ITEMS };
    match model {
        Model::Gguf { header, .. } => header
            .metadata
            .iter()
            .map(|(k, v)| gguf_entry(k, v, limit))
            .collect(),
        Model::Safetensors {
            checkpoint, dir, ..
        } => {
            let mut out = Vec::new();
            for shard in &checkpoint.shards {
                for (k, v) in &shard.header.metadata {
                    out.push(Entry {
                        key: format!("__metadata__.{k}"),
                        ty: "STRING".into(),
                        value: Json::from(v.as_str()),
                        len: None,
                        truncated: false,
                    });
                }
            }
            if let Some(Json::Object(config)) = dir.as_deref().and_then(hf::config) {
                for (k, v) in config {
                    out.push(json_entry(&format!("config.{k}"), &v, limit));
                }
            }
            out
        }
    }
}

fn gguf_entry(key: &str, v: &Value, limit: usize) -> Entry {
    let (len, truncated) = match v.as_array() {
        Some(a) => (Some(a.len), a.len > limit.min(a.items.len()) as u64),
        None => (None, false),
    };
    Entry {
        key: key.to_string(),
        ty: v.type_name(),
        value: to_json(v, limit),
        len,
        truncated,
    }
}

/// A GGUF value as JSON, arrays cut to `limit` elements (at every nesting level); floats as
/// their shortest decimal (an f32 1e-5 is `0.00001`, not `9.999999747378752e-6`), NaN and
/// infinities as strings.
pub fn to_json(v: &Value, limit: usize) -> Json {
    let float = |text: String| {
        text.parse::<serde_json::Number>()
            .map_or_else(|_| Json::from(text), Json::Number)
    };
    match v {
        Value::U8(x) => Json::from(*x),
        Value::I8(x) => Json::from(*x),
        Value::U16(x) => Json::from(*x),
        Value::I16(x) => Json::from(*x),
        Value::U32(x) => Json::from(*x),
        Value::I32(x) => Json::from(*x),
        Value::U64(x) => Json::from(*x),
        Value::I64(x) => Json::from(*x),
        Value::F32(x) => float(format!("{x:?}")),
        Value::F64(x) => float(format!("{x:?}")),
        Value::Bool(x) => Json::from(*x),
        Value::Str(s) => Json::from(s.as_str()),
        Value::Array(a) => Json::Array(
            a.items
                .iter()
                .take(limit)
                .map(|i| to_json(i, limit))
                .collect(),
        ),
    }
}

fn json_entry(key: &str, v: &Json, limit: usize) -> Entry {
    let ty = match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    };
    let (value, len, truncated) = match v {
        Json::Array(items) => (
            Json::Array(items.iter().take(limit).cloned().collect()),
            Some(items.len() as u64),
            items.len() > limit,
        ),
        other => (other.clone(), None, false),
    };
    Entry {
        key: key.to_string(),
        ty: ty.to_string(),
        value,
        len,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf_builder::array;
    use crate::formats::gguf_header::ValueType;

    #[test]
    fn arrays_are_cut_to_a_preview_with_their_length() {
        let v = array(ValueType::U32, (0..20).map(Value::U32).collect());
        let e = gguf_entry("k", &v, PREVIEW_ITEMS);
        assert_eq!(e.ty, "ARRAY[UINT32]");
        assert_eq!(e.len, Some(20));
        assert!(e.truncated);
        assert_eq!(e.value.as_array().map(Vec::len), Some(PREVIEW_ITEMS));
        let whole = gguf_entry("k", &v, usize::MAX);
        assert!(!whole.truncated);
        assert_eq!(whole.value.as_array().map(Vec::len), Some(20));
    }

    #[test]
    fn floats_print_as_their_shortest_decimal() {
        assert_eq!(to_json(&Value::F32(1e-5), 8).to_string(), "0.00001");
        assert_eq!(to_json(&Value::F32(100000.0), 8).to_string(), "100000.0");
        assert_eq!(to_json(&Value::F32(f32::NAN), 8), Json::from("NaN"));
    }
}
