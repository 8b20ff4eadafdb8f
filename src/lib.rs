//! mlcli: run local LLMs (GGUF, safetensors) on Candle.
//!
//! Layers, from the bottom: [`formats`] turns bytes into meaning, [`models`] builds a
//! [`models::CausalLm`] from weights through the family registry, [`engine`] owns the one
//! decode loop, and [`cli`] wires them together for each subcommand. See `docs/` and the
//! design notes in the README.

pub mod bench;
pub mod cli;
pub mod convert;
pub mod device;
pub mod engine;
pub mod error;
pub mod formats;
pub mod inspect;
pub mod kernels;
pub mod models;
pub mod serve;
pub mod store;
pub mod ui;

pub use error::{Error, Result};
