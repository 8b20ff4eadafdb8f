//! Tool use in Anthropic's Messages API, translated to and from what the rest of the server
//! speaks: `tools` (`name`, `description`, `input_schema`) and `tool_choice` (`auto`, `any`,
//! `tool`, `none`) become OpenAI's, whose forced choices the grammar enforces; `tool_use`
//! blocks of assistant turns become the template's `tool_calls`, `tool_result` blocks become
//! `tool` messages; calls parsed from the reply come back as `tool_use` blocks.

use serde_json::{json, Value};

use super::api_error::ApiError;
use super::request;
use crate::engine::Message;
use crate::formats::tool_calls::Call;

/// Anthropic's `tools` as OpenAI's function tools.
pub fn tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = t.get("name").and_then(Value::as_str);
            let kind = t.get("type").and_then(Value::as_str);
            match (name, kind) {
                (Some(name), None | Some("custom")) => Ok(json!({
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": t.get("description").cloned().unwrap_or(Value::Null),
                        "parameters": t.get("input_schema").cloned()
                            .unwrap_or_else(|| json!({"type": "object"})),
                    },
                })),
                (_, Some(other)) if other != "custom" => Err(ApiError::invalid_param(
                    &format!("tools[{i}].type"),
                    format!("server tools ('{other}') are not supported: only client tools with an input_schema"),
                )),
                _ => Err(ApiError::invalid_param(
                    &format!("tools[{i}]"),
                    "each tool is {\"name\": …, \"description\": …, \"input_schema\": …}",
                )),
            }
        })
        .collect()
}

/// Anthropic's `tool_choice` as OpenAI's.
pub fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    let kind = choice.get("type").and_then(Value::as_str);
    Ok(match kind {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(ApiError::invalid_param(
                    "tool_choice.name",
                    "tool_choice of type 'tool' names the tool",
                ))
            }
        },
        _ => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice is {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}",
            ))
        }
    })
}

/// The messages of one Anthropic turn (`role` and `content` at `at`): text, an assistant's
/// `tool_use` blocks as its `tool_calls`, and each `tool_result` block as a `tool` message
/// (before the turn's own text, as the results answer the previous turn's calls).
pub fn turn(role: &str, content: &Value, at: &str) -> Result<Vec<Message>, ApiError> {
    let Value::Array(blocks) = content else {
        return Ok(vec![Message::new(
            role,
            request::text_content(Some(content), at)?,
        )]);
    };
    let (mut text, mut calls, mut out) = (String::new(), Vec::new(), Vec::new());
    for (i, b) in blocks.iter().enumerate() {
        let here = format!("{at}[{i}]");
        match (role, b.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => {
                text.push_str(&request::text_content(Some(&json!([b])), &here)?);
            }
            ("assistant", Some("tool_use")) => {
                let (Some(id), Some(name)) = (
                    b.get("id").and_then(Value::as_str),
                    b.get("name").and_then(Value::as_str),
                ) else {
                    return Err(ApiError::invalid_param(
                        &here,
                        "a tool_use block has an id and a name",
                    ));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": input}}));
            }
            ("user", Some("tool_result")) => {
                let Some(id) = b.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(ApiError::invalid_param(
                        &here,
                        "a tool_result block has a tool_use_id",
                    ));
                };
                let result = request::text_content(b.get("content"), &format!("{here}.content"))?;
                let mut m = Message::new("tool", result);
                m.extra.insert("tool_call_id".into(), json!(id));
                out.push(m);
            }
            (_, kind) => {
                return Err(ApiError::invalid_param(
                    &here,
                    format!(
                        "content blocks of type {} are not supported in {role} turns",
                        kind.map_or("(none)".into(), |k| format!("'{k}'"))
                    ),
                ))
            }
        }
    }
    if !text.is_empty() || !calls.is_empty() || out.is_empty() {
        let mut m = Message::new(role, text);
        if !calls.is_empty() {
            m.extra.insert("tool_calls".into(), Value::Array(calls));
        }
        out.push(m);
    }
    Ok(out)
}

/// The `tool_use` blocks of `calls`, with ids unique in the reply `reply_id`.
pub fn tool_use_blocks(reply_id: &str, calls: &[Call]) -> Vec<Value> {
    let tail = reply_id.rsplit('_').next().unwrap_or(reply_id);
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"type": "tool_use", "id": format!("toolu_{tail}_{i}"),
                   "name": c.name, "input": c.arguments})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_and_choices_become_openais() {
        let t =
            tools(&[json!({"name": "get_weather", "input_schema": {"type": "object"}})]).unwrap();
        assert_eq!(t[0]["function"]["name"], "get_weather");
        assert_eq!(t[0]["function"]["parameters"]["type"], "object");
        assert!(tools(&[json!({"type": "web_search_20250305", "name": "web_search"})]).is_err());
        assert_eq!(
            tool_choice(&json!({"type": "any"})).unwrap(),
            json!("required")
        );
        assert_eq!(
            tool_choice(&json!({"type": "tool", "name": "f"})).unwrap()["function"]["name"],
            "f"
        );
        assert!(tool_choice(&json!({"type": "tool"})).is_err());
    }

    #[test]
    fn tool_use_and_results_become_messages() {
        let a = turn(
            "assistant",
            &json!([{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}]),
            "messages[1].content",
        )
        .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].extra["tool_calls"][0]["function"]["arguments"]["x"], 1);
        let u = turn(
            "user",
            &json!([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]),
            "messages[2].content",
        )
        .unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].role, "tool");
        assert_eq!(u[0].extra["tool_call_id"], "toolu_1");
        let bad = turn(
            "user",
            &json!([{"type": "tool_use", "id": "a", "name": "f"}]),
            "m",
        );
        assert!(bad.is_err());
    }
}
