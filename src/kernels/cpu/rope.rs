//! The CPU rotation of RoPE over f32 rows, rounded as ggml's `rope` rounds (its C++ is
//! compiled with contraction, so one product of each pair is fused): `x0·c − x1·s` as
//! `fma(x0, c, −(x1·s))` and `x0·s + x1·c` as `fma(x0, s, x1·c)`.

/// Rotates every `2·half`-wide row of `x` into `y`; row `i` is at position `i mod l` of the
/// tables. Fused multiply-adds need the FMA unit to be fast, so x86-64 CPUs with one take a
/// copy of the loop compiled for it.
pub fn rotate(
    x: &[f32],
    y: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    half: usize,
    l: usize,
    interleaved: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return unsafe { rotate_fma(x, y, cos, sin, half, l, interleaved) };
    }
    rotate_loop(x, y, cos, sin, half, l, interleaved)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rotate_fma(
    x: &[f32],
    y: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    half: usize,
    l: usize,
    interleaved: bool,
) {
    rotate_loop(x, y, cos, sin, half, l, interleaved)
}

#[inline(always)]
fn rotate_loop(
    x: &[f32],
    y: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    half: usize,
    l: usize,
    interleaved: bool,
) {
    let d = 2 * half;
    for (row, (src, dst)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let p = row % l;
        let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
        for i in 0..half {
            let (i0, i1) = match interleaved {
                true => (2 * i, 2 * i + 1),
                false => (i, i + half),
            };
            let (x0, x1) = (src[i0], src[i1]);
            dst[i0] = x0.mul_add(c[i], -(x1 * s[i]));
            dst[i1] = x0.mul_add(s[i], x1 * c[i]);
        }
    }
}
