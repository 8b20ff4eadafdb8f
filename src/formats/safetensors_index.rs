//! Safetensors checkpoints of one or many files: a single `*.safetensors`, a directory of
//! them, or the shards that `model.safetensors.index.json` lists. Every shard's header is
//! read with the tolerant reader, and disagreements between the index and the shards are
//! collected as problems instead of failing the read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::safetensors_header::{self, Header, TensorEntry};
use crate::{Error, Result};

/// The index file Hugging Face writes next to sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The largest index file read (real ones are well under a megabyte).
const MAX_INDEX_LEN: u64 = 64 << 20;

/// One file of a checkpoint.
#[derive(Clone, Debug)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
}

/// All safetensors files of one checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The index file, when the checkpoint is sharded through one.
    pub index: Option<PathBuf>,
    /// The files, in index order (or name order without an index).
    pub shards: Vec<Shard>,
    /// `metadata.total_size` of the index, when given.
    pub total_size: Option<u64>,
    /// Where the index and the shards disagree (missing or unlisted tensors, duplicates).
    pub problems: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint of one file.
    pub fn single(path: &Path) -> Result<Self> {
        let header = safetensors_header::read(path)?;
        let mut c = Self {
            index: None,
            shards: vec![Shard {
                path: path.to_path_buf(),
                header,
            }],
            total_size: None,
            problems: Vec::new(),
        };
        c.problems = c.duplicate_problems();
        Ok(c)
    }

    /// The checkpoint in `dir`: through [`INDEX_FILE`] when present, else every
    /// `*.safetensors` file in name order.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::from_index(&index);
        }
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        let shards = files
            .into_iter()
            .map(|path| {
                Ok(Shard {
                    header: safetensors_header::read(&path)?,
                    path,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut c = Self {
            index: None,
            shards,
            total_size: None,
            problems: Vec::new(),
        };
        c.problems = c.duplicate_problems();
        Ok(c)
    }

    /// The shards listed by an index file, checked against it.
    pub fn from_index(index: &Path) -> Result<Self> {
        let bad = |reason: String| Error::MalformedSafetensors {
            path: index.to_path_buf(),
            reason,
        };
        let map = read_index(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<&str> = Vec::new();
        for (_, file) in &map.weight_map {
            if !files.contains(&file.as_str()) {
                files.push(file);
            }
        }
        let mut shards = Vec::with_capacity(files.len());
        for f in files {
            if Path::new(f).file_name().and_then(|n| n.to_str()) != Some(f) {
                return Err(bad(format!(
                    "shard '{f}' is not a plain file name next to the index"
                )));
            }
            let path = dir.join(f);
            shards.push(Shard {
                header: safetensors_header::read(&path)?,
                path,
            });
        }
        let mut c = Self {
            index: Some(index.to_path_buf()),
            shards,
            total_size: map.total_size,
            problems: Vec::new(),
        };
        c.problems = c.duplicate_problems();
        c.problems.extend(c.index_problems(&map.weight_map));
        Ok(c)
    }

    /// Every tensor with the shard that holds it, in shard order.
    pub fn tensors(&self) -> impl Iterator<Item = (&Shard, &TensorEntry)> {
        self.shards
            .iter()
            .flat_map(|s| s.header.tensors.iter().map(move |t| (s, t)))
    }

    /// Sum of the shard file sizes.
    pub fn file_size(&self) -> u64 {
        self.shards.iter().map(|s| s.header.file_size).sum()
    }

    fn duplicate_problems(&self) -> Vec<String> {
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        let mut problems = Vec::new();
        for (s, t) in self.tensors() {
            if let Some(first) = seen.insert(&t.name, &s.path) {
                problems.push(format!(
                    "tensor '{}' is in both {} and {}",
                    t.name,
                    file_name(first),
                    file_name(&s.path)
                ));
            }
        }
        problems
    }

    fn index_problems(&self, weight_map: &[(String, String)]) -> Vec<String> {
        let mut problems = Vec::new();
        let held: HashMap<&str, &str> = self
            .tensors()
            .map(|(s, t)| (t.name.as_str(), file_name(&s.path)))
            .collect();
        let mut listed = HashSet::new();
        for (tensor, file) in weight_map {
            listed.insert(tensor.as_str());
            match held.get(tensor.as_str()) {
                None => problems.push(format!(
                    "the index maps '{tensor}' to {file}, which does not hold it"
                )),
                Some(actual) if actual != file => problems.push(format!(
                    "the index maps '{tensor}' to {file}, but it is in {actual}"
                )),
                Some(_) => {}
            }
        }
        for (s, t) in self.tensors() {
            if !listed.contains(t.name.as_str()) {
                problems.push(format!(
                    "'{}' in {} is not listed in the index",
                    t.name,
                    file_name(&s.path)
                ));
            }
        }
        problems
    }
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("?")
}

/// The parts of an index file we use.
struct IndexMap {
    weight_map: Vec<(String, String)>,
    total_size: Option<u64>,
}

fn read_index(path: &Path) -> Result<IndexMap> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason: String| Error::MalformedSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_INDEX_LEN {
        return Err(bad(format!(
            "index of {size} bytes is larger than the {MAX_INDEX_LEN} bytes read"
        )));
    }
    let text = std::fs::read(path).map_err(io)?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("does not parse: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let weight_map = map
        .iter()
        .map(|(k, f)| match f.as_str() {
            Some(f) => Ok((k.clone(), f.to_string())),
            None => Err(bad(format!(
                "weight_map['{k}'] should be a file name, found {f}"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let total_size = v
        .get("metadata")
        .and_then(|m| m.get("total_size"))
        .and_then(|t| t.as_u64());
    Ok(IndexMap {
        weight_map,
        total_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::safetensors_header::build;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn sharded_checkpoint_reads_every_shard_in_index_order() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "model-00002-of-00002.safetensors",
            &build(&[], &[("b", "F16", &[2], &[0; 4])]),
        );
        write(
            d.path(),
            "model-00001-of-00002.safetensors",
            &build(&[], &[("a", "F32", &[1], &[0; 4])]),
        );
        let index = serde_json::json!({
            "metadata": {"total_size": 8},
            "weight_map": {
                "a": "model-00001-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors",
            }
        });
        write(d.path(), INDEX_FILE, index.to_string().as_bytes());
        let c = Checkpoint::from_dir(d.path()).unwrap();
        let names: Vec<&str> = c.tensors().map(|(_, t)| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(c.total_size, Some(8));
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }

    #[test]
    fn index_and_shard_disagreements_are_problems_not_failures() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "s1.safetensors",
            &build(
                &[],
                &[("a", "F32", &[1], &[0; 4]), ("c", "F32", &[1], &[0; 4])],
            ),
        );
        let index =
            serde_json::json!({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}});
        write(d.path(), INDEX_FILE, index.to_string().as_bytes());
        let c = Checkpoint::from_dir(d.path()).unwrap();
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("'b'"), "{:?}", c.problems);
        assert!(c.problems[1].contains("'c'"), "{:?}", c.problems);
    }

    #[test]
    fn shard_names_cannot_leave_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let index = serde_json::json!({"weight_map": {"a": "../x.safetensors"}});
        write(d.path(), INDEX_FILE, index.to_string().as_bytes());
        let err = Checkpoint::from_dir(d.path()).unwrap_err().to_string();
        assert!(err.contains("plain file name"), "{err}");
    }
}
