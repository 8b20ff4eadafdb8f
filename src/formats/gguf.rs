//! GGUF files opened for loading: validated by our tolerant header reader, then read through
//! candle's `gguf_file`, with typed metadata getters that accept any integer width.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::Device;

use super::gguf_header::{self, Header};
use crate::{Error, Result};

/// An open GGUF file.
pub struct Gguf {
    path: PathBuf,
    header: Header,
    content: gguf_file::Content,
    file: Mutex<std::fs::File>,
}

impl Gguf {
    /// Opens and validates `path`: structure, bounds and tensor types are checked before
    /// anything is loaded.
    pub fn open(path: &Path) -> Result<Self> {
        let header = gguf_header::read(path)?;
        header.check_loadable(path)?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| Error::MalformedGguf {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            content,
            file: Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Candle's view of the header (metadata values with their contents).
    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    /// Our own view of the header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.str("general.architecture")
    }

    /// Names of all tensors in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.header.tensors.iter().map(|t| t.name.as_str())
    }

    /// True when the file holds a tensor with this (GGUF) name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's shape in candle's order (outermost first), when present.
    pub fn tensor_shape(&self, name: &str) -> Option<Vec<usize>> {
        let t = self.header.tensors.iter().find(|t| t.name == name)?;
        t.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).ok())
            .collect()
    }

    /// Reads one tensor onto `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| Error::Device("GGUF reader lock poisoned".into()))?;
        self.content
            .tensor(&mut *file, name, device)
            .map_err(|e| Error::MalformedGguf {
                path: self.path.clone(),
                reason: format!("tensor '{name}': {e}"),
            })
    }

    fn value(&self, key: &str) -> Result<&gguf_file::Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::MissingMetadata(key.to_string()))
    }

    /// True when the key is present.
    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            gguf_file::Value::String(s) => Ok(s),
            other => Err(bad(key, "a string", other)),
        }
    }

    /// An unsigned integer value of any width.
    pub fn uint(&self, key: &str) -> Result<u64> {
        use gguf_file::Value as V;
        let v = self.value(key)?;
        let n: i128 = match v {
            V::U8(x) => *x as i128,
            V::I8(x) => *x as i128,
            V::U16(x) => *x as i128,
            V::I16(x) => *x as i128,
            V::U32(x) => *x as i128,
            V::I32(x) => *x as i128,
            V::U64(x) => *x as i128,
            V::I64(x) => *x as i128,
            other => return Err(bad(key, "an integer", other)),
        };
        u64::try_from(n).map_err(|_| bad(key, "a non-negative integer", v))
    }

    /// An unsigned integer that must fit a `usize`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.uint(key)?;
        usize::try_from(v).map_err(|_| Error::BadMetadata {
            key: key.into(),
            expected: "an integer that fits in usize",
            found: v.to_string(),
        })
    }

    /// A float value (f32 or f64).
    pub fn float(&self, key: &str) -> Result<f64> {
        match self.value(key)? {
            gguf_file::Value::F32(x) => Ok(*x as f64),
            gguf_file::Value::F64(x) => Ok(*x),
            other => Err(bad(key, "a float", other)),
        }
    }

    /// A boolean value.
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            gguf_file::Value::Bool(b) => Ok(*b),
            other => Err(bad(key, "a boolean", other)),
        }
    }

    /// An optional string: `Ok(None)` when absent.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        if self.has(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional value: `Ok(None)` when absent, an error when present with the wrong type.
    pub fn opt<T>(&self, key: &str, get: impl Fn(&Self, &str) -> Result<T>) -> Result<Option<T>> {
        if self.has(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn bad(key: &str, expected: &'static str, found: &gguf_file::Value) -> Error {
    Error::BadMetadata {
        key: key.to_string(),
        expected,
        found: format!("{:?}", found.value_type()),
    }
}
