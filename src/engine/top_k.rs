//! The k largest logits of a vocabulary in one pass, ranked: larger logit first, and among
//! equal logits the lower token id first.

use std::cmp::Ordering;

/// `f32::total_cmp`'s order as an integer: `key(a) < key(b)` exactly when `a` is below `b`.
fn key(l: f32) -> i32 {
    let bits = l.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// Whether candidate `a` ranks before `b`: larger logit (`total_cmp`, so the order is total),
/// then lower token id.
fn ranks_before(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `k` best `(token, logit)` pairs of `logits`, best first; every token, ranked, when `k`
/// is 0 or at least the vocabulary.
///
/// One pass keeps the best `k` seen so far in order; logits not above the worst of them, which
/// is nearly every logit of a large vocabulary, are dropped sixteen at a time, so the whole
/// vocabulary is neither copied nor partitioned.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let pairs = logits.iter().enumerate().map(|(i, &l)| (i as u32, l));
    if k == 0 || k >= logits.len() {
        let mut all: Vec<(u32, f32)> = pairs.collect();
        all.sort_unstable_by(ranks_before);
        return all;
    }
    let mut kept: Vec<(u32, f32)> = pairs.take(k).collect();
    kept.sort_unstable_by(ranks_before);
    let mut worst = key(kept[k - 1].1);
    // Sixteen logits at a time: their largest key (which compiles to vector instructions)
    // against the worst kept; only a group that beats it is looked at one by one.
    for (g, group) in logits[k..].chunks(16).enumerate() {
        if group.iter().map(|&l| key(l)).max().unwrap_or(i32::MIN) <= worst {
            continue;
        }
        for (j, &l) in group.iter().enumerate() {
            // A later token ranks after every kept one with the same logit: it must beat the
            // worst logit outright.
            if key(l) <= worst {
                continue;
            }
            let at = kept.partition_point(|c| c.1.total_cmp(&l) != Ordering::Less);
            kept.pop();
            kept.insert(at, ((k + 16 * g + j) as u32, l));
            worst = key(kept[k - 1].1);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: rank everything, keep the first `k`.
    fn by_sorting(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        all.sort_by(ranks_before);
        if k > 0 {
            all.truncate(k);
        }
        all
    }

    #[test]
    fn equals_ranking_everything_ties_and_all_included() {
        // A small generator with many ties (values from a handful of levels).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [1usize, 2, 5, 40, 41, 1000, 5000] {
            let logits: Vec<f32> = (0..n).map(|_| (next() % 37) as f32 * 0.5 - 9.0).collect();
            for k in [0usize, 1, 2, 7, 40, n.saturating_sub(1), n, n + 3] {
                let got = top_k(&logits, k);
                let want = by_sorting(&logits, k.min(n));
                let got: Vec<(u32, u32)> = got.iter().map(|c| (c.0, c.1.to_bits())).collect();
                let want: Vec<(u32, u32)> = want.iter().map(|c| (c.0, c.1.to_bits())).collect();
                assert_eq!(got, want, "n = {n}, k = {k}");
            }
        }
    }

    #[test]
    fn infinities_and_nan_keep_total_order() {
        let logits = [
            1.0,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::INFINITY,
            1.0,
            -0.0,
            0.0,
        ];
        let got: Vec<u32> = top_k(&logits, 4).iter().map(|c| c.0).collect();
        assert_eq!(got, vec![2, 3, 0, 4]);
    }
}
