//! Incremental decoding: text as ids arrive, holding back bytes of an unfinished character.

use std::ops::Deref;

use super::Tokenizer;

/// Decodes ids one at a time; what it yields, concatenated, equals [`Tokenizer::decode`] of all
/// ids pushed, and no piece it yields ends inside a UTF-8 character. It holds the tokenizer
/// borrowed (`&Tokenizer`, from [`Tokenizer::stream`]) or shared (`Arc<Tokenizer>`, for a
/// generation that outlives the borrow).
pub struct StreamDecoder<T: Deref<Target = Tokenizer>> {
    tokenizer: T,
    /// Bytes of a character whose remaining bytes have not arrived yet (at most 3).
    pending: Vec<u8>,
}

impl<T: Deref<Target = Tokenizer>> StreamDecoder<T> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: T) -> Self {
        Self {
            tokenizer,
            pending: Vec::with_capacity(8),
        }
    }

    /// The tokenizer it decodes with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Adds one id and returns the text it completes (empty while a byte-fallback or
    /// byte-level character is still incomplete).
    pub fn push(&mut self, id: u32) -> String {
        self.tokenizer.piece_bytes(id, &mut self.pending);
        self.drain(false)
    }

    /// [`StreamDecoder::push`] with control tokens rendered as their text
    /// ([`Tokenizer::token_bytes`]).
    pub fn push_rendered(&mut self, id: u32) -> String {
        let bytes = self.tokenizer.token_bytes(id);
        self.pending.extend_from_slice(&bytes);
        self.drain(false)
    }

    /// Returns whatever is held back, an incomplete character becoming U+FFFD, and resets.
    pub fn flush(&mut self) -> String {
        self.drain(true)
    }

    /// Moves every complete character out of `pending` (invalid sequences as U+FFFD, the way
    /// `String::from_utf8_lossy` replaces them); keeps an incomplete tail unless `at_end`.
    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None if at_end => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let total = self.pending.len();
        self.pending.drain(..total - keep);
        out
    }
}
