//! When each cached model was last used, kept in mlcli's own cache (`usage.json`) so that the
//! HF cache holds nothing `huggingface_hub` does not write itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The usage record.
#[derive(Clone, Debug)]
pub struct Usage {
    path: PathBuf,
}

impl Usage {
    /// The record in `mlcli_cache`.
    pub fn new(mlcli_cache: &Path) -> Self {
        Self {
            path: mlcli_cache.join("usage.json"),
        }
    }

    /// Seconds since the epoch of the last use of each key (`hf:org/repo`, `pypi:package`).
    pub fn load(&self) -> BTreeMap<String, u64> {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Records a use of `key` now. Best effort: a read-only cache only loses the time.
    pub fn touch(&self, key: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.update(|m| {
            m.insert(key.to_string(), now);
        });
    }

    /// Forgets `key` (after `rm`).
    pub fn forget(&self, key: &str) {
        self.update(|m| {
            m.remove(key);
        });
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, u64>)) {
        let mut map = self.load();
        change(&mut map);
        let Some(dir) = self.path.parent() else {
            return;
        };
        let tmp = dir.join(format!(".usage.{}.json", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, serde_json::to_vec_pretty(&map).unwrap_or_default()))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_records_and_forget_removes() {
        let dir = tempfile::tempdir().unwrap();
        let u = Usage::new(dir.path());
        assert!(u.load().is_empty());
        u.touch("hf:o/r");
        u.touch("pypi:p");
        let m = u.load();
        assert!(m["hf:o/r"] > 1_600_000_000);
        u.forget("hf:o/r");
        assert_eq!(u.load().keys().collect::<Vec<_>>(), ["pypi:p"]);
    }
}
