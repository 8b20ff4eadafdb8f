//! A tolerant GGUF header reader of our own: bounds every length and offset by the file size
//! before allocating, keeps tensors of any type (naming the ones this build cannot compute
//! with), and reports where a broken file goes wrong. Used to validate a file before candle's
//! reader loads it, and by `inspect`.

use std::io::{BufReader, Read};
use std::path::Path;

use super::ggml_types;
use crate::{Error, Result};

/// The GGUF magic, as the first four bytes of the file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// A metadata value, with arrays summarised by element type and length.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i128),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string (lossily decoded).
    Str(String),
    /// An array: element type id and length (contents skipped).
    Array {
        /// GGUF value type of the elements.
        elem_type: u32,
        /// Number of elements.
        len: u64,
    },
}

/// One tensor's directory entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Name in the file.
    pub name: String,
    /// Dimensions as GGUF stores them (`ne[]`, fastest-varying first).
    pub dims: Vec<u64>,
    /// ggml type id.
    pub type_id: u32,
    /// Offset relative to the start of the data section.
    pub offset: u64,
}

/// The parsed header.
#[derive(Clone, Debug)]
pub struct Header {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorEntry>,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
}

impl Header {
    /// Looks a metadata key up.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`, when present and a string.
    pub fn architecture(&self) -> Option<&str> {
        match self.get("general.architecture") {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Checks that every tensor has a type this build computes with and lies inside the file.
    pub fn check_loadable(&self, path: &Path) -> Result<()> {
        for t in &self.tensors {
            let ty = ggml_types::by_id(t.type_id);
            if ty.is_none_or(|ty| ty.candle.is_none()) {
                return Err(Error::UnsupportedTensorType {
                    tensor: t.name.clone(),
                    found: ggml_types::name_of(t.type_id),
                    supported: ggml_types::supported_names(),
                });
            }
        }
        for t in &self.tensors {
            let size = self.tensor_bytes(t).ok_or_else(|| {
                malformed(
                    path,
                    format!(
                        "tensor '{}' has {:?} elements, not a whole number of blocks",
                        t.name, t.dims
                    ),
                )
            })?;
            let end = self
                .data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(size));
            if end.is_none_or(|end| end > self.file_size) {
                return Err(malformed(
                    path,
                    format!(
                        "tensor '{}' ({size} bytes at data offset {}) extends past the end of the file ({} bytes): truncated?",
                        t.name, t.offset, self.file_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Bytes a tensor takes, when its type is known and its size a whole number of blocks.
    pub fn tensor_bytes(&self, t: &TensorEntry) -> Option<u64> {
        let elements = t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        ggml_types::by_id(t.type_id)?.bytes_for(elements)
    }
}

fn malformed(path: &Path, reason: String) -> Error {
    Error::MalformedGguf {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads and checks the header of the GGUF file at `path`.
pub fn read(path: &Path) -> Result<Header> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_size = file.metadata().map_err(io)?.len();
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        size: file_size,
    };
    parse(&mut r).map_err(|reason| malformed(path, reason))
}

fn parse<R: Read>(r: &mut Reader<R>) -> std::result::Result<Header, String> {
    let magic = r.bytes(4, "magic")?;
    if magic != MAGIC {
        return Err(format!("bad magic {magic:02x?}, expected \"GGUF\""));
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (supported: 2, 3)"
        ));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    // Every entry takes at least 8 bytes, which bounds the counts by the file size.
    r.check_count(n_tensors, 8, "tensor count")?;
    r.check_count(n_kv, 8, "metadata count")?;
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32("value type")?;
        let value = r.value(ty, &key)?;
        metadata.push((key, value));
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor rank")?;
        if n_dims > 8 {
            return Err(format!(
                "tensor '{name}' has rank {n_dims} (at most 8 supported)"
            ));
        }
        let dims = (0..n_dims)
            .map(|_| r.u64("tensor dimension"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let type_id = r.u32("tensor type")?;
        let offset = r.u64("tensor offset")?;
        tensors.push(TensorEntry {
            name,
            dims,
            type_id,
            offset,
        });
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, Value::Int(a))) if *a > 0 && *a <= 1 << 20 => *a as u64,
        Some((_, v)) => return Err(format!("general.alignment has an invalid value {v:?}")),
        None => 32,
    };
    let data_offset = r.pos.div_ceil(alignment) * alignment;
    if data_offset > r.size {
        return Err(format!(
            "tensor data would start at {data_offset}, past the end of the file ({} bytes): truncated",
            r.size
        ));
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
        file_size: r.size,
    })
}

/// A bounded little-endian reader that knows its position and the file size.
struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64, what: &str) -> std::result::Result<Vec<u8>, String> {
        if n > self.size.saturating_sub(self.pos) {
            return Err(format!(
                "{what} at offset {} needs {n} bytes but the file ends at {}: truncated",
                self.pos, self.size
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("{what} at offset {}: {e}", self.pos))?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), String> {
        if n > self.size.saturating_sub(self.pos) {
            return Err(format!(
                "{what} at offset {} needs {n} bytes but the file ends at {}: truncated",
                self.pos, self.size
            ));
        }
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| format!("{what} at offset {}: {e}", self.pos))?;
        if copied != n {
            return Err(format!("{what} at offset {}: truncated", self.pos));
        }
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let v = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn check_count(&self, n: u64, min_size: u64, what: &str) -> std::result::Result<(), String> {
        if n.saturating_mul(min_size) > self.size.saturating_sub(self.pos) {
            return Err(format!(
                "{what} {n} at offset {} cannot fit in a file of {} bytes",
                self.pos, self.size
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.u64(what)?;
        let bytes = self.bytes(len, what)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Size in bytes of a fixed-size value type, `None` for strings and arrays.
    fn fixed_size(ty: u32) -> Option<u64> {
        match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    fn value(&mut self, ty: u32, key: &str) -> std::result::Result<Value, String> {
        let what = format!("value of '{key}'");
        Ok(match ty {
            0 => Value::Int(self.array::<1>(&what)?[0] as i128),
            1 => Value::Int(i8::from_le_bytes(self.array(&what)?) as i128),
            2 => Value::Int(u16::from_le_bytes(self.array(&what)?) as i128),
            3 => Value::Int(i16::from_le_bytes(self.array(&what)?) as i128),
            4 => Value::Int(u32::from_le_bytes(self.array(&what)?) as i128),
            5 => Value::Int(i32::from_le_bytes(self.array(&what)?) as i128),
            6 => Value::Float(f32::from_le_bytes(self.array(&what)?) as f64),
            7 => Value::Bool(self.array::<1>(&what)?[0] != 0),
            8 => Value::Str(self.string(&what)?),
            9 => {
                let elem_type = self.u32(&what)?;
                let len = self.u64(&what)?;
                match (elem_type, Self::fixed_size(elem_type)) {
                    (_, Some(size)) => self.skip(len.saturating_mul(size), &what)?,
                    (8, None) => {
                        self.check_count(len, 8, &what)?;
                        for _ in 0..len {
                            let n = self.u64(&what)?;
                            self.skip(n, &what)?;
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{what}: arrays of type {elem_type} are not supported"
                        ))
                    }
                }
                Value::Array { elem_type, len }
            }
            10 => Value::Int(u64::from_le_bytes(self.array(&what)?) as i128),
            11 => Value::Int(i64::from_le_bytes(self.array(&what)?) as i128),
            12 => Value::Float(f64::from_le_bytes(self.array(&what)?)),
            _ => {
                return Err(format!(
                    "{what} has unknown value type {ty} at offset {}",
                    self.pos
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_bytes(bytes: &[u8]) -> std::result::Result<Header, String> {
        let mut r = Reader {
            inner: bytes,
            pos: 0,
            size: bytes.len() as u64,
        };
        parse(&mut r)
    }

    fn tiny_file() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&1u64.to_le_bytes()); // kv
        let key = b"general.architecture";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(b"llama");
        let name = b"w";
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    #[test]
    fn reads_a_well_formed_header() {
        let h = parse_bytes(&tiny_file()).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.tensors[0].dims, vec![4]);
        assert!(h.check_loadable(Path::new("x")).is_ok());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = tiny_file();
        for cut in 0..full.len() - 16 {
            let r = parse_bytes(&full[..cut]);
            assert!(r.is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn huge_lengths_are_refused_before_allocating() {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
        let err = parse_bytes(&b).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }
}
