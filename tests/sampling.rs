//! Sampling with the real SmolLM2: DRY's sequence breakers found in its vocabulary as
//! llama.cpp finds them, DRY turning greedy decoding out of a loop, `-v` naming where each
//! sampling value came from, and the stop reason on stderr (stdout keeps only the model's text).

use std::process::Command;

use mlcli::engine::dry::{Breakers, DEFAULT_BREAKERS};
use mlcli::formats::gguf::Gguf;
use mlcli::formats::tokenizer::{EncodeOptions, Tokenizer};
use mlcli::models::testing::{real_model, SMOLLM2};

/// Runs mlcli; returns (status code, stdout, stderr).
fn mlcli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(args)
        .output()
        .expect("mlcli runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn smollm2() -> String {
    real_model(SMOLLM2).to_string_lossy().into_owned()
}

fn one_token(tok: &Tokenizer, text: &str) -> u32 {
    let ids = tok
        .encode(
            text,
            EncodeOptions {
                add_bos: false,
                parse_special: false,
            },
        )
        .unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is {ids:?}");
    ids[0]
}

#[test]
fn dry_breakers_in_the_smollm2_vocabulary() {
    let gguf = Gguf::open(&real_model(SMOLLM2)).unwrap();
    let tok = Tokenizer::from_gguf(gguf.content()).unwrap();
    let defaults: Vec<String> = DEFAULT_BREAKERS.iter().map(|s| s.to_string()).collect();
    let b = Breakers::for_vocab(&tok, &defaults).unwrap();
    // Every token holding a newline, colon, quote or asterisk breaks a sequence by itself.
    for text in ["\n", ":", "\"", "*", "\n\n", " \"", "):"] {
        assert!(b.is_single(one_token(&tok, text)), "{text:?}");
    }
    for text in [" Paris", " the", "1"] {
        assert!(b.tails(one_token(&tok, text)).is_empty(), "{text:?}");
    }
    // A token ending with the start of a longer breaker heads a sequence whose tail is the
    // tokenized rest: " Par" + "is".
    let b = Breakers::for_vocab(&tok, &[" Paris".to_string()]).unwrap();
    let is = tok
        .encode(
            "is",
            EncodeOptions {
                add_bos: false,
                parse_special: false,
            },
        )
        .unwrap();
    assert!(
        b.tails(one_token(&tok, " Par")).contains(&is),
        "{:?}",
        b.tails(one_token(&tok, " Par"))
    );
    assert!(b.is_single(one_token(&tok, " Paris")));
}

#[test]
fn dry_turns_greedy_decoding_out_of_a_loop() {
    let model = smollm2();
    let greedy = ["run", &model, "--raw", "--temp", "0", "-n", "24"];
    let prompt = "1 2 3 1 2 3 1 2 3";
    let (code, looped, _) = mlcli(&[&greedy[..], &[prompt]].concat());
    assert_eq!(code, Some(0));
    assert!(looped.starts_with(" 1 2 3 1 2 3"), "{looped:?}");
    let with_dry = [&greedy[..], &["--dry-multiplier", "0.8", prompt]].concat();
    let (code, out, err) = mlcli(&with_dry);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("1 2 3 1"), "DRY let the loop go on: {out:?}");
}

#[test]
fn verbose_names_the_source_of_every_sampling_value() {
    let model = smollm2();
    let (code, _, err) = mlcli(&[
        "run",
        &model,
        "--raw",
        "-n",
        "2",
        "--temp",
        "0",
        "--dry-multiplier",
        "0.5",
        "--seed",
        "3",
        "-v",
        "Hello",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("sampling (command line): temp 0, dry_multiplier 0.5, seed 3"),
        "{err}"
    );
    assert!(
        err.contains("sampling (mlcli default): top_k 40, top_p 0.95, min_p 0.05"),
        "{err}"
    );
    assert!(err.contains("stop: max tokens (-n)"), "{err}");
}

#[test]
fn a_value_that_cannot_be_honoured_is_refused() {
    let model = smollm2();
    let (code, out, err) = mlcli(&["run", &model, "--dry-base", "-1", "Hello"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("dry_base = -1: expected 1 or more") && err.contains("command line"),
        "{err}"
    );
}

#[test]
fn a_reply_cut_short_by_a_limit_says_so_on_stderr_only() {
    let model = smollm2();
    let (code, out, err) = mlcli(&["run", &model, "--raw", "--temp", "0", "-n", "3", "Once"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("mlcli"), "{out:?}");
    assert_eq!(
        err.trim_end(),
        "mlcli: stopped after 3 tokens, the -n/--max-tokens limit"
    );
    let (code, out, err) = mlcli(&[
        "run",
        &model,
        "--raw",
        "--temp",
        "0",
        "--ignore-eos",
        "-c",
        "12",
        "Once upon a time",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.is_empty() && !out.contains("mlcli"), "{out:?}");
    assert!(
        err.starts_with("mlcli: stopped after") && err.contains("the context of 12 tokens is full"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
