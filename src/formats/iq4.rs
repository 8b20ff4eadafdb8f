//! IQ4_NL and IQ4_XS (ggml types 20 and 23): 4-bit codes into one non-linear table of
//! sixteen signed integers ([`VALUES`], ggml's `kvalues_iq4nl`), scaled per block.
//!
//! - IQ4_NL: blocks of 32 values, 18 bytes: an f16 scale `d`, then 16 bytes of codes, byte
//!   `j` holding value `j` in its low nibble and value `j + 16` in its high one. A value is
//!   `d · VALUES[code]`.
//! - IQ4_XS: super-blocks of 256 values, 136 bytes: an f16 scale `d`, a u16 of high scale
//!   bits, 4 bytes of low scale bits, then eight sub-blocks of 32 values laid out as IQ4_NL's
//!   codes. Sub-block `i`'s 6-bit scale `ls` is nibble `i % 2` of low byte `i / 2` with bits
//!   `2i, 2i + 1` of the u16 above it; its values are `d · (ls - 32) · VALUES[code]`.
//!
//! The products are [`crate::kernels::cpu::iq4_nl`] and [`crate::kernels::cpu::iq4_xs`].
//! The quantizer is ggml's `quantize_row_iq4_nl_impl` without an importance matrix (what
//! llama-quantize runs without one), used for synthetic models and tests.
//!
//! References: ggml `ggml-common.h` (`block_iq4_nl`, `block_iq4_xs`, `kvalues_iq4nl`),
//! `ggml-quants.c` (`dequantize_row_iq4_nl`, `dequantize_row_iq4_xs`, `quantize_iq4_nl`,
//! `quantize_iq4_xs`).

use half::f16;

/// The sixteen values a code stands for (`kvalues_iq4nl`).
pub const VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's type id of IQ4_NL.
pub const NL_TYPE_ID: u32 = 20;
/// ggml's type id of IQ4_XS.
pub const XS_TYPE_ID: u32 = 23;

/// Values per IQ4_NL block (and per IQ4_XS sub-block).
pub const NL_BLOCK: usize = 32;
/// Bytes per IQ4_NL block: the f16 scale, 16 bytes of codes.
pub const NL_BLOCK_BYTES: usize = 18;
/// Values per IQ4_XS super-block.
pub const XS_BLOCK: usize = 256;
/// Bytes per IQ4_XS super-block: f16 scale, u16 high scale bits, 4 bytes of low scale bits,
/// 128 bytes of codes.
pub const XS_BLOCK_BYTES: usize = 136;

/// The f16 at `b[0..2]`, as f32.
fn f16_at(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Sixteen bytes of codes scaled by `d` into the 32 values they hold.
fn codes(qs: &[u8], d: f32, out: &mut [f32]) {
    for (j, &byte) in qs.iter().take(16).enumerate() {
        out[j] = d * VALUES[(byte & 0x0F) as usize] as f32;
        out[j + 16] = d * VALUES[(byte >> 4) as usize] as f32;
    }
}

/// The 6-bit scale of sub-block `i` (0..8) of an IQ4_XS super-block, less 32.
pub fn xs_scale(block: &[u8], i: usize) -> i32 {
    let h = u16::from_le_bytes([block[2], block[3]]) as i32;
    let low = (block[4 + i / 2] >> (4 * (i % 2))) & 0x0F;
    (low as i32 | (((h >> (2 * i)) & 3) << 4)) - 32
}

/// The values of whole IQ4_NL blocks `bytes` into `out` (32 per block).
pub fn dequantize_nl(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes
        .chunks_exact(NL_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(NL_BLOCK))
    {
        codes(&block[2..], f16_at(block), o);
    }
}

/// The values of whole IQ4_XS super-blocks `bytes` into `out` (256 per super-block), as ggml
/// computes them: `dl = d · (ls - 32)` in f32, then `dl · value` (both exact in f32).
pub fn dequantize_xs(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes
        .chunks_exact(XS_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(XS_BLOCK))
    {
        let d = f16_at(block);
        for (i, o) in o.chunks_exact_mut(NL_BLOCK).enumerate() {
            let dl = d * xs_scale(block, i) as f32;
            codes(&block[8 + 16 * i..], dl, o);
        }
    }
}

/// Sub-block scales below this are zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// The table entry nearest `x` (ggml's `best_index_int8`; a tie goes up).
fn nearest_code(x: f32) -> u8 {
    let v = |i: usize| VALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0, 15);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - v(hi - 1) < v(hi) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

/// One block of 32 values: ggml's scale search (the scale of the largest magnitude mapped
/// to -127, least squares, then fourteen nearby scales tried), with weights `x²`. The scale
/// and the codes (`None`: a block of zeros).
fn block_scale(x: &[f32], codes: &mut [u8]) -> Option<f32> {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return None;
    }
    let fit = |id: f32, codes: &mut [u8]| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = nearest_code(id * v);
            let q = VALUES[*c as usize] as f32;
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let v0 = VALUES[0] as f32;
    let (sumqx, sumq2) = fit(1.0 / (-max / v0), codes);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    let mut trial = [0u8; NL_BLOCK];
    for itry in -7..=7 {
        let (sumqx, sumq2) = fit((itry as f32 + v0) / max, &mut trial[..x.len()]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// Codes of `x` for the scale `dl` (zero: all codes 0), packed two per byte.
fn pack(x: &[f32], dl: f32, out: &mut [u8]) {
    let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
    let code = |v: f32| nearest_code(idl * v);
    for j in 0..16 {
        out[j] = code(x[j]) | (code(x[j + 16]) << 4);
    }
}

/// `values` (a multiple of 32 long) as IQ4_NL blocks.
pub fn quantize_nl(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / NL_BLOCK * NL_BLOCK_BYTES);
    let mut scratch = [0u8; NL_BLOCK];
    for x in values.chunks_exact(NL_BLOCK) {
        let d = block_scale(x, &mut scratch).unwrap_or(0.0);
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // ggml then codes the block again with the scale found (in f32).
        let mut qs = [0u8; 16];
        pack(x, d, &mut qs);
        out.extend_from_slice(&qs);
    }
    out
}

/// `values` (a multiple of 256 long) as IQ4_XS super-blocks.
pub fn quantize_xs(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / XS_BLOCK * XS_BLOCK_BYTES);
    let mut scratch = [0u8; NL_BLOCK];
    for x in values.chunks_exact(XS_BLOCK) {
        let scales: Vec<f32> = x
            .chunks_exact(NL_BLOCK)
            .map(|b| block_scale(b, &mut scratch).unwrap_or(0.0))
            .collect();
        let (mut amax, mut max) = (0f32, 0f32);
        for &s in &scales {
            if s.abs() > amax {
                amax = s.abs();
                max = s;
            }
        }
        let d = -max / 32.0;
        let dh = f16::from_f32(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut block = [0u8; XS_BLOCK_BYTES];
        block[..2].copy_from_slice(&dh.to_le_bytes());
        let mut h = 0u16;
        for (i, (sub, &s)) in x.chunks_exact(NL_BLOCK).zip(&scales).enumerate() {
            let l = crate::kernels::cpu::gemv::nearest_int(id * s).clamp(-32, 31);
            pack(sub, d * l as f32, &mut block[8 + 16 * i..8 + 16 * (i + 1)]);
            let l = (l + 32) as u8;
            block[4 + i / 2] |= (l & 0x0F) << (4 * (i % 2));
            h |= ((l >> 4) as u16) << (2 * i);
        }
        block[2..4].copy_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nl_values_are_the_scale_times_the_table() {
        let mut block = vec![0u8; NL_BLOCK_BYTES];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[2] = 0xF0; // value 0: code 0; value 16: code 15
        block[17] = 0x78; // value 15: code 8; value 31: code 7
        let mut out = [0f32; 32];
        dequantize_nl(&block, &mut out);
        assert_eq!(out[0], -63.5);
        assert_eq!(out[16], 56.5);
        assert_eq!(out[15], 0.5);
        assert_eq!(out[31], -5.0);
    }

    #[test]
    fn xs_scales_take_their_high_bits_from_the_u16() {
        let mut block = vec![0u8; XS_BLOCK_BYTES];
        block[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        // Sub-block 3: low nibble 5 (high nibble of byte 5), high bits 0b10 (bits 6, 7).
        block[5] = 0x50;
        block[2] = 0b1000_0000;
        assert_eq!(xs_scale(&block, 3), 0b10_0101 - 32);
        assert_eq!(xs_scale(&block, 0), -32);
        block[8 + 16 * 3] = 0x09; // sub-block 3, value 0: code 9 (13)
        let mut out = [0f32; XS_BLOCK];
        dequantize_xs(&block, &mut out);
        assert_eq!(out[96], (37 - 32) as f32 * 13.0);
        assert_eq!(out[0], -32.0 * -127.0);
    }

    #[test]
    fn quantization_round_trips_within_the_grid() {
        let values: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1.0 + (i / 32) as f32))
            .collect();
        let mut nl = vec![0f32; 512];
        dequantize_nl(&quantize_nl(&values), &mut nl);
        let mut xs = vec![0f32; 512];
        dequantize_xs(&quantize_xs(&values), &mut xs);
        for (i, v) in values.iter().enumerate() {
            // The widest gap of the table is 24 of 127: an eighth of a block's largest
            // magnitude bounds the error.
            let bound = 0.1 * (1.0 + (i / 32) as f32) + 0.02;
            assert!((nl[i] - v).abs() <= bound, "NL {i}: {} vs {v}", nl[i]);
            assert!((xs[i] - v).abs() <= 2.5 * bound, "XS {i}: {} vs {v}", xs[i]);
        }
        assert_eq!(quantize_nl(&values).len(), 16 * NL_BLOCK_BYTES);
        assert_eq!(quantize_xs(&values).len(), 2 * XS_BLOCK_BYTES);
    }

    #[test]
    fn nearest_code_breaks_ties_upwards_as_ggml_does() {
        assert_eq!(nearest_code(-200.0), 0);
        assert_eq!(nearest_code(500.0), 15);
        assert_eq!(nearest_code(7.0), 9); // halfway between 1 and 13
        assert_eq!(nearest_code(6.9), 8);
    }
}
