//! Parameter sweeps: llama-bench's list syntax (`128,256`, `128-1024*2`, `0-8+2`), the tests
//! (`pp`, `tg`, `pg`) and their expansion into one case per combination, in llama-bench's order.

use std::fmt;

/// A malformed list or test specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} '{value}': {reason}")]
pub struct Error {
    /// The flag whose value is wrong.
    pub flag: String,
    /// The value given.
    pub value: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

fn err(flag: &str, value: &str, reason: impl Into<String>) -> Error {
    Error {
        flag: flag.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Parses one list value: comma-separated items, each `N`, `FIRST-LAST` (step 1),
/// `FIRST-LAST+STEP` or `FIRST-LAST*FACTOR`; ranges include LAST when a step lands on it.
pub fn parse_list(flag: &str, value: &str) -> Result<Vec<usize>, Error> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let num = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                err(
                    flag,
                    value,
                    format!("'{s}' is not a non-negative integer; expected N, FIRST-LAST, FIRST-LAST+STEP or FIRST-LAST*FACTOR"),
                )
            })
        };
        let Some((first, rest)) = item.split_once('-') else {
            out.push(num(item)?);
            continue;
        };
        let first = num(first)?;
        let (last, step) = match rest.find(['+', '*']) {
            Some(i) => (
                num(&rest[..i])?,
                Some((&rest[i..i + 1], num(&rest[i + 1..])?)),
            ),
            None => (num(rest)?, None),
        };
        if last < first {
            return Err(err(
                flag,
                value,
                format!("range {first}-{last} runs backwards"),
            ));
        }
        let next: Box<dyn Fn(usize) -> usize> = match step {
            None => Box::new(|i| i + 1),
            Some(("+", s)) if s > 0 => Box::new(move |i| i + s),
            Some(("*", f)) if f > 1 && first > 0 => Box::new(move |i| i * f),
            Some((op, s)) => {
                return Err(err(
                    flag,
                    value,
                    format!("step {op}{s} from {first} never advances"),
                ))
            }
        };
        let mut i = first;
        while i <= last {
            out.push(i);
            i = next(i);
        }
    }
    Ok(out)
}

/// Parses every occurrence of a list flag and concatenates them.
pub fn parse_lists(flag: &str, values: &[String]) -> Result<Vec<usize>, Error> {
    let mut out = Vec::new();
    for v in values {
        out.extend(parse_list(flag, v)?);
    }
    Ok(out)
}

/// Parses a `--pg P,N` value.
pub fn parse_pg(value: &str) -> Result<(usize, usize), Error> {
    let bad = || {
        err(
            "--pg",
            value,
            "expected two non-negative integers PROMPT,GEN (e.g. 512,128)",
        )
    };
    let (p, n) = value.split_once(',').ok_or_else(bad)?;
    let p = p.trim().parse().map_err(|_| bad())?;
    let n = n.trim().parse().map_err(|_| bad())?;
    if p == 0 || n == 0 {
        return Err(bad());
    }
    Ok((p, n))
}

/// One benchmark test, as llama-bench names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Test {
    /// Prompt tokens processed in one go (0 for `tg`).
    pub n_prompt: usize,
    /// Tokens generated one at a time (0 for `pp`).
    pub n_gen: usize,
    /// Tokens already in the KV cache when the test starts.
    pub n_depth: usize,
}

impl Test {
    /// Tokens the test processes, which its tokens per second count.
    pub fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    /// Context positions the test needs: the depth, the prompt and the generated tokens.
    pub fn ctx_needed(&self) -> usize {
        self.n_depth + self.n_prompt + self.n_gen
    }
}

impl fmt::Display for Test {
    /// `pp512`, `tg128`, `pp512+tg128`, with ` @ d4096` when run at a depth (llama-bench's names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.n_prompt, self.n_gen) {
            (p, 0) => write!(f, "pp{p}")?,
            (0, n) => write!(f, "tg{n}")?,
            (p, n) => write!(f, "pp{p}+tg{n}")?,
        }
        if self.n_depth > 0 {
            write!(f, " @ d{}", self.n_depth)?;
        }
        Ok(())
    }
}

/// The swept values of one model's run (every list flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep {
    /// `-p`: prompt sizes (0 disables).
    pub n_prompt: Vec<usize>,
    /// `-n`: generation lengths (0 disables).
    pub n_gen: Vec<usize>,
    /// `--pg`: prompt-then-generate pairs.
    pub pg: Vec<(usize, usize)>,
    /// `-d`: depths.
    pub depth: Vec<usize>,
    /// `-c`: context sizes (0 = just what each test needs).
    pub ctx: Vec<usize>,
}

/// One row to measure: a test at a context size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The test.
    pub test: Test,
    /// The context size to run it with (0 = what the test needs).
    pub ctx: usize,
}

impl Sweep {
    /// Every combination, in llama-bench's order: for each context and depth, the `pp` tests,
    /// then `tg`, then `pg`.
    pub fn cases(&self) -> Vec<Case> {
        let mut out = Vec::new();
        for &ctx in &self.ctx {
            for &n_depth in &self.depth {
                let tests = self
                    .n_prompt
                    .iter()
                    .filter(|&&p| p > 0)
                    .map(|&p| (p, 0))
                    .chain(self.n_gen.iter().filter(|&&n| n > 0).map(|&n| (0, n)))
                    .chain(self.pg.iter().copied());
                for (n_prompt, n_gen) in tests {
                    let test = Test {
                        n_prompt,
                        n_gen,
                        n_depth,
                    };
                    out.push(Case { test, ctx });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_expand_like_llama_bench() {
        assert_eq!(parse_list("-p", "512").unwrap(), vec![512]);
        assert_eq!(parse_list("-p", "1,2,3").unwrap(), vec![1, 2, 3]);
        assert_eq!(
            parse_list("-p", "128-1024*2").unwrap(),
            vec![128, 256, 512, 1024]
        );
        assert_eq!(parse_list("-t", "1-4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(parse_list("-d", "0-10+4").unwrap(), vec![0, 4, 8]);
        assert_eq!(
            parse_list("-p", "64,128-512*2,1000").unwrap(),
            vec![64, 128, 256, 512, 1000]
        );
        let all = ["16".to_string(), "32-64*2".to_string()];
        assert_eq!(parse_lists("-n", &all).unwrap(), vec![16, 32, 64]);
    }

    #[test]
    fn malformed_lists_name_the_flag_and_the_syntax() {
        for bad in [
            "", "x", "1,,2", "8-4", "1-8*1", "0-8*2", "1-8+0", "1-8/2", "-3",
        ] {
            let e = parse_list("-p", bad).unwrap_err();
            assert_eq!(e.flag, "-p", "{bad}");
        }
        assert!(parse_list("-p", "x")
            .unwrap_err()
            .to_string()
            .contains("FIRST-LAST*FACTOR"));
    }

    #[test]
    fn pg_pairs_need_two_positive_numbers() {
        assert_eq!(parse_pg("512,128").unwrap(), (512, 128));
        for bad in ["512", "512,", "0,128", "a,b", "1,2,3"] {
            assert!(parse_pg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tests_are_named_as_llama_bench_names_them() {
        let t = |n_prompt, n_gen, n_depth| {
            Test {
                n_prompt,
                n_gen,
                n_depth,
            }
            .to_string()
        };
        assert_eq!(t(512, 0, 0), "pp512");
        assert_eq!(t(0, 128, 0), "tg128");
        assert_eq!(t(512, 128, 0), "pp512+tg128");
        assert_eq!(t(0, 128, 4096), "tg128 @ d4096");
    }

    #[test]
    fn every_combination_is_one_case_in_llama_bench_order() {
        let s = Sweep {
            n_prompt: vec![0, 64, 128],
            n_gen: vec![16],
            pg: vec![(32, 8)],
            depth: vec![0, 256],
            ctx: vec![0, 2048],
        };
        let cases = s.cases();
        assert_eq!(cases.len(), 2 * 2 * 4);
        let names: Vec<String> = cases[..8].iter().map(|c| c.test.to_string()).collect();
        assert_eq!(
            names,
            [
                "pp64",
                "pp128",
                "tg16",
                "pp32+tg8",
                "pp64 @ d256",
                "pp128 @ d256",
                "tg16 @ d256",
                "pp32+tg8 @ d256"
            ]
        );
        assert!(cases[..8].iter().all(|c| c.ctx == 0));
        assert!(cases[8..].iter().all(|c| c.ctx == 2048));
        assert_eq!(cases[7].test.ctx_needed(), 256 + 40);
    }
}
