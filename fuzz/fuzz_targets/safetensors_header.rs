//! Fuzzes the tolerant safetensors header reader: any bytes give a header or an error, never a
//! panic, a hang, or an allocation sized by the header-length field instead of by the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mlcli::formats::safetensors_header::parse_bytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_bytes(data, data.len() as u64) {
        for t in &h.tensors {
            let _ = h.extent(t);
            let _ = t.elements();
        }
    }
});
