//! Quantized tensors whose blocks stay in a memory-mapped model file: candle's CPU quantized
//! storage over a borrowed range of the map, so loading a GGUF copies nothing and the kernels
//! read the file's pages in place (resident only once touched, and reclaimable by the kernel).

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use candle_core::quantized::{GgmlDType, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, Device, Shape};
use half::{bf16, f16};
use memmap2::Mmap;

/// A tensor's bytes in the map, as blocks of `T`; replaced by an owned copy only if candle
/// ever writes into the storage (it does not for loaded weights, but the trait allows it).
struct MappedBlocks<T> {
    map: Arc<Mmap>,
    /// Byte range of the tensor in the map; its start is aligned for `T`.
    range: Range<usize>,
    owned: Option<Vec<T>>,
    _blocks: PhantomData<T>,
}

impl<T: GgmlType> MappedBlocks<T> {
    fn blocks(&self) -> &[T] {
        if let Some(owned) = &self.owned {
            return owned;
        }
        let bytes = &self.map[self.range.clone()];
        // SAFETY: `new` checked that the range lies in the map, that its start is aligned for
        // `T` and that its length is a whole number of `T`s; block types are plain `repr(C)`
        // data valid for any bit pattern, and the map is read-only and outlives `self`.
        unsafe {
            std::slice::from_raw_parts(
                bytes.as_ptr().cast::<T>(),
                bytes.len() / std::mem::size_of::<T>(),
            )
        }
    }

    fn owned(&mut self) -> &mut Vec<T> {
        if self.owned.is_none() {
            self.owned = Some(self.blocks().to_vec());
        }
        self.owned.get_or_insert_with(Vec::new)
    }
}

impl<T: GgmlType + 'static> QuantizedType for MappedBlocks<T> {
    fn dtype(&self) -> GgmlDType {
        T::DTYPE
    }

    fn matmul_t(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[f32],
        dst: &mut [f32],
    ) -> candle_core::Result<()> {
        candle_core::quantized::k_quants::matmul(mkn, lhs, self.blocks(), dst)
    }

    fn matmul_t_f16(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[f16],
        dst: &mut [f16],
    ) -> candle_core::Result<()> {
        candle_core::quantized::k_quants::matmul_f16(mkn, lhs, self.blocks(), dst)
    }

    fn embedding(
        &self,
        ids: &[u32],
        rows: usize,
        hidden: usize,
    ) -> candle_core::Result<CpuStorage> {
        // Candle's own implementation, over a borrowed slice: rows converted one by one.
        if !hidden.is_multiple_of(T::BLCK_SIZE) {
            candle_core::bail!(
                "embedding width {hidden} is not a multiple of {}",
                T::BLCK_SIZE
            )
        }
        let per_row = hidden / T::BLCK_SIZE;
        let blocks = self.blocks();
        if blocks.len() != rows * per_row {
            candle_core::bail!(
                "embedding has {} blocks, expected {}",
                blocks.len(),
                rows * per_row
            )
        }
        let mut out = vec![0f32; ids.len() * hidden];
        for (i, &id) in ids.iter().enumerate() {
            let row = id as usize;
            if row >= rows {
                candle_core::bail!("token id {row} is out of range for {rows} rows")
            }
            T::to_float(
                &blocks[row * per_row..(row + 1) * per_row],
                &mut out[i * hidden..(i + 1) * hidden],
            );
        }
        Ok(CpuStorage::F32(out))
    }

    fn dequantize(&self, elem_count: usize) -> candle_core::Result<CpuStorage> {
        let mut out = vec![0f32; elem_count];
        T::to_float(self.blocks(), &mut out);
        Ok(CpuStorage::F32(out))
    }

    fn storage_size_in_bytes(&self) -> usize {
        std::mem::size_of_val(self.blocks())
    }

    fn as_ptr(&self) -> *const u8 {
        self.blocks().as_ptr().cast()
    }

    fn block_size(&self) -> usize {
        T::BLCK_SIZE
    }

    fn from_float(&mut self, xs: &[f32]) {
        T::from_float(xs, self.owned())
    }

    fn from_float_imatrix(&mut self, xs: &[f32], imatrix_weights: &[f32], n_per_row: usize) {
        T::from_float_imatrix(xs, self.owned(), imatrix_weights, n_per_row)
    }

    fn size(&self) -> usize {
        self.storage_size_in_bytes()
    }
}

/// Why a range of the map cannot back a tensor in place.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmappable {
    /// The range does not lie inside the map.
    OutOfBounds,
    /// The range is not a whole number of blocks, or its start is not aligned for them.
    Misaligned,
}

/// A tensor of `dtype` and `shape` over `range` of `map`: on the CPU the blocks stay in the
/// map; on another device they are uploaded from it (one copy, on the device).
pub fn qtensor(
    map: &Arc<Mmap>,
    range: Range<usize>,
    dtype: GgmlDType,
    shape: Shape,
    device: &Device,
) -> Result<QTensor, MapError> {
    let bytes = map.get(range.clone()).ok_or(Unmappable::OutOfBounds)?;
    let storage = match device {
        Device::Cpu => QStorage::Cpu(cpu_storage(map, range, dtype)?),
        _ => QStorage::from_data(std::borrow::Cow::Borrowed(bytes), device, dtype)?,
    };
    Ok(QTensor::new(storage, shape)?)
}

/// What [`qtensor`] can fail with.
#[derive(Debug)]
pub enum MapError {
    /// The range cannot hold the blocks in place.
    Range(Unmappable),
    /// Candle refused the shape or the device upload.
    Candle(candle_core::Error),
}

impl From<Unmappable> for MapError {
    fn from(e: Unmappable) -> Self {
        Self::Range(e)
    }
}

impl From<candle_core::Error> for MapError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapError::Range(Unmappable::OutOfBounds) => f.write_str("data lies outside the file"),
            MapError::Range(Unmappable::Misaligned) => {
                f.write_str("data is not a whole number of aligned blocks")
            }
            MapError::Candle(e) => write!(f, "{e}"),
        }
    }
}

fn cpu_storage(
    map: &Arc<Mmap>,
    range: Range<usize>,
    dtype: GgmlDType,
) -> Result<Box<dyn QuantizedType>, Unmappable> {
    fn boxed<T: GgmlType + 'static>(
        map: &Arc<Mmap>,
        range: Range<usize>,
    ) -> Result<Box<dyn QuantizedType>, Unmappable> {
        let size = std::mem::size_of::<T>();
        let start = map.as_ptr() as usize + range.start;
        if !range.len().is_multiple_of(size) || !start.is_multiple_of(std::mem::align_of::<T>()) {
            return Err(Unmappable::Misaligned);
        }
        Ok(Box::new(MappedBlocks::<T> {
            map: map.clone(),
            range,
            owned: None,
            _blocks: PhantomData,
        }))
    }
    if range.end > map.len() || range.start > range.end {
        return Err(Unmappable::OutOfBounds);
    }
    match dtype {
        GgmlDType::F32 => boxed::<f32>(map, range),
        GgmlDType::F16 => boxed::<f16>(map, range),
        GgmlDType::BF16 => boxed::<bf16>(map, range),
        GgmlDType::Q4_0 => boxed::<BlockQ4_0>(map, range),
        GgmlDType::Q4_1 => boxed::<BlockQ4_1>(map, range),
        GgmlDType::Q5_0 => boxed::<BlockQ5_0>(map, range),
        GgmlDType::Q5_1 => boxed::<BlockQ5_1>(map, range),
        GgmlDType::Q8_0 => boxed::<BlockQ8_0>(map, range),
        GgmlDType::Q8_1 => boxed::<BlockQ8_1>(map, range),
        GgmlDType::Q2K => boxed::<BlockQ2K>(map, range),
        GgmlDType::Q3K => boxed::<BlockQ3K>(map, range),
        GgmlDType::Q4K => boxed::<BlockQ4K>(map, range),
        GgmlDType::Q5K => boxed::<BlockQ5K>(map, range),
        GgmlDType::Q6K => boxed::<BlockQ6K>(map, range),
        GgmlDType::Q8K => boxed::<BlockQ8K>(map, range),
    }
}

/// Tells the kernel that `range` of `map` is not needed now (its data was copied elsewhere, e.g.
/// stacked with other tensors): the pages leave this process's resident set and are read from
/// the file again if ever touched. Only whole pages inside the range are released.
///
/// The range is also advised as read at random, which gives it a mapping of its own: a fault
/// maps only pages of its own mapping, so reading a neighbouring tensor can no longer map the
/// released pages back. It did: the page cache holds a file in folios of up to megabytes, a
/// fault maps the whole folio, and SmolLM2's stacked Q/K/V and gate/up pages came back for 12
/// of its 30 layers as the tensors beside them were read (16 MB, resident twice).
pub fn release(map: &Mmap, range: Range<usize>) {
    let page = page_size();
    let start = range.start.div_ceil(page) * page;
    let end = range.end.min(map.len()) / page * page;
    if end > start {
        // SAFETY: the map is read-only and file-backed, so dropping its pages loses nothing:
        // a later access reads the same bytes from the file again.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
        let _ = map.advise_range(memmap2::Advice::Random, start, end - start);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    fn map_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<Mmap>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        // SAFETY: the test owns the file and does not change it while mapped.
        let map = unsafe { Mmap::map(f.as_file()) }.unwrap();
        (f, Arc::new(map))
    }

    #[test]
    fn a_mapped_tensor_computes_what_its_copy_computes() {
        let values: Vec<f32> = (0..8 * 256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let w = Tensor::from_vec(values, (8, 256), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q4K,
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::F16,
        ] {
            let owned = QTensor::quantize(&w, dtype).unwrap();
            let data = owned.data().unwrap().to_vec();
            // At an offset, as a tensor lies in a file.
            let mut file = vec![0u8; 64];
            file.extend_from_slice(&data);
            let (_f, map) = map_of(&file);
            let mapped = qtensor(
                &map,
                64..64 + data.len(),
                dtype,
                (8, 256).into(),
                &Device::Cpu,
            )
            .unwrap();
            assert_eq!(mapped.data().unwrap().as_ref(), data.as_slice());
            let a = owned
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let b = mapped
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(a, b, "{dtype:?}");
            let x = Tensor::ones((3, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
            let ya = candle_core::quantized::QMatMul::from_qtensor(owned).unwrap();
            let yb = candle_core::quantized::QMatMul::from_qtensor(mapped).unwrap();
            use candle_core::Module;
            let (ya, yb) = (ya.forward(&x).unwrap(), yb.forward(&x).unwrap());
            assert_eq!(ya.to_vec2::<f32>().unwrap(), yb.to_vec2::<f32>().unwrap());
        }
    }

    #[test]
    fn ranges_that_cannot_hold_blocks_are_refused() {
        let (_f, map) = map_of(&[0u8; 1024]);
        let shape = || Shape::from((1, 32));
        let q8 = GgmlDType::Q8_0; // 34-byte blocks
        assert!(matches!(
            qtensor(&map, 1000..1034, q8, shape(), &Device::Cpu),
            Err(MapError::Range(Unmappable::OutOfBounds))
        ));
        assert!(matches!(
            qtensor(&map, 0..33, q8, shape(), &Device::Cpu),
            Err(MapError::Range(Unmappable::Misaligned))
        ));
        // f32 needs 4-byte alignment.
        assert!(matches!(
            qtensor(&map, 1..129, GgmlDType::F32, shape(), &Device::Cpu),
            Err(MapError::Range(Unmappable::Misaligned))
        ));
        assert!(qtensor(&map, 0..34, q8, shape(), &Device::Cpu).is_ok());
    }

    /// Whether this process has the page at `addr` mapped (`/proc/self/pagemap`'s present bit).
    #[cfg(target_os = "linux")]
    fn mapped_here(addr: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
        f.seek(SeekFrom::Start((addr / page_size() * 8) as u64))
            .unwrap();
        let mut entry = [0u8; 8];
        f.read_exact(&mut entry).unwrap();
        u64::from_le_bytes(entry) >> 63 == 1
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn released_pages_stay_out_when_their_neighbours_are_read() {
        // 8 MiB in the page cache (written, then read through the map), the middle 2 MiB
        // released, then every other page read: none of the released ones may come back
        // (with the file in large folios, a fault beside them used to map them again).
        let page = page_size();
        let bytes: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        let (_f, map) = map_of(&bytes);
        let touch = |range: Range<usize>| {
            let mut sum = 0u64;
            for at in range.step_by(page) {
                sum += map[at] as u64;
            }
            std::hint::black_box(sum);
        };
        touch(0..map.len());
        let released = (3 << 20)..(5 << 20);
        release(&map, released.clone());
        touch(0..released.start);
        touch(released.end..map.len());
        let base = map.as_ptr() as usize;
        let back: Vec<usize> = released
            .step_by(page)
            .filter(|&at| mapped_here(base + at))
            .collect();
        assert!(
            back.is_empty(),
            "{} released pages mapped again",
            back.len()
        );
    }
}
