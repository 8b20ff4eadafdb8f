//! `mlcli serve`: the engine behind an OpenAI- and Anthropic-compatible HTTP server. Requests
//! wait in a bounded queue for the engine's thread, which decodes up to `--parallel` of them
//! together ([`worker`]) with the engine's prefix reuse (a resent conversation prefills only
//! what is new); safe by default: loopback only unless an API key is set, bounded bodies and
//! replies, no CORS, and a clean shutdown on SIGTERM or Ctrl+C that cancels the requests in
//! flight.

pub mod anthropic;
pub mod anthropic_tools;
pub mod api_error;
pub mod logprobs;
pub mod openai;
pub mod request;
pub mod tool_stream;
pub mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc;

use crate::engine::{Engine, GenerateParams};
use api_error::{ApiError, Dialect};
use worker::{Event, Job, Prompt};

/// How to serve.
#[derive(Clone, Debug)]
pub struct Options {
    /// Host name or address to bind.
    pub host: String,
    /// Port (0: any free one; the address bound is printed).
    pub port: u16,
    /// Required from clients when set (`Authorization: Bearer KEY` or `x-api-key: KEY`).
    pub api_key: Option<String>,
    /// Requests that may wait for the engine; more are answered 503.
    pub queue: usize,
    /// Largest request body, in bytes (413 above it).
    pub max_body: usize,
    /// Sampling and limits when a request does not say (the model's recommendations).
    pub defaults: GenerateParams,
    /// The model's name in responses and `/v1/models`.
    pub model_id: String,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding beyond loopback without a key: anyone on the network could use the model.
    #[error(
        "refusing to serve on {host} without --api-key: that address is reachable from other \
         machines (use --host 127.0.0.1, or set --api-key)"
    )]
    OpenWithoutKey {
        /// The host asked for.
        host: String,
    },
    /// The address does not resolve or cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime failed.
    #[error("server runtime: {0}")]
    Runtime(std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub struct Server(Arc<Inner>);

struct Inner {
    jobs: mpsc::Sender<Job>,
    queue: usize,
    defaults: GenerateParams,
    ctx_size: usize,
    model_id: String,
    started_at: u64,
    ids: AtomicU64,
    api_key: Option<String>,
    tool_format: Option<crate::formats::tool_calls::Format>,
    /// Of the tool format's markers, those that are control tokens of the model, by text.
    controls: Vec<(&'static str, u32)>,
    /// The reasoning format the model writes (gpt-oss's harmony, Gemma 4's thought
    /// channel): replies are split into reasoning and answer.
    reasoning: Option<crate::formats::reasoning::Format>,
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Server {
    /// Queues a job; its events arrive on the returned receiver (dropping it cancels).
    pub fn submit(
        &self,
        endpoint: &'static str,
        prompt: Prompt,
        params: worker::Params,
    ) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
        let (events, rx) = mpsc::unbounded_channel();
        let job = Job {
            endpoint,
            prompt,
            params,
            events,
        };
        match self.0.jobs.try_send(job) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ApiError::unavailable(format!(
                "the server is busy: {} requests are waiting (--queue); try again shortly",
                self.0.queue
            ))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(ApiError::unavailable("the server is shutting down"))
            }
        }
    }

    /// A request's parameters: its sampling fields over the server's defaults, checked; its
    /// reply limit, which may not exceed the context.
    pub fn params(
        &self,
        s: &request::Sampling,
        max_tokens: Option<u64>,
        stop: Vec<String>,
    ) -> Result<GenerateParams, ApiError> {
        let mut p = self.0.defaults.clone();
        let q = &mut p.sampling;
        q.temperature = s.temperature.unwrap_or(q.temperature);
        q.top_p = s.top_p.unwrap_or(q.top_p);
        q.top_k = s.top_k.unwrap_or(q.top_k);
        q.min_p = s.min_p.unwrap_or(q.min_p);
        q.repeat_penalty = s.repeat_penalty.unwrap_or(q.repeat_penalty);
        q.presence_penalty = s.presence_penalty.unwrap_or(q.presence_penalty);
        q.frequency_penalty = s.frequency_penalty.unwrap_or(q.frequency_penalty);
        q.seed = s.seed.unwrap_or_else(crate::engine::settings::clock_seed);
        q.validate().map_err(|e| {
            let param = match e.name {
                "temp" => "temperature",
                other => other,
            };
            ApiError::invalid_param(param, e.to_string())
        })?;
        if let Some(m) = max_tokens {
            let ctx = self.0.ctx_size;
            let m = usize::try_from(m)
                .ok()
                .filter(|&m| m <= ctx)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "max_tokens",
                        format!("max_tokens {m} exceeds the server's context of {ctx} tokens"),
                    )
                })?;
            p.max_tokens = Some(m);
        }
        p.stop.extend(stop);
        Ok(p)
    }

    /// A fresh response id: `prefix-` and 24 hex digits.
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.0.ids.fetch_add(1, Ordering::Relaxed);
        format!(
            "{prefix}-{:08x}{:016x}",
            self.0.started_at as u32,
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
    }

    /// The model's name.
    pub fn model_id(&self) -> &str {
        &self.0.model_id
    }

    /// The tool-call format the model's chat template teaches, if it takes tools.
    pub fn tool_format(&self) -> Option<crate::formats::tool_calls::Format> {
        self.0.tool_format
    }

    /// The id of the control token that is the tool format's marker `text`, if it is one
    /// (grammars write such markers as tokens).
    pub fn control(&self, text: &str) -> Option<u32> {
        self.0
            .controls
            .iter()
            .find_map(|&(m, id)| (m == text).then_some(id))
    }

    /// How a reply to a chat request is split as it streams: into reasoning and answer for
    /// a model that writes a reasoning format, and into text and calls in `tools` (the
    /// request's format).
    pub fn reply_stream(
        &self,
        tools: Option<crate::formats::tool_calls::Format>,
    ) -> tool_stream::ReplyStream {
        tool_stream::ReplyStream::new(tools, self.0.reasoning)
    }

    /// Whether a chat reply given tools in `tools`' format must be decoded with special
    /// tokens rendered (its call or channel markers may be special tokens).
    pub fn render_special(&self, tools: Option<crate::formats::tool_calls::Format>) -> bool {
        use crate::formats::{reasoning, tool_calls};
        tools.is_some_and(tool_calls::Format::needs_special_tokens)
            || self
                .0
                .reasoning
                .is_some_and(reasoning::Format::needs_special_tokens)
    }

    /// When the server started (Unix seconds).
    pub fn started_at(&self) -> u64 {
        self.0.started_at
    }
}

/// Serves `engine` until SIGTERM or Ctrl+C; `on_listening` hears the bound address once the
/// server accepts connections.
pub fn run(
    engine: Engine,
    opts: Options,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let addrs: Vec<SocketAddr> = (opts.host.as_str(), opts.port)
        .to_socket_addrs()
        .map_err(|source| Error::Bind {
            addr: format!("{}:{}", opts.host, opts.port),
            source,
        })?
        .collect();
    if opts.api_key.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(Error::OpenWithoutKey { host: opts.host });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (jobs, queue) = mpsc::channel(opts.queue.max(1));
    let tool_format = crate::formats::tool_calls::detect(engine.template().source());
    let tokenizer = engine.tokenizer();
    let controls = tool_format
        .map_or(&[][..], |f| f.markers())
        .iter()
        .filter_map(|&m| {
            let id = tokenizer.token_id(m)?;
            tokenizer.is_control(id).then_some((m, id))
        })
        .collect();
    let server = Server(Arc::new(Inner {
        jobs,
        queue: opts.queue.max(1),
        ctx_size: engine.ctx_size(),
        defaults: opts.defaults.clone(),
        model_id: opts.model_id.clone(),
        started_at: now(),
        ids: AtomicU64::new(1),
        api_key: opts.api_key.clone(),
        tool_format,
        controls,
        reasoning: crate::formats::reasoning::detect(engine.template().source()),
    }));
    let engine_stop = Arc::clone(&stopping);
    let engine_thread = std::thread::Builder::new()
        .name("mlcli-engine".into())
        .spawn(move || worker::run(engine, queue, engine_stop))
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addrs.as_slice())
            .await
            .map_err(|source| Error::Bind {
                addr: format!("{}:{}", opts.host, opts.port),
                source,
            })?;
        let bound = listener.local_addr().map_err(Error::Runtime)?;
        on_listening(bound);
        let app = router(server, opts.max_body);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(stopping))
            .await
            .map_err(Error::Runtime)
    });
    // The router (and its queue sender) is gone: the engine thread ends after its job.
    let _ = engine_thread.join();
    result
}

/// Waits for SIGTERM or Ctrl+C, then cancels the requests in flight and refuses queued ones,
/// so open streams end promptly and the server exits.
async fn shutdown_signal(stopping: Arc<AtomicBool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("mlcli serve: shutting down (the requests in flight are cancelled)");
    stopping.store(true, Ordering::SeqCst);
}

/// A job's events as a stream (ends when the engine is done with the job).
pub(crate) fn events_stream(
    rx: mpsc::UnboundedReceiver<Event>,
) -> impl futures_util::Stream<Item = Event> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

/// A body, or the error for a body that could not be read (too large: 413).
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        let status = r.status();
        let mut e = ApiError::invalid(r.body_text());
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.status = status;
            e.message = "the request body is larger than the server accepts (--max-body)".into();
        }
        e
    })
}

fn router(server: Server, max_body: usize) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(s): State<Server>, b: Result<Bytes, BytesRejection>| async move {
                    openai::chat(s, body(b)).await
                },
            ),
        )
        .route(
            "/v1/completions",
            post(
                |State(s): State<Server>, b: Result<Bytes, BytesRejection>| async move {
                    openai::completions(s, body(b)).await
                },
            ),
        )
        .route(
            "/v1/models",
            get(|State(s): State<Server>| async move { openai::models(s).await }),
        )
        .route(
            "/v1/messages",
            post(
                |State(s): State<Server>, b: Result<Bytes, BytesRejection>| async move {
                    anthropic::messages(s, body(b)).await
                },
            ),
        )
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(uri.path()).respond(Dialect::OpenAi)
        })
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authorize,
        ))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(server)
}

/// Lets a request through when the server has no key or the request carries it.
async fn authorize(
    State(s): State<Server>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = &s.0.api_key else {
        return next.run(req).await;
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if bearer == Some(key.as_str()) || x_api_key == Some(key.as_str()) {
        return next.run(req).await;
    }
    let dialect = if req.uri().path() == "/v1/messages" {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    ApiError::unauthorized().respond(dialect).into_response()
}
