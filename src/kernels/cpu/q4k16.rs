//! Q4_K weights repacked at load into groups of sixteen interleaved rows, and their products
//! with one to a few activation rows (decoding), in the numerics of [`super::kdots`] (bit
//! for bit).
//!
//! Read in GGUF's order, one row at a time, a Q4_K product spends as many instructions on
//! each super-block's bookkeeping (unpacking its twelve bytes of scales, spreading them to the
//! products, summing lanes across a register) as on the products themselves: on two cores it
//! decodes at about half the bandwidth the memory gives. Sixteen rows side by side remove
//! that work. Each i32 lane of a register belongs to one row, so one `vpdpbusd` multiplies
//! four values of each of the sixteen rows by the same four activations (broadcast), no sum
//! ever crosses lanes, and the scales, minimums, `d` and `dmin` of the sixteen rows are
//! already where their lanes need them. A group's super-block holds:
//!
//! | bytes | what |
//! |---|---|
//! | 0..32 | `d` of rows 0..16 (f16) |
//! | 32..64 | `dmin` of rows 0..16 (f16) |
//! | 64..192 | the scales, sub-block-major: byte `16j + r` is row `r`'s scale `j` |
//! | 192..320 | the minimums in pairs of sub-blocks: byte `32p + 2r + i` is row `r`'s minimum `2p + i` |
//! | 320..2368 | the values: sub-block `j`'s 64-byte chunk `c`, byte `4r + t`: row `r`'s element `32j + 8c + t` in its low nibble, `32j + 8c + 4 + t` in its high one |
//!
//! 2,368 bytes where the sixteen rows had 2,304: the scales and minimums are stored unpacked
//! (a byte each), which saves the kernel more instructions than the 3% of bytes costs.
//! Every row's integer sums are the exact integers of the portable form
//! ([`crate::kernels::cpu::kdots::q4k_dot`]) and its float chains take the same steps, so
//! a product from the repacked rows equals the product from the stored rows, bit for bit.

use half::f16;

use super::kdots::{q4k_scale_min, Q4K_BYTES, Q8K, QK_K};

/// Rows per group.
pub const ROWS: usize = 16;
/// Bytes of one group's super-block, and where its parts start (see the table above).
pub(crate) const SUPER: usize = 2368;
pub(crate) const D: usize = 0;
pub(crate) const DMIN: usize = 32;
pub(crate) const SCALES: usize = 64;
pub(crate) const MINS: usize = 192;
pub(crate) const QS: usize = 320;

/// A cache line; the repacked bytes are held in these, so that every 64-byte load is aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A Q4_K matrix of `n` rows (a multiple of [`ROWS`]) of `k` values, repacked.
pub struct Q4k16 {
    lines: Vec<Line>,
    n: usize,
    k: usize,
}

impl std::fmt::Debug for Q4k16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q4k16({} × {})", self.n, self.k)
    }
}

impl Q4k16 {
    /// `data`'s `n` Q4_K rows of `k` values repacked; `None` when `n` is not a multiple of
    /// [`ROWS`], `k` not of 256, or `data` too short.
    pub fn pack(data: &[u8], n: usize, k: usize) -> Option<Self> {
        let supers = k / QK_K;
        let row_bytes = supers * Q4K_BYTES;
        if n == 0 || !n.is_multiple_of(ROWS) || k == 0 || !k.is_multiple_of(QK_K) {
            return None;
        }
        if data.len() < n * row_bytes {
            return None;
        }
        let group_bytes = supers * SUPER;
        let mut lines = vec![Line([0; 64]); n / ROWS * group_bytes / 64];
        let addr = lines.as_mut_ptr() as usize;
        super::pool::Pool::global().run(n / ROWS, |groups| {
            for g in groups {
                // SAFETY: each group writes only its own bytes of `lines`, which outlives
                // the call.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        (addr as *mut u8).add(g * group_bytes),
                        group_bytes,
                    )
                };
                let src = &data[g * ROWS * row_bytes..(g + 1) * ROWS * row_bytes];
                pack_group(src, row_bytes, dst);
            }
        });
        Some(Self { lines, n, k })
    }

    /// `(out, in)`.
    pub fn dims2(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes.
        unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.lines.len() * 64)
        }
    }

    /// The bytes of group `g` (rows `16g..16g + 16`).
    pub(crate) fn group(&self, g: usize) -> &[u8] {
        let size = self.k / QK_K * SUPER;
        &self.bytes()[g * size..(g + 1) * size]
    }

    /// Rows `first..first + count` (inside one group) in GGUF's Q4_K layout, into `out`
    /// (`count` rows of `k / 256 · 144` bytes): what the prompt tiles unpack.
    pub fn stored_rows(&self, first: usize, count: usize, out: &mut [u8]) {
        let supers = self.k / QK_K;
        let group = self.group(first / ROWS);
        for (i, row) in out
            .chunks_exact_mut(supers * Q4K_BYTES)
            .take(count)
            .enumerate()
        {
            let r = first % ROWS + i;
            for (b, blk) in row.chunks_exact_mut(Q4K_BYTES).enumerate() {
                unpack_block(&group[b * SUPER..(b + 1) * SUPER], r, blk);
            }
        }
    }

    /// The matrix of `parts` stacked (their rows in order), when they share `k`.
    pub fn stack(parts: &[&Q4k16]) -> Option<Q4k16> {
        let k = parts.first()?.k;
        if parts.iter().any(|p| p.k != k) {
            return None;
        }
        let mut lines = Vec::with_capacity(parts.iter().map(|p| p.lines.len()).sum());
        for p in parts {
            lines.extend_from_slice(&p.lines);
        }
        let n = parts.iter().map(|p| p.n).sum();
        Some(Q4k16 { lines, n, k })
    }

    /// `out[j·n + i]` = row `i` · `x_j` for the `x.len() / k` activation rows of `x`, by the
    /// kernel `form` (which the CPU must have).
    pub fn products(&self, x: &[f32], out: &mut [f32], form: super::gemv::Kernel) {
        let m = x.len() / self.k;
        assert!(x.len() == m * self.k && out.len() == m * self.n);
        let xqs: Vec<Q8K> = x.chunks_exact(self.k).map(super::kdots::quantize).collect();
        let sums: Vec<Vec<[i16; 8]>> = xqs.iter().map(sub_block_sums).collect();
        let out_addr = out.as_mut_ptr() as usize;
        let (n, supers) = (self.n, self.k / QK_K);
        super::pool::Pool::global().run(n / ROWS, |groups| {
            for g in groups {
                let group = self.group(g);
                for (c, (xs, ss)) in xqs.chunks(4).zip(sums.chunks(4)).enumerate() {
                    let vals = group_products(form, group, supers, xs, ss);
                    for (j, v) in vals.iter().enumerate().take(xs.len()) {
                        for (r, &v) in v.iter().enumerate() {
                            // SAFETY: each group writes only its own rows' entries of `out`,
                            // which outlives the call and holds `m · n` values.
                            unsafe {
                                *(out_addr as *mut f32).add((4 * c + j) * n + g * ROWS + r) = v
                            };
                        }
                    }
                }
            }
        });
    }
}

/// The activations' sums per sub-block of 32, as i16, per super-block.
fn sub_block_sums(x: &Q8K) -> Vec<[i16; 8]> {
    x.bsums
        .chunks_exact(16)
        .map(|s| std::array::from_fn(|j| (s[2 * j] + s[2 * j + 1]) as i16))
        .collect()
}

/// Repacks sixteen stored rows (`src`, `row_bytes` each) into one group (`dst`).
fn pack_group(src: &[u8], row_bytes: usize, dst: &mut [u8]) {
    for (b, out) in dst.chunks_exact_mut(SUPER).enumerate() {
        for r in 0..ROWS {
            let blk = &src[r * row_bytes + b * Q4K_BYTES..r * row_bytes + (b + 1) * Q4K_BYTES];
            out[D + 2 * r..D + 2 * r + 2].copy_from_slice(&blk[0..2]);
            out[DMIN + 2 * r..DMIN + 2 * r + 2].copy_from_slice(&blk[2..4]);
            for j in 0..8 {
                let (s, m) = q4k_scale_min(&blk[4..16], j);
                out[SCALES + 16 * j + r] = s;
                out[MINS + 32 * (j / 2) + 2 * r + j % 2] = m;
            }
            let qs = &blk[16..];
            let value = |e: usize| {
                let byte = qs[32 * (e / 64) + e % 32];
                if (e / 32).is_multiple_of(2) {
                    byte & 15
                } else {
                    byte >> 4
                }
            };
            for j in 0..8 {
                for c in 0..4 {
                    for t in 0..4 {
                        let e = 32 * j + 8 * c + t;
                        out[QS + 256 * j + 64 * c + 4 * r + t] = value(e) | (value(e + 4) << 4);
                    }
                }
            }
        }
    }
}

/// Row `r` of a group's super-block (`blk`) in GGUF's 144-byte Q4_K block (`out`).
fn unpack_block(blk: &[u8], r: usize, out: &mut [u8]) {
    out[0..2].copy_from_slice(&blk[D + 2 * r..D + 2 * r + 2]);
    out[2..4].copy_from_slice(&blk[DMIN + 2 * r..DMIN + 2 * r + 2]);
    let s = |j: usize| blk[SCALES + 16 * j + r];
    let m = |j: usize| blk[MINS + 32 * (j / 2) + 2 * r + j % 2];
    // The inverse of `q4k_scale_min`: six bits of each scale and minimum in twelve bytes.
    let sc = &mut out[4..16];
    for j in 0..4 {
        sc[j] = s(j) | (s(j + 4) >> 4) << 6;
        sc[j + 4] = m(j) | (m(j + 4) >> 4) << 6;
        sc[j + 8] = (s(j + 4) & 15) | (m(j + 4) & 15) << 4;
    }
    let qs = &mut out[16..];
    for j in 0..8 {
        for c in 0..4 {
            for t in 0..4 {
                let byte = blk[QS + 256 * j + 64 * c + 4 * r + t];
                for (e, v) in [
                    (32 * j + 8 * c + t, byte & 15),
                    (32 * j + 8 * c + 4 + t, byte >> 4),
                ] {
                    let at = &mut qs[32 * (e / 64) + e % 32];
                    *at = if (e / 32).is_multiple_of(2) {
                        (*at & 0xF0) | v
                    } else {
                        (*at & 0x0F) | v << 4
                    };
                }
            }
        }
    }
}

/// One group's products with up to four activation rows (`xs`, with their sub-block sums
/// `ss`): `[activation][row]`, by `form`.
fn group_products(
    form: super::gemv::Kernel,
    group: &[u8],
    supers: usize,
    xs: &[Q8K],
    ss: &[Vec<[i16; 8]>],
) -> [[f32; ROWS]; 4] {
    #[cfg(target_arch = "x86_64")]
    if form == super::gemv::Kernel::Avx512Vnni {
        let mut out = [[0f32; ROWS]; 4];
        macro_rules! run {
            ($($j:literal),+) => {{
                // SAFETY: that kernel means the CPU has AVX-512 F/BW/VNNI, AVX2, FMA and
                // F16C; the group holds `supers` super-blocks and so does each activation.
                let v = unsafe { avx512::group(group.as_ptr(), supers, [$((&xs[$j], &ss[$j][..])),+]) };
                out[..v.len()].copy_from_slice(&v);
            }};
        }
        match xs.len() {
            1 => run!(0),
            2 => run!(0, 1),
            3 => run!(0, 1, 2),
            _ => run!(0, 1, 2, 3),
        }
        return out;
    }
    let _ = form;
    let mut out = [[0f32; ROWS]; 4];
    for (o, (x, s)) in out.iter_mut().zip(xs.iter().zip(ss)) {
        for (r, v) in o.iter_mut().enumerate() {
            *v = row_dot(group, r, supers, x, s);
        }
    }
    out
}

/// Row `r` of a group · `x` (with its sub-block sums `sums`), portable form: the steps of
/// [`super::kdots::q4k_dot`].
fn row_dot(group: &[u8], r: usize, supers: usize, x: &Q8K, sums: &[[i16; 8]]) -> f32 {
    let (mut acc, mut accm) = (0f32, 0f32);
    for b in 0..supers {
        let blk = &group[b * SUPER..(b + 1) * SUPER];
        let half = |at: usize| f16::from_le_bytes([blk[at + 2 * r], blk[at + 2 * r + 1]]).to_f32();
        let (d, dmin) = (half(D), half(DMIN));
        let xq = &x.qs[b * QK_K..(b + 1) * QK_K];
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..8 {
            let mut dot = 0i32;
            for c in 0..4 {
                for t in 0..4 {
                    let byte = blk[QS + 256 * j + 64 * c + 4 * r + t];
                    let e = 32 * j + 8 * c + t;
                    dot +=
                        (byte & 15) as i32 * xq[e] as i32 + (byte >> 4) as i32 * xq[e + 4] as i32;
                }
            }
            isum += blk[SCALES + 16 * j + r] as i32 * dot;
            imin += blk[MINS + 32 * (j / 2) + 2 * r + j % 2] as i32 * sums[b][j] as i32;
        }
        acc = (isum as f32).mul_add(d * x.d[b], acc);
        accm = (imin as f32).mul_add(dmin * x.d[b], accm);
    }
    acc - accm
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{D, DMIN, MINS, QS, ROWS, SCALES, SUPER};
    use crate::kernels::cpu::gemv::PREFETCH_BYTES;
    use crate::kernels::cpu::kdots::{Q8K, QK_K};

    /// The products of one group (at `g`, `supers` super-blocks) with each of `M` activation
    /// rows (with their sub-block sums): `[activation][row]`. Lane `r` of every register
    /// belongs to row `r`; each product is [`super::row_dot`]'s, bit for bit.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI, AVX2, FMA and F16C; `g` addresses `supers`
    /// super-blocks of a group; each activation row covers `supers` super-blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn group<const M: usize>(
        g: *const u8,
        supers: usize,
        xs: [(&Q8K, &[[i16; 8]]); M],
    ) -> [[f32; ROWS]; M] {
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); M];
        let mut accm = [_mm512_setzero_ps(); M];
        for b in 0..supers {
            let blk = g.add(b * SUPER);
            for line in 0..QS / 64 {
                _mm_prefetch::<_MM_HINT_T0>(
                    blk.wrapping_add(PREFETCH_BYTES + 64 * line) as *const i8
                );
            }
            let mut isum = [_mm512_setzero_si512(); M];
            for j in 0..8 {
                let s = _mm512_cvtepu8_epi32(_mm_load_si128(blk.add(SCALES + 16 * j) as *const _));
                let mut t = [_mm512_setzero_si512(); M];
                for c in 0..4 {
                    let at = blk.add(QS + 256 * j + 64 * c);
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH_BYTES) as *const i8);
                    let q = _mm512_load_si512(at as *const _);
                    let lo = _mm512_and_si512(q, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
                    for (t, (x, _)) in t.iter_mut().zip(&xs) {
                        let xp = x.qs.as_ptr().add(b * QK_K + 32 * j + 8 * c) as *const i32;
                        *t = _mm512_dpbusd_epi32(*t, lo, _mm512_set1_epi32(xp.read_unaligned()));
                        *t = _mm512_dpbusd_epi32(
                            *t,
                            hi,
                            _mm512_set1_epi32(xp.add(1).read_unaligned()),
                        );
                    }
                }
                for (i, t) in isum.iter_mut().zip(&t) {
                    *i = _mm512_add_epi32(*i, _mm512_mullo_epi32(*t, s));
                }
            }
            let mut imin = [_mm512_setzero_si512(); M];
            for p in 0..4 {
                let mins =
                    _mm512_cvtepu8_epi16(_mm256_load_si256(blk.add(MINS + 32 * p) as *const _));
                for (i, (_, sums)) in imin.iter_mut().zip(&xs) {
                    let pair = (sums[b].as_ptr().add(2 * p) as *const i32).read_unaligned();
                    *i = _mm512_dpwssd_epi32(*i, mins, _mm512_set1_epi32(pair));
                }
            }
            let d = _mm512_cvtph_ps(_mm256_load_si256(blk.add(D) as *const _));
            let dmin = _mm512_cvtph_ps(_mm256_load_si256(blk.add(DMIN) as *const _));
            for j in 0..M {
                let d8 = _mm512_set1_ps(xs[j].0.d[b]);
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(d, d8), acc[j]);
                accm[j] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(imin[j]),
                    _mm512_mul_ps(dmin, d8),
                    accm[j],
                );
            }
        }
        let mut out = [[0f32; ROWS]; M];
        for (o, (a, m)) in out.iter_mut().zip(acc.iter().zip(&accm)) {
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_sub_ps(*a, *m));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::gemv::{kernel, test_values, Kernel};
    use crate::kernels::cpu::kdots;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn matrix(n: usize, k: usize, seed: u32) -> Vec<u8> {
        let w = Tensor::from_vec(test_values(n * k, seed), (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, GgmlDType::Q4K)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn repacking_keeps_every_stored_byte() {
        let (n, k) = (32, 512);
        let data = matrix(n, k, 61);
        let packed = Q4k16::pack(&data, n, k).unwrap();
        let row_bytes = k / QK_K * Q4K_BYTES;
        let mut back = vec![0u8; 5 * row_bytes];
        packed.stored_rows(19, 5, &mut back);
        assert_eq!(back, data[19 * row_bytes..24 * row_bytes]);
        assert!(Q4k16::pack(&data, 24, k).is_none());
        assert!(Q4k16::pack(&data[..100], n, k).is_none());
    }

    #[test]
    fn every_form_gives_the_stored_rows_products_bit_for_bit() {
        let (n, k) = (48, 768);
        let data = matrix(n, k, 62);
        let packed = Q4k16::pack(&data, n, k).unwrap();
        let row_bytes = k / QK_K * Q4K_BYTES;
        let mut forms = vec![Kernel::Scalar];
        if kernel() == Kernel::Avx512Vnni {
            forms.push(Kernel::Avx512Vnni);
        } else {
            eprintln!("AVX-512 form skipped: this CPU has no AVX-512 VNNI");
        }
        for m in [1, 3, 6] {
            let x = test_values(m * k, 63 + m as u32);
            for &form in &forms {
                let mut out = vec![0f32; m * n];
                packed.products(&x, &mut out, form);
                for j in 0..m {
                    let xq = kdots::quantize(&x[j * k..(j + 1) * k]);
                    for i in 0..n {
                        let want = kdots::q4k_dot(&data[i * row_bytes..(i + 1) * row_bytes], &xq);
                        let got = out[j * n + i];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{form:?} m {m} row {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn stacking_concatenates_the_rows() {
        let k = 256;
        let (a, b) = (matrix(16, k, 64), matrix(32, k, 65));
        let (pa, pb) = (
            Q4k16::pack(&a, 16, k).unwrap(),
            Q4k16::pack(&b, 32, k).unwrap(),
        );
        let both = Q4k16::stack(&[&pa, &pb]).unwrap();
        assert_eq!(both.dims2(), (48, k));
        let mut back = vec![0u8; 48 * Q4K_BYTES];
        for g in 0..3 {
            both.stored_rows(16 * g, 16, &mut back[16 * g * Q4K_BYTES..]);
        }
        assert_eq!(back, [a, b].concat());
        let other = Q4k16::pack(&matrix(16, 512, 66), 16, 512).unwrap();
        assert!(Q4k16::stack(&[&pa, &other]).is_none());
    }
}
