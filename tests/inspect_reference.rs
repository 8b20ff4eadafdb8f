//! `inspect` agrees with llama.cpp's gguf-py dump of both real models
//! (`tests/data/*-gguf.txt`, copied from `shared/reference/`): the same tensors (count, names
//! in order, shapes as `ne[]`, types, element and byte counts), the same metadata keys in order
//! with the same types and values (arrays: length and first elements), the same chat template
//! text and the same data offset. Runs the real binary with `--json`.

use std::process::Command;

use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};
use serde_json::Value;

fn inspect(model: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .arg("inspect")
        .arg(real_model(model))
        .args(args)
        .arg("--json")
        .output()
        .expect("mlcli runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// One line of the dump's metadata section: key, type, value text.
struct DumpKv {
    key: String,
    ty: String,
    value: String,
}

/// One line of the dump's tensor section.
struct DumpTensor {
    name: String,
    ne: Vec<u64>,
    ty: String,
    elements: u64,
    bytes: u64,
}

struct Dump {
    data_offset: u64,
    metadata: Vec<DumpKv>,
    tensors: Vec<DumpTensor>,
    chat_template: Option<String>,
}

fn section<'a>(text: &'a str, title: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines()
        .skip_while(move |l| !l.starts_with(title))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
}

fn parse_dump(text: &str) -> Dump {
    let data_offset = text
        .lines()
        .find_map(|l| l.split("data_offset=").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .expect("data_offset in the dump header");
    let metadata = section(text, "## Metadata")
        .map(|l| {
            let mut parts = l.splitn(3, " | ");
            let mut next = || parts.next().expect("key | type | value").to_string();
            DumpKv {
                key: next(),
                ty: next(),
                value: next(),
            }
        })
        .filter(|kv| !kv.key.starts_with("GGUF."))
        .collect();
    let tensors = section(text, "## Tensors")
        .map(|l| {
            let f: Vec<&str> = l.split(" | ").collect();
            let ne = f[2]
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|d| d.parse().expect("dimension"))
                .collect();
            DumpTensor {
                name: f[1].to_string(),
                ne,
                ty: f[3].to_string(),
                elements: f[4].parse().expect("n_elements"),
                bytes: f[5].parse().expect("n_bytes"),
            }
        })
        .collect();
    let chat_template = text
        .split("-----8<-----\n")
        .nth(1)
        .map(|t| t.strip_suffix('\n').unwrap_or(t).to_string());
    Dump {
        data_offset,
        metadata,
        tensors,
        chat_template,
    }
}

/// Parses a Python literal list of strings or numbers (`['a', 'b\'c']`, `[3, -1.0]`).
fn python_list(text: &str) -> Vec<Value> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .expect("a Python list");
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | ',' => {
                chars.next();
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                while let Some(ch) = chars.next() {
                    match ch {
                        '\\' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => break,
                        },
                        q if q == c => break,
                        other => s.push(other),
                    }
                }
                items.push(Value::from(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch == ',' {
                        break;
                    }
                    s.push(ch);
                    chars.next();
                }
                items.push(number(s.trim()));
            }
        }
    }
    items
}

fn number(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    Value::from(
        s.parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {s}")),
    )
}

/// The dump's value text as JSON, for comparison with ours.
fn dump_value(kv: &DumpKv) -> Option<Value> {
    let v = kv.value.trim();
    if kv.ty.starts_with("ARRAY") {
        let first = v.split("first=").nth(1).expect("first= in an array line");
        return Some(Value::Array(python_list(first)));
    }
    Some(match kv.ty.as_str() {
        "STRING" if v.starts_with("<string,") => return None,
        "STRING" => python_list(&format!("[{v}]")).remove(0),
        "BOOL" => Value::from(v == "True"),
        _ => number(v),
    })
}

fn same_number(ours: &Value, theirs: &Value, ty: &str) -> bool {
    match (ours.as_f64(), theirs.as_f64()) {
        // gguf-py prints f32 widened to f64; compare at the stored precision.
        (Some(a), Some(b)) if ty.contains("FLOAT32") => a as f32 == b as f32,
        (Some(a), Some(b)) => a == b,
        _ => ours == theirs,
    }
}

fn assert_matches_dump(model: &str, dump_text: &str) {
    let dump = parse_dump(dump_text);
    // Tensors: count, order, names, shapes, types, sizes.
    let tensors = inspect(model, &["--tensors", "--full"]);
    let rows = tensors["tensors"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), dump.tensors.len(), "{model}: tensor count");
    for (ours, theirs) in rows.iter().zip(&dump.tensors) {
        assert_eq!(ours["name"], theirs.name.as_str(), "{model}: tensor order");
        let shape: Vec<u64> = ours["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .collect();
        assert_eq!(shape, theirs.ne, "{model}: {}", theirs.name);
        assert_eq!(
            ours["dtype"],
            theirs.ty.as_str(),
            "{model}: {}",
            theirs.name
        );
        assert_eq!(
            ours["elements"], theirs.elements,
            "{model}: {}",
            theirs.name
        );
        assert_eq!(ours["bytes"], theirs.bytes, "{model}: {}", theirs.name);
    }
    // Metadata: keys in order, types, values.
    let meta = inspect(model, &["--metadata"]);
    let entries = meta["metadata"].as_array().expect("entries");
    let keys: Vec<&str> = entries
        .iter()
        .map(|e| e["key"].as_str().expect("key"))
        .collect();
    let want: Vec<&str> = dump.metadata.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, want, "{model}: metadata keys");
    for (ours, theirs) in entries.iter().zip(&dump.metadata) {
        assert_eq!(ours["type"], theirs.ty.as_str(), "{model}: {}", theirs.key);
        if let Some(len) = theirs.value.split("len=").nth(1) {
            let len: u64 = len
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("len");
            assert_eq!(ours["len"], len, "{model}: {}", theirs.key);
        }
        let Some(want) = dump_value(theirs) else {
            continue;
        };
        let ok = match (&ours["value"], &want) {
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_number(x, y, &theirs.ty))
            }
            (a, b) => same_number(a, b, &theirs.ty),
        };
        assert!(
            ok,
            "{model}: {}: ours {} vs gguf-py {want}",
            theirs.key, ours["value"]
        );
    }
    // The chat template, whole.
    let template = inspect(model, &["--metadata", "--full"])["metadata"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["key"] == "tokenizer.chat_template")
        .map(|e| e["value"].as_str().expect("template text").to_string());
    assert_eq!(template, dump.chat_template, "{model}: chat template");
    // Where the data starts.
    let summary = inspect(model, &[]);
    assert_eq!(
        summary["summary"]["format"]["data_offset"],
        dump.data_offset
    );
    assert_eq!(summary["summary"]["tensor_count"], dump.tensors.len());
}

#[test]
fn smollm2_tensors_and_metadata_agree_with_gguf_py() {
    assert_matches_dump(SMOLLM2, include_str!("data/smollm2-gguf.txt"));
}

#[test]
fn gemma3_tensors_and_metadata_agree_with_gguf_py() {
    assert_matches_dump(GEMMA3, include_str!("data/gemma3-gguf.txt"));
}

#[test]
fn python_literals_parse_with_escapes() {
    let v = python_list(r#"['a b', 'it\'s', "x'y", -1.5, 3]"#);
    assert_eq!(
        v,
        vec![
            Value::from("a b"),
            Value::from("it's"),
            Value::from("x'y"),
            Value::from(-1.5),
            Value::from(3)
        ]
    );
}
