//! Reads `tokenizer.ggml.*` metadata: pieces, token kinds, scores, special ids and the
//! end-of-generation set, following llama.cpp's `llama_vocab::impl::load`.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::pieces::Pieces;
use super::Error;

/// What a vocabulary entry is, from `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Type 0 or anything unrecognised: decodes to nothing.
    Undefined,
    /// Type 1: ordinary text.
    Normal,
    /// Type 2: the unknown token.
    Unknown,
    /// Type 3: control tokens (`<bos>`, `<|im_end|>`), matched in text only with parse_special.
    Control,
    /// Type 4: user-defined tokens, always matched in text and decoded verbatim.
    UserDefined,
    /// Type 5: unused slots.
    Unused,
    /// Type 6: `<0xNN>` byte-fallback tokens.
    Byte,
}

impl TokenKind {
    fn from_gguf(t: i32) -> Self {
        match t {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// Whether llama.cpp lists the token in its special-token cache (split out of text).
    pub(crate) fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::UserDefined | Self::Unknown)
    }
}

/// Typed access to GGUF metadata, each failure naming its key.
pub(crate) struct Meta<'a> {
    map: &'a HashMap<String, Value>,
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(first) => format!(
                "an array of {:?} ({} entries)",
                first.value_type(),
                items.len()
            ),
            None => "an empty array".to_string(),
        },
        other => format!("a {:?}", other.value_type()),
    }
}

impl<'a> Meta<'a> {
    /// Wraps a GGUF metadata map.
    pub(crate) fn new(map: &'a HashMap<String, Value>) -> Self {
        Self { map }
    }

    fn wrong(key: &'static str, expected: &'static str, v: &Value) -> Error {
        Error::WrongType {
            key,
            expected,
            found: describe(v),
        }
    }

    /// A string value, `None` when absent.
    pub(crate) fn string(&self, key: &'static str) -> Result<Option<&'a str>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong(key, "a string", v)),
        }
    }

    /// A boolean value, `None` when absent.
    pub(crate) fn bool(&self, key: &'static str) -> Result<Option<bool>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "a bool", v)),
        }
    }

    /// A non-negative integer of any width, `None` when absent.
    pub(crate) fn id(&self, key: &'static str) -> Result<Option<u64>, Error> {
        let n = match self.map.get(key) {
            None => return Ok(None),
            Some(Value::U8(n)) => Some(u64::from(*n)),
            Some(Value::U16(n)) => Some(u64::from(*n)),
            Some(Value::U32(n)) => Some(u64::from(*n)),
            Some(Value::U64(n)) => Some(*n),
            Some(Value::I8(n)) => u64::try_from(*n).ok(),
            Some(Value::I16(n)) => u64::try_from(*n).ok(),
            Some(Value::I32(n)) => u64::try_from(*n).ok(),
            Some(Value::I64(n)) => u64::try_from(*n).ok(),
            Some(v) => return Err(Self::wrong(key, "a token id (unsigned integer)", v)),
        };
        match n {
            Some(n) => Ok(Some(n)),
            None => Err(Error::WrongType {
                key,
                expected: "a token id (unsigned integer)",
                found: "a negative integer".to_string(),
            }),
        }
    }

    /// An array of strings, `None` when absent.
    pub(crate) fn strings(&self, key: &'static str) -> Result<Option<Vec<&'a str>>, Error> {
        const EXPECTED: &str = "an array of strings";
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(Self::wrong(key, EXPECTED, v));
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(Self::wrong(key, EXPECTED, v)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An array of numbers read as `T`, `None` when absent; `convert` says which element
    /// types are accepted.
    fn numbers<T>(
        &self,
        key: &'static str,
        expected: &'static str,
        convert: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>, Error> {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(Self::wrong(key, expected, v));
        };
        items
            .iter()
            .map(|item| convert(item).ok_or_else(|| Self::wrong(key, expected, v)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// The vocabulary proper: one piece, kind and score per id, and the reverse map.
pub(crate) struct Vocab {
    /// Piece text by id, and id by piece text.
    pub(crate) pieces: Pieces,
    /// Token kind by id (after llama.cpp's text-based overrides).
    pub(crate) kinds: Vec<TokenKind>,
    /// SentencePiece scores by id (all zero when the file has none).
    pub(crate) scores: Vec<f32>,
}

impl Vocab {
    /// Reads `tokens`, `scores` (required when `need_scores`) and `token_type`.
    pub(crate) fn read(meta: &Meta<'_>, need_scores: bool) -> Result<Self, Error> {
        const TOKENS: &str = "tokenizer.ggml.tokens";
        const SCORES: &str = "tokenizer.ggml.scores";
        const TYPES: &str = "tokenizer.ggml.token_type";
        let tokens = meta
            .strings(TOKENS)?
            .ok_or(Error::MissingKey { key: TOKENS })?;
        let n = tokens.len();
        let scores = meta.numbers(SCORES, "an array of f32 (or i32)", |v| match v {
            Value::F32(x) => Some(*x),
            Value::I32(x) => Some(*x as f32),
            _ => None,
        })?;
        let scores = match scores {
            Some(s) if s.len() < n => {
                return Err(Error::TooShort {
                    key: SCORES,
                    expected: n,
                    found: s.len(),
                })
            }
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None if need_scores => return Err(Error::MissingKey { key: SCORES }),
            None => vec![0.0; n],
        };
        let kinds = match meta.numbers(TYPES, "an array of i32", |v| match v {
            Value::I32(x) => Some(TokenKind::from_gguf(*x)),
            _ => None,
        })? {
            Some(k) if k.len() < n => {
                return Err(Error::TooShort {
                    key: TYPES,
                    expected: n,
                    found: k.len(),
                })
            }
            Some(mut k) => {
                k.truncate(n);
                k
            }
            None => vec![TokenKind::Normal; n],
        };
        let mut pieces = Pieces::with_capacity(n);
        for (i, token) in tokens.into_iter().enumerate() {
            let empty;
            let piece = if token.is_empty() {
                empty = format!("[EMPTY_{i}]");
                &empty
            } else {
                token
            };
            if let Some(first) = pieces.push(TOKENS, piece)? {
                return Err(Error::DuplicateToken {
                    piece: piece.to_string(),
                    first,
                    second: i as u32,
                });
            }
        }
        Ok(Self {
            pieces,
            kinds,
            scores,
        })
    }

    /// The id of the token spelled `text`.
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.pieces.id(text)
    }

    fn len(&self) -> usize {
        self.pieces.len()
    }
}

/// The byte a `<0xNN>` piece stands for.
pub(crate) fn parse_byte_token(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// Special-token defaults that depend on the vocabulary model and pre-tokenizer.
pub(crate) struct Defaults {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
}

impl Defaults {
    /// llama.cpp's defaults for `llama` (SPM) vocabularies.
    pub(crate) fn spm() -> Self {
        Self {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            add_bos: true,
            add_space_prefix: true,
        }
    }

    /// No defaults at all: every special id must come from the description (HF tokenizers).
    pub(crate) fn none() -> Self {
        Self {
            bos: None,
            eos: None,
            unk: None,
            add_bos: false,
            add_space_prefix: false,
        }
    }

    /// llama.cpp's defaults for `gpt2` (BPE) vocabularies; some pre-tokenizers add BOS by
    /// default, ChatGLM's has none.
    pub(crate) fn bpe(add_bos: bool, clears_bos: bool) -> Self {
        Self {
            bos: if clears_bos { None } else { Some(11) },
            eos: Some(11),
            unk: None,
            add_bos,
            add_space_prefix: false,
        }
    }
}

/// Special ids and the flags that govern them.
pub(crate) struct Specials {
    /// Beginning of sequence.
    pub(crate) bos: Option<u32>,
    /// End of sequence.
    pub(crate) eos: Option<u32>,
    /// Prepend BOS when adding special tokens.
    pub(crate) add_bos: bool,
    /// Append EOS when adding special tokens.
    pub(crate) add_eos: bool,
    /// SentencePiece: put a space in front of text that starts the input or follows a special.
    pub(crate) add_space_prefix: bool,
    /// The end-of-generation ids, sorted.
    pub(crate) eog: Vec<u32>,
}

/// Texts llama.cpp takes for the end-of-turn token when the file names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Texts llama.cpp takes for the end-of-message token.
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
/// Texts llama.cpp takes for the six fill-in-the-middle tokens, in the order of `FIM_KEYS`.
const FIM_TEXTS: [&[&str]; 6] = [
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];
const FIM_KEYS: [&str; 6] = [
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
];
/// Deprecated spellings of the first three FIM keys, read after the current ones as llama.cpp does.
const FIM_OLD_KEYS: [&str; 3] = [
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];
/// Texts that put a token in the end-of-generation set.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss tokens llama.cpp always renders (forced to user-defined).
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl Specials {
    /// Reads special ids and flags, then applies llama.cpp's text-based detection, which also
    /// turns the detected tokens into control tokens in `vocab`.
    pub(crate) fn read(meta: &Meta<'_>, vocab: &mut Vocab, d: Defaults) -> Result<Self, Error> {
        let n = vocab.len() as u64;
        // A default outside the vocabulary is disabled; a file value outside it is ignored.
        let in_range = |id: Option<u32>| id.filter(|&i| u64::from(i) < n);
        let read = |key: &'static str, default: Option<u32>| -> Result<Option<u32>, Error> {
            Ok(match meta.id(key)? {
                Some(id) if id < n => Some(id as u32),
                _ => in_range(default),
            })
        };
        let bos = read("tokenizer.ggml.bos_token_id", d.bos)?;
        let eos = read("tokenizer.ggml.eos_token_id", d.eos)?;
        let mut eot = read("tokenizer.ggml.eot_token_id", None)?;
        let mut eom = read("tokenizer.ggml.eom_token_id", None)?;
        let _unk = read("tokenizer.ggml.unknown_token_id", d.unk)?;
        let mut fim = [None; 6];
        for (slot, key) in fim.iter_mut().zip(FIM_KEYS) {
            *slot = read(key, None)?;
        }
        for (slot, key) in fim.iter_mut().zip(FIM_OLD_KEYS) {
            *slot = read(key, *slot)?;
        }
        let add_bos = meta
            .bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(d.add_bos);
        let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let add_space_prefix = meta
            .bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(d.add_space_prefix);
        if add_bos && bos.is_none() {
            return Err(Error::MissingSpecialToken {
                flag: "tokenizer.ggml.add_bos_token",
                id_key: "tokenizer.ggml.bos_token_id",
            });
        }
        if add_eos && eos.is_none() {
            return Err(Error::MissingSpecialToken {
                flag: "tokenizer.ggml.add_eos_token",
                id_key: "tokenizer.ggml.eos_token_id",
            });
        }

        detect(vocab, &mut eot, EOT_TEXTS);
        detect(vocab, &mut eom, EOM_TEXTS);
        for (slot, texts) in fim.iter_mut().zip(FIM_TEXTS) {
            detect(vocab, slot, texts);
        }
        let eog = end_of_generation(vocab, [eos, eot, eom, fim[3], fim[4], fim[5]]);
        Ok(Self {
            bos,
            eos,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
        })
    }
}

/// Fills an unset special id with the first token (in id order) spelled like one of `texts`,
/// making it a control token as llama.cpp does.
fn detect(vocab: &mut Vocab, slot: &mut Option<u32>, texts: &[&str]) {
    if slot.is_some() {
        return;
    }
    let found = texts.iter().filter_map(|t| vocab.id(t)).min();
    if let Some(id) = found {
        *slot = Some(id);
        mark_control(vocab, id);
    }
}

fn mark_control(vocab: &mut Vocab, id: u32) {
    if let Some(kind) = vocab.kinds.get_mut(id as usize) {
        // llama.cpp ORs in the control attribute, which outranks every other one.
        *kind = TokenKind::Control;
    }
}

/// llama.cpp's end-of-generation set: the given ids, plus every token spelled like an end
/// marker (made a control token), minus the harmony/solar `<|end|>` and gemma4 `</s>` cases.
fn end_of_generation(vocab: &mut Vocab, given: [Option<u32>; 6]) -> Vec<u32> {
    let mut eog: Vec<u32> = given.into_iter().flatten().collect();
    for text in EOG_TEXTS {
        if let Some(id) = vocab.id(text) {
            eog.push(id);
            mark_control(vocab, id);
        }
    }
    for text in ALWAYS_RENDERED {
        if let Some(id) = vocab.id(text) {
            if let Some(kind) = vocab.kinds.get_mut(id as usize) {
                *kind = TokenKind::UserDefined;
            }
        }
    }
    eog.sort_unstable();
    eog.dedup();
    let has = |vocab: &Vocab, eog: &[u32], text: &str| {
        vocab.id(text).filter(|id| eog.binary_search(id).is_ok())
    };
    let (ret, call, calls, flush, end) = (
        has(vocab, &eog, "<|return|>"),
        has(vocab, &eog, "<|call|>"),
        has(vocab, &eog, "<|calls|>"),
        has(vocab, &eog, "<|flush|>"),
        has(vocab, &eog, "<|end|>"),
    );
    let any_call = call.is_some() || calls.is_some();
    if let Some(end) = end {
        if any_call && (ret.is_some() || flush.is_some()) {
            eog.retain(|&id| id != end);
            if let Some(kind) = vocab.kinds.get_mut(end as usize) {
                *kind = TokenKind::UserDefined;
            }
        }
    }
    if let (Some(_), Some(s)) = (
        has(vocab, &eog, "<|tool_response>"),
        has(vocab, &eog, "</s>"),
    ) {
        eog.retain(|&id| id != s);
        if let Some(kind) = vocab.kinds.get_mut(s as usize) {
            *kind = TokenKind::Normal;
        }
    }
    eog
}
