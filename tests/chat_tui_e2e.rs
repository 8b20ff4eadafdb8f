//! End to end in a real pseudo-terminal (tmux) with the real SmolLM2 model: start
//! `mlcli run`, ask a question and see the streamed answer, stop a reply with Esc, `/regen`,
//! `/save`, quit — and the terminal is restored (same `stty` settings as before), also when
//! the process is killed with SIGTERM, SIGINT or SIGQUIT.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mlcli::models::testing::{real_model, SMOLLM2};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(dir: &Path) -> Self {
        // Tests of one binary run in parallel: one session each.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = format!("mlcli-e2e-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "100",
                "-y",
                "30",
                "-c",
            ])
            .arg(dir)
            .arg("sh")
            .status()
            .expect("tmux is installed (the chat end-to-end test needs it)")
            .success();
        assert!(ok, "tmux could not start a session");
        Self { session }
    }

    fn send(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok);
    }

    fn type_line(&self, text: &str) {
        self.send(&["-l", text]);
        self.send(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool, secs: u64) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tmux {
    /// A tmux format variable of the pane (`alternate_on`, `mouse_any_flag`, `pane_pid`).
    fn pane(&self, var: &str) -> String {
        let out = Command::new("tmux")
            .args(["display", "-p", "-t", &self.session, &format!("#{{{var}}}")])
            .output()
            .expect("tmux display");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The pid of a child process of `parent` (read from /proc, which every Linux CI has).
fn child_of(parent: &str) -> String {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .find_map(|stat| {
            // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            (ppid == parent).then(|| head.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_default()
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

const IDLE: &str = "message · Enter sends";

#[test]
fn chat_in_a_real_terminal_streams_stops_regenerates_saves_and_restores_the_terminal() {
    let model = real_model(SMOLLM2);
    let dir = tempfile::tempdir().unwrap();
    let t = Tmux::start(dir.path());
    let before = dir.path().join("before.txt");
    let after = dir.path().join("after.txt");
    t.type_line(&format!("stty -g > {}", before.display()));
    t.wait_for("the shell", |_| before.exists(), 30);
    // An "editor" that writes a fixed message, for Ctrl+G.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nprintf 'composed in the editor' > \"$1\"\n",
    )
    .unwrap();
    t.type_line(&format!(
        "cd {}; EDITOR='sh {}' XDG_DATA_HOME={} {} run {} --temp 0; stty -g > {}",
        dir.path().display(),
        editor.display(),
        dir.path().display(),
        env!("CARGO_BIN_EXE_mlcli"),
        model.display(),
        after.display()
    ));
    t.wait_for("the chat screen", |s| s.contains(IDLE), 60);

    // Ctrl+G composes in $EDITOR; Ctrl+U clears the input again.
    t.send(&["C-g"]);
    t.wait_for(
        "the edited input",
        |s| s.contains("composed in the editor"),
        30,
    );
    t.send(&["C-u"]);

    // A question, answered while streaming.
    t.type_line("What is the capital of France? Answer in English.");
    t.wait_for(
        "the answer",
        |s| s.contains("Paris") && s.contains(IDLE),
        120,
    );

    // A long reply, stopped with Esc once it has started.
    t.type_line("Write a very long story about a dragon who learns to fly.");
    t.wait_for(
        "streaming",
        |s| s.contains("generating…") && s.contains('▍'),
        120,
    );
    t.send(&["Escape"]);
    let stopped = t.wait_for("the stopped reply", |s| s.contains(IDLE), 30);
    assert!(
        !stopped.contains('▍'),
        "reply still streaming after Esc:\n{stopped}"
    );

    // Regenerate it (stopping again), then save.
    t.type_line("/regen");
    t.wait_for("regeneration", |s| s.contains("generating…"), 60);
    t.send(&["Escape"]);
    t.wait_for("idle after regen", |s| s.contains(IDLE), 30);
    t.type_line("/save chat.json");
    t.wait_for("the save notice", |s| s.contains("saved to chat.json"), 30);
    t.type_line("/quit");
    // The command line itself is on screen, so wait for the file, not for text.
    t.wait_for(
        "exit",
        |_| std::fs::metadata(&after).is_ok_and(|m| m.len() > 0),
        30,
    );

    let saved = std::fs::read_to_string(dir.path().join("chat.json")).expect("chat.json saved");
    let v: serde_json::Value = serde_json::from_str(&saved).expect("saved JSON parses");
    let messages = v["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4, "{saved}");
    assert!(messages[1]["content"]
        .as_str()
        .unwrap_or("")
        .contains("Paris"));
    assert!(messages[2]["content"]
        .as_str()
        .unwrap_or("")
        .contains("dragon"));
    assert_eq!(messages[3]["role"], "assistant");
    let before = std::fs::read_to_string(&before).expect("stty before");
    let after = std::fs::read_to_string(&after).expect("stty after");
    assert_eq!(before, after, "terminal settings not restored");
    assert!(
        dir.path().join("mlcli/history.jsonl").exists(),
        "input history persisted"
    );
}

#[test]
fn a_killed_chat_restores_the_terminal() {
    let model = real_model(SMOLLM2);
    let dir = tempfile::tempdir().unwrap();
    let t = Tmux::start(dir.path());
    let before = dir.path().join("before.txt");
    t.type_line(&format!("stty -g > {}", before.display()));
    t.wait_for("the shell", |_| before.exists(), 30);
    let shell = t.pane("pane_pid");
    for (signal, status) in [("TERM", 143), ("INT", 130), ("QUIT", 131)] {
        let after = dir.path().join(format!("after-{signal}.txt"));
        t.type_line(&format!(
            "XDG_DATA_HOME={} {} run {} --temp 0; echo $? > {}.status; stty -g > {}",
            dir.path().display(),
            env!("CARGO_BIN_EXE_mlcli"),
            model.display(),
            after.display(),
            after.display()
        ));
        t.wait_for("the chat screen", |s| s.contains(IDLE), 60);
        assert_eq!(t.pane("alternate_on"), "1");
        let pid = child_of(&shell);
        assert!(
            !pid.is_empty(),
            "mlcli's pid not found under the shell {shell}"
        );
        // The shell's builtin kill: no procps needed.
        let ok = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()
            .expect("sh")
            .success();
        assert!(ok, "kill -{signal} {pid}");
        t.wait_for(
            "exit",
            |_| std::fs::metadata(&after).is_ok_and(|m| m.len() > 0),
            30,
        );
        let code = std::fs::read_to_string(format!("{}.status", after.display())).unwrap();
        assert_eq!(
            code.trim(),
            status.to_string(),
            "exit status after SIG{signal}"
        );
        assert_eq!(
            std::fs::read_to_string(&before).unwrap(),
            std::fs::read_to_string(&after).unwrap(),
            "terminal settings not restored after SIG{signal}"
        );
        assert_eq!(
            t.pane("alternate_on"),
            "0",
            "alternate screen after SIG{signal}"
        );
        assert_eq!(
            t.pane("mouse_any_flag"),
            "0",
            "mouse capture after SIG{signal}"
        );
    }
}

#[test]
fn a_dumb_terminal_gets_a_clear_error_instead_of_the_full_screen_chat() {
    let model = real_model(SMOLLM2);
    let dir = tempfile::tempdir().unwrap();
    let t = Tmux::start(dir.path());
    let status = dir.path().join("status.txt");
    t.type_line(&format!(
        "TERM=dumb {} run {} 2> err.txt; echo $? > {}",
        env!("CARGO_BIN_EXE_mlcli"),
        model.display(),
        status.display()
    ));
    t.wait_for(
        "exit",
        |_| std::fs::metadata(&status).is_ok_and(|m| m.len() > 0),
        30,
    );
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "2");
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert!(err.contains("TERM=dumb") && err.contains("-p"), "{err}");
    assert_eq!(t.pane("alternate_on"), "0");
}
