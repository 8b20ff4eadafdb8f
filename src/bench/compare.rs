//! Comparing two bench reports: rows are matched by what was measured (model, test, threads,
//! device, type, context), each pair gets the ratio of tokens per second (new / old), and a
//! regression threshold turns slowdowns beyond it into a failure that CI can gate on.

use std::path::Path;

use super::report::{Line, Report, Row};
use crate::{Error, Result};

/// What identifies a row across reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Model display name.
    pub model: String,
    /// Bytes of tensor data (tells quantizations of one model apart).
    pub model_size: u64,
    /// The test, e.g. `pp512`.
    pub test: String,
    /// Threads.
    pub n_threads: usize,
    /// Device.
    pub device: String,
    /// Activation type.
    pub dtype: String,
    /// Context size.
    pub n_ctx: usize,
}

impl Key {
    /// The key of a row.
    pub fn of(r: &Row) -> Self {
        Self {
            model: r.model.clone(),
            model_size: r.model_size,
            test: r.test.clone(),
            n_threads: r.n_threads,
            device: r.device.clone(),
            dtype: r.dtype.clone(),
            n_ctx: r.n_ctx,
        }
    }
}

/// A row present in both reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// What was measured.
    pub key: Key,
    /// Old mean tokens per second and its standard deviation.
    pub old: (f64, f64),
    /// New mean tokens per second and its standard deviation.
    pub new: (f64, f64),
}

impl Pair {
    /// New over old tokens per second (above 1 is faster).
    pub fn ratio(&self) -> f64 {
        if self.old.0 > 0.0 {
            self.new.0 / self.old.0
        } else {
            f64::INFINITY
        }
    }
}

/// The rows of two reports, matched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Rows in both, in the new report's order.
    pub pairs: Vec<Pair>,
    /// Rows only in the old report.
    pub only_old: Vec<Key>,
    /// Rows only in the new report.
    pub only_new: Vec<Key>,
}

/// Matches the rows of `old` and `new`.
pub fn compare(old: &[Row], new: &[Row]) -> Comparison {
    let mut c = Comparison::default();
    for n in new {
        let key = Key::of(n);
        match old.iter().find(|o| Key::of(o) == key) {
            Some(o) => c.pairs.push(Pair {
                key,
                old: (o.avg_ts, o.stddev_ts),
                new: (n.avg_ts, n.stddev_ts),
            }),
            None => c.only_new.push(key),
        }
    }
    for o in old {
        let key = Key::of(o);
        if !new.iter().any(|n| Key::of(n) == key) {
            c.only_old.push(key);
        }
    }
    c
}

impl Comparison {
    /// Pairs that got slower by more than `max_regress` (a fraction: 0.05 = 5%).
    pub fn regressions(&self, max_regress: f64) -> Vec<&Pair> {
        self.pairs
            .iter()
            .filter(|p| p.ratio() < 1.0 - max_regress)
            .collect()
    }

    /// A Markdown table of the pairs with their ratios, and the unmatched rows.
    pub fn to_markdown(&self, old_label: &str, new_label: &str) -> String {
        let mut s = format!(
            "| model | test | threads | device | {old_label} t/s | {new_label} t/s | ratio |\n| --- | ---: | ---: | --- | ---: | ---: | ---: |\n"
        );
        for p in &self.pairs {
            s += &format!(
                "| {} | {} | {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.3} |\n",
                p.key.model,
                p.key.test,
                p.key.n_threads,
                p.key.device,
                p.old.0,
                p.old.1,
                p.new.0,
                p.new.1,
                p.ratio()
            );
        }
        for (label, keys) in [(old_label, &self.only_old), (new_label, &self.only_new)] {
            for k in keys {
                s += &format!(
                    "\nonly in {label}: {} {} ({} threads, {})",
                    k.model, k.test, k.n_threads, k.device
                );
            }
        }
        s
    }
}

/// Parses `5%`, `5` (both five percent) or `0.5%` into a fraction.
pub fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage; expected e.g. 5% or 2.5"))?;
    if !(0.0..100.0).contains(&v) {
        return Err(format!("'{s}': expected a percentage from 0 to below 100"));
    }
    Ok(v / 100.0)
}

/// Reads the rows of a report written with `-o json` or `-o jsonl`.
pub fn load(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|reason| {
        Error::InvalidArgument(format!(
            "{}: not a bench report (-o json or -o jsonl): {reason}",
            path.display()
        ))
    })
}

/// Parses a JSON report or JSON Lines.
pub fn parse(text: &str) -> std::result::Result<Vec<Row>, String> {
    if let Ok(report) = serde_json::from_str::<Report>(text) {
        return Ok(report.results);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err("empty".into());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<Line>(l)
                .map(|line| line.row)
                .map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::row;

    #[test]
    fn ratios_are_new_over_old_and_unmatched_rows_are_listed() {
        let old = [
            row("m", "pp512", 100.0),
            row("m", "tg128", 50.0),
            row("m", "pp64", 1.0),
        ];
        let new = [
            row("m", "tg128", 40.0),
            row("m", "pp512", 110.0),
            row("x", "pp512", 1.0),
        ];
        let c = compare(&old, &new);
        assert_eq!(c.pairs.len(), 2);
        assert_eq!(c.pairs[0].key.test, "tg128");
        assert!((c.pairs[0].ratio() - 0.8).abs() < 1e-12);
        assert!((c.pairs[1].ratio() - 1.1).abs() < 1e-12);
        assert_eq!(c.only_old.len(), 1);
        assert_eq!(c.only_new[0].model, "x");
        let md = c.to_markdown("A", "B");
        assert!(
            md.contains("| m | tg128 | 2 | cpu | 50.00 ± 0.00 | 40.00 ± 0.00 | 0.800 |"),
            "{md}"
        );
        assert!(md.contains("only in A: m pp64"), "{md}");
    }

    #[test]
    fn regressions_are_slowdowns_beyond_the_threshold() {
        let old = [row("m", "pp512", 100.0), row("m", "tg128", 100.0)];
        let new = [row("m", "pp512", 96.0), row("m", "tg128", 94.0)];
        let c = compare(&old, &new);
        let r = c.regressions(0.05);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key.test, "tg128");
        assert!(c.regressions(0.10).is_empty());
    }

    #[test]
    fn percentages_parse_with_or_without_the_sign() {
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("2.5"), Ok(0.025));
        assert!(parse_percent("abc").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("100%").is_err());
    }

    #[test]
    fn reports_and_json_lines_are_both_read() {
        assert!(parse("").is_err());
        assert!(parse("{\"schema\": 1}").is_err());
        assert!(parse("not json").unwrap_err().contains("line 1"));
    }
}
