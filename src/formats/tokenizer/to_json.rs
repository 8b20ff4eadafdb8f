//! Writes a GGUF tokenizer as a Hugging Face `tokenizer.json` that tokenizes the same way:
//! `gpt2` vocabularies become byte-level BPE with llama.cpp's pre-tokenizer regexes as `Split`
//! steps and the file's merges; `gemma4` ones BPE over `▁`-escaped text split into lines and
//! newline runs, with the file's merges and byte fallback; `llama` (SentencePiece)
//! vocabularies become BPE with byte
//! fallback whose merges are derived from the piece scores (a pair merges with the rank of
//! the score of the piece it forms, the rule SentencePiece's BPE applies).

use candle_core::quantized::gguf_file::Content;
use serde_json::{json, Map, Value as Json};

use super::vocab::{Meta, TokenKind};
use super::{pretokenize, Error, Model, Tokenizer};

/// The `tokenizer.json` document for the tokenizer of `content`.
pub fn tokenizer_json(content: &Content) -> Result<Json, Error> {
    let tok = Tokenizer::from_gguf(content)?;
    let meta = Meta::new(&content.metadata);
    let vocab = &tok.vocab;
    let mut added = Vec::new();
    let mut model_vocab = Map::new();
    for (id, (piece, kind)) in vocab.pieces.iter().zip(&vocab.kinds).enumerate() {
        model_vocab.insert(piece.to_string(), json!(id));
        if matches!(
            kind,
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
        ) {
            added.push(json!({
                "id": id,
                "content": piece.to_string(),
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": *kind != TokenKind::UserDefined,
            }));
        }
    }
    let post_processor = match (tok.specials.add_bos, tok.specials.bos) {
        (true, Some(bos)) => {
            let piece = vocab.pieces[bos as usize].to_string();
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": piece, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": piece, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": piece, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {piece.clone(): {"id": piece, "ids": [bos], "tokens": [piece]}},
            })
        }
        _ => Json::Null,
    };
    let (normalizer, pre_tokenizer, decoder, model) = match &tok.model {
        Model::Bpe(bpe) if bpe.escaped_spaces() => {
            let merges = meta
                .strings("tokenizer.ggml.merges")?
                .ok_or(Error::MissingKey {
                    key: "tokenizer.ggml.merges",
                })?;
            (
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}),
                json!({"type": "Split", "pattern": {"Regex": "[^\n]+|[\n]+"},
                       "behavior": "Isolated", "invert": false}),
                json!({"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                    {"type": "ByteFallback"},
                    {"type": "Fuse"},
                ]}),
                json!({
                    "type": "BPE", "dropout": null, "unk_token": null,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": true, "ignore_merges": false,
                    "vocab": model_vocab, "merges": merges,
                }),
            )
        }
        Model::Bpe(bpe) => {
            let pre =
                pretokenize::lookup(bpe.pre_name()).ok_or_else(|| Error::UnknownPreTokenizer {
                    pre: bpe.pre_name().to_string(),
                })?;
            let mut steps: Vec<Json> = pre
                .spec
                .patterns
                .iter()
                .map(|p| {
                    json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false})
                })
                .collect();
            steps.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
            let merges = meta
                .strings("tokenizer.ggml.merges")?
                .ok_or(Error::MissingKey {
                    key: "tokenizer.ggml.merges",
                })?;
            (
                Json::Null,
                json!({"type": "Sequence", "pretokenizers": steps}),
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
                json!({
                    "type": "BPE", "dropout": null, "unk_token": null,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": false,
                    "ignore_merges": pre.spec.ignore_merges,
                    "vocab": model_vocab, "merges": merges,
                }),
            )
        }
        Model::Spm(_) => {
            let mut norms = Vec::new();
            if tok.specials.add_space_prefix {
                norms.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            norms.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if tok.specials.add_space_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let unk = vocab
                .kinds
                .iter()
                .position(|k| *k == TokenKind::Unknown)
                .map(|i| vocab.pieces[i].to_string());
            (
                json!({"type": "Sequence", "normalizers": norms}),
                Json::Null,
                json!({"type": "Sequence", "decoders": decoders}),
                json!({
                    "type": "BPE", "dropout": null, "unk_token": unk,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                    "vocab": model_vocab, "merges": spm_merges(&tok),
                }),
            )
        }
        Model::Hf(_) => {
            return Err(Error::HfEncode(
                "already a tokenizer.json tokenizer; nothing to convert".into(),
            ))
        }
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    }))
}

/// Merges for a SentencePiece vocabulary: every split of a normal piece into two normal
/// pieces, ordered by the score of the piece they form (highest first), then by id.
fn spm_merges(tok: &Tokenizer) -> Vec<Json> {
    let v = &tok.vocab;
    let normal = |id: u32| v.kinds.get(id as usize) == Some(&TokenKind::Normal);
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in v.pieces.iter().enumerate() {
        let id = id as u32;
        if !normal(id) {
            continue;
        }
        for (i, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(i);
            if let (Some(ia), Some(ib)) = (v.id(a), v.id(b)) {
                if normal(ia) && normal(ib) {
                    merges.push((v.scores[id as usize], id, ia, ib));
                }
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges
        .into_iter()
        .map(|(_, _, a, b)| json!([&v.pieces[a as usize], &v.pieces[b as usize]]))
        .collect()
}
