//! Tensors of the block types that our own kernels compute and candle has no type for
//! (MXFP4, IQ4_NL, IQ4_XS): whole blocks of ggml's layout, borrowed from a mapped GGUF or
//! owned, with their shape; split into experts, stacked and sliced by rows alike.

use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

use super::{iq4, mxfp4};
use crate::{Error, Result};

/// A block type of our own kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockType {
    /// OCP microscaling FP4 ([`mxfp4`]).
    Mxfp4,
    /// 4-bit non-linear codes, blocks of 32 ([`iq4`]).
    Iq4Nl,
    /// 4-bit non-linear codes, super-blocks of 256 with 6-bit scales ([`iq4`]).
    Iq4Xs,
}

impl BlockType {
    /// Every type, in ggml's id order of appearance in our table.
    pub const ALL: [BlockType; 3] = [BlockType::Mxfp4, BlockType::Iq4Nl, BlockType::Iq4Xs];

    /// The type of ggml's type id `id`, when ours.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// ggml's type id.
    pub fn id(self) -> u32 {
        match self {
            Self::Mxfp4 => mxfp4::GGML_TYPE_ID,
            Self::Iq4Nl => iq4::NL_TYPE_ID,
            Self::Iq4Xs => iq4::XS_TYPE_ID,
        }
    }

    /// ggml's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mxfp4 => "MXFP4",
            Self::Iq4Nl => "IQ4_NL",
            Self::Iq4Xs => "IQ4_XS",
        }
    }

    /// Values per block.
    pub fn block(self) -> usize {
        match self {
            Self::Mxfp4 => mxfp4::BLOCK,
            Self::Iq4Nl => iq4::NL_BLOCK,
            Self::Iq4Xs => iq4::XS_BLOCK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Mxfp4 => mxfp4::BLOCK_BYTES,
            Self::Iq4Nl => iq4::NL_BLOCK_BYTES,
            Self::Iq4Xs => iq4::XS_BLOCK_BYTES,
        }
    }

    /// The values of whole blocks `bytes` into `out`.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Self::Mxfp4 => mxfp4::dequantize(bytes, out),
            Self::Iq4Nl => iq4::dequantize_nl(bytes, out),
            Self::Iq4Xs => iq4::dequantize_xs(bytes, out),
        }
    }

    /// `values` (whole blocks) quantized to this type.
    pub fn quantize(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::Mxfp4 => mxfp4::quantize(values),
            Self::Iq4Nl => iq4::quantize_nl(values),
            Self::Iq4Xs => iq4::quantize_xs(values),
        }
    }

    /// Bytes of a tensor of `shape`, when its rows are whole blocks.
    pub fn bytes_for(self, shape: &[usize]) -> Option<usize> {
        let cols = *shape.last()?;
        if cols == 0 || !cols.is_multiple_of(self.block()) {
            return None;
        }
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .map(|n| n / self.block() * self.block_bytes())
    }
}

/// Where a tensor's blocks are: in place in a mapped file, or owned.
#[derive(Clone)]
enum Bytes {
    Mapped(Arc<Mmap>, Range<usize>),
    Owned(Arc<[u8]>),
}

/// A tensor of one [`BlockType`] (outermost dimension first, the last a whole number of
/// blocks): rows of blocks one after another.
#[derive(Clone)]
pub struct Blocks {
    ty: BlockType,
    bytes: Bytes,
    shape: Vec<usize>,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.bytes {
            Bytes::Mapped(..) => "mapped",
            Bytes::Owned(_) => "owned",
        };
        write!(f, "{}({:?}, {place})", self.ty.name(), self.shape)
    }
}

impl Blocks {
    /// A tensor over `range` of a mapped file; `None` unless the range lies in the map and
    /// holds exactly the blocks of `shape`.
    pub fn mapped(
        ty: BlockType,
        map: &Arc<Mmap>,
        range: Range<usize>,
        shape: Vec<usize>,
    ) -> Option<Self> {
        let fits = range.start <= range.end && range.end <= map.len();
        (fits && ty.bytes_for(&shape) == Some(range.len())).then(|| Self {
            ty,
            bytes: Bytes::Mapped(map.clone(), range),
            shape,
        })
    }

    /// A tensor owning `bytes`, which must be exactly the blocks of `shape`.
    pub fn owned(ty: BlockType, bytes: Vec<u8>, shape: Vec<usize>) -> Result<Self> {
        if ty.bytes_for(&shape) != Some(bytes.len()) {
            return Err(Error::Internal(format!(
                "{} tensor of shape {shape:?} cannot hold {} bytes",
                ty.name(),
                bytes.len()
            )));
        }
        Ok(Self {
            ty,
            bytes: Bytes::Owned(bytes.into()),
            shape,
        })
    }

    /// `values` of `shape` quantized to `ty` ([`BlockType::quantize`]).
    pub fn quantize(ty: BlockType, values: &[f32], shape: Vec<usize>) -> Result<Self> {
        if ty.bytes_for(&shape).is_none() || shape.iter().product::<usize>() != values.len() {
            return Err(Error::InvalidArgument(format!(
                "{} values of shape {shape:?} cannot be stored as {} (rows must be whole \
                 blocks of {})",
                values.len(),
                ty.name(),
                ty.block()
            )));
        }
        Self::owned(ty, ty.quantize(values), shape)
    }

    /// The block type.
    pub fn block_type(&self) -> BlockType {
        self.ty
    }

    /// The blocks.
    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(map, range) => &map[range.clone()],
            Bytes::Owned(b) => b,
        }
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// `(rows, cols)` of a matrix: the last dimension and all others folded together.
    pub fn dims2(&self) -> (usize, usize) {
        let cols = self.shape.last().copied().unwrap_or(0);
        let rows = self.shape.iter().rev().skip(1).product();
        (rows, cols)
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.dims2().1 / self.ty.block() * self.ty.block_bytes()
    }

    /// Every value, in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.shape.iter().product()];
        self.ty.dequantize(self.data(), &mut out);
        out
    }

    /// The values of rows `rows` (of the matrix [`Self::dims2`] sees), in f32, into `out`
    /// (`rows.len() · cols` long): an embedding's lookup, without the whole table.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let rb = self.row_bytes();
        self.ty
            .dequantize(&self.data()[rows.start * rb..rows.end * rb], out);
    }

    /// The `n` equal slices along the outermost dimension (the experts of a stacked tensor),
    /// sharing these bytes.
    pub fn split(&self, n: usize) -> Result<Vec<Self>> {
        let name = self.ty.name();
        let Some((&outer, inner)) = self.shape.split_first() else {
            return Err(Error::Internal(format!("{name}: cannot split a scalar")));
        };
        if outer != n || n == 0 || inner.is_empty() {
            return Err(Error::Internal(format!(
                "{name} tensor of shape {:?} does not hold {n} slices",
                self.shape
            )));
        }
        let per = self.data().len() / n;
        let slice = |e: usize| -> Bytes {
            match &self.bytes {
                Bytes::Mapped(map, range) => {
                    let start = range.start + e * per;
                    Bytes::Mapped(map.clone(), start..start + per)
                }
                Bytes::Owned(b) => Bytes::Owned(b[e * per..(e + 1) * per].into()),
            }
        };
        Ok((0..n)
            .map(|e| Self {
                ty: self.ty,
                bytes: slice(e),
                shape: inner.to_vec(),
            })
            .collect())
    }

    /// Matrices stacked row-wise (their rows in order), when they share a type and a width:
    /// `None` otherwise.
    pub fn stack_rows(parts: &[&Self]) -> Option<Self> {
        let first = parts.first()?;
        let (ty, (_, cols)) = (first.ty, first.dims2());
        if parts.iter().any(|p| p.dims2().1 != cols || p.ty != ty) {
            return None;
        }
        let rows = parts.iter().map(|p| p.dims2().0).sum();
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.data().len()).sum());
        for p in parts {
            bytes.extend_from_slice(p.data());
        }
        Self::owned(ty, bytes, vec![rows, cols]).ok()
    }

    /// The rows `rows` of a matrix, copied (e.g. the even rows of an interleaved gate/up).
    pub fn select_rows(&self, rows: impl Iterator<Item = usize>) -> Result<Self> {
        let (n, cols) = self.dims2();
        let row_bytes = self.row_bytes();
        let data = self.data();
        let mut bytes = Vec::new();
        let mut count = 0;
        for r in rows {
            if r >= n {
                return Err(Error::Internal(format!(
                    "{}: row {r} of {n}",
                    self.ty.name()
                )));
            }
            bytes.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
            count += 1;
        }
        Self::owned(self.ty, bytes, vec![count, cols])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_split_stack_and_select_rows_without_changing_values() {
        for ty in BlockType::ALL {
            let cols = 256;
            let values: Vec<f32> = (0..3 * 4 * cols)
                .map(|i| ((i * 37) % 23) as f32 - 11.0)
                .collect();
            let t = Blocks::quantize(ty, &values, vec![3, 4, cols]).unwrap();
            assert_eq!(t.dims2(), (12, cols));
            let all = t.dequantize();
            let row = |r: usize| all[r * cols..(r + 1) * cols].to_vec();
            let parts = t.split(3).unwrap();
            assert_eq!(parts[1].shape(), &[4, cols]);
            assert_eq!(parts[1].dequantize(), all[4 * cols..8 * cols].to_vec());
            let stacked = Blocks::stack_rows(&[&parts[2], &parts[0]]).unwrap();
            let mut want = all[8 * cols..12 * cols].to_vec();
            want.extend_from_slice(&all[..4 * cols]);
            assert_eq!(stacked.dequantize(), want);
            let odd = parts[0].select_rows([1, 3].into_iter()).unwrap();
            let mut want = row(1);
            want.extend(row(3));
            assert_eq!(odd.dequantize(), want);
            let mut two = vec![0f32; 2 * cols];
            t.dequantize_rows(5..7, &mut two);
            assert_eq!(two, [row(5), row(6)].concat());
            assert!(t.split(2).is_err());
            assert!(Blocks::quantize(ty, &values[..40], vec![1, 40]).is_err());
        }
        let a = Blocks::quantize(BlockType::Iq4Nl, &[0.5; 256], vec![1, 256]).unwrap();
        let b = Blocks::quantize(BlockType::Iq4Xs, &[0.5; 256], vec![1, 256]).unwrap();
        assert!(Blocks::stack_rows(&[&a, &b]).is_none(), "types differ");
    }

    #[test]
    fn every_type_is_in_the_ggml_table_with_its_geometry() {
        for ty in BlockType::ALL {
            let row = super::super::ggml_types::by_id(ty.id()).unwrap();
            assert_eq!(
                (row.name, row.block_size, row.type_size),
                (ty.name(), ty.block(), ty.block_bytes())
            );
            assert_eq!(BlockType::from_id(ty.id()), Some(ty));
        }
    }
}
