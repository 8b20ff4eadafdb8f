//! Bytes to meaning: format detection, GGUF reading, tensor names, weights, tokenizer and
//! chat templates. Nothing here knows about model families; families hand their name tables
//! in as data.

pub mod chat_template;
pub mod detect;
pub mod ggml_types;
pub mod gguf;
pub mod gguf_header;
pub mod names;
pub mod tokenizer;
pub mod weights;
