//! OpenAI's harmony format (gpt-oss) in a model's reply: messages on channels, each
//! `[<|start|>assistant][ to=RECIPIENT]<|channel|>CHANNEL[ to=RECIPIENT][ <|constrain|>TYPE]
//! <|message|>BODY` ended by `<|end|>` (or by `<|call|>`/`<|return|>`, which end generation
//! and are not in the text). `analysis` is the model's reasoning, `final` (and `commentary`
//! without a recipient, a preamble) is the reply, and a message to `functions.NAME` is a tool
//! call whose body is its JSON arguments. The tokenizer renders the markers as text (llama.cpp
//! forces `<|channel|>`, `<|message|>`, `<|start|>` and `<|constrain|>` to be rendered, and
//! `<|end|>` is not an end of generation), so the reply is split here, as it streams.

use serde_json::Value;

use super::tool_calls::Call;

const CHANNEL: &str = "<|channel|>";
const MESSAGE: &str = "<|message|>";
const END: &str = "<|end|>";
const START: &str = "<|start|>";

/// Longest header (the text before `<|message|>`) taken as markup; a longer one is not harmony
/// and becomes reply text.
const MAX_HEADER: usize = 256;

/// Whether a chat template writes harmony (its replies must be split into channels).
pub fn detect(template: &str) -> bool {
    template.contains(CHANNEL) && template.contains(MESSAGE)
}

/// A part of the reply as it streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text of the `analysis` channel: reasoning, not for the user by default.
    Reasoning(String),
    /// Text of the reply (`final`, or `commentary` addressed to no tool).
    Content(String),
}

/// A whole reply, split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// The `analysis` channel's text.
    pub reasoning: String,
    /// The reply's text.
    pub content: String,
    /// The tool calls, in order.
    pub calls: Vec<Call>,
}

/// Splits a whole reply (the generated text) into its channels and calls.
pub fn parse(text: &str) -> Parsed {
    let mut stream = Stream::default();
    let mut pieces = stream.push(text);
    let (rest, calls) = stream.finish();
    pieces.extend(rest);
    let mut out = Parsed {
        calls,
        ..Parsed::default()
    };
    for p in pieces {
        match p {
            Piece::Reasoning(t) => out.reasoning.push_str(&t),
            Piece::Content(t) => out.content.push_str(&t),
        }
    }
    out
}

/// Where the body of the current message goes.
#[derive(Clone, Debug, PartialEq)]
enum Dest {
    Reasoning,
    Content,
    /// A call to the tool of this name; its arguments gather here.
    Call(String, String),
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Reading a message header (up to `<|message|>`).
    Header,
    /// Reading a message body.
    Body(Dest),
}

/// A reply being split as it streams: text that may be the start of a marker is held back.
#[derive(Debug)]
pub struct Stream {
    buf: String,
    state: State,
    calls: Vec<Call>,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            buf: String::new(),
            state: State::Header,
            calls: Vec::new(),
        }
    }
}

impl Stream {
    /// Adds generated text; returns the pieces it completes (possibly none).
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match std::mem::replace(&mut self.state, State::Header) {
                State::Header => match self.buf.find(MESSAGE) {
                    Some(at) => {
                        let dest = route(&self.buf[..at]);
                        self.buf.drain(..at + MESSAGE.len());
                        self.state = State::Body(dest);
                    }
                    None if looks_like_header(&self.buf) => return out,
                    // Not harmony markup: the model answered in plain text.
                    None => self.state = State::Body(Dest::Content),
                },
                State::Body(mut dest) => {
                    let end = [END, START]
                        .iter()
                        .filter_map(|m| self.buf.find(m).map(|at| (at, m.len())))
                        .min();
                    let take = end.map_or(self.buf.len() - partial_marker_len(&self.buf), |e| e.0);
                    let body: String = self.buf.drain(..take).collect();
                    emit(&mut dest, body, &mut out);
                    match end {
                        None => {
                            self.state = State::Body(dest);
                            return out;
                        }
                        Some((_, len)) => {
                            self.buf.drain(..len);
                            self.close(dest, &mut out);
                        }
                    }
                }
            }
        }
    }

    /// At the end of the reply: the pieces still held back, and every tool call.
    pub fn finish(&mut self) -> (Vec<Piece>, Vec<Call>) {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        match std::mem::replace(&mut self.state, State::Header) {
            // An unfinished header is markup; anything else left is text.
            State::Header if rest.trim_start().starts_with("<|") => {}
            State::Header => emit(&mut Dest::Content, rest, &mut out),
            State::Body(mut dest) => {
                emit(&mut dest, rest, &mut out);
                self.close(dest, &mut out);
            }
        }
        (out, std::mem::take(&mut self.calls))
    }

    /// Ends a message: a call's arguments are parsed (text that is not a JSON object is no
    /// call after all, and becomes reply text).
    fn close(&mut self, dest: Dest, out: &mut Vec<Piece>) {
        if let Dest::Call(name, args) = dest {
            match serde_json::from_str::<Value>(args.trim()) {
                Ok(arguments) if arguments.is_object() => self.calls.push(Call { name, arguments }),
                _ => emit(&mut Dest::Content, args, out),
            }
        }
    }
}

/// Sends `text` to `dest`: out as a piece, or into a call's arguments.
fn emit(dest: &mut Dest, text: String, out: &mut Vec<Piece>) {
    if text.is_empty() {
        return;
    }
    match dest {
        Dest::Reasoning => out.push(Piece::Reasoning(text)),
        Dest::Content => out.push(Piece::Content(text)),
        Dest::Call(_, args) => args.push_str(&text),
    }
}

/// Where a message with this header goes: a recipient makes it a call, else its channel says.
fn route(header: &str) -> Dest {
    let word_after = |key: &str| {
        header.find(key).map(|at| {
            let rest = &header[at + key.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '<')
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
    };
    if let Some(to) = word_after("to=").filter(|t| !t.is_empty()) {
        let name = to.strip_prefix("functions.").unwrap_or(&to);
        return Dest::Call(name.to_string(), String::new());
    }
    match word_after(CHANNEL).as_deref() {
        Some("analysis") => Dest::Reasoning,
        _ => Dest::Content,
    }
}

/// Whether `buf` (no `<|message|>` in it yet) may still become a message header.
fn looks_like_header(buf: &str) -> bool {
    let head = buf.trim_start();
    buf.len() <= MAX_HEADER && (head.is_empty() || head.starts_with("<|") || "<|".starts_with(head))
}

/// Length of the longest end of `text` that is a proper start of `<|end|>` or `<|start|>`.
fn partial_marker_len(text: &str) -> usize {
    (1..text.len().min(START.len()) + 1)
        .rev()
        .filter(|&n| text.is_char_boundary(text.len() - n))
        .find(|&n| {
            let tail = &text[text.len() - n..];
            [END, START]
                .iter()
                .any(|m| m.len() > n && m.starts_with(tail))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What gpt-oss writes after the generation prompt `<|start|>assistant`.
    const REASONED: &str = "<|channel|>analysis<|message|>User asks capital. Simple.<|end|>\
                            <|start|>assistant<|channel|>final<|message|>Paris.";

    #[test]
    fn channels_split_into_reasoning_and_content() {
        let p = parse(REASONED);
        assert_eq!(p.reasoning, "User asks capital. Simple.");
        assert_eq!(p.content, "Paris.");
        assert!(p.calls.is_empty());
    }

    #[test]
    fn streamed_byte_by_byte_the_split_is_the_same_and_no_marker_leaks() {
        let mut s = Stream::default();
        let mut pieces = Vec::new();
        for c in REASONED.chars() {
            pieces.extend(s.push(&c.to_string()));
        }
        let (rest, calls) = s.finish();
        pieces.extend(rest);
        assert!(calls.is_empty());
        let text = |reasoning: bool| -> String {
            pieces
                .iter()
                .filter_map(|p| match (p, reasoning) {
                    (Piece::Reasoning(t), true) | (Piece::Content(t), false) => Some(t.as_str()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(text(true), "User asks capital. Simple.");
        assert_eq!(text(false), "Paris.");
        assert!(pieces.iter().all(|p| !format!("{p:?}").contains("<|")));
    }

    #[test]
    fn a_message_to_a_function_is_a_tool_call_in_either_header_order() {
        let after_channel = "<|channel|>analysis<|message|>Need weather.<|end|>\
            <|start|>assistant<|channel|>commentary to=functions.get_weather \
            <|constrain|>json<|message|>{\"city\": \"Paris\"}";
        let p = parse(after_channel);
        assert_eq!(p.reasoning, "Need weather.");
        assert_eq!(p.content, "");
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.calls[0].name, "get_weather");
        assert_eq!(p.calls[0].arguments["city"], "Paris");
        // The order the template itself writes: the recipient before the channel.
        let before_channel =
            "<|channel|>analysis<|message|>x<|end|><|start|>assistant to=functions.time\
             <|channel|>commentary json<|message|>{}";
        let p = parse(before_channel);
        assert_eq!(p.calls[0].name, "time");
        assert_eq!(p.calls[0].arguments, serde_json::json!({}));
    }

    #[test]
    fn a_call_that_is_not_json_is_content_and_plain_text_passes_through() {
        let p = parse("<|channel|>commentary to=functions.f<|message|>not json");
        assert_eq!((p.content.as_str(), p.calls.len()), ("not json", 0));
        let p = parse("Just an answer, no channels.");
        assert_eq!(p.content, "Just an answer, no channels.");
        // A preamble on the commentary channel is for the user.
        let p = parse("<|channel|>commentary<|message|>Checking…<|end|>");
        assert_eq!(p.content, "Checking…");
    }

    #[test]
    fn templates_are_recognised() {
        assert!(detect(
            "{{ '<|start|>assistant<|channel|>final<|message|>' }}"
        ));
        assert!(!detect("<|im_start|>assistant"));
    }
}
