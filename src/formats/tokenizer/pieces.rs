//! Strings numbered in order (a vocabulary's pieces, a merge list) held in one buffer, with the
//! lookup from string to number: no heap allocation per string. Boxed strings in a `HashMap`
//! (and a second copy for the id order) took ~34 MB for Gemma 3's 262,144 pieces, about what
//! its KV cache holds at 1,000 positions; here they take ~4 MB.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use super::Error;

/// The strings, their end offsets, and an index of the first occurrence of each.
#[derive(Default)]
pub(crate) struct Pieces {
    text: String,
    /// End of string `i` in `text`; it starts where string `i - 1` ends.
    ends: Vec<u32>,
    /// Numbers of the strings, found by hashing their text.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Pieces {
    /// An empty table with room for `n` strings.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            ends: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            ..Self::default()
        }
    }

    /// Appends `s` as string number [`Pieces::len`]. When an equal string is already held, its
    /// number is returned: lookups keep finding that first one. `key` names the metadata the
    /// strings come from, for the error when they pass 4 GiB in all.
    pub(crate) fn push(&mut self, key: &'static str, s: &str) -> Result<Option<u32>, Error> {
        let Self {
            text,
            ends,
            index,
            hasher,
        } = self;
        let id = ends.len() as u32;
        let end = u32::try_from(text.len() + s.len()).map_err(|_| Error::TooLarge { key })?;
        text.push_str(s);
        ends.push(end);
        let (text, ends) = (&*text, &*ends);
        let first = match index.entry(
            hasher.hash_one(s),
            |&i| at(text, ends, i) == s,
            |&i| hasher.hash_one(at(text, ends, i)),
        ) {
            hashbrown::hash_table::Entry::Occupied(e) => Some(*e.get()),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(id);
                None
            }
        };
        Ok(first)
    }

    /// String number `id`.
    pub(crate) fn get(&self, id: usize) -> Option<&str> {
        (id < self.ends.len()).then(|| at(&self.text, &self.ends, id as u32))
    }

    /// The number of the first string equal to `s`.
    pub(crate) fn id(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s);
        self.index
            .find(hash, |&i| at(&self.text, &self.ends, i) == s)
            .copied()
    }

    /// How many strings are held.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The strings in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(|i| at(&self.text, &self.ends, i))
    }
}

impl std::ops::Index<usize> for Pieces {
    type Output = str;

    /// String number `id`; panics past the end, as a slice does.
    fn index(&self, id: usize) -> &str {
        assert!(id < self.ends.len(), "piece {id} of {}", self.ends.len());
        at(&self.text, &self.ends, id as u32)
    }
}

/// String `i` of `text` cut at `ends` (`i` is in range: every caller holds a number the table
/// handed out or checked).
fn at<'a>(text: &'a str, ends: &[u32], i: u32) -> &'a str {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &text[start..ends[i] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_by_number_and_numbers_by_string() {
        let words = ["a", "", "héllo", "▁the", "b c", "a"];
        let mut p = Pieces::with_capacity(2);
        let firsts: Vec<Option<u32>> = words.iter().map(|w| p.push("k", w).unwrap()).collect();
        // The repeated "a" is held as number 5, and reported as a repeat of number 0.
        assert_eq!(firsts, [None, None, None, None, None, Some(0)]);
        assert_eq!(p.len(), 6);
        assert_eq!(p.iter().collect::<Vec<_>>(), words);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(p.get(i), Some(*w));
        }
        assert_eq!(p.get(6), None);
        assert_eq!(p.id("a"), Some(0));
        assert_eq!(p.id(""), Some(1));
        assert_eq!(p.id("▁the"), Some(3));
        assert_eq!(p.id("b c"), Some(4));
        assert_eq!(p.id("the"), None);
        assert_eq!(p.id("hé"), None);
    }

    #[test]
    fn many_strings_grow_the_index_and_stay_found() {
        let mut p = Pieces::default();
        for i in 0..20_000 {
            assert_eq!(p.push("k", &format!("w{i}")).unwrap(), None);
        }
        assert!((0..20_000).all(|i| p.id(&format!("w{i}")) == Some(i)));
        assert_eq!(p.get(12_345), Some("w12345"));
    }
}
