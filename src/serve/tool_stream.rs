//! Streamed text that may turn into tool calls: text that could be the start of a call
//! marker is held back; once a call starts, the rest is kept and parsed at the end, so no
//! part of a call is ever streamed as text. Both APIs' streams use it.

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
