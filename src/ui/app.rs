//! The chat UI's state: plain data changed only by [`App::update`], which turns keys, pastes
//! and engine events into state changes and effects ([`Effect`]) for the runtime to carry out.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::commands::{self, Command};
use super::input::Input;
use super::transcript::Transcript;
use super::worker::{Event, Summary};
use crate::engine::settings::{self, Origins, Source};
use crate::engine::{GenerateParams, Message, StopReason};

/// What the status bar and `/show info` say about the model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelCard {
    /// Display name.
    pub name: String,
    /// Family id.
    pub family: String,
    /// Device label (`cpu`, `cuda:0`).
    pub device: String,
    /// Context size of this run.
    pub ctx_size: usize,
    /// The chat template's source.
    pub template: String,
}

/// Everything the UI feeds into [`App::update`].
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// A bracketed paste: one block of text.
    Paste(String),
    /// Mouse wheel: positive scrolls towards older lines.
    Scroll(i32),
    /// An event from the engine.
    Engine(Event),
    /// Text composed in `$EDITOR`, or why the editor failed.
    Edited(Result<String, String>),
    /// A transcript read by `/load`, or why it failed.
    Loaded(Result<Transcript, String>),
    /// Outcome of a file operation to report in the banner.
    Notice(Result<String, String>),
}

/// Side effects `update` asks the runtime to perform.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Generate a reply to this conversation.
    Generate(Vec<Message>, GenerateParams),
    /// Stop the generation in flight.
    Cancel,
    /// Drop the engine's cached conversation.
    ResetEngine,
    /// Open `$EDITOR` on this text.
    OpenEditor(String),
    /// Write the transcript to a file.
    Save(String, Transcript),
    /// Read a transcript from a file.
    Load(String),
    /// The transcript changed (for `--session` autosave).
    Changed,
    /// Leave the UI.
    Quit,
}

/// Severity of the banner above the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Information.
    Info,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

/// A full-screen text overlay (help, `/show`, `/stats`).
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay {
    /// Title.
    pub title: String,
    /// Body lines.
    pub body: String,
}

/// The chat UI's state.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// The model.
    pub card: ModelCard,
    /// System message.
    pub system: Option<String>,
    /// Finished user/assistant turns.
    pub messages: Vec<Message>,
    /// The reply being streamed, if any.
    pub reply: Option<String>,
    /// The input box.
    pub input: Input,
    /// Generation settings (`/set`).
    pub params: GenerateParams,
    /// Where each sampling setting came from (`/show params`).
    pub origins: Origins,
    /// Input history, oldest first.
    pub history: Vec<String>,
    history_pos: Option<usize>,
    /// Lines scrolled up from the bottom of the transcript.
    pub scroll: usize,
    /// A one-line message above the input.
    pub banner: Option<(Level, String)>,
    /// A text overlay.
    pub overlay: Option<Overlay>,
    /// Figures of every reply so far.
    pub stats: Vec<Summary>,
    /// Context positions in use.
    pub ctx_used: usize,
    /// Set when the user asked to leave.
    pub quit: bool,
    /// The reasoning format the model writes (gpt-oss's harmony channels, Gemma 4's thought
    /// channel): its replies' reasoning is kept apart from their text and shown folded.
    pub reasoning: Option<crate::engine::reasoning::Format>,
    /// Reasoning is shown unfolded (Ctrl+R toggles).
    pub show_reasoning: bool,
}

impl App {
    /// A fresh chat with `card`'s model.
    pub fn new(card: ModelCard, mut params: GenerateParams, system: Option<String>) -> Self {
        let reasoning = crate::engine::reasoning::detect(&card.template);
        // Gemma 4's channel markers may be special tokens: they must reach the splitter.
        params.render_special |=
            reasoning.is_some_and(crate::engine::reasoning::Format::needs_special_tokens);
        Self {
            system,
            messages: Vec::new(),
            reply: None,
            input: Input::default(),
            params,
            origins: Origins::default(),
            history: Vec::new(),
            history_pos: None,
            scroll: 0,
            banner: None,
            overlay: None,
            stats: Vec::new(),
            ctx_used: 0,
            quit: false,
            reasoning,
            show_reasoning: false,
            card,
        }
    }

    /// True while a reply is being generated.
    pub fn busy(&self) -> bool {
        self.reply.is_some()
    }

    /// The conversation as saved by `/save` and `--session`.
    pub fn transcript(&self) -> Transcript {
        Transcript {
            model: self.card.name.clone(),
            params: self.params.clone(),
            system: self.system.clone(),
            messages: self.messages.clone(),
        }
    }

    /// Replaces the conversation with a saved one.
    pub fn restore(&mut self, t: Transcript) {
        self.system = t.system;
        self.messages = t.messages;
        self.params = t.params;
        self.origins = Origins::all(Source::Transcript);
        self.scroll = 0;
    }

    /// Applies one message; returns the effects to carry out, in order.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => self.key(k),
            Msg::Paste(text) => {
                self.input.insert_str(&text);
                Vec::new()
            }
            Msg::Scroll(n) => {
                self.scroll = (self.scroll as i64 + n as i64).max(0) as usize;
                Vec::new()
            }
            Msg::Engine(e) => self.engine(e),
            Msg::Edited(Ok(text)) => {
                self.input = Input::with_text(text.trim_end_matches('\n'));
                Vec::new()
            }
            Msg::Edited(Err(e)) | Msg::Notice(Err(e)) => self.notify(Level::Error, e),
            Msg::Notice(Ok(text)) => self.notify(Level::Info, text),
            Msg::Loaded(Ok(t)) => {
                let n = t.messages.len();
                self.restore(t);
                self.banner = Some((Level::Info, format!("loaded {n} messages")));
                vec![Effect::ResetEngine, Effect::Changed]
            }
            Msg::Loaded(Err(e)) => self.notify(Level::Error, e),
        }
    }

    fn notify(&mut self, level: Level, text: String) -> Vec<Effect> {
        self.banner = Some((level, text));
        Vec::new()
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt_or_shift = k
            .modifiers
            .intersects(KeyModifiers::ALT | KeyModifiers::SHIFT);
        if self.overlay.is_some()
            && matches!(k.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q'))
        {
            self.overlay = None;
            return Vec::new();
        }
        match k.code {
            KeyCode::Char('c') if ctrl => {
                if self.busy() {
                    vec![Effect::Cancel]
                } else {
                    self.quit = true;
                    vec![Effect::Quit]
                }
            }
            KeyCode::Char('d') if ctrl && self.input.is_empty() => {
                self.quit = true;
                vec![Effect::Quit]
            }
            KeyCode::Char('g') if ctrl => vec![Effect::OpenEditor(self.input.text())],
            KeyCode::Char('r') if ctrl => {
                self.show_reasoning = !self.show_reasoning;
                Vec::new()
            }
            KeyCode::Char('u') if ctrl => edit(Input::clear, &mut self.input),
            KeyCode::Char('j') if ctrl => {
                self.input.newline();
                Vec::new()
            }
            KeyCode::Esc if self.busy() => vec![Effect::Cancel],
            KeyCode::Esc => {
                self.banner = None;
                Vec::new()
            }
            KeyCode::Enter if alt_or_shift => {
                self.input.newline();
                Vec::new()
            }
            KeyCode::Enter => self.submit(),
            KeyCode::Tab => {
                if let Some(done) = commands::complete(&self.input.text()) {
                    self.input = Input::with_text(&done);
                }
                Vec::new()
            }
            KeyCode::PageUp => {
                self.scroll += 10;
                Vec::new()
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                Vec::new()
            }
            KeyCode::Up => {
                if !self.input.up() {
                    self.history_step(-1);
                }
                Vec::new()
            }
            KeyCode::Down => {
                if !self.input.down() {
                    self.history_step(1);
                }
                Vec::new()
            }
            KeyCode::Left => edit(|i| i.left(), &mut self.input),
            KeyCode::Right => edit(|i| i.right(), &mut self.input),
            KeyCode::Home => edit(|i| i.home(), &mut self.input),
            KeyCode::End => edit(|i| i.end(), &mut self.input),
            KeyCode::Backspace => edit(|i| i.backspace(), &mut self.input),
            KeyCode::Delete => edit(|i| i.delete(), &mut self.input),
            KeyCode::Char(c) if !ctrl => edit(|i| i.insert(c), &mut self.input),
            _ => Vec::new(),
        }
    }

    fn history_step(&mut self, dir: i64) {
        if self.history.is_empty() {
            return;
        }
        let last = self.history.len() as i64;
        let pos = self.history_pos.map_or(last, |p| p as i64) + dir;
        if pos < 0 {
            return;
        }
        if pos >= last {
            self.history_pos = None;
            self.input.clear();
            return;
        }
        self.history_pos = Some(pos as usize);
        self.input = Input::with_text(&self.history[pos as usize]);
    }

    fn submit(&mut self) -> Vec<Effect> {
        let text = self.input.text();
        if text.trim().is_empty() {
            return Vec::new();
        }
        if self.busy() {
            return self.notify(
                Level::Warning,
                "still generating: Esc stops the reply".into(),
            );
        }
        if self.history.last() != Some(&text) {
            self.history.push(text.clone());
        }
        self.history_pos = None;
        self.input.clear();
        self.banner = None;
        if text.starts_with('/') {
            return match commands::parse(&text) {
                Ok(c) => self.command(c),
                Err(e) => self.notify(Level::Error, e),
            };
        }
        self.messages.push(Message::new("user", text));
        self.generate()
    }

    /// Starts a reply to the conversation as it stands.
    fn generate(&mut self) -> Vec<Effect> {
        let mut conversation = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = self.system.as_ref().filter(|s| !s.is_empty()) {
            conversation.push(Message::new("system", s.clone()));
        }
        conversation.extend(self.messages.iter().cloned());
        self.reply = Some(String::new());
        self.scroll = 0;
        vec![Effect::Generate(conversation, self.params.clone())]
    }

    /// The assistant message for a finished reply: a reasoning model's answer, its reasoning
    /// under `thinking` (the field harmony templates read).
    fn reply_message(&self, text: String) -> Message {
        let Some(format) = self.reasoning else {
            return Message::new("assistant", text);
        };
        let parsed = crate::engine::reasoning::parse(format, &text);
        let mut m = Message::new("assistant", parsed.content);
        if !parsed.reasoning.is_empty() {
            m.extra
                .insert("thinking".into(), serde_json::json!(parsed.reasoning));
        }
        m
    }

    fn engine(&mut self, e: Event) -> Vec<Effect> {
        match e {
            Event::Progress(used) => {
                if self.busy() {
                    self.ctx_used = used;
                }
                Vec::new()
            }
            Event::Text(t) => {
                if let Some(r) = self.reply.as_mut() {
                    r.push_str(&t);
                }
                Vec::new()
            }
            Event::Finished(s) => {
                let text = self.reply.take().unwrap_or_default();
                self.messages.push(self.reply_message(text));
                self.ctx_used = s.ctx_used;
                match s.stop_reason {
                    StopReason::ContextFull => {
                        self.banner = Some((
                            Level::Warning,
                            "the context is full: /drop removes the oldest exchange, /clear starts over".into(),
                        ));
                    }
                    StopReason::MaxTokens => {
                        self.banner = Some((
                            Level::Info,
                            format!(
                                "the reply stopped at max_tokens ({}): /set max_tokens none lifts it",
                                s.generated_tokens
                            ),
                        ));
                    }
                    _ => {}
                }
                self.stats.push(s);
                vec![Effect::Changed]
            }
            Event::TooLong { needed, ctx_size } => {
                self.reply = None;
                // Give the unsent turn back to the user instead of losing it.
                if let Some(m) = self.messages.pop().filter(|m| m.role == "user") {
                    self.input = Input::with_text(&m.content);
                }
                self.notify(
                    Level::Warning,
                    format!(
                        "the conversation needs {needed} tokens but the context holds {ctx_size}: /drop removes the oldest exchange, /clear starts over"
                    ),
                )
            }
            Event::Failed(err) => {
                self.reply = None;
                if let Some(m) = self.messages.pop().filter(|m| m.role == "user") {
                    self.input = Input::with_text(&m.content);
                }
                self.notify(Level::Error, err)
            }
        }
    }

    fn command(&mut self, c: Command) -> Vec<Effect> {
        match c {
            Command::Help => {
                self.overlay = Some(help());
                Vec::new()
            }
            Command::Quit => {
                self.quit = true;
                vec![Effect::Quit]
            }
            Command::Clear => {
                self.messages.clear();
                self.scroll = 0;
                vec![Effect::ResetEngine, Effect::Changed]
            }
            Command::System(s) => {
                self.system = (!s.is_empty()).then_some(s);
                self.notify(Level::Info, "system message updated".into());
                vec![Effect::Changed]
            }
            Command::Set(k, v) => match set_param(&mut self.params, &k, &v) {
                Ok(()) => {
                    self.origins.set(&k, Source::Set);
                    self.notify(Level::Info, format!("{k} = {v}"))
                }
                Err(e) => self.notify(Level::Error, e),
            },
            Command::Show(what) => self.show(&what),
            Command::Regen => {
                if self.messages.last().is_some_and(|m| m.role == "assistant") {
                    self.messages.pop();
                }
                if self.messages.last().is_some_and(|m| m.role == "user") {
                    self.generate()
                } else {
                    self.notify(Level::Warning, "nothing to regenerate".into())
                }
            }
            Command::Edit => {
                if self.messages.last().is_some_and(|m| m.role == "assistant") {
                    self.messages.pop();
                }
                match self.messages.pop() {
                    Some(m) if m.role == "user" => {
                        self.input = Input::with_text(&m.content);
                        vec![Effect::Changed]
                    }
                    other => {
                        self.messages.extend(other);
                        self.notify(Level::Warning, "no user message to edit".into())
                    }
                }
            }
            Command::Drop => {
                let n = self.messages.len().min(2);
                if n == 0 {
                    return self.notify(Level::Warning, "nothing to drop".into());
                }
                self.messages.drain(..n);
                self.notify(Level::Info, format!("dropped the oldest {n} messages"));
                vec![Effect::Changed]
            }
            Command::Save(path) => vec![Effect::Save(path, self.transcript())],
            Command::Load(path) => vec![Effect::Load(path)],
            Command::Stats => {
                self.overlay = Some(stats_overlay(&self.stats));
                Vec::new()
            }
        }
    }

    fn show(&mut self, what: &str) -> Vec<Effect> {
        let body = match what {
            "info" => format!(
                "model    {}\nfamily   {}\ndevice   {}\ncontext  {} of {} tokens used",
                self.card.name,
                self.card.family,
                self.card.device,
                self.ctx_used,
                self.card.ctx_size
            ),
            "params" => params_table(&self.params, &self.origins),
            "template" => self.card.template.clone(),
            "system" => self.system.clone().unwrap_or_else(|| "(none)".into()),
            other => {
                return self.notify(
                    Level::Error,
                    format!("/show {other}: expected info, params, template or system"),
                )
            }
        };
        self.overlay = Some(Overlay {
            title: format!("/show {what}"),
            body,
        });
        Vec::new()
    }
}

fn edit(f: impl FnOnce(&mut Input), input: &mut Input) -> Vec<Effect> {
    f(input);
    Vec::new()
}

/// `temp 0.8  top_k 40  top_p 0.95  min_p 0.05  ...` for the status bar.
pub fn sampling_summary(p: &GenerateParams) -> String {
    let s = &p.sampling;
    let mut out = format!(
        "temp {}  top_k {}  top_p {}  min_p {}  repeat_penalty {}",
        s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty
    );
    if s.dry.is_on() {
        out.push_str(&format!("  dry_multiplier {}", s.dry.multiplier));
    }
    out.push_str(&format!("  seed {}", s.seed));
    if let Some(m) = p.max_tokens {
        out.push_str(&format!("  max_tokens {m}"));
    }
    out
}

/// `/show params`: every setting with its value and where it came from.
fn params_table(p: &GenerateParams, origins: &Origins) -> String {
    let rows = origins.describe(&p.sampling);
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut lines: Vec<String> = rows
        .iter()
        .map(|(name, value, source)| format!("{name:<width$}  {value:<value_width$}  ({source})"))
        .collect();
    let max_tokens = p.max_tokens.map_or("none".into(), |m| m.to_string());
    lines.push(format!("{:<width$}  {max_tokens}", "max_tokens"));
    lines.join("\n")
}

fn set_param(p: &mut GenerateParams, key: &str, value: &str) -> Result<(), String> {
    if key == "max_tokens" {
        p.max_tokens = match value {
            "none" | "0" => None,
            v => Some(
                v.parse()
                    .map_err(|e| format!("/set max_tokens: '{value}' is not valid: {e}"))?,
            ),
        };
        return Ok(());
    }
    if !commands::settings().any(|s| s == key) {
        return Err(format!(
            "/set: unknown setting '{key}'; settings: {}",
            commands::settings().collect::<Vec<_>>().join(", ")
        ));
    }
    settings::set(&mut p.sampling, key, value).map_err(|e| format!("/set {e}"))
}

fn help() -> Overlay {
    let mut body = String::from(
        "Enter send · Alt+Enter / Shift+Enter / Ctrl+J newline · Up/Down history\n\
         Esc or Ctrl+C stop a reply · Ctrl+C (idle) or Ctrl+D quit · Ctrl+G compose in $EDITOR\n\
         Ctrl+U clears the input · Ctrl+R shows or folds reasoning\n\
         PgUp/PgDn or mouse wheel scroll · Tab completes commands\n\n",
    );
    for (c, usage, what) in commands::COMMANDS {
        body.push_str(&format!("{:<36} {what}\n", format!("{c} {usage}")));
    }
    Overlay {
        title: "help".into(),
        body,
    }
}

fn stats_overlay(stats: &[Summary]) -> Overlay {
    let mut body =
        String::from("turn  prompt  reused  prefilled  pp tok/s  gen  tg tok/s  TTFT ms\n");
    for (i, s) in stats.iter().enumerate() {
        body.push_str(&format!(
            "{:>4}  {:>6}  {:>6}  {:>9}  {:>8.1}  {:>3}  {:>8.1}  {:>7.0}\n",
            i + 1,
            s.prompt_tokens,
            s.reused_tokens,
            s.prompt_tokens - s.reused_tokens,
            s.prompt_tok_per_s,
            s.generated_tokens,
            s.gen_tok_per_s,
            s.ttft_ms
        ));
    }
    if stats.is_empty() {
        body.push_str("(no replies yet)\n");
    }
    Overlay {
        title: "/stats".into(),
        body,
    }
}
