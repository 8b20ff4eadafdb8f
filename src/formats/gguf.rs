//! GGUF files opened for loading: validated by our tolerant header reader, metadata through
//! candle's `gguf_file` with typed getters that accept any integer width, tensors borrowed
//! from the memory-mapped file (see [`super::mapped`]). A GGUF can
//! also be assembled in memory (metadata and tensors, no file), e.g. for synthetic benchmarks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Shape};

use memmap2::Mmap;

use super::blocks::{BlockType, Blocks};
use super::ggml_types;
use super::gguf_header::{self, Header, ReadOptions, TensorEntry};
use super::mapped;
use super::untrusted;
use crate::{Error, Result};

/// An open GGUF file.
pub struct Gguf {
    path: PathBuf,
    header: Header,
    content: gguf_file::Content,
    /// The tensors of our own block types (candle has no such types, so `content` does not
    /// list them): name, type, offset in the data section and shape in candle's order.
    own: HashMap<String, (BlockType, u64, Vec<usize>)>,
    data: Data,
}

/// Where tensor data comes from.
enum Data {
    /// The file, mapped read-only: tensors borrow their blocks from it.
    Map(Arc<Mmap>),
    /// Built in memory; each tensor is handed out once, so loading does not copy it.
    Memory(Mutex<HashMap<String, MemoryTensor>>),
}

/// A tensor of a GGUF built in memory ([`Gguf::from_memory`]): one of candle's types, or
/// blocks of our own types.
pub enum MemoryTensor {
    /// A type candle computes with.
    Candle(QTensor),
    /// MXFP4, IQ4_NL or IQ4_XS, computed by our own kernels.
    Blocks(Blocks),
}

impl From<QTensor> for MemoryTensor {
    fn from(t: QTensor) -> Self {
        Self::Candle(t)
    }
}

impl From<Blocks> for MemoryTensor {
    fn from(t: Blocks) -> Self {
        Self::Blocks(t)
    }
}

impl MemoryTensor {
    /// The shape, outermost dimension first.
    pub fn dims(&self) -> &[usize] {
        match self {
            Self::Candle(t) => t.shape().dims(),
            Self::Blocks(t) => t.shape(),
        }
    }

    /// ggml's type id.
    pub fn type_id(&self) -> Result<u32> {
        match self {
            Self::Candle(t) => {
                let dtype = t.dtype();
                ggml_types::TYPES
                    .iter()
                    .find(|ty| ty.candle == Some(dtype))
                    .map(|ty| ty.id)
                    .ok_or_else(|| Error::Internal(format!("no ggml id for {dtype:?}")))
            }
            Self::Blocks(t) => Ok(t.block_type().id()),
        }
    }
}

impl Gguf {
    /// Opens and validates `path`: structure, bounds, alignment and tensor types are checked
    /// before anything is loaded. Metadata arrays other than the tokenizer's are not kept (a
    /// file of one large array would otherwise cost dozens of bytes of memory per byte).
    pub fn open(path: &Path) -> Result<Self> {
        let header = gguf_header::read_with(path, ReadOptions::LOAD)?;
        header.check_loadable(path)?;
        check_tokenizer_arrays(&header)?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: mapped read-only. Like llama.cpp's default (and every mmap-based loader) we
        // rely on the file not being truncated or rewritten while it is in use; the header's
        // bounds were checked against its size above.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        // Weights read in place stream faster through 2 MiB pages (see `kernels::cpu::huge`):
        // pages this map faults in from the disk then come in 2 MiB folios, mapped whole.
        // (Pages the page cache already holds keep the folios they have.) Only a hint.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let mut content = header.to_candle_content();
        content.tensor_infos = tensor_infos(&header);
        let own = own_tensors(&header);
        // The tokenizer reads candle's copy of its arrays; ours need not hold them twice.
        let mut header = header;
        for (_, value) in &mut header.metadata {
            if let gguf_header::Value::Array(a) = value {
                a.items.truncate(gguf_header::PREVIEW_ITEMS);
                a.items.shrink_to_fit();
            }
        }
        // The name is shown in the chat and in `-v`: no escape sequences, no screenful.
        if let Some(gguf_file::Value::String(name)) = content.metadata.get_mut("general.name") {
            *name = untrusted::short(name);
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            content,
            own,
            data: Data::Map(Arc::new(map)),
        })
    }

    /// A GGUF held in memory: `metadata` in order, and `tensors` (candle's, or our blocks)
    /// already on the device they will be used on. `name` stands in for the path in messages
    /// and as the model's name.
    pub fn from_memory<T: Into<MemoryTensor>>(
        name: &str,
        metadata: Vec<(String, gguf_file::Value)>,
        tensors: Vec<(String, T)>,
    ) -> Result<Self> {
        let tensors: Vec<(String, MemoryTensor)> =
            tensors.into_iter().map(|(n, t)| (n, t.into())).collect();
        let mut entries = Vec::with_capacity(tensors.len());
        let mut infos = HashMap::with_capacity(tensors.len());
        let mut own = HashMap::new();
        for (tensor_name, t) in &tensors {
            entries.push(TensorEntry {
                name: tensor_name.clone(),
                dims: t.dims().iter().rev().map(|&d| d as u64).collect(),
                type_id: t.type_id()?,
                offset: 0,
            });
            match t {
                MemoryTensor::Candle(t) => {
                    let info = gguf_file::TensorInfo {
                        ggml_dtype: t.dtype(),
                        shape: t.shape().clone(),
                        offset: 0,
                    };
                    infos.insert(tensor_name.clone(), info);
                }
                MemoryTensor::Blocks(t) => {
                    own.insert(tensor_name.clone(), (t.block_type(), 0, t.shape().to_vec()));
                }
            }
        }
        let header = Header {
            version: 3,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.clone(), header_value(v)))
                .collect(),
            tensors: entries,
            alignment: 32,
            data_offset: 0,
            file_size: 0,
        };
        let content = gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata: metadata.into_iter().collect(),
            tensor_infos: infos,
            tensor_data_offset: 0,
        };
        Ok(Self {
            path: PathBuf::from(name),
            header,
            content,
            own,
            data: Data::Memory(Mutex::new(tensors.into_iter().collect())),
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

    /// Our own view of the header (of a file: every array abbreviated; whole arrays are in
    /// [`Gguf::content`]).
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
        self.content.tensor_infos.contains_key(name) || self.own.contains_key(name)
    }

    /// The block type of tensor `name` when it is one of ours (MXFP4, IQ4_NL, IQ4_XS: read
    /// it with [`Self::blocks`]).
    pub fn block_type(&self, name: &str) -> Option<BlockType> {
        self.own.get(name).map(|(ty, _, _)| *ty)
    }

    /// The tensor `name` of one of our block types, its blocks borrowed from the map (or
    /// handed out once, in memory). Our block types are computed on the CPU only.
    pub fn blocks(&self, name: &str, device: &Device) -> Result<Blocks> {
        let malformed = |reason: String| Error::MalformedGguf {
            path: self.path.clone(),
            reason: format!("tensor '{}': {reason}", untrusted::short(name)),
        };
        let Some(&(ty, offset, ref shape)) = self.own.get(name) else {
            return Err(malformed(
                "is not of a block type our kernels read (MXFP4, IQ4_NL, IQ4_XS)".into(),
            ));
        };
        if !device.is_cpu() {
            return Err(Error::UnsupportedTensorType {
                tensor: untrusted::short(name),
                found: format!("{} on {device:?}", ty.name()),
                supported: format!("{} on the CPU", ty.name()),
            });
        }
        match &self.data {
            Data::Map(map) => {
                if ty.bytes_for(shape).is_none() {
                    return Err(malformed(format!(
                        "rows of shape {shape:?} are not whole {} blocks of {}",
                        ty.name(),
                        ty.block()
                    )));
                }
                self.own_range(ty, offset, shape)
                    .and_then(|r| Blocks::mapped(ty, map, r, shape.clone()))
                    .ok_or_else(|| malformed("its blocks lie outside the file".into()))
            }
            Data::Memory(tensors) => {
                let mut tensors = tensors
                    .lock()
                    .map_err(|_| Error::Device("GGUF reader lock poisoned".into()))?;
                match tensors.remove(name) {
                    Some(MemoryTensor::Blocks(t)) => Ok(t),
                    _ => Err(malformed("is absent or was already loaded".into())),
                }
            }
        }
    }

    /// A tensor's stored type, when present and candle knows it (our block types: `None`).
    pub fn tensor_dtype(&self, name: &str) -> Option<GgmlDType> {
        let t = self.header.tensors.iter().find(|t| t.name == name)?;
        ggml_types::TYPES
            .iter()
            .find(|ty| ty.id == t.type_id)
            .and_then(|ty| ty.candle)
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

    /// Reads one tensor onto `device` (in-memory tensors stay where they were built, and are
    /// handed out once).
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let poisoned = || Error::Device("GGUF reader lock poisoned".into());
        if let Some(ty) = self.block_type(name) {
            return Err(Error::UnsupportedTensorType {
                tensor: untrusted::short(name),
                found: format!("{} (read here as a vector)", ty.name()),
                supported: format!(
                    "{} as the weight of a linear layer or an embedding table",
                    ty.name()
                ),
            });
        }
        match &self.data {
            Data::Map(map) => {
                let (range, dtype, shape) = self.locate(name)?;
                mapped::qtensor(map, range, dtype, shape, device).map_err(|e| {
                    Error::MalformedGguf {
                        path: self.path.clone(),
                        reason: format!("tensor '{}': {e}", untrusted::short(name)),
                    }
                })
            }
            Data::Memory(tensors) => match tensors.lock().map_err(|_| poisoned())?.remove(name) {
                Some(MemoryTensor::Candle(t)) => Ok(t),
                _ => Err(Error::MalformedGguf {
                    path: self.path.clone(),
                    reason: format!("tensor '{name}' is absent or was already loaded"),
                }),
            },
        }
    }

    /// The `n` equal slices of tensor `name` along its outermost dimension (the experts of a
    /// stacked MoE tensor), each shaped like the tensor without that dimension: borrowed from
    /// the map like [`Self::tensor`], or split from the in-memory tensor (copied).
    pub fn tensor_split(&self, name: &str, n: usize, device: &Device) -> Result<Vec<QTensor>> {
        let malformed = |reason: String| Error::MalformedGguf {
            path: self.path.clone(),
            reason: format!("tensor '{}': {reason}", untrusted::short(name)),
        };
        let slices = |total: usize, dims: &[usize]| -> Result<(usize, Vec<usize>)> {
            match dims.split_first() {
                Some((&outer, inner)) if outer == n && n > 0 && total.is_multiple_of(n) => {
                    Ok((total / n, inner.to_vec()))
                }
                _ => Err(malformed(format!(
                    "shape {dims:?} does not hold {n} experts"
                ))),
            }
        };
        match &self.data {
            Data::Map(map) => {
                let (range, dtype, shape) = self.locate(name)?;
                let (per, inner) = slices(range.len(), shape.dims())?;
                (0..n)
                    .map(|e| {
                        let start = range.start + e * per;
                        mapped::qtensor(
                            map,
                            start..start + per,
                            dtype,
                            inner.clone().into(),
                            device,
                        )
                        .map_err(|err| malformed(err.to_string()))
                    })
                    .collect()
            }
            Data::Memory(_) => {
                let whole = self.tensor(name, device)?;
                let data = whole.data()?;
                let (per, inner) = slices(data.len(), whole.shape().dims())?;
                (0..n)
                    .map(|e| {
                        let bytes = std::borrow::Cow::Borrowed(&data[e * per..(e + 1) * per]);
                        let storage = candle_core::quantized::QStorage::from_data(
                            bytes,
                            device,
                            whole.dtype(),
                        )?;
                        Ok(QTensor::new(storage, inner.clone())?)
                    })
                    .collect()
            }
        }
    }

    /// Lets the pages of tensor `name` go (its data now lives elsewhere, e.g. stacked with
    /// others): they leave the resident set and are read again from the file if touched.
    pub fn release(&self, name: &str) {
        let Data::Map(map) = &self.data else {
            return;
        };
        let range = match self.own.get(name) {
            Some(&(ty, offset, ref shape)) => self.own_range(ty, offset, shape),
            None => self.locate(name).ok().map(|(range, _, _)| range),
        };
        if let Some(range) = range {
            mapped::release(map, range);
        }
    }

    /// Where the blocks of a tensor of our own type `ty` at `offset` in the data section lie
    /// in the file, when its rows are whole blocks and the sum does not overflow.
    fn own_range(
        &self,
        ty: BlockType,
        offset: u64,
        shape: &[usize],
    ) -> Option<std::ops::Range<usize>> {
        let bytes = ty.bytes_for(shape)?;
        let start = self.content.tensor_data_offset.checked_add(offset)?;
        let start = usize::try_from(start).ok()?;
        Some(start..start.checked_add(bytes)?)
    }

    /// Where tensor `name`'s bytes lie in the file, with its type and shape.
    fn locate(&self, name: &str) -> Result<(std::ops::Range<usize>, GgmlDType, Shape)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::MalformedGguf {
                path: self.path.clone(),
                reason: format!("no tensor '{}'", untrusted::short(name)),
            })?;
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        let bytes = elems / dtype.block_size() * dtype.type_size();
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok());
        match start.and_then(|s| Some(s..s.checked_add(bytes)?)) {
            Some(range) => Ok((range, dtype, info.shape.clone())),
            None => Err(Error::MalformedGguf {
                path: self.path.clone(),
                reason: format!("tensor '{}' lies outside the file", untrusted::short(name)),
            }),
        }
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
        let v = self.value(key)?;
        let n = integer(v).ok_or_else(|| bad(key, "an integer", v))?;
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

    /// A float value (f32 or f64, or an integer taken as a float).
    pub fn float(&self, key: &str) -> Result<f64> {
        use gguf_file::Value as V;
        // Integers are taken as the floats they spell (writers sometimes store `8` for 8.0).
        match self.value(key)? {
            V::F32(x) => Ok(*x as f64),
            V::F64(x) => Ok(*x),
            V::U8(x) => Ok(*x as f64),
            V::I8(x) => Ok(*x as f64),
            V::U16(x) => Ok(*x as f64),
            V::I16(x) => Ok(*x as f64),
            V::U32(x) => Ok(*x as f64),
            V::I32(x) => Ok(*x as f64),
            V::U64(x) => Ok(*x as f64),
            V::I64(x) => Ok(*x as f64),
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

    /// An array of booleans (llama.cpp's per-layer flags, `attention.sliding_window_pattern`).
    pub fn bools(&self, key: &str) -> Result<Vec<bool>> {
        let v = self.value(key)?;
        let items = match v {
            gguf_file::Value::Array(items) => items,
            other => return Err(bad(key, "an array of booleans", other)),
        };
        items
            .iter()
            .map(|i| match i {
                gguf_file::Value::Bool(b) => Ok(*b),
                other => Err(bad(key, "an array of booleans", other)),
            })
            .collect()
    }

    /// One unsigned integer per layer: an array of `n_layers` integers of any width, or one
    /// integer for every layer (llama.cpp's per-layer `attention.head_count_kv`).
    pub fn per_layer(&self, key: &str, n_layers: usize) -> Result<Vec<usize>> {
        let items = match self.value(key)? {
            gguf_file::Value::Array(items) => items,
            _ => return Ok(vec![self.usize(key)?; n_layers]),
        };
        if items.len() != n_layers {
            return Err(Error::BadMetadata {
                key: key.to_string(),
                expected: "one integer per block",
                found: format!("{} values for {n_layers} blocks", items.len()),
            });
        }
        items
            .iter()
            .map(|v| {
                integer(v)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad(key, "non-negative integers", v))
            })
            .collect()
    }
}

/// An integer of any width, widened.
fn integer(v: &gguf_file::Value) -> Option<i128> {
    use gguf_file::Value as V;
    Some(match v {
        V::U8(x) => *x as i128,
        V::I8(x) => *x as i128,
        V::U16(x) => *x as i128,
        V::I16(x) => *x as i128,
        V::U32(x) => *x as i128,
        V::I32(x) => *x as i128,
        V::U64(x) => *x as i128,
        V::I64(x) => *x as i128,
        _ => return None,
    })
}

/// The tensors of our own block types in a header: type, offset and shape in candle's
/// order (their extents were checked by `check_loadable`).
fn own_tensors(header: &Header) -> HashMap<String, (BlockType, u64, Vec<usize>)> {
    header
        .tensors
        .iter()
        .filter_map(|t| {
            let ty = BlockType::from_id(t.type_id)?;
            let dims = t.dims.iter().rev().map(|&d| usize::try_from(d).ok());
            Some((
                t.name.clone(),
                (ty, t.offset, dims.collect::<Option<Vec<_>>>()?),
            ))
        })
        .collect()
}

/// Candle's tensor directory from ours (whose types `check_loadable` has checked).
fn tensor_infos(header: &Header) -> HashMap<String, gguf_file::TensorInfo> {
    header
        .tensors
        .iter()
        .filter_map(|t| {
            let dims = t
                .dims
                .iter()
                .rev()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<Vec<_>>>()?;
            let info = gguf_file::TensorInfo {
                ggml_dtype: ggml_types::by_id(t.type_id)?.candle?,
                shape: dims.into(),
                offset: t.offset,
            };
            Some((t.name.clone(), info))
        })
        .collect()
}

/// The tokenizer's arrays must have the element types it reads: one of another type is kept
/// abbreviated, so it is refused here rather than reported missing later.
fn check_tokenizer_arrays(header: &Header) -> Result<()> {
    for (key, types) in gguf_header::TOKENIZER_ARRAYS {
        let Some(array) = header.get(key).and_then(gguf_header::Value::as_array) else {
            continue;
        };
        if !types.contains(&array.elem_type) {
            return Err(Error::BadMetadata {
                key: (*key).to_string(),
                expected: "an array of the element type the tokenizer reads",
                found: format!("ARRAY[{}]", array.elem_type.name()),
            });
        }
    }
    Ok(())
}

/// The GGUF id of a value type.
fn value_type_id(t: gguf_file::ValueType) -> u32 {
    use gguf_file::ValueType as T;
    match t {
        T::U8 => 0,
        T::I8 => 1,
        T::U16 => 2,
        T::I16 => 3,
        T::U32 => 4,
        T::I32 => 5,
        T::F32 => 6,
        T::Bool => 7,
        T::String => 8,
        T::Array => 9,
        T::U64 => 10,
        T::I64 => 11,
        T::F64 => 12,
    }
}

/// Our header's view of a candle metadata value (same type, same contents).
/// A candle metadata value as our header holds it (and [`super::gguf_builder`] writes it).
pub fn header_value(v: &gguf_file::Value) -> gguf_header::Value {
    use gguf_file::Value as V;
    use gguf_header::Value as H;
    match v {
        V::U8(x) => H::U8(*x),
        V::I8(x) => H::I8(*x),
        V::U16(x) => H::U16(*x),
        V::I16(x) => H::I16(*x),
        V::U32(x) => H::U32(*x),
        V::I32(x) => H::I32(*x),
        V::U64(x) => H::U64(*x),
        V::I64(x) => H::I64(*x),
        V::F32(x) => H::F32(*x),
        V::F64(x) => H::F64(*x),
        V::Bool(x) => H::Bool(*x),
        V::String(x) => H::Str(x.clone()),
        V::Array(items) => H::Array(crate::formats::gguf_value::Array {
            elem_type: crate::formats::gguf_value::ValueType::from_id(
                items.first().map_or(0, |i| value_type_id(i.value_type())),
            )
            .unwrap_or(crate::formats::gguf_value::ValueType::U8),
            len: items.len() as u64,
            items: items.iter().map(header_value).collect(),
        }),
    }
}

fn bad(key: &str, expected: &'static str, found: &gguf_file::Value) -> Error {
    Error::BadMetadata {
        key: key.to_string(),
        expected,
        found: format!("{:?}", found.value_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf_builder::Builder;
    use crate::formats::gguf_header::Value as G;

    #[test]
    fn mxfp4_tensors_are_read_in_place_and_bad_rows_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mx.gguf");
        let values: Vec<f32> = (0..3 * 64).map(|i| (i % 13) as f32 - 6.0).collect();
        let blocks = BlockType::Mxfp4.quantize(&values);
        Builder::new()
            .meta("general.architecture", G::Str("gpt-oss".into()))
            .tensor("good", &[64, 3], BlockType::Mxfp4.id(), blocks.clone())
            // 96 values, a whole number of blocks, but rows of 48.
            .tensor(
                "odd",
                &[48, 2],
                BlockType::Mxfp4.id(),
                blocks[..3 * 17].to_vec(),
            )
            .write(&path)
            .unwrap();
        let g = Gguf::open(&path).unwrap();
        assert!(g.has_tensor("good") && g.block_type("good") == Some(BlockType::Mxfp4));
        assert_eq!(g.tensor_shape("good"), Some(vec![3, 64]));
        let m = g.blocks("good", &Device::Cpu).unwrap();
        assert_eq!((m.shape(), m.data()), (&[3, 64][..], &blocks[..]));
        let e = g.blocks("odd", &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("not whole MXFP4 blocks"), "{e}");
        // Read as a table or vector, it is refused naming what it can be.
        let e = g.tensor("good", &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("MXFP4 as the weight of a linear layer"), "{e}");
        assert_eq!(g.block_type("good"), Some(BlockType::Mxfp4));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_file_map_asks_for_huge_pages() {
        use crate::kernels::cpu::huge::tests::{has_huge_pages, vm_flags};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        Builder::new()
            .meta("general.architecture", G::Str("llama".into()))
            .tensor("t", &[32], 0, vec![0u8; 128])
            .write(&path)
            .unwrap();
        let g = Gguf::open(&path).unwrap();
        let Data::Map(map) = &g.data else {
            panic!("a file opens as a map")
        };
        let flags = vm_flags(map.as_ptr() as usize).expect("the map is listed");
        assert_eq!(
            flags.iter().any(|f| f == "hg"),
            has_huge_pages(),
            "{flags:?}"
        );
    }
}
