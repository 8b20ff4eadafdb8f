//! Streamed text that may turn into tool calls: text that could be the start of a call
//! marker is held back; once a call starts, the rest is kept and parsed at the end, so no
//! part of a call is ever streamed as text. A reasoning model's reply is first split into its
//! reasoning and its answer ([`crate::formats::reasoning`]; harmony's channels also carry its
//! calls). Both APIs' streams use it.

use crate::formats::harmony::Piece;
use crate::formats::reasoning::{self, Splitter};
use crate::formats::tool_calls::{Call, Format};

/// The state of one streamed reply given tools.
pub struct ToolCapture {
    format: Format,
    held: String,
    capturing: bool,
}

impl ToolCapture {
    /// A reply whose calls are in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            held: String::new(),
            capturing: false,
        }
    }

    /// Adds generated text; returns what may be streamed as text now (possibly nothing).
    pub fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        self.capturing = self.capturing || self.held.contains(self.format.marker());
        let keep = if self.capturing {
            self.held.len()
        } else {
            crate::engine::stop::held_len(&self.held, &[self.format.marker()])
        };
        self.held.drain(..self.held.len() - keep).collect()
    }

    /// What of `text` may be streamed now: all of it without tools (`capture` is `None`),
    /// else what [`ToolCapture::push`] releases.
    pub fn visible(capture: Option<&mut Self>, text: String) -> String {
        match capture {
            None => text,
            Some(c) => c.push(&text),
        }
    }

    /// At the end of the reply: the text still held and the calls parsed from it.
    pub fn finish(&mut self) -> (String, Vec<Call>) {
        let held = std::mem::take(&mut self.held);
        match self.capturing {
            true => self.format.parse(&held),
            false => (held, Vec::new()),
        }
    }
}

/// A part of a streamed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// Reply text.
    Text(String),
    /// Reasoning (harmony's analysis channel, Gemma 4's thought): OpenAI's `reasoning_content`,
    /// Anthropic's `thinking` blocks; never reply text.
    Reasoning(String),
}

/// How a reply is split as it streams: into reasoning and answer (for a reasoning model),
/// and the answer into text and tool calls (given tools).
pub struct ReplyStream {
    /// The reasoning splitter, for a model that writes a reasoning format.
    reasoning: Option<Splitter>,
    /// The tool-call capture, given tools in a format the reasoning format does not carry.
    tools: Option<ToolCapture>,
}

impl ReplyStream {
    /// The split for a reply in `tools`' format (none: the request gave no tools), by a
    /// model writing the `reasoning` format (with or without tools).
    pub fn new(tools: Option<Format>, reasoning: Option<reasoning::Format>) -> Self {
        let carried = reasoning.is_some_and(reasoning::Format::carries_calls);
        Self {
            reasoning: reasoning.map(Splitter::new),
            tools: tools.filter(|_| !carried).map(ToolCapture::new),
        }
    }

    /// Whether the reply may hold reasoning (it is split by a reasoning format).
    pub fn may_reason(&self) -> bool {
        self.reasoning.is_some()
    }

    /// Adds generated text; returns what may be streamed now.
    pub fn push(&mut self, text: String) -> Vec<Delta> {
        let pieces = match self.reasoning.as_mut() {
            Some(s) => s.push(&text),
            None => vec![Piece::Content(text)],
        };
        self.answer(pieces)
    }

    /// At the end of the reply: what was held back, and the calls.
    pub fn finish(&mut self) -> (Vec<Delta>, Vec<Call>) {
        let (pieces, mut calls) = match self.reasoning.as_mut() {
            Some(s) => s.finish(),
            None => (Vec::new(), Vec::new()),
        };
        let mut deltas = self.answer(pieces);
        if let Some(c) = self.tools.as_mut() {
            let (text, more) = c.finish();
            deltas.extend(nonempty(Delta::Text(text)));
            calls.extend(more);
        }
        (deltas, calls)
    }

    /// Passes the answer's pieces through the tool-call capture.
    fn answer(&mut self, pieces: Vec<Piece>) -> Vec<Delta> {
        pieces
            .into_iter()
            .filter_map(|p| match p {
                Piece::Reasoning(t) => nonempty(Delta::Reasoning(t)),
                Piece::Content(t) => {
                    nonempty(Delta::Text(ToolCapture::visible(self.tools.as_mut(), t)))
                }
            })
            .collect()
    }

    /// A whole reply, split: its reasoning, its text and its calls.
    pub fn split(mut self, text: String) -> (String, String, Vec<Call>) {
        if let (None, Some(c)) = (&self.reasoning, &self.tools) {
            // A whole reply is parsed at once (the format's own rule for text around calls).
            let (content, calls) = c.format.parse(&text);
            return match calls.is_empty() {
                true => (String::new(), text, calls),
                false => (String::new(), content, calls),
            };
        }
        let mut deltas = self.push(text);
        let (rest, calls) = self.finish();
        deltas.extend(rest);
        let (mut reasoning, mut content) = (String::new(), String::new());
        for d in deltas {
            match d {
                Delta::Text(t) => content.push_str(&t),
                Delta::Reasoning(t) => reasoning.push_str(&t),
            }
        }
        (reasoning, content, calls)
    }
}

/// `d`, unless its text is empty.
fn nonempty(d: Delta) -> Option<Delta> {
    match &d {
        Delta::Text(t) | Delta::Reasoning(t) if t.is_empty() => None,
        _ => Some(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmony_replies_stream_reasoning_apart_and_calls_never_as_text() {
        let reply = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant\
                     <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\
                     {\"city\": \"Paris\"}";
        let mut s = ReplyStream::new(Some(Format::Harmony), Some(reasoning::Format::Harmony));
        let mut deltas = Vec::new();
        for chunk in reply.as_bytes().chunks(5) {
            deltas.extend(s.push(String::from_utf8_lossy(chunk).into_owned()));
        }
        let (rest, calls) = s.finish();
        deltas.extend(rest);
        let reasoning: String = deltas
            .iter()
            .map(|d| match d {
                Delta::Reasoning(t) => t.as_str(),
                Delta::Text(t) => panic!("text streamed: {t:?}"),
            })
            .collect();
        assert_eq!(reasoning, "Need the weather.");
        assert_eq!(calls[0].name, "get_weather");
        let (reasoning, content, calls) = ReplyStream::new(None, Some(reasoning::Format::Harmony))
            .split("<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Hi!".into());
        assert_eq!(
            (reasoning.as_str(), content.as_str(), calls.len()),
            ("Hm.", "Hi!", 0)
        );
    }

    #[test]
    fn gemma4_calls_are_held_back_and_parsed() {
        let mut s = ReplyStream::new(Some(Format::Gemma4), None);
        let mut text = String::new();
        for chunk in ["Sure.", "<|tool", "_call>call:f{x:1}", "<tool_call|>"] {
            for d in s.push(chunk.to_string()) {
                if let Delta::Text(t) = d {
                    text.push_str(&t);
                }
            }
        }
        let (rest, calls) = s.finish();
        assert_eq!(text, "Sure.");
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(calls[0].arguments, serde_json::json!({"x": 1}));
    }

    #[test]
    fn gemma4_thought_streams_as_reasoning_before_its_calls() {
        let reply = "<|channel>thought\nNeed the weather.<channel|>Sure.<|tool_call>call:f{x:1}<tool_call|>";
        let mut s = ReplyStream::new(Some(Format::Gemma4), Some(reasoning::Format::Gemma4));
        let mut deltas = Vec::new();
        for chunk in reply.as_bytes().chunks(3) {
            deltas.extend(s.push(String::from_utf8_lossy(chunk).into_owned()));
        }
        let (rest, calls) = s.finish();
        deltas.extend(rest);
        let (mut reasoning, mut text) = (String::new(), String::new());
        for d in &deltas {
            match d {
                Delta::Reasoning(t) => reasoning.push_str(t),
                Delta::Text(t) => text.push_str(t),
            }
        }
        assert_eq!(
            (reasoning.as_str(), text.as_str()),
            ("Need the weather.", "Sure.")
        );
        assert_eq!(calls[0].arguments, serde_json::json!({"x": 1}));
        // Without tools, whole.
        let (reasoning, content, calls) = ReplyStream::new(None, Some(reasoning::Format::Gemma4))
            .split("<|channel>thought\nHm.<channel|>Hi!".into());
        assert_eq!(
            (reasoning.as_str(), content.as_str(), calls.len()),
            ("Hm.", "Hi!", 0)
        );
    }
}
