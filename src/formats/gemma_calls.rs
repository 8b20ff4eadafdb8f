//! Gemma 4's tool calls, as its chat template teaches them:
//! `<|tool_call>call:NAME{key:value,…}<tool_call|>`, where a value is a string between
//! `<|"|>` quotes, a number, `true`/`false`/`null`, a list `[…]` or a mapping `{key:value}`
//! (keys unquoted). The markers are special tokens: the reply must be decoded with them
//! rendered ([`crate::engine::GenerateParams::render_special`]).

use serde_json::{Map, Number, Value};

use super::tool_calls::Call;

/// Opens a call.
pub const OPEN: &str = "<|tool_call>";
/// Closes a call.
pub const CLOSE: &str = "<tool_call|>";
/// Quotes a string.
pub const QUOTE: &str = "<|\"|>";
/// Deepest nesting of lists and mappings read (the text is the model's, so it is bounded).
const MAX_DEPTH: usize = 32;

/// Splits `text` into the reply's content and its calls; `None` when a call does not parse
/// (then it is no call: the caller keeps all of it as content). Reasoning the model left in
/// the reply (`<|channel>`…`<channel|>`) is not content.
pub fn parse(text: &str) -> Option<(String, Vec<Call>)> {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        content.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let (body, next) = match after.find(CLOSE) {
            Some(end) => (&after[..end], &after[end + CLOSE.len()..]),
            None => (after, ""),
        };
        calls.push(call(body.trim())?);
        rest = next;
    }
    content.push_str(rest);
    Some((without_thought(&content).trim().to_string(), calls))
}

/// `text` without its `<|channel>…<channel|>` blocks.
fn without_thought(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<|channel>") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("<channel|>") {
            Some(end) => &rest[start + end + "<channel|>".len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// One call's body: `call:NAME{…}`.
fn call(body: &str) -> Option<Call> {
    let body = body.strip_prefix("call:")?;
    let brace = body.find('{')?;
    let name = body[..brace].trim();
    if name.is_empty() {
        return None;
    }
    let (arguments, rest) = value(&body[brace..], 0)?;
    (rest.trim().is_empty() && arguments.is_object()).then(|| Call {
        name: name.to_string(),
        arguments,
    })
}

/// The value at the start of `s` and what follows it.
fn value(s: &str, depth: usize) -> Option<(Value, &str)> {
    let s = s.trim_start();
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(rest) = s.strip_prefix(QUOTE) {
        let end = rest.find(QUOTE)?;
        return Some((
            Value::String(rest[..end].to_string()),
            &rest[end + QUOTE.len()..],
        ));
    }
    if let Some(mut rest) = s.strip_prefix('{') {
        let mut map = Map::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                return Some((Value::Object(map), after));
            }
            if !map.is_empty() {
                rest = rest.strip_prefix(',')?.trim_start();
            }
            let colon = rest.find(':')?;
            let key = rest[..colon].trim();
            let key = key
                .strip_prefix(QUOTE)
                .and_then(|k| k.strip_suffix(QUOTE))
                .unwrap_or(key);
            let (v, after) = value(&rest[colon + 1..], depth + 1)?;
            map.insert(key.to_string(), v);
            rest = after;
        }
    }
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(']') {
                return Some((Value::Array(items), after));
            }
            if !items.is_empty() {
                rest = rest.strip_prefix(',')?;
            }
            let (v, after) = value(rest, depth + 1)?;
            items.push(v);
            rest = after;
        }
    }
    for (word, v) in [
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("null", Value::Null),
    ] {
        if let Some(rest) = s.strip_prefix(word) {
            return Some((v, rest));
        }
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(s.len());
    let number: Number = serde_json::from_str(&s[..end]).ok()?;
    Some((Value::Number(number), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_in_gemma4_syntax_become_json_arguments() {
        let text = "Let me look.<|tool_call>call:get_weather{city:<|\"|>Paris, FR<|\"|>,\
                    days:3,exact:false,tags:[<|\"|>a<|\"|>,1.5],opts:{unit:<|\"|>c<|\"|>}}\
                    <tool_call|><|tool_call>call:now{}<tool_call|>";
        let (content, calls) = parse(text).unwrap();
        assert_eq!(content, "Let me look.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(
            calls[0].arguments,
            json!({"city": "Paris, FR", "days": 3, "exact": false,
                   "tags": ["a", 1.5], "opts": {"unit": "c"}})
        );
        assert_eq!(
            (calls[1].name.as_str(), &calls[1].arguments),
            ("now", &json!({}))
        );
    }

    #[test]
    fn text_that_is_no_call_and_reasoning_are_handled() {
        assert_eq!(
            parse("<|channel>thought\nhmm<channel|>Paris."),
            Some(("Paris.".to_string(), vec![]))
        );
        assert_eq!(parse("<|tool_call>call:f{x:<|\"|>open"), None);
        assert_eq!(parse("<|tool_call>nonsense<tool_call|>"), None);
        let deep = format!(
            "<|tool_call>call:f{{x:{}1{}}}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(parse(&deep), None);
    }
}
