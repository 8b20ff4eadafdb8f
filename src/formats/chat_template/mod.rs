//! Hugging Face–compatible chat-template rendering: compiles a model's Jinja `chat_template`
//! once and renders conversations exactly as transformers' `apply_chat_template` does.
//!
//! HF renders with jinja2 (`trim_blocks`, `lstrip_blocks`, no trailing newline kept, the
//! default lenient `Undefined`), a JSON `tojson` that keeps key order and escapes no HTML, and
//! the globals `raise_exception` and `strftime_now`. This module reproduces that on minijinja,
//! with Python's string/dict methods from minijinja-contrib and Python's `str()` for output.

mod builtin;
mod python;
mod strftime;

pub use builtin::{builtin, builtin_names, BUILTIN};

use std::time::{Duration, SystemTime};

use minijinja::{context, AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

/// Name under which the one template lives in its environment (no extension: no escaping).
const NAME: &str = "chat_template";

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template text is not valid Jinja.
    #[error("chat template does not compile{}: {message}", at_line(*.line))]
    Syntax {
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What the parser expected and found.
        message: String,
    },
    /// The template called `raise_exception(message)`, usually to reject a conversation shape.
    #[error("chat template rejected the conversation: {message}")]
    Raised {
        /// The template's own message, verbatim.
        message: String,
    },
    /// Rendering failed for another reason (a bad operation, attribute of an undefined value…).
    #[error("chat template failed to render{}: {message}", at_line(*.line))]
    Render {
        /// 1-based line where rendering stopped, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
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
}

impl Message {
    /// A message from `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
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
}

/// A compiled chat template; compile once, render from any thread.
pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error comes back as [`Error::Syntax`] with its line.
    pub fn new(source: &str) -> Result<Self, Error> {
        Self::with_clock(source, system_clock)
    }

    /// Like [`ChatTemplate::new`], with `strftime_now` reading time from `clock`.
    fn with_clock(source: &str, clock: fn() -> Duration) -> Result<Self, Error> {
        let mut env = environment(clock);
        env.add_template_owned(NAME, rewrite_generation_tags(source))
            .map_err(|err| Error::Syntax {
                line: err.line(),
                message: describe(&err),
            })?;
        Ok(ChatTemplate {
            source: source.to_owned(),
            env,
        })
    }

    /// The template text as given to [`ChatTemplate::new`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` into the prompt text, as `apply_chat_template(tokenize=False)` does.
    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String, Error> {
        let ctx = context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => opts.add_generation_prompt,
            bos_token => opts.bos_token,
            eos_token => opts.eos_token,
            tools => Value::from(()),
            documents => Value::from(()),
        };
        let render_error = |err: minijinja::Error| match raised_message(&err) {
            Some(message) => Error::Raised { message },
            None => Error::Render {
                line: err.line(),
                message: describe(&err),
            },
        };
        let template = self.env.get_template(NAME).map_err(render_error)?;
        template.render(ctx).map_err(render_error)
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
    env.set_formatter(|out, _state, value| Ok(out.write_str(&python::str_of(value))?));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("string", |value: &Value| python::str_of(value));
    env.add_filter("tojson", python::tojson);
    env.add_filter("length", python::length);
    env.add_filter("count", python::length);
    // jinja2 built-ins that minijinja keeps in contrib (not its non-jinja2 extras).
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

fn raised_message(err: &minijinja::Error) -> Option<String> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(Raised(message)) = cause.downcast_ref::<Raised>() {
            return Some(message.clone());
        }
        source = cause.source();
    }
    None
}

fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
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
