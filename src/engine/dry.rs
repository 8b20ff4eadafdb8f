//! DRY ("don't repeat yourself") sampling, with llama.cpp's parameters and algorithm
//! (`llama_sampler_dry` in src/llama-sampling.cpp, after koboldcpp): a token that would extend
//! a sequence already seen in the context by more than `allowed_length` tokens loses
//! `multiplier * base^(length - allowed_length)` from its logit. Sequence breakers (newline,
//! colon, quote, asterisk by default) cut the sequences that are compared.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::formats::tokenizer::{EncodeOptions, Tokenizer};
use crate::Result;

/// llama.cpp's default sequence breakers.
pub const DEFAULT_BREAKERS: [&str; 4] = ["\n", ":", "\"", "*"];

/// The longest breaker llama.cpp accepts, in bytes (it truncates longer ones; we refuse them).
pub const MAX_BREAKER_BYTES: usize = 40;

/// Tokens kept of a breaker's tail (llama.cpp's bound on the restart-sequence scan).
const MAX_TAIL_TOKENS: usize = 20;

/// `ln(f32::MAX)`: exponents are clamped so that `base^exponent` stays finite.
const FLOAT_MAX_LOG: f32 = 88.722_84;

/// DRY settings; the defaults are llama.cpp's (off, as the multiplier is 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    /// Strength of the penalty; 0 turns DRY off.
    pub multiplier: f32,
    /// How fast the penalty grows with the length of the repeat (at least 1).
    pub base: f32,
    /// Repeats up to this many tokens long go unpunished.
    pub allowed_length: usize,
    /// How many recent tokens are searched for repeats: -1 the whole context, 0 none.
    pub penalty_last_n: i32,
    /// Text that ends a sequence: repeats are not followed across it.
    pub sequence_breakers: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            multiplier: 0.0,
            base: 1.75,
            allowed_length: 2,
            penalty_last_n: -1,
            sequence_breakers: DEFAULT_BREAKERS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Params {
    /// Whether DRY changes anything (llama.cpp's condition, with `base >= 1` already checked).
    pub fn is_on(&self) -> bool {
        self.multiplier != 0.0 && self.penalty_last_n != 0
    }
}

/// Sequence breakers as token sequences: every token whose text contains a breaker is a
/// breaker by itself (an empty tail); a token whose text ends with the start of a breaker is
/// the head of a sequence whose tail is the tokenized rest of the breaker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Breakers {
    tails: HashMap<u32, Vec<Vec<u32>>>,
}

impl Breakers {
    /// Breakers given directly as token sequences (llama.cpp's `llama_sampler_init_dry_testing`).
    pub fn from_token_sequences(seqs: &[Vec<u32>]) -> Self {
        let mut b = Self::default();
        for s in seqs {
            if let Some((&head, tail)) = s.split_first() {
                b.add(head, tail.to_vec());
            }
        }
        b
    }

    /// The breakers' token sequences in `tokenizer`'s vocabulary, found as llama.cpp's
    /// `get_overlapping_token_sequences` finds them: each token's text (special tokens as their
    /// text) is searched for the whole breaker, else for a suffix that starts the breaker.
    /// A breaker split inside a UTF-8 character has no tail we could tokenize; such splits are
    /// skipped.
    pub fn for_vocab(tokenizer: &Tokenizer, breakers: &[String]) -> Result<Self> {
        let mut b = Self::default();
        if breakers.is_empty() {
            return Ok(b);
        }
        for id in 0..tokenizer.vocab_size() as u32 {
            let word = tokenizer.token_bytes(id);
            for breaker in breakers {
                let needle = breaker.as_bytes();
                if needle.is_empty() {
                    continue;
                }
                if contains(&word, needle) {
                    b.add(id, Vec::new());
                    continue;
                }
                for start in 0..word.len() {
                    let overlap = word.len() - start;
                    if overlap >= needle.len() || word[start..] != needle[..overlap] {
                        continue;
                    }
                    let Some(rest) = breaker.get(overlap..) else {
                        continue;
                    };
                    let mut tail = tokenizer.encode(
                        rest,
                        EncodeOptions {
                            add_bos: false,
                            parse_special: false,
                        },
                    )?;
                    tail.truncate(MAX_TAIL_TOKENS);
                    b.add(id, tail);
                }
            }
        }
        Ok(b)
    }

    fn add(&mut self, head: u32, tail: Vec<u32>) {
        let tails = self.tails.entry(head).or_default();
        if !tails.contains(&tail) {
            tails.push(tail);
        }
    }

    /// The tails of the breaker sequences that start with `head` (an empty tail: `head` is a
    /// breaker on its own).
    pub fn tails(&self, head: u32) -> &[Vec<u32>] {
        self.tails.get(&head).map_or(&[], Vec::as_slice)
    }

    /// How many tokens start a breaker sequence.
    pub fn heads(&self) -> usize {
        self.tails.len()
    }

    /// Whether `token` is a breaker on its own (it is then never penalized).
    pub fn is_single(&self, token: u32) -> bool {
        self.tails
            .get(&token)
            .is_some_and(|t| t.iter().any(Vec::is_empty))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The penalty DRY subtracts from each token's logit after `history` (oldest first, the prompt
/// included), as `(token, penalty)` pairs in token order. `ctx_size` bounds the search like
/// llama.cpp's context size.
pub fn penalties(
    params: &Params,
    breakers: &Breakers,
    history: &[u32],
    ctx_size: usize,
) -> Vec<(u32, f32)> {
    if !params.is_on() {
        return Vec::new();
    }
    let last_n = match usize::try_from(params.penalty_last_n) {
        Ok(n) => n.min(ctx_size),
        Err(_) => ctx_size,
    };
    let n = history.len().min(last_n);
    if n <= params.allowed_length {
        return Vec::new();
    }
    // The window, newest first: `rev[i]` is llama.cpp's `last_tokens.rat(i)`.
    let rev: Vec<u32> = history[history.len() - n..].iter().rev().copied().collect();

    // 1. The most recent breaker limits how far back a repeat may reach.
    let limit = repeat_limit(breakers, &rev);
    if limit < params.allowed_length {
        return Vec::new();
    }

    // 2. For each earlier position k, how many tokens ending there equal the tokens ending
    //    now: the Z-function of the reversed window, capped at the limit.
    let z = z_function(&rev);

    // 3. The token that followed each long enough repeat would extend it: keep, per token,
    //    the longest repeat it would extend.
    let mut longest: HashMap<u32, usize> = HashMap::new();
    for k in 1..n {
        let len = z[k].min(limit);
        if len >= params.allowed_length {
            let next = rev[k - 1];
            let e = longest.entry(next).or_insert(len);
            *e = (*e).max(len);
        }
    }

    // 4. The penalty, with the exponent clamped so that it stays finite.
    let max_exponent = if params.base > 1.000_001 {
        (FLOAT_MAX_LOG / params.base.ln()) as usize
    } else {
        0
    };
    let mut out: Vec<(u32, f32)> = longest
        .into_iter()
        .filter(|&(token, _)| !breakers.is_single(token))
        .map(|(token, len)| {
            let mut exponent = len - params.allowed_length;
            if max_exponent > 0 {
                exponent = exponent.min(max_exponent);
            }
            // As llama.cpp: `float * pow(float, int)` is computed in double.
            let penalty = params.multiplier as f64 * (params.base as f64).powi(exponent as i32);
            (token, penalty as f32)
        })
        .collect();
    out.sort_unstable_by_key(|&(t, _)| t);
    out
}

/// How many of the newest tokens (`rev`, newest first) lie after the most recent complete
/// breaker sequence; the whole window when there is none.
fn repeat_limit(breakers: &Breakers, rev: &[u32]) -> usize {
    for (i, token) in rev.iter().enumerate() {
        let Some(tails) = breakers.tails.get(token) else {
            continue;
        };
        // A tail follows its head, so it lies towards the newer end: rev[i-1], rev[i-2], ...
        let longest = tails
            .iter()
            .filter(|t| t.len() <= i && t.iter().enumerate().all(|(o, &x)| rev[i - o - 1] == x))
            .map(Vec::len)
            .max();
        if let Some(len) = longest {
            return i - len;
        }
    }
    rev.len()
}

/// `z[k]` = the length of the longest common prefix of `s` and `s[k..]` (`z[0]` = 0), in
/// linear time.
fn z_function(s: &[u32]) -> Vec<usize> {
    let n = s.len();
    let mut z = vec![0; n];
    let (mut l, mut r) = (0, 0); // s[l..r] matches a prefix of s
    for k in 1..n {
        if k < r {
            z[k] = (r - k).min(z[k - l]);
        }
        while k + z[k] < n && s[z[k]] == s[k + z[k]] {
            z[k] += 1;
        }
        if k + z[k] > r {
            (l, r) = (k, k + z[k]);
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(multiplier: f32) -> Params {
        Params {
            multiplier,
            ..Params::default()
        }
    }

    /// llama.cpp's formula, written out: multiplier * base^(len - allowed).
    fn formula(p: &Params, len: usize) -> f32 {
        p.multiplier * p.base.powi((len - p.allowed_length) as i32)
    }

    #[test]
    fn z_function_matches_the_naive_definition() {
        let s = [1, 2, 3, 3, 2, 3, 9, 1, 2, 3, 1, 2, 3, 1];
        let z = z_function(&s);
        for k in 1..s.len() {
            let naive = (0..s.len() - k).take_while(|&i| s[i] == s[k + i]).count();
            assert_eq!(z[k], naive, "k = {k}");
        }
    }

    #[test]
    fn llama_cpp_comment_example_penalizes_the_tokens_that_would_extend_repeats() {
        // llama.cpp's example: "a b c c b c y a b c" → repeat counts 0 0 3 1 0 2 0 0 0 0;
        // c extends "a b c" (3), y extends "b c" (2); b extends only "c" (1 < 2).
        let (a, b, c, y) = (1, 2, 3, 4);
        let p = on(0.8);
        let got = penalties(
            &p,
            &Breakers::default(),
            &[a, b, c, c, b, c, y, a, b, c],
            4096,
        );
        assert_eq!(got, vec![(c, formula(&p, 3)), (y, formula(&p, 2))]);
        assert_eq!(got[0].1, 0.8 * 1.75);
        assert_eq!(got[1].1, 0.8);
    }

    #[test]
    fn penalty_grows_with_the_length_of_the_repeat() {
        // "1 2 3 4 5 6 | 1 2 3 4 5": emitting 6 would repeat six tokens.
        let p = Params {
            multiplier: 1.5,
            base: 2.0,
            allowed_length: 3,
            ..Params::default()
        };
        let history = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5];
        assert_eq!(
            penalties(&p, &Breakers::default(), &history, 4096),
            vec![(6, 1.5 * 4.0)]
        );
    }

    #[test]
    fn repeats_up_to_the_allowed_length_go_unpunished() {
        let p = on(1.0);
        // "7 8 9 | 7": emitting 8 repeats "7 8" — two tokens, allowed.
        assert!(penalties(&p, &Breakers::default(), &[7, 8, 9, 7], 4096).is_empty());
        // "7 8 9 | 7 8": emitting 9 repeats three.
        assert_eq!(
            penalties(&p, &Breakers::default(), &[7, 8, 9, 7, 8], 4096),
            vec![(9, 1.0)]
        );
    }

    #[test]
    fn a_breaker_cuts_the_repeat_and_is_never_penalized_itself() {
        let p = on(1.0);
        let nl = 100;
        let breakers = Breakers::from_token_sequences(&[vec![nl]]);
        // "1 2 3 4 \n 5 | 1 2 3 4 \n 5": the repeat after the newline is one token long.
        let history = [1, 2, 3, 4, nl, 5, 1, 2, 3, 4, nl, 5];
        assert!(penalties(&p, &breakers, &history, 4096).is_empty());
        // A repeat before the newline is penalized as usual: 4 would extend "1 2 3" ...
        let history = [1, 2, 3, 4, nl, 9, 1, 2, 3];
        assert_eq!(
            penalties(&p, &breakers, &history, 4096),
            vec![(4, formula(&p, 3))]
        );
        // ... but the newline, which would extend "1 2 3 4", is a breaker: never penalized.
        let history = [1, 2, 3, 4, nl, 9, 1, 2, 3, 4];
        assert!(penalties(&p, &breakers, &history, 4096).is_empty());
    }

    #[test]
    fn multi_token_breakers_match_head_then_tail() {
        let p = on(1.0);
        // The breaker is the two tokens 50 51; 50 alone is no breaker.
        let breakers = Breakers::from_token_sequences(&[vec![50, 51]]);
        let history = [1, 2, 3, 4, 50, 9, 1, 2, 3];
        assert_eq!(
            penalties(&p, &breakers, &history, 4096),
            vec![(4, formula(&p, 3))]
        );
        // After the last "50 51" only "1" follows: shorter than the allowed length.
        let history = [1, 2, 3, 50, 51, 1, 2, 3, 50, 51, 1];
        assert!(penalties(&p, &breakers, &history, 4096).is_empty());
        // "1 2" follows: the seven-token repeat counts as two, the breaker's limit.
        let history = [1, 2, 3, 50, 51, 1, 2, 3, 50, 51, 1, 2];
        assert_eq!(penalties(&p, &breakers, &history, 4096), vec![(3, 1.0)]);
    }

    #[test]
    fn penalty_last_n_limits_the_search() {
        let history = [1, 2, 3, 4, 9, 9, 9, 9, 1, 2, 3];
        let p = Params {
            penalty_last_n: 6,
            ..on(1.0)
        };
        assert!(penalties(&p, &Breakers::default(), &history, 4096).is_empty());
        let p = Params {
            penalty_last_n: -1,
            ..on(1.0)
        };
        assert_eq!(
            penalties(&p, &Breakers::default(), &history, 4096),
            vec![(4, formula(&p, 3))]
        );
        // -1 is the context size.
        assert!(penalties(&p, &Breakers::default(), &history, 6).is_empty());
    }

    #[test]
    fn off_unless_multiplier_and_window_are_set() {
        let history = [1, 2, 3, 1, 2];
        assert!(penalties(&on(0.0), &Breakers::default(), &history, 4096).is_empty());
        let p = Params {
            penalty_last_n: 0,
            ..on(1.0)
        };
        assert!(penalties(&p, &Breakers::default(), &history, 4096).is_empty());
    }

    #[test]
    fn huge_exponents_are_clamped_to_a_finite_penalty() {
        let p = Params {
            base: 3.0,
            allowed_length: 0,
            ..on(1.0)
        };
        let history: Vec<u32> = (0..200).chain(0..199).collect();
        let got = penalties(&p, &Breakers::default(), &history, 4096);
        let max_exp = (FLOAT_MAX_LOG / 3f32.ln()) as i32;
        let expected = 3f64.powi(max_exp) as f32;
        assert!(got.iter().all(|&(_, v)| v.is_finite()));
        assert_eq!(
            got.iter().find(|&&(t, _)| t == 199).map(|x| x.1),
            Some(expected)
        );
    }
}
