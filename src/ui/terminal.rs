//! Terminal setup and restoration (raw mode, alternate screen, bracketed paste, mouse), on
//! every exit path including a panic and a terminating signal (`kill -TERM`, `-INT`, `-QUIT`,
//! `-HUP`), and suspending the UI to run `$EDITOR`.

use std::io::{stdout, Write};

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    KeyboardEnhancementFlags, PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// The terminal type the UI draws on.
pub type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

/// Puts the terminal into UI mode.
fn enter() -> std::io::Result<()> {
    enable_raw_mode()?;
    execute!(
        stdout(),
        EnterAlternateScreen,
        EnableBracketedPaste,
        EnableMouseCapture
    )?;
    // Lets terminals that support it report Shift+Enter distinctly; harmless elsewhere.
    let _ = execute!(
        stdout(),
        PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
    );
    Ok(())
}

/// Restores the terminal; safe to call more than once.
pub fn leave() {
    let _ = execute!(stdout(), PopKeyboardEnhancementFlags);
    let _ = execute!(
        stdout(),
        DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen
    );
    let _ = disable_raw_mode();
    let _ = stdout().flush();
}

/// Restores the terminal when dropped, and on panic through a hook installed by [`Guard::new`].
pub struct Guard {
    /// The terminal to draw on.
    pub term: Term,
}

impl Guard {
    /// Enters UI mode and installs the panic hook and the signal handler.
    pub fn new() -> std::io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave();
            previous(info);
        }));
        restore_on_signals()?;
        enter()?;
        let term = Terminal::new(CrosstermBackend::new(stdout()))?;
        Ok(Self { term })
    }

    /// Leaves UI mode, runs `$EDITOR` (or `vi`) on `text`, and comes back.
    pub fn edit(&mut self, text: &str) -> Result<String, String> {
        leave();
        let result = run_editor(text);
        let back = enter().and_then(|_| self.term.clear());
        back.map_err(|e| format!("restoring the terminal: {e}"))?;
        result
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        leave();
    }
}

/// On a terminating signal, restores the terminal and exits with the shell's status for it
/// (128 + the signal's number). In raw mode Ctrl+C is a key, not a signal: these come from
/// `kill`, a closing terminal, or a job-control shell.
fn restore_on_signals() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    leave();
                    std::process::exit(128 + signal);
                }
            })?;
    }
    Ok(())
}

fn run_editor(text: &str) -> Result<String, String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let dir = std::env::temp_dir().join(format!("mlcli-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("message.md");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    // $EDITOR may carry arguments ("code --wait"): run it through the shell.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .map_err(|e| format!("starting {editor}: {e}"))?;
    let edited = std::fs::read_to_string(&file).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(format!("{editor} exited with {status}; message unchanged"));
    }
    edited
}
