//! Stop strings over streamed text: text that could still become a stop string is held back,
//! and nothing after a stop string is ever emitted.

/// Matches stop strings in streamed text.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What a piece of text produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    /// Text that is safe to emit now.
    pub emit: String,
    /// True when a stop string was reached (the stop string itself is not emitted).
    pub stopped: bool,
    /// Which stop string was reached (the earliest in the text).
    pub matched: Option<String>,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds generated text.
    pub fn push(&mut self, text: &str) -> Step {
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| Some((self.pending.find(s.as_str())?, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first {
            let matched = Some(stop.clone());
            let emit = self.pending[..at].to_string();
            self.pending.clear();
            return Step {
                emit,
                stopped: true,
                matched,
            };
        }
        let hold = held_len(&self.pending, &self.stops);
        let cut = self.pending.len() - hold;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        Step {
            emit,
            stopped: false,
            matched: None,
        }
    }

    /// Whatever is still held back (at the end of generation).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest end of `text` that is a proper start of one of `needles`: text that
/// may still become one of them as more arrives, so it is held back.
pub fn held_len(text: &str, needles: &[impl AsRef<str>]) -> usize {
    (1..=text.len())
        .rev()
        .filter(|&n| text.is_char_boundary(text.len() - n))
        .find(|&n| {
            needles.iter().any(|s| {
                let s = s.as_ref();
                s.len() > n && s.starts_with(&text[text.len() - n..])
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_split_across_pieces_is_caught_and_not_emitted() {
        let mut m = StopMatcher::new(&["\nUser:".to_string()]);
        let mut out = String::new();
        let mut stopped = false;
        for piece in ["Hello", " there", "\nUs", "er:", " more"] {
            let s = m.push(piece);
            out.push_str(&s.emit);
            if s.stopped {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(out, "Hello there");
    }

    #[test]
    fn held_text_is_released_when_it_diverges_or_at_the_end() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("abST").emit, "ab");
        assert_eq!(m.push("x").emit, "STx");
        assert_eq!(m.push("ST").emit, "");
        assert_eq!(m.flush(), "ST");
    }

    #[test]
    fn no_stops_emits_everything_immediately() {
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("héllo").emit, "héllo");
    }
}
