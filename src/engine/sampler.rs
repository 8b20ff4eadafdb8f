//! Token sampling: repeat penalty, then greedy (temperature 0) or top-k → top-p → min-p →
//! temperature → a seeded draw, in llama.cpp's order.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling parameters; the defaults are llama.cpp's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// 0 (or below) means greedy argmax.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the draw.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A sampler with its own random state.
pub struct Sampler {
    params: Params,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: Params) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Whether this sampler always picks the largest logit (temperature 0, no repeat
    /// penalty), so a backend may pick it without handing over the logits.
    pub fn is_greedy(&self) -> bool {
        let p = &self.params;
        p.temperature <= 0.0 && (p.repeat_penalty == 1.0 || p.repeat_last_n == 0)
    }

    /// Picks the next token from `logits`; `recent` are the tokens seen so far (for the
    /// repeat penalty).
    pub fn sample(&mut self, logits: &[f32], recent: &[u32]) -> u32 {
        let p = &self.params;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = recent.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &recent[start..] {
                if let Some(c) = cand.get_mut(t as usize).filter(|_| seen.insert(t)) {
                    c.1 = if c.1 > 0.0 {
                        c.1 / p.repeat_penalty
                    } else {
                        c.1 * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&cand);
        }
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit_desc);
        let probs = softmax(cand.iter().map(|c| c.1), 1.0);
        let mut keep = cand.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
        }
        cand.truncate(keep.max(1));
        let probs = softmax(cand.iter().map(|c| c.1), p.temperature);
        let mut r: f32 = self.rng.random();
        for (c, pr) in cand.iter().zip(&probs) {
            if r < *pr {
                return c.0;
            }
            r -= pr;
        }
        cand[cand.len() - 1].0
    }
}

fn argmax(cand: &[(u32, f32)]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for &(i, l) in cand {
        if l > best.1 {
            best = (i, l);
        }
    }
    best.0
}

fn softmax(logits: impl Iterator<Item = f32> + Clone, temperature: f32) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.map(|l| ((l - max) / temperature).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> Params {
        Params {
            temperature: 0.0,
            ..Params::default()
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0], &[]), 1);
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let mut s = Sampler::new(Params {
            repeat_penalty: 2.0,
            ..greedy()
        });
        assert_eq!(s.sample(&[0.1, 3.0, 2.0, -1.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_always_picks_the_best() {
        let mut s = Sampler::new(Params {
            top_k: 1,
            temperature: 5.0,
            ..Params::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&[1.0, 1.5, 1.4], &[]), 1);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens_and_seed_repeats() {
        let params = Params {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            temperature: 1.0,
            ..Params::default()
        };
        let logits = [5.0, 4.9, 0.0, -3.0];
        let draw = |seed| {
            let mut s = Sampler::new(Params {
                seed,
                ..params.clone()
            });
            (0..200).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert!(a.iter().all(|&t| t == 0 || t == 1));
        assert!(a.contains(&0) && a.contains(&1));
        assert_eq!(a, draw(7));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut s = Sampler::new(Params {
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            temperature: 1.0,
            ..Params::default()
        });
        for _ in 0..100 {
            assert_eq!(s.sample(&[10.0, 0.0, 0.0, 0.0], &[]), 0);
        }
    }
}
