//! llama.cpp's reference outputs for the real test models (`tests/data/llamacpp-reference.json`,
//! copied from `shared/reference/llamacpp.json`), and the greedy settings they were made with;
//! shared by the parity tests.
#![allow(dead_code)]

use mlcli::engine::{GenerateParams, SamplingParams};
use serde_json::Value;

/// The whole reference file.
pub fn reference() -> Value {
    serde_json::from_str(include_str!("../data/llamacpp-reference.json"))
        .expect("reference JSON parses")
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Greedy decoding of `max_tokens` tokens, end-of-generation ignored.
pub fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..GenerateParams::default()
    }
}
