//! Fuzzes the tolerant GGUF header reader: any bytes give a header or an error, never a panic,
//! a hang, or an allocation sized by a length field instead of by the input.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mlcli::formats::gguf_header::{parse_bytes, ReadOptions};

fuzz_target!(|data: &[u8]| {
    for opts in [ReadOptions::PREVIEW, ReadOptions::LOAD, ReadOptions::FULL] {
        let Ok(h) = parse_bytes(data, data.len() as u64, opts) else {
            continue;
        };
        for t in &h.tensors {
            let _ = h.extent(t);
        }
        let _ = h.check_loadable(Path::new("fuzz"));
        let _ = h.to_candle_content();
        for (_, v) in &h.metadata {
            let _ = v.type_name();
        }
    }
});
