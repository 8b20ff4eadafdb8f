//! Download progress on stderr: one indicatif bar per file (bytes, speed, ETA) when stderr is
//! a terminal, plain lines otherwise (logs, CI, pipes).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::{FileProgress, Progress};

/// The CLI's [`Progress`]. Files download one after another, so each gets its own bar
/// below the previous (finished) one.
pub struct Reporter {
    bars: bool,
}

impl Reporter {
    /// Bars if stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self {
            bars: std::io::stderr().is_terminal(),
        }
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Reporter {
    fn note(&self, message: &str) {
        eprintln!("mlcli: {message}");
    }

    fn file(&self, name: &str, total: Option<u64>, start: u64) -> Box<dyn FileProgress + '_> {
        match self.bars {
            true => Box::new(Bar(bar(name, total, start))),
            false => {
                let size =
                    total.map_or_else(|| "size unknown".into(), |t| HumanBytes(t).to_string());
                let resume = if start > 0 {
                    format!(", resuming at {}", HumanBytes(start))
                } else {
                    String::new()
                };
                eprintln!("mlcli: downloading {name} ({size}{resume})");
                Box::new(Lines {
                    name: name.to_string(),
                    total,
                    start,
                    position: start,
                    quarter: quarter(start, total),
                    began: Instant::now(),
                })
            }
        }
    }
}

fn bar(name: &str, total: Option<u64>, start: u64) -> ProgressBar {
    let (pb, template) = match total {
        Some(t) => (
            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(name.to_string());
    pb.set_position(start);
    pb.reset_eta();
    pb
}

struct Bar(ProgressBar);

impl FileProgress for Bar {
    fn set(&mut self, position: u64) {
        self.0.set_position(position);
    }

    fn finish(&mut self) {
        self.0.finish();
    }
}

struct Lines {
    name: String,
    total: Option<u64>,
    start: u64,
    position: u64,
    quarter: u64,
    began: Instant,
}

fn quarter(position: u64, total: Option<u64>) -> u64 {
    total.filter(|t| *t > 0).map_or(0, |t| position * 4 / t)
}

impl FileProgress for Lines {
    fn set(&mut self, position: u64) {
        self.position = position;
        let q = quarter(position, self.total);
        if q > self.quarter && q < 4 {
            self.quarter = q;
            eprintln!("mlcli: {}: {}%", self.name, q * 25);
        }
    }

    fn finish(&mut self) {
        let secs = self.began.elapsed().as_secs_f64().max(1e-3);
        let fetched = self.position.saturating_sub(self.start);
        eprintln!(
            "mlcli: {}: done, {} in {:.1}s ({}/s), verified",
            self.name,
            HumanBytes(fetched),
            secs,
            HumanBytes((fetched as f64 / secs) as u64)
        );
    }
}
