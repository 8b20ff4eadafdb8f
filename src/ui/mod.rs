//! The interactive chat: a ratatui front end over the engine. [`app::App`] is plain data
//! changed by `update`, [`view`] draws it, the engine runs on a worker thread, and keys and
//! engine events arrive over one channel. Redraws are rate-limited, not one per token.
//! This module imports engine types only — never tensors, models or formats.

pub mod app;
pub mod commands;
pub mod history;
pub mod input;
pub mod terminal;
pub mod transcript;
pub mod view;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyEventKind, MouseEventKind};

use crate::engine::settings::Origins;
use crate::engine::{Engine, GenerateParams};
use app::{App, Effect, ModelCard, Msg};
use transcript::Transcript;
use worker::{Request, Worker};

/// Shortest time between two redraws (30 frames per second at most).
const FRAME: Duration = Duration::from_millis(33);

/// How the chat starts.
pub struct Options {
    /// What the status bar shows about the model.
    pub card: ModelCard,
    /// Initial generation settings.
    pub params: GenerateParams,
    /// Where each sampling setting came from (for `/show params`).
    pub origins: Origins,
    /// Initial system message.
    pub system: Option<String>,
    /// `--session`: the transcript file to resume and autosave.
    pub session: Option<PathBuf>,
}

/// Redraw figures of one chat, for `-v`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrawStats {
    /// Frames drawn while a reply was streaming.
    pub streaming_frames: u64,
    /// Time spent streaming.
    pub streaming_time: Duration,
    /// Engine text events received while streaming.
    pub text_events: u64,
}

/// Runs the chat until the user quits; the terminal is restored on every path.
pub fn run(engine: Engine, opts: Options) -> std::io::Result<DrawStats> {
    let (tx, rx) = channel::<Msg>();
    let worker = {
        let tx = tx.clone();
        Worker::spawn(engine, move |e| {
            let _ = tx.send(Msg::Engine(e));
        })
    };
    let mut app = App::new(opts.card, opts.params, opts.system);
    app.origins = opts.origins;
    let history_file = history::path();
    if let Some(p) = &history_file {
        app.history = history::load(p);
    }
    if let Some(t) = opts
        .session
        .as_deref()
        .filter(|p| p.exists())
        .map(Transcript::load)
    {
        let _ = app.update(Msg::Loaded(t));
    }
    let paused = Arc::new(AtomicBool::new(false));
    spawn_input(tx.clone(), Arc::clone(&paused));
    let mut guard = terminal::Guard::new()?;
    let stats = event_loop(
        &mut guard,
        &mut app,
        &rx,
        &tx,
        &worker,
        &paused,
        opts.session.as_deref(),
    );
    drop(guard);
    if let Some(p) = &history_file {
        let _ = history::save(p, &app.history);
    }
    stats
}

fn event_loop(
    guard: &mut terminal::Guard,
    app: &mut App,
    rx: &Receiver<Msg>,
    tx: &Sender<Msg>,
    worker: &Worker,
    paused: &AtomicBool,
    session: Option<&std::path::Path>,
) -> std::io::Result<DrawStats> {
    let mut stats = DrawStats::default();
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    while !app.quit {
        if dirty && last_draw.elapsed() >= FRAME {
            guard.term.draw(|f| view::draw(f, app))?;
            if app.busy() {
                stats.streaming_frames += 1;
                stats.streaming_time += last_draw.elapsed().min(Duration::from_secs(1));
            }
            last_draw = Instant::now();
            dirty = false;
        }
        let wait = if dirty {
            FRAME.saturating_sub(last_draw.elapsed())
        } else {
            FRAME
        };
        let first = match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Apply everything queued before drawing again.
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            if app.busy() && matches!(msg, Msg::Engine(worker::Event::Text(_))) {
                stats.text_events += 1;
            }
            for effect in app.update(msg) {
                perform(effect, guard, app, tx, worker, paused, session);
            }
            dirty = true;
        }
    }
    Ok(stats)
}

fn perform(
    effect: Effect,
    guard: &mut terminal::Guard,
    app: &App,
    tx: &Sender<Msg>,
    worker: &Worker,
    paused: &AtomicBool,
    session: Option<&std::path::Path>,
) {
    match effect {
        Effect::Generate(messages, params) => worker.send(Request::Chat { messages, params }),
        Effect::Cancel => worker.cancel(),
        Effect::ResetEngine => worker.send(Request::Reset),
        Effect::Quit => worker.cancel(),
        Effect::OpenEditor(text) => {
            paused.store(true, Ordering::SeqCst);
            let edited = guard.edit(&text);
            paused.store(false, Ordering::SeqCst);
            let _ = tx.send(Msg::Edited(edited));
        }
        Effect::Save(path, t) => {
            let result = t
                .save(std::path::Path::new(&path))
                .map(|_| format!("saved to {path}"));
            let _ = tx.send(Msg::Notice(result));
        }
        Effect::Load(path) => {
            let _ = tx.send(Msg::Loaded(Transcript::load(std::path::Path::new(&path))));
        }
        Effect::Changed => {
            if let Some(p) = session {
                if let Err(e) = app.transcript().save(p) {
                    let _ = tx.send(Msg::Notice(Err(format!("autosave failed: {e}"))));
                }
            }
        }
    }
}

/// Reads terminal events on their own thread (paused while `$EDITOR` owns the terminal).
fn spawn_input(tx: Sender<Msg>, paused: Arc<AtomicBool>) {
    std::thread::spawn(move || loop {
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match event::poll(Duration::from_millis(50)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        if paused.load(Ordering::SeqCst) {
            continue;
        }
        let msg = match event::read() {
            Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
            Ok(TermEvent::Paste(s)) => Msg::Paste(s),
            Ok(TermEvent::Mouse(m)) => match m.kind {
                MouseEventKind::ScrollUp => Msg::Scroll(3),
                MouseEventKind::ScrollDown => Msg::Scroll(-3),
                _ => continue,
            },
            Ok(TermEvent::Resize(..)) => Msg::Scroll(0),
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    });
}
