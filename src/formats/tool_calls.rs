//! Tool calls in a model's text, in the formats chat templates teach: Hermes/Qwen
//! (`<tool_call>{"name", "arguments"}</tool_call>`, any number), Mistral
//! (`[TOOL_CALLS][{"name", "arguments"}, …]`) and Llama 3 (a bare `{"name", "parameters"}`
//! object, optionally after `<|python_tag|>`), gpt-oss's harmony (a message to
//! `functions.NAME`, [`super::harmony`]) and Gemma 4 (`<|tool_call>call:NAME{…}<tool_call|>`,
//! [`super::gemma_calls`]). Which one a model uses is read from its
//! template; each format gives the marker that starts a call (so streamed text can be held
//! back before it) and a grammar that forces a call to one of the tools. A marker that is a
//! control token of the model (Gemma 4's and gpt-oss's are) goes into the grammar as that
//! token ([`Controls`]): the grammar engine never matches control tokens against text, so a
//! literal would be spelled out of ordinary tokens the model never writes there.

use serde_json::{json, Value};

/// A tool-call format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, repeated.
    Hermes,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`.
    Mistral,
    /// `{"name": …, "parameters": {…}}`, optionally after `<|python_tag|>`.
    Llama3,
    /// `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}` (gpt-oss).
    Harmony,
    /// `<|tool_call>call:NAME{key:value,…}<tool_call|>` (Gemma 4).
    Gemma4,
}

/// The model's control tokens by their text: `Some(id)` for a marker that is one.
pub type Controls<'a> = &'a dyn Fn(&str) -> Option<u32>;

/// A Lark expression for `text`: quoted literals, with each of `markers` that is a control
/// token ([`Controls`]) written as llguidance's token reference `<[id]>`.
pub fn lark_text(text: &str, markers: &[&str], controls: Controls) -> String {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let next = markers
            .iter()
            .filter_map(|m| Some((rest.find(m)?, *m, controls(m)?)))
            .min_by_key(|&(at, m, _)| (at, std::cmp::Reverse(m.len())));
        let Some((at, marker, id)) = next else { break };
        if at > 0 {
            parts.push(lark_literal(&rest[..at]));
        }
        parts.push(format!("<[{id}]>"));
        rest = &rest[at + marker.len()..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(lark_literal(rest));
    }
    match parts.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", parts.join(" ")),
    }
}

/// A Lark string literal of `text`.
pub fn lark_literal(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// One call parsed from the text.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: Value,
}

/// The format a chat template teaches, from its source (none: the template takes no tools
/// or uses a format not known here).
pub fn detect(template: &str) -> Option<Format> {
    if !template.contains("tools") {
        return None;
    }
    if super::harmony::detect(template) {
        Some(Format::Harmony)
    } else if template.contains(super::gemma_calls::OPEN) {
        Some(Format::Gemma4)
    } else if template.contains("<tool_call>") {
        Some(Format::Hermes)
    } else if template.contains("[TOOL_CALLS]") {
        Some(Format::Mistral)
    } else if template.contains("<|start_header_id|>") && template.contains("parameters") {
        Some(Format::Llama3)
    } else {
        None
    }
}

impl Format {
    /// Text that starts a call: streamed text that could begin with it is held back.
    pub fn marker(self) -> &'static str {
        match self {
            Format::Hermes => "<tool_call>",
            Format::Mistral => "[TOOL_CALLS]",
            Format::Llama3 => "{\"name\"",
            Format::Harmony => " to=",
            Format::Gemma4 => super::gemma_calls::OPEN,
        }
    }

    /// The markers a call in this format is written with (each a control token in some
    /// models' vocabularies).
    pub fn markers(self) -> &'static [&'static str] {
        use super::{gemma_calls, gemma_thought};
        match self {
            Format::Hermes => &["<tool_call>", "</tool_call>"],
            Format::Mistral => &["[TOOL_CALLS]"],
            Format::Llama3 => &[],
            Format::Harmony => &["<|channel|>", "<|constrain|>", "<|message|>"],
            Format::Gemma4 => &[
                gemma_calls::OPEN,
                gemma_calls::CLOSE,
                gemma_calls::QUOTE,
                gemma_thought::OPEN,
                gemma_thought::CLOSE,
            ],
        }
    }

    /// Whether the reply must be decoded with special tokens rendered, because the markers
    /// of a call may be control tokens (Gemma 4's are; Mistral's `[TOOL_CALLS]` is in its
    /// newer vocabularies), which plain decoding renders as nothing.
    pub fn needs_special_tokens(self) -> bool {
        !self.markers().is_empty()
    }

    /// Splits `text` into the reply's content and its tool calls (none when it has none or
    /// they do not parse: then all of it is content).
    pub fn parse(self, text: &str) -> (String, Vec<Call>) {
        let whole = || (text.to_string(), Vec::new());
        match self {
            Format::Hermes => {
                let mut content = String::new();
                let mut calls = Vec::new();
                let mut rest = text;
                while let Some(start) = rest.find("<tool_call>") {
                    content.push_str(&rest[..start]);
                    let after = &rest[start + "<tool_call>".len()..];
                    let (body, next) = match after.find("</tool_call>") {
                        Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
                        None => (after, ""),
                    };
                    match call(body.trim(), "arguments") {
                        Some(c) => calls.push(c),
                        None => return whole(),
                    }
                    rest = next;
                }
                content.push_str(rest);
                (content.trim().to_string(), calls)
            }
            Format::Mistral => {
                let Some(at) = text.find("[TOOL_CALLS]") else {
                    return whole();
                };
                let list = text[at + "[TOOL_CALLS]".len()..].trim();
                let Ok(Value::Array(items)) = serde_json::from_str::<Value>(list) else {
                    return whole();
                };
                let calls: Option<Vec<Call>> = items
                    .iter()
                    .map(|i| call(&i.to_string(), "arguments"))
                    .collect();
                match calls {
                    Some(c) if !c.is_empty() => (text[..at].trim().to_string(), c),
                    _ => whole(),
                }
            }
            Format::Harmony => {
                let p = super::harmony::parse(text);
                (p.content, p.calls)
            }
            Format::Gemma4 => super::gemma_calls::parse(text).unwrap_or_else(whole),
            Format::Llama3 => {
                let body = text.trim();
                let body = body.strip_prefix("<|python_tag|>").unwrap_or(body).trim();
                match call(body, "parameters").or_else(|| call(body, "arguments")) {
                    Some(c) => (String::new(), vec![c]),
                    None => whole(),
                }
            }
        }
    }

    /// A Lark grammar (llguidance's dialect) for one call to one of `tools` (OpenAI's list:
    /// `{"type": "function", "function": {"name", "parameters"}}`), its arguments valid
    /// against the tool's parameter schema (refused when a schema uses what Gemma 4's
    /// syntax cannot be held to, [`super::gemma_grammar`]); the format's markers that are
    /// control tokens of the model's (`controls`) are written as those tokens.
    pub fn grammar(self, tools: &[&Value], controls: Controls) -> crate::Result<String> {
        let key = match self {
            Format::Llama3 => "parameters",
            Format::Hermes | Format::Mistral => "arguments",
            Format::Harmony => return Ok(harmony_grammar(tools, controls)),
            Format::Gemma4 => {
                return super::gemma_grammar::call_grammar(&functions(tools), controls)
            }
        };
        let one: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = t.get("function").unwrap_or(t);
                let params = f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"}));
                json!({"type": "object",
                       "properties": {"name": {"const": f.get("name").cloned().unwrap_or(Value::Null)},
                                      key: params},
                       "required": ["name", key],
                       "additionalProperties": false})
            })
            .collect();
        let schema = match one.as_slice() {
            [single] => single.clone(),
            _ => json!({"anyOf": one}),
        };
        let text = |t: &str| lark_text(t, self.markers(), controls);
        let start = match self {
            Format::Hermes => format!("{} call {}", text("<tool_call>\n"), text("\n</tool_call>")),
            Format::Mistral => format!("{} call {}", text("[TOOL_CALLS]["), text("]")),
            Format::Llama3 | Format::Harmony | Format::Gemma4 => "call".to_string(),
        };
        let schema = super::json_layout::bounded(schema);
        Ok(format!("start: {start}\ncall: %json {schema}\n"))
    }
}

/// Each tool's function object, name and parameter schema.
fn functions(tools: &[&Value]) -> Vec<(String, Value)> {
    tools
        .iter()
        .map(|t| {
            let f = t.get("function").unwrap_or(t);
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
            let params = f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            (name.to_string(), params)
        })
        .collect()
}

/// One harmony message to one of `tools`, its arguments valid against the tool's schema.
fn harmony_grammar(tools: &[&Value], controls: Controls) -> String {
    let mut rules = Vec::new();
    let mut alternatives = Vec::new();
    for (i, (name, params)) in functions(tools).into_iter().enumerate() {
        let head =
            format!("<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>");
        let head = lark_text(&head, Format::Harmony.markers(), controls);
        let params = super::json_layout::bounded(params);
        rules.push(format!("call{i}: {head} %json {params}"));
        alternatives.push(format!("call{i}"));
    }
    format!(
        "start: {}\n{}\n",
        alternatives.join(" | "),
        rules.join("\n")
    )
}

/// A call from a JSON object with `name` and the arguments under `key`.
fn call(body: &str, key: &str) -> Option<Call> {
    let v: Value = serde_json::from_str(body).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = match v.get(key)? {
        // Some models write the arguments as a JSON string.
        Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    arguments.is_object().then_some(Call { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_calls_are_split_from_the_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = Format::Hermes.parse(text);
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "weather");
        assert_eq!(calls[0].arguments["city"], "Paris");
        // Not a call after all: everything stays content.
        let (content, calls) = Format::Hermes.parse("<tool_call> nope");
        assert_eq!((content.as_str(), calls.len()), ("<tool_call> nope", 0));
    }

    #[test]
    fn mistral_and_llama3_calls_parse() {
        let (c, calls) =
            Format::Mistral.parse("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}}]");
        assert_eq!((c.as_str(), calls[0].name.as_str()), ("", "f"));
        let (_, calls) = Format::Llama3
            .parse("<|python_tag|>{\"name\": \"f\", \"parameters\": \"{\\\"x\\\": 2}\"}");
        assert_eq!(calls[0].arguments["x"], 2);
        let (c, calls) = Format::Llama3.parse("Paris is the capital.");
        assert_eq!((c.as_str(), calls.len()), ("Paris is the capital.", 0));
    }

    #[test]
    fn formats_are_read_from_templates() {
        assert_eq!(
            detect("{% if tools %}<tool_call>{% endif %}"),
            Some(Format::Hermes)
        );
        assert_eq!(
            detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            Some(Format::Mistral)
        );
        assert_eq!(detect("<tool_call> without the variable"), None);
        assert_eq!(
            detect("{% if tools %}<|start|>assistant<|channel|>final<|message|>{% endif %}"),
            Some(Format::Harmony)
        );
        assert_eq!(
            detect("{% if tools %}<|tool_call>call:{% endif %}"),
            Some(Format::Gemma4)
        );
        let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
        assert_eq!(
            Format::Harmony.grammar(&[&tool], &|_| None).unwrap(),
            format!(
                "start: call0\ncall0: \"<|channel|>commentary to=functions.f <|constrain|>json<|message|>\" \
                 %json {}\n",
                json!({"type": "object", "x-guidance": {"whitespace_pattern": super::super::json_layout::WHITESPACE}})
            )
        );
        assert!(Format::Gemma4
            .grammar(&[&tool], &|_| None)
            .unwrap()
            .contains("(\"call:f\" "));
        let g = Format::Hermes
            .grammar(
                &[&json!({"type": "function", "function": {"name": "f"}})],
                &|_| None,
            )
            .unwrap();
        assert!(g.starts_with("start: \"<tool_call>\\n\" call"), "{g}");
        assert!(Format::Llama3
            .grammar(&[&json!({"name": "f"})], &|_| None)
            .unwrap()
            .starts_with("start: call\n"));
    }
}
