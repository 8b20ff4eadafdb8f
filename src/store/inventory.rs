//! What is cached, in both caches (`mlcli list`), and removing it (`mlcli rm`): whole HF repos
//! or single files of them (blobs no snapshot links to any more are deleted), and PyPI
//! packages or versions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::catalogue;
use super::hub::cache::HubCache;
use super::hub::select::{self, Select};
use super::pypi::index::{compare_versions, normalize};
use super::reference::{self, Reference};
use super::usage::Usage;
use super::{Config, Error, Result};

/// A cached model.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// What to pass to `run`/`rm`: `org/repo`, or `pypi:package==version`.
    pub name: String,
    /// `hf` (the HF cache) or `pypi` (mlcli's cache).
    pub source: &'static str,
    /// The repository or version directory.
    pub path: PathBuf,
    /// The files (union over the repo's snapshots).
    pub files: Vec<File>,
    /// Bytes on disk (blobs, or files).
    pub size: u64,
    /// Quant tags of the GGUF files.
    pub quant: Vec<String>,
    /// Catalogue aliases served by these files.
    pub aliases: Vec<String>,
    /// Seconds since the epoch of the last `run`/`pull`, when known.
    pub last_used: Option<u64>,
}

/// A cached file.
#[derive(Clone, Debug, Serialize)]
pub struct File {
    /// Path inside the repository or package.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// What `rm` deleted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Removed {
    /// Paths deleted (files, or whole directories).
    pub removed: Vec<PathBuf>,
    /// Bytes freed.
    pub freed: u64,
}

/// Every cached model, HF repos first, each group sorted by name.
pub fn list(config: &Config) -> Result<Vec<Model>> {
    let usage = Usage::new(&config.mlcli_cache).load();
    let mut out = Vec::new();
    let cache = HubCache::new(config.hub_cache.clone());
    for dir in subdirs(&config.hub_cache) {
        let folder = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(repo) = folder.as_deref().and_then(HubCache::repo_of_folder) else {
            continue;
        };
        let files = hub_files(&cache, &repo);
        let size = dir_size(&dir.join("blobs"));
        let aliases = catalogue::catalogue()
            .models
            .iter()
            .filter(|e| e.repo == repo && files.iter().any(|f| f.name == e.file))
            .map(|e| e.alias.clone())
            .collect();
        out.push(model(
            &repo,
            "hf",
            dir,
            files,
            size,
            aliases,
            usage.get(&format!("hf:{repo}")),
        ));
    }
    for pkg_dir in subdirs(&config.pypi_dir()) {
        let Some(package) = pkg_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        let aliases: Vec<String> = catalogue::catalogue()
            .models
            .iter()
            .filter(|e| {
                e.pypi_ref()
                    .is_some_and(|p| normalize(&p.package) == package)
            })
            .map(|e| e.alias.clone())
            .collect();
        let mut versions = subdirs(&pkg_dir);
        versions.sort_by(|a, b| compare_versions(&name_of(a), &name_of(b)));
        for vdir in versions {
            let files: Vec<File> = plain_files(&vdir)
                .into_iter()
                .map(|p| File {
                    name: name_of(&p),
                    size: p.metadata().map_or(0, |m| m.len()),
                    path: p,
                })
                .collect();
            let size = files.iter().map(|f| f.size).sum();
            let name = format!("pypi:{package}=={}", name_of(&vdir));
            let used = usage.get(&format!("pypi:{package}"));
            out.push(model(
                &name,
                "pypi",
                vdir,
                files,
                size,
                aliases.clone(),
                used,
            ));
        }
    }
    Ok(out)
}

fn model(
    name: &str,
    source: &'static str,
    path: PathBuf,
    files: Vec<File>,
    size: u64,
    aliases: Vec<String>,
    last_used: Option<&u64>,
) -> Model {
    let mut quant: Vec<String> = files
        .iter()
        .filter_map(|f| select::quant_of(&f.name))
        .collect();
    quant.dedup();
    Model {
        name: name.to_string(),
        source,
        path,
        files,
        size,
        quant,
        aliases,
        last_used: last_used.copied(),
    }
}

/// Removes what `arg` names from the caches.
pub fn remove(config: &Config, arg: &str) -> Result<Removed> {
    let usage = Usage::new(&config.mlcli_cache);
    let cache = HubCache::new(config.hub_cache.clone());
    let mut out = Removed::default();
    match reference::parse(arg, None)? {
        Reference::Path(p) => {
            return Err(Error::BadReference {
                reference: arg.to_string(),
                reason: format!(
                    "{} is a local path; `mlcli rm` removes only cached models (see `mlcli list`)",
                    p.display()
                ),
            })
        }
        Reference::Hub(h) => {
            remove_hub(&cache, &h.repo, &h.select, &mut out)?;
            usage.forget(&format!("hf:{}", h.repo));
        }
        Reference::PyPi(p) => remove_pypi(config, &p.package, p.version.as_deref(), &mut out)?,
        Reference::Alias(e) => {
            remove_hub(&cache, &e.repo, &Select::File(e.file.clone()), &mut out)?;
            if let Some(p) = e.pypi_ref() {
                remove_pypi(config, &p.package, p.version.as_deref(), &mut out)?;
            }
        }
    }
    if out.removed.is_empty() {
        return Err(Error::NotInCache(arg.to_string()));
    }
    Ok(out)
}

fn remove_hub(cache: &HubCache, repo: &str, sel: &Select, out: &mut Removed) -> Result<()> {
    let dir = cache.repo_dir(repo);
    if !dir.is_dir() {
        return Ok(());
    }
    if *sel != Select::Default {
        let snapshots = subdirs(&dir.join("snapshots"));
        let names: Vec<String> = hub_files(cache, repo).into_iter().map(|f| f.name).collect();
        let doomed = select::select(repo, &names, sel).unwrap_or_default();
        if doomed.is_empty() {
            return Ok(());
        }
        for snap in &snapshots {
            for f in &doomed {
                let link = snap.join(f);
                if link.symlink_metadata().is_ok() {
                    std::fs::remove_file(&link).map_err(Error::io(&link))?;
                    out.removed.push(link);
                }
            }
        }
        let referenced = linked_blobs(&snapshots);
        if !referenced.is_empty() {
            for blob in plain_files(&dir.join("blobs")) {
                if !referenced.contains(&name_of(&blob)) {
                    out.freed += blob.metadata().map_or(0, |m| m.len());
                    std::fs::remove_file(&blob).map_err(Error::io(&blob))?;
                }
            }
            return Ok(());
        }
    }
    out.freed += dir_size(&dir.join("blobs"));
    std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
    let locks = cache.root().join(".locks").join(name_of(&dir));
    let _ = std::fs::remove_dir_all(locks);
    out.removed.push(dir);
    Ok(())
}

fn remove_pypi(
    config: &Config,
    package: &str,
    version: Option<&str>,
    out: &mut Removed,
) -> Result<()> {
    let pkg_dir = config.pypi_dir().join(normalize(package));
    let targets: Vec<PathBuf> = match version {
        None => vec![pkg_dir.clone()],
        Some(v) => subdirs(&pkg_dir)
            .into_iter()
            .filter(|d| compare_versions(&name_of(d), v) == std::cmp::Ordering::Equal)
            .collect(),
    };
    for t in targets.into_iter().filter(|t| t.is_dir()) {
        out.freed += dir_size(&t);
        std::fs::remove_dir_all(&t).map_err(Error::io(&t))?;
        out.removed.push(t);
    }
    if subdirs(&pkg_dir).is_empty() && pkg_dir.is_dir() {
        let _ = std::fs::remove_dir_all(&pkg_dir);
        Usage::new(&config.mlcli_cache).forget(&format!("pypi:{}", normalize(package)));
    }
    Ok(())
}

/// The files of all snapshots of a repo (the newest snapshot's copy of each path).
fn hub_files(cache: &HubCache, repo: &str) -> Vec<File> {
    let mut snaps = subdirs(&cache.repo_dir(repo).join("snapshots"));
    snaps.sort_by_key(|d| std::cmp::Reverse(d.metadata().and_then(|m| m.modified()).ok()));
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for snap in snaps {
        for name in cache.snapshot_files(repo, &name_of(&snap)) {
            if seen.insert(name.clone()) {
                let path = snap.join(&name);
                let size = path.metadata().map_or(0, |m| m.len());
                files.push(File { name, size, path });
            }
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// Blob names the snapshots' symlinks point to.
fn linked_blobs(snapshots: &[PathBuf]) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stack: Vec<PathBuf> = snapshots.to_vec();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if let Ok(target) = std::fs::read_link(&p) {
                out.insert(name_of(&target));
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !name_of(p).starts_with('.'))
        .collect();
    out.sort();
    out
}

fn plain_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}
