//! Anthropic's Messages API: `POST /v1/messages`, whole or streamed as Anthropic streams it
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`…,
//! `content_block_stop`, `message_delta`, `message_stop`), with client tools
//! ([`super::anthropic_tools`]: `tool_use` blocks out, `tool_result` blocks in), and a
//! reasoning model's thought in `thinking` blocks (`thinking` switches it for templates that
//! read `enable_thinking`). Parameters this server does not implement (images, server tools)
//! are refused with a 400 naming them.

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::anthropic_tools;
use super::api_error::{ApiError, Dialect};
use super::tool_stream::{Delta, ReplyStream};
use super::worker::{Event, Prompt};
use super::{request, Server};
use crate::engine::{Reasoning, StopReason};
use crate::formats::tool_calls::Format;

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct Body {
    messages: Vec<InMessage>,
    max_tokens: u64,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    /// `{"type": "enabled", "budget_tokens": N}` or `{"type": "disabled"}`: the chat
    /// template's `enable_thinking` (Gemma 4's thought channel).
    #[serde(default)]
    thinking: Option<Value>,
    #[serde(flatten)]
    sampling: request::Sampling,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Keys that change nothing here, accepted as they are.
const HARMLESS: &[&str] = &["model", "metadata", "service_tier"];

/// `POST /v1/messages`.
pub async fn messages(server: Server, body: Result<axum::body::Bytes, ApiError>) -> Response {
    let parsed = body.and_then(|b| parse(&server, &b));
    let (prompt, params, stream, tools) = match parsed {
        Ok(p) => p,
        Err(e) => return e.respond(Dialect::Anthropic),
    };
    let events = match server.submit("/v1/messages", prompt, params) {
        Ok(rx) => rx,
        Err(e) => return e.respond(Dialect::Anthropic),
    };
    let id = server.next_id("msg");
    let model = server.model_id().to_string();
    let split = server.reply_stream(tools);
    let reply = Reply { id, model, split };
    if stream {
        streamed(reply, events).await
    } else {
        whole(reply, events).await
    }
}

/// `thinking`: enabled or disabled (none: the template's default). Its `budget_tokens` must be
/// below `max_tokens`, as Anthropic requires; thought is not budgeted apart from the answer
/// (`max_tokens` bounds both).
fn thinking(v: Option<&Value>, max_tokens: u64) -> Result<Option<bool>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(Some(false)),
        Some("enabled") => match v.get("budget_tokens").and_then(Value::as_u64) {
            Some(b) if b < max_tokens => Ok(Some(true)),
            _ => Err(ApiError::invalid_param(
                "thinking.budget_tokens",
                "budget_tokens must be a whole number below max_tokens",
            )),
        },
        _ => Err(ApiError::invalid_param(
            "thinking",
            "thinking is {\"type\": \"enabled\", \"budget_tokens\": N} or {\"type\": \"disabled\"}",
        )),
    }
}

/// What a reply is named and how its text is read.
struct Reply {
    id: String,
    model: String,
    /// How the text splits into reasoning, text and tool calls.
    split: ReplyStream,
}

type Parsed = (Prompt, super::worker::Params, bool, Option<Format>);

fn parse(server: &Server, bytes: &[u8]) -> Result<Parsed, ApiError> {
    let body: Body = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not a valid request: {e}")))?;
    if let Some(key) = body
        .rest
        .iter()
        .find(|(k, v)| !HARMLESS.contains(&k.as_str()) && !v.is_null())
        .map(|(k, _)| k)
    {
        return Err(ApiError::unsupported(key));
    }
    // Not fields of Anthropic's API: refused by name rather than honoured silently.
    for (given, name) in [
        (body.sampling.presence_penalty.is_some(), "presence_penalty"),
        (
            body.sampling.frequency_penalty.is_some(),
            "frequency_penalty",
        ),
    ] {
        if given {
            return Err(ApiError::unsupported(name));
        }
    }
    let mut messages = Vec::with_capacity(body.messages.len() + 1);
    if let Some(system) = &body.system {
        let text = request::text_content(Some(system), "system")?;
        messages.push(crate::engine::Message::new("system", text));
    }
    if body.messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "'messages' is empty"));
    }
    for (i, m) in body.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "user" | "assistant") {
            return Err(ApiError::invalid_param(
                &format!("messages[{i}].role"),
                format!("role '{}' is not one of user, assistant", m.role),
            ));
        }
        let at = format!("messages[{i}].content");
        messages.extend(anthropic_tools::turn(&m.role, &m.content, &at)?);
    }
    let tools = body
        .tools
        .as_deref()
        .map(anthropic_tools::tools)
        .transpose()?;
    let choice = body
        .tool_choice
        .as_ref()
        .map(anthropic_tools::tool_choice)
        .transpose()?;
    let (tools, forced) = super::openai::tool_choice(server, tools.as_ref(), choice.as_ref())?;
    let stop = request::stops(body.stop_sequences.as_ref(), "stop_sequences")?;
    let mut params = server.params(&body.sampling, Some(body.max_tokens), stop)?;
    let format = tools.as_ref().and(server.tool_format());
    params.render_special = server.render_special(format);
    let reasoning = Reasoning {
        effort: None,
        thinking: thinking(body.thinking.as_ref(), body.max_tokens)?,
    };
    let params = super::worker::Params {
        generate: params,
        constraint: forced,
    };
    Ok((
        Prompt::Chat(messages, tools.map(Value::Array), reasoning),
        params,
        body.stream,
        format,
    ))
}

fn stop_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "max_tokens",
        StopReason::StopString => "stop_sequence",
        StopReason::EndOfGeneration | StopReason::Cancelled => "end_turn",
    }
}

async fn whole(reply: Reply, mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Response {
    let Reply { id, model, split } = reply;
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Started { .. } | Event::Logprobs(_) => {}
            Event::Text(t) => text.push_str(&t),
            Event::Failed(e) => return e.respond(Dialect::Anthropic),
            Event::Done(f) => {
                let (reasoning, content, calls) = split.split(text);
                let mut blocks = Vec::new();
                if !reasoning.is_empty() {
                    blocks
                        .push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
                }
                if !content.is_empty() || calls.is_empty() {
                    blocks.push(json!({"type": "text", "text": content}));
                }
                blocks.extend(anthropic_tools::tool_use_blocks(&id, &calls));
                let reason = match calls.is_empty() {
                    true => stop_reason(f.reason),
                    false => "tool_use",
                };
                return axum::Json(json!({
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": reason,
                    "stop_sequence": f.stop_string,
                    "usage": {
                        "input_tokens": f.prompt_tokens,
                        "output_tokens": f.completion_tokens,
                        "cache_read_input_tokens": f.reused_tokens,
                    },
                }))
                .into_response();
            }
        }
    }
    ApiError::internal("the engine stopped before finishing").respond(Dialect::Anthropic)
}

fn event(kind: &str, data: Value) -> SseEvent {
    SseEvent::default().event(kind).data(data.to_string())
}

/// An event whose name is its data's `type` (as all of Anthropic's are).
fn typed(data: Value) -> SseEvent {
    let kind = data["type"].as_str().unwrap_or_default().to_string();
    event(&kind, data)
}

/// The content blocks of a streamed message: one open at a time, numbered in order, each of
/// the kind of the delta it carries (`thinking` for reasoning, `text`). Its methods give the
/// events' data ([`typed`] makes them events).
struct Blocks {
    open: Option<&'static str>,
    next: usize,
    wrote_text: bool,
}

impl Blocks {
    /// Events that put `delta` in a block of its kind, closing the last and opening one when
    /// the kind changes.
    fn delta(&mut self, delta: Delta) -> Vec<Value> {
        let (kind, field, delta_kind, text) = match delta {
            Delta::Text(t) => ("text", "text", "text_delta", t),
            Delta::Reasoning(t) => ("thinking", "thinking", "thinking_delta", t),
        };
        let mut v = Vec::new();
        if self.open != Some(kind) {
            v.extend(self.close());
            v.push(self.start(kind));
        }
        self.wrote_text |= kind == "text";
        v.push(
            json!({"type": "content_block_delta", "index": self.next - 1,
                      "delta": {"type": delta_kind, field: text}}),
        );
        v
    }

    /// Opens a block of `kind` (empty).
    fn start(&mut self, kind: &'static str) -> Value {
        let block = match kind {
            "thinking" => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        self.open = Some(kind);
        self.next += 1;
        json!({"type": "content_block_start", "index": self.next - 1, "content_block": block})
    }

    /// Closes the open block, if any.
    fn close(&mut self) -> Option<Value> {
        self.open
            .take()
            .map(|_| json!({"type": "content_block_stop", "index": self.next - 1}))
    }
}

async fn streamed(
    reply: Reply,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Response {
    let Reply {
        id,
        model,
        mut split,
    } = reply;
    let prompt_tokens = match events.recv().await {
        Some(Event::Started { prompt_tokens }) => prompt_tokens,
        Some(Event::Failed(e)) => return e.respond(Dialect::Anthropic),
        _ => {
            return ApiError::internal("the engine stopped before starting")
                .respond(Dialect::Anthropic)
        }
    };
    let mut blocks = Blocks {
        open: None,
        next: 0,
        wrote_text: false,
    };
    let mut head = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
        }}),
    )];
    // A reply that may begin with reasoning opens its first block when that comes.
    if !split.may_reason() {
        head.push(typed(blocks.start("text")));
        blocks.wrote_text = true;
    }
    head.push(event("ping", json!({"type": "ping"})));
    // Text that may start a call is held back; once a call starts, the rest is kept and sent
    // as tool_use blocks at the end (never as text).
    let rest = super::events_stream(events).flat_map(move |e| {
        let out = match e {
            Event::Started { .. } | Event::Logprobs(_) => Vec::new(),
            Event::Text(t) => split
                .push(t)
                .into_iter()
                .flat_map(|d| blocks.delta(d))
                .map(typed)
                .collect(),
            Event::Done(f) => {
                let (deltas, calls) = split.finish();
                let mut data: Vec<Value> =
                    deltas.into_iter().flat_map(|d| blocks.delta(d)).collect();
                if calls.is_empty() && !blocks.wrote_text {
                    data.extend(blocks.close());
                    data.push(blocks.start("text"));
                }
                data.extend(blocks.close());
                let mut v: Vec<SseEvent> = data.into_iter().map(typed).collect();
                for mut block in anthropic_tools::tool_use_blocks(&id, &calls) {
                    let input = block["input"].take();
                    block["input"] = json!({});
                    let index = blocks.next;
                    blocks.next += 1;
                    v.push(event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                               "content_block": block}),
                    ));
                    v.push(event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta",
                                         "partial_json": input.to_string()}}),
                    ));
                    v.push(event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index}),
                    ));
                }
                let reason = match calls.is_empty() {
                    true => stop_reason(f.reason),
                    false => "tool_use",
                };
                v.push(event(
                    "message_delta",
                    json!({"type": "message_delta",
                           "delta": {"stop_reason": reason, "stop_sequence": f.stop_string},
                           "usage": {"output_tokens": f.completion_tokens}}),
                ));
                v.push(event("message_stop", json!({"type": "message_stop"})));
                v
            }
            Event::Failed(err) => vec![event("error", err.body(Dialect::Anthropic))],
        };
        futures_util::stream::iter(out)
    });
    let stream = futures_util::stream::iter(head)
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_streams_in_a_thinking_block_before_the_text_block() {
        let mut b = Blocks {
            open: None,
            next: 0,
            wrote_text: false,
        };
        let mut data = Vec::new();
        for d in [
            Delta::Reasoning("Hm, ".into()),
            Delta::Reasoning("easy.".into()),
            Delta::Text("Paris.".into()),
        ] {
            data.extend(b.delta(d));
        }
        data.extend(b.close());
        let kinds: Vec<(String, u64)> = data
            .iter()
            .map(|v| {
                (
                    v["type"].as_str().unwrap().to_string(),
                    v["index"].as_u64().unwrap(),
                )
            })
            .collect();
        let expect = [
            ("content_block_start", 0),
            ("content_block_delta", 0),
            ("content_block_delta", 0),
            ("content_block_stop", 0),
            ("content_block_start", 1),
            ("content_block_delta", 1),
            ("content_block_stop", 1),
        ];
        assert_eq!(kinds, expect.map(|(k, i)| (k.to_string(), i)).to_vec());
        assert_eq!(data[0]["content_block"]["type"], "thinking");
        assert_eq!(
            data[2]["delta"],
            json!({"type": "thinking_delta", "thinking": "easy."})
        );
        assert_eq!(data[4]["content_block"]["type"], "text");
        assert_eq!(
            data[5]["delta"],
            json!({"type": "text_delta", "text": "Paris."})
        );
        assert_eq!(b.next, 2, "tool_use blocks follow at index 2");
    }
}
