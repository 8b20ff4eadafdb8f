//! Shared machinery of our CPU matrix-vector kernels for quantized weights (`q4_1`, `q5_0`,
//! `q8_0`): activations quantized to 8 bits per block of 32 (ggml's Q8_0/Q8_1), run-time
//! kernel selection (AVX-512 VNNI, AVX2 or portable scalar; `MLCLI_CPU_KERNELS=scalar` or
//! [`force_kernel`] forces the fallback, for testing), software prefetch of the weights, and
//! rows split over our CPU pool ([`super::pool`]).

/// Elements per block, for the weights and the quantized activations alike.
pub(crate) const QK: usize = 32;

/// Activations quantized per block of 32: values, scales, and per-block sums of the values
/// (as integers and scaled).
pub(crate) struct Q8 {
    pub(crate) qs: Vec<i8>,
    pub(crate) d: Vec<f32>,
    pub(crate) sum: Vec<i32>,
    pub(crate) s: Vec<f32>,
    /// Sums of each four consecutive values (the lanes of ggml's integer dot products), for
    /// taking a weight offset out lane by lane.
    pub(crate) sum4: Vec<i32>,
}

impl Q8 {
    fn with_sum4(mut self) -> Self {
        self.sum4 = self
            .qs
            .chunks_exact(4)
            .map(|c| c.iter().map(|&v| v as i32).sum())
            .collect();
        self
    }
}

/// Quantizes `x` (a multiple of 32 long) exactly as ggml's Q8_0/Q8_1 do on x86 (its AVX
/// code, which is what llama.cpp runs here): values times `127 / amax`, rounded to nearest
/// even, the scale `amax / 127` (and the scaled sum) then stored as f16, so our single-row
/// products see the activations candle's and llama.cpp's batched ones see.
pub(crate) fn quantize(x: &[f32]) -> Q8 {
    let nb = x.len() / QK;
    let mut q = Q8 {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(nb),
        sum: Vec::with_capacity(nb),
        s: Vec::with_capacity(nb),
        sum4: Vec::new(),
    };
    #[cfg(target_arch = "x86_64")]
    let simd = kernel() != Kernel::Scalar;
    for (b, block) in x.chunks_exact(QK).enumerate() {
        let out = &mut q.qs[b * QK..(b + 1) * QK];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a non-scalar kernel means the CPU has AVX2 (`kernel()`).
        let (d, sum) = if simd {
            unsafe { quantize_block_avx2(block, out) }
        } else {
            quantize_block(block, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (d, sum) = quantize_block(block, out);
        q.d.push(half::f16::from_f32(d).to_f32());
        q.sum.push(sum);
        q.s.push(half::f16::from_f32(d * sum as f32).to_f32());
    }
    q.with_sum4()
}

/// Quantizes `x` (a multiple of 256 long) as ggml's Q8_K, the activations of its k-quant
/// products: per super-block of 256, `iscale = -127 / max` (`max` the value of largest
/// magnitude, sign kept), values `iscale · x` rounded to nearest even and capped at 127, and
/// the scale `1 / iscale` kept in f32. Returned per block of 32 (each block of a super-block
/// with the same scale; `s` is the scale times the block's sum, unrounded), so the batched
/// tiles read them as they read Q8_1.
pub(crate) fn quantize_k(x: &[f32]) -> Q8 {
    #[cfg(target_arch = "x86_64")]
    if kernel() != Kernel::Scalar {
        // SAFETY: a non-scalar kernel means the CPU has AVX2 and FMA (`kernel()`).
        return unsafe { quantize_k_avx2(x) };
    }
    quantize_k_body(x)
}

/// [`quantize_k`] in AVX2, with the same results for finite inputs: the same maximum, the same
/// first value that has it, the same products `iscale · x` rounded to nearest even (the
/// conversion instruction rounds as `nearest_int` does below 2²²), the same cap and sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_k_avx2(x: &[f32]) -> Q8 {
    use std::arch::x86_64::*;
    const QK_K: usize = 256;
    // Whole super-blocks only, as the portable form.
    let nb = x.len() / QK_K * (QK_K / QK);
    // Written by index (pushes kept every length and pointer in memory, one block at a time).
    let mut q = Q8 {
        qs: vec![0; x.len()],
        d: vec![0.0; nb],
        sum: vec![0; nb],
        s: vec![0.0; nb],
        sum4: Vec::new(),
    };
    let sign = _mm256_set1_ps(-0.0);
    let abs = |v: __m256| _mm256_andnot_ps(sign, v);
    for (sb, block) in x.chunks_exact(QK_K).enumerate() {
        let p = block.as_ptr();
        // `max_ps(v, m)` gives `m` where `v` is NaN, as `f32::max` ignores NaN.
        let mut m = _mm256_setzero_ps();
        for i in 0..QK_K / 8 {
            m = _mm256_max_ps(abs(_mm256_loadu_ps(p.add(8 * i))), m);
        }
        let amax = lanes_max(m);
        // The first value whose magnitude is the maximum (ggml keeps the first).
        let target = _mm256_set1_ps(amax);
        let mut max = 0.0;
        for i in 0..QK_K / 8 {
            let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(abs(_mm256_loadu_ps(p.add(8 * i))), target);
            let mask = _mm256_movemask_ps(eq);
            if mask != 0 {
                max = block[8 * i + mask.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = if amax > 0.0 { -127.0 / max } else { 0.0 };
        let d = if amax > 0.0 { 1.0 / iscale } else { 0.0 };
        let scale = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        let out = q.qs.as_mut_ptr().add(sb * QK_K);
        for j in 0..QK_K / QK {
            let r: [__m256i; 4] = std::array::from_fn(|i| {
                let v = _mm256_loadu_ps(p.add(QK * j + 8 * i));
                _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(scale, v)), cap)
            });
            let sum = store_block(r, out.add(QK * j));
            let at = sb * (QK_K / QK) + j;
            q.d[at] = d;
            q.sum[at] = sum;
            q.s[at] = d * sum as f32;
        }
    }
    q
}

/// [`quantize_k`]'s portable form.
fn quantize_k_body(x: &[f32]) -> Q8 {
    const QK_K: usize = 256;
    let nb = x.len() / QK;
    let mut q = Q8 {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(nb),
        sum: Vec::with_capacity(nb),
        s: Vec::with_capacity(nb),
        sum4: Vec::new(),
    };
    for (sb, block) in x.chunks_exact(QK_K).enumerate() {
        // The largest magnitude, then the first value that has it (ggml keeps the first).
        let amax = amax(block);
        let max = block
            .iter()
            .copied()
            .find(|v| v.abs() == amax)
            .unwrap_or(0.0);
        let iscale = if amax > 0.0 { -127.0 / max } else { 0.0 };
        let d = if amax > 0.0 { 1.0 / iscale } else { 0.0 };
        let out = &mut q.qs[sb * QK_K..(sb + 1) * QK_K];
        for (o, v) in out.iter_mut().zip(block) {
            *o = nearest_int(iscale * v).min(127) as i8;
        }
        for b in out.chunks_exact(QK) {
            let sum: i32 = b.iter().map(|&v| v as i32).sum();
            q.d.push(d);
            q.sum.push(sum);
            q.s.push(d * sum as f32);
        }
    }
    q
}

/// The largest magnitude in `v`, over eight running maxima so that it compiles to vector
/// instructions (a maximum is exact in any order; one running maximum is a chain of
/// dependent instructions, one value at a time).
#[inline]
fn amax(v: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let lanes = v.chunks_exact(8);
    let tail = lanes.remainder();
    for c in lanes {
        for (m, x) in m.iter_mut().zip(c) {
            *m = m.max(x.abs());
        }
    }
    tail.iter().chain(&m).fold(0f32, |a, x| a.max(x.abs()))
}

/// ggml's `nearest_int`: adding `1.5 · 2^23` rounds to the nearest integer (ties to even)
/// in the low mantissa bits; without a call to `rintf` per value, and vectorizable.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let t = (v + 12_582_912.0).to_bits() as i32;
    (t & 0x007f_ffff) - 0x0040_0000
}

/// One block of 32: the values into `out`, and the scale and sum.
fn quantize_block(block: &[f32], out: &mut [i8]) -> (f32, i32) {
    let amax = amax(block);
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (o, v) in out.iter_mut().zip(block) {
        *o = (v * id).round_ties_even() as i8;
        sum += *o as i32;
    }
    (amax / 127.0, sum)
}

/// [`quantize_block`] in AVX2, with the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_avx2(block: &[f32], out: &mut [i8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    assert!(block.len() == QK && out.len() == QK);
    let p = block.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for x in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *x));
    }
    let amax = lanes_max(m);
    let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
    let r = v.map(|x| {
        _mm256_cvtps_epi32(_mm256_round_ps(
            _mm256_mul_ps(x, id),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        ))
    });
    (amax / 127.0, store_block(r, out.as_mut_ptr()))
}

/// The largest of `m`'s eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_max(m: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps::<1>(m4, m4)))
}

/// A block's 32 values as i32 (`r`, each within i8) stored as i8 at `out`, in order; their
/// sum.
///
/// # Safety
/// The CPU has AVX2; `out` is valid for 32 bytes of writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_block(r: [std::arch::x86_64::__m256i; 4], out: *mut i8) -> i32 {
    use std::arch::x86_64::*;
    // i32 -> i16 -> i8 packs interleave 128-bit lanes; the permute restores element order.
    let lo = _mm256_packs_epi32(r[0], r[1]);
    let hi = _mm256_packs_epi32(r[2], r[3]);
    let bytes = _mm256_packs_epi16(lo, hi);
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out as *mut __m256i, bytes);
    let s = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
    let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b10_11_00_01>(s4));
    _mm_cvtsi128_si32(s4)
}

/// Which kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable code.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 kernels, plus AVX-512 VNNI where a type has one (Q8_0).
    Avx512Vnni,
}

/// The kernel that runs: the best for this CPU, decided once per process
/// (`MLCLI_CPU_KERNELS=scalar` forces the portable fallback, `MLCLI_CPU_KERNELS=avx2` the
/// AVX2 kernels on AVX-512 machines), unless [`force_kernel`] says otherwise.
pub fn kernel() -> Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    let best = *KERNEL.get_or_init(detect);
    match FORCED.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Kernel::Scalar,
        2 if best != Kernel::Scalar => Kernel::Avx2,
        _ => best,
    }
}

/// 0: no override; 1: scalar; 2: AVX2 (see [`force_kernel`]).
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Makes every later product in this process use `kernel` (a slower one than the CPU allows:
/// `Scalar`, or `Avx2` on an AVX-512 machine), or the best again with `None`. For tests that
/// compare the portable kernels with the fast ones in one process.
pub fn force_kernel(kernel: Option<Kernel>) {
    let v = match kernel {
        None | Some(Kernel::Avx512Vnni) => 0,
        Some(Kernel::Scalar) => 1,
        Some(Kernel::Avx2) => 2,
    };
    FORCED.store(v, std::sync::atomic::Ordering::Relaxed);
}

fn detect() -> Kernel {
    let forced = std::env::var("MLCLI_CPU_KERNELS").ok();
    if forced.as_deref() == Some("scalar") {
        return Kernel::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        if vnni && forced.as_deref() != Some("avx2") {
            return Kernel::Avx512Vnni;
        }
        return Kernel::Avx2;
    }
    Kernel::Scalar
}

/// Two rows · activations at once (each in its own half of the vectors, in ggml's order).
#[cfg(target_arch = "x86_64")]
pub(crate) type DotPair = unsafe fn(&[u8], &[u8], &Q8) -> (f32, f32);

/// The dot products of one weight type, by kernel.
pub(crate) struct Dots {
    /// Bytes per block of 32 weights.
    pub(crate) block_bytes: usize,
    /// Portable code: one weight row's products with every activation row
    /// ([`portable_dots`] over the type's unpacking).
    pub(crate) portable: fn(&[u8], &[Q8], &mut [f32]),
    /// Needs avx2, fma and f16c: rows in pairs, two independent chains.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx2: DotPair,
    /// Needs avx2, fma and f16c: two rows with up to four activation rows, each block
    /// unpacked once for all of them ([`super::rows256`]); the same bits as `avx2`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx2_rows: super::rows512::Rows,
    /// How many activation rows `avx2_rows` takes at once (at most
    /// [`super::rows256::MAX_ACTS`]): fewer for a type with a minimum, whose scalar chains
    /// take registers too.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx2_group: usize,
    /// Needs avx512f, avx512bw and avx512vnni (else the AVX2 one runs): rows in pairs, each
    /// pair's blocks unpacked once for up to four activation rows.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512: Option<super::rows512::Rows>,
    /// The fewest activation rows for which the AVX-512 form runs rather than the AVX2 one
    /// (they give the same bits): with one row, Q4_1's AVX2 pairs are faster.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512_from: usize,
}

/// `out[b·n + i] = W[i] · x_b` for `weights` holding `n` rows of `k` values (`k` a multiple of
/// 32) in the block format of `dots`, and `x` holding `m ≥ 1` rows of activations (several
/// sequences decoding together): each pair of weight rows is read once, from memory, for all
/// of them. Each product is the single-row one, bit for bit.
pub(crate) fn gemv(
    dots: &Dots,
    weights: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
    kernel: Kernel,
) {
    let row_bytes = k / QK * dots.block_bytes;
    let m = x.len() / k.max(1);
    assert!(
        k.is_multiple_of(QK)
            && m >= 1
            && x.len() == m * k
            && out.len() == m * n
            && weights.len() >= n * row_bytes
    );
    let xqs: Vec<Q8> = x.chunks_exact(k).map(quantize).collect();
    let row = |i: usize| &weights[i * row_bytes..(i + 1) * row_bytes];
    #[cfg(target_arch = "x86_64")]
    use super::rows512::{Layout::*, MAX_ACTS};
    #[cfg(target_arch = "x86_64")]
    let pairs = match kernel {
        Kernel::Scalar => None,
        Kernel::Avx2 if m > 1 => Some(Pairs::Rows(dots.avx2_rows, dots.avx2_group, SideBySide)),
        Kernel::Avx2 => Some(Pairs::Avx2(dots.avx2)),
        Kernel::Avx512Vnni => Some(match dots.avx512 {
            Some(rows) if m >= dots.avx512_from => Pairs::Rows(rows, MAX_ACTS, Lanes),
            _ if m > 1 => Pairs::Rows(dots.avx2_rows, dots.avx2_group, SideBySide),
            _ => Pairs::Avx2(dots.avx2),
        }),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    #[cfg(not(target_arch = "x86_64"))]
    let pairs = None::<std::convert::Infallible>;
    let Some(pairs) = pairs else {
        let portable = dots.portable;
        return par_rows_all(n, out, |i, vals| portable(row(i), &xqs, vals));
    };
    #[cfg(target_arch = "x86_64")]
    {
        // Activation rows a pass shares each block's unpacked weights among.
        let (per_group, layout) = match pairs {
            Pairs::Avx2(_) => (super::rows512::MAX_ACTS, super::rows512::Layout::Rows),
            Pairs::Rows(_, per_group, layout) => (per_group, layout),
        };
        let out_addr = out.as_mut_ptr() as usize;
        let groups: Vec<super::rows512::Group> = xqs
            .chunks(per_group)
            .map(|xs| super::rows512::Group::new(xs, layout))
            .collect();
        // Pairs split over the pool once; each thread takes its pairs about 16 KiB of
        // weights at a time against every group, so the tile's rows stay in L1 while the
        // groups pass (the other way round, one pair against a prompt chunk's groups,
        // streamed the activations from L2 for every pair).
        let tile_pairs = (16 * 1024 / (2 * row_bytes).max(1)).max(1);
        super::pool::Pool::global().run(n.div_ceil(2), |ps| {
            let mut vals = [(0f32, 0f32); super::rows256::MAX_ACTS];
            for first in ps.clone().step_by(tile_pairs) {
                let tile = first..(first + tile_pairs).min(ps.end);
                for (g, group) in groups.iter().enumerate() {
                    for p in tile.clone() {
                        let (a, b) = (2 * p, (2 * p + 1).min(n - 1));
                        let vals = &mut vals[..group.xs.len()];
                        // SAFETY: SIMD kernels are selected only when the CPU reports their
                        // features (`kernel()`); the rows and activations hold `k / 32`
                        // blocks.
                        unsafe { pairs.run(row(a), row(b), group, vals) };
                        for (j, &(va, vb)) in vals.iter().enumerate() {
                            let j = g * per_group + j;
                            // SAFETY: each pair index is handed to one thread, which writes
                            // only its two rows of `out` (one, for a last odd row) for each
                            // activation row, and `out` outlives the call.
                            unsafe {
                                *(out_addr as *mut f32).add(j * n + a) = va;
                                *(out_addr as *mut f32).add(j * n + b) = vb;
                            }
                        }
                    }
                }
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    match pairs {}
}

/// The SIMD form of a type's products of two weight rows.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Pairs {
    /// One activation row at a time.
    Avx2(DotPair),
    /// Up to the second field's activation rows at once ([`super::rows512::MAX_ACTS`] for
    /// AVX-512, the type's `avx2_group` for AVX2), the groups gathered as the third says.
    Rows(super::rows512::Rows, usize, super::rows512::Layout),
}

#[cfg(target_arch = "x86_64")]
impl Pairs {
    /// `out[j]`: rows `ra`, `rb` times `g.xs[j]`, for `g.xs.len()` at most the form's group.
    ///
    /// # Safety
    /// The CPU has the form's features; the rows and each `xs[j]` hold the same number of
    /// whole blocks.
    unsafe fn run(self, ra: &[u8], rb: &[u8], g: &super::rows512::Group, out: &mut [(f32, f32)]) {
        match self {
            Self::Avx2(pair) => {
                for (o, x) in out.iter_mut().zip(g.xs) {
                    *o = pair(ra, rb, x);
                }
            }
            Self::Rows(rows, ..) => rows(ra, rb, g, out),
        }
    }
}

/// Two rows' products in ggml's order, interleaved so the chains overlap: `block(bytes, b)`
/// gives block `b`'s `(scale, eight lane sums, minimum)`; per row the scales × lane sums are
/// fused into one eight-lane chain, `minimum · s_x` (types with one, `MIN`) into a second,
/// and the lanes summed as `hsum_float_8`.
///
/// # Safety
/// Only for functions compiled with avx2 and fma, on CPUs that have them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn pair_chains<const MIN: bool>(
    ra: &[u8],
    rb: &[u8],
    x: &Q8,
    block_bytes: usize,
    block: impl Fn(&[u8], usize) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256, f32),
) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (mut acc_a, mut acc_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut min_a, mut min_b) = (0f32, 0f32);
    let blocks = ra
        .chunks_exact(block_bytes)
        .zip(rb.chunks_exact(block_bytes));
    for (b, (ba, bb)) in blocks.enumerate() {
        prefetch_next_pair(ra, b, block_bytes);
        let (sa, pa, ma) = block(ba, b);
        let (sb, pb, mb) = block(bb, b);
        if MIN {
            min_a = ma.mul_add(x.s[b], min_a);
            min_b = mb.mul_add(x.s[b], min_b);
        }
        acc_a = _mm256_fmadd_ps(sa, pa, acc_a);
        acc_b = _mm256_fmadd_ps(sb, pb, acc_b);
    }
    if MIN {
        (hsum(acc_a) + min_a, hsum(acc_b) + min_b)
    } else {
        (hsum(acc_a), hsum(acc_b))
    }
}

/// The f16 at `p` as f32 in all eight lanes. Converting the one value alone compiled to a
/// 16-bit insert into a register the compiler took to be free, a partial write that waits
/// for that register's last writer: in the pair kernels, the other row's accumulator, so
/// every block waited on the block before (Zen 1, Q8_0 rows: ~12 cycles a block, in cache
/// as from memory). A broadcast writes the whole register.
///
/// # Safety
/// The CPU has AVX2 and F16C; `p` addresses two readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_splat(p: *const u8) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_cvtph_ps(_mm_set1_epi16((p as *const i16).read_unaligned()))
}

/// `out[b·n + i] = row_dot(i, b)` for every weight row `i < n` and activation row `b` (`out`
/// holds `m × n`), weight rows split over [`super::pool::Pool`], each row's products for all
/// activation rows done together (the row is read once).
pub(crate) fn par_rows(n: usize, out: &mut [f32], row_dot: impl Fn(usize, usize) -> f32 + Sync) {
    par_rows_all(n, out, |i, vals| {
        for (b, v) in vals.iter_mut().enumerate() {
            *v = row_dot(i, b);
        }
    });
}

/// `out[b·n + i] = vals[b]` where `row_dots(i, vals)` gives weight row `i`'s products with
/// every activation row (`out` holds `m × n`), the weight rows split over the pool.
pub(crate) fn par_rows_all(n: usize, out: &mut [f32], row_dots: impl Fn(usize, &mut [f32]) + Sync) {
    let m = out.len() / n.max(1);
    let out_addr = out.as_mut_ptr() as usize;
    super::pool::Pool::global().run(n, |rows| {
        let mut vals = vec![0f32; m];
        for i in rows {
            row_dots(i, &mut vals);
            for (b, &v) in vals.iter().enumerate() {
                // SAFETY: every row index is handed to exactly one thread, which writes only
                // its entries of `out`, and `out` outlives the call.
                unsafe { *(out_addr as *mut f32).add(b * n + i) = v };
            }
        }
    });
}

/// One block of 32 weights as the portable products read it: its values as signed bytes in
/// element order, its scale, and (Q4_1) its minimum.
pub(crate) struct Unpacked {
    pub(crate) q: [i8; QK],
    pub(crate) d: f32,
    pub(crate) min: Option<f32>,
}

/// `Σ w·x` over one block: a plain loop over two arrays, which compilers turn into vector code
/// on any target (SSE2's `pmaddwd` on baseline x86-64, widening multiplies on NEON).
#[inline]
pub(crate) fn block_sum(w: &[i8; QK], x: &[i8; QK]) -> i32 {
    w.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// `vals[j]` = `row` · `xs[j]` in the portable form: per row `sum += d·d_x·Σq·x` (plus
/// `m·s_x` with a minimum) block by block, in ggml's order, four activation rows at a time;
/// with more than four the row's blocks are unpacked once for all of them. A product's bits
/// never depend on the rows beside it, so a prompt gives each row what one row alone gets.
#[inline(always)]
pub(crate) fn portable_dots(
    (block_bytes, unpack): (usize, impl Fn(&[u8]) -> Unpacked + Copy),
    row: &[u8],
    xs: &[Q8],
    vals: &mut [f32],
) {
    let format = (block_bytes, unpack);
    match xs {
        [a] => vals.copy_from_slice(&portable_group(format, row, [a])),
        [a, b] => vals.copy_from_slice(&portable_group(format, row, [a, b])),
        [a, b, c] => vals.copy_from_slice(&portable_group(format, row, [a, b, c])),
        [a, b, c, d] => vals.copy_from_slice(&portable_group(format, row, [a, b, c, d])),
        _ => {
            let unpacked: Vec<Unpacked> = row.chunks_exact(block_bytes).map(unpack).collect();
            for (xs, vals) in xs.chunks(4).zip(vals.chunks_mut(4)) {
                let u = &unpacked;
                match xs {
                    [a] => vals.copy_from_slice(&unpacked_group(u, [a])),
                    [a, b] => vals.copy_from_slice(&unpacked_group(u, [a, b])),
                    [a, b, c] => vals.copy_from_slice(&unpacked_group(u, [a, b, c])),
                    [a, b, c, d] => vals.copy_from_slice(&unpacked_group(u, [a, b, c, d])),
                    _ => unreachable!("chunks of one to four"),
                }
            }
        }
    }
}

/// [`portable_dots`] for `M` activation rows, each block unpacked as it is read; the sums
/// stay in registers (a sum kept in memory made every block wait for the last one's store).
#[inline(always)]
fn portable_group<const M: usize>(
    (block_bytes, unpack): (usize, impl Fn(&[u8]) -> Unpacked),
    row: &[u8],
    xs: [&Q8; M],
) -> [f32; M] {
    let mut sums = [0f32; M];
    for (b, block) in row.chunks_exact(block_bytes).enumerate() {
        portable_step(b, &unpack(block), xs, &mut sums);
    }
    sums
}

/// [`portable_group`] over blocks unpacked beforehand.
#[inline(always)]
fn unpacked_group<const M: usize>(blocks: &[Unpacked], xs: [&Q8; M]) -> [f32; M] {
    let mut sums = [0f32; M];
    for (b, u) in blocks.iter().enumerate() {
        portable_step(b, u, xs, &mut sums);
    }
    sums
}

/// Block `b` (`u`) of every product: `sum += d·d_x·Σq·x`, plus `m·s_x` with a minimum.
#[inline(always)]
fn portable_step<const M: usize>(b: usize, u: &Unpacked, xs: [&Q8; M], sums: &mut [f32; M]) {
    for (x, sum) in xs.iter().zip(sums.iter_mut()) {
        // Whole blocks: the caller checked that each activation row covers the row.
        let Ok(xq) = x.qs[b * QK..(b + 1) * QK].try_into() else {
            continue;
        };
        let v = u.d * x.d[b] * block_sum(&u.q, xq) as f32;
        *sum += match u.min {
            Some(m) => v + m * x.s[b],
            None => v,
        };
    }
}

/// How far ahead of the block being multiplied the SIMD kernels ask for weight bytes. The
/// hardware prefetcher alone left one thread streaming a model's weights from L3/DRAM at
/// 7–10 GB/s; with software prefetch 2 KiB ahead SmolLM2's 210 Q4_1 products per token went
/// from 6.9 to 3.7 ms (the same rows, in cache, run at ~21 GB/s either way). Reading past the
/// end of a matrix is harmless: prefetches never fault.
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH_BYTES: usize = 2048;

/// Asks for the cache line [`PREFETCH_BYTES`] after `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(p: *const u8) {
    use std::arch::x86_64::*;
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8) };
}

/// Asks for block `b`'s share of the two rows that follow the pair starting at `ra` (rows of
/// `ra.len()` bytes, one after the other): `2 · block_bytes` bytes, their first and last
/// lines. A pass over a pair thus streams the next pair in order, one contiguous run, where
/// prefetching each row [`PREFETCH_BYTES`] ahead of itself left Q8_0's products at 8 GB/s
/// per thread from memory (29 GB/s from cache); a row alone at the end asks for bytes past
/// the matrix, which is harmless.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_next_pair(ra: &[u8], b: usize, block_bytes: usize) {
    use std::arch::x86_64::*;
    let next = ra.as_ptr().wrapping_add(2 * (ra.len() + b * block_bytes));
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(next as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(2 * block_bytes - 1) as *const i8);
    }
}

/// The sum of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(acc: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let hi = _mm256_extractf128_ps(acc, 1);
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The low and high eight lanes of a 512-bit vector.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx2")]
pub(crate) unsafe fn halves_ps(
    v: std::arch::x86_64::__m512,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    (
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
#[test]
fn simd_quantization_equals_the_portable_one() {
    if kernel() == Kernel::Scalar {
        return;
    }
    let mut x = test_values(32 * 64, 9);
    // Ties (x.5 after scaling), zeros and a block of zeros.
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = 1.5;
    x[3] = -2.5;
    for v in &mut x[32..64] {
        *v = 0.0;
    }
    for block in x.chunks_exact(32) {
        let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
        let want = quantize_block(block, &mut a);
        // SAFETY: the CPU has AVX2 (`kernel()` is not scalar).
        let got = unsafe { quantize_block_avx2(block, &mut b) };
        assert_eq!((a, want), (b, got));
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
#[test]
fn simd_k_quantization_equals_the_portable_one() {
    if kernel() == Kernel::Scalar {
        return;
    }
    let mut x = test_values(256 * 9, 4);
    // A tie after scaling, the largest magnitude twice with both signs, and a zero block.
    x[5] = -x[3].abs().max(1.5);
    x[9] = -x[5];
    x[256 + 7] = 2.5;
    for v in &mut x[512..768] {
        *v = 0.0;
    }
    // SAFETY: the CPU has AVX2 and FMA (`kernel()` is not scalar).
    let got = unsafe { quantize_k_avx2(&x) };
    let want = quantize_k_body(&x);
    assert_eq!(got.qs, want.qs);
    assert_eq!(got.sum, want.sum);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got.d), bits(&want.d));
    assert_eq!(bits(&got.s), bits(&want.s));
}

/// Pseudo-random values in [-1, 1), for kernel tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// `W · x` with the dequantized weights of `q` (`(n, k)`), in f32: what the kernels'
/// results are checked against.
#[cfg(test)]
pub(crate) fn exact_product(q: &candle_core::quantized::QTensor, x: &[f32]) -> Vec<f32> {
    use candle_core::{Device, Tensor};
    let xt = Tensor::from_vec(x.to_vec(), (x.len(), 1), &Device::Cpu).unwrap();
    q.dequantize(&Device::Cpu)
        .unwrap()
        .matmul(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Checks a kernel pair against the dequantized product for weights of type `dtype`.
#[cfg(test)]
pub(crate) fn check_kernels(
    dtype: candle_core::quantized::GgmlDType,
    gemv: impl Fn(&[u8], usize, usize, &[f32], &mut [f32], Kernel),
) {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    let (n, k) = (48, 256);
    let w = Tensor::from_vec(test_values(n * k, 1), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let dense = q
        .dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all()?.to_vec1());
    check_blocks(
        &format!("{dtype:?}"),
        &q.data().unwrap(),
        &dense.unwrap(),
        (n, k),
        gemv,
    );
}

/// Checks a kernel pair on the blocks `data` of an `(n, k)` matrix whose values are `dense`:
/// the portable and SIMD kernels agree with each other and with the dequantized product.
#[cfg(test)]
pub(crate) fn check_blocks(
    name: &str,
    data: &[u8],
    dense: &[f32],
    (n, k): (usize, usize),
    gemv: impl Fn(&[u8], usize, usize, &[f32], &mut [f32], Kernel),
) {
    let x = test_values(k, 2);
    // The exact product with the dequantized weights; ours differs only by the 8-bit
    // quantization of the activations.
    let exact: Vec<f32> = dense
        .chunks_exact(k)
        .map(|row| row.iter().zip(&x).map(|(w, v)| w * v).sum())
        .collect();
    let run = |kernel| {
        let mut out = vec![0f32; n];
        gemv(data, n, k, &x, &mut out, kernel);
        out
    };
    let scalar = run(Kernel::Scalar);
    let mut others = vec![kernel()];
    if kernel() == Kernel::Avx512Vnni {
        others.push(Kernel::Avx2);
    }
    for other in others {
        let best = run(other);
        for ((s, b), e) in scalar.iter().zip(&best).zip(&exact) {
            assert!(
                (s - b).abs() < 1e-4 * (1.0 + e.abs()),
                "{name}: scalar {s} vs {other:?} {b}"
            );
            assert!((s - e).abs() < 0.1, "{name}: quantized {s} vs exact {e}");
        }
    }
    // The product must depend on the input: a wrong layout would not track it.
    let max_exact = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_exact > 0.5, "test data too small to be meaningful");
}

/// A block type's quantizer (values to blocks) and dequantizer (blocks to values), for tests.
#[cfg(test)]
pub(crate) type Codec = (fn(&[f32]) -> Vec<u8>, fn(&[u8], &mut [f32]));

/// Checks the kernels of a block type with a quantizer of our own (no candle type): blocks of
/// an `(n, k)` matrix quantized by `quantize`, against their values from `dequantize`
/// ([`check_blocks`]), and `m` activation rows at once against each row alone, bit for bit,
/// on the portable tier and (where the CPU has it) the AVX2 one.
#[cfg(test)]
pub(crate) fn check_block_type(
    name: &str,
    (quantize, dequantize): Codec,
    (n, k, m): (usize, usize, usize),
    gemv: impl Fn(&[u8], usize, usize, &[f32], &mut [f32], Kernel),
) {
    let data = quantize(&test_values(n * k, 1));
    let mut dense = vec![0f32; n * k];
    dequantize(&data, &mut dense);
    check_blocks(name, &data, &dense, (n, k), &gemv);
    let x = test_values(m * k, 4);
    let mut kernels = vec![Kernel::Scalar];
    if kernel() != Kernel::Scalar {
        kernels.push(Kernel::Avx2);
    }
    for kernel in kernels {
        let mut all = vec![0f32; m * n];
        gemv(&data, n, k, &x, &mut all, kernel);
        for (b, row) in x.chunks_exact(k).enumerate() {
            let mut one = vec![0f32; n];
            gemv(&data, n, k, row, &mut one, kernel);
            assert_eq!(one, all[b * n..(b + 1) * n], "{name} {kernel:?} row {b}");
        }
    }
}
