//! The whitespace a constrained JSON value may hold between its tokens: bounded, as llama.cpp's
//! schema grammars bound it, so a model cannot keep emitting blanks until it runs out of tokens.

use serde_json::Value;

/// One space, or one or two line breaks followed by up to twenty spaces or tabs (llama.cpp's
/// `space` rule): room for compact and indented JSON, never an endless run.
pub const WHITESPACE: &str = r"(?:\x20|\x0A{1,2}[\x20\x09]{0,20})";

/// `schema` with llguidance's `x-guidance` options bounding its whitespace to [`WHITESPACE`];
/// a schema that sets its own `x-guidance` (or is not an object) is returned unchanged.
pub fn bounded(mut schema: Value) -> Value {
    if let Some(map) = schema.as_object_mut() {
        map.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_pattern": WHITESPACE}));
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_whitespace_unless_the_schema_says_otherwise() {
        assert_eq!(
            bounded(json!({"type": "object"}))["x-guidance"]["whitespace_pattern"],
            WHITESPACE
        );
        let own = json!({"type": "object", "x-guidance": {"whitespace_flexible": false}});
        assert_eq!(bounded(own.clone()), own);
        assert_eq!(bounded(json!(true)), json!(true));
    }
}
