//! The Hugging Face cache layout, shared with Python's `huggingface_hub`:
//! `models--org--repo/blobs/<etag>` holds content, `snapshots/<commit>/<path>` are relative
//! symlinks to blobs, `refs/<revision>` holds a commit hash, and partial downloads are
//! `blobs/<etag>.incomplete` guarded by `.locks/models--org--repo/<etag>.lock`. Paths come
//! from the `hf-hub` crate where it has them; nothing outside this file depends on it.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::store::{safe_name, Error, Result};

/// One HF hub cache directory.
#[derive(Clone, Debug)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    /// The cache at `root` (`$HF_HUB_CACHE`).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn cache_repo(&self, repo: &str, revision: &str) -> hf_hub::CacheRepo {
        Cache::new(self.root.clone()).repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
    }

    fn folder(repo: &str) -> String {
        Repo::new(repo.to_string(), RepoType::Model).folder_name()
    }

    /// `models--org--repo`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(Self::folder(repo))
    }

    /// The repository id of a `models--org--repo` folder name.
    pub fn repo_of_folder(folder: &str) -> Option<String> {
        let rest = folder.strip_prefix("models--")?;
        Some(rest.replace("--", "/"))
    }

    /// `blobs/<etag>`.
    pub fn blob(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// `blobs/<etag>.incomplete`, the partial download `huggingface_hub` also resumes from.
    pub fn partial(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    /// `.locks/models--org--repo/<etag>.lock`, the lock `huggingface_hub` takes too.
    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(Self::folder(repo))
            .join(format!("{etag}.lock"))
    }

    /// `snapshots/<commit>`.
    pub fn snapshot(&self, repo: &str, commit: &str) -> PathBuf {
        self.cache_repo(repo, commit).pointer_path(commit)
    }

    /// The commit `revision` points to in the cache: `refs/<revision>`, or the revision itself
    /// when it is a commit hash with a snapshot.
    pub fn commit_for(&self, repo: &str, revision: &str) -> Option<String> {
        let refs = self.repo_dir(repo).join("refs").join(revision);
        if let Ok(commit) = std::fs::read_to_string(refs) {
            let commit = commit.trim();
            if is_commit_hash(commit) {
                return Some(commit.to_string());
            }
        }
        (is_commit_hash(revision) && self.snapshot(repo, revision).is_dir())
            .then(|| revision.to_string())
    }

    /// Points `refs/<revision>` at `commit` (not written when the revision is the commit).
    pub fn set_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let dir = self.repo_dir(repo).join("refs");
        safe_name::inside(&dir, &dir.join(revision))?;
        self.cache_repo(repo, revision)
            .create_ref(commit)
            .map_err(Error::io(dir))
    }

    /// The snapshot path of `file` at `commit` when its blob is present.
    pub fn file(&self, repo: &str, commit: &str, file: &str) -> Option<PathBuf> {
        let p = self.snapshot(repo, commit).join(file);
        p.is_file().then_some(p)
    }

    /// Every file of a snapshot, as repository paths (`dir/file`), sorted.
    pub fn snapshot_files(&self, repo: &str, commit: &str) -> Vec<String> {
        let root = self.snapshot(repo, commit);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.is_file() {
                    if let Ok(rel) = p.strip_prefix(&root) {
                        out.push(rel.to_string_lossy().replace('\\', "/"));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Moves a verified partial download to `blobs/<etag>`.
    pub fn store_blob(&self, repo: &str, etag: &str, partial: &Path) -> Result<PathBuf> {
        let blob = self.blob(repo, etag);
        safe_name::inside(&self.repo_dir(repo), &blob)?;
        std::fs::rename(partial, &blob).map_err(Error::io(&blob))?;
        Ok(blob)
    }

    /// Links `snapshots/<commit>/<file>` to `blobs/<etag>` with a relative symlink, as
    /// `huggingface_hub` does; returns the snapshot path.
    /// The link is made under a temporary name and renamed into place, so processes pulling
    /// the same file at once each leave a good link.
    pub fn link(&self, repo: &str, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let snapshot = self.snapshot(repo, commit);
        let dst = snapshot.join(file);
        safe_name::inside(&snapshot, &dst)?;
        safe_name::inside(&self.repo_dir(repo), &self.blob(repo, etag))?;
        let dir = dst.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let depth = file.split('/').count() + 1;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        let name = dst
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into());
        let tmp = dir.join(format!(".{name}.{}.link", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        symlink(&target, &tmp).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(Error::io(&dst))?;
        Ok(dst)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // Without symlinks (Windows without developer mode) `huggingface_hub` copies the blob.
    let blob = link
        .parent()
        .map_or_else(|| target.to_path_buf(), |d| d.join(target));
    std::fs::copy(blob, link).map(|_| ())
}

/// A full 40-hex-digit commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path().to_path_buf());
        let (repo, commit, etag) = ("org/name", "a".repeat(40), "e".repeat(64));
        assert!(cache.repo_dir(repo).ends_with("models--org--name"));
        assert_eq!(
            HubCache::repo_of_folder("models--org--name").as_deref(),
            Some(repo)
        );
        let partial = cache.partial(repo, &etag);
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        std::fs::write(&partial, b"weights").unwrap();
        cache.store_blob(repo, &etag, &partial).unwrap();
        let linked = cache.link(repo, &commit, "sub/w.gguf", &etag).unwrap();
        assert_eq!(
            std::fs::read_link(&linked).unwrap(),
            Path::new(&format!("../../../blobs/{etag}"))
        );
        assert_eq!(std::fs::read(&linked).unwrap(), b"weights");
        cache.set_ref(repo, "main", &commit).unwrap();
        let refs = std::fs::read_to_string(cache.repo_dir(repo).join("refs/main")).unwrap();
        assert_eq!(
            refs, commit,
            "no trailing newline: Python reads the ref verbatim"
        );
        assert_eq!(cache.commit_for(repo, "main"), Some(commit.clone()));
        assert_eq!(cache.commit_for(repo, &commit), Some(commit.clone()));
        assert_eq!(cache.snapshot_files(repo, &commit), vec!["sub/w.gguf"]);
        assert_eq!(cache.file(repo, &commit, "sub/w.gguf"), Some(linked));
    }
}
