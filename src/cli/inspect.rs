//! `mlcli inspect MODEL [VIEW]`: what a GGUF or safetensors model holds, what it would take to
//! run it, and where a forward pass goes wrong. Parses the view, calls [`crate::inspect`], and
//! prints its text or JSON form.

use std::path::PathBuf;

use anyhow::Context;
use clap::ArgGroup;
use regex::Regex;
use serde::Serialize;

use super::UsageError;
use crate::device;
use crate::engine::LoadOptions;
use crate::inspect::{json, machine, metadata, probe, summary, tensors, text, values, Model};

/// Arguments of `mlcli inspect`.
#[derive(Debug, clap::Args)]
#[command(group(
    ArgGroup::new("view")
        .multiple(false)
        .args(["metadata", "tensors", "dump", "stats", "tokenize", "template", "logits", "layer_trace"])
))]
pub struct Args {
    /// The model: a GGUF file (detected by content), a Hugging Face directory (config.json +
    /// *.safetensors, sharded or not), a *.safetensors file, or a model.safetensors.index.json.
    pub model: PathBuf,
    /// Every metadata key with its type and value (arrays abbreviated; --full shows them whole).
    #[arg(long)]
    pub metadata: bool,
    /// The tensor table folded per block (name, shape, dtype, count, bytes); REGEX keeps matching
    /// names; --full lists every tensor with its offset.
    #[arg(long, value_name = "REGEX", num_args = 0..=1, default_missing_value = "")]
    pub tensors: Option<String>,
    /// The values of tensor NAME, dequantized to f32.
    #[arg(long, value_name = "NAME")]
    pub dump: Option<String>,
    /// With --dump: how many values to print (0 = all).
    #[arg(long, value_name = "N", default_value_t = 64, requires = "dump")]
    pub limit: u64,
    /// Min, max, mean, std, NaN and Inf counts of every tensor, or of those matching REGEX.
    #[arg(long, value_name = "REGEX", num_args = 0..=1, default_missing_value = "")]
    pub stats: Option<String>,
    /// Tokenize TEXT as `run --raw` does (BOS as the model says, special tokens parsed).
    #[arg(long, value_name = "TEXT")]
    pub tokenize: Option<String>,
    /// Render the chat template on a sample conversation (system, two user turns, one
    /// assistant turn).
    #[arg(long)]
    pub template: bool,
    /// Feed PROMPT (raw, as `run --raw`) and print the top next-token ids, pieces and logits.
    #[arg(long, value_name = "PROMPT")]
    pub logits: Option<String>,
    /// With --logits: how many candidates to print.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "logits")]
    pub top: usize,
    /// Feed PROMPT and print hidden-state statistics (mean, std, min, max, NaN/Inf) at each
    /// block boundary.
    #[arg(long, value_name = "PROMPT")]
    pub layer_trace: Option<String>,
    /// Expand: whole arrays and strings in --metadata, one row per tensor in --tensors.
    #[arg(long)]
    pub full: bool,
    /// Context size for the memory estimate (default: as `run`, the model's capped at 4096;
    /// 0 = the model's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<u64>,
    /// Print JSON (keys documented in docs/inspect.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the forward-pass probes run: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: device::Request,
    /// CPU threads for the forward-pass probes (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

/// The `--tensors` view: every (matching) tensor and the folded groups.
#[derive(Serialize)]
struct TensorTable {
    rows: Vec<tensors::Tensor>,
    groups: Vec<tensors::Group>,
}

fn pattern(p: &str) -> anyhow::Result<Option<Regex>> {
    if p.is_empty() {
        return Ok(None);
    }
    Regex::new(p)
        .map(Some)
        .map_err(|e| UsageError(format!("bad tensor name pattern: {e}")).into())
}

/// Renders `data` as JSON in the common envelope, or as text through `as_text`.
fn render<T: Serialize>(
    args: &Args,
    view: &str,
    file: &str,
    data: &T,
    as_text: impl Fn(&T) -> String,
) -> anyhow::Result<String> {
    if args.json {
        let v = json::envelope(view, file, data)?;
        Ok(serde_json::to_string_pretty(&v)? + "\n")
    } else {
        Ok(as_text(data))
    }
}

/// Runs `mlcli inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        crate::cli::set_threads(t);
    }
    let open = if args.metadata && args.full {
        Model::open_full
    } else {
        Model::open
    };
    let model =
        open(&args.model).with_context(|| format!("inspecting {}", args.model.display()))?;
    let file = model.display_name();
    let load = || -> anyhow::Result<LoadOptions> {
        Ok(LoadOptions {
            device: device::select(args.device)?.device,
            ..LoadOptions::default()
        })
    };
    let out = if args.metadata {
        let entries = metadata::entries(&model, args.full);
        render(&args, "metadata", &file, &entries, |e| {
            text::metadata(e, args.full)
        })?
    } else if let Some(p) = &args.tensors {
        let rows = tensors::filter(tensors::list(&model), pattern(p)?.as_ref());
        let table = TensorTable {
            groups: tensors::group(&rows),
            rows,
        };
        render(&args, "tensors", &file, &table, |t| {
            if args.full {
                text::tensor_rows(&t.rows)
            } else {
                text::tensor_groups(&t.groups, &t.rows)
            }
        })?
    } else if let Some(name) = &args.dump {
        let d = values::dump(&model, name, args.limit)?;
        render(&args, "dump", &file, &d, text::dump)?
    } else if let Some(p) = &args.stats {
        let rows = values::stats(&model, pattern(p)?.as_ref());
        render(&args, "stats", &file, &rows, |r| text::stats(r))?
    } else if let Some(t) = &args.tokenize {
        let tok = probe::tokenize(&model, t)?;
        render(&args, "tokenize", &file, &tok, text::tokenized)?
    } else if args.template {
        let r = probe::template(&model)?;
        render(&args, "template", &file, &r, text::rendered)?
    } else if let Some(prompt) = &args.logits {
        let l = probe::logits(model.path(), prompt, args.top, &load()?)?;
        render(&args, "logits", &file, &l, text::logits)?
    } else if let Some(prompt) = &args.layer_trace {
        let t = probe::layer_trace(model.path(), prompt, &load()?)?;
        render(&args, "layer_trace", &file, &t, text::layer_trace)?
    } else {
        let s = summary::summarize(&model, args.ctx_size, machine::Machine::detect());
        render(&args, "summary", &file, &s, text::summary)?
    };
    // Names, keys and templates come from the file: no escape sequence reaches the terminal
    // (JSON escapes control characters itself).
    let out = if args.json {
        out
    } else {
        crate::formats::untrusted::text(&out)
    };
    crate::cli::print_stdout(out)
}
