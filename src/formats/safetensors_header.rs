//! A tolerant safetensors header reader: the 8-byte header length is bounded by the file size
//! (and safetensors' own 100 MB limit) before anything is allocated, the JSON header is read
//! into tensors of any dtype (naming the ones this build does not know), and each tensor's
//! byte range is checked against the file on demand rather than failing the whole read.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The largest JSON header safetensors itself accepts.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor's entry in the JSON header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name in the file.
    pub name: String,
    /// dtype as written (`F32`, `BF16`, `F8_E4M3`, ...).
    pub dtype: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<u64>,
    /// Start of the bytes, relative to the data section.
    pub start: u64,
    /// End of the bytes (exclusive), relative to the data section.
    pub end: u64,
}

impl TensorEntry {
    /// The number of elements, `None` when it overflows.
    pub fn elements(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

/// The parsed header of one safetensors file.
#[derive(Clone, Debug)]
pub struct Header {
    /// `__metadata__` entries in file order.
    pub metadata: Vec<(String, String)>,
    /// Tensors in header order.
    pub tensors: Vec<TensorEntry>,
    /// Absolute offset of the data section (8 + header length).
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
}

/// Bits per element of the dtypes safetensors defines.
pub fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 64,
        "F32" | "I32" | "U32" => 32,
        "F16" | "BF16" | "I16" | "U16" => 16,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 8,
        "F6_E2M3" | "F6_E3M2" => 6,
        "F4" => 4,
        _ => return None,
    })
}

impl Header {
    /// Where a tensor's bytes lie in the file (absolute start, length), or why they cannot.
    pub fn extent(&self, t: &TensorEntry) -> std::result::Result<(u64, u64), String> {
        if t.end < t.start {
            return Err(format!(
                "tensor '{}' has data_offsets [{}, {}] that end before they start",
                t.name, t.start, t.end
            ));
        }
        let len = t.end - t.start;
        if let (Some(bits), Some(n)) = (dtype_bits(&t.dtype), t.elements()) {
            let want = n.checked_mul(bits).map(|b| b.div_ceil(8));
            if want != Some(len) {
                return Err(format!(
                    "tensor '{}' ({} {:?}) needs {} bytes but its data_offsets span {len}",
                    t.name,
                    t.dtype,
                    t.shape,
                    want.map_or_else(|| "too many".to_string(), |w| w.to_string())
                ));
            }
        }
        let data_len = self.file_size.saturating_sub(self.data_offset);
        if t.end > data_len {
            return Err(format!(
                "tensor '{}' (data_offsets [{}, {}]) extends past the end of the data ({data_len} bytes): truncated?",
                t.name, t.start, t.end
            ));
        }
        Ok((self.data_offset + t.start, len))
    }
}

fn malformed(path: &Path, reason: String) -> Error {
    Error::MalformedSafetensors {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads the header of the safetensors file at `path`.
pub fn read(path: &Path) -> Result<Header> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_size = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    if file_size < 8 {
        return Err(malformed(
            path,
            format!("{file_size} bytes cannot hold the 8-byte header length: truncated"),
        ));
    }
    file.read_exact(&mut len).map_err(io)?;
    let header_len = check_header_len(u64::from_le_bytes(len), file_size)
        .map_err(|reason| malformed(path, reason))?;
    let mut json = vec![0u8; header_len as usize];
    file.read_exact(&mut json).map_err(io)?;
    parse_json(&json, file_size).map_err(|reason| malformed(path, reason))
}

/// Parses a safetensors header held in memory (`bytes` is the file or its beginning; the
/// file is `file_size` bytes long). Errors name the path `<memory>`.
pub fn parse_bytes(bytes: &[u8], file_size: u64) -> Result<Header> {
    let path = PathBuf::from("<memory>");
    let Some(len) = bytes.get(..8) else {
        return Err(malformed(
            &path,
            format!(
                "{} bytes cannot hold the 8-byte header length: truncated",
                bytes.len()
            ),
        ));
    };
    let mut a = [0u8; 8];
    a.copy_from_slice(len);
    let header_len = check_header_len(u64::from_le_bytes(a), file_size.min(bytes.len() as u64))
        .map_err(|reason| malformed(&path, reason))?;
    let json = bytes.get(8..8 + header_len as usize).unwrap_or_default();
    parse_json(json, file_size).map_err(|reason| malformed(&path, reason))
}

fn check_header_len(len: u64, file_size: u64) -> std::result::Result<u64, String> {
    if len > MAX_HEADER_LEN {
        return Err(format!(
            "header length {len} exceeds safetensors' limit of {MAX_HEADER_LEN} bytes"
        ));
    }
    if len > file_size.saturating_sub(8) {
        return Err(format!(
            "header length {len} does not fit in a file of {file_size} bytes: truncated"
        ));
    }
    Ok(len)
}

fn parse_json(json: &[u8], file_size: u64) -> std::result::Result<Header, String> {
    let data_offset = 8 + json.len() as u64;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| format!("the JSON header does not parse: {e}"))?;
    let mut metadata = Vec::new();
    let mut tensors = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            let obj = v
                .as_object()
                .ok_or_else(|| format!("__metadata__ should be an object, found {v}"))?;
            for (k, v) in obj {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                metadata.push((k.clone(), text));
            }
            continue;
        }
        tensors.push(tensor_entry(name, &v)?);
    }
    Ok(Header {
        metadata,
        tensors,
        data_offset,
        file_size,
    })
}

fn tensor_entry(name: String, v: &serde_json::Value) -> std::result::Result<TensorEntry, String> {
    let field = |key: &str| {
        v.get(key)
            .ok_or_else(|| format!("tensor '{name}' has no '{key}' in the header"))
    };
    let dtype = field("dtype")?
        .as_str()
        .ok_or_else(|| format!("tensor '{name}': dtype should be a string"))?
        .to_string();
    let ints = |key: &str| -> std::result::Result<Vec<u64>, String> {
        field(key)?
            .as_array()
            .ok_or_else(|| format!("tensor '{name}': {key} should be an array"))?
            .iter()
            .map(|x| {
                x.as_u64().ok_or_else(|| {
                    format!("tensor '{name}': {key} should hold non-negative integers, found {x}")
                })
            })
            .collect()
    };
    let shape = ints("shape")?;
    let offsets = ints("data_offsets")?;
    let [start, end] = offsets[..] else {
        return Err(format!(
            "tensor '{name}': data_offsets should be [start, end], found {offsets:?}"
        ));
    };
    Ok(TensorEntry {
        name,
        dtype,
        shape,
        start,
        end,
    })
}

/// Serialises a safetensors file from (name, dtype, shape, bytes) and `__metadata__`, for
/// tests and fuzz seeds.
pub fn build(metadata: &[(&str, &str)], tensors: &[(&str, &str, &[u64], &[u8])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [offset, offset + data.len()],
            }),
        );
        offset += data.len();
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let w: Vec<u8> = [1.0f32, -2.0, 3.5, 0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        build(
            &[("format", "pt")],
            &[
                ("model.norm.weight", "F32", &[4], &w),
                ("q", "F8_E4M3", &[2, 2], &[0, 1, 2, 3]),
                ("odd", "Q9_X", &[3], &[9, 9]),
            ],
        )
    }

    #[test]
    fn reads_tensors_of_any_dtype_with_their_ranges() {
        let bytes = sample();
        let h = parse_bytes(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(h.metadata, vec![("format".into(), "pt".into())]);
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["model.norm.weight", "q", "odd"]);
        assert_eq!(h.tensors[0].shape, vec![4]);
        assert_eq!(h.extent(&h.tensors[0]).map(|e| e.1), Ok(16));
        assert_eq!(
            h.extent(&h.tensors[2]).map(|e| e.1),
            Ok(2),
            "unknown dtype kept"
        );
    }

    #[test]
    fn ranges_that_disagree_with_dtype_and_shape_are_reported() {
        let bytes = build(&[], &[("w", "F32", &[3], &[0u8; 8])]);
        let h = parse_bytes(&bytes, bytes.len() as u64).unwrap();
        let err = h.extent(&h.tensors[0]).unwrap_err();
        assert!(err.contains("needs 12 bytes"), "{err}");
    }

    #[test]
    fn header_length_beyond_the_file_is_refused_before_allocating() {
        let mut bytes = sample();
        bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let err = parse_bytes(&bytes, bytes.len() as u64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds safetensors' limit"), "{err}");
        bytes[..8].copy_from_slice(&4096u64.to_le_bytes());
        let err = parse_bytes(&bytes, bytes.len() as u64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn structural_errors_name_the_tensor_and_field() {
        let json = br#"{"w":{"dtype":"F32","shape":[2]}}"#;
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json);
        let err = parse_bytes(&bytes, bytes.len() as u64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'w'") && err.contains("data_offsets"), "{err}");
    }
}
