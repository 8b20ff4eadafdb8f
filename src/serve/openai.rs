//! OpenAI's API: `POST /v1/chat/completions` and `POST /v1/completions` (whole, or streamed
//! as server-sent events ending in `data: [DONE]`) and `GET /v1/models`. Parameters this
//! server does not implement are refused with a 400 naming them, never ignored.

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::{ApiError, Dialect};
use super::worker::{Event, Finished, Prompt};
use super::{request, Server};
use crate::engine::grammar::Constraint;
use crate::engine::{Message, StopReason};

/// A chat message as clients send it: `content` is a string or a list of parts.
#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// The body of `POST /v1/chat/completions` (and, with `prompt`, of `/v1/completions`).
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    sampling: request::Sampling,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Keys of either body that change nothing here (identification, hints), accepted as is.
const HARMLESS: &[&str] = &[
    "model",
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
];

/// Keys a client may send with their "off" value (`null`, `false`, `none`): refused otherwise.
const OFF_ONLY: &[&str] = &[
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "functions",
    "function_call",
    "echo",
    "best_of",
    "suffix",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "web_search_options",
];

/// Which endpoint a body came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// `POST /v1/chat/completions`.
pub async fn chat(server: Server, body: Result<axum::body::Bytes, ApiError>) -> Response {
    handle(server, body, Kind::Chat).await
}

/// `POST /v1/completions`.
pub async fn completions(server: Server, body: Result<axum::body::Bytes, ApiError>) -> Response {
    handle(server, body, Kind::Completion).await
}

/// `GET /v1/models`.
pub async fn models(server: Server) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": server.model_id(),
            "object": "model",
            "created": server.started_at(),
            "owned_by": "mlcli",
        }],
    }))
    .into_response()
}

async fn handle(server: Server, body: Result<axum::body::Bytes, ApiError>, kind: Kind) -> Response {
    let parsed = body.and_then(|b| parse(&server, &b, kind));
    let (job_prompt, params, stream, include_usage) = match parsed {
        Ok(p) => p,
        Err(e) => return e.respond(Dialect::OpenAi),
    };
    let endpoint = match kind {
        Kind::Chat => "/v1/chat/completions",
        Kind::Completion => "/v1/completions",
    };
    let events = match server.submit(endpoint, job_prompt, params) {
        Ok(rx) => rx,
        Err(e) => return e.respond(Dialect::OpenAi),
    };
    let meta = Meta {
        id: server.next_id(match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        }),
        created: super::now(),
        model: server.model_id().to_string(),
        kind,
    };
    if stream {
        streamed(meta, events, include_usage).await
    } else {
        whole(meta, events).await
    }
}

type Parsed = (Prompt, super::worker::Params, bool, bool);

/// `response_format`: `text` (none), `json_object`, or `json_schema` with its `schema`.
fn response_format(v: Option<&Value>) -> Result<Option<Constraint>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::invalid_param("response_format", why.to_string());
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => {
            let schema = v
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| bad("'json_schema' needs 'json_schema.schema'"))?;
            Ok(Some(Constraint::JsonSchema(schema.clone())))
        }
        _ => Err(bad("'type' must be text, json_object or json_schema")),
    }
}

fn parse(server: &Server, bytes: &[u8], kind: Kind) -> Result<Parsed, ApiError> {
    let body: Body = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not a valid request: {e}")))?;
    for (key, value) in &body.rest {
        if HARMLESS.contains(&key.as_str()) {
            continue;
        }
        let off = matches!(value, Value::Null | Value::Bool(false))
            || value.as_str() == Some("none") && key == "tool_choice"
            || value.as_array().is_some_and(Vec::is_empty);
        if !(OFF_ONLY.contains(&key.as_str()) && off) {
            return Err(ApiError::unsupported(key));
        }
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_param("n", "only n = 1 is supported"));
    }
    let prompt = match kind {
        Kind::Chat => {
            if body.messages.is_empty() {
                return Err(ApiError::invalid_param("messages", "'messages' is empty"));
            }
            let mut messages = Vec::with_capacity(body.messages.len());
            for (i, m) in body.messages.iter().enumerate() {
                let role = match m.role.as_str() {
                    "developer" => "system",
                    r @ ("system" | "user" | "assistant") => r,
                    other => {
                        return Err(ApiError::invalid_param(
                            &format!("messages[{i}].role"),
                            format!(
                            "role '{other}' is not supported (system, developer, user, assistant)"
                        ),
                        ))
                    }
                };
                let text =
                    request::text_content(m.content.as_ref(), &format!("messages[{i}].content"))?;
                messages.push(Message::new(role, text));
            }
            Prompt::Chat(messages)
        }
        Kind::Completion => match &body.prompt {
            Some(Value::String(s)) => Prompt::Text(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
            }
            _ => return Err(ApiError::invalid_param(
                "prompt",
                "'prompt' must be one string (lists of prompts and token ids are not supported)",
            )),
        },
    };
    let max = body.max_completion_tokens.or(body.max_tokens);
    let stop = request::stops(body.stop.as_ref(), "stop")?;
    let params = server.params(&body.sampling, max, stop)?;
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let params = super::worker::Params {
        generate: params,
        constraint: response_format(body.response_format.as_ref())?,
    };
    Ok((prompt, params, body.stream, include_usage))
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::EndOfGeneration | StopReason::StopString | StopReason::Cancelled => "stop",
    }
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.reused_tokens},
    })
}

async fn whole(meta: Meta, mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Failed(e) => return e.respond(Dialect::OpenAi),
            Event::Done(f) => {
                let choice = match meta.kind {
                    Kind::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": null},
                        "logprobs": null,
                        "finish_reason": finish_reason(f.reason),
                    }),
                    Kind::Completion => json!({
                        "index": 0,
                        "text": text,
                        "logprobs": null,
                        "finish_reason": finish_reason(f.reason),
                    }),
                };
                return axum::Json(json!({
                    "id": meta.id,
                    "object": match meta.kind {
                        Kind::Chat => "chat.completion",
                        Kind::Completion => "text_completion",
                    },
                    "created": meta.created,
                    "model": meta.model,
                    "system_fingerprint": null,
                    "choices": [choice],
                    "usage": usage(&f),
                }))
                .into_response();
            }
        }
    }
    ApiError::internal("the engine stopped before finishing").respond(Dialect::OpenAi)
}

async fn streamed(
    meta: Meta,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    // Errors found before the first token are answered with a status, not a stream.
    match events.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return e.respond(Dialect::OpenAi),
        _ => {
            return ApiError::internal("the engine stopped before starting")
                .respond(Dialect::OpenAi)
        }
    }
    let chunk = move |delta: Value, finish: Option<&str>, usage: Option<Value>| {
        let choices = match (meta.kind, &usage) {
            (_, Some(_)) => json!([]),
            (Kind::Chat, None) => {
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
            }
            (Kind::Completion, None) => json!([{
                "index": 0,
                "text": delta.get("content").and_then(Value::as_str).unwrap_or_default(),
                "logprobs": null,
                "finish_reason": finish,
            }]),
        };
        let mut c = json!({
            "id": meta.id,
            "object": match meta.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            },
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        } else if include_usage {
            c["usage"] = Value::Null;
        }
        SseEvent::default().data(c.to_string())
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None, None);
    let rest = super::events_stream(events).flat_map(move |event| {
        let out: Vec<SseEvent> = match event {
            Event::Started { .. } => Vec::new(),
            Event::Text(t) => vec![chunk(json!({"content": t}), None, None)],
            Event::Done(f) => {
                let mut v = vec![chunk(json!({}), Some(finish_reason(f.reason)), None)];
                if include_usage {
                    v.push(chunk(json!({}), None, Some(usage(&f))));
                }
                v.push(SseEvent::default().data("[DONE]"));
                v
            }
            Event::Failed(e) => vec![
                SseEvent::default().data(e.body(Dialect::OpenAi).to_string()),
                SseEvent::default().data("[DONE]"),
            ],
        };
        futures_util::stream::iter(out)
    });
    let stream = futures_util::stream::once(std::future::ready(first))
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream).into_response()
}
