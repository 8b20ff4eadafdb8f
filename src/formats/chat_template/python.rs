//! Python-compatible text forms of template values: `str()`, `repr()` and HF's `tojson`
//! (`json.dumps` with `ensure_ascii`, `indent`, `separators`, `sort_keys`).

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// What `{{ value }}` prints in jinja2: Python's `str(value)`, with undefined as "".
pub fn str_of(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        _ => repr_of(value),
    }
}

/// Python's `repr(value)` for the value kinds templates see.
pub fn repr_of(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => "Undefined".to_owned(),
        ValueKind::None => "None".to_owned(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_owned(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => float_repr(f, "nan", "inf"),
            Err(_) => value.to_string(),
        },
        ValueKind::String => string_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => match value.try_iter() {
            Ok(items) => format!(
                "[{}]",
                items.map(|v| repr_of(&v)).collect::<Vec<_>>().join(", ")
            ),
            Err(_) => value.to_string(),
        },
        ValueKind::Map => match value.try_iter() {
            Ok(keys) => {
                let pairs = keys.map(|k| {
                    let v = value.get_item(&k).unwrap_or_default();
                    format!("{}: {}", repr_of(&k), repr_of(&v))
                });
                format!("{{{}}}", pairs.collect::<Vec<_>>().join(", "))
            }
            Err(_) => value.to_string(),
        },
        _ => value.to_string(),
    }
}

/// jinja2's `length`/`count`: an undefined value is empty rather than an error.
pub fn length(value: &Value) -> Result<usize, Error> {
    if value.is_undefined() {
        return Ok(0);
    }
    minijinja::filters::length(value)
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form outside 1e-4..1e16.
pub fn float_repr(f: f64, nan: &str, inf: &str) -> String {
    if f.is_nan() {
        return nan.to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            inf.to_owned()
        } else {
            format!("-{inf}")
        };
    }
    // `{:e}` gives the shortest round-trip mantissa, e.g. "1.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = f.to_string();
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// How `json.dumps` lays out its output.
struct JsonStyle {
    ensure_ascii: bool,
    /// `None`: one line; `Some(unit)`: one item per line, indented by `unit` per level.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// Widest `indent` accepted: a template cannot make us allocate without bound.
const MAX_INDENT: i64 = 4096;

/// HF's `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, taking those options positionally or by keyword.
pub fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let pick = |positional: Option<Value>, name: &str| -> Result<Value, Error> {
        Ok(positional
            .or(kwargs.get::<Option<Value>>(name)?)
            .unwrap_or_default())
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_true();
    let indent = match pick(indent, "indent")? {
        v if v.is_none() || v.is_undefined() => None,
        v if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        // Python's `' ' * indent`; a bool is an int there, and a negative count gives "".
        v if v.kind() == ValueKind::Bool => Some(if v.is_true() { " " } else { "" }.to_owned()),
        v => {
            let width = i64::try_from(v)?.max(0);
            if width > MAX_INDENT {
                let message = format!("tojson indent {width} is too large (at most {MAX_INDENT})");
                return Err(invalid(message));
            }
            Some(" ".repeat(usize::try_from(width).unwrap_or(0)))
        }
    };
    let (item_sep, key_sep) = match pick(separators, "separators")? {
        v if v.is_none() || v.is_undefined() => {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_owned(), ": ".to_owned())
        }
        v => match &v.try_iter()?.collect::<Vec<_>>()[..] {
            [item, key] => (item.to_string(), key.to_string()),
            _ => return Err(invalid("separators must be an (item, key) pair".into())),
        },
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&json_number(value)?),
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), style),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, style, depth, ('[', ']'), &items, |out, item| {
                write_json(out, item, style, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                style,
                depth,
                ('{', '}'),
                &entries,
                |out, (key, item)| {
                    write_json_string(out, key, style);
                    out.push_str(&style.key_sep);
                    write_json(out, item, style, depth + 1)
                },
            )?;
        }
        kind => {
            return Err(invalid(format!(
                "object of type {kind} is not JSON serializable"
            )))
        }
    }
    Ok(())
}

/// Writes `open item sep item ... close`, one item per line when indenting, as Python does.
fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    let newline = |out: &mut String, level: usize| {
        if let Some(unit) = &style.indent {
            out.push('\n');
            out.push_str(&unit.repeat(level));
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        newline(out, depth + 1);
        write_item(out, item)?;
    }
    if !items.is_empty() {
        newline(out, depth);
    }
    out.push(close);
    Ok(())
}

fn json_number(value: &Value) -> Result<String, Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    Ok(float_repr(f64::try_from(value.clone())?, "NaN", "Infinity"))
}

/// Python turns `str`, `int`, `float`, `bool` and `None` keys into strings; others fail.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number | ValueKind::Bool | ValueKind::None => {
            let mut out = String::new();
            write_json(&mut out, key, &JsonStyle::COMPACT, 0)?;
            Ok(out)
        }
        kind => Err(invalid(format!(
            "keys must be str, int, float, bool or None, not {kind}"
        ))),
    }
}

impl JsonStyle {
    const COMPACT: JsonStyle = JsonStyle {
        ensure_ascii: false,
        indent: None,
        item_sep: String::new(),
        key_sep: String::new(),
        sort_keys: false,
    };
}

fn write_json_string(out: &mut String, s: &str, style: &JsonStyle) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (style.ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Environment;

    fn render(template: &str, data: serde_json::Value) -> String {
        let mut env = Environment::new();
        env.add_filter("tojson", tojson);
        env.render_str(template, Value::from_serialize(&data))
            .unwrap()
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (1e100, "1e+100"),
        ];
        for (f, expected) in cases {
            assert_eq!(float_repr(f, "nan", "inf"), expected, "{f}");
        }
        assert_eq!(
            float_repr(f64::NEG_INFINITY, "NaN", "Infinity"),
            "-Infinity"
        );
    }

    #[test]
    fn repr_matches_python_for_nested_values() {
        let v = Value::from_serialize(serde_json::json!(
            {"s": "it's", "q": "a'b\"c", "l": [1, 2.5, true, null], "e": {}}
        ));
        assert_eq!(
            repr_of(&v),
            r#"{'s': "it's", 'q': 'a\'b"c', 'l': [1, 2.5, True, None], 'e': {}}"#
        );
    }

    #[test]
    fn tojson_default_uses_python_separators_and_keeps_key_order() {
        let data = serde_json::json!({"z": [1, 2, {"b": null, "a": 1.0}], "a": "x"});
        assert_eq!(
            render("{{ d | tojson }}", serde_json::json!({ "d": data })),
            r#"{"z": [1, 2, {"b": null, "a": 1.0}], "a": "x"}"#
        );
    }

    #[test]
    fn tojson_indent_puts_items_on_lines_and_drops_item_space() {
        let data = serde_json::json!({"d": {"a": [1, []], "b": {}}});
        assert_eq!(
            render("{{ d | tojson(indent=2) }}", data),
            "{\n  \"a\": [\n    1,\n    []\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn tojson_separators_sort_keys_and_ensure_ascii_follow_json_dumps() {
        let data = serde_json::json!({"d": {"b": "é😀\u{1}", "a": [1, 2]}});
        assert_eq!(
            render(
                "{{ d | tojson(separators=(',', ':'), sort_keys=true) }}",
                data.clone()
            ),
            "{\"a\":[1,2],\"b\":\"é😀\\u0001\"}"
        );
        assert_eq!(
            render("{{ d | tojson(ensure_ascii=true) }}", data),
            r#"{"b": "\u00e9\ud83d\ude00\u0001", "a": [1, 2]}"#
        );
    }
}
