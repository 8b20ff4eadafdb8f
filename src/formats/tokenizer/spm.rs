//! SentencePiece-style BPE for `tokenizer.ggml.model = "llama"`: llama.cpp's `llm_tokenizer_spm`.
//!
//! The text (spaces escaped as `▁`) starts as one symbol per character; the adjacent pair whose
//! concatenation is the best-scored vocabulary piece is merged first (ties: leftmost), until no
//! pair forms a piece. Symbols that are not pieces fall back to `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::Error;

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

/// The SPM algorithm, with its byte-fallback table.
pub(crate) struct Spm {
    /// Token for each byte: `<0xNN>`, else the one-character piece (ASCII only).
    byte_tokens: Vec<Option<u32>>,
}

/// A piece of the text, linked to its neighbours; `len == 0` once merged away.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; on a tie, the leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    /// Prepares byte fallback for `vocab`.
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut byte_tokens = vec![None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = vocab.id(&hex).or_else(|| {
                let c = char::from_u32(b as u32).filter(|c| c.is_ascii())?;
                vocab.id(&c.to_string())
            });
        }
        Self { byte_tokens }
    }

    /// Encodes one text fragment, `▁`-prefixed when `space_prefix`, appending ids to `out`.
    pub(crate) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        space_prefix: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), Error> {
        let mut escaped = String::with_capacity(text.len() + 3);
        if space_prefix {
            escaped.push(SPACE);
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { SPACE } else { c });
        }
        let text = escaped.as_str();

        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                prev: i.checked_sub(1),
                next: (start + len < text.len()).then_some(i + 1),
            });
        }
        let mut queue = BinaryHeap::with_capacity(symbols.len());
        let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, l: usize, r: usize| {
            let (a, b) = (symbols[l], symbols[r]);
            let Some(joined) = text.get(a.start..b.start + b.len) else {
                return;
            };
            if let Some(id) = vocab.id(joined) {
                queue.push(Bigram {
                    score: vocab.scores[id as usize],
                    left: l,
                    right: r,
                    size: joined.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &mut queue, i - 1, i);
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (bigram.left, bigram.right);
            let (left, right) = (symbols[l], symbols[r]);
            // Skip pairs outdated by an earlier merge of either side.
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue;
            }
            symbols[l].len += right.len;
            symbols[r].len = 0;
            symbols[l].next = right.next;
            if let Some(n) = right.next {
                symbols[n].prev = Some(l);
            }
            if let Some(p) = symbols[l].prev {
                try_add(&symbols, &mut queue, p, l);
            }
            if let Some(n) = symbols[l].next {
                try_add(&symbols, &mut queue, l, n);
            }
        }

        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = text.get(s.start..s.start + s.len).unwrap_or_default();
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        let id =
                            self.byte_tokens[byte as usize].ok_or(Error::NoByteToken { byte })?;
                        out.push(id);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }
}

/// Appends the text of a normal SPM piece: `▁` back to a space.
pub(crate) fn decode_piece(piece: &str, out: &mut Vec<u8>) {
    for c in piece.chars() {
        let c = if c == SPACE { ' ' } else { c };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file::Value;

    use super::super::tests::{content, strings};
    use super::super::{EncodeOptions, Tokenizer};

    /// A tiny llama vocabulary: pieces with scores, byte tokens for 0xC3 and 0xA9 only.
    fn tiny_llama(add_space_prefix: bool) -> Tokenizer {
        let pieces = [
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<0xC3>", 0.0, 6),
            ("<0xA9>", 0.0, 6),
            ("▁", -1.0, 1),
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("ab", -3.0, 1),
            ("▁a", -2.0, 1),
            ("▁ab", -1.5, 1),
        ];
        let c = content(vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&pieces.map(|p| p.0))),
            (
                "tokenizer.ggml.scores",
                Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect()),
            ),
            (
                "tokenizer.ggml.add_space_prefix",
                Value::Bool(add_space_prefix),
            ),
        ]);
        Tokenizer::from_gguf(&c).expect("builds")
    }

    const OPTS: EncodeOptions = EncodeOptions {
        add_bos: true,
        parse_special: true,
    };

    #[test]
    fn best_scored_pair_merges_first() {
        let tok = tiny_llama(true);
        // "▁ab": ▁a (-2.0) outranks ab (-3.0); then ▁a+b forms ▁ab.
        assert_eq!(tok.encode("ab", OPTS).expect("encodes"), [1, 10]);
        assert_eq!(tok.decode(&[1, 10]), " ab");
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.eos_id(), Some(2));
    }

    #[test]
    fn space_prefix_follows_metadata_and_special_tokens() {
        let without = tiny_llama(false);
        assert_eq!(without.encode("ab", OPTS).expect("encodes"), [1, 8]);
        let with = tiny_llama(true);
        // Text after a parsed control token gets the prefix again.
        assert_eq!(
            with.encode("a</s>b", OPTS).expect("encodes"),
            [1, 9, 2, 5, 7]
        );
    }

    #[test]
    fn unknown_characters_fall_back_to_byte_tokens() {
        let tok = tiny_llama(false);
        assert_eq!(tok.encode("é", OPTS).expect("encodes"), [1, 3, 4]);
        assert_eq!(tok.decode(&[3, 4]), "é");
        let mut stream = tok.stream();
        assert_eq!(stream.push(3), "");
        assert_eq!(stream.push(4), "é");
        let err = tok.encode("ü", OPTS).expect_err("no <0xBC> token");
        assert!(
            err.to_string().contains("0xC3") || err.to_string().contains("0xBC"),
            "{err}"
        );
    }
}
