//! The vector steps of llama.cpp's CPU flash attention whose rounding matters, for
//! [`super::attn_few`]: a row rounded to f16, the f16 multiply-add `acc = f16(acc + w·v)` and
//! rescale `acc = f16(acc·w)` of the value sum, and ggml's f16 dot product order. Keys and
//! values are the cache's f16 rows, widened as they are loaded (exactly: the arithmetic is the
//! same as on their f32 values). Three forms: portable (the `half` crate), AVX2 with F16C (f32
//! arithmetic, rounded to f16 after each step, as ggml's F32C code and its scalar loop do),
//! and AVX512-FP16 (f16 arithmetic over whole steps of 128, as ggml built for such CPUs does).

use half::f16;

/// The vector steps of the online softmax whose rounding matters: f32 → f16 → f32 on a
/// slice, and the fused `y = f16(y + x·w)` and `y = f16(y·w)` on the accumulator.
pub(super) trait F16Steps {
    fn round(x: &mut [f32]);
    fn mad(y: &mut [f32], x: &[f16], w: f32);
    fn scale(y: &mut [f32], w: f32);
    /// The whole weighted sum of `v`'s rows into `out` (zeroed), step by step as `scale` and
    /// `mad` would do it, when this form has a faster way for rows as wide as `out`; false
    /// (touching nothing) otherwise.
    fn accumulate(_steps: &[(f32, bool)], _v: &[f16], _out: &mut [f32]) -> bool {
        false
    }
    /// [`dot`], by this form's means.
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        dot(a, b)
    }
}

/// Bit-exact software rounding (the `half` crate), for CPUs without F16C.
pub(super) struct Portable;

impl F16Steps for Portable {
    fn round(x: &mut [f32]) {
        for v in x {
            *v = f16::from_f32(*v).to_f32();
        }
    }
    fn mad(y: &mut [f32], x: &[f16], w: f32) {
        for (y, x) in y.iter_mut().zip(x) {
            *y = f16::from_f32(x.to_f32().mul_add(w, *y)).to_f32();
        }
    }
    fn scale(y: &mut [f32], w: f32) {
        for y in y {
            *y = f16::from_f32(*y * w).to_f32();
        }
    }
}

/// F16C conversions, eight lanes at a time (the tail, if any, in software).
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// `f(lanes)` rounded to f16 and back, over `y` in chunks of 8, `tail` for the rest.
    #[inline(always)]
    fn each8(
        y: &mut [f32],
        x: Option<&[f16]>,
        f: impl Fn(std::arch::x86_64::__m256, std::arch::x86_64::__m256) -> std::arch::x86_64::__m256,
        tail: impl Fn(f32, f32) -> f32,
    ) {
        use std::arch::x86_64::*;
        let n8 = y.len() / 8 * 8;
        // SAFETY: only called from functions compiled with avx2, fma and f16c, on CPUs that
        // have them (`one_query`); every load and store stays within `y` (and `x`, which is
        // at least as long).
        unsafe {
            for i in (0..n8).step_by(8) {
                let yv = _mm256_loadu_ps(y.as_ptr().add(i));
                let xv = match x {
                    Some(x) => _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast())),
                    None => _mm256_setzero_ps(),
                };
                let r = _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(f(yv, xv)));
                _mm256_storeu_ps(y.as_mut_ptr().add(i), r);
            }
        }
        for i in n8..y.len() {
            let xi = x.map_or(0.0, |x| x[i].to_f32());
            y[i] = f16::from_f32(tail(y[i], xi)).to_f32();
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl F16Steps for Avx2 {
    #[inline(always)]
    fn round(x: &mut [f32]) {
        Self::each8(x, None, |y, _| y, |y, _| y)
    }
    #[inline(always)]
    fn mad(y: &mut [f32], x: &[f16], w: f32) {
        use std::arch::x86_64::*;
        // SAFETY: see `each8`.
        let wv = unsafe { _mm256_set1_ps(w) };
        Self::each8(
            y,
            Some(x),
            // SAFETY: see `each8`.
            |y, x| unsafe { _mm256_fmadd_ps(x, wv, y) },
            |y, x| x.mul_add(w, y),
        )
    }
    #[inline(always)]
    fn scale(y: &mut [f32], w: f32) {
        use std::arch::x86_64::*;
        // SAFETY: see `each8`.
        let wv = unsafe { _mm256_set1_ps(w) };
        // SAFETY: see `each8`.
        Self::each8(
            y,
            None,
            |y, _| unsafe { _mm256_mul_ps(y, wv) },
            |y, _| y * w,
        )
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        dot_avx2(a, b)
    }
    #[inline(always)]
    fn accumulate(steps: &[(f32, bool)], v: &[f16], out: &mut [f32]) -> bool {
        let d = out.len();
        if d == 0 || !d.is_multiple_of(COLUMNS) || v.len() < steps.len() * d {
            return false;
        }
        // Each output element's chain of roundings involves no other element, so the
        // columns can be summed a slice at a time, each slice over every key.
        for (c, slice) in out.chunks_exact_mut(COLUMNS).enumerate() {
            Self::in_registers::<{ COLUMNS / 8 }>(steps, &v[c * COLUMNS..], d, slice);
        }
        true
    }
}

/// Columns of the weighted sum [`Avx2::in_registers`] holds at once: eight registers of the
/// sixteen, leaving room for the values and weights. A 128-wide row whole in sixteen ran no
/// faster than two slices (Zen 1: 20 µs for 512 keys either way), and rows of 256 (Gemma's
/// heads), which no register set holds, took the store-and-reload form until they were cut
/// into slices.
#[cfg(target_arch = "x86_64")]
const COLUMNS: usize = 64;

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// [`F16Steps::accumulate`] for `8·N` columns of rows `stride` apart (`v` starts at the
    /// first column of the first row), the sum held in `N` registers: the generic form
    /// stores and reloads it at every key, which put a store-to-load delay on the chain of
    /// roundings and made long-context decoding a fifth slower.
    #[inline(always)]
    fn in_registers<const N: usize>(
        steps: &[(f32, bool)],
        v: &[f16],
        stride: usize,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let round = |x: __m256| {
            // SAFETY: see `each8`.
            unsafe { _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)) }
        };
        assert!(out.len() == 8 * N && stride >= 8 * N);
        assert!(steps.is_empty() || v.len() >= (steps.len() - 1) * stride + 8 * N);
        // SAFETY: see `each8`; the assertions keep every row's `8·N` values within `v`.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            for (i, &(e, rescale)) in steps.iter().enumerate() {
                let row = v.as_ptr().add(i * stride);
                let w = if rescale {
                    let ms = _mm256_set1_ps(e);
                    for a in &mut acc {
                        *a = round(_mm256_mul_ps(*a, ms));
                    }
                    _mm256_set1_ps(1.0)
                } else {
                    _mm256_set1_ps(e)
                };
                for (c, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * c).cast()));
                    *a = round(_mm256_fmadd_ps(x, w, *a));
                }
            }
            for (c, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), *a);
            }
        }
    }
}

/// CPUs with AVX512-FP16, where ggml (built for the CPU) does its f16 vector arithmetic in
/// f16: over whole steps of 128 elements, `y = f16(y + x·w)` is one f16 fused multiply-add
/// with `w` itself rounded to f16 first, and `y = f16(y·w)` one f16 multiply; the elements
/// past the last whole step take ggml's scalar loop, which computes in f32 as [`Avx2`] does.
#[cfg(target_arch = "x86_64")]
pub(super) struct Fp16;

/// Elements per step of ggml's f16 vector loops with AVX512-FP16.
#[cfg(target_arch = "x86_64")]
pub(super) const FP16_STEP: usize = 128;

#[cfg(target_arch = "x86_64")]
impl Fp16 {
    /// `f(y, x)` on 32 f16 lanes at a time over the whole steps of `y` (and `x`), `y` through
    /// f16 vectors converted from and back to its f32 slice; the rest by `rest`.
    #[inline(always)]
    fn steps(
        y: &mut [f32],
        x: Option<&[f16]>,
        f: impl Fn(std::arch::x86_64::__m512i, std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i,
        rest: impl FnOnce(&mut [f32], Option<&[f16]>),
    ) {
        use std::arch::x86_64::*;
        let n = y.len() / FP16_STEP * FP16_STEP;
        // SAFETY: only called from functions compiled with avx512f, on CPUs that have it and
        // avx512fp16 (`one_query`; the f16 arithmetic itself is in `fma_ph`/`mul_ph`); loads
        // and stores stay within `y` (and `x`, as long).
        unsafe {
            let to16 = |p: *const f32| {
                let lo = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_loadu_ps(p));
                let hi = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_loadu_ps(p.add(16)));
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            };
            for i in (0..n).step_by(32) {
                let yv = to16(y.as_ptr().add(i));
                let xv = match x {
                    Some(x) => _mm512_loadu_si512(x.as_ptr().add(i).cast()),
                    None => _mm512_setzero_si512(),
                };
                let r = f(yv, xv);
                _mm512_storeu_ps(
                    y.as_mut_ptr().add(i),
                    _mm512_cvtph_ps(_mm512_castsi512_si256(r)),
                );
                _mm512_storeu_ps(
                    y.as_mut_ptr().add(i + 16),
                    _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(r)),
                );
            }
        }
        rest(&mut y[n..], x.map(|x| &x[n..]));
    }

    /// `w` rounded to f16, in every lane.
    #[inline(always)]
    fn splat(w: f32) -> std::arch::x86_64::__m512i {
        // SAFETY: see `steps`.
        unsafe { std::arch::x86_64::_mm512_set1_epi16(f16::from_f32(w).to_bits() as i16) }
    }
}

/// `y + x·w` on 32 f16 lanes, rounded once (`vfmadd231ph`; the intrinsics need an unstable
/// type, the instruction does not).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512fp16")]
unsafe fn fma_ph(
    mut y: std::arch::x86_64::__m512i,
    x: std::arch::x86_64::__m512i,
    w: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    std::arch::asm!(
        "vfmadd231ph {y}, {x}, {w}",
        y = inout(zmm_reg) y,
        x = in(zmm_reg) x,
        w = in(zmm_reg) w,
        options(pure, nomem, nostack),
    );
    y
}

/// `y·w` on 32 f16 lanes (`vmulph`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512fp16")]
unsafe fn mul_ph(
    mut y: std::arch::x86_64::__m512i,
    w: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    std::arch::asm!(
        "vmulph {y}, {y}, {w}",
        y = inout(zmm_reg) y,
        w = in(zmm_reg) w,
        options(pure, nomem, nostack),
    );
    y
}

/// [`F16Steps::accumulate`] for [`Fp16`] and rows of `32·N` values (whole f16 steps), the
/// sum held as f16 in `N` registers, as ggml holds it: each step loads the f16 value row and
/// does one f16 multiply-add per 32 lanes. Always true.
///
/// # Safety
/// The CPU must have AVX512-FP16 (and AVX-512 F/BW).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512fp16,f16c")]
unsafe fn fp16_in_registers<const N: usize>(
    steps: &[(f32, bool)],
    v: &[f16],
    out: &mut [f32],
) -> bool {
    use std::arch::x86_64::*;
    let splat = |w: f32| {
        _mm512_set1_epi16(
            _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(w))) as i16,
        )
    };
    let mut acc = [_mm512_setzero_si512(); N];
    for (&(e, rescale), row) in steps.iter().zip(v.chunks_exact(32 * N)) {
        let w = if rescale {
            let ms = splat(e);
            for a in &mut acc {
                *a = mul_ph(*a, ms);
            }
            splat(1.0)
        } else {
            splat(e)
        };
        for (c, a) in acc.iter_mut().enumerate() {
            *a = fma_ph(*a, _mm512_loadu_si512(row.as_ptr().add(32 * c).cast()), w);
        }
    }
    // Back to f32 through memory, element by element (this function's f16 features make
    // the compiler scalarize vector conversions anyway; it is once per query).
    let mut h = [0u16; 32];
    for (c, a) in acc.iter().enumerate() {
        _mm512_storeu_si512(h.as_mut_ptr() as *mut _, *a);
        for (o, &bits) in out[32 * c..32 * c + 32].iter_mut().zip(&h) {
            *o = f16::from_bits(bits).to_f32();
        }
    }
    true
}

#[cfg(target_arch = "x86_64")]
impl F16Steps for Fp16 {
    #[inline(always)]
    fn round(x: &mut [f32]) {
        Avx2::round(x)
    }
    #[inline(always)]
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        dot_avx2(a, b)
    }
    #[inline(always)]
    fn accumulate(steps: &[(f32, bool)], v: &[f16], out: &mut [f32]) -> bool {
        // SAFETY: `Fp16` runs only on CPUs with AVX512-FP16 (`one_query`).
        unsafe {
            match out.len() {
                // Rows shorter than one f16 step take ggml's scalar loop: the AVX2 numerics.
                n if n < FP16_STEP => Avx2::accumulate(steps, v, out),
                128 => fp16_in_registers::<4>(steps, v, out),
                256 => fp16_in_registers::<8>(steps, v, out),
                _ => false,
            }
        }
    }
    #[inline(always)]
    fn mad(y: &mut [f32], x: &[f16], w: f32) {
        let wv = Self::splat(w);
        Self::steps(
            y,
            Some(x),
            // SAFETY: see `steps`.
            |y, x| unsafe { fma_ph(y, x, wv) },
            |y, x| Avx2::mad(y, x.unwrap_or_default(), w),
        )
    }
    #[inline(always)]
    fn scale(y: &mut [f32], w: f32) {
        let wv = Self::splat(w);
        Self::steps(
            y,
            None,
            // SAFETY: see `steps`.
            |y, _| unsafe { mul_ph(y, wv) },
            |y, _| Avx2::scale(y, w),
        )
    }
}

/// `a·b` summed as ggml's AVX-512 `ggml_vec_dot_f16` sums it: products fused into 64 lanes
/// (`i mod 64`), the four 16-lane vectors folded pairwise (0+2, 1+3, then 0+1), the 16 lanes
/// reduced as halves (8, 4, 2, 1), and the products past the last 64 added in f64.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f16]) -> f32 {
    let mut acc = [0f32; 64];
    let (ac, bc) = (a.chunks_exact(64), b.chunks_exact(64));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..64 {
            acc[i] = x[i].mul_add(y[i].to_f32(), acc[i]);
        }
    }
    let mut r = [0f32; 16];
    for i in 0..16 {
        r[i] = (acc[i] + acc[32 + i]) + (acc[16 + i] + acc[48 + i]);
    }
    let mut w = 8;
    while w > 0 {
        for i in 0..w {
            r[i] += r[i + w];
        }
        w /= 2;
    }
    with_tail(r[0], at, bt)
}

/// ggml's leftovers: each product rounded to f32, added to the sum in f64.
#[inline(always)]
fn with_tail(sum: f32, a: &[f32], b: &[f16]) -> f32 {
    if a.is_empty() {
        return sum;
    }
    let mut s = sum as f64;
    for (x, y) in a.iter().zip(b) {
        s += (x * y.to_f32()) as f64;
    }
    s as f32
}

/// [`dot`] in eight AVX registers: register `c` holds lanes `8c..8c + 8`, and the folds are
/// the same additions in the same order.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot_avx2(a: &[f32], b: &[f16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len() / 64 * 64;
    // SAFETY: only called from functions compiled with avx2 and fma, on CPUs that have them;
    // loads stay within the first `n` elements of `a` and `b` (as long as `a`).
    unsafe {
        let mut c = [_mm256_setzero_ps(); 8];
        for i in (0..n).step_by(64) {
            for (j, cj) in c.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(a.as_ptr().add(i + 8 * j));
                let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8 * j).cast()));
                *cj = _mm256_fmadd_ps(x, y, *cj);
            }
        }
        let lo = _mm256_add_ps(_mm256_add_ps(c[0], c[4]), _mm256_add_ps(c[2], c[6]));
        let hi = _mm256_add_ps(_mm256_add_ps(c[1], c[5]), _mm256_add_ps(c[3], c[7]));
        let sum = super::gemv::hsum(_mm256_add_ps(lo, hi));
        with_tail(sum, &a[n..], &b[n..])
    }
}
