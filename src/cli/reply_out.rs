//! Where `run` writes a reply as it streams: the reply on stdout; for a model that writes a
//! reasoning format (gpt-oss's harmony channels, Gemma 4's thought channel), only the answer
//! there, and the reasoning on stderr when asked (`-v`, `--show-reasoning`), or nowhere.

use std::io::{self, Write};

use crate::formats::harmony::Piece;
use crate::formats::reasoning::{Format, Splitter};

/// The destination of one reply.
pub struct ReplyOut<O: Write, E: Write> {
    out: O,
    err: E,
    /// The reasoning splitter, for a reasoning model's reply.
    reasoning: Option<Splitter>,
    show_reasoning: bool,
    /// Reasoning was written to `err` and not yet ended by a newline.
    reasoning_open: bool,
}

impl<O: Write, E: Write> ReplyOut<O, E> {
    /// Writes to `out` (and reasoning to `err` when `show_reasoning`); a `reasoning` format
    /// splits the reply into reasoning and answer first.
    pub fn new(out: O, err: E, reasoning: Option<Format>, show_reasoning: bool) -> Self {
        Self {
            out,
            err,
            reasoning: reasoning.map(Splitter::new),
            show_reasoning,
            reasoning_open: false,
        }
    }

    /// Writes the generated `text` where it belongs (flushed: the user watches it arrive).
    pub fn text(&mut self, text: &str) -> io::Result<()> {
        match self.reasoning.as_mut() {
            None => self.write_content(text),
            Some(h) => {
                let pieces = h.push(text);
                self.write_pieces(pieces)
            }
        }
    }

    /// At the end of the reply: writes what the splitter held back.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(h) = self.reasoning.as_mut() {
            let (pieces, _calls) = h.finish();
            self.write_pieces(pieces)?;
        }
        self.end_reasoning()
    }

    fn write_pieces(&mut self, pieces: Vec<Piece>) -> io::Result<()> {
        for p in pieces {
            match p {
                Piece::Content(t) => self.write_content(&t)?,
                Piece::Reasoning(t) if self.show_reasoning => {
                    self.err.write_all(t.as_bytes())?;
                    self.err.flush()?;
                    self.reasoning_open = !t.ends_with('\n');
                }
                Piece::Reasoning(_) => {}
            }
        }
        Ok(())
    }

    fn write_content(&mut self, text: &str) -> io::Result<()> {
        self.end_reasoning()?;
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// Ends the reasoning's last line, so the reply does not start in its middle.
    fn end_reasoning(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.reasoning_open) {
            self.err.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "<|channel|>analysis<|message|>Easy one.<|end|>\
                         <|start|>assistant<|channel|>final<|message|>Paris.";

    fn run(format: Option<Format>, show: bool, chunks: &[&str]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut r = ReplyOut::new(&mut out, &mut err, format, show);
        for c in chunks {
            r.text(c).unwrap();
        }
        r.finish().unwrap();
        drop(r);
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn a_harmony_reply_prints_its_final_channel_and_reasoning_only_when_asked() {
        let chunks: Vec<String> = REPLY.chars().map(String::from).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let harmony = Some(Format::Harmony);
        assert_eq!(
            run(harmony, false, &chunks),
            ("Paris.".into(), String::new())
        );
        assert_eq!(
            run(harmony, true, &chunks),
            ("Paris.".into(), "Easy one.\n".into())
        );
    }

    #[test]
    fn other_replies_pass_through() {
        assert_eq!(run(None, true, &[REPLY]), (REPLY.into(), String::new()));
    }

    #[test]
    fn a_gemma4_reply_prints_its_answer_and_its_thought_only_when_asked() {
        let reply = "<|channel>thought\nEasy one.\n<channel|>Paris.";
        let chunks: Vec<String> = reply.chars().map(String::from).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let gemma = Some(Format::Gemma4);
        assert_eq!(run(gemma, false, &chunks), ("Paris.".into(), String::new()));
        assert_eq!(
            run(gemma, true, &chunks),
            ("Paris.".into(), "Easy one.\n".into())
        );
    }
}
