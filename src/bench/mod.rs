//! `mlcli bench`, the library part: parameter sweeps ([`sweep`]), statistics ([`stats`]),
//! running tests through the engine's one decode loop ([`run`]), report formats ([`report`])
//! with a reproducibility record ([`record`]), comparing reports ([`compare`]), memory
//! figures ([`memory`]), the bandwidth bound of generation ([`bandwidth`]), and synthetic
//! models from a table of presets ([`presets`], [`synthetic`]). The vocabulary and columns
//! are llama-bench's, so figures compare directly.

pub mod bandwidth;
pub mod compare;
pub mod endpoint;
pub mod memory;
pub mod presets;
pub mod record;
pub mod report;
pub mod run;
pub mod stats;
pub mod sweep;
pub mod synthetic;

use std::path::PathBuf;
use std::time::Instant;

use crate::engine::{Engine, LoadOptions};
use crate::formats::gguf_header::{self, Header};
use crate::Result;
use presets::Choice;
use record::ModelRecord;
use run::ModelFacts;

/// A model to benchmark.
#[derive(Clone, Debug)]
pub enum Source {
    /// A model file.
    File(PathBuf),
    /// A preset built in memory with random weights.
    Synthetic {
        /// Shape and quantization.
        choice: Choice,
        /// Seed of the weights.
        seed: u64,
        /// A GGUF to copy the tokenizer from (else a made-up byte-level one).
        tokenizer_from: Option<PathBuf>,
    },
}

impl Source {
    /// How the source is named in messages.
    pub fn label(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Synthetic { choice, .. } => format!("synthetic:{}", choice.label()),
        }
    }
}

/// A loaded model with what the report says about it.
pub struct Loaded {
    /// The engine.
    pub engine: Engine,
    /// Facts for the rows.
    pub facts: ModelFacts,
    /// Facts for the reproducibility record.
    pub record: ModelRecord,
}

/// llama.cpp's names of `general.file_type` values (`llama_ftype`).
pub fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// `135M`, `1.2B`, as llama.cpp sizes models in `model_type`.
fn size_class(n_params: u64) -> String {
    let n = n_params as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else {
        format!("{:.0}M", n / 1e6)
    }
}

fn facts(
    header: &Header,
    engine: &Engine,
    source: &Source,
    sha256_prefix: Option<String>,
) -> (ModelFacts, ModelRecord) {
    let (size, n_params, quant_mix) = record::weights_summary(header);
    let family = engine.info().family;
    let ftype = header
        .get("general.file_type")
        .and_then(gguf_header::Value::as_u64)
        .and_then(file_type_name)
        .map(str::to_string)
        .or_else(|| quant_mix.first().map(|q| q.ty.clone()))
        .unwrap_or_default();
    let facts = ModelFacts {
        name: engine.name().to_string(),
        file: source.label(),
        model_type: format!("{family} {} {ftype}", size_class(n_params)),
        size,
        n_params,
        load_s: 0.0,
        real_tokenizer: true,
    };
    let record = ModelRecord {
        name: engine.name().to_string(),
        file: source.label(),
        family: family.to_string(),
        sha256_prefix,
        size_bytes: size,
        n_params,
        quant_mix,
        weights_per_token: bandwidth::weights_per_token(header),
    };
    (facts, record)
}

/// Loads (or builds) `source` with `opts`; hashes the file when `hash` is set.
pub fn load(source: &Source, opts: &LoadOptions, hash: bool) -> Result<Loaded> {
    let start = Instant::now();
    let (engine, facts, record) = match source {
        Source::File(path) => {
            let engine = Engine::load(path, opts)?;
            let load_s = start.elapsed().as_secs_f64();
            let header = gguf_header::read(path)?;
            let sha = hash.then(|| record::sha256_prefix(path)).transpose()?;
            let (mut f, r) = facts(&header, &engine, source, sha);
            f.load_s = load_s;
            (engine, f, r)
        }
        Source::Synthetic {
            choice,
            seed,
            tokenizer_from,
        } => {
            let tokenizer = match tokenizer_from {
                Some(p) => synthetic::tokenizer_metadata_from(p)?,
                None => synthetic::made_up_tokenizer(choice.preset.dims.vocab)?,
            };
            let parts = synthetic::build(choice, *seed, tokenizer, &opts.device)?;
            let gguf = parts.into_gguf(choice)?;
            let engine = Engine::from_gguf(&gguf, opts)?;
            let (mut f, r) = facts(gguf.header(), &engine, source, None);
            f.load_s = start.elapsed().as_secs_f64();
            f.real_tokenizer = tokenizer_from.is_some();
            (engine, f, r)
        }
    };
    Ok(Loaded {
        engine,
        facts,
        record,
    })
}
