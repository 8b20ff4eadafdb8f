//! Gemma 4's thought channel in a reply: `<|channel>thought\n…<channel|>` is the model's
//! reasoning (its template asks for it with `enable_thinking`, else closes the channel in the
//! generation prompt), the rest is the answer. The markers are tokens of their own, decoded
//! as text ([`crate::engine::GenerateParams::render_special`]); text that may be the start
//! of one is held back as the reply streams, so no marker leaks into either part. A stray
//! `<channel|>` (Gemma sometimes ends its answer with one) is dropped.

use super::harmony::Piece;

/// Opens the channel.
pub const OPEN: &str = "<|channel>";
/// Closes it.
pub const CLOSE: &str = "<channel|>";
/// The channel's name, written right after [`OPEN`].
const NAME: &str = "thought";

/// Whether a chat template writes Gemma 4's thought channel.
pub fn detect(template: &str) -> bool {
    template.contains(OPEN) && template.contains(CLOSE)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the answer.
    Answer,
    /// Just after [`OPEN`]: the channel's name and the whitespace after it are skipped.
    Name,
    /// In the reasoning.
    Thought,
}

/// A reply being split as it streams.
#[derive(Debug)]
pub struct Stream {
    buf: String,
    state: State,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            buf: String::new(),
            state: State::Answer,
        }
    }
}

impl Stream {
    /// Adds generated text; returns the pieces it completes (possibly none).
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Name => {
                    let skip = match self.buf.strip_prefix(NAME) {
                        // The whitespace after the name may still be arriving.
                        Some(rest) if rest.trim_start().is_empty() => return out,
                        Some(rest) => self.buf.len() - rest.trim_start().len(),
                        None if NAME.starts_with(self.buf.as_str()) => return out,
                        // Another channel's name: its text is reasoning all the same.
                        None => 0,
                    };
                    self.buf.drain(..skip);
                    self.state = State::Thought;
                }
                State::Answer | State::Thought => {
                    let markers: &[&str] = match self.state {
                        State::Thought => &[CLOSE],
                        _ => &[OPEN, CLOSE],
                    };
                    let found = markers
                        .iter()
                        .filter_map(|m| self.buf.find(m).map(|at| (at, *m)))
                        .min();
                    let take = found.map_or_else(
                        || self.buf.len() - held_len(&self.buf, markers),
                        |(at, _)| at,
                    );
                    let text: String = self.buf.drain(..take).collect();
                    self.emit(text, &mut out);
                    let Some((_, marker)) = found else {
                        return out;
                    };
                    self.buf.drain(..marker.len());
                    self.state = match marker {
                        OPEN => State::Name,
                        _ => State::Answer,
                    };
                }
            }
        }
    }

    /// At the end of the reply: the text still held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        if self.state != State::Name {
            self.emit(rest, &mut out);
        }
        self.state = State::Answer;
        out
    }

    fn emit(&self, text: String, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        out.push(match self.state {
            State::Thought => Piece::Reasoning(text),
            _ => Piece::Content(text),
        });
    }
}

/// Length of the longest end of `text` that is a proper start of one of `markers`.
fn held_len(text: &str, markers: &[&str]) -> usize {
    (1..text.len() + 1)
        .rev()
        .filter(|&n| text.is_char_boundary(text.len() - n))
        .find(|&n| {
            let tail = &text[text.len() - n..];
            markers.iter().any(|m| m.len() > n && m.starts_with(tail))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str]) -> (String, String) {
        let mut s = Stream::default();
        let mut pieces = Vec::new();
        for c in chunks {
            pieces.extend(s.push(c));
        }
        pieces.extend(s.finish());
        let (mut reasoning, mut content) = (String::new(), String::new());
        for p in pieces {
            match p {
                Piece::Reasoning(t) => reasoning.push_str(&t),
                Piece::Content(t) => content.push_str(&t),
            }
        }
        (reasoning, content)
    }

    const REPLY: &str = "<|channel>thought\nThe user asks for a capital.\n<channel|>Paris.";

    #[test]
    fn the_thought_channel_is_reasoning_and_the_rest_the_answer() {
        assert_eq!(
            split(&[REPLY]),
            ("The user asks for a capital.\n".into(), "Paris.".into())
        );
        // Thinking off: the channel was closed in the prompt; a stray close is dropped.
        assert_eq!(
            split(&["Paris.<channel|>"]),
            (String::new(), "Paris.".into())
        );
        assert_eq!(
            split(&["No thought."]),
            (String::new(), "No thought.".into())
        );
    }

    #[test]
    fn streamed_char_by_char_the_split_is_the_same_and_no_marker_leaks() {
        let chunks: Vec<String> = REPLY.chars().map(String::from).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let mut s = Stream::default();
        for c in &chunks {
            for p in s.push(c) {
                let (Piece::Reasoning(t) | Piece::Content(t)) = &p;
                assert!(!t.contains('<') && !t.contains('|'), "{p:?}");
            }
        }
        assert_eq!(
            split(&chunks),
            ("The user asks for a capital.\n".into(), "Paris.".into())
        );
    }

    #[test]
    fn templates_that_write_the_channel_are_recognised() {
        assert!(detect(include_str!("../../assets/templates/gemma4.jinja")));
        assert!(!detect("<|im_start|>assistant"));
    }
}
