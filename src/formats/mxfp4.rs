//! MXFP4 (OCP microscaling FP4; ggml type 39): blocks of 32 values, each block one e8m0
//! exponent byte then 16 bytes of 4-bit e2m1 codes, byte `j` holding value `j` in its low
//! nibble and value `j + 16` in its high one (ggml's `block_mxfp4`). A value is
//! `VALUES[code] · 2^(e - 128)`: ggml keeps the e2m1 values doubled (integers) and halves the
//! scale instead, so products run on integers.
//!
//! Published gpt-oss checkpoints store the same numbers apart, as `*_blocks` (`(…, rows,
//! cols / 32, 16)` bytes, value `2i` in the low nibble of byte `i`, `2i + 1` in the high one)
//! and `*_scales` (`(…, rows, cols / 32)` exponents, bias 127); [`from_blocks_and_scales`]
//! repacks them into ggml's blocks, which a [`super::blocks::Blocks`] of type MXFP4 holds,
//! borrowed from a mapped GGUF or owned. The products are [`crate::kernels::cpu::mxfp4`].
//!
//! References: ggml `ggml-common.h` (`block_mxfp4`, `kvalues_mxfp4`), `ggml-quants.c`
//! (`quantize_row_mxfp4_ref`, `dequantize_row_mxfp4`); transformers
//! `integrations/mxfp4.py` (`convert_moe_packed_tensors`).

use crate::{Error, Result};

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: the exponent, then 16 bytes of codes.
pub const BLOCK_BYTES: usize = 17;
/// ggml's type id.
pub const GGML_TYPE_ID: u32 = 39;

/// The e2m1 values of the 16 codes, doubled (`kvalues_mxfp4`): 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4,
/// ±6 times two. Code 8 is -0.
pub const VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `2^(e - 128)`, half the e8m0 scale `2^(e - 127)`, exactly as ggml's
/// `ggml_e8m0_to_fp32_half` builds it (subnormal for `e` < 2).
pub const fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// The 32 values of one block.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    let d = e8m0_half(block[0]);
    for (j, &byte) in block[1..BLOCK_BYTES].iter().enumerate() {
        out[j] = VALUES[(byte & 0x0F) as usize] as f32 * d;
        out[j + BLOCK / 2] = VALUES[(byte >> 4) as usize] as f32 * d;
    }
}

/// The values of whole blocks `bytes` into `out` (`BLOCK` per block).
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        dequantize_block(block, o);
    }
}

/// The code whose value times `d` is nearest `x` (the first on ties), as ggml's
/// `best_index_mxfp4`.
fn nearest(x: f32, d: f32) -> u8 {
    let mut best = (0u8, (VALUES[0] as f32 * d - x).abs());
    for (i, &v) in VALUES.iter().enumerate().skip(1) {
        let err = (v as f32 * d - x).abs();
        if err < best.1 {
            best = (i as u8, err);
        }
    }
    best.0
}

/// Quantizes `values` (a multiple of 32 long) as ggml's `quantize_row_mxfp4_ref`: per block
/// the exponent `floor(log2(max |x|)) - 2 + 127` (0 for a block of zeros; kept within the
/// finite e8m0 range), each value the nearest code.
pub fn quantize(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / BLOCK * BLOCK_BYTES);
    for block in values.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0).clamp(0.0, 254.0) as u8
        } else {
            0
        };
        let d = e8m0_half(e);
        out.push(e);
        for j in 0..BLOCK / 2 {
            out.push(nearest(block[j], d) | (nearest(block[j + BLOCK / 2], d) << 4));
        }
    }
    out
}

/// ggml's blocks from a published checkpoint's `blocks` (16 bytes per block of 32: value
/// `2i` in the low nibble of byte `i`) and `scales` (one exponent per block), block for
/// block: what llama.cpp's converter writes for such a checkpoint.
pub fn from_blocks_and_scales(blocks: &[u8], scales: &[u8]) -> Result<Vec<u8>> {
    if blocks.len() != scales.len() * (BLOCK / 2) {
        return Err(Error::Internal(format!(
            "MXFP4: {} bytes of blocks for {} scales; expected 16 bytes per scale",
            blocks.len(),
            scales.len()
        )));
    }
    let mut out = Vec::with_capacity(scales.len() * BLOCK_BYTES);
    for (packed, &e) in blocks.chunks_exact(BLOCK / 2).zip(scales) {
        let code = |i: usize| (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
        out.push(e);
        for j in 0..BLOCK / 2 {
            out.push(code(j) | (code(j + BLOCK / 2) << 4));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_two_to_the_exponent_minus_128() {
        assert_eq!(e8m0_half(128), 1.0);
        assert_eq!(e8m0_half(127), 0.5);
        assert_eq!(e8m0_half(130), 4.0);
        assert_eq!(e8m0_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_half(254), 2f32.powi(126));
    }

    #[test]
    fn low_nibbles_are_the_first_half_of_a_block() {
        // Exponent 128: d = 1, values are VALUES themselves.
        let mut block = vec![128u8];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize_block(&block, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], VALUES[j] as f32, "value {j}");
            assert_eq!(out[j + 16], VALUES[15 - j] as f32, "value {}", j + 16);
        }
    }

    #[test]
    fn quantization_keeps_representable_values_and_rounds_to_the_nearest() {
        // max |x| = 3 -> e = floor(log2 3) - 2 + 127 = 126, d = 2^-2; codes step 0.25 near 0.
        let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.125).collect();
        x[0] = 3.0;
        let q = quantize(&x);
        assert_eq!(q.len(), BLOCK_BYTES);
        assert_eq!(q[0], 126);
        let mut back = [0f32; 32];
        dequantize_block(&q, &mut back);
        assert_eq!(back[0], 3.0);
        for (a, b) in x.iter().zip(&back) {
            // The grid (d = 2^-2): 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3; at most half a step off.
            assert!((a - b).abs() <= 0.25 + 1e-6, "{a} -> {b}");
        }
        // Values on the grid come back exactly.
        let grid: Vec<f32> = (0..32).map(|i| VALUES[i % 16] as f32 * 0.125).collect();
        let mut back = [0f32; 32];
        dequantize_block(&quantize(&grid), &mut back);
        assert_eq!(&back[..], &grid[..]);
        // A block of zeros.
        assert_eq!(quantize(&[0f32; 32]), vec![0u8; BLOCK_BYTES]);
    }

    #[test]
    fn quantization_matches_blocks_computed_by_hand() {
        // max |x| = 6 → e = floor(log2 6) - 2 + 127 = 127, d = 2^-1: the grid is 0, ±0.5,
        // ±1, ±1.5, ±2, ±3, ±4, ±6 (codes 0..8, 8..16). Ties take the first code in table
        // order, as ggml's `best_index_mxfp4` (a strict `<`).
        let mut x = [0f32; 32];
        x[..8].copy_from_slice(&[5.0, -0.2, 0.25, -0.75, 2.6, -6.0, 1.2, -0.0]);
        x[16] = 3.0;
        x[17] = -1.4;
        // 5 → 4 (code 6; 6 is as near), -0.2 → 0, 0.25 → 0 (0.5 is as near), -0.75 → -0.5
        // (code 9; -1 is as near), 2.6 → 3 (code 5), -6 → code 15, 1.2 → 1 (code 2),
        // -0 → 0; 3 → code 5 and -1.4 → -1.5 (code 11) in the high nibbles of bytes 0, 1.
        let mut want = vec![127u8, 0x56, 0xB0, 0x00, 0x09, 0x05, 0x0F, 0x02];
        want.resize(BLOCK_BYTES, 0);
        assert_eq!(quantize(&x), want);
        // max |x| = 0.1 → e = floor(-3.32) - 2 + 127 = 121, d = 2^-7: 0.1 lies nearest
        // 12 · 2^-7 = 0.09375 (code 7).
        let mut want = vec![121u8];
        want.resize(BLOCK_BYTES, 0x77);
        assert_eq!(quantize(&[0.1f32; 32]), want);
    }

    #[test]
    fn published_blocks_repack_to_the_same_values() {
        // Codes 0..32 in the checkpoint's order: value i has code i % 16.
        let codes: Vec<u8> = (0..32u8).map(|i| (i * 7) % 16).collect();
        let packed: Vec<u8> = codes.chunks(2).map(|p| p[0] | (p[1] << 4)).collect();
        let ggml = from_blocks_and_scales(&packed, &[129]).unwrap();
        let mut out = [0f32; 32];
        dequantize_block(&ggml, &mut out);
        // transformers: lut[code] (the undoubled values) · 2^(129 - 127).
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(out[i], VALUES[c as usize] as f32 / 2.0 * 4.0, "value {i}");
        }
        assert!(from_blocks_and_scales(&packed, &[1, 2]).is_err());
    }
}
