//! Tokenizers of Hugging Face checkpoints: `tokenizer.json` runs through the `tokenizers`
//! crate, while the vocabulary facts the engine needs (pieces, token kinds, special ids, the
//! end-of-generation set) are derived the same way as for GGUF files, by describing the
//! tokenizer in `tokenizer.ggml.*` terms and reading that description with [`super::vocab`].
//! `tokenizer_config.json` supplies the BOS/EOS tokens and `add_bos_token`;
//! `generation_config.json` may add end-of-generation ids.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use super::vocab::{Defaults, Meta, Specials, Vocab};
use super::Error;

/// The `tokenizers` side of an HF tokenizer.
pub(crate) struct HfModel {
    /// Splits control tokens out of the text (`parse_special`).
    with_special: tokenizers::Tokenizer,
    /// Encodes control-token spellings as plain text.
    without_special: tokenizers::Tokenizer,
    /// Pieces are GPT-2 byte-level strings (else SentencePiece `▁` pieces).
    pub(crate) byte_level: bool,
}

impl HfModel {
    /// Appends the ids of `text` (no BOS/EOS: the caller adds those).
    pub(crate) fn encode(
        &self,
        text: &str,
        parse_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), Error> {
        let t = if parse_special {
            &self.with_special
        } else {
            &self.without_special
        };
        let enc = t
            .encode_fast(text, false)
            .map_err(|e| Error::HfEncode(e.to_string()))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// The special-token settings of `tokenizer_config.json` (and `config.json` as fallback).
#[derive(Clone, Debug, Default)]
pub struct HfSpecials {
    /// `bos_token` text.
    pub bos_token: Option<String>,
    /// `eos_token` text.
    pub eos_token: Option<String>,
    /// `add_bos_token`, when the file says.
    pub add_bos: Option<bool>,
    /// `add_eos_token`, when the file says.
    pub add_eos: Option<bool>,
    /// Extra end-of-generation ids (`generation_config.json` `eos_token_id`).
    pub extra_eog: Vec<u32>,
    /// BOS id from `config.json`, used when no `bos_token` text is given.
    pub bos_id: Option<u32>,
    /// EOS id from `config.json`, used when no `eos_token` text is given.
    pub eos_id: Option<u32>,
}

impl HfSpecials {
    /// Reads the token fields of a parsed `tokenizer_config.json`.
    pub fn from_tokenizer_config(cfg: &serde_json::Map<String, Json>) -> Self {
        let token = |key: &str| match cfg.get(key) {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Object(o)) => o.get("content").and_then(Json::as_str).map(str::to_string),
            _ => None,
        };
        Self {
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
            add_bos: cfg.get("add_bos_token").and_then(Json::as_bool),
            add_eos: cfg.get("add_eos_token").and_then(Json::as_bool),
            ..Self::default()
        }
    }
}

/// Builds the tokenizer parts from `tokenizer.json` at `path`.
pub(crate) fn load(
    path: &Path,
    specials: &HfSpecials,
) -> Result<(Vocab, Specials, HfModel), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::HfLoad {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let json: Json = serde_json::from_str(&text).map_err(|e| Error::HfLoad {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let with_special: tokenizers::Tokenizer = text.parse().map_err(|e| Error::HfLoad {
        path: path.display().to_string(),
        reason: format!("{e}"),
    })?;
    let mut without_special = with_special.clone();
    without_special.set_encode_special_tokens(true);
    let byte_level = decoder_is_byte_level(json.get("decoder"))
        || decoder_is_byte_level(json.get("pre_tokenizer"));
    let byte_fallback = json
        .pointer("/model/byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);

    // Pieces and kinds in id order.
    let vocab_map = with_special.get_vocab(true);
    let n = vocab_map
        .values()
        .map(|&id| id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut pieces = vec![String::new(); n];
    let mut types = vec![0i32; n];
    for (piece, id) in &vocab_map {
        let i = *id as usize;
        pieces[i] = piece.clone();
        types[i] = if byte_fallback && super::vocab::parse_byte_token(piece).is_some() {
            6
        } else {
            1
        };
    }
    for (id, tok) in with_special.get_added_tokens_decoder() {
        if let Some(t) = types.get_mut(id as usize) {
            *t = if tok.special { 3 } else { 4 };
        }
    }
    // Gaps in the id space (rare) become unused slots with unique names.
    for (i, p) in pieces.iter_mut().enumerate() {
        if p.is_empty() {
            *p = format!("<mlcli_unused_{i}>");
            types[i] = 5;
        }
    }
    let unk = json
        .pointer("/model/unk_token")
        .and_then(Json::as_str)
        .and_then(|u| vocab_map.get(u).copied());
    if let Some(u) = unk {
        types[u as usize] = 2;
    }

    let id_of = |t: &Option<String>| t.as_ref().and_then(|s| vocab_map.get(s).copied());
    let bos = id_of(&specials.bos_token).or(specials.bos_id);
    let eos = id_of(&specials.eos_token).or(specials.eos_id);
    // Without an explicit `add_bos_token`, ask the tokenizer's own post-processor.
    let add_bos = match specials.add_bos {
        Some(b) => b,
        None => match (bos, with_special.encode_fast("a", true)) {
            (Some(b), Ok(enc)) => enc.get_ids().first() == Some(&b),
            _ => false,
        },
    };

    let mut meta: HashMap<String, Value> = HashMap::new();
    let model = if byte_level { "gpt2" } else { "llama" };
    meta.insert("tokenizer.ggml.model".into(), Value::String(model.into()));
    meta.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(pieces.into_iter().map(Value::String).collect()),
    );
    meta.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    meta.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(vec![Value::F32(0.0); n]),
    );
    if let Some(b) = bos {
        meta.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(b));
    }
    if let Some(e) = eos {
        meta.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(e));
    }
    meta.insert(
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(add_bos && bos.is_some()),
    );
    meta.insert(
        "tokenizer.ggml.add_eos_token".into(),
        Value::Bool(specials.add_eos.unwrap_or(false) && eos.is_some()),
    );
    meta.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false));
    let meta = Meta::new(&meta);
    let mut vocab = Vocab::read(&meta, true)?;
    let mut specials_out = Specials::read(&meta, &mut vocab, Defaults::none())?;
    specials_out.eog.extend(
        specials
            .extra_eog
            .iter()
            .copied()
            .filter(|&id| (id as usize) < n),
    );
    specials_out.eog.sort_unstable();
    specials_out.eog.dedup();
    Ok((
        vocab,
        specials_out,
        HfModel {
            with_special,
            without_special,
            byte_level,
        },
    ))
}

/// Whether a decoder (or pre-tokenizer) description is, or contains, GPT-2's ByteLevel.
fn decoder_is_byte_level(v: Option<&Json>) -> bool {
    let Some(v) = v else { return false };
    if v.get("type").and_then(Json::as_str) == Some("ByteLevel") {
        return true;
    }
    ["decoders", "pretokenizers"].iter().any(|k| {
        v.get(*k)
            .and_then(Json::as_array)
            .is_some_and(|a| a.iter().any(|d| decoder_is_byte_level(Some(d))))
    })
}
