//! The probes of `mlcli inspect` on the real models, against llama.cpp's reference outputs
//! (`tests/data/llamacpp-reference.json`): `--tokenize` gives llama.cpp's ids for every
//! tokenizer case, `--logits` gives llama.cpp's top-5 (ids in llama.cpp's order wherever its
//! own logits are more than 0.3 apart; within a near-tie the order may differ, as the reference
//! README explains), `--layer-trace` reports every block, and `--template` renders the model's
//! chat template on the sample conversation.

use std::collections::HashSet;
use std::process::Command;

use mlcli::models::testing::{real_model, GEMMA3, SMOLLM2};
use serde_json::Value;

/// Logit gaps below this are near-ties between valid implementations (reference README).
const NEAR_TIE: f64 = 0.3;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/llamacpp-reference.json")).expect("reference JSON")
}

fn inspect_json(model: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .arg("inspect")
        .arg(real_model(model))
        .args(args)
        .arg("--json")
        .output()
        .expect("mlcli runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

#[test]
fn tokenize_gives_llama_cpp_ids_for_every_reference_case() {
    let r = reference();
    for (key, model) in [("smollm2", SMOLLM2), ("gemma3", GEMMA3)] {
        for case in r["tokenizer_cases"][key].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            let v = inspect_json(model, &["--tokenize", text]);
            let got: Vec<u64> = v["tokenize"]["tokens"]
                .as_array()
                .expect("tokens")
                .iter()
                .map(|t| t["id"].as_u64().expect("id"))
                .collect();
            assert_eq!(got, ids(&case["ids"]), "{key}: {text:?}");
        }
    }
}

/// Splits llama.cpp's ranked list into clusters of near-tied logits.
fn clusters(reference: &[(u64, f64)]) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    let mut prev: Option<f64> = None;
    for &(id, logit) in reference {
        match (prev, out.last_mut()) {
            (Some(p), Some(last)) if p - logit < NEAR_TIE => last.push(id),
            _ => out.push(vec![id]),
        }
        prev = Some(logit);
    }
    out
}

#[test]
fn logits_top5_match_llama_cpp_up_to_near_ties() {
    for case in reference()["greedy_cases"].as_array().expect("cases") {
        let id = case["id"].as_str().expect("id");
        let model = case["model_file"].as_str().expect("model_file");
        let prompt = case["prompt"].as_str().expect("prompt");
        let v = inspect_json(model, &["--logits", prompt, "--top", "5"]);
        let l = &v["logits"];
        let tokens: Vec<u64> = l["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(tokens, ids(&case["prompt_token_ids"]), "{id}: prompt ids");
        let ours: Vec<u64> = l["top"]
            .as_array()
            .expect("top")
            .iter()
            .map(|c| c["id"].as_u64().expect("id"))
            .collect();
        let theirs: Vec<(u64, f64)> = case["top20_first_step"]
            .as_array()
            .expect("top20")
            .iter()
            .map(|e| {
                (
                    e["id"].as_u64().expect("id"),
                    e["logit"].as_f64().expect("logit"),
                )
            })
            .collect();
        eprintln!("{id}: ours {ours:?}, llama.cpp {:?}", &theirs[..5]);
        // Walk llama.cpp's clusters of near-tied ids: each cluster wholly inside the top-5 must
        // fill the same ranks in ours, in any order; the cluster cut by the top-5 boundary must
        // supply our remaining ranks.
        let mut rank = 0;
        for cluster in clusters(&theirs) {
            if rank >= 5 {
                break;
            }
            let end = (rank + cluster.len()).min(5);
            let ours_here: HashSet<u64> = ours[rank..end].iter().copied().collect();
            let allowed: HashSet<u64> = cluster.iter().copied().collect();
            assert!(
                ours_here.is_subset(&allowed),
                "{id}: ranks {}..{end} are {:?}, llama.cpp has {cluster:?} there (logits within {NEAR_TIE})",
                rank + 1,
                &ours[rank..end]
            );
            if end - rank == cluster.len() {
                assert_eq!(ours_here.len(), cluster.len(), "{id}: cluster {cluster:?}");
            }
            rank = end;
        }
    }
}

#[test]
fn layer_trace_reports_every_block_with_finite_states() {
    for (model, layers) in [(SMOLLM2, 30), (GEMMA3, 18)] {
        let v = inspect_json(model, &["--layer-trace", "The capital of France is"]);
        let points = v["layer_trace"]["points"].as_array().expect("points");
        let got: Vec<u64> = points
            .iter()
            .map(|p| p["layer"].as_u64().expect("layer"))
            .collect();
        assert_eq!(got, (0..layers).collect::<Vec<u64>>(), "{model}");
        for p in points {
            let s = &p["stats"];
            assert_eq!(
                (s["nan"].as_u64(), s["inf"].as_u64()),
                (Some(0), Some(0)),
                "{model}"
            );
            assert!(s["std"].as_f64().is_some_and(|x| x > 0.0), "{model}: {p}");
        }
        // The logits' statistics come from the same forward pass as --logits.
        let top = inspect_json(
            model,
            &["--logits", "The capital of France is", "--top", "1"],
        );
        let max = v["layer_trace"]["logits"]["max"].as_f64().expect("max");
        let best = top["logits"]["top"][0]["logit"].as_f64().expect("logit");
        assert!((max - best).abs() < 1e-3, "{model}: {max} vs {best}");
    }
}

#[test]
fn template_renders_the_sample_conversation_in_chatml() {
    let v = inspect_json(SMOLLM2, &["--template"]);
    let text = v["template"]["rendered"].as_str().expect("rendered");
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHello! Who are you?<|im_end|>\n\
         <|im_start|>assistant\nI am an assistant. How can I help?<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let base = inspect_json(GEMMA3, &["--template"]);
    assert_eq!(base["template"]["rendered"], Value::Null);
    assert_eq!(base["template"]["source"], Value::Null);
}

#[test]
fn near_tie_clusters_follow_the_reference_gaps() {
    let c = clusters(&[
        (1, 17.5),
        (2, 15.0),
        (3, 13.4),
        (4, 13.13),
        (5, 13.12),
        (6, 12.0),
    ]);
    assert_eq!(c, vec![vec![1], vec![2], vec![3, 4, 5], vec![6]]);
}
