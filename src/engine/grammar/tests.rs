//! The grammar engine on a real vocabulary: masks beside the forward pass, forced tool
//! calls, markers that are control tokens.

use super::*;
use crate::formats::json_layout;
use crate::formats::tool_calls::Format;
use crate::models::testing::{real_model, SMOLLM2};

fn smollm2() -> Arc<Tokenizer> {
    let path = real_model(SMOLLM2);
    let mut f = std::fs::File::open(&path).expect("test model opens");
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).expect("a GGUF");
    Arc::new(Tokenizer::from_gguf(&content).expect("tokenizer builds"))
}

#[test]
fn masks_computed_beside_the_forward_pass_equal_masks_computed_in_line() {
    let tokenizer = smollm2();
    let vocab = Vocabulary::new(Arc::clone(&tokenizer)).unwrap();
    let schema = serde_json::json!({"type": "object",
        "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["city", "n"], "additionalProperties": false});
    let constraint = Constraint::JsonSchema(schema.clone());
    let mut overlapped = vocab.matcher(&constraint).unwrap();
    let mut in_line = Matcher::new(
        vocab
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(json_layout::bounded(
                schema,
            ))),
    );
    let text = r#"{"city": "Paris", "n": 3}"#;
    let opts = EncodeOptions {
        add_bos: false,
        parse_special: false,
    };
    let tokens = tokenizer.encode(text, opts).unwrap();
    let n = tokenizer.vocab_size();
    for &t in &tokens {
        let mut logits = vec![0.0f32; n];
        overlapped.mask(&mut logits).unwrap();
        let expected = in_line.compute_mask_or_eos().unwrap();
        let allowed: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
        let want: Vec<bool> = (0..n).map(|i| expected.is_allowed(i as TokenId)).collect();
        assert_eq!(allowed, want, "the mask before token {t}");
        assert!(allowed[t as usize], "token {t} of {text} allowed");
        overlapped.accept(t).unwrap();
        in_line.consume_token(t).unwrap();
        assert_eq!(overlapped.is_done(), in_line.is_stopped());
    }
    // Closed object: only the end may follow, then the matcher stops.
    let mut logits = vec![0.0f32; n];
    overlapped.mask(&mut logits).unwrap();
    let eos = tokenizer.eos_id().unwrap() as usize;
    assert!(logits[eos].is_finite());
    assert_eq!(logits.iter().filter(|l| l.is_finite()).count(), 1);
}

/// Feeds `text`'s tokens through a fresh matcher for `constraint`: how many it accepted
/// before one was masked out (all of them: the text is allowed).
fn accepted(
    vocab: &Vocabulary,
    tokenizer: &Tokenizer,
    constraint: &Constraint,
    text: &str,
) -> usize {
    let opts = EncodeOptions {
        add_bos: false,
        parse_special: false,
    };
    let tokens = tokenizer.encode(text, opts).unwrap();
    let mut g = vocab.matcher(constraint).unwrap();
    for (i, &t) in tokens.iter().enumerate() {
        let mut logits = vec![0.0f32; tokenizer.vocab_size()];
        g.mask(&mut logits).unwrap();
        if !logits[t as usize].is_finite() {
            return i;
        }
        g.accept(t).unwrap();
    }
    tokens.len()
}

/// JSON under a constraint may be compact or indented, but its whitespace is bounded: a
/// model cannot fill its token budget with blanks inside an unfinished object.
#[test]
fn constrained_json_whitespace_is_bounded() {
    let tokenizer = smollm2();
    let vocab = Vocabulary::new(Arc::clone(&tokenizer)).unwrap();
    let tool = serde_json::json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}});
    let forced = Constraint::Lark(Format::Hermes.grammar(&[&tool], &|_| None).unwrap());
    for c in [Constraint::JsonObject, forced] {
        let wrap = |body: &str| match c {
            Constraint::JsonObject => body.to_string(),
            _ => format!(
                "<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {body}}}\n</tool_call>"
            ),
        };
        // (tokens accepted, tokens in the text)
        let run = |body: &str| {
            let text = wrap(body);
            let opts = EncodeOptions {
                add_bos: false,
                parse_special: false,
            };
            let n = tokenizer.encode(&text, opts).unwrap().len();
            (accepted(&vocab, &tokenizer, &c, &text), n, text)
        };
        for body in [
            r#"{"city": "Paris"}"#,
            "{\n  \"city\": \"Paris\"\n}",
            "{\n\n\t\t\"city\":\n    \"Paris\"\n}",
        ] {
            let (a, n, text) = run(body);
            assert_eq!(a, n, "refused: {text:?}");
        }
        let (a, n, text) = run("{\"city\": \"Paris\"\n \n \n \n}");
        assert!(a < n, "allowed: {text:?}");
    }
}

#[test]
fn a_forced_gemma4_call_is_held_to_the_tools_schema() {
    let tokenizer = smollm2();
    let vocab = Vocabulary::new(Arc::clone(&tokenizer)).unwrap();
    let tool = serde_json::json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
            "opts": {"type": "object", "properties": {"exact": {"type": "boolean"}},
                     "required": ["exact"]}},
        "required": ["city", "unit"]}}});
    let grammar = Format::Gemma4.grammar(&[&tool], &|_| None).unwrap();
    let c = Constraint::Lark(grammar);
    let q = "<|\"|>";
    let call = |args: &str| format!("<|tool_call>call:get_weather{{{args}}}<tool_call|>");
    // (tokens accepted, tokens in the text)
    let all = |text: &str| {
        let n = tokenizer
            .encode(
                text,
                EncodeOptions {
                    add_bos: false,
                    parse_special: false,
                },
            )
            .unwrap()
            .len();
        (accepted(&vocab, &tokenizer, &c, text), n)
    };
    let ok = |args: &str| {
        let (a, n) = all(&call(args));
        assert_eq!(a, n, "refused: {args}");
    };
    let refused = |args: &str| {
        let (a, n) = all(&call(args));
        assert!(a < n, "allowed: {args}");
    };
    ok(&format!("city:{q}Paris{q},unit:{q}c{q}"));
    // A thought may come first (its markers are text in this vocabulary).
    let thought = "<|channel>thought\nThe user wants <weather>.<channel|>";
    let (a, n) = all(&format!(
        "{thought}{}",
        call(&format!("city:{q}Paris{q},unit:{q}c{q}"))
    ));
    assert_eq!(a, n, "a thought, then the call");
    ok(&format!(
        "city:{q}Paris{q},days:[1,2],opts:{{exact:true}},unit:{q}f{q}"
    ));
    refused(&format!("city:{q}Paris{q},unit:{q}kelvin{q}"));
    refused(&format!("city:{q}Paris{q}"));
    refused(&format!("unit:{q}c{q},city:{q}Paris{q}"));
    refused(&format!("city:{q}Paris{q},unit:{q}c{q},extra:1"));
    refused(&format!("city:{q}Llanfairpwllgwyngyll{q},unit:{q}c{q}"));
    refused(&format!("city:{q}Paris{q},days:[1,2,3],unit:{q}c{q}"));
    refused(&format!("city:{q}Paris{q},days:[1.5],unit:{q}c{q}"));
    refused(&format!("city:{q}Paris{q},opts:{{}},unit:{q}c{q}"));
    refused(&format!("city:3,unit:{q}c{q}"));
}

/// How many of `tokens` a fresh matcher for `constraint` accepts before one is masked out,
/// and whether it is then complete.
fn accepted_ids(
    vocab: &Vocabulary,
    n: usize,
    constraint: &Constraint,
    tokens: &[u32],
) -> (usize, bool) {
    let mut g = vocab.matcher(constraint).unwrap();
    for (i, &t) in tokens.iter().enumerate() {
        let mut logits = vec![0.0f32; n];
        g.mask(&mut logits).unwrap();
        if !logits[t as usize].is_finite() {
            return (i, false);
        }
        g.accept(t).unwrap();
    }
    (tokens.len(), g.is_done())
}

/// `text` as tokens, each of `markers` found in it as the control token `controls` gives
/// and the rest as ordinary tokens.
fn with_controls(tokenizer: &Tokenizer, text: &str, markers: &[(&str, u32)]) -> Vec<u32> {
    let opts = EncodeOptions {
        add_bos: false,
        parse_special: false,
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((at, m, id)) = markers
        .iter()
        .filter_map(|&(m, id)| Some((rest.find(m)?, m, id)))
        .min()
    {
        out.extend(tokenizer.encode(&rest[..at], opts).unwrap());
        out.push(id);
        rest = &rest[at + m.len()..];
    }
    out.extend(tokenizer.encode(rest, opts).unwrap());
    out
}

/// Gemma 4's and gpt-oss's markers are control tokens of their models, which the grammar
/// engine never matches against text: a forced call holds them as those tokens (here
/// SmolLM2's own control tokens stand in for them), and the same call spelled out of
/// ordinary tokens is refused at its first marker.
#[test]
fn markers_that_are_control_tokens_are_forced_as_those_tokens() {
    let tokenizer = smollm2();
    let vocab = Vocabulary::new(Arc::clone(&tokenizer)).unwrap();
    let n = tokenizer.vocab_size();
    let spare: Vec<u32> = (0..n as u32)
        .filter(|&i| {
            tokenizer.is_control(i)
                && !tokenizer.is_end_of_generation(i)
                && Some(i) != tokenizer.bos_id()
                && Some(i) != tokenizer.eos_id()
        })
        .take(5)
        .collect();
    assert_eq!(spare.len(), 5, "SmolLM2 has spare control tokens");
    let tool = serde_json::json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
            "note": {"type": "string", "maxLength": 4}},
        "required": ["city", "unit"]}}});
    for (format, text, plain_from) in [
        (
            Format::Gemma4,
            "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,note:<|\"|><|\"|>,unit:<|\"|>c<|\"|>}<tool_call|>",
            0,
        ),
        (
            Format::Gemma4,
            "<|channel>thought\nThey want <weather>.<channel|><|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,unit:<|\"|>f<|\"|>}<tool_call|>",
            0,
        ),
        (
            Format::Harmony,
            "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\", \"unit\": \"c\"}",
            0,
        ),
    ] {
        let markers: Vec<(&str, u32)> = format.markers().iter().copied().zip(spare.iter().copied()).collect();
        let controls = |m: &str| markers.iter().find_map(|&(t, id)| (t == m).then_some(id));
        let c = Constraint::Lark(format.grammar(&[&tool], &controls).unwrap());
        let tokens = with_controls(&tokenizer, text, &markers);
        assert_eq!(accepted_ids(&vocab, n, &c, &tokens), (tokens.len(), true), "{text}");
        let plain = with_controls(&tokenizer, text, &[]);
        assert_eq!(accepted_ids(&vocab, n, &c, &plain).0, plain_from, "spelled out: {text}");
    }
}
