//! Streamed text that may turn into tool calls: text that could be the start of a call
//! marker is held back; once a call starts, the rest is kept and parsed at the end, so no
//! part of a call is ever streamed as text. A harmony model's reply is split into its
//! channels (reasoning apart from text) and calls. Both APIs' streams use it.

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
    /// Reasoning (a harmony model's analysis channel): OpenAI's `reasoning_content`,
    /// Anthropic's `thinking` blocks; never reply text.
    Reasoning(String),
}

/// How a reply is split as it streams: as it comes, into text and tool calls, or into
/// harmony's channels (and calls).
pub enum ReplyStream {
    /// All of it is text.
    Plain,
    /// Text and calls in a tool-call format.
    Tools(ToolCapture),
    /// Harmony channels; calls are messages to functions.
    Harmony(crate::formats::harmony::Stream),
}

impl ReplyStream {
    /// The split for a reply in `tools`' format (none: the request gave no tools), or in
    /// harmony when the model writes it (with or without tools).
    pub fn new(tools: Option<Format>, harmony: bool) -> Self {
        match (harmony, tools) {
            (true, _) => ReplyStream::Harmony(Default::default()),
            (false, Some(format)) => ReplyStream::Tools(ToolCapture::new(format)),
            (false, None) => ReplyStream::Plain,
        }
    }

    /// Adds generated text; returns what may be streamed now.
    pub fn push(&mut self, text: String) -> Vec<Delta> {
        match self {
            ReplyStream::Plain => vec![Delta::Text(text)],
            ReplyStream::Tools(c) => vec![Delta::Text(c.push(&text))],
            ReplyStream::Harmony(h) => h.push(&text).into_iter().map(delta).collect(),
        }
        .into_iter()
        .filter(|d| !matches!(d, Delta::Text(t) | Delta::Reasoning(t) if t.is_empty()))
        .collect()
    }

    /// At the end of the reply: what was held back, and the calls.
    pub fn finish(&mut self) -> (Vec<Delta>, Vec<Call>) {
        let (deltas, calls) = match self {
            ReplyStream::Plain => (Vec::new(), Vec::new()),
            ReplyStream::Tools(c) => {
                let (text, calls) = c.finish();
                (vec![Delta::Text(text)], calls)
            }
            ReplyStream::Harmony(h) => {
                let (pieces, calls) = h.finish();
                (pieces.into_iter().map(delta).collect(), calls)
            }
        };
        let deltas = deltas
            .into_iter()
            .filter(|d| !matches!(d, Delta::Text(t) | Delta::Reasoning(t) if t.is_empty()))
            .collect();
        (deltas, calls)
    }

    /// A whole reply, split: its reasoning, its text and its calls.
    pub fn split(mut self, text: String) -> (String, String, Vec<Call>) {
        if let ReplyStream::Tools(c) = &self {
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

fn delta(p: crate::formats::harmony::Piece) -> Delta {
    match p {
        crate::formats::harmony::Piece::Reasoning(t) => Delta::Reasoning(t),
        crate::formats::harmony::Piece::Content(t) => Delta::Text(t),
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
        let mut s = ReplyStream::new(Some(Format::Harmony), true);
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
        let (reasoning, content, calls) = ReplyStream::new(None, true)
            .split("<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Hi!".into());
        assert_eq!(
            (reasoning.as_str(), content.as_str(), calls.len()),
            ("Hm.", "Hi!", 0)
        );
    }

    #[test]
    fn gemma4_calls_are_held_back_and_parsed() {
        let mut s = ReplyStream::new(Some(Format::Gemma4), false);
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
}
