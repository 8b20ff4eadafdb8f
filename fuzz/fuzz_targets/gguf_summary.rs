//! Fuzzes what `inspect` does with a header it could read: the summary (tokenizer built from
//! the metadata, chat template compiled), the metadata table and the folded tensor table.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use mlcli::formats::gguf_header::{parse_bytes, ReadOptions};
use mlcli::inspect::{machine::Machine, metadata, summary, tensors, text, Model};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse_bytes(data, data.len() as u64, ReadOptions::FULL) else {
        return;
    };
    let model = Model::Gguf {
        path: PathBuf::from("fuzz.gguf"),
        header,
    };
    let s = summary::summarize(&model, None, Machine::default());
    let _ = text::summary(&s);
    let _ = text::metadata(&metadata::entries(&model, false), false);
    let rows = tensors::list(&model);
    let _ = text::tensor_groups(&tensors::group(&rows), &rows);
});
