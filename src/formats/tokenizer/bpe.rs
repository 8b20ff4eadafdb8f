//! Merge-ranked BPE, llama.cpp's `llm_tokenizer_bpe_session`, in two styles:
//!
//! - byte-level (`tokenizer.ggml.model = "gpt2"`): each pre-token is mapped byte by byte to
//!   GPT-2's printable characters; a final symbol missing from the vocabulary falls back to
//!   its single-byte pieces;
//! - SentencePiece-style (`"gemma4"`): spaces become `▁`, the text is split into lines and
//!   runs of newlines (a run that is a vocabulary piece is taken whole), characters stay raw
//!   UTF-8, and a missing symbol falls back to `<0xNN>` byte tokens.
//!
//! Either way a pre-token starts as one symbol per character, and the adjacent pair with the
//! lowest merge rank is merged first (ties: leftmost) until no ranked pair remains.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::pieces::Pieces;
use super::pretokenize::{PreTokenizer, Selected};
use super::vocab::{Meta, Vocab};
use super::Error;

/// Whether GPT-2's byte-level table maps byte `b` to the character of the same code point.
const fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 bytes GPT-2 maps to U+0100 onwards, in byte (and code point) order.
const SHIFTED: [u8; 68] = {
    let mut table = [0u8; 68];
    let (mut b, mut n) = (0usize, 0usize);
    while b < 256 {
        if !is_printable(b as u8) {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
};

/// GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves, the others to
/// U+0100 onwards, in byte order.
const BYTE_CHARS: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut b = 0usize;
    while b < 256 {
        table[b] = b as u8 as char;
        b += 1;
    }
    let mut n = 0usize;
    while n < SHIFTED.len() {
        table[SHIFTED[n] as usize] = match char::from_u32(0x100 + n as u32) {
            Some(c) => c,
            None => '\0',
        };
        n += 1;
    }
    table
};

/// The byte a GPT-2 byte-level character stands for (the inverse of [`BYTE_CHARS`]).
fn char_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match u8::try_from(cp) {
        Ok(b) if is_printable(b) => Some(b),
        Ok(_) => None,
        Err(_) => SHIFTED.get(cp.checked_sub(0x100)? as usize).copied(),
    }
}

/// Appends the bytes of a normal byte-level piece; characters outside GPT-2's table (which a
/// well-formed vocabulary never has) pass through as their UTF-8.
pub(crate) fn decode_piece(piece: &str, out: &mut Vec<u8>) {
    for c in piece.chars() {
        match char_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// A piece of the current word, linked to its neighbours; `len == 0` once merged away.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// How text reaches the merges.
enum Style {
    /// GPT-2 byte-level characters, split by the pre-tokenizer.
    ByteLevel(PreTokenizer),
    /// SentencePiece-style (Gemma 4): `▁` for spaces, raw characters, lines and newline runs,
    /// with the `<0xNN>` token of each byte for fallback.
    Escaped { byte_tokens: Vec<Option<u32>> },
}

/// The BPE model: merge ranks plus how text is split and spelled.
pub(crate) struct Bpe {
    style: Style,
    /// Merge rank by the merge line `"left right"` (the line's number in the list).
    ranks: Pieces,
    /// Take a pre-token whole when it is a vocabulary piece (llama3-style vocabularies).
    ignore_merges: bool,
}

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

impl Bpe {
    /// Reads `tokenizer.ggml.merges` and compiles the pre-tokenizer `pre` (byte-level BPE).
    pub(crate) fn new(meta: &Meta<'_>, pre: Selected) -> Result<Self, Error> {
        Ok(Self {
            style: Style::ByteLevel(PreTokenizer::new(pre)?),
            ranks: Self::ranks(meta)?,
            ignore_merges: pre.spec.ignore_merges,
        })
    }

    /// Reads `tokenizer.ggml.merges` of a SentencePiece-style BPE vocabulary (`gemma4`).
    pub(crate) fn escaped(meta: &Meta<'_>, vocab: &Vocab) -> Result<Self, Error> {
        let byte_tokens = (0..=255u8)
            .map(|b| vocab.id(&format!("<0x{b:02X}>")))
            .collect();
        Ok(Self {
            style: Style::Escaped { byte_tokens },
            ranks: Self::ranks(meta)?,
            ignore_merges: false,
        })
    }

    /// Whether pieces spell spaces as `▁` in raw UTF-8 (else GPT-2 byte-level characters).
    pub(crate) fn escaped_spaces(&self) -> bool {
        matches!(self.style, Style::Escaped { .. })
    }

    fn ranks(meta: &Meta<'_>) -> Result<Pieces, Error> {
        const MERGES: &str = "tokenizer.ggml.merges";
        let merges = meta
            .strings(MERGES)?
            .ok_or(Error::MissingKey { key: MERGES })?;
        let mut ranks = Pieces::with_capacity(merges.len());
        for line in merges {
            // The first occurrence of a line wins. (llama.cpp splits a line at its first space
            // after the first byte and drops lines without one; a looked-up pair always has
            // that space, so such a line is held but never found.)
            ranks.push(MERGES, line)?;
        }
        Ok(ranks)
    }

    /// The `tokenizer.ggml.pre` name (llama.cpp's for a SentencePiece-style vocabulary).
    pub(crate) fn pre_name(&self) -> &'static str {
        match &self.style {
            Style::ByteLevel(pre) => pre.name(),
            Style::Escaped { .. } => "gemma4",
        }
    }

    /// Encodes one text fragment, appending ids to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut encoded = String::new();
        let mut key = String::new();
        match &self.style {
            Style::ByteLevel(pre) => {
                for word in pre.split(text) {
                    encoded.clear();
                    encoded.extend(word.bytes().map(|b| BYTE_CHARS[b as usize]));
                    self.encode_word(vocab, &encoded, &mut key, out);
                }
            }
            Style::Escaped { .. } => {
                encoded.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
                for word in lines_and_newlines(&encoded) {
                    // A run of newlines that is a piece is taken whole (llama.cpp #21343).
                    let newlines = word.bytes().all(|b| b == b'\n');
                    match vocab.id(word) {
                        Some(id) if newlines => out.push(id),
                        _ => self.encode_word(vocab, word, &mut key, out),
                    }
                }
            }
        }
    }

    fn rank(&self, key: &mut String, left: &str, right: &str) -> Option<u32> {
        key.clear();
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.ranks.id(key)
    }

    /// Merges one byte-level-encoded pre-token and appends its ids.
    fn encode_word(&self, vocab: &Vocab, word: &str, key: &mut String, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                prev: i.checked_sub(1),
                next: (start + len < word.len()).then_some(i + 1),
            });
        }
        let text = |s: Symbol| word.get(s.start..s.start + s.len).unwrap_or_default();
        // (rank, left, right, size): lowest rank first, then leftmost.
        let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        let mut try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<_>, l: usize, r: usize| {
            let (a, b) = (symbols[l], symbols[r]);
            if let Some(rank) = self.rank(key, text(a), text(b)) {
                queue.push(Reverse((rank, l, r, a.len + b.len)));
            }
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &mut queue, i - 1, i);
        }
        while let Some(Reverse((_, l, r, size))) = queue.pop() {
            let (left, right) = (symbols[l], symbols[r]);
            // Skip pairs outdated by an earlier merge of either side.
            if left.len == 0 || right.len == 0 || left.len + right.len != size {
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
            let piece = text(symbols[i]);
            match (vocab.id(piece), &self.style) {
                (Some(id), _) => out.push(id),
                // llama.cpp looks each byte of the encoded piece up as a one-byte string;
                // only ASCII bytes can ever match.
                (None, Style::ByteLevel(_)) => out.extend(
                    piece
                        .bytes()
                        .filter(u8::is_ascii)
                        .filter_map(|b| vocab.id(char::from(b).encode_utf8(&mut [0; 4]))),
                ),
                // SentencePiece-style: the `<0xNN>` token of each byte, where there is one.
                (None, Style::Escaped { byte_tokens }) => {
                    out.extend(piece.bytes().filter_map(|b| byte_tokens[b as usize]))
                }
            }
            at = symbols[i].next;
        }
    }
}

/// Splits `text` into its lines and its runs of newlines, in order (llama.cpp's Gemma 4
/// pre-tokenizer, `[^\n]+|[\n]+`).
fn lines_and_newlines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let newline = rest.starts_with('\n');
        let end = rest
            .find(|c: char| (c == '\n') != newline)
            .unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        rest = tail;
        (!word.is_empty()).then_some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_round_trips_every_byte() {
        let chars = BYTE_CHARS;
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = chars[b as usize];
            assert!(
                seen.insert(c),
                "byte {b:#x} maps to a character already used"
            );
            assert_eq!(char_byte(c), Some(b));
        }
        assert_eq!((chars[b' ' as usize], chars[b'\n' as usize]), ('Ġ', 'Ċ'));
    }

    #[test]
    fn text_splits_into_lines_and_runs_of_newlines() {
        let parts: Vec<&str> = lines_and_newlines("a▁b\n\nc\n").collect();
        assert_eq!(parts, ["a▁b", "\n\n", "c", "\n"]);
        assert_eq!(lines_and_newlines("").count(), 0);
    }

    #[test]
    fn decoding_a_piece_restores_its_bytes() {
        let mut out = Vec::new();
        decode_piece("ĠcafÃ©Ċ", &mut out);
        assert_eq!(out, " café\n".as_bytes());
    }
}
