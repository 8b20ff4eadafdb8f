//! Byte-level BPE for `tokenizer.ggml.model = "gpt2"`: llama.cpp's `llm_tokenizer_bpe_session`.
//!
//! Each pre-token is mapped byte by byte to GPT-2's printable characters, starts as one symbol
//! per character, and the adjacent pair with the lowest merge rank is merged first (ties:
//! leftmost) until no ranked pair remains. A final symbol missing from the vocabulary falls
//! back to its single-byte pieces, as llama.cpp does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

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

/// The byte-level BPE model: merge ranks plus the pre-tokenizer.
pub(crate) struct Bpe {
    pre: PreTokenizer,
    /// Merge rank by the merge line `"left right"`.
    ranks: HashMap<Box<str>, u32>,
    /// Take a pre-token whole when it is a vocabulary piece (llama3-style vocabularies).
    ignore_merges: bool,
}

impl Bpe {
    /// Reads `tokenizer.ggml.merges` and compiles the pre-tokenizer `pre`.
    pub(crate) fn new(meta: &Meta<'_>, pre: Selected) -> Result<Self, Error> {
        const MERGES: &str = "tokenizer.ggml.merges";
        let merges = meta
            .strings(MERGES)?
            .ok_or(Error::MissingKey { key: MERGES })?;
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; a line without one
            // can never match a pair, so it is dropped. The first occurrence of a line wins.
            let has_split = line.as_bytes().iter().skip(1).any(|&b| b == b' ');
            if has_split {
                ranks.entry((*line).into()).or_insert(rank as u32);
            }
        }
        Ok(Self {
            pre: PreTokenizer::new(pre)?,
            ranks,
            ignore_merges: pre.spec.ignore_merges,
        })
    }

    /// The `tokenizer.ggml.pre` name.
    pub(crate) fn pre_name(&self) -> &'static str {
        self.pre.name()
    }

    /// Encodes one text fragment, appending ids to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut encoded = String::new();
        let mut key = String::new();
        for word in self.pre.split(text) {
            encoded.clear();
            encoded.extend(word.bytes().map(|b| BYTE_CHARS[b as usize]));
            self.encode_word(vocab, &encoded, &mut key, out);
        }
    }

    fn rank(&self, key: &mut String, left: &str, right: &str) -> Option<u32> {
        key.clear();
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.ranks.get(key.as_str()).copied()
    }

    /// Merges one byte-level-encoded pre-token and appends its ids.
    fn encode_word(&self, vocab: &Vocab, word: &str, key: &mut String, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(&id) = vocab.ids.get(word) {
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
            match vocab.ids.get(piece) {
                Some(&id) => out.push(id),
                // llama.cpp looks each byte of the encoded piece up as a one-byte string;
                // only ASCII bytes can ever match.
                None => out.extend(
                    piece
                        .bytes()
                        .filter(u8::is_ascii)
                        .filter_map(|b| vocab.ids.get(char::from(b).to_string().as_str()).copied()),
                ),
            }
            at = symbols[i].next;
        }
    }
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
    fn decoding_a_piece_restores_its_bytes() {
        let mut out = Vec::new();
        decode_piece("ĠcafÃ©Ċ", &mut out);
        assert_eq!(out, " café\n".as_bytes());
    }
}
