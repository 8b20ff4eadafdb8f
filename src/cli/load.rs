//! What `run` and `serve` share to load a model: the flags (context, chat template, dtype,
//! quantization, device, threads) and the loading itself, with the load's notes on stderr.

use anyhow::Context;

use crate::device;
use crate::engine::{Engine, LoadOptions};

/// How to load the model.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Chat template replacing the model's own: a shipped one by name or a Jinja file.
    /// Models without one use their family's default. (The names are listed from the
    /// shipped templates by `cli::command`.)
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Context size in tokens (default: the model's, capped at 4096; 0 = the model's).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// dtype of full-precision (safetensors) weights: f32, f16 or bf16 [default: f32].
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// Quantize safetensors weights at load time: q4_0, q4_1, q5_0, q5_1, q8_0, q2k, q3k,
    /// q4k, q5k, q6k, mxfp4 (GGUF files keep their own types).
    #[arg(long, value_name = "TYPE")]
    pub quant: Option<String>,
    /// Where to run: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: device::Request,
    /// CPU threads (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

/// A loaded model and where it came from.
pub struct Loaded {
    /// The engine.
    pub engine: Engine,
    /// What was loaded: a GGUF file or a model directory.
    pub model: std::path::PathBuf,
    /// The catalogue alias the reference named, if it was one.
    pub alias: Option<String>,
    /// Why this device was chosen.
    pub device_reason: String,
    /// Time spent in `Engine::load`.
    pub load_time: std::time::Duration,
}

impl LoadArgs {
    /// Resolves `model` (the default alias when `None`), downloading what is missing, and
    /// loads it as these flags say; the load's notes go to stderr.
    pub fn load(
        &self,
        model: Option<&str>,
        store: &crate::cli::model_ref::StoreArgs,
    ) -> anyhow::Result<Loaded> {
        if let Some(t) = self.threads {
            crate::cli::set_threads(t);
        }
        let selected = device::select(self.device)?;
        let chat_template = self
            .chat_template
            .as_deref()
            .map(crate::cli::chat_template_source)
            .transpose()?;
        let resolved =
            crate::cli::model_ref::resolve(model, store, crate::store::Mode::PreferCache)?;
        let model = resolved.model;
        let start = std::time::Instant::now();
        let engine = Engine::load(
            &model,
            &LoadOptions {
                device: selected.device,
                ctx_size: self.ctx_size,
                chat_template,
                precision: crate::cli::precision(self.dtype.as_deref(), self.quant.as_deref())?,
                ..LoadOptions::default()
            },
        )
        .with_context(|| format!("loading {}", model.display()))?;
        let load_time = start.elapsed();
        for note in engine.load_notes() {
            eprintln!("note: {note}");
        }
        Ok(Loaded {
            engine,
            model,
            alias: resolved.alias,
            device_reason: selected.reason,
            load_time,
        })
    }
}
