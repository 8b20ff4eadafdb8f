//! Token sampling: repeat penalty → DRY, then greedy (temperature 0) or top-k → top-p →
//! min-p → temperature → a seeded draw, in llama.cpp's order.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dry;

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
    /// How many recent tokens the penalty looks at (-1 = the whole context, 0 = none).
    pub repeat_last_n: i32,
    /// Subtracted once from the logit of every token in the penalty window (OpenAI's
    /// `presence_penalty`, llama.cpp's `--presence-penalty`; 0 = off).
    #[serde(default)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the penalty window (OpenAI's
    /// `frequency_penalty`; 0 = off).
    #[serde(default)]
    pub frequency_penalty: f32,
    /// Seed of the draw.
    pub seed: u64,
    /// DRY, the penalty on extending repeated sequences (off by default).
    #[serde(default)]
    pub dry: dry::Params,
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
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
            dry: dry::Params::default(),
        }
    }
}

/// A sampling setting outside the range it is defined on.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{name} = {value}: expected {expected}")]
pub struct OutOfRange {
    /// The setting's name (as `/set` and the catalogue spell it).
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// What the setting accepts.
    pub expected: &'static str,
}

impl Params {
    /// Checks every setting against the range it is defined on; nothing is clamped.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        let check = |ok: bool, name, value: &dyn std::fmt::Display, expected| {
            if ok {
                Ok(())
            } else {
                Err(OutOfRange {
                    name,
                    value: value.to_string(),
                    expected,
                })
            }
        };
        let t = self.temperature;
        check(t.is_finite() && t >= 0.0, "temp", &t, "0 (greedy) or more")?;
        let p = self.top_p;
        check((0.0..=1.0).contains(&p), "top_p", &p, "0 to 1 (1 = off)")?;
        let m = self.min_p;
        check((0.0..=1.0).contains(&m), "min_p", &m, "0 to 1 (0 = off)")?;
        let r = self.repeat_penalty;
        let expected = "a positive number (1 = off)";
        check(r.is_finite() && r > 0.0, "repeat_penalty", &r, expected)?;
        let n = self.repeat_last_n;
        let expected = "-1 (the whole context), 0 (off) or a count of tokens";
        check(n >= -1, "repeat_last_n", &n, expected)?;
        let expected = "-2 to 2 (0 = off)";
        let pp = self.presence_penalty;
        check(
            (-2.0..=2.0).contains(&pp),
            "presence_penalty",
            &pp,
            expected,
        )?;
        let fp = self.frequency_penalty;
        check(
            (-2.0..=2.0).contains(&fp),
            "frequency_penalty",
            &fp,
            expected,
        )?;
        self.validate_dry()
    }

    fn validate_dry(&self) -> Result<(), OutOfRange> {
        let d = &self.dry;
        let bad = |name, value: &dyn std::fmt::Display, expected| OutOfRange {
            name,
            value: value.to_string(),
            expected,
        };
        if !(d.multiplier.is_finite() && d.multiplier >= 0.0) {
            return Err(bad("dry_multiplier", &d.multiplier, "0 (off) or more"));
        }
        if !(d.base.is_finite() && d.base >= 1.0) {
            return Err(bad(
                "dry_base",
                &d.base,
                "1 or more (the penalty is multiplier * base^(repeat - allowed))",
            ));
        }
        if d.penalty_last_n < -1 {
            return Err(bad(
                "dry_penalty_last_n",
                &d.penalty_last_n,
                "-1 (the whole context), 0 (off) or a count of tokens",
            ));
        }
        for b in &d.sequence_breakers {
            if b.is_empty() || b.len() > dry::MAX_BREAKER_BYTES {
                return Err(bad(
                    "dry_sequence_breakers",
                    &format!("{b:?}"),
                    "non-empty strings of at most 40 bytes",
                ));
            }
        }
        Ok(())
    }
}

impl Params {
    /// Whether the repeat, presence or frequency penalty changes any logit.
    fn penalizes(&self) -> bool {
        self.repeat_last_n != 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// A sampler with its own random state.
pub struct Sampler {
    params: Params,
    rng: StdRng,
    /// DRY's sequence breakers in the model's vocabulary.
    breakers: Arc<dry::Breakers>,
    /// The context size (what -1 means for the penalty windows).
    ctx_size: usize,
}

impl Sampler {
    /// A sampler seeded from `params.seed`, for a context of `ctx_size` tokens; `breakers` are
    /// `params.dry.sequence_breakers` in the model's vocabulary.
    pub fn new(params: Params, breakers: Arc<dry::Breakers>, ctx_size: usize) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            breakers,
            ctx_size,
        }
    }

    /// Whether this sampler always picks the largest logit (temperature 0, no repeat
    /// penalty, no DRY), so a backend may pick it without handing over the logits.
    pub fn is_greedy(&self) -> bool {
        let p = &self.params;
        p.temperature <= 0.0 && !p.penalizes() && !p.dry.is_on()
    }

    /// Picks the next token from `logits`; `recent` are the tokens seen so far, prompt
    /// included (for the repeat penalty and DRY).
    pub fn sample(&mut self, logits: &[f32], recent: &[u32]) -> u32 {
        let p = &self.params;
        let dry = dry::penalties(&p.dry, &self.breakers, recent, self.ctx_size);
        // The logits are copied only when a penalty changes some of them.
        let adjusted: Option<Vec<f32>> = (p.penalizes() || !dry.is_empty()).then(|| {
            let mut adjusted = logits.to_vec();
            if p.penalizes() {
                // llama.cpp's penalties sampler: one window for all three.
                let window = usize::try_from(p.repeat_last_n).unwrap_or(self.ctx_size);
                let start = recent.len().saturating_sub(window);
                let mut counts = std::collections::HashMap::<u32, usize>::new();
                for &t in &recent[start..] {
                    *counts.entry(t).or_default() += 1;
                }
                for (t, n) in counts {
                    if let Some(l) = adjusted.get_mut(t as usize) {
                        *l = if *l > 0.0 {
                            *l / p.repeat_penalty
                        } else {
                            *l * p.repeat_penalty
                        };
                        *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
                    }
                }
            }
            for (t, penalty) in dry {
                if let Some(l) = adjusted.get_mut(t as usize) {
                    *l -= penalty;
                }
            }
            adjusted
        });
        let logits = adjusted.as_deref().unwrap_or(logits);
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut cand = super::top_k::top_k(logits, p.top_k);
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

/// The first token with the largest logit (NaN never wins).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            best = (i as u32, l);
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

    fn sampler(params: Params) -> Sampler {
        Sampler::new(params, Arc::default(), 4096)
    }

    fn greedy() -> Params {
        Params {
            temperature: 0.0,
            ..Params::default()
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = sampler(greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0], &[]), 1);
    }

    #[test]
    fn presence_and_frequency_penalties_subtract_per_token_and_per_occurrence() {
        let params = Params {
            temperature: 0.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Params::default()
        };
        let mut s = Sampler::new(params, Arc::default(), 64);
        // Token 0 leads by 1.1; seen three times it loses 0.5 + 3 * 0.25 = 1.25.
        assert_eq!(s.sample(&[2.1, 1.0, 0.0], &[]), 0);
        assert_eq!(s.sample(&[2.1, 1.0, 0.0], &[0, 0, 0]), 1);
        // Seen once it loses 0.75 and still leads.
        assert_eq!(s.sample(&[2.1, 1.0, 0.0], &[0]), 0);
        assert!(!s.is_greedy());
        let bad = Params {
            presence_penalty: 2.5,
            ..Params::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "presence_penalty");
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let mut s = sampler(Params {
            repeat_penalty: 2.0,
            ..greedy()
        });
        assert_eq!(s.sample(&[0.1, 3.0, 2.0, -1.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_always_picks_the_best() {
        let mut s = sampler(Params {
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
            let mut s = sampler(Params {
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
        let mut s = sampler(Params {
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

    #[test]
    fn dry_turns_a_greedy_choice_away_from_a_repeat() {
        let dry = dry::Params {
            multiplier: 2.0,
            ..dry::Params::default()
        };
        let mut s = sampler(Params { dry, ..greedy() });
        assert!(!s.is_greedy(), "DRY needs the logits");
        // "1 2 3 0 | 1 2": 3 would repeat three tokens and loses 2.0 of its lead.
        let logits = [0.0, 0.0, 0.0, 3.0, 2.0];
        assert_eq!(s.sample(&logits, &[1, 2, 3, 0, 1, 2]), 4);
        assert_eq!(s.sample(&logits, &[1, 2, 3, 0, 4, 2]), 3);
    }

    #[test]
    fn repeat_last_n_minus_one_is_the_whole_context() {
        let mut s = sampler(Params {
            repeat_penalty: 2.0,
            repeat_last_n: -1,
            ..greedy()
        });
        let recent: Vec<u32> = std::iter::once(1).chain([0; 100]).collect();
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &recent), 2);
    }

    #[test]
    fn settings_outside_their_range_are_refused_by_name() {
        let refused = |p: Params| p.validate().map_err(|e| e.name);
        assert_eq!(refused(Params::default()), Ok(()));
        let bad_dry = |dry| {
            refused(Params {
                dry,
                ..Params::default()
            })
        };
        assert_eq!(
            bad_dry(dry::Params {
                base: -1.0,
                ..dry::Params::default()
            }),
            Err("dry_base")
        );
        assert_eq!(
            bad_dry(dry::Params {
                multiplier: -0.5,
                ..dry::Params::default()
            }),
            Err("dry_multiplier")
        );
        assert_eq!(
            bad_dry(dry::Params {
                penalty_last_n: -2,
                ..dry::Params::default()
            }),
            Err("dry_penalty_last_n")
        );
        assert_eq!(
            bad_dry(dry::Params {
                sequence_breakers: vec![String::new()],
                ..dry::Params::default()
            }),
            Err("dry_sequence_breakers")
        );
        assert_eq!(
            refused(Params {
                top_p: 1.5,
                ..Params::default()
            }),
            Err("top_p")
        );
        assert_eq!(
            refused(Params {
                temperature: f32::NAN,
                ..Params::default()
            }),
            Err("temp")
        );
        assert_eq!(
            refused(Params {
                repeat_last_n: -3,
                ..Params::default()
            }),
            Err("repeat_last_n")
        );
        let e = Params {
            dry: dry::Params {
                base: -1.0,
                ..dry::Params::default()
            },
            ..Params::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("dry_base = -1: expected 1 or more"),
            "{e}"
        );
    }
}
