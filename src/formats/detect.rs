//! Format detection by content, never by file extension.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A model input this build recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// A GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face style directory (config.json + safetensors).
    SafetensorsDir(PathBuf),
}

/// Looks at the bytes (or, for a directory, the files) at `path` and says what it is.
pub fn detect(path: &Path) -> Result<Format> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return detect_dir(path);
    }
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .map_err(io)?
        .take(16)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.starts_with(super::gguf_header::MAGIC) {
        return Ok(Format::Gguf(path.to_path_buf()));
    }
    if looks_like_safetensors(&head) {
        // A weights file is a checkpoint only together with its config.json.
        if let Some(dir) = path.parent().filter(|d| d.join("config.json").is_file()) {
            return Ok(Format::SafetensorsDir(dir.to_path_buf()));
        }
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            found: "a safetensors file without config.json next to it".into(),
        });
    }
    let found = match head.len() {
        0 => "empty file".to_string(),
        n => format!(
            "unrecognised content (first bytes {:02x?})",
            &head[..n.min(8)]
        ),
    };
    Err(Error::UnknownFormat {
        path: path.to_path_buf(),
        found,
    })
}

/// Whether the file at `path` is a safetensors file (by content).
pub fn is_safetensors_file(path: &Path) -> bool {
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .is_ok()
        && looks_like_safetensors(&head)
}

/// A safetensors file starts with a little-endian u64 header length and then `{`.
fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && {
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[..8]);
        u64::from_le_bytes(len) < 100_000_000
    }
}

fn detect_dir(path: &Path) -> Result<Format> {
    let entries = std::fs::read_dir(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let has_config = names.iter().any(|n| n == "config.json");
    let has_safetensors = names.iter().any(|n| n.ends_with(".safetensors"));
    if has_config && has_safetensors {
        return Ok(Format::SafetensorsDir(path.to_path_buf()));
    }
    let found = match (has_config, has_safetensors) {
        (true, false) => "a directory with config.json but no *.safetensors weights".to_string(),
        (false, true) => "a directory with *.safetensors weights but no config.json".to_string(),
        _ => "a directory without config.json or *.safetensors".to_string(),
    };
    Err(Error::UnknownFormat {
        path: path.to_path_buf(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn gguf_is_recognised_by_magic_whatever_the_extension() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "model.bin", b"GGUF\x03\0\0\0rest");
        assert_eq!(detect(&p).unwrap(), Format::Gguf(p));
    }

    #[test]
    fn empty_and_random_files_are_unknown_formats() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "model.gguf", b"");
        assert!(
            matches!(detect(&p), Err(Error::UnknownFormat { found, .. }) if found == "empty file")
        );
        let p = write(d.path(), "r.gguf", &[7u8; 64]);
        assert!(matches!(detect(&p), Err(Error::UnknownFormat { .. })));
    }

    #[test]
    fn safetensors_directory_is_recognised() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "config.json", b"{}");
        write(d.path(), "model.safetensors", b"\x02\0\0\0\0\0\0\0{}");
        assert_eq!(
            detect(d.path()).unwrap(),
            Format::SafetensorsDir(d.path().into())
        );
        // The weights file stands for its directory.
        assert_eq!(
            detect(&d.path().join("model.safetensors")).unwrap(),
            Format::SafetensorsDir(d.path().into())
        );
        std::fs::remove_file(d.path().join("config.json")).unwrap();
        let e = detect(&d.path().join("model.safetensors")).unwrap_err();
        assert!(
            matches!(&e, Error::UnknownFormat { found, .. } if found.contains("config.json")),
            "{e}"
        );
    }
}
