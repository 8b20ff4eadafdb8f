//! Fuzzes `config.json` reading: `HfConfig`, the family lookup (text model of a multimodal
//! checkpoint included) and every family's `from_hf` and validation, and RoPE configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlcli::formats::hf_config::HfConfig;
use mlcli::models::{gemma3, granite, hf_model, llama, mixtral, phi3, qwen3_moe, rope_config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = HfConfig::parse(text, "config.json") else {
        return;
    };
    let _ = hf_model(&config);
    if let Ok(c) = llama::Config::from_hf(&config) {
        let _ = c.validate();
    }
    if let Ok(c) = gemma3::Config::from_hf(&config) {
        let _ = c.validate();
    }
    if let Ok(c) = granite::Config::from_hf(&config) {
        let _ = c.validate();
    }
    for from_hf in [mixtral::from_hf, phi3::from_hf, qwen3_moe::from_hf] {
        if let Ok(c) = from_hf(&config) {
            let _ = c.validate();
        }
    }
    let _ = rope_config::RopeConfig::from_hf(&config, 10_000.0);
});
