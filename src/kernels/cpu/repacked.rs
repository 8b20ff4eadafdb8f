//! K-quant weights repacked at load into groups of sixteen interleaved rows, for CPUs with
//! AVX2 or AVX-512 VNNI: the container, its packing and its products spread over the pool.
//! The layouts and kernels are per type: Q4_K's in [`super::q4k16`].
//!
//! Read in GGUF's order, one row at a time, a k-quant product spends as many instructions on
//! each super-block's bookkeeping (unpacking scales, spreading them to the products, summing
//! lanes across a register) as on the products themselves. With sixteen rows side by side,
//! each i32 lane of a register belongs to one row: one instruction multiplies four values of
//! each of the sixteen rows by the same four activations (broadcast), no sum crosses lanes,
//! and the rows' scales are laid out where their lanes need them. Products equal the stored
//! rows' ([`super::kdots`]) bit for bit, so repacking changes speed, never results.
//!
//! Q6_K stays stored: ggml's eight lanes per row (which our Q6_K products keep, see
//! [`super::kdots`]) need a multiply per lane and four values, so its repacked kernel
//! gained 7–15% for one activation row, lost for several, and slowed prompts by 4%.

use candle_core::quantized::GgmlDType;

use super::gemv::Kernel;
use super::huge::Pages;
use super::kdots::{Q8K, QK_K};

/// Rows per group.
pub const ROWS: usize = 16;

/// Activation rows (a multiple of four) whose products a thread forms group after group
/// before the next rows: 32 rows of a 4,096-wide layer are about 170 KiB quantized, so they
/// stay in the core's cache while the weights stream past.
const BLOCK_ROWS: usize = 32;

/// The repacked types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Q4_K ([`super::q4k16`]).
    Q4K,
}

impl Format {
    /// The repacked form of `dtype`, if it has one.
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4K => Some(Self::Q4K),
            _ => None,
        }
    }

    /// The stored type's ggml name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4K => "Q4_K",
        }
    }

    /// Bytes of one stored super-block (one row's 256 values).
    pub fn stored_bytes(self) -> usize {
        match self {
            Self::Q4K => super::kdots::Q4K_BYTES,
        }
    }

    /// Bytes of one group of `supers` super-blocks, a whole number of cache lines.
    fn group_bytes(self, supers: usize) -> usize {
        match self {
            Self::Q4K => super::q4k16::group_bytes(supers),
        }
    }
}

/// A k-quant matrix of `n` rows (a multiple of [`ROWS`]) of `k` values, repacked.
pub struct Repacked {
    /// The groups in order, on 2 MiB pages ([`super::huge`]), so every 64-byte load is
    /// aligned too.
    pages: Pages,
    format: Format,
    n: usize,
    k: usize,
}

impl std::fmt::Debug for Repacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repacked({:?}, {} × {})", self.format, self.n, self.k)
    }
}

impl Repacked {
    /// `data`'s `n` rows of `k` values of `format` repacked; `None` when `n` is not a
    /// multiple of [`ROWS`], `k` not of 256, or `data` too short.
    pub fn pack(format: Format, data: &[u8], n: usize, k: usize) -> Option<Self> {
        let supers = k / QK_K;
        let row_bytes = supers * format.stored_bytes();
        if n == 0 || !n.is_multiple_of(ROWS) || k == 0 || !k.is_multiple_of(QK_K) {
            return None;
        }
        if data.len() < n * row_bytes {
            return None;
        }
        let group_bytes = format.group_bytes(supers);
        // No memory to map: the matrix stays stored, which computes the same.
        let mut pages = Pages::zeroed(n / ROWS * group_bytes).ok()?;
        let addr = pages.bytes_mut().as_mut_ptr() as usize;
        super::pool::Pool::global().run(n / ROWS, |groups| {
            for g in groups {
                // SAFETY: each group writes only its own bytes of `pages`, which outlives
                // the call.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        (addr as *mut u8).add(g * group_bytes),
                        group_bytes,
                    )
                };
                let src = &data[g * ROWS * row_bytes..(g + 1) * ROWS * row_bytes];
                match format {
                    Format::Q4K => super::q4k16::pack_group(src, supers, dst),
                }
            }
        });
        Some(Self {
            pages,
            format,
            n,
            k,
        })
    }

    /// The stored type.
    pub fn format(&self) -> Format {
        self.format
    }

    /// `(out, in)`.
    pub fn dims2(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The bytes of group `g` (rows `16g..16g + 16`).
    pub(crate) fn group(&self, g: usize) -> &[u8] {
        let size = self.format.group_bytes(self.k / QK_K);
        &self.pages.bytes()[g * size..(g + 1) * size]
    }

    /// Rows `first..first + count` (inside one group) in GGUF's layout, into `out` (`count`
    /// rows of `k / 256` stored super-blocks): the tests' proof that packing loses nothing.
    #[cfg(test)]
    pub fn stored_rows(&self, first: usize, count: usize, out: &mut [u8]) {
        let supers = self.k / QK_K;
        let group = self.group(first / ROWS);
        let row_bytes = supers * self.format.stored_bytes();
        for (i, row) in out.chunks_exact_mut(row_bytes).take(count).enumerate() {
            let r = first % ROWS + i;
            match self.format {
                Format::Q4K => super::q4k16::stored_row(group, supers, r, row),
            }
        }
    }

    /// The matrix of `parts` stacked (their rows in order), when they share a type and `k`.
    pub fn stack(parts: &[&Repacked]) -> Option<Repacked> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.k != first.k || p.format != first.format)
        {
            return None;
        }
        let mut pages = Pages::zeroed(parts.iter().map(|p| p.pages.bytes().len()).sum()).ok()?;
        let mut at = 0;
        for p in parts {
            let part = p.pages.bytes();
            pages.bytes_mut()[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Some(Repacked {
            pages,
            format: first.format,
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
        })
    }

    /// `out[j·n + i]` = row `i` · `x_j` for the `x.len() / k` activation rows of `x`, by the
    /// kernel `form` (which the CPU must have), groups spread over the pool. Panics unless `x`
    /// holds whole rows of `k` and `out` one value per row and activation row (callers check
    /// both against the layer's shape).
    pub fn products(&self, x: &[f32], out: &mut [f32], form: Kernel) {
        let m = x.len() / self.k;
        assert!(x.len() == m * self.k && out.len() == m * self.n);
        let xqs: Vec<Q8K> = x.chunks_exact(self.k).map(super::kdots::quantize).collect();
        let out_addr = out.as_mut_ptr() as usize;
        let (n, supers) = (self.n, self.k / QK_K);
        super::pool::Pool::global().run(n / ROWS, |groups| {
            // A block of activation rows stays in the cache while the thread's groups pass.
            for first in (0..m).step_by(BLOCK_ROWS) {
                for g in groups.clone() {
                    let group = self.group(g);
                    for c in first / 4..(first + BLOCK_ROWS).min(m).div_ceil(4) {
                        let xs = &xqs[4 * c..(4 * c + 4).min(m)];
                        // SAFETY: each group writes only its own rows' entries of `out`
                        // (`ROWS` from `g · ROWS` in each activation row's `n`), which
                        // outlives the call and holds `m · n` values.
                        unsafe {
                            let at = (out_addr as *mut f32).add(4 * c * n + g * ROWS);
                            match self.format {
                                Format::Q4K => {
                                    super::q4k16::products(form, group, supers, xs, at, n)
                                }
                            }
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::gemv::{kernel, test_values};
    use crate::kernels::cpu::kdots;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn matrix(dtype: GgmlDType, n: usize, k: usize, seed: u32) -> Vec<u8> {
        let w = Tensor::from_vec(test_values(n * k, seed), (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, dtype)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    const FORMATS: [(Format, GgmlDType); 1] = [(Format::Q4K, GgmlDType::Q4K)];

    #[test]
    fn repacking_keeps_every_stored_byte() {
        for (format, dtype) in FORMATS {
            for k in [256, 768] {
                let n = 32;
                let data = matrix(dtype, n, k, 61);
                let packed = Repacked::pack(format, &data, n, k).unwrap();
                let row_bytes = k / QK_K * format.stored_bytes();
                let mut back = vec![0u8; 5 * row_bytes];
                packed.stored_rows(19, 5, &mut back);
                assert_eq!(
                    back,
                    data[19 * row_bytes..24 * row_bytes],
                    "{format:?} k {k}"
                );
                assert!(Repacked::pack(format, &data, 24, k).is_none());
                assert!(Repacked::pack(format, &data[..100], n, k).is_none());
            }
        }
    }

    #[test]
    fn every_form_gives_the_stored_rows_products_bit_for_bit() {
        let mut forms = vec![Kernel::Scalar];
        match kernel() {
            Kernel::Scalar => eprintln!("SIMD forms skipped: this CPU has no AVX2"),
            Kernel::Avx2 => {
                forms.push(Kernel::Avx2);
                eprintln!("AVX-512 form skipped: this CPU has no AVX-512 VNNI");
            }
            Kernel::Avx512Vnni => forms.extend([Kernel::Avx2, Kernel::Avx512Vnni]),
        }
        for (format, dtype) in FORMATS {
            // An odd number of super-blocks, and an even one.
            for (n, k) in [(48, 768), (16, 1024)] {
                let data = matrix(dtype, n, k, 62);
                let packed = Repacked::pack(format, &data, n, k).unwrap();
                let row_bytes = k / QK_K * format.stored_bytes();
                for m in [1, 2, 3, 4, 6, 9] {
                    let x = test_values(m * k, 63 + m as u32);
                    for &form in &forms {
                        let mut out = vec![0f32; m * n];
                        packed.products(&x, &mut out, form);
                        for j in 0..m {
                            let xq = kdots::quantize(&x[j * k..(j + 1) * k]);
                            for i in 0..n {
                                let row = &data[i * row_bytes..(i + 1) * row_bytes];
                                let want = match format {
                                    Format::Q4K => kdots::q4k_dot(row, &xq),
                                };
                                let got = out[j * n + i];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{format:?} {form:?} m {m} row {i}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn stacking_concatenates_the_rows() {
        for (format, dtype) in FORMATS {
            let k = 512;
            let (a, b) = (matrix(dtype, 16, k, 64), matrix(dtype, 32, k, 65));
            let pa = Repacked::pack(format, &a, 16, k).unwrap();
            let pb = Repacked::pack(format, &b, 32, k).unwrap();
            let both = Repacked::stack(&[&pa, &pb]).unwrap();
            assert_eq!(both.dims2(), (48, k));
            let row_bytes = 2 * format.stored_bytes();
            let mut back = vec![0u8; 48 * row_bytes];
            for g in 0..3 {
                both.stored_rows(16 * g, 16, &mut back[16 * g * row_bytes..]);
            }
            assert_eq!(back, [a, b].concat());
            let other = Repacked::pack(format, &matrix(dtype, 16, 256, 66), 16, 256).unwrap();
            assert!(Repacked::stack(&[&pa, &other]).is_none());
        }
    }
}
