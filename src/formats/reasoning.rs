//! How a reasoning model's reply splits into its reasoning and its answer, one splitter per
//! format: gpt-oss's harmony channels ([`super::harmony`], which also carry tool calls) and
//! Gemma 4's thought channel ([`super::gemma_thought`]). Which one a model writes is read
//! from its chat template; `run`, the server and the chat all split replies through here.

use super::gemma_thought;
use super::harmony::{self, Piece};
use super::tool_calls::Call;

/// A reasoning format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// gpt-oss's harmony: the `analysis` channel is reasoning, `final` the answer.
    Harmony,
    /// Gemma 4: `<|channel>thought\n…<channel|>` is reasoning.
    Gemma4,
}

/// The reasoning format a chat template writes (none: its replies are all answer).
pub fn detect(template: &str) -> Option<Format> {
    if harmony::detect(template) {
        Some(Format::Harmony)
    } else if gemma_thought::detect(template) {
        Some(Format::Gemma4)
    } else {
        None
    }
}

impl Format {
    /// Whether the reply must be decoded with special tokens rendered, because the
    /// channel's markers may be special tokens (Gemma 4's).
    pub fn needs_special_tokens(self) -> bool {
        self == Format::Gemma4
    }

    /// Whether the format carries tool calls itself (harmony's messages to functions), so
    /// the reply is not also searched for calls in a tool-call format.
    pub fn carries_calls(self) -> bool {
        self == Format::Harmony
    }
}

/// A reply being split as it streams.
#[derive(Debug)]
pub enum Splitter {
    /// Harmony's channels.
    Harmony(harmony::Stream),
    /// Gemma 4's thought channel.
    Gemma4(gemma_thought::Stream),
}

impl Splitter {
    /// A splitter for a reply in `format`.
    pub fn new(format: Format) -> Self {
        match format {
            Format::Harmony => Splitter::Harmony(Default::default()),
            Format::Gemma4 => Splitter::Gemma4(Default::default()),
        }
    }

    /// Adds generated text; returns the pieces it completes (possibly none).
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        match self {
            Splitter::Harmony(s) => s.push(text),
            Splitter::Gemma4(s) => s.push(text),
        }
    }

    /// At the end of the reply: the pieces still held back, and the calls the format carried.
    pub fn finish(&mut self) -> (Vec<Piece>, Vec<Call>) {
        match self {
            Splitter::Harmony(s) => s.finish(),
            Splitter::Gemma4(s) => (s.finish(), Vec::new()),
        }
    }
}

/// A whole reply, split: its reasoning, its answer and the calls the format carried.
pub fn parse(format: Format, text: &str) -> harmony::Parsed {
    let mut s = Splitter::new(format);
    let mut pieces = s.push(text);
    let (rest, calls) = s.finish();
    pieces.extend(rest);
    let mut out = harmony::Parsed {
        calls,
        ..Default::default()
    };
    for p in pieces {
        match p {
            Piece::Reasoning(t) => out.reasoning.push_str(&t),
            Piece::Content(t) => out.content.push_str(&t),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_is_read_from_its_template_and_splits_its_replies() {
        let gemma = include_str!("../../assets/templates/gemma4.jinja");
        assert_eq!(detect(gemma), Some(Format::Gemma4));
        assert_eq!(
            detect("<|start|>assistant<|channel|>final<|message|>"),
            Some(Format::Harmony)
        );
        assert_eq!(detect("<|im_start|>assistant"), None);
        let p = parse(Format::Gemma4, "<|channel>thought\nHm.<channel|>Hi!");
        assert_eq!((p.reasoning.as_str(), p.content.as_str()), ("Hm.", "Hi!"));
        let p = parse(
            Format::Harmony,
            "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Hi!",
        );
        assert_eq!((p.reasoning.as_str(), p.content.as_str()), ("Hm.", "Hi!"));
    }
}
