//! Hugging Face–compatible chat-template rendering: compiles a model's Jinja `chat_template`
//! once and renders conversations exactly as transformers' `apply_chat_template` does.
//!
//! HF renders with jinja2 (`trim_blocks`, `lstrip_blocks`, no trailing newline kept, the
//! default lenient `Undefined`), a JSON `tojson` that keeps key order and escapes no HTML, and
//! the globals `raise_exception` and `strftime_now`. This module reproduces that on minijinja,
//! with Python's string/dict methods from minijinja-contrib and Python's `str()` for output.

mod budget;
mod builtin;
mod limits;
mod python;
mod strftime;

pub use budget::BudgetAllocator;
pub use builtin::{builtin, builtin_names, BUILTIN};
pub use limits::Limits;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use minijinja::{context, AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use crate::formats::untrusted;

/// Name under which the one template lives in its environment (no extension: no escaping).
const NAME: &str = "chat_template";

/// Stack of the rendering thread: minijinja bounds recursion at 500 levels, each of which may
/// take several kilobytes (the default 2 MiB of a spawned thread is not enough for all).
const RENDER_STACK: usize = 16 << 20;

/// Longest message from a template (its `raise_exception` text, a parser's excerpt) that errors
/// repeat.
const MAX_MESSAGE: usize = 300;

/// Where a template came from, for errors: a template is code, and the user must know whose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The model's own files (GGUF `tokenizer.chat_template`, `tokenizer_config.json`,
    /// `chat_template.jinja`).
    Model,
    /// A template shipped in `assets/templates/`.
    Builtin(&'static str),
    /// A file the user named (`--chat-template FILE`).
    File(PathBuf),
    /// The user's `--chat-template`, where its file name is no longer known.
    User,
    /// The caller did not say.
    Unnamed,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Model => f.write_str("the model's chat template"),
            Origin::Builtin(name) => write!(f, "the built-in chat template '{name}'"),
            Origin::File(path) => write!(
                f,
                "the chat template {}",
                untrusted::short(&path.display().to_string())
            ),
            Origin::User => f.write_str("the --chat-template template"),
            Origin::Unnamed => f.write_str("the chat template"),
        }
    }
}

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template text is not valid Jinja.
    #[error("{origin} does not compile{}: {message}", at_line(*.line))]
    Syntax {
        /// Where the template came from.
        origin: Origin,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What the parser expected and found.
        message: String,
    },
    /// The template called `raise_exception(message)`, usually to reject a conversation shape.
    #[error("{origin} rejected the conversation: {message}")]
    Raised {
        /// Where the template came from.
        origin: Origin,
        /// The template's own message (control characters escaped, long ones cut).
        message: String,
    },
    /// Rendering failed for another reason (a bad operation, attribute of an undefined value…).
    #[error("{origin} failed to render{}: {message}", at_line(*.line))]
    Render {
        /// Where the template came from.
        origin: Origin,
        /// 1-based line where rendering stopped, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
    /// Compiling or rendering went past one of its [`Limits`]: a loop without end, a string
    /// doubled until it fills memory. Templates are code from the model file, so their cost
    /// is bounded.
    #[error(
        "{origin} was stopped: it {what}; a chat template that needs more is broken or hostile{}",
        replace_hint(origin)
    )]
    Limit {
        /// Where the template came from.
        origin: Origin,
        /// What it went past, and when (`ran more than 2000000 instructions, the bound for a
        /// conversation of 3 messages`).
        what: String,
    },
}

/// How to get past a broken template that is not the user's own.
fn replace_hint(origin: &Origin) -> &'static str {
    match origin {
        Origin::User | Origin::File(_) => "",
        Origin::Model | Origin::Builtin(_) | Origin::Unnamed => " (--chat-template replaces it)",
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|n| format!(" at line {n}")).unwrap_or_default()
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Who speaks: `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// What they say.
    pub content: String,
    /// Anything else a template reads: an assistant turn's `tool_calls`, a tool result's
    /// `tool_call_id` and `name` (empty for plain messages).
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    /// A message from `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }
}

/// Per-render inputs besides the messages, named as HF passes them to the template.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions<'a> {
    /// End with the opening of an assistant turn, so the model answers next.
    pub add_generation_prompt: bool,
    /// The tokenizer's BOS token text (`""` when it has none).
    pub bos_token: &'a str,
    /// The tokenizer's EOS token text (`""` when it has none).
    pub eos_token: &'a str,
    /// The tools the model may call (OpenAI's `tools` list), for templates that take them.
    pub tools: Option<&'a serde_json::Value>,
    /// How hard the model should think (`low`, `medium`, `high`), for templates that read
    /// `reasoning_effort` (gpt-oss's harmony); unset, the template's own default holds.
    pub reasoning_effort: Option<&'a str>,
    /// Whether the model thinks before answering, for templates that read `enable_thinking`
    /// (Gemma 4's, Qwen3's); unset, the template's own default holds.
    pub enable_thinking: Option<bool>,
}

/// A compiled chat template; compile once, render from any thread.
pub struct ChatTemplate {
    source: String,
    origin: Origin,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error comes back as [`Error::Syntax`] with its line. The
    /// origin is a shipped template's when `source` is one, else unnamed: prefer
    /// [`ChatTemplate::with_origin`].
    pub fn new(source: &str) -> Result<Self, Error> {
        let origin = BUILTIN
            .iter()
            .find(|(_, text)| *text == source)
            .map_or(Origin::Unnamed, |(name, _)| Origin::Builtin(name));
        Self::with_origin(source, origin)
    }

    /// Compiles `source`, which came from `origin` (named in every error), within
    /// [`Limits::for_source`].
    pub fn with_origin(source: &str, origin: Origin) -> Result<Self, Error> {
        Self::compile(source, origin, &Limits::for_source(source.len()))
    }

    /// Compiles `source` within the memory and time of `limits`: minijinja folds constant
    /// expressions while compiling, so `'x' * 99999999 ~ ...` allocates before any render.
    pub fn compile(source: &str, origin: Origin, limits: &Limits) -> Result<Self, Error> {
        Self::build(source, origin, limits, system_clock)
    }

    /// [`ChatTemplate::compile`] with `strftime_now` reading time from `clock`.
    fn build(
        source: &str,
        origin: Origin,
        limits: &Limits,
        clock: fn() -> Duration,
    ) -> Result<Self, Error> {
        let text = rewrite_generation_tags(source);
        let compiled = bounded(limits, move || {
            let mut env = environment(clock);
            env.add_template_owned(NAME, text).map(|()| env)
        });
        match compiled {
            Ok(Ok(env)) => Ok(ChatTemplate {
                source: source.to_owned(),
                origin,
                env: Arc::new(env),
            }),
            Ok(Err(err)) => Err(Error::Syntax {
                origin,
                line: err.line(),
                message: describe(&err),
            }),
            Err(stop) => Err(stop.error(origin, limits, "while compiling")),
        }
    }

    /// Like [`ChatTemplate::with_origin`], with `strftime_now` reading time from `clock`.
    #[cfg(test)]
    fn with_clock(source: &str, origin: Origin, clock: fn() -> Duration) -> Result<Self, Error> {
        Self::build(source, origin, &Limits::for_source(source.len()), clock)
    }

    /// The template text as given to [`ChatTemplate::new`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Whether the template reads the `tools` variable (so tool definitions reach the model).
    pub fn takes_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// Whether the template reads the `reasoning_effort` variable (gpt-oss's harmony does).
    pub fn takes_reasoning_effort(&self) -> bool {
        self.source.contains("reasoning_effort")
    }

    /// Whether the template reads the `enable_thinking` variable (Gemma 4's does).
    pub fn takes_enable_thinking(&self) -> bool {
        self.source.contains("enable_thinking")
    }

    /// Renders `messages` into the prompt text, as `apply_chat_template(tokenize=False)` does,
    /// within the [`Limits`] for this conversation.
    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String, Error> {
        let input = messages
            .iter()
            .map(|m| m.role.len() + m.content.len() + json_len(&m.extra))
            .sum::<usize>()
            + opts.tools.map_or(0, |t| t.to_string().len())
            + opts.bos_token.len()
            + opts.eos_token.len();
        self.render_within(messages, opts, Limits::for_input(messages.len(), input))
    }

    /// [`ChatTemplate::render`] within explicit `limits`. The render runs on a thread of its
    /// own, under a memory budget (see [`BudgetAllocator`]); a thread that spends it is left
    /// parked and this returns [`Error::Limit`].
    pub fn render_within(
        &self,
        messages: &[Message],
        opts: &RenderOptions,
        limits: Limits,
    ) -> Result<String, Error> {
        let job = Job {
            env: Arc::clone(&self.env),
            messages: messages.to_vec(),
            add_generation_prompt: opts.add_generation_prompt,
            bos_token: opts.bos_token.to_owned(),
            eos_token: opts.eos_token.to_owned(),
            tools: opts.tools.cloned(),
            reasoning_effort: opts.reasoning_effort.map(str::to_owned),
            enable_thinking: opts.enable_thinking,
            limits,
        };
        let during = format!("rendering a conversation of {} message(s)", messages.len());
        match bounded(&limits, move || job.run()) {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(err)) => Err(self.error(&err, &during, &limits)),
            Err(stop) => Err(stop.error(self.origin.clone(), &limits, &during)),
        }
    }

    /// Our error for minijinja's `err`, raised `during` a render.
    fn error(&self, err: &minijinja::Error, during: &str, limits: &Limits) -> Error {
        let origin = self.origin.clone();
        if let Some(message) = find_source::<Raised>(err).map(|r| r.0.clone()) {
            return Error::Raised {
                origin,
                message: untrusted::short_to(&message, MAX_MESSAGE),
            };
        }
        if let Some(what) = find_source::<limits::Spent>(err).map(|s| s.0.clone()) {
            return Error::Limit {
                origin,
                what: format!("{what} {during}"),
            };
        }
        if err.kind() == ErrorKind::OutOfFuel {
            return Error::Limit {
                origin,
                what: format!("ran more than {} instructions {during}", limits.fuel),
            };
        }
        Error::Render {
            origin,
            line: err.line(),
            message: describe(err),
        }
    }
}

/// Bytes of `extra` as JSON (for the render's input size).
fn json_len(extra: &serde_json::Map<String, serde_json::Value>) -> usize {
    if extra.is_empty() {
        0
    } else {
        serde_json::Value::Object(extra.clone()).to_string().len()
    }
}

/// Why [`bounded`] work did not finish.
enum Stop {
    /// Its thread spent its memory budget and was left parked.
    Memory,
    /// It ran out of time (its thread is left to finish on its own).
    Time,
    /// Its thread ended without an answer (a panic).
    Lost,
}

impl Stop {
    fn error(self, origin: Origin, limits: &Limits, during: &str) -> Error {
        let what = match self {
            Stop::Memory => format!(
                "held more than {} MiB of memory {during}",
                limits.memory_bytes >> 20
            ),
            Stop::Time => format!("ran for more than {} s {during}", limits.time.as_secs()),
            Stop::Lost => {
                return Error::Render {
                    origin,
                    line: None,
                    message: format!("the thread {during} stopped without an answer"),
                }
            }
        };
        Error::Limit { origin, what }
    }
}

/// Runs `work` on a thread of its own under the memory budget and time of `limits` (see
/// [`BudgetAllocator`]). A thread that spends its budget stays parked; any other is joined
/// before this returns, so that no thread outlives its work otherwise.
fn bounded<T: Send + 'static>(
    limits: &Limits,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stop> {
    let memory = limits.memory_bytes;
    let spent = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&spent);
    let (tx, rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("chat-template".into())
        .stack_size(RENDER_STACK)
        .spawn(move || {
            budget::enter(memory, &flag);
            let result = work();
            budget::leave();
            let _ = tx.send(result);
        })
        .map_err(|_| Stop::Lost)?;
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(result) => {
                let _ = thread.join();
                return Ok(result);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if spent.load(Ordering::SeqCst) => {
                return Err(Stop::Memory)
            }
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() > limits.time => {
                return Err(Stop::Time)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Stop::Lost),
        }
    }
}

/// One render, owned, so that it can run on a thread that may be abandoned.
struct Job {
    env: Arc<Environment<'static>>,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    bos_token: String,
    eos_token: String,
    tools: Option<serde_json::Value>,
    reasoning_effort: Option<String>,
    enable_thinking: Option<bool>,
    limits: Limits,
}

impl Job {
    fn run(&self) -> Result<String, minijinja::Error> {
        let ctx = context! {
            messages => Value::from_serialize(&self.messages),
            add_generation_prompt => self.add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
            tools => self.tools.as_ref().map_or(Value::from(()), Value::from_serialize),
            documents => Value::from(()),
        };
        // Unset, the variable stays undefined: templates test `is not defined` for their default.
        let ctx = match &self.reasoning_effort {
            Some(effort) => context! { reasoning_effort => effort, ..ctx },
            None => ctx,
        };
        let ctx = match self.enable_thinking {
            Some(on) => context! { enable_thinking => on, ..ctx },
            None => ctx,
        };
        // Fuel is a setting of the environment; a clone shares the compiled template.
        let mut env = Environment::clone(&self.env);
        env.set_fuel(Some(self.limits.fuel));
        limits::set_output_limit(self.limits.output_bytes);
        let template = env.get_template(NAME)?;
        let mut out = limits::BoundedOutput {
            bytes: Vec::new(),
            limit: self.limits.output_bytes,
            overflowed: false,
        };
        let rendered = template.render_captured_to(ctx, &mut out);
        if out.overflowed {
            return Err(limits::spent(format!(
                "wrote more than {} bytes",
                self.limits.output_bytes
            )));
        }
        rendered?;
        String::from_utf8(out.bytes)
            .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "output is not UTF-8"))
    }
}

fn system_clock() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// An environment configured like transformers' `_compile_jinja_template`.
fn environment(clock: fn() -> Duration) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // jinja2 prints values with Python's str(): `None`, `True`, `['a', 1]`.
    env.set_formatter(|out, _state, value| {
        let text = python::str_of(value);
        limits::count_output(text.len())?;
        Ok(out.write_str(&text)?)
    });
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("string", |value: &Value| python::str_of(value));
    env.add_filter("tojson", python::tojson);
    env.add_filter("length", python::length);
    env.add_filter("count", python::length);
    // jinja2 built-ins that minijinja keeps in contrib (not its non-jinja2 extras).
    env.add_filter("indent", limits::indent);
    env.add_filter("truncate", minijinja_contrib::filters::truncate);
    env.add_filter("striptags", minijinja_contrib::filters::striptags);
    env.add_filter("filesizeformat", minijinja_contrib::filters::filesizeformat);
    env.add_function("cycler", minijinja_contrib::globals::cycler);
    env.add_function("joiner", minijinja_contrib::globals::joiner);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", move |format: &str| {
        strftime::strftime(format, clock())
    });
    env
}

/// Marks a render error as coming from the template's own `raise_exception`.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: Value) -> Result<Value, minijinja::Error> {
    let message = python::str_of(&message);
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(Raised(message)),
    )
}

/// The first error of type `T` in `err`'s chain of sources.
fn find_source<T: std::error::Error + 'static>(err: &minijinja::Error) -> Option<&T> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

fn describe(err: &minijinja::Error) -> String {
    let text = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    untrusted::short_to(&text, MAX_MESSAGE)
}

/// Turns HF's `{% generation %}…{% endgeneration %}` (its assistant-mask marker, which renders
/// its body unchanged) into `{% if true %}…{% endif %}`, keeping every `-`/`+` whitespace
/// modifier so trimming, and line numbers, stay as written.
fn rewrite_generation_tags(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_owned();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        let body_start = 2 + usize::from(tag[2..].starts_with(['-', '+']));
        let body = &tag[body_start..];
        let keyword = body.trim_start();
        let indent = &body[..body.len() - keyword.len()];
        let word_end = keyword
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(keyword.len());
        let replacement = match &keyword[..word_end] {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        out.push_str(&tag[..body_start]);
        out.push_str(indent);
        match replacement {
            Some(word) => {
                out.push_str(word);
                rest = &keyword[word_end..];
            }
            None => rest = keyword,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
