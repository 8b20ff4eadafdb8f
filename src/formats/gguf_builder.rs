//! A minimal GGUF writer for tests, fuzz seeds and synthetic models: any metadata value and
//! any tensor type id, including types candle cannot represent (IQ4_XS, TQ2_0, MXFP4, ids no
//! table knows), so readers can be tested on files this build cannot run; [`write_streamed`]
//! writes large files without holding them twice.

use std::path::Path;

use super::ggml_types;
use super::gguf_header::MAGIC;
use super::gguf_value::{Array, Value, ValueType};
use crate::{Error, Result};

/// One tensor to write: name, GGUF dims (`ne[]`, fastest first), type id and raw bytes.
#[derive(Clone, Debug)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
#[derive(Clone, Debug)]
pub struct Builder {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// A complete array value holding `items` (all of type `elem_type`).
pub fn array(elem_type: ValueType, items: Vec<Value>) -> Value {
    Value::Array(Array {
        elem_type,
        len: items.len() as u64,
        items,
    })
}

impl Builder {
    /// An empty file with the default alignment of 32.
    pub fn new() -> Self {
        Self {
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a metadata entry (written in call order). Setting `general.alignment` to an
    /// integer also changes where tensor data is placed.
    pub fn meta(mut self, key: &str, value: Value) -> Self {
        if key == "general.alignment" {
            if let Some(a) = value.as_u64().filter(|a| *a > 0) {
                self.alignment = a;
            }
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor with the given bytes (the caller makes them the right length).
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        self
    }

    /// Adds a tensor of zero bytes sized by the ggml type table (`type_id` must be in it).
    pub fn zeroed_tensor(self, name: &str, dims: &[u64], type_id: u32) -> Self {
        let elements: u64 = dims.iter().product();
        let bytes = ggml_types::by_id(type_id)
            .and_then(|t| t.bytes_for(elements))
            .unwrap_or(0);
        self.tensor(name, dims, type_id, vec![0u8; bytes as usize])
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<Entry> = self.tensors.iter().map(Tensor::entry).collect();
        let (mut b, offsets) = header(self.alignment, &self.metadata, &entries);
        let data_start = b.len() as u64;
        for (t, off) in self.tensors.iter().zip(offsets) {
            b.resize((data_start + off) as usize, 0);
            b.extend_from_slice(&t.data);
        }
        b
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// One tensor of [`write_streamed`]: name, GGUF dims (`ne[]`, fastest first), type id and
/// its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// `ne[]`, fastest-varying dimension first.
    pub dims: &'a [u64],
    /// ggml type id.
    pub type_id: u32,
    /// The tensor's bytes.
    pub data: &'a [u8],
}

impl Tensor {
    fn entry(&self) -> Entry<'_> {
        Entry {
            name: &self.name,
            dims: &self.dims,
            type_id: self.type_id,
            data: &self.data,
        }
    }
}

/// Writes a GGUF v3 file (alignment 32) of `metadata` and `tensors` to `path`, the tensor
/// data copied straight from the slices: for files larger than memory should hold twice.
pub fn write_streamed(path: &Path, metadata: &[(String, Value)], tensors: &[Entry]) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let (head, offsets) = header(32, metadata, tensors);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&head).map_err(io)?;
    let mut written = 0u64;
    for (t, off) in tensors.iter().zip(offsets) {
        f.write_all(&vec![0u8; (off - written) as usize])
            .map_err(io)?;
        f.write_all(t.data).map_err(io)?;
        written = off + t.data.len() as u64;
    }
    f.flush().map_err(io)
}

/// The header (magic, counts, metadata, tensor directory, padding to `alignment`) and each
/// tensor's offset in the data section.
fn header(alignment: u64, metadata: &[(String, Value)], tensors: &[Entry]) -> (Vec<u8>, Vec<u64>) {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut b, k);
        b.extend_from_slice(&v.value_type().id().to_le_bytes());
        put_value(&mut b, v);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        put_str(&mut b, t.name);
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.type_id.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).div_ceil(alignment) * alignment;
    }
    pad(&mut b, alignment);
    (b, offsets)
}

fn pad(b: &mut Vec<u8>, alignment: u64) {
    let len = (b.len() as u64).div_ceil(alignment) * alignment;
    b.resize(len as usize, 0);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::Str(s) => put_str(b, s),
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            b.extend_from_slice(&a.elem_type.id().to_le_bytes());
            b.extend_from_slice(&(a.items.len() as u64).to_le_bytes());
            for item in &a.items {
                put_value(b, item);
            }
        }
    }
}
