//! OpenAI's API: `POST /v1/chat/completions` and `POST /v1/completions` (whole, or streamed
//! as server-sent events ending in `data: [DONE]`) and `GET /v1/models`. Parameters this
//! server does not implement are refused with a 400 naming them, never ignored.

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::{ApiError, Dialect};
use super::logprobs;
use super::tool_stream::{Delta, ReplyStream};
use super::worker::{Event, Finished, Prompt};
use super::{request, Server};
use crate::engine::grammar::Constraint;
use crate::engine::{Message, Reasoning, StopReason};
use crate::formats::tool_calls::{Call, Format};

/// A chat message as clients send it: `content` is a string or a list of parts.
#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Value>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
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
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    /// Chat: `true` for log-probabilities; completions: how many alternatives.
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    top_logprobs: Option<u64>,
    /// How hard a reasoning model thinks (`low`, `medium`, `high`), for templates that read
    /// `reasoning_effort` (gpt-oss's harmony).
    #[serde(default)]
    reasoning_effort: Option<String>,
    /// Variables for the chat template (vLLM's and llama-server's extension); only
    /// `enable_thinking` (Gemma 4's thought channel) is taken.
    #[serde(default)]
    chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// llama-server's and vLLM's extension: keep generating past end-of-generation tokens.
    #[serde(default)]
    ignore_eos: bool,
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
    "logit_bias",
    "functions",
    "function_call",
    "echo",
    "best_of",
    "suffix",
    "modalities",
    "audio",
    "prediction",
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
    let (job_prompt, params, stream, include_usage, tools) = match parsed {
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
        split: match kind {
            Kind::Chat => server.reply_stream(tools),
            Kind::Completion => ReplyStream::new(None, None),
        },
    };
    if stream {
        streamed(meta, events, include_usage).await
    } else {
        whole(meta, events).await
    }
}

type Parsed = (Prompt, super::worker::Params, bool, bool, Option<Format>);

/// The tools the template gets (none for `tool_choice: "none"`) and the grammar that forces a
/// call (`"required"`, or a named function), from OpenAI's `tools` and `tool_choice` (the
/// Anthropic API's are translated to them first).
pub(super) fn tool_choice(
    server: &Server,
    tools: Option<&Vec<Value>>,
    choice: Option<&Value>,
) -> Result<(Option<Vec<Value>>, Option<Constraint>), ApiError> {
    let tools = match tools {
        Some(t) if !t.is_empty() => t,
        _ => {
            return match choice.filter(|c| !c.is_null()) {
                None => Ok((None, None)),
                Some(c) if c.as_str() == Some("none") || c.as_str() == Some("auto") => {
                    Ok((None, None))
                }
                Some(_) => Err(ApiError::invalid_param(
                    "tool_choice",
                    "tool_choice needs tools",
                )),
            };
        }
    };
    for (i, t) in tools.iter().enumerate() {
        let name = t
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        if t.get("type").and_then(Value::as_str) != Some("function") || name.is_none() {
            return Err(ApiError::invalid_param(
                &format!("tools[{i}]"),
                "each tool is {\"type\": \"function\", \"function\": {\"name\": …, \"parameters\": …}}",
            ));
        }
    }
    let choice = choice.filter(|c| !c.is_null());
    if choice.and_then(Value::as_str) == Some("none") {
        return Ok((None, None));
    }
    let Some(format) = server.tool_format() else {
        return Err(ApiError::invalid_param(
            "tools",
            "this model's chat template takes no tools (serve it with --chat-template chatml \
             for Hermes-style tool calls)",
        ));
    };
    let named = |c: &Value| {
        c.get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let forced = match choice {
        None => None,
        Some(c) if c.as_str() == Some("auto") => None,
        Some(c) if c.as_str() == Some("required") => Some(tools.iter().collect::<Vec<_>>()),
        Some(c) => match named(c) {
            Some(name) => {
                let one: Vec<&Value> = tools
                    .iter()
                    .filter(|t| t["function"]["name"].as_str() == Some(name.as_str()))
                    .collect();
                if one.is_empty() {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        format!("no tool named '{name}' among the tools"),
                    ));
                }
                Some(one)
            }
            None => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    "tool_choice is none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
                ))
            }
        },
    };
    let forced = match forced {
        None => None,
        Some(t) => {
            let grammar = format
                .grammar(&t, &|m| server.control(m))
                .map_err(|e| ApiError::invalid_param("tools", e.to_string()))?;
            Some(Constraint::Lark(grammar))
        }
    };
    Ok((Some(tools.clone()), forced))
}

/// `chat_template_kwargs`: `enable_thinking` (a boolean) or nothing; other variables are
/// refused by name (the template's inputs are this server's to set).
fn enable_thinking(
    kwargs: Option<&serde_json::Map<String, Value>>,
) -> Result<Option<bool>, ApiError> {
    let Some(kwargs) = kwargs else {
        return Ok(None);
    };
    if let Some(k) = kwargs.keys().find(|k| *k != "enable_thinking") {
        return Err(ApiError::invalid_param(
            "chat_template_kwargs",
            format!("'{k}' is not taken (only enable_thinking is)"),
        ));
    }
    match kwargs.get("enable_thinking") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(on)) => Ok(Some(*on)),
        Some(_) => Err(ApiError::invalid_param(
            "chat_template_kwargs",
            "enable_thinking must be true or false",
        )),
    }
}

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
    let messages = match kind {
        Kind::Chat => {
            if body.messages.is_empty() {
                return Err(ApiError::invalid_param("messages", "'messages' is empty"));
            }
            let mut messages = Vec::with_capacity(body.messages.len());
            for (i, m) in body.messages.iter().enumerate() {
                let role = match m.role.as_str() {
                    "developer" => "system",
                    r @ ("system" | "user" | "assistant" | "tool") => r,
                    other => {
                        return Err(ApiError::invalid_param(
                            &format!("messages[{i}].role"),
                            format!(
                            "role '{other}' is not supported (system, developer, user, assistant, tool)"
                        ),
                        ))
                    }
                };
                let text =
                    request::text_content(m.content.as_ref(), &format!("messages[{i}].content"))?;
                let mut message = Message::new(role, text);
                if let Some(calls) = m.tool_calls.clone().filter(|c| !c.is_null()) {
                    message.extra.insert("tool_calls".into(), calls);
                }
                if let Some(id) = &m.tool_call_id {
                    message.extra.insert("tool_call_id".into(), json!(id));
                }
                if let Some(name) = &m.name {
                    message.extra.insert("name".into(), json!(name));
                }
                messages.push(message);
            }
            messages
        }
        Kind::Completion => Vec::new(),
    };
    let (tools, forced) = tool_choice(server, body.tools.as_ref(), body.tool_choice.as_ref())?;
    let prompt = match kind {
        Kind::Chat => Prompt::Chat(
            messages,
            tools.as_ref().map(|t| Value::Array(t.clone())),
            Reasoning {
                effort: body.reasoning_effort.clone(),
                thinking: enable_thinking(body.chat_template_kwargs.as_ref())?,
            },
        ),
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
    let mut params = server.params(&body.sampling, max, stop)?;
    params.ignore_eos = body.ignore_eos;
    params.logprobs = match kind {
        Kind::Chat => logprobs::chat_request(body.logprobs.as_ref(), body.top_logprobs)?,
        Kind::Completion => logprobs::completion_request(body.logprobs.as_ref())?,
    };
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let format = response_format(body.response_format.as_ref())?;
    if format.is_some() && forced.is_some() {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "a forced tool call and a response_format cannot both hold the output",
        ));
    }
    let params = super::worker::Params {
        generate: params,
        constraint: forced.or(format),
    };
    let tool_format = tools.as_ref().and(server.tool_format());
    let mut params = params;
    params.generate.render_special = kind == Kind::Chat && server.render_special(tool_format);
    Ok((prompt, params, body.stream, include_usage, tool_format))
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    /// How the reply splits into reasoning, text and tool calls (chat only).
    split: ReplyStream,
}

/// OpenAI's `tool_calls` for `calls` (arguments as JSON text), with ids unique in the reply.
fn tool_calls_json(id: &str, calls: &[Call]) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": format!("call_{}_{i}", id.rsplit('-').next().unwrap_or(id)),
                   "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments.to_string()}})
        })
        .collect()
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
    let Meta {
        id,
        created,
        model,
        kind,
        split,
    } = meta;
    let (mut text, mut lps, mut wants_lps) = (String::new(), Vec::new(), false);
    while let Some(event) = events.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Logprobs(l) => {
                wants_lps = true;
                lps.extend(l);
            }
            Event::Failed(e) => return e.respond(Dialect::OpenAi),
            Event::Done(f) => {
                let (reasoning, content, calls) = split.split(text);
                let mut choice = match kind {
                    Kind::Chat if !calls.is_empty() => json!({
                        "index": 0,
                        "message": {"role": "assistant",
                                    "content": if content.is_empty() { Value::Null } else { json!(content) },
                                    "tool_calls": tool_calls_json(&id, &calls),
                                    "refusal": null},
                        "logprobs": null,
                        "finish_reason": "tool_calls",
                    }),
                    Kind::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": null},
                        "logprobs": if wants_lps { logprobs::chat(&lps) } else { Value::Null },
                        "finish_reason": finish_reason(f.reason),
                    }),
                    Kind::Completion => json!({
                        "index": 0,
                        "text": content,
                        "logprobs": if wants_lps { logprobs::completion(&lps, 0) } else { Value::Null },
                        "finish_reason": finish_reason(f.reason),
                    }),
                };
                // llama-server's field for reasoning kept apart from the reply.
                if !reasoning.is_empty() && kind == Kind::Chat {
                    choice["message"]["reasoning_content"] = json!(reasoning);
                }
                return axum::Json(json!({
                    "id": id,
                    "object": match kind {
                        Kind::Chat => "chat.completion",
                        Kind::Completion => "text_completion",
                    },
                    "created": created,
                    "model": model,
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
    mut meta: Meta,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    let call_ids = meta.id.clone();
    let mut split = std::mem::replace(&mut meta.split, ReplyStream::new(None, None));
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
                let lp = delta.get("logprobs").cloned().unwrap_or(Value::Null);
                let mut delta = delta;
                if let Some(d) = delta.as_object_mut() {
                    d.remove("logprobs");
                }
                json!([{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}])
            }
            (Kind::Completion, None) => json!([{
                "index": 0,
                "text": delta.get("content").and_then(Value::as_str).unwrap_or_default(),
                "logprobs": delta.get("logprobs").cloned().unwrap_or(Value::Null),
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
    // With tools, text that may start a call is held back; once a call starts, the rest is
    // kept and sent as tool-call deltas at the end (never as content).
    let mut streamed_bytes = 0usize;
    let delta = |d: Delta| match d {
        Delta::Text(t) => json!({"content": t}),
        Delta::Reasoning(t) => json!({"reasoning_content": t}),
    };
    let rest = super::events_stream(events).flat_map(move |event| {
        let out: Vec<SseEvent> = match event {
            Event::Started { .. } => Vec::new(),
            // Log-probabilities go in a chunk of their own (no text: the text of their tokens
            // may be held back for stop strings or tool calls).
            Event::Logprobs(l) => {
                let lp = match meta.kind {
                    Kind::Chat => logprobs::chat(&l),
                    Kind::Completion => {
                        let lp = logprobs::completion(&l, streamed_bytes);
                        streamed_bytes += l.iter().map(|e| e.chosen.bytes.len()).sum::<usize>();
                        lp
                    }
                };
                vec![chunk(json!({"content": "", "logprobs": lp}), None, None)]
            }
            Event::Text(t) => split
                .push(t)
                .into_iter()
                .map(|d| chunk(delta(d), None, None))
                .collect(),
            Event::Done(f) => {
                let mut v = Vec::new();
                let mut finish = finish_reason(f.reason);
                let (deltas, calls) = split.finish();
                v.extend(deltas.into_iter().map(|d| chunk(delta(d), None, None)));
                for (i, mut call) in tool_calls_json(&call_ids, &calls).into_iter().enumerate() {
                    call["index"] = json!(i);
                    v.push(chunk(json!({"tool_calls": [call]}), None, None));
                    finish = "tool_calls";
                }
                v.push(chunk(json!({}), Some(finish), None));
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
