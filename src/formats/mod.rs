//! Bytes to meaning: format detection, GGUF and safetensors header reading, tensor names,
//! weights, tokenizer and chat templates. Nothing here knows about model families; families
//! hand their name tables in as data.

pub mod blocks;
pub mod chat_template;
pub mod detect;
pub mod fp8;
pub mod gemma_calls;
pub mod gemma_grammar;
pub mod gemma_thought;
pub mod ggml_types;
pub mod gguf;
pub mod gguf_builder;
pub mod gguf_header;
pub mod gguf_value;
pub mod harmony;
pub mod hf_config;
pub mod iq4;
pub mod json_layout;
pub mod mapped;
pub mod mxfp4;
pub mod names;
pub mod quant;
pub mod reasoning;
pub mod safetensors_header;
pub mod safetensors_index;
pub mod tokenizer;
pub mod tool_calls;
pub mod untrusted;
pub mod weights;
