//! Q4_K and Q6_K products of one weight row with one to eight activation rows in portable
//! code (every CPU without AVX2, ARM included): each super-block is unpacked once, to signed
//! bytes in element order, for all the rows, and each run of 32 values is summed by a plain
//! array loop that compilers vectorize. The integers are exact in any order and the float
//! steps are [`super::kdots`]' one-row portable ones, so every product is that form's bit
//! for bit, whatever rows it is computed beside.

use super::gemv::block_sum;
use super::kdots::{f16_at, q4k_scale_min, Q4K_BYTES, Q6K_BYTES, Q8K, QK_K};

/// `vals[j]` = `row` · `xs[j]` for Q6_K (`q6`) or Q4_K rows, one to eight activation rows.
pub(super) fn dots(q6: bool, row: &[u8], xs: &[Q8K], vals: &mut [f32]) {
    macro_rules! group {
        ($($j:literal),*) => {{
            let xs = [$(&xs[$j]),*];
            vals.copy_from_slice(&if q6 { q6k(row, xs) } else { q4k(row, xs) });
        }};
    }
    match xs.len() {
        1 => group!(0),
        2 => group!(0, 1),
        3 => group!(0, 1, 2),
        4 => group!(0, 1, 2, 3),
        5 => group!(0, 1, 2, 3, 4),
        6 => group!(0, 1, 2, 3, 4, 5),
        7 => group!(0, 1, 2, 3, 4, 5, 6),
        _ => group!(0, 1, 2, 3, 4, 5, 6, 7),
    }
}

/// Run `r` of 32 activations of `x` (elements `32r..32r + 32`).
fn run32(x: &Q8K, r: usize) -> &[i8; 32] {
    &x.qs.as_chunks::<32>().0[r]
}

/// Q4_K: per super-block the exact `Σ scale_j · (q·x)_j` and `Σ min_j · bsum_j`, then
/// `acc += isum · d·d_x`, `accm += imin · dmin·d_x` (fused), the result `acc − accm`.
fn q4k<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
    let (mut acc, mut accm) = ([0f32; M], [0f32; M]);
    for (b, blk) in row.chunks_exact(Q4K_BYTES).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let (sc, qs) = (&blk[4..16], &blk[16..]);
        let mut q = [[0i8; 32]; 8];
        for (p, bytes) in qs.chunks_exact(32).enumerate() {
            for (t, &byte) in bytes.iter().enumerate() {
                q[2 * p][t] = (byte & 15) as i8;
                q[2 * p + 1][t] = (byte >> 4) as i8;
            }
        }
        let scales: [(u8, u8); 8] = std::array::from_fn(|j| q4k_scale_min(sc, j));
        for (m, x) in xs.iter().enumerate() {
            let (mut isum, mut imin) = (0i32, 0i32);
            for (j, &(s, mn)) in scales.iter().enumerate() {
                isum += s as i32 * block_sum(&q[j], run32(x, b * QK_K / 32 + j));
                imin += mn as i32 * (x.bsums[16 * b + 2 * j] + x.bsums[16 * b + 2 * j + 1]);
            }
            acc[m] = (isum as f32).mul_add(d * x.d[b], acc[m]);
            accm[m] = (imin as f32).mul_add(dmin * x.d[b], accm[m]);
        }
    }
    std::array::from_fn(|m| acc[m] - accm[m])
}

/// Q6_K: per super-block eight exact lane sums (lane `l` sums elements `4l..4l + 4` of each
/// run of 32, times its scale, less 32 · `bsum · scale` over scale groups `2l`, `2l + 1`),
/// each fused into its own float chain with `d·d_x`, the chains summed as `hsum_float_8`.
fn q6k<const M: usize>(row: &[u8], xs: [&Q8K; M]) -> [f32; M] {
    let mut acc = [[0f32; 8]; M];
    for (b, blk) in row.chunks_exact(Q6K_BYTES).enumerate() {
        // Run `v` (elements 32v..32v + 32): half `v / 4`, quarter `v % 4` of ggml's layout.
        let mut q = [[0i8; 32]; 8];
        for (v, run) in q.iter_mut().enumerate() {
            let (h, idx) = (v / 4, v % 4);
            let ql = &blk[64 * h + (idx % 2) * 32..64 * h + (idx % 2) * 32 + 32];
            let qh = &blk[128 + 32 * h..128 + 32 * h + 32];
            for (t, o) in run.iter_mut().enumerate() {
                let nib = if idx < 2 { ql[t] & 15 } else { ql[t] >> 4 };
                *o = (nib | ((qh[t] >> (2 * idx)) & 3) << 4) as i8;
            }
        }
        let scales: [i32; 16] = std::array::from_fn(|i| blk[192 + i] as i8 as i32);
        let dw = f16_at(blk, 208);
        for (m, x) in xs.iter().enumerate() {
            let mut lanes = [0i32; 8];
            for (v, run) in q.iter().enumerate() {
                let xq = run32(x, b * QK_K / 32 + v);
                for (l, lane) in lanes.iter_mut().enumerate() {
                    let dot: i32 = (0..4)
                        .map(|t| run[4 * l + t] as i32 * xq[4 * l + t] as i32)
                        .sum();
                    *lane += scales[(32 * v + 4 * l) / 16] * dot;
                }
            }
            let d = x.d[b] * dw;
            let bsums = &x.bsums[16 * b..16 * b + 16];
            for (l, (lane, a)) in lanes.iter().zip(acc[m].iter_mut()).enumerate() {
                let sub = bsums[2 * l] * scales[2 * l] + bsums[2 * l + 1] * scales[2 * l + 1];
                *a = d.mul_add((lane - (sub << 5)) as f32, *a);
            }
        }
    }
    std::array::from_fn(|m| super::kdots::hsum8(&acc[m]))
}
