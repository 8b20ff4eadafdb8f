//! Shared by the store's integration tests: a local HTTP server, a fake Hub, a fake package
//! index, and the real `mlcli` binary run in a private home with its own caches.
#![allow(dead_code)]

pub mod hub;
pub mod index;
pub mod serve;
pub mod server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Variables the user's environment must not leak into a test.
const SCRUBBED: &[&str] = &[
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "PIP_INDEX_URL",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
];

/// A private home: empty caches, the Hub and the index pointing at dead ports until set.
pub struct Env {
    pub dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

/// A finished run.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let vars = vec![
            ("HOME".into(), d.clone()),
            ("HF_HOME".into(), format!("{d}/hf")),
            ("XDG_CACHE_HOME".into(), format!("{d}/xdg")),
            ("HF_ENDPOINT".into(), server::dead_url()),
            (
                "PIP_INDEX_URL".into(),
                format!("{}/simple", server::dead_url()),
            ),
        ];
        Env { dir, vars }
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Env {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        self
    }

    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn hub_cache(&self) -> PathBuf {
        self.dir.path().join("hf/hub")
    }

    pub fn pypi_cache(&self) -> PathBuf {
        self.dir.path().join("xdg/mlcli/pypi")
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.hub_cache()
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mlcli"));
        for k in SCRUBBED {
            c.env_remove(k);
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)))
            .args(args)
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, "")
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Asserts success and returns stdout's first line as a path.
    pub fn path(&self) -> PathBuf {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        PathBuf::from(self.stdout.lines().next().unwrap_or_default())
    }

    /// Asserts failure with exit status `code` and returns stderr.
    pub fn failure(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {} stderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

/// Every file under `dir` (recursive), for "nothing was written" checks.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
