//! Tests of the whole tokenizer: parity with llama.cpp on the real test models, and metadata
//! handling on hand-built GGUF metadata.

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

use super::testdata::{self, Case, Extra, Greedy};
use super::{EncodeOptions, Error, Tokenizer};
use crate::models::testing::{real_model, GEMMA3, SMOLLM2};

/// Reads a real test model's metadata (the model is fetched on first use).
fn model_content(file: &str) -> Content {
    let path = real_model(file);
    let mut f =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("test model {}: {e}", path.display()));
    Content::read(&mut f).expect("test model is a readable GGUF file")
}

fn load(file: &'static str, cell: &'static OnceLock<Tokenizer>) -> &'static Tokenizer {
    cell.get_or_init(|| Tokenizer::from_gguf(&model_content(file)).expect("tokenizer builds"))
}

fn smollm2() -> &'static Tokenizer {
    static CELL: OnceLock<Tokenizer> = OnceLock::new();
    load(SMOLLM2, &CELL)
}

fn gemma3() -> &'static Tokenizer {
    static CELL: OnceLock<Tokenizer> = OnceLock::new();
    load(GEMMA3, &CELL)
}

const PARSED: EncodeOptions = EncodeOptions {
    add_bos: true,
    parse_special: true,
};
const PLAIN: EncodeOptions = EncodeOptions {
    add_bos: true,
    parse_special: false,
};

/// Streams `ids` one by one and checks each piece is whole text; returns the concatenation.
fn stream_all(tok: &Tokenizer, ids: &[u32], expect_clean: bool) -> String {
    let mut stream = tok.stream();
    let mut text = String::new();
    for &id in ids {
        let piece = stream.push(id);
        if expect_clean {
            assert!(
                !piece.contains('\u{FFFD}'),
                "piece for id {id} splits a character: {piece:?}"
            );
        }
        text.push_str(&piece);
    }
    text.push_str(&stream.flush());
    text
}

fn check_parity(tok: &Tokenizer, cases: &[Case], extra: &[Extra], greedy: &Greedy) {
    let mut failures = Vec::new();
    for (text, ids) in cases {
        let got = tok.encode(text, PARSED).expect("encodes");
        if got != *ids {
            failures.push(format!("{text:?}: expected {ids:?}, got {got:?}"));
        }
    }
    for (text, parsed, plain) in extra {
        for (opts, ids) in [(PARSED, parsed), (PLAIN, plain)] {
            let got = tok.encode(text, opts).expect("encodes");
            if got != *ids {
                let mode = if opts.parse_special {
                    "parsed"
                } else {
                    "plain"
                };
                failures.push(format!("{text:?} ({mode}): expected {ids:?}, got {got:?}"));
            }
        }
    }
    let prompt = tok.encode(greedy.prompt, PLAIN).expect("encodes");
    if prompt != greedy.prompt_ids {
        failures.push(format!(
            "prompt {:?}: expected {:?}, got {prompt:?}",
            greedy.prompt, greedy.prompt_ids
        ));
    }
    assert!(
        failures.is_empty(),
        "mismatches with llama.cpp:\n{}",
        failures.join("\n")
    );

    assert_eq!(tok.decode(greedy.generated_ids), greedy.generated_text);
    assert_eq!(
        stream_all(tok, greedy.generated_ids, true),
        greedy.generated_text
    );
    // Plain text (no control tokens) decodes back to itself, whole or streamed.
    for (text, _) in cases
        .iter()
        .filter(|(t, _)| !t.contains("<|im_") && !t.contains("_of_turn>"))
    {
        let ids = tok.encode(text, PLAIN).expect("encodes");
        let ids = &ids[usize::from(tok.adds_bos())..];
        assert_eq!(tok.decode(ids), *text, "round trip of {text:?}");
        assert_eq!(
            stream_all(tok, ids, true),
            *text,
            "streamed round trip of {text:?}"
        );
    }
}

#[test]
fn gguf_tokenizer_matches_llama_cpp_smollm2() {
    check_parity(
        smollm2(),
        testdata::SMOLLM2_CASES,
        testdata::SMOLLM2_EXTRA,
        &testdata::SMOLLM2_GREEDY,
    );
}

#[test]
fn gguf_tokenizer_matches_llama_cpp_gemma3() {
    check_parity(
        gemma3(),
        testdata::GEMMA3_CASES,
        testdata::GEMMA3_EXTRA,
        &testdata::GEMMA3_GREEDY,
    );
}

#[test]
fn real_vocabularies_report_llama_cpp_special_tokens() {
    let s = smollm2();
    assert_eq!(
        (s.kind(), s.vocab_size(), s.bos_id(), s.eos_id()),
        ("gpt2", 49152, Some(1), Some(2))
    );
    assert_eq!(s.pre_tokenizer(), Some("smollm"));
    assert!(!s.adds_bos());
    assert_eq!(s.end_of_generation_ids(), &[0, 2, 4]);
    assert_eq!((s.piece(314), s.token_id("Ġis")), (Some("Ġis"), Some(314)));

    let g = gemma3();
    assert_eq!(
        (g.kind(), g.vocab_size(), g.bos_id(), g.eos_id()),
        ("llama", 262144, Some(2), Some(1))
    );
    assert!(g.adds_bos());
    // Current llama.cpp also lists "</s>" (for PaddleOCR), which turns Gemma 3's ordinary
    // "</s>" piece into a control token.
    assert_eq!(g.end_of_generation_ids(), &[1, 106, 212]);
    assert_eq!(g.piece(212), Some("</s>"));
    assert_eq!(
        (g.piece(563), g.token_id("<end_of_turn>")),
        (Some("▁is"), Some(106))
    );
}

#[test]
fn control_tokens_are_parsed_only_with_parse_special() {
    let s = smollm2();
    let text = "<|im_start|>user\nhi<|im_end|>\n";
    assert_eq!(
        s.encode(text, PARSED).expect("encodes"),
        [1, 4093, 198, 6004, 2, 198]
    );
    let plain = s.encode(text, PLAIN).expect("encodes");
    assert!(
        !plain.contains(&1) && !plain.contains(&2),
        "control ids in {plain:?}"
    );
    assert_eq!(s.decode(&plain), text);
    // Parsed control tokens decode to nothing.
    assert_eq!(s.decode(&[1, 4093, 198, 6004, 2, 198]), "user\nhi\n");

    let g = gemma3();
    let turn = "<start_of_turn>user\n";
    assert_eq!(
        g.encode(turn, PARSED).expect("encodes"),
        [2, 105, 2364, 107]
    );
    let plain = g.encode(turn, PLAIN).expect("encodes");
    assert!(!plain.contains(&105), "control id in {plain:?}");
    // User-defined tokens ("\n" is 107) are split out either way, as in llama.cpp.
    assert_eq!(plain.last(), Some(&107));
}

#[test]
fn byte_fallback_round_trips_and_streams_whole_characters() {
    let g = gemma3();
    let is_byte = |id: &u32| (238..238 + 256).contains(id);
    // Characters rare enough for Gemma 3 to spell with <0xNN> tokens.
    let text = [
        "\u{13000}",
        "\u{1D11E}",
        "\u{10FFFD}",
        "\u{E000}",
        "\u{2FA1D}",
    ]
    .into_iter()
    .find(|t| g.encode(t, PLAIN).expect("encodes").iter().any(is_byte))
    .expect("one of the candidates needs byte fallback");
    let ids = g.encode(text, PLAIN).expect("encodes");
    assert!(ids[1..].iter().all(is_byte), "{text:?} -> {ids:?}");
    assert_eq!(g.decode(&ids), text);
    let mut stream = g.stream();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id)).collect();
    assert!(
        pieces[..pieces.len() - 1].iter().all(String::is_empty),
        "{pieces:?}"
    );
    assert_eq!(pieces.last().map(String::as_str), Some(text));
    assert_eq!(stream.flush(), "");
}

#[test]
fn byte_level_pieces_stream_whole_characters() {
    let s = smollm2();
    let text = "emoji 😀👍🏽 🇫🇷 and ünïcödé 日本語";
    let ids = s.encode(text, PLAIN).expect("encodes");
    assert_eq!(s.decode(&ids), text);
    assert_eq!(stream_all(s, &ids, true), text);
    // A truncated character left at the end becomes U+FFFD on flush.
    let smiley = s.encode("😀", PLAIN).expect("encodes");
    assert!(
        smiley.len() > 1,
        "U+1F600 takes several byte-level pieces: {smiley:?}"
    );
    let mut stream = s.stream();
    assert_eq!(stream.push(smiley[0]), "");
    assert_eq!(stream.flush(), "\u{FFFD}");
}

/// Hand-built GGUF metadata.
pub(super) fn content(entries: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

pub(super) fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A tiny gpt2 vocabulary: the bytes it needs, two merges, one control token.
pub(super) fn tiny_gpt2(pre: &str) -> Content {
    let tokens = ["<|end|>", "a", "b", "c", "Ġ", "ab", "abc", "Ġab"];
    let mut types = vec![Value::I32(1); tokens.len()];
    types[0] = Value::I32(3);
    content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strings(&["a b", "ab c", "Ġ ab"])),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ])
}

#[test]
fn tiny_gpt2_vocabulary_merges_by_rank() {
    let tok = Tokenizer::from_gguf(&tiny_gpt2("gpt-2")).expect("builds");
    assert_eq!(tok.encode("abc ab", PARSED).expect("encodes"), [6, 7]);
    assert_eq!(tok.encode("abc<|end|>", PARSED).expect("encodes"), [6, 0]);
    // Unparsed, the control text goes through BPE; its characters are not in this vocabulary.
    assert_eq!(tok.encode("abc<|end|>", PLAIN).expect("encodes"), [6]);
    assert_eq!(tok.decode(&[6, 7, 0]), "abc ab");
    assert_eq!(tok.end_of_generation_ids(), &[0]);
}

#[test]
fn unknown_pre_tokenizer_is_refused_with_the_supported_list() {
    let err = Tokenizer::from_gguf(&tiny_gpt2("my-new-llm"))
        .err()
        .expect("refused");
    assert!(matches!(&err, Error::UnknownPreTokenizer { pre } if pre == "my-new-llm"));
    let msg = err.to_string();
    assert!(
        msg.contains("my-new-llm") && msg.contains("smollm") && msg.contains("llama-bpe"),
        "{msg}"
    );
}

#[test]
fn unknown_model_is_refused_with_the_supported_list() {
    let c = content(vec![("tokenizer.ggml.model", Value::String("t5".into()))]);
    let err = Tokenizer::from_gguf(&c).err().expect("refused");
    assert!(matches!(&err, Error::UnsupportedModel { model } if model == "t5"));
    assert!(err.to_string().contains("gpt2, llama, gemma4"), "{err}");
}

#[test]
fn missing_and_ill_typed_keys_are_named() {
    let err = Tokenizer::from_gguf(&content(vec![]))
        .err()
        .expect("refused");
    assert!(matches!(
        err,
        Error::MissingKey {
            key: "tokenizer.ggml.model"
        }
    ));

    let mut c = tiny_gpt2("gpt-2");
    c.metadata.remove("tokenizer.ggml.merges");
    let err = Tokenizer::from_gguf(&c).err().expect("refused");
    assert!(matches!(
        err,
        Error::MissingKey {
            key: "tokenizer.ggml.merges"
        }
    ));

    let mut c = tiny_gpt2("gpt-2");
    c.metadata
        .insert("tokenizer.ggml.token_type".into(), strings(&["1"; 8]));
    let err = Tokenizer::from_gguf(&c).err().expect("refused");
    assert!(
        matches!(
            err,
            Error::WrongType {
                key: "tokenizer.ggml.token_type",
                ..
            }
        ),
        "{err}"
    );

    let mut c = tiny_gpt2("gpt-2");
    c.metadata
        .insert("tokenizer.ggml.add_bos_token".into(), Value::U8(1));
    let err = Tokenizer::from_gguf(&c).err().expect("refused");
    assert!(
        err.to_string().contains("tokenizer.ggml.add_bos_token"),
        "{err}"
    );

    let mut c = tiny_gpt2("gpt-2");
    c.metadata.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(vec![Value::I32(1); 3]),
    );
    let err = Tokenizer::from_gguf(&c).err().expect("refused");
    assert!(
        matches!(
            err,
            Error::TooShort {
                expected: 8,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}

/// A tiny `gemma4` vocabulary: byte tokens, two merges, newline pieces, control tokens.
fn tiny_gemma4() -> Content {
    let tokens = [
        "<pad>", "<eos>", "<bos>", "<0x0A>", "<0xC3>", "<0xA9>", "▁", "a", "b", "c", "ab", "▁ab",
        "\n", "\n\n", "<turn|>",
    ];
    let types = [3, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 3].map(Value::I32);
    content(vec![
        ("tokenizer.ggml.model", Value::String("gemma4".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types.to_vec())),
        ("tokenizer.ggml.merges", strings(&["a b", "▁ ab"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
        // llama.cpp adds BOS for Gemma 4 whatever the file says.
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ])
}

#[test]
fn gemma4_vocabulary_escapes_spaces_splits_lines_and_falls_back_to_bytes() {
    let tok = Tokenizer::from_gguf(&tiny_gemma4()).expect("builds");
    assert_eq!(tok.kind(), "gemma4");
    // "ab▁ab" merges a+b twice, then ▁+ab; "\n\n" is a piece, taken whole; é is two bytes.
    let ids = tok.encode("ab ab\n\nc é", PARSED).expect("encodes");
    assert_eq!(ids, [2, 10, 11, 13, 9, 6, 4, 5]);
    assert_eq!(tok.decode(&ids[1..]), "ab ab\n\nc é");
    // A run of newlines that is no piece goes through the merges (none here).
    assert_eq!(
        tok.encode("\n\n\n", PLAIN).expect("encodes"),
        [2, 12, 12, 12]
    );
    assert_eq!(
        tok.encode("ab<turn|>", PARSED).expect("encodes"),
        [2, 10, 14]
    );
    assert!(tok.is_end_of_generation(14) && tok.is_end_of_generation(1));
    // Exported, the `tokenizers` crate reads it back and splits the same way (where llama.cpp's
    // whole-newline-run rule does not apply: it has no counterpart there).
    let json = super::tokenizer_json(&tiny_gemma4()).expect("converts");
    let hf = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).expect("reads");
    let text = "ab ab\nc é\n";
    let ours = tok.encode(text, PLAIN).expect("encodes");
    let theirs = hf.encode(text, false).expect("encodes");
    assert_eq!(theirs.get_ids(), &ours[1..]);
}
