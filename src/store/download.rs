//! Resumable, verified downloads: bytes go to a partial file that survives interruption
//! (Ctrl+C, a dropped connection, a killed process); the next attempt asks for the rest with
//! `Range`; the whole file is hashed against the published digest before the caller moves it
//! into place, and a mismatch deletes it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use sha1::Digest as _;

use super::http::{header, status_error, transport_error, Follow, Http};
use super::progress::{FileProgress, Progress};
use super::{Error, Result};

/// Connection attempts per file before giving up (each resumes where the last stopped).
const ATTEMPTS: u32 = 6;
/// Free space kept beyond the bytes to download.
const SPACE_MARGIN: u64 = 16 << 20;
const BUF: usize = 256 << 10;

/// A published digest of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digest {
    /// SHA-256 (the Hub's LFS oid, an index's wheel hash, a SHA256SUMS line), lowercase hex.
    Sha256(String),
    /// Git's blob id: SHA-1 of `blob <len>\0<content>` (the Hub's oid for small files).
    GitBlobSha1(String),
}

impl Digest {
    fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::GitBlobSha1(_) => "git-sha1",
        }
    }

    fn expected(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::GitBlobSha1(h) => h,
        }
    }
}

/// One file to download.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Where to GET it (redirects are followed).
    pub url: &'a str,
    /// The partial file: appended to, kept on failure, removed on a checksum mismatch.
    pub partial: &'a Path,
    /// The announced size, when known.
    pub size: Option<u64>,
    /// The digest the complete file must have.
    pub digest: Option<&'a Digest>,
    /// The name shown in progress reports and errors.
    pub name: &'a str,
}

/// Downloads `job` into its partial file, resuming from what is there, then verifies it.
pub fn fetch(http: &Http, job: &Job, progress: &dyn Progress) -> Result<()> {
    let io = |e| Error::io(job.partial)(e);
    if let Some(dir) = job.partial.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(job.partial)
        .map_err(io)?;
    let mut pos = file.metadata().map_err(io)?.len();
    if job.size.is_some_and(|size| pos > size) {
        file.set_len(0).map_err(io)?;
        pos = 0;
    }
    let mut bar = progress.file(job.name, job.size, pos);
    let mut last_error = None;
    for attempt in 0..ATTEMPTS {
        if job.size == Some(pos) {
            break;
        }
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250 << attempt.min(5)));
        }
        match fetch_once(http, job, &mut file, &mut pos, &mut *bar) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if e.is_unreachable() => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    drop(file);
    if let Some(size) = job.size {
        if pos != size {
            return Err(last_error.unwrap_or(Error::SizeMismatch {
                file: job.name.to_string(),
                expected: size,
                found: pos,
            }));
        }
    } else if let Some(e) = last_error {
        return Err(e);
    }
    if let Some(digest) = job.digest {
        let found = hash_file(job.partial, digest)?;
        if found != digest.expected() {
            let _ = std::fs::remove_file(job.partial);
            return Err(Error::ChecksumMismatch {
                file: job.name.to_string(),
                algorithm: digest.algorithm(),
                expected: digest.expected().to_string(),
                found,
            });
        }
    }
    bar.finish();
    Ok(())
}

/// One request; `Ok(true)` when the body ended where the file ends.
fn fetch_once(
    http: &Http,
    job: &Job,
    file: &mut File,
    pos: &mut u64,
    bar: &mut dyn FileProgress,
) -> Result<bool> {
    let io = |e| Error::io(job.partial)(e);
    let range = format!("bytes={pos}-");
    let headers: &[(&str, &str)] = if *pos > 0 {
        &[("Range", &range), ("Accept-Encoding", "identity")]
    } else {
        &[("Accept-Encoding", "identity")]
    };
    let (url, resp) = http.send(false, job.url, headers, Follow::All)?;
    let status = resp.status().as_u16();
    match status {
        206 => {
            let start = header(&resp, "content-range")
                .and_then(|r| range_start(&r))
                .ok_or_else(|| Error::Protocol {
                    url: url.clone(),
                    reason: "206 without a valid Content-Range".into(),
                })?;
            if start != *pos {
                return Err(Error::Protocol {
                    url,
                    reason: format!("asked for bytes from {pos}, got a range from {start}"),
                });
            }
        }
        200 => {
            // The server ignored the range: start over.
            if *pos > 0 {
                file.set_len(0).map_err(io)?;
                *pos = 0;
                bar.set(0);
            }
        }
        416 if job.size.is_none() => return Ok(true),
        416 => {
            file.set_len(0).map_err(io)?;
            *pos = 0;
            bar.set(0);
            return Ok(false);
        }
        _ => {
            let mut body = String::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(4096)
                .read_to_string(&mut body);
            return Err(status_error(&url, status, &body));
        }
    }
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(io)?;
                return Err(transport_error(&url, ureq::Error::Io(e)));
            }
        };
        // Never more than announced: a body that runs on is cut at the size and refused.
        let room = job.size.map_or(n as u64, |size| size.saturating_sub(*pos));
        let keep = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        file.write_all(&buf[..keep]).map_err(io)?;
        *pos += keep as u64;
        bar.set(*pos);
        if keep < n {
            file.flush().map_err(io)?;
            return Err(Error::Protocol {
                url,
                reason: format!(
                    "the body runs past the announced {} bytes",
                    job.size.unwrap_or_default()
                ),
            });
        }
    }
    file.flush().map_err(io)?;
    Ok(job.size.is_none_or(|size| *pos >= size))
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    spec.split('-').next()?.trim().parse().ok()
}

/// The digest of a file in `digest`'s algorithm, lowercase hex.
pub fn hash_file(path: &Path, digest: &Digest) -> Result<String> {
    let io = Error::io(path);
    let mut f = File::open(path).map_err(Error::io(path))?;
    let len = f.metadata().map_err(Error::io(path))?.len();
    let mut buf = vec![0u8; BUF];
    let mut feed = |update: &mut dyn FnMut(&[u8])| -> std::io::Result<()> {
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            update(&buf[..n]);
        }
    };
    let hex = match digest {
        Digest::Sha256(_) => {
            let mut h = sha2::Sha256::new();
            feed(&mut |b| h.update(b)).map_err(io)?;
            hex(&h.finalize())
        }
        Digest::GitBlobSha1(_) => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            feed(&mut |b| h.update(b)).map_err(io)?;
            hex(&h.finalize())
        }
    };
    Ok(hex)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails when `dir`'s file system has less than `needed` bytes (plus a margin) available.
pub fn ensure_space(dir: &Path, needed: u64) -> Result<()> {
    if needed == 0 {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let available = fs4::available_space(dir).map_err(Error::io(dir))?;
    let needed = needed.saturating_add(SPACE_MARGIN);
    if available < needed {
        return Err(Error::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Takes an exclusive advisory lock on `path` (created if needed), waiting for another
/// process (mlcli or Python's `huggingface_hub`, which locks the same files) to finish.
/// The lock is released when the returned file is dropped.
pub fn lock(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    fs4::FileExt::lock(&f).map_err(Error::io(path))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_digest_matches_git_hash_object() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "hello\n").unwrap();
        // `printf 'hello\n' | git hash-object --stdin`
        let want = "ce013625030ba8dba906f756967f9e9ca394464a";
        let d = Digest::GitBlobSha1(want.into());
        assert_eq!(hash_file(&p, &d).unwrap(), want);
        let d = Digest::Sha256(String::new());
        assert_eq!(
            hash_file(&p, &d).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
    }

    #[test]
    fn space_check_refuses_more_than_the_disk_has() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_space(dir.path(), 1).is_ok());
        let err = ensure_space(dir.path(), u64::MAX / 2).unwrap_err();
        assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    }
}
