//! Models from the Hugging Face Hub: look a reference up in the HF cache, or pull it — the
//! commit of the revision, the tree listing, the selected files downloaded (resumable,
//! verified against the LFS sha256 or git blob id) into blobs and linked into the snapshot.

pub mod api;
pub mod cache;
pub mod select;

use std::path::{Path, PathBuf};

use self::api::{Api, Entry};
use self::cache::HubCache;
use self::select::Select;
use super::download::{self, Digest, Job};
use super::progress::Progress;
use super::{Error, Result};

/// A model on the Hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// `org/repo`.
    pub repo: String,
    /// Which files.
    pub select: Select,
    /// Branch, tag or commit.
    pub revision: String,
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.select {
            Select::Default => write!(f, "{}", self.repo),
            Select::Quant(t) => write!(f, "{}:{t}", self.repo),
            Select::File(p) => write!(f, "{}/{p}", self.repo),
        }
    }
}

/// Files of one snapshot.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The commit.
    pub commit: String,
    /// The snapshot directory.
    pub dir: PathBuf,
    /// The selected files' snapshot paths, the model file first.
    pub files: Vec<PathBuf>,
    /// Bytes downloaded by this call.
    pub downloaded: u64,
}

impl Snapshot {
    /// What to load: the (first) GGUF, or the snapshot directory of a safetensors model.
    pub fn model_path(&self) -> PathBuf {
        let is = |ext: &str| {
            self.files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)))
        };
        match self.files.first() {
            Some(f)
                if f.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf")) =>
            {
                f.clone()
            }
            _ if is("safetensors") => self.dir.clone(),
            Some(f) => f.clone(),
            None => self.dir.clone(),
        }
    }
}

/// The reference's files from the cache alone, when all of them are there.
pub fn cached(cache: &HubCache, r: &HubRef) -> Option<Snapshot> {
    let commit = cache.commit_for(&r.repo, &r.revision)?;
    let names = cache.snapshot_files(&r.repo, &commit);
    let chosen = select::select(&r.repo, &names, &r.select).ok()?;
    let dir = cache.snapshot(&r.repo, &commit);
    if !shards_present(&dir, &chosen) {
        return None;
    }
    let files = chosen
        .iter()
        .map(|f| cache.file(&r.repo, &commit, f))
        .collect::<Option<Vec<_>>>()?;
    Some(Snapshot {
        commit,
        dir,
        files,
        downloaded: 0,
    })
}

/// Brings the reference's files at the revision's current commit into the cache; files
/// already in the snapshot are not fetched again.
pub fn pull(api: &Api, cache: &HubCache, r: &HubRef, progress: &dyn Progress) -> Result<Snapshot> {
    let commit = api.revision(&r.repo, &r.revision)?;
    let tree = api.tree(&r.repo, &commit)?;
    let names: Vec<String> = tree.iter().map(|e| e.path.clone()).collect();
    let chosen = select::select(&r.repo, &names, &r.select)?;
    let entries: Vec<&Entry> = chosen
        .iter()
        .filter_map(|p| tree.iter().find(|e| &e.path == p))
        .collect();
    let missing: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| cache.file(&r.repo, &commit, &e.path).is_none())
        .collect();
    let needed: u64 = missing
        .iter()
        .map(|e| {
            let on_disk =
                std::fs::metadata(cache.partial(&r.repo, &expected_etag(e))).map_or(0, |m| m.len());
            e.size.saturating_sub(on_disk)
        })
        .sum();
    download::ensure_space(&cache.repo_dir(&r.repo).join("blobs"), needed)?;
    let mut downloaded = 0;
    for e in missing {
        downloaded += fetch_file(api, cache, &r.repo, &commit, e, progress)?;
    }
    cache.set_ref(&r.repo, &r.revision, &commit)?;
    let files = chosen
        .iter()
        .map(|f| {
            cache.file(&r.repo, &commit, f).ok_or_else(|| Error::Io {
                path: cache.snapshot(&r.repo, &commit).join(f),
                source: std::io::ErrorKind::NotFound.into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Snapshot {
        dir: cache.snapshot(&r.repo, &commit),
        commit,
        files,
        downloaded,
    })
}

/// Downloads one file into its blob (unless another process already did) and links it into
/// the snapshot; returns the bytes downloaded.
fn fetch_file(
    api: &Api,
    cache: &HubCache,
    repo: &str,
    commit: &str,
    e: &Entry,
    progress: &dyn Progress,
) -> Result<u64> {
    let meta = api.head(repo, commit, &e.path)?;
    let blob = cache.blob(repo, &meta.etag);
    let mut downloaded = 0;
    if !blob.is_file() {
        let _lock = download::lock(&cache.lock_path(repo, &meta.etag))?;
        if !blob.is_file() {
            let digest = match &e.lfs_sha256 {
                Some(sha) => Digest::Sha256(sha.clone()),
                None => Digest::GitBlobSha1(e.oid.clone()),
            };
            let partial = cache.partial(repo, &meta.etag);
            let job = Job {
                url: &meta.url,
                partial: &partial,
                size: meta.size.or(Some(e.size)),
                digest: Some(&digest),
                name: &e.path,
            };
            download::fetch(api.http, &job, progress)?;
            cache.store_blob(repo, &meta.etag, &partial)?;
            downloaded = e.size;
        }
    }
    cache.link(repo, commit, &e.path, &meta.etag)?;
    Ok(downloaded)
}

/// The blob name the Hub will announce for an entry (the LFS sha256, else the git oid).
fn expected_etag(e: &Entry) -> String {
    e.lfs_sha256.clone().unwrap_or_else(|| e.oid.clone())
}

/// For a sharded safetensors model, whether every shard its index names is in the snapshot.
fn shards_present(dir: &Path, chosen: &[String]) -> bool {
    let Some(index) = chosen
        .iter()
        .find(|f| f.ends_with(".safetensors.index.json"))
    else {
        return true;
    };
    let Ok(text) = std::fs::read_to_string(dir.join(index)) else {
        return false;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return false;
    };
    map.values()
        .filter_map(|v| v.as_str())
        .all(|shard| dir.join(shard).is_file())
}
