//! A Lark grammar (llguidance's dialect) for one forced Gemma 4 tool call,
//! `<|tool_call>call:NAME{key:value,…}<tool_call|>`, whose arguments hold to the tool's JSON
//! schema: types, enums and constants, required and optional keys, nested objects and arrays,
//! string lengths and item counts. The syntax is Gemma's, not JSON, so the schema is
//! translated here rule by rule; a schema keyword this translation cannot hold (a pattern, a
//! numeric bound, a reference…) refuses the grammar by name rather than being ignored. Keys
//! are written in sorted order, as Gemma's template writes the calls in a conversation.

use serde_json::Value;

use super::gemma_calls::{CLOSE, OPEN, QUOTE};
use super::gemma_thought as thought;
use super::tool_calls::{lark_literal, lark_text, Controls, Format};
use crate::{Error, Result};

/// Keywords that describe and never constrain: skipped.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "$schema",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords held (with [`ANNOTATIONS`]); any other refuses the grammar.
const HELD: &[&str] = &[
    "type",
    "enum",
    "const",
    "nullable",
    "anyOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

/// Deepest nesting of schemas translated (the reply parser reads 32 levels).
const MAX_DEPTH: usize = 32;

/// Longest bounded run of optional list items or string characters spelled out.
const MAX_SPAN: u64 = 256;

/// The shared rules: any Gemma value, for schemas that leave a value free (`gstr` is added by
/// [`Builder::string_rule`]).
const ANY: &str = "gany: gstr | GNUM | gdict | glist | \"true\" | \"false\" | \"null\"\n\
                   gdict: \"{\" (GKEY \":\" gany (\",\" GKEY \":\" gany)*)? \"}\"\n\
                   glist: \"[\" (gany (\",\" gany)*)? \"]\"\n\
                   GKEY: /[A-Za-z_][A-Za-z0-9_]*/\n\
                   GNUM: /-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?/\n\
                   GINT: /-?(0|[1-9][0-9]*)/\n";

/// The grammar of one call to one of `tools` (each a name and its parameter schema), its
/// markers written as the model's control tokens where they are ones (`controls`). The
/// call may follow a thought (`<|channel>thought…<channel|>`), as it does when the
/// template asks the model to think first.
pub fn call_grammar(tools: &[(String, Value)], controls: Controls) -> Result<String> {
    let mut b = Builder {
        rules: Vec::new(),
        controls,
    };
    let mut calls = Vec::new();
    for (name, params) in tools {
        if name.is_empty() || name.contains(['{', '<', '\n']) {
            return Err(Error::InvalidArgument(format!(
                "tool name '{name}' cannot be written in Gemma 4's call syntax"
            )));
        }
        let at = Place {
            tool: name,
            path: String::new(),
        };
        let args = b.object_only(params, &at)?;
        calls.push(format!("{} {args}", lark_literal(&format!("call:{name}"))));
    }
    let marker = |m: &str| lark_text(m, Format::Gemma4.markers(), controls);
    // The thought's text runs to the closing marker: a control token ends it by itself; a
    // closing marker written as text ends a lazy match.
    let thought = match (controls(thought::OPEN), controls(thought::CLOSE)) {
        (Some(open), Some(close)) => format!("gthought: <[{open}]> /(?s:.*)/ <[{close}]>\n"),
        _ => format!(
            "gthought: {} gthink\ngthink[suffix={}]: /(?s:.*)/\n",
            marker(thought::OPEN),
            lark_literal(thought::CLOSE)
        ),
    };
    Ok(format!(
        "start: gthought? {} (({})) {}\n{thought}{}{}{ANY}",
        marker(OPEN),
        calls.join(") | ("),
        marker(CLOSE),
        b.rules.concat(),
        b.string_rule(),
    ))
}

/// Where in which tool's schema a value is (for refusals).
struct Place<'a> {
    tool: &'a str,
    path: String,
}

impl Place<'_> {
    fn child(&self, step: &str) -> Place<'_> {
        Place {
            tool: self.tool,
            path: format!("{}/{step}", self.path),
        }
    }

    fn refuse(&self, why: impl std::fmt::Display) -> Error {
        let at = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        Error::InvalidArgument(format!(
            "tool '{}', parameters at {at}: {why}, which a forced call in Gemma 4's syntax \
             cannot hold (held: {}, and annotations)",
            self.tool,
            HELD.join(", ")
        ))
    }

    fn depth(&self) -> usize {
        self.path.matches('/').count()
    }
}

struct Builder<'c> {
    rules: Vec<String>,
    /// The model's control tokens among the markers.
    controls: Controls<'c>,
}

impl Builder<'_> {
    /// The string quote's control token, where it is one.
    fn quote(&self) -> Option<u32> {
        (self.controls)(QUOTE)
    }

    /// `gstr`, any string.
    fn string_rule(&self) -> String {
        match self.quote() {
            Some(q) => format!("gstr: <[{q}]> /[^<]+/? <[{q}]>\n"),
            None => "gstr: /<\\|\"\\|>[^<]*<\\|\"\\|>/\n".to_string(),
        }
    }

    /// Adds a rule with this body; returns its name.
    fn rule(&mut self, body: String) -> String {
        let name = format!("g{}", self.rules.len());
        self.rules.push(format!("{name}: {body}\n"));
        name
    }

    /// The arguments: an object (a schema without a type is taken as one).
    fn object_only(&mut self, schema: &Value, at: &Place) -> Result<String> {
        match schema.get("type") {
            None => self.object(schema, at),
            Some(t) if t == "object" => self.object(schema, at),
            Some(t) => Err(at.refuse(format!("the arguments are of type {t}, not an object"))),
        }
    }

    /// A value held to `schema`; returns the expression (a rule name).
    fn value(&mut self, schema: &Value, at: &Place) -> Result<String> {
        if at.depth() > MAX_DEPTH {
            return Err(at.refuse(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let map = match schema {
            Value::Bool(true) => return Ok("gany".into()),
            Value::Object(m) => m,
            _ => return Err(at.refuse(format!("the schema {schema}"))),
        };
        if let Some(k) = map
            .keys()
            .find(|k| !HELD.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(at.refuse(format!("'{k}'")));
        }
        let nullable = map.get("nullable") == Some(&Value::Bool(true));
        let mut alternatives = self.alternatives(map, at)?;
        if nullable {
            alternatives.push("\"null\"".into());
        }
        Ok(self.rule(alternatives.join(" | ")))
    }

    /// The alternatives a schema (already checked for keywords) allows.
    fn alternatives(
        &mut self,
        map: &serde_json::Map<String, Value>,
        at: &Place,
    ) -> Result<Vec<String>> {
        if let Some(c) = map.get("const") {
            return Ok(vec![literal(c, self.controls, at)?]);
        }
        if let Some(e) = map.get("enum") {
            let items = e
                .as_array()
                .ok_or_else(|| at.refuse("an enum that is no list"))?;
            return items
                .iter()
                .map(|v| literal(v, self.controls, at))
                .collect();
        }
        if let Some(any) = map.get("anyOf") {
            let items = any
                .as_array()
                .ok_or_else(|| at.refuse("an anyOf that is no list"))?;
            if map.contains_key("type") {
                return Err(at.refuse("anyOf beside type"));
            }
            return items
                .iter()
                .enumerate()
                .map(|(i, s)| self.value(s, &at.child(&format!("anyOf/{i}"))))
                .collect();
        }
        let types: Vec<&str> = match map.get("type") {
            None if map.contains_key("properties") => vec!["object"],
            None if map.contains_key("items") => vec!["array"],
            None => return Ok(vec!["gany".into()]),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            Some(other) => return Err(at.refuse(format!("type {other}"))),
        };
        let schema = Value::Object(map.clone());
        types
            .into_iter()
            .map(|t| match t {
                "string" => self.string(map, at),
                "integer" => Ok("GINT".into()),
                "number" => Ok("GNUM".into()),
                "boolean" => Ok("(\"true\" | \"false\")".into()),
                "null" => Ok("\"null\"".into()),
                "object" => self.object(&schema, at),
                "array" => self.array(map, at),
                other => Err(at.refuse(format!("type '{other}'"))),
            })
            .collect()
    }

    fn string(&mut self, map: &serde_json::Map<String, Value>, at: &Place) -> Result<String> {
        let (min, max) = bounds(map, "minLength", "maxLength", at)?;
        let chars = match max {
            None => format!("{{{min},}}"),
            Some(max) => format!("{{{min},{max}}}"),
        };
        Ok(match self.quote() {
            // The text between the quote tokens holds no '<'; an empty string is the two
            // quotes alone (a lexeme never matches nothing).
            Some(q) if min == 0 => {
                let text = match max {
                    None => "/[^<]+/".to_string(),
                    Some(0) => return Ok(format!("(<[{q}]> <[{q}]>)")),
                    Some(max) => format!("/[^<]{{1,{max}}}/"),
                };
                format!("(<[{q}]> {text}? <[{q}]>)")
            }
            Some(q) => format!("(<[{q}]> /[^<]{chars}/ <[{q}]>)"),
            // One terminal, quotes included: the text between them holds no '<'.
            None => format!("/<\\|\"\\|>[^<]{chars}<\\|\"\\|>/"),
        })
    }

    fn array(&mut self, map: &serde_json::Map<String, Value>, at: &Place) -> Result<String> {
        let item = match map.get("items") {
            None => "gany".to_string(),
            Some(s) => self.value(s, &at.child("items"))?,
        };
        let (min, max) = bounds(map, "minItems", "maxItems", at)?;
        if max == Some(0) {
            return Ok("(\"[\" \"]\")".into());
        }
        let mut body = match max {
            None => format!("(\",\" {item})*"),
            Some(max) => {
                (min.max(1)..max).fold(String::new(), |inner, _| format!("(\",\" {item} {inner})?"))
            }
        };
        for _ in 1..min.max(1) {
            body = format!("\",\" {item} {body}");
        }
        let items = format!("{item} {body}");
        Ok(match min {
            0 => format!("(\"[\" ({items})? \"]\")"),
            _ => format!("(\"[\" {items} \"]\")"),
        })
    }

    fn object(&mut self, schema: &Value, at: &Place) -> Result<String> {
        let empty = serde_json::Map::new();
        let props = match schema.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(at.refuse("properties that are no mapping")),
        };
        let required: Vec<&str> = match schema.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(at.refuse("a required that is no list")),
        };
        if let Some(r) = required.iter().find(|r| !props.contains_key(**r)) {
            return Err(at.refuse(format!("required key '{r}' without a schema in properties")));
        }
        let extra = schema.get("additionalProperties");
        if props.is_empty() {
            // A free mapping: any keys, their values held to additionalProperties.
            let value = match extra {
                Some(Value::Bool(false)) => return Ok("(\"{\" \"}\")".into()),
                None | Some(Value::Bool(true)) => "gany".to_string(),
                Some(s) => self.value(s, &at.child("additionalProperties"))?,
            };
            return Ok(format!(
                "(\"{{\" (GKEY \":\" {value} (\",\" GKEY \":\" {value})*)? \"}}\")"
            ));
        }
        if let Some(s @ Value::Object(_)) = extra {
            // Only the declared keys are written (valid whatever else the schema allows),
            // but the extra schema must still be one this translation understands.
            self.value(s, &at.child("additionalProperties"))?;
        }
        let mut pairs = Vec::new();
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        for key in keys {
            if key.is_empty() || key.contains([':', ',', '{', '}', '<', ' ', '\n']) {
                return Err(at.refuse(format!("the key '{key}'")));
            }
            let v = self.value(&props[key], &at.child(key))?;
            pairs.push((
                format!("{} {v}", lark_literal(&format!("{key}:"))),
                required.contains(&key.as_str()),
            ));
        }
        Ok(format!("(\"{{\" {} \"}}\")", members(&pairs)))
    }
}

/// The members of an object, in order, each `(expression, required)`, commas between the
/// ones written: `a` required, `b` optional → `a ("," b)?`.
fn members(pairs: &[(String, bool)]) -> String {
    match pairs.iter().position(|(_, req)| *req) {
        Some(first) => {
            let before: String = pairs[..first]
                .iter()
                .map(|(p, _)| format!("({p} \",\")? "))
                .collect();
            let after: String = pairs[first + 1..]
                .iter()
                .map(|(p, req)| match req {
                    true => format!(" \",\" {p}"),
                    false => format!(" (\",\" {p})?"),
                })
                .collect();
            format!("{before}{}{after}", pairs[first].0)
        }
        None => {
            // All optional: the first written is any of them, the rest may follow it.
            let starts: Vec<String> = (0..pairs.len())
                .map(|i| {
                    let rest: String = pairs[i + 1..]
                        .iter()
                        .map(|(p, _)| format!(" (\",\" {p})?"))
                        .collect();
                    format!("{}{rest}", pairs[i].0)
                })
                .collect();
            format!("(({}))?", starts.join(") | ("))
        }
    }
}

/// `min` and `max` of a length or count (absent: 0 and unbounded).
fn bounds(
    map: &serde_json::Map<String, Value>,
    min_key: &str,
    max_key: &str,
    at: &Place,
) -> Result<(u64, Option<u64>)> {
    let get = |k: &str| match map.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| at.refuse(format!("{k} {v}, not a count"))),
    };
    let (min, max) = (get(min_key)?.unwrap_or(0), get(max_key)?);
    if max.is_some_and(|m| m < min) {
        return Err(at.refuse(format!("{max_key} below {min_key}")));
    }
    if min > MAX_SPAN || max.is_some_and(|m| m - min > MAX_SPAN) {
        return Err(at.refuse(format!("{min_key}/{max_key} spans over {MAX_SPAN}")));
    }
    Ok((min, max))
}

/// A constant value as Gemma writes it, its string quotes the control token where that is one.
fn literal(v: &Value, controls: Controls, at: &Place) -> Result<String> {
    let mut out = String::new();
    write_value(v, &mut out, at)?;
    Ok(lark_text(&out, &[QUOTE], controls))
}

fn write_value(v: &Value, out: &mut String, at: &Place) -> Result<()> {
    match v {
        Value::String(s) if s.contains('<') => {
            return Err(at.refuse(format!("the constant string {v} (it holds '<')")))
        }
        Value::String(s) => out.push_str(&format!("{QUOTE}{s}{QUOTE}")),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out, at)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push(':');
                write_value(&m[k], out, at)?;
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Vec<(String, Value)> {
        vec![(
            "get_weather".into(),
            json!({"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 40, "description": "A city"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer"}},
                "required": ["city", "unit"], "additionalProperties": false}),
        )]
    }

    #[test]
    fn a_schema_becomes_rules_in_gemma_syntax_keys_sorted() {
        let g = call_grammar(&weather(), &|_| None).unwrap();
        // city (required), days (optional, between), unit (required), in sorted order.
        assert!(
            g.starts_with(
                "start: gthought? \"<|tool_call>\" ((\"call:get_weather\" (\"{\" \"city:\" \
                 g0 (\",\" \"days:\" g1)? \",\" \"unit:\" g2 \"}\"))) \"<tool_call|>\"\n"
            ),
            "{g}"
        );
        assert!(g.contains("g0: /<\\|\"\\|>[^<]{0,40}<\\|\"\\|>/\n"), "{g}");
        assert!(g.contains("g1: GINT\n"), "{g}");
        assert!(
            g.contains("g2: \"<|\\\"|>c<|\\\"|>\" | \"<|\\\"|>f<|\\\"|>\"\n"),
            "{g}"
        );
    }

    #[test]
    fn members_put_commas_only_between_the_keys_written() {
        let p = |s: &str, r| (s.to_string(), r);
        assert_eq!(members(&[p("a", false), p("b", true)]), "(a \",\")? b");
        assert_eq!(
            members(&[p("a", false), p("b", false)]),
            "((a (\",\" b)?) | (b))?"
        );
    }

    #[test]
    fn arrays_count_their_items() {
        let tools = vec![(
            "f".to_string(),
            json!({"properties": {"xs": {"type": "array", "items": {"type": "number"},
                                         "minItems": 1, "maxItems": 3}}}),
        )];
        let g = call_grammar(&tools, &|_| None).unwrap();
        assert!(
            g.contains("(\"[\" g0 (\",\" g0 (\",\" g0 )?)? \"]\")"),
            "{g}"
        );
    }

    #[test]
    fn what_cannot_be_held_is_refused_by_name() {
        for (schema, word) in [
            (
                json!({"properties": {"x": {"type": "string", "pattern": "a+"}}}),
                "'pattern'",
            ),
            (
                json!({"properties": {"n": {"type": "integer", "minimum": 1}}}),
                "'minimum'",
            ),
            (
                json!({"properties": {"x": {"$ref": "#/$defs/x"}}}),
                "'$ref'",
            ),
            (json!({"type": "array"}), "not an object"),
            (json!({"required": ["x"]}), "required key 'x'"),
        ] {
            let err = call_grammar(&[("f".into(), schema)], &|_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(word) && err.contains("tool 'f'"), "{err}");
        }
    }
}
