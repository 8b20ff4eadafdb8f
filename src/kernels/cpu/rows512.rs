//! Products of two weight rows of a block-of-32 format (Q4_1, Q5_0, Q8_0) with up to four
//! activation rows at once, with AVX-512 VNNI: one row per half of each vector, each block's
//! weights unpacked once for every activation row (several sequences decoding together), and
//! each product in the AVX2 kernel's order (one chain of eight lanes per row, `d·d_x × lane
//! sums` fused into it, a minimum's `m · s_x` in a second chain), so every product is the
//! single-row one bit for bit.

use std::arch::x86_64::*;

use super::gemv::{halves_ps, hsum, prefetch_next_pair, Q8, QK};

/// Activation rows one pass shares its unpacked weights among.
pub(crate) const MAX_ACTS: usize = 4;
const _: () = assert!(MAX_ACTS <= 4, "the minimums' chains fill eight lanes");

/// What a [`Group`] gathers besides its rows, for the kernel that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Nothing: the kernel reads the rows themselves (one activation row at a time).
    Rows,
    /// This module's: the first [`MAX_ACTS`] rows' scaled sums in the minimum chains' lane
    /// order (`s8`).
    Lanes,
    /// [`super::rows256`]'s: each block's first eight rows side by side (`q8`, `d8`,
    /// `sums8`).
    SideBySide,
}

/// Activation rows as these kernels read them, with what the kernel's [`Layout`] gathers
/// from them once per product rather than once per pair of weight rows (the other layouts'
/// fields are left empty; each kernel checks the lengths it reads).
pub(crate) struct Group<'a> {
    /// The activation rows.
    pub(crate) xs: &'a [Q8],
    /// Per block, the rows' scaled sums `s` in the minimum chains' lane order
    /// (`[s₀, s₀, s₁, s₁, …]`, 0 past the last row).
    s8: Vec<[f32; 8]>,
    /// Per block, the rows' 32 values side by side (block `b` of row `j` at `b · rows + j`,
    /// for `rows` ≤ 8 of them): a pass over a block reads one run of memory, every row from
    /// one pointer, and no more bytes than the rows have (with eight places a block, a
    /// group of four rows, Q4_1's, read twice its bytes).
    pub(crate) q8: Vec<[i8; QK]>,
    /// Per block, each row's scale `d` in all eight lanes, as `q8`, so a block's `d·d_x`
    /// for a row is one vector product with a load.
    pub(crate) d8: Vec<[f32; 8]>,
    /// Per block, the first eight rows' scaled sums `s` side by side (0 past the last row).
    pub(crate) sums8: Vec<[f32; 8]>,
}

impl<'a> Group<'a> {
    /// The group of `xs`, with what `layout` gathers.
    pub(crate) fn new(xs: &'a [Q8], layout: Layout) -> Self {
        let blocks = xs
            .iter()
            .map(|x| x.s.len().min(x.d.len()))
            .min()
            .unwrap_or(0);
        let mut g = Self {
            xs,
            s8: Vec::new(),
            q8: Vec::new(),
            d8: Vec::new(),
            sums8: Vec::new(),
        };
        match layout {
            Layout::Rows => {}
            Layout::Lanes => {
                g.s8 = (0..blocks)
                    .map(|b| {
                        let s = |j: usize| xs.get(j).map_or(0.0, |x| x.s[b]);
                        [s(0), s(0), s(1), s(1), s(2), s(2), s(3), s(3)]
                    })
                    .collect();
            }
            Layout::SideBySide => {
                let rows = xs.len().min(8);
                g.q8 = (0..blocks)
                    .flat_map(|b| {
                        xs[..rows].iter().map(move |x| {
                            let mut q = [0i8; QK];
                            q.copy_from_slice(&x.qs[b * QK..(b + 1) * QK]);
                            q
                        })
                    })
                    .collect();
                g.d8 = (0..blocks)
                    .flat_map(|b| xs[..rows].iter().map(move |x| [x.d[b]; 8]))
                    .collect();
                g.sums8 = (0..blocks)
                    .map(|b| std::array::from_fn(|j| xs.get(j).map_or(0.0, |x| x.s[b])))
                    .collect();
            }
        }
        g
    }
}

/// Two weight rows against a group of `xs.len() ≤` [`MAX_ACTS`] activation rows: `out[j]` is
/// the pair's products with `xs[j]`.
pub(crate) type Rows = unsafe fn(&[u8], &[u8], &Group, &mut [(f32, f32)]);

/// A block format as these kernels read it.
pub(crate) trait Format {
    /// Bytes per block of 32 weights; the f16 scale is the first two.
    const BYTES: usize;
    /// The block's f16 minimum follows its scale (Q4_1): `m · s_x` joins the product.
    const MIN: bool;
    /// A block of both rows, prepared for every activation row.
    type Weights: Copy;

    /// Prepares block `a` of the first row and `b` of the second (pointers to the blocks).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; each pointer addresses a whole block.
    unsafe fn unpack(a: *const u8, b: *const u8) -> Self::Weights;

    /// The lane sums of block `b` of both rows with `x`: eight i32 lanes per row (four
    /// products each, as ggml sums them), the first row in the low half.
    ///
    /// # Safety
    /// As [`Format::unpack`]; `x` holds block `b`.
    unsafe fn sums(w: Self::Weights, x: &Q8, b: usize) -> __m512i;
}

/// The products of rows `ra` and `rb` with each of `M` activation rows (`s8`: their
/// [`Group`]'s minimum sums).
#[inline(always)]
unsafe fn pair<F: Format, const M: usize>(
    ra: &[u8],
    rb: &[u8],
    xs: [&Q8; M],
    s8: &[[f32; 8]],
) -> [(f32, f32); M] {
    let blocks = ra.len().min(rb.len()) / F::BYTES;
    assert!(xs
        .iter()
        .all(|x| x.qs.len() >= blocks * QK && x.d.len() >= blocks));
    assert!(!F::MIN || s8.len() >= blocks);
    // From a block pair's headers `[d_a, m_a, d_b, m_b]`: `d_a` in the low eight lanes and
    // `d_b` in the high ones; `m_a`, `m_b` alternating, lane 2j and 2j + 1 being row a's and
    // row b's minimum chain with activation row j.
    let d_lanes = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    let m_lanes = _mm256_setr_epi32(1, 3, 1, 3, 1, 3, 1, 3);
    let mut acc = [_mm512_setzero_ps(); M];
    let mut mins = _mm256_setzero_ps();
    for b in 0..blocks {
        let (pa, pb) = (ra.as_ptr().add(b * F::BYTES), rb.as_ptr().add(b * F::BYTES));
        prefetch_next_pair(ra, b, F::BYTES);
        let w = F::unpack(pa, pb);
        // Both blocks' first four bytes as f16 pairs, converted at once: the scale, then the
        // minimum (a format without one has weights there, which are never read).
        let head = (pa as *const u32).read_unaligned() as u64
            | ((pb as *const u32).read_unaligned() as u64) << 32;
        let dm = _mm_cvtph_ps(_mm_cvtsi64_si128(head as i64));
        let d = _mm512_permutexvar_ps(d_lanes, _mm512_castps128_ps512(dm));
        for j in 0..M {
            let lanes = _mm512_cvtepi32_ps(F::sums(w, xs[j], b));
            // Each lane's scale is the row's `d` times the activations' (one rounding, as
            // the AVX2 kernel's `d * d_x`).
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(xs[j].d[b]));
            acc[j] = _mm512_fmadd_ps(scale, lanes, acc[j]);
        }
        if F::MIN {
            // Every chain's `m · s_x` fused in one step, each lane the scalar step.
            let m = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(dm), m_lanes);
            let s = _mm256_loadu_ps(s8.as_ptr().add(b) as *const f32);
            mins = _mm256_fmadd_ps(m, s, mins);
        }
    }
    let mut min = [0f32; 8];
    _mm256_storeu_ps(min.as_mut_ptr(), mins);
    std::array::from_fn(|j| {
        let (lo, hi) = halves_ps(acc[j]);
        (hsum(lo) + min[2 * j], hsum(hi) + min[2 * j + 1])
    })
}

/// [`Rows`] for the format `F`.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI, AVX2, FMA and F16C; `ra` and `rb` hold whole blocks,
/// each `xs[j]` as many; `out` holds `xs.len() ≤ MAX_ACTS` entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn rows<F: Format>(ra: &[u8], rb: &[u8], g: &Group, out: &mut [(f32, f32)]) {
    assert!(out.len() == g.xs.len());
    let s8 = &g.s8;
    match g.xs {
        [a] => out.copy_from_slice(&pair::<F, 1>(ra, rb, [a], s8)),
        [a, b] => out.copy_from_slice(&pair::<F, 2>(ra, rb, [a, b], s8)),
        [a, b, c] => out.copy_from_slice(&pair::<F, 3>(ra, rb, [a, b, c], s8)),
        [a, b, c, d] => out.copy_from_slice(&pair::<F, 4>(ra, rb, [a, b, c, d], s8)),
        _ => panic!("{} activation rows at once; at most {MAX_ACTS}", g.xs.len()),
    }
}

/// Two rows of weights in one 512-bit register, block `b` of each: 32 bytes of `a`, then 32
/// of `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn join_rows(a: *const u8, b: *const u8) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(a as *const __m256i)),
        _mm256_loadu_si256(b as *const __m256i),
    )
}

/// The 32 activation bytes of block `b`, in both halves of a register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn both_halves(x: &Q8, b: usize) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(
        x.qs.as_ptr().add(b * QK) as *const __m256i
    ))
}

#[cfg(test)]
mod tests {
    use crate::kernels::cpu::gemv::{kernel, test_values, Kernel};
    use crate::kernels::cpu::{q4_1, q5_0, q8_0};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    type Gemv = fn(&[u8], usize, usize, &[f32], &mut [f32], Kernel);

    /// Every multi-row form against its tier's one-row kernel: this module's and
    /// [`super::super::rows256`]'s against AVX2's, the portable one against the portable one
    /// row (the tiers follow ggml's AVX2 and scalar sums, which differ in the last bits).
    #[test]
    fn each_activation_row_gets_the_one_row_product_bit_for_bit() {
        use Kernel::{Avx2, Avx512Vnni, Scalar};
        let forms: &[(Kernel, Kernel)] = match kernel() {
            Avx512Vnni => &[(Avx512Vnni, Avx2), (Avx2, Avx2), (Scalar, Scalar)],
            Avx2 => &[(Avx2, Avx2), (Scalar, Scalar)],
            Scalar => &[(Scalar, Scalar)],
        };
        // An odd number of weight rows (the last pair repeats its row); up to ten activation
        // rows (whole groups of four or eight, then a smaller one); rows of 8 blocks, of 20
        // (Gemma 3's 640) and of 70 (past `rows256`'s chunk of scales, ending in a part of
        // eight).
        let n = 7;
        let types: [(GgmlDType, Gemv); 3] = [
            (GgmlDType::Q4_1, q4_1::gemv),
            (GgmlDType::Q5_0, q5_0::gemv),
            (GgmlDType::Q8_0, q8_0::gemv),
        ];
        for ((dtype, gemv), k) in types
            .into_iter()
            .flat_map(|t| [256, 640, 2240].map(|k| (t, k)))
        {
            let w = Tensor::from_vec(test_values(n * k, 31), (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let data = q.data().unwrap();
            for (m, &(form, one)) in (1..=10).flat_map(|m| forms.iter().map(move |f| (m, f))) {
                let x = test_values(m * k, 40 + m as u32);
                let mut got = vec![0f32; m * n];
                gemv(&data, n, k, &x, &mut got, form);
                for j in 0..m {
                    let mut want = vec![0f32; n];
                    gemv(&data, n, k, &x[j * k..(j + 1) * k], &mut want, one);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got[j * n..(j + 1) * n]),
                        bits(&want),
                        "{dtype:?}, k {k}, {form:?}, activation row {j} of {m}"
                    );
                }
            }
        }
    }
}
