//! What both APIs' request bodies share: sampling fields, message content as a string or a
//! list of text parts, stop strings, and turning them into the engine's parameters within the
//! server's limits.

use serde::Deserialize;
use serde_json::Value;

use super::api_error::ApiError;

/// Sampling fields, by OpenAI's names (Anthropic's are the same where they exist), plus the
/// llama.cpp server's `top_k`, `min_p` and `repeat_penalty`.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The text of a message's `content`: a string, or a list of `{"type": "text", "text": …}`
/// parts joined; anything else (images, audio, files) is refused naming `at`.
pub fn text_content(content: Option<&Value>, at: &str) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid_param(
                            &format!("{at}[{i}]"),
                            format!(
                                "content parts of type {} are not supported (text only)",
                                kind.map_or("(none)".into(), |k| format!("'{k}'"))
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid_param(
            at,
            "content must be a string or a list of text parts",
        )),
    }
}

/// Stop strings: one string or a list of strings (at most 16, none empty).
pub fn stops(stop: Option<&Value>, param: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::invalid_param(param, "stop strings must be strings"))?,
        Some(_) => {
            return Err(ApiError::invalid_param(
                param,
                "must be a string or a list of strings",
            ))
        }
    };
    if list.len() > 16 || list.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            param,
            "at most 16 stop strings, none empty",
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_is_a_string_or_text_parts() {
        let at = "messages[0].content";
        assert_eq!(text_content(Some(&json!("hi")), at).unwrap(), "hi");
        let parts = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(text_content(Some(&parts), at).unwrap(), "ab");
        let image = json!([{"type": "image_url", "image_url": {"url": "x"}}]);
        let e = text_content(Some(&image), at).unwrap_err();
        assert!(e.message.contains("'image_url'"), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    }

    #[test]
    fn stops_are_one_string_or_a_list() {
        assert_eq!(stops(Some(&json!("x")), "stop").unwrap(), ["x"]);
        assert_eq!(stops(Some(&json!(["x", "y"])), "stop").unwrap(), ["x", "y"]);
        assert!(stops(Some(&json!([""])), "stop").is_err());
        assert!(stops(Some(&json!(3)), "stop").is_err());
    }
}
