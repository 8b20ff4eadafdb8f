//! Splits control and user-defined tokens out of text before the vocabulary model runs,
//! with the result of llama.cpp's `tokenizer_st_partition`.
//!
//! llama.cpp takes the special tokens longest first and, for each, cuts every remaining text
//! fragment at its leftmost non-overlapping occurrences. Doing that literally costs one scan
//! of the text per special token (Gemma 3 has 6,414 of them), so this module finds every
//! occurrence of every special token in one trie walk, then accepts occurrences in the same
//! priority order (length descending, then id; within a token, leftmost first), skipping any
//! that overlaps an accepted one. Both procedures accept the same occurrences.

use std::collections::BTreeMap;

use super::vocab::{TokenKind, Vocab};

/// One piece of partitioned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    /// Text for the vocabulary model.
    Text(&'t str),
    /// A special token matched in the text.
    Token(u32),
}

/// A byte trie over the special tokens' texts.
struct Node {
    /// Children by next byte, sorted by byte.
    children: Vec<(u8, u32)>,
    /// The token whose text ends here.
    token: Option<u32>,
}

/// Finds special tokens in text.
pub(crate) struct SpecialMatcher {
    nodes: Vec<Node>,
}

impl SpecialMatcher {
    /// Indexes every control, user-defined and unknown token of `vocab`.
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut nodes = vec![Node {
            children: Vec::new(),
            token: None,
        }];
        for (id, (piece, kind)) in vocab.pieces.iter().zip(&vocab.kinds).enumerate() {
            if !kind.is_special() {
                continue;
            }
            let mut at = 0usize;
            for &b in piece.as_bytes() {
                at = match nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[at].children[i].1 as usize,
                    Err(i) => {
                        let next = nodes.len();
                        nodes[at].children.insert(i, (b, next as u32));
                        nodes.push(Node {
                            children: Vec::new(),
                            token: None,
                        });
                        next
                    }
                };
            }
            nodes[at].token = Some(id as u32);
        }
        Self { nodes }
    }

    fn child(&self, node: usize, b: u8) -> Option<usize> {
        let children = &self.nodes[node].children;
        children
            .binary_search_by_key(&b, |c| c.0)
            .ok()
            .map(|i| children[i].1 as usize)
    }

    /// Every occurrence `(token, start, end)` of a token that `allowed` admits.
    fn occurrences(&self, text: &str, allowed: impl Fn(u32) -> bool) -> Vec<(u32, usize, usize)> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for start in 0..bytes.len() {
            let mut node = 0;
            for (offset, &b) in bytes[start..].iter().enumerate() {
                let Some(next) = self.child(node, b) else {
                    break;
                };
                node = next;
                if let Some(id) = self.nodes[node].token {
                    if allowed(id) {
                        found.push((id, start, start + offset + 1));
                    }
                }
            }
        }
        found
    }

    /// Splits `text` into text and special-token fragments. Control and unknown tokens are
    /// matched only when `parse_special`; user-defined tokens always are, as in llama.cpp.
    pub(crate) fn partition<'t>(
        &self,
        text: &'t str,
        vocab: &Vocab,
        parse_special: bool,
    ) -> Vec<Fragment<'t>> {
        let allowed = |id: u32| match vocab.kinds.get(id as usize) {
            Some(TokenKind::UserDefined) => true,
            Some(TokenKind::Control | TokenKind::Unknown) => parse_special,
            _ => false,
        };
        let mut found = self.occurrences(text, allowed);
        found.sort_unstable_by_key(|&(id, start, end)| (std::cmp::Reverse(end - start), id, start));
        // Accepted occurrences, start -> end; they never overlap one another.
        let mut accepted: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        for (id, start, end) in found {
            let clashes_before = accepted
                .range(..end)
                .next_back()
                .is_some_and(|(_, &(prev_end, _))| prev_end > start);
            if !clashes_before {
                accepted.insert(start, (end, id));
            }
        }
        let mut fragments = Vec::with_capacity(accepted.len() * 2 + 1);
        let mut pos = 0;
        for (start, (end, id)) in accepted {
            if start > pos {
                if let Some(t) = text.get(pos..start) {
                    fragments.push(Fragment::Text(t));
                }
            }
            fragments.push(Fragment::Token(id));
            pos = end;
        }
        if pos < text.len() {
            if let Some(t) = text.get(pos..) {
                fragments.push(Fragment::Text(t));
            }
        }
        fragments
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tokenizer::pieces::Pieces;

    fn vocab(pieces: &[(&str, TokenKind)]) -> Vocab {
        let mut table = Pieces::default();
        for p in pieces {
            assert_eq!(table.push("test", p.0).unwrap(), None);
        }
        Vocab {
            pieces: table,
            kinds: pieces.iter().map(|p| p.1).collect(),
            scores: vec![0.0; pieces.len()],
        }
    }

    #[test]
    fn longer_special_tokens_win_over_earlier_shorter_ones() {
        use TokenKind::*;
        let v = vocab(&[
            ("xa", Control),
            ("abc", Control),
            ("<b>", UserDefined),
            ("x", Normal),
        ]);
        let m = SpecialMatcher::new(&v);
        // llama.cpp cuts "abc" first, although "xa" starts earlier.
        assert_eq!(
            m.partition("xabcxa", &v, true),
            [Fragment::Text("x"), Fragment::Token(1), Fragment::Token(0)]
        );
        // Without parse_special only the user-defined token is cut.
        assert_eq!(
            m.partition("xa<b>abc", &v, false),
            [
                Fragment::Text("xa"),
                Fragment::Token(2),
                Fragment::Text("abc")
            ]
        );
        assert_eq!(m.partition("", &v, true), []);
    }

    #[test]
    fn repeated_and_adjacent_special_tokens_are_all_cut() {
        use TokenKind::*;
        let v = vocab(&[("<s>", Control), ("aa", UserDefined)]);
        let m = SpecialMatcher::new(&v);
        assert_eq!(
            m.partition("<s><s>aaa", &v, true),
            [
                Fragment::Token(0),
                Fragment::Token(0),
                Fragment::Token(1),
                Fragment::Text("a")
            ]
        );
    }
}
