//! The JSON form of every view: one object with `schema_version`, `view`, `file`, and the
//! view's own data under a key named after the view. Keys are documented in `docs/inspect.md`
//! and only ever added to within a schema version; a removal or change of meaning bumps it.

use serde::Serialize;
use serde_json::Value as Json;

/// The version of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Wraps `data` (the view's value) in the common envelope:
/// `{"schema_version": 1, "view": "summary", "file": "model.gguf", "summary": {...}}`.
pub fn envelope<T: Serialize>(view: &str, file: &str, data: &T) -> serde_json::Result<Json> {
    let mut obj = serde_json::Map::new();
    obj.insert("schema_version".into(), Json::from(SCHEMA_VERSION));
    obj.insert("view".into(), Json::from(view));
    obj.insert("file".into(), Json::from(file));
    obj.insert(view.into(), serde_json::to_value(data)?);
    Ok(Json::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_names_schema_view_and_file_before_the_data() {
        let v = envelope("tensors", "m.gguf", &vec![1, 2]).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"schema_version":1,"view":"tensors","file":"m.gguf","tensors":[1,2]}"#
        );
    }
}
