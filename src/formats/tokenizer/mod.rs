//! The tokenizer a GGUF file carries in its own `tokenizer.ggml.*` metadata, with llama.cpp parity.
//!
//! Three vocabulary models are supported, as llama.cpp names them in `tokenizer.ggml.model`:
//! `gpt2` (byte-level BPE with merges, pre-tokenized by the regexes that `tokenizer.ggml.pre`
//! selects), `llama` (SentencePiece BPE driven by token scores, with `<0xNN>` byte fallback)
//! and `gemma4` (SentencePiece-style BPE with merges: `▁` for spaces, raw UTF-8, lines and
//! newline runs as pre-tokens, `<0xNN>` byte fallback).
//! Control and user-defined tokens are split out of the text first, with the result of
//! llama.cpp's `tokenizer_st_partition`; token kinds, special ids and the end-of-generation set
//! follow `llama_vocab::load`. The reference is ggml-org/llama.cpp@0c1e57098 (the copy in the
//! llama-cpp-python 0.3.36 sdist): the tests hold its outputs for the two test models.

mod bpe;
mod hf;
mod pieces;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod to_json;
mod vocab;

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;

use candle_core::quantized::gguf_file::Content;

use bpe::Bpe;
use special::{Fragment, SpecialMatcher};
use spm::Spm;
use vocab::{Specials, TokenKind, Vocab};

pub use hf::HfSpecials;
pub use pretokenize::SUPPORTED_PRE_TOKENIZERS;
pub use stream::StreamDecoder;
pub use to_json::tokenizer_json;

/// The `tokenizer.ggml.model` values this module can run.
pub const SUPPORTED_MODELS: &[&str] = &["gpt2", "llama", "gemma4"];

/// Why a tokenizer could not be built from GGUF metadata, or could not encode a text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metadata key the tokenizer needs is absent.
    #[error("GGUF metadata has no `{key}`, which the tokenizer needs")]
    MissingKey {
        /// The absent key.
        key: &'static str,
    },
    /// A metadata key holds a value of the wrong type.
    #[error("GGUF metadata `{key}` should be {expected}, found {found}")]
    WrongType {
        /// The offending key.
        key: &'static str,
        /// What the key should hold.
        expected: &'static str,
        /// What it holds.
        found: String,
    },
    /// A per-token array is shorter than the token list.
    #[error(
        "GGUF metadata `{key}` has {found} entries, expected at least {expected} (one per token)"
    )]
    TooShort {
        /// The offending key.
        key: &'static str,
        /// Entries needed: the number of tokens.
        expected: usize,
        /// Entries present.
        found: usize,
    },
    /// `tokenizer.ggml.model` names a vocabulary model this module does not implement.
    #[error("unsupported tokenizer model `{model}` in tokenizer.ggml.model (supported: {})", SUPPORTED_MODELS.join(", "))]
    UnsupportedModel {
        /// The value found in the file.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this module does not know; it refuses to guess.
    #[error("unknown pre-tokenizer `{pre}` in tokenizer.ggml.pre (supported: {})", SUPPORTED_PRE_TOKENIZERS.join(", "))]
    UnknownPreTokenizer {
        /// The value found in the file.
        pre: String,
    },
    /// The strings of a metadata array pass the 4 GiB a tokenizer holds in all.
    #[error("GGUF metadata `{key}` holds more than 4 GiB of text, more than a tokenizer holds")]
    TooLarge {
        /// The offending key.
        key: &'static str,
    },
    /// The same piece appears twice in `tokenizer.ggml.tokens`.
    #[error("duplicate token {piece:?} in tokenizer.ggml.tokens: ids {first} and {second}")]
    DuplicateToken {
        /// The repeated piece.
        piece: String,
        /// Its first id.
        first: u32,
        /// Its second id.
        second: u32,
    },
    /// The metadata asks for a special token to be added but does not say which one it is.
    #[error("`{flag}` is true, but `{id_key}` is not set")]
    MissingSpecialToken {
        /// The `add_*_token` flag.
        flag: &'static str,
        /// The id key that should name the token.
        id_key: &'static str,
    },
    /// A pre-tokenizer regex did not compile (a bug in the table, reported rather than hidden).
    #[error("pre-tokenizer `{pre}`: regex {pattern:?} does not compile: {message}")]
    Regex {
        /// The pre-tokenizer name.
        pre: &'static str,
        /// The pattern.
        pattern: &'static str,
        /// The regex engine's message.
        message: String,
    },
    /// A Hugging Face `tokenizer.json` could not be read or parsed.
    #[error("{path}: {reason}")]
    HfLoad {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The `tokenizers` crate failed to encode a text.
    #[error("tokenizer.json: {0}")]
    HfEncode(String),
    /// A byte had to be encoded through byte fallback, but the vocabulary has no token for it.
    #[error("the vocabulary has no byte-fallback token for byte 0x{byte:02X} (neither <0x{byte:02X}> nor the raw byte)")]
    NoByteToken {
        /// The byte.
        byte: u8,
    },
}

/// How [`Tokenizer::encode`] treats special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add the special tokens the GGUF asks for (llama.cpp's `add_special`): BOS in front when
    /// `tokenizer.ggml.add_bos_token` says so (absent: true for `llama`, false for `gpt2` except
    /// the llama3/tekken/chameleon pre-tokenizers), EOS at the end when `add_eos_token` says so.
    pub add_bos: bool,
    /// Text spelling a control token (`<|im_start|>`, `<start_of_turn>`) becomes that token
    /// (llama.cpp's `parse_special`). User-defined tokens are split out either way, as llama.cpp
    /// and HF tokenizers do.
    pub parse_special: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            add_bos: true,
            parse_special: false,
        }
    }
}

/// The piece-level algorithm behind a vocabulary.
enum Model {
    /// `gpt2`: byte-level BPE.
    Bpe(Bpe),
    /// `llama`: SentencePiece BPE over scores.
    Spm(Spm),
    /// A Hugging Face `tokenizer.json`, run by the `tokenizers` crate.
    Hf(Box<hf::HfModel>),
}

/// A tokenizer built from a GGUF file's metadata or a Hugging Face `tokenizer.json`; cheap to
/// share across threads.
pub struct Tokenizer {
    vocab: Vocab,
    specials: Specials,
    matcher: SpecialMatcher,
    model: Model,
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata, as llama.cpp's `llama_vocab::load`.
    pub fn from_gguf(content: &Content) -> Result<Self, Error> {
        let meta = vocab::Meta::new(&content.metadata);
        let model_name = meta
            .string("tokenizer.ggml.model")?
            .ok_or(Error::MissingKey {
                key: "tokenizer.ggml.model",
            })?;
        let is_bpe = match model_name {
            "gpt2" => true,
            "llama" => false,
            "gemma4" => return Self::from_gguf_escaped_bpe(&meta),
            other => {
                return Err(Error::UnsupportedModel {
                    model: other.to_string(),
                })
            }
        };
        // llama.cpp falls back to `default` when a BPE file has no pre-tokenizer key.
        let pre = if is_bpe {
            let name = meta.string("tokenizer.ggml.pre")?.unwrap_or("default");
            Some(
                pretokenize::lookup(name).ok_or_else(|| Error::UnknownPreTokenizer {
                    pre: name.to_string(),
                })?,
            )
        } else {
            None
        };
        let mut vocab = Vocab::read(&meta, !is_bpe)?;
        let defaults = match pre {
            Some(pre) => vocab::Defaults::bpe(pre.spec.add_bos, pre.spec.clears_bos),
            None => vocab::Defaults::spm(),
        };
        let specials = Specials::read(&meta, &mut vocab, defaults)?;
        let model = match pre {
            Some(pre) => Model::Bpe(Bpe::new(&meta, pre)?),
            None => Model::Spm(Spm::new(&vocab)),
        };
        let matcher = SpecialMatcher::new(&vocab);
        Ok(Self {
            vocab,
            specials,
            matcher,
            model,
        })
    }

    /// `gemma4`: llama.cpp's BPE vocabulary with its Gemma 4 pre-tokenizer. No special id has
    /// a default, and BOS is always added (llama.cpp overrides a file's `add_bos_token`).
    fn from_gguf_escaped_bpe(meta: &vocab::Meta<'_>) -> Result<Self, Error> {
        let mut vocab = Vocab::read(meta, false)?;
        let mut specials = Specials::read(meta, &mut vocab, vocab::Defaults::none())?;
        specials.add_bos = true;
        let model = Model::Bpe(Bpe::escaped(meta, &vocab)?);
        let matcher = SpecialMatcher::new(&vocab);
        Ok(Self {
            vocab,
            specials,
            matcher,
            model,
        })
    }

    /// Builds the tokenizer of a Hugging Face checkpoint from its `tokenizer.json`, with the
    /// special-token settings of its `tokenizer_config.json` / `generation_config.json`.
    pub fn from_hf(tokenizer_json: &std::path::Path, specials: &HfSpecials) -> Result<Self, Error> {
        let (vocab, specials, model) = hf::load(tokenizer_json, specials)?;
        let matcher = SpecialMatcher::new(&vocab);
        Ok(Self {
            vocab,
            specials,
            matcher,
            model: Model::Hf(Box::new(model)),
        })
    }

    /// Encodes `text` into token ids exactly as llama.cpp's `llama_tokenize` would (for a
    /// `tokenizer.json`, as the `tokenizers` crate does, BOS/EOS added by the same rules).
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Result<Vec<u32>, Error> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let specials = &self.specials;
        if opts.add_bos && specials.add_bos {
            out.extend(specials.bos);
        }
        if let Model::Hf(h) = &self.model {
            h.encode(text, opts.parse_special, &mut out)?;
            if opts.add_bos && specials.add_eos {
                out.extend(specials.eos);
            }
            return Ok(out);
        }
        let fragments = self
            .matcher
            .partition(text, &self.vocab, opts.parse_special);
        match &self.model {
            Model::Bpe(bpe) => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => bpe.encode(&self.vocab, t, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm(spm) => {
                // llama.cpp puts the space prefix in front of every text that follows a special
                // token, the start of the input counting as one.
                let mut prev_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            let prefix = specials.add_space_prefix && prev_special;
                            spm.encode(&self.vocab, t, prefix, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Hf(_) => {}
        }
        if opts.add_bos && specials.add_eos {
            out.extend(specials.eos);
        }
        Ok(out)
    }

    /// Decodes ids to text: the concatenation of every piece's bytes, control and unknown tokens
    /// rendered as nothing (llama.cpp's detokenize without `special`), invalid UTF-8 replaced.
    /// Ids outside the vocabulary render as nothing.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.piece_bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw vocabulary string of `id` (`▁` for spaces in `llama` vocabularies, `Ġ` and other
    /// byte-level characters in `gpt2` ones).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.vocab.pieces.get(id as usize)
    }

    /// The number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.pieces.len()
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.specials.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.specials.eos
    }

    /// Whether encoding with [`EncodeOptions::add_bos`] prepends BOS (the GGUF's `add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.specials.add_bos
    }

    /// llama.cpp's end-of-generation set, sorted: EOS, EOT, EOM, the FIM pad/repo/separator
    /// tokens, and every token whose text marks an end (`<|im_end|>`, `<end_of_turn>`, ...).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.specials.eog
    }

    /// Whether `id` ends generation (is in [`Tokenizer::end_of_generation_ids`]).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.specials.eog.binary_search(&id).is_ok()
    }

    /// Whether `id` is a control or unknown token: matched in text only with
    /// [`EncodeOptions::parse_special`], rendered as nothing by [`Tokenizer::decode`].
    pub fn is_control(&self, id: u32) -> bool {
        matches!(
            self.vocab.kinds.get(id as usize),
            Some(TokenKind::Control | TokenKind::Unknown)
        )
    }

    /// The id whose vocabulary string is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The `tokenizer.ggml.model` this tokenizer runs: `"gpt2"`, `"llama"` or `"gemma4"`, or
    /// `"tokenizer.json"` for a Hugging Face tokenizer.
    pub fn kind(&self) -> &str {
        match &self.model {
            Model::Bpe(b) if b.escaped_spaces() => "gemma4",
            Model::Bpe(_) => "gpt2",
            Model::Spm(_) => "llama",
            Model::Hf(_) => "tokenizer.json",
        }
    }

    /// The `tokenizer.ggml.pre` pre-tokenizer in use (`gpt2` vocabularies only).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        match &self.model {
            Model::Bpe(bpe) => Some(bpe.pre_name()),
            Model::Spm(_) | Model::Hf(_) => None,
        }
    }

    /// An incremental decoder that yields text as ids arrive, never splitting a UTF-8 character.
    pub fn stream(&self) -> StreamDecoder<&Self> {
        StreamDecoder::new(self)
    }

    /// The bytes of one token as llama.cpp's `token_to_piece` with `special` renders them:
    /// control and unknown tokens as their text, the others as [`Tokenizer::decode`] does.
    /// (llama.cpp's `detokenize` also drops the leading space of a SentencePiece token in
    /// vocabularies that add a space prefix; this does not.)
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        match (
            self.vocab.kinds.get(id as usize),
            self.vocab.pieces.get(id as usize),
        ) {
            (Some(TokenKind::Control | TokenKind::Unknown), Some(piece)) => {
                out.extend_from_slice(piece.as_bytes())
            }
            _ => self.piece_bytes(id, &mut out),
        }
        out
    }

    /// Appends the bytes `id` decodes to, as llama.cpp's `token_to_piece` without `special`.
    fn piece_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let (Some(piece), Some(kind)) = (
            self.vocab.pieces.get(id as usize),
            self.vocab.kinds.get(id as usize),
        ) else {
            return;
        };
        match kind {
            TokenKind::UserDefined => out.extend_from_slice(piece.as_bytes()),
            TokenKind::Normal => match &self.model {
                Model::Bpe(b) if b.escaped_spaces() => spm::decode_piece(piece, out),
                Model::Bpe(_) => bpe::decode_piece(piece, out),
                Model::Spm(_) => spm::decode_piece(piece, out),
                Model::Hf(h) if h.byte_level => bpe::decode_piece(piece, out),
                Model::Hf(_) => spm::decode_piece(piece, out),
            },
            TokenKind::Byte => out.extend(vocab::parse_byte_token(piece)),
            TokenKind::Control | TokenKind::Unknown | TokenKind::Unused | TokenKind::Undefined => {}
        }
    }
}
