//! The reference oracle's fixtures, made on first use: `scripts/oracle/run.sh` builds every
//! case of `scripts/oracle/cases.py` (transformers' tiny random-weight checkpoints, their
//! logits, llama.cpp's GGUFs) into mlcli's cache, keyed by the scripts that made them, so no
//! weights live in the repository and a changed case is remade.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

use crate::store::{download, Config};

/// The files whose content decides the fixtures: a change to any of them remakes them all.
const INPUTS: &[&str] = &[
    "scripts/oracle/run.sh",
    "scripts/oracle/make.py",
    "scripts/oracle/cases.py",
    "scripts/oracle/convert.py",
    "scripts/lib/llama-cpp-source.sh",
];

/// Marks a directory whose every case was written.
const COMPLETE: &str = ".complete";

/// The directory holding one subdirectory per oracle case: `$MLCLI_ORACLE_FIXTURES` when set
/// and not empty (used as it is), else `oracle/<key>` in mlcli's cache, made on first use
/// (once across test threads and test binaries). Panics (it is test support) with what went
/// wrong and what the generator needs.
pub fn oracle_fixtures() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if let Some(dir) = std::env::var_os("MLCLI_ORACLE_FIXTURES").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = Config::from_env().mlcli_cache.join("oracle");
        make(repo, &root)
    });
    match ready {
        Ok(dir) => dir.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// The fixtures' directory under `root`, generated unless a complete one is there.
fn make(repo: &Path, root: &Path) -> Result<PathBuf, String> {
    let dir = root.join(key(repo)?);
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    let _lock = download::lock(&root.join(".lock")).map_err(|e| e.to_string())?;
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new("bash")
        .arg(repo.join("scripts/oracle/run.sh"))
        .arg("--out")
        .arg(&partial)
        .current_dir(repo)
        .output()
        .map_err(|e| format!("oracle: cannot start bash scripts/oracle/run.sh: {e}"))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "oracle: scripts/oracle/run.sh --out {} failed ({}). It needs python3 with pip and \
             venv and access to PyPI (torch, transformers, the llama-cpp-python sdist); set \
             MLCLI_ORACLE_FIXTURES to a directory it made elsewhere to skip generating.\n{}",
            partial.display(),
            out.status,
            tail.join("\n")
        ));
    }
    let mark = partial.join(COMPLETE);
    std::fs::write(&mark, b"").map_err(|e| format!("oracle: {}: {e}", mark.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).map_err(|e| {
        format!(
            "oracle: cannot move {} to {}: {e}",
            partial.display(),
            dir.display()
        )
    })?;
    Ok(dir)
}

/// The first 16 hex digits of the SHA-256 over [`INPUTS`] (name and content of each).
fn key(repo: &Path) -> Result<String, String> {
    let mut hash = Sha256::new();
    for name in INPUTS {
        let path = repo.join(name);
        let text = std::fs::read(&path).map_err(|e| format!("oracle: {}: {e}", path.display()))?;
        hash.update(name.as_bytes());
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(&text);
    }
    Ok(hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_generator_scripts() {
        let repo = tempfile::tempdir().unwrap();
        for name in INPUTS {
            let path = repo.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, name.as_bytes()).unwrap();
        }
        let before = key(repo.path()).unwrap();
        assert_eq!(before.len(), 16);
        assert_eq!(key(repo.path()).unwrap(), before);
        std::fs::write(repo.path().join("scripts/oracle/cases.py"), b"CASES = []").unwrap();
        assert_ne!(key(repo.path()).unwrap(), before);
    }

    #[test]
    fn a_complete_directory_is_used_without_running_the_generator() {
        let repo = tempfile::tempdir().unwrap();
        for name in INPUTS {
            let path = repo.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            // A generator that would fail if it were run.
            std::fs::write(&path, b"exit 7").unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let err = make(repo.path(), root.path()).unwrap_err();
        assert!(err.contains("failed"), "{err}");
        let dir = root.path().join(key(repo.path()).unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(COMPLETE), b"").unwrap();
        assert_eq!(make(repo.path(), root.path()).unwrap(), dir);
    }
}
