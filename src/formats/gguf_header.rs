//! A tolerant GGUF header reader of our own: bounds every length and offset by the file size
//! before allocating, keeps tensors of any type (naming the ones this build cannot compute
//! with), keeps metadata values with their exact types (arrays with their length and as many
//! leading elements as asked for), and reports where a broken file goes wrong. Used to
//! validate a file before candle's reader loads it, and by `inspect`.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;

use super::ggml_types;
pub use super::gguf_value::{Array, Value, ValueType};
use super::untrusted;
use crate::{Error, Result};

/// The GGUF magic, as the first four bytes of the file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Array elements kept by default: enough to show what an array holds.
pub const PREVIEW_ITEMS: usize = 8;

/// Deepest nesting of arrays inside arrays that the reader follows.
pub const MAX_ARRAY_DEPTH: usize = 4;

/// How much of the metadata to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Leading elements kept of every array (the rest is skipped, never allocated).
    pub array_items: usize,
    /// Arrays kept whole whatever `array_items` says: by key, when their elements have one of
    /// the types given and they hold at most [`MAX_WHOLE_ITEMS`].
    pub whole: &'static [(&'static str, &'static [ValueType])],
    /// Arrays of numbers or booleans kept whole when they hold at most this many elements
    /// (per-layer values: `attention.sliding_window_pattern`, per-layer head counts).
    pub numbers_whole: usize,
}

/// The arrays the tokenizer reads, with the element types it accepts.
pub const TOKENIZER_ARRAYS: &[(&str, &[ValueType])] = &[
    ("tokenizer.ggml.tokens", &[ValueType::String]),
    ("tokenizer.ggml.merges", &[ValueType::String]),
    ("tokenizer.ggml.scores", &[ValueType::F32, ValueType::I32]),
    ("tokenizer.ggml.token_type", &[ValueType::I32]),
];

/// Longest array of numbers [`ReadOptions::LOAD`] keeps whole whatever its key: far more
/// blocks (or experts) than any model has, few enough to cost nothing.
pub const PER_LAYER_ITEMS: usize = 65_536;

/// Longest array [`ReadOptions::whole`] keeps: 16 times the largest vocabularies and merge
/// lists in use (262,144 tokens), so that a file cannot make loading hold hundreds of bytes of
/// parsed values per byte it stores.
pub const MAX_WHOLE_ITEMS: u64 = 1 << 22;

impl ReadOptions {
    /// Arrays abbreviated to their first [`PREVIEW_ITEMS`] elements.
    pub const PREVIEW: Self = Self {
        array_items: PREVIEW_ITEMS,
        whole: &[],
        numbers_whole: 0,
    };
    /// What loading a model needs: the tokenizer's arrays and per-layer numbers whole, every
    /// other array abbreviated.
    pub const LOAD: Self = Self {
        array_items: PREVIEW_ITEMS,
        whole: TOKENIZER_ARRAYS,
        numbers_whole: PER_LAYER_ITEMS,
    };
    /// Every array element kept (`inspect --metadata --full`).
    pub const FULL: Self = Self {
        array_items: usize::MAX,
        whole: &[],
        numbers_whole: 0,
    };
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self::PREVIEW
    }
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
    /// Alignment of the data section and of every tensor (`general.alignment`, default 32).
    pub alignment: u64,
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
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// Checks that every tensor has a type this build computes with, starts on the file's
    /// alignment and lies inside the file.
    pub fn check_loadable(&self, path: &Path) -> Result<()> {
        for t in &self.tensors {
            let ty = ggml_types::by_id(t.type_id);
            if ty.is_none_or(|ty| !ty.supported()) {
                return Err(Error::UnsupportedTensorType {
                    tensor: untrusted::short(&t.name),
                    found: ggml_types::name_of(t.type_id),
                    supported: ggml_types::supported_names(),
                });
            }
        }
        for t in &self.tensors {
            self.extent(t).map_err(|reason| malformed(path, reason))?;
        }
        Ok(())
    }

    /// Bytes a tensor takes, when its type is known and its size a whole number of blocks.
    pub fn tensor_bytes(&self, t: &TensorEntry) -> Option<u64> {
        ggml_types::by_id(t.type_id)?.bytes_for(t.elements()?)
    }

    /// Where a tensor's bytes lie in the file (absolute start, length), or why that is unknown
    /// or impossible (unknown type, partial block, misaligned, past the end of the file).
    pub fn extent(&self, t: &TensorEntry) -> std::result::Result<(u64, u64), String> {
        // Readers take the data at the offset given, so a misaligned tensor loaded as garbage
        // (NaN logits) rather than failing; `inspect` reports it as `run` refuses it.
        if !t.offset.is_multiple_of(self.alignment) {
            return Err(format!(
                "tensor '{}' starts at data offset {}, which is not a multiple of the alignment {} (general.alignment, default 32)",
                untrusted::short(&t.name),
                t.offset,
                self.alignment
            ));
        }
        let size = self
            .tensor_bytes(t)
            .ok_or_else(|| match ggml_types::by_id(t.type_id) {
                None => format!(
                    "tensor '{}' has unknown type id {}, so its size is unknown",
                    untrusted::short(&t.name),
                    t.type_id
                ),
                Some(ty) => format!(
                    "tensor '{}' has {:?} elements of {}, not a whole number of {}-element blocks",
                    untrusted::short(&t.name),
                    t.dims,
                    ty.name,
                    ty.block_size
                ),
            })?;
        let start = self.data_offset.checked_add(t.offset);
        match start.and_then(|s| s.checked_add(size)) {
            Some(end) if end <= self.file_size => Ok((self.data_offset + t.offset, size)),
            _ => Err(format!(
                "tensor '{}' ({size} bytes at data offset {}) extends past the end of the file ({} bytes): truncated?",
                untrusted::short(&t.name),
                t.offset,
                self.file_size
            )),
        }
    }

    /// Candle's view of the metadata (for the tokenizer), with no tensors. Arrays that were not
    /// read whole ([`ReadOptions::PREVIEW`]) are left out.
    pub fn to_candle_content(&self) -> gguf_file::Content {
        let metadata: HashMap<String, gguf_file::Value> = self
            .metadata
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.to_candle()?)))
            .collect();
        gguf_file::Content {
            magic: match self.version {
                2 => gguf_file::VersionedMagic::GgufV2,
                _ => gguf_file::VersionedMagic::GgufV3,
            },
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: self.data_offset,
        }
    }
}

impl TensorEntry {
    /// The number of elements, `None` when it overflows.
    pub fn elements(&self) -> Option<u64> {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

fn malformed(path: &Path, reason: String) -> Error {
    Error::MalformedGguf {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads and checks the header of the GGUF file at `path`, arrays abbreviated.
pub fn read(path: &Path) -> Result<Header> {
    read_with(path, ReadOptions::PREVIEW)
}

/// Reads and checks the header of the GGUF file at `path`, keeping what `opts` asks for.
pub fn read_with(path: &Path, opts: ReadOptions) -> Result<Header> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_size = file.metadata().map_err(io)?.len();
    // Never buffer more than the file holds.
    let capacity = usize::try_from(file_size.clamp(1, 1 << 16)).unwrap_or(1 << 16);
    let mut r = Reader {
        inner: BufReader::with_capacity(capacity, file),
        pos: 0,
        size: file_size,
        opts,
        whole: None,
    };
    parse(&mut r).map_err(|reason| malformed(path, reason))
}

/// Parses a GGUF header held in memory (`bytes` is the whole file, or its beginning when
/// `file_size` says the file is longer). Errors name the path `<memory>`.
pub fn parse_bytes(bytes: &[u8], file_size: u64, opts: ReadOptions) -> Result<Header> {
    let mut r = Reader {
        inner: bytes,
        pos: 0,
        size: file_size,
        opts,
        whole: None,
    };
    parse(&mut r).map_err(|reason| malformed(&PathBuf::from("<memory>"), reason))
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
    // A metadata entry takes at least 13 bytes and a tensor entry at least 24, which bounds
    // the counts by the file size. Nothing is reserved from a count: the vectors grow only as
    // entries are actually read, so memory follows the bytes present, not the claims.
    r.check_count(n_kv, 13, "metadata count")?;
    r.check_count(n_tensors, 24, "tensor count")?;
    let mut metadata = Vec::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let id = r.u32("value type")?;
        let ty = ValueType::from_id(id).ok_or_else(|| {
            format!(
                "metadata '{}' has unknown value type {id} at offset {} (known: 0-12)",
                untrusted::short(&key),
                r.pos - 4
            )
        })?;
        r.whole = r
            .opts
            .whole
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| *t);
        let value = r.value(ty, &format!("value of '{}'", untrusted::short(&key)), 0)?;
        r.whole = None;
        metadata.push((key, value));
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor rank")?;
        if n_dims > 8 {
            return Err(format!(
                "tensor '{}' has rank {n_dims} (at most 8 supported)",
                untrusted::short(&name)
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
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a <= 1 << 20 => a,
            _ => {
                return Err(format!(
                    "general.alignment has an invalid value {}, expected an integer from 1 to {}",
                    untrusted::short(&format!("{v:?}")),
                    1 << 20
                ))
            }
        },
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
        alignment,
        data_offset,
        file_size: r.size,
    })
}

/// A bounded little-endian reader that knows its position and the file size.
struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
    opts: ReadOptions,
    /// Element types of the metadata array being read when it is one to keep whole.
    whole: Option<&'static [ValueType]>,
}

impl<R: Read> Reader<R> {
    fn check_bytes(&self, n: u64, what: &str) -> std::result::Result<(), String> {
        if n > self.size.saturating_sub(self.pos) {
            return Err(format!(
                "{what} at offset {} needs {n} bytes but the file ends at {}: truncated",
                self.pos, self.size
            ));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &str) -> std::result::Result<Vec<u8>, String> {
        self.check_bytes(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("{what} at offset {}: {e}", self.pos))?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), String> {
        self.check_bytes(n, what)?;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| format!("{what} at offset {}: {e}", self.pos))?;
        if copied != n {
            return Err(format!("{what} at offset {}: truncated", self.pos));
        }
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        self.check_bytes(N as u64, what)?;
        let mut a = [0u8; N];
        self.inner
            .read_exact(&mut a)
            .map_err(|e| format!("{what} at offset {}: {e}", self.pos))?;
        self.pos += N as u64;
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
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn value(
        &mut self,
        ty: ValueType,
        what: &str,
        depth: usize,
    ) -> std::result::Result<Value, String> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::String => Value::Str(self.string(what)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => Value::Array(self.array_value(what, depth)?),
        })
    }

    fn array_value(&mut self, what: &str, depth: usize) -> std::result::Result<Array, String> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!(
                "{what} at offset {}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels",
                self.pos
            ));
        }
        let id = self.u32(what)?;
        let elem_type = ValueType::from_id(id).ok_or_else(|| {
            format!(
                "{what} at offset {}: array of unknown value type {id}",
                self.pos - 4
            )
        })?;
        let len = self.u64(what)?;
        self.check_count(len, elem_type.min_size(), what)?;
        // `len` is now bounded by the bytes left in the file.
        let mut keep = len.min(self.opts.array_items as u64);
        if depth == 0 && elem_type.fixed_size().is_some() && len <= self.opts.numbers_whole as u64 {
            keep = len;
        }
        if let Some(types) = self.whole.filter(|_| depth == 0) {
            if len > MAX_WHOLE_ITEMS {
                return Err(format!(
                    "{what} at offset {}: an array of {len} elements (at most {MAX_WHOLE_ITEMS} supported)",
                    self.pos
                ));
            }
            if types.contains(&elem_type) {
                keep = len;
            }
        }
        let mut items = Vec::new();
        for _ in 0..keep {
            items.push(self.value(elem_type, what, depth + 1)?);
        }
        let rest = len - keep;
        match elem_type.fixed_size() {
            Some(size) => self.skip(rest * size, what)?,
            None => {
                for _ in 0..rest {
                    if elem_type == ValueType::String {
                        let n = self.u64(what)?;
                        self.skip(n, what)?;
                    } else {
                        self.value(elem_type, what, depth + 1)?;
                    }
                }
            }
        }
        Ok(Array {
            elem_type,
            len,
            items,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf_builder::{array, Builder};

    fn parse(bytes: &[u8], opts: ReadOptions) -> Result<Header> {
        parse_bytes(bytes, bytes.len() as u64, opts)
    }

    fn sample() -> Builder {
        Builder::new()
            .meta("general.architecture", Value::Str("llama".into()))
            .meta("llama.block_count", Value::U32(2))
            .meta("llama.rope.freq_base", Value::F32(10_000.0))
            .meta("x.signed", Value::I64(-7))
            .meta(
                "tokenizer.ggml.tokens",
                array(
                    ValueType::String,
                    (0..20).map(|i| Value::Str(format!("t{i}"))).collect(),
                ),
            )
            .meta(
                "x.nested",
                array(
                    ValueType::Array,
                    vec![array(ValueType::U8, vec![Value::U8(1), Value::U8(2)])],
                ),
            )
            .zeroed_tensor("w", &[4, 2], 0)
            .zeroed_tensor("q", &[256, 2], 21)
    }

    #[test]
    fn values_keep_their_exact_types() {
        let h = parse(&sample().to_bytes(), ReadOptions::PREVIEW).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.get("llama.block_count"), Some(&Value::U32(2)));
        assert_eq!(h.get("x.signed").and_then(Value::as_int), Some(-7));
        assert_eq!(
            h.get("x.nested").map(Value::type_name).as_deref(),
            Some("ARRAY[ARRAY[UINT8]]")
        );
    }

    #[test]
    fn arrays_are_previewed_or_kept_whole_as_asked() {
        let bytes = sample().to_bytes();
        let tokens = |h: &Header| h.get("tokenizer.ggml.tokens").unwrap().clone();
        let preview = tokens(&parse(&bytes, ReadOptions::PREVIEW).unwrap());
        let a = preview.as_array().unwrap();
        assert_eq!((a.len, a.items.len()), (20, PREVIEW_ITEMS));
        assert_eq!(a.items[7], Value::Str("t7".into()));
        let full = tokens(&parse(&bytes, ReadOptions::FULL).unwrap());
        assert!(full.as_array().unwrap().is_complete());
        assert_eq!(full.as_array().unwrap().items[19], Value::Str("t19".into()));
    }

    #[test]
    fn unsupported_tensor_types_are_kept_and_refused_only_for_loading() {
        let h = parse(&sample().to_bytes(), ReadOptions::PREVIEW).unwrap();
        assert_eq!(h.tensors[1].type_id, 21);
        assert_eq!(h.extent(&h.tensors[1]).map(|e| e.1), Ok(2 * 110));
        let err = h.check_loadable(Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("'q'") && err.contains("IQ3_S"), "{err}");
    }

    #[test]
    fn tensors_past_the_end_of_the_file_are_reported() {
        let bytes = sample().to_bytes();
        let h = parse_bytes(&bytes, bytes.len() as u64 - 1, ReadOptions::PREVIEW).unwrap();
        let err = h.extent(&h.tensors[1]).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn unknown_value_types_are_named_with_their_offset() {
        let mut bytes = Builder::new().meta("k", Value::U8(1)).to_bytes();
        // The value type of the only entry: magic, version, counts, key length, key.
        let at = 4 + 4 + 8 + 8 + 8 + 1;
        bytes[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
        let err = parse(&bytes, ReadOptions::PREVIEW).unwrap_err().to_string();
        assert!(err.contains("unknown value type 13"), "{err}");
    }

    #[test]
    fn huge_lengths_are_refused_before_allocating() {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
        b.extend_from_slice(&[0u8; 8]);
        let err = parse(&b, ReadOptions::FULL).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn candle_content_holds_whole_arrays_only() {
        let bytes = sample().to_bytes();
        let preview = parse(&bytes, ReadOptions::PREVIEW)
            .unwrap()
            .to_candle_content();
        assert!(!preview.metadata.contains_key("tokenizer.ggml.tokens"));
        let full = parse(&bytes, ReadOptions::FULL)
            .unwrap()
            .to_candle_content();
        assert!(full.metadata.contains_key("tokenizer.ggml.tokens"));
        assert!(full.metadata.contains_key("general.architecture"));
    }

    #[test]
    fn loading_keeps_per_layer_arrays_of_any_depth_of_model() {
        // 42 blocks (Gemma 4 E4B): a per-layer pattern longer than a preview must reach the
        // family's reader whole; other long arrays of strings stay abbreviated.
        let bytes = sample()
            .meta(
                "gemma4.attention.sliding_window_pattern",
                array(
                    ValueType::Bool,
                    (0..42).map(|i| Value::Bool(i % 6 != 5)).collect(),
                ),
            )
            .meta(
                "x.labels",
                array(
                    ValueType::String,
                    (0..42).map(|i| Value::Str(format!("l{i}"))).collect(),
                ),
            )
            .to_bytes();
        let load = parse(&bytes, ReadOptions::LOAD)
            .unwrap()
            .to_candle_content();
        match load.metadata.get("gemma4.attention.sliding_window_pattern") {
            Some(gguf_file::Value::Array(items)) => assert_eq!(items.len(), 42),
            other => panic!("the pattern is missing or cut: {other:?}"),
        }
        assert!(!load.metadata.contains_key("x.labels"));
        assert!(load.metadata.contains_key("tokenizer.ggml.tokens"));
    }
}
