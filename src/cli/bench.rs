//! `mlcli bench`: throughput in llama-bench's vocabulary (pp/tg/pg tests, depth, sweeps), with
//! latency, memory and a reproducibility record; `mlcli bench compare` for ratios and
//! regression gates. The report goes to stdout, progress to stderr (only on a terminal).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::UsageError;
use crate::bench::report::{Format, Line, Row, Writer};
use crate::bench::sweep::{self, Sweep};
use crate::bench::{self, compare, memory, presets, record, run, Source};
use crate::device;
use crate::engine::LoadOptions;

/// Arguments of `mlcli bench`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Compare two reports instead of running.
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// What to run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `mlcli bench`.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Print per-row ratios (new / old tokens per second) of two reports written with
    /// `-o json` or `-o jsonl`; with --max-regress, exit 1 when a row got slower than that.
    Compare(CompareArgs),
}

/// Arguments of `mlcli bench compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The baseline report.
    pub old: PathBuf,
    /// The new report.
    pub new: PathBuf,
    /// Exit with status 1 when a row is slower than the baseline by more than this (e.g. 5%).
    #[arg(long, value_name = "PERCENT")]
    pub max_regress: Option<String>,
}

/// Arguments of a bench run. Every list flag takes `N`, comma lists and ranges
/// (`FIRST-LAST`, `FIRST-LAST+STEP`, `FIRST-LAST*FACTOR`), may be repeated, and sweeps: one
/// row per combination.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Model file (GGUF); repeatable.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// A synthetic model NAME:QUANT with random weights of the exact shapes and types (e.g.
    /// llama-1b:q4_0, llama-8b:q4_k); repeatable. `--synthetic list` prints the table.
    #[arg(long, value_name = "PRESET")]
    pub synthetic: Vec<String>,
    /// Prompt sizes: a `ppN` test each (0 = none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "LIST",
        default_value = "512"
    )]
    pub n_prompt: Vec<String>,
    /// Generation lengths: a `tgN` test each (0 = none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_name = "LIST",
        default_value = "128"
    )]
    pub n_gen: Vec<String>,
    /// Prompt then generation, `P,N` (repeatable): a `ppP+tgN` test each.
    #[arg(long = "pg", value_name = "P,N")]
    pub pg: Vec<String>,
    /// Tokens already in the KV cache when each test starts.
    #[arg(short = 'd', long = "depth", value_name = "LIST", default_value = "0")]
    pub depth: Vec<String>,
    /// Measured repetitions per test (after one unmeasured warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// CPU threads (default: candle's, the physical cores); several values run in one child
    /// process each, as candle fixes its thread pool at first use.
    #[arg(short = 't', long = "threads", value_name = "LIST")]
    pub threads: Vec<String>,
    /// Devices: auto, cpu, cuda[:N], metal[:N] (comma list).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "auto"
    )]
    pub device: Vec<String>,
    /// Activation types (comma list); this build computes in f32 only.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "f32"
    )]
    pub dtype: Vec<String>,
    /// Context sizes (0 = what each test needs: depth + prompt + generated tokens).
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "LIST",
        default_value = "0"
    )]
    pub ctx_size: Vec<String>,
    /// Report format on stdout.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: Format,
    /// Skip the unmeasured warm-up run of each test.
    #[arg(long)]
    pub no_warmup: bool,
    /// Also measure the memory read bandwidth of the CPU threads (a 1 GiB buffer read with the
    /// widest loads the CPU has, median of 5 passes) and give each CPU generation test's share
    /// of the bound it sets: bandwidth ÷ bytes of weights a token reads
    #[arg(long)]
    pub bandwidth: bool,
    /// Seed of the token ids, the sampler and synthetic weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// With --synthetic: copy the tokenizer from this GGUF (padded to the preset's vocabulary).
    #[arg(long, value_name = "GGUF")]
    pub tokenizer_from: Option<PathBuf>,
    /// With one --synthetic: write that model to a GGUF file (for llama.cpp) and exit.
    #[arg(long, value_name = "PATH")]
    pub write_gguf: Option<PathBuf>,
    /// Compare the rows with this report (-o json/jsonl) and print the ratios on stderr.
    #[arg(long, value_name = "REPORT")]
    pub baseline: Option<PathBuf>,
    /// With --baseline: exit with status 1 when a row got slower than that (e.g. 5%).
    #[arg(long, value_name = "PERCENT", requires = "baseline")]
    pub max_regress: Option<String>,
    /// Measure an OpenAI-compatible server at this URL instead of a model (ours, llama-server,
    /// Ollama, vLLM …): streamed completions of -p words and -n tokens, -r per client.
    #[arg(long, value_name = "URL", conflicts_with_all = ["models", "synthetic"])]
    pub endpoint: Option<String>,
    /// With --endpoint: clients at once (a list sweeps).
    #[arg(long, value_name = "LIST", default_value = "1", requires = "endpoint")]
    pub concurrency: Vec<String>,
    /// With --endpoint: the request's `model` field.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        requires = "endpoint"
    )]
    pub endpoint_model: String,
    /// With --endpoint: the key to send (`Authorization: Bearer`); also MLCLI_API_KEY.
    #[arg(long, env = "MLCLI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With --endpoint: do not send `ignore_eos` (for servers that refuse it; replies may
    /// then end early).
    #[arg(long, requires = "endpoint")]
    pub no_ignore_eos: bool,
    /// Internal: run as the child process for one thread count, writing JSON Lines.
    #[arg(long, hide = true)]
    pub child_threads: Option<usize>,
}

/// Rows slower than the baseline allows (exit status 1).
#[derive(Debug, thiserror::Error)]
#[error("{count} row(s) slower than the baseline by more than {limit}: {rows}")]
pub struct Regression {
    /// How many rows regressed.
    pub count: usize,
    /// The threshold as given.
    pub limit: String,
    /// The rows and their ratios.
    pub rows: String,
}

/// Runs `mlcli bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(Sub::Compare(c)) => run_compare(c),
        None => run_bench(args.run),
    }
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

fn run_compare(args: CompareArgs) -> anyhow::Result<()> {
    let old = compare::load(&args.old)?;
    let new = compare::load(&args.new)?;
    let c = compare::compare(&old, &new);
    if c.pairs.is_empty() {
        bail!(usage(format!(
            "{} and {} have no row in common (rows match by model, test, threads, device, dtype and context)",
            args.old.display(),
            args.new.display()
        )));
    }
    crate::cli::print_stdout(c.to_markdown("old", "new") + "\n")?;
    gate(&c, args.max_regress.as_deref())
}

/// `bench --endpoint`: one row per concurrency level.
fn run_endpoint(a: &RunArgs, url: &str) -> anyhow::Result<()> {
    let single = |list: &[String], flag: &str| -> anyhow::Result<usize> {
        let values = sweep::parse_lists(flag, list).map_err(usage)?;
        match values.as_slice() {
            [v] if *v > 0 => Ok(*v),
            _ => Err(usage(format!("{flag}: one positive value with --endpoint"))),
        }
    };
    let load = crate::bench::endpoint::Load {
        url: url.to_string(),
        model: a.endpoint_model.clone(),
        api_key: a.api_key.clone(),
        prompt_words: single(&a.n_prompt, "-p")?,
        max_tokens: single(&a.n_gen, "-n")?,
        ignore_eos: !a.no_ignore_eos,
        concurrency: 1,
        requests: a.repetitions.max(1),
    };
    let levels = sweep::parse_lists("--concurrency", &a.concurrency).map_err(usage)?;
    let mut reports = Vec::new();
    for c in levels {
        if c == 0 {
            bail!(usage("--concurrency: at least 1"));
        }
        eprintln!("bench: {url} with {c} client(s) at once");
        let load = crate::bench::endpoint::Load {
            concurrency: c,
            ..load.clone()
        };
        reports.push(crate::bench::endpoint::measure(&load)?);
    }
    let text = match a.output {
        Format::Json | Format::Jsonl => serde_json::to_string_pretty(&reports)? + "\n",
        _ => crate::bench::endpoint::markdown(url, &load, &reports),
    };
    crate::cli::print_stdout(text)
}

/// Fails with [`Regression`] when `max_regress` is set and a pair is slower than it allows.
fn gate(c: &compare::Comparison, max_regress: Option<&str>) -> anyhow::Result<()> {
    let Some(limit) = max_regress else {
        return Ok(());
    };
    let fraction = compare::parse_percent(limit).map_err(usage)?;
    let slow = c.regressions(fraction);
    if slow.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = slow
        .iter()
        .map(|p| format!("{} {} ×{:.3}", p.key.model, p.key.test, p.ratio()))
        .collect();
    Err(Regression {
        count: slow.len(),
        limit: limit.to_string(),
        rows: rows.join(", "),
    }
    .into())
}

fn parse_sweep(a: &RunArgs) -> anyhow::Result<(Sweep, Vec<usize>)> {
    let list = |flag: &str, v: &[String]| sweep::parse_lists(flag, v).map_err(usage);
    let pg =
        a.pg.iter()
            .map(|v| sweep::parse_pg(v).map_err(usage))
            .collect::<anyhow::Result<Vec<_>>>()?;
    let s = Sweep {
        n_prompt: list("-p", &a.n_prompt)?,
        n_gen: list("-n", &a.n_gen)?,
        pg,
        depth: list("-d", &a.depth)?,
        ctx: list("-c", &a.ctx_size)?,
    };
    let threads = list("-t", &a.threads)?;
    if threads.contains(&0) {
        bail!(usage("-t: thread counts must be at least 1"));
    }
    if s.cases().is_empty() {
        bail!(usage(
            "no test to run: give -p, -n or --pg with a non-zero size"
        ));
    }
    Ok((s, threads))
}

fn sources(a: &RunArgs) -> anyhow::Result<Vec<Source>> {
    let mut out: Vec<Source> = a.models.iter().cloned().map(Source::File).collect();
    for s in &a.synthetic {
        out.push(Source::Synthetic {
            choice: presets::parse(s).map_err(usage)?,
            seed: a.seed,
            tokenizer_from: a.tokenizer_from.clone(),
        });
    }
    if out.is_empty() {
        bail!(usage(
            "no model: give -m MODEL or --synthetic PRESET (--synthetic list shows them)"
        ));
    }
    if a.tokenizer_from.is_some() && a.synthetic.is_empty() {
        bail!(usage("--tokenizer-from goes with --synthetic"));
    }
    Ok(out)
}

fn run_bench(a: RunArgs) -> anyhow::Result<()> {
    if let Some(url) = &a.endpoint {
        return run_endpoint(&a, url);
    }
    if a.synthetic.iter().any(|s| s == "list") {
        return print_presets();
    }
    if let Some(path) = &a.write_gguf {
        return write_gguf(&a, path);
    }
    let (sweep, threads) = parse_sweep(&a)?;
    let sources = sources(&a)?;
    if let Some(bad) = a.dtype.iter().find(|d| d.as_str() != "f32") {
        bail!(usage(format!(
            "--dtype {bad}: this build computes activations in f32 only (weights keep their file types); supported: f32"
        )));
    }
    if a.repetitions == 0 {
        bail!(usage("-r: at least one repetition"));
    }
    let baseline = a.baseline.as_ref().map(|p| compare::load(p)).transpose()?;
    let rows = if threads.len() > 1 && a.child_threads.is_none() {
        run_children(&a, &threads)?
    } else {
        let t = a.child_threads.or(threads.first().copied());
        if let Some(t) = t {
            crate::cli::set_threads(t);
        }
        measure(&a, &sweep, &sources, a.output)?
    };
    match baseline {
        Some(old) => {
            let c = compare::compare(&old, &rows);
            eprintln!("{}", c.to_markdown("baseline", "this run"));
            gate(&c, a.max_regress.as_deref())
        }
        None => Ok(()),
    }
}

/// Runs every source × device × case in this process, writing rows as they come.
fn measure(a: &RunArgs, s: &Sweep, sources: &[Source], format: Format) -> anyhow::Result<Vec<Row>> {
    let n_threads = candle_core::utils::get_num_threads();
    let mut rec = record::machine_record();
    let selected = a
        .device
        .iter()
        .map(|d| {
            let request = d.parse::<device::Request>().map_err(usage)?;
            Ok(device::select(request)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(d) = selected.iter().find(|d| d.device.is_cuda()) {
        let ordinal = match d.device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
            _ => 0,
        };
        rec.gpu = memory::cuda_gpu_info(ordinal);
    }
    let hash = matches!(format, Format::Json | Format::Jsonl);
    let mut out = Writer::new(std::io::stdout().lock(), format, rec.clone())?;
    let interactive = std::io::stderr().is_terminal();
    let mut progress = |msg: &str| {
        if interactive {
            eprint!("\r\x1b[2Kbench: {msg}");
        }
    };
    // Measured before any model is loaded, with the threads the kernels use.
    let read_gbs = a
        .bandwidth
        .then(|| {
            progress("measuring memory read bandwidth");
            bench::bandwidth::read_gbs()
        })
        .transpose()
        .context("mapping 1 GiB to measure the memory read bandwidth")?;
    for source in sources {
        for sel in &selected {
            progress(&format!("loading {}", source.label()));
            let opts = LoadOptions {
                device: sel.device.clone(),
                ..LoadOptions::default()
            };
            let mut loaded = bench::load(source, &opts, hash)
                .with_context(|| format!("loading {}", source.label()))?;
            if !rec.models.contains(&loaded.record) {
                rec.models.push(loaded.record.clone());
                out.set_record(rec.clone());
            }
            let label = device::label(&sel.device);
            if !sel.device.is_cpu() {
                eprintln!("bench: {label}: {}", loaded.engine.decoder_note());
            }
            let settings = run::Settings {
                repetitions: a.repetitions,
                warmup: !a.no_warmup,
                seed: a.seed,
                n_threads,
                backend: backend_name(&label),
                device: label,
                dtype: "f32".into(),
                n_batch: opts.batch_size,
                monitor_gpu: sel.device.is_cuda(),
            };
            for case in s.cases() {
                let row = run::run_case(
                    &mut loaded.engine,
                    &case,
                    &loaded.facts,
                    &settings,
                    &mut progress,
                )
                .with_context(|| format!("{} {}", source.label(), case.test))?;
                let row = match (read_gbs, sel.device.is_cpu()) {
                    (Some(gbs), true) => Row {
                        memory_read_gbs: Some(gbs),
                        weights_read_bytes: Some(loaded.record.weights_per_token),
                        ..row
                    },
                    _ => row,
                };
                out.row(row)?;
            }
        }
    }
    if interactive {
        eprint!("\r\x1b[2K");
    }
    Ok(out.finish()?.results)
}

fn backend_name(device_label: &str) -> String {
    match device_label.split(':').next() {
        Some("cuda") => "CUDA",
        Some("metal") => "Metal",
        _ => "CPU",
    }
    .into()
}

/// The arguments of the child process that runs everything with `threads` threads.
fn child_args(a: &RunArgs, threads: usize) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["bench".into()];
    let mut push = |flag: &str, value: OsString| {
        v.push(flag.into());
        v.push(value);
    };
    for m in &a.models {
        push("-m", m.clone().into());
    }
    for s in &a.synthetic {
        push("--synthetic", s.into());
    }
    for (flag, values) in [
        ("-p", &a.n_prompt),
        ("-n", &a.n_gen),
        ("--pg", &a.pg),
        ("-d", &a.depth),
        ("-c", &a.ctx_size),
    ] {
        for value in values {
            push(flag, value.into());
        }
    }
    push("--device", a.device.join(",").into());
    push("--dtype", a.dtype.join(",").into());
    push("-r", a.repetitions.to_string().into());
    push("--seed", a.seed.to_string().into());
    if let Some(t) = &a.tokenizer_from {
        push("--tokenizer-from", t.clone().into());
    }
    push("-o", "jsonl".into());
    push("--child-threads", threads.to_string().into());
    if a.no_warmup {
        v.push("--no-warmup".into());
    }
    if a.bandwidth {
        v.push("--bandwidth".into());
    }
    v
}

/// Runs each thread count in a child process and writes the merged report.
fn run_children(a: &RunArgs, threads: &[usize]) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe().context("finding the mlcli executable")?;
    let mut lines: Vec<Line> = Vec::new();
    for &t in threads {
        let out = std::process::Command::new(&exe)
            .args(child_args(a, t))
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("starting the bench child for {t} threads"))?;
        if !out.status.success() {
            bail!("the bench run with {t} threads failed ({})", out.status);
        }
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            lines.push(serde_json::from_str(l).context("reading a child's JSON line")?);
        }
    }
    let mut rec = record::machine_record();
    for l in &lines {
        rec.gpu = rec.gpu.take().or_else(|| l.record.gpu.clone());
        for m in &l.record.models {
            if !rec.models.contains(m) {
                rec.models.push(m.clone());
            }
        }
    }
    let mut out = Writer::new(std::io::stdout().lock(), a.output, rec)?;
    for l in lines {
        out.row(l.row)?;
    }
    Ok(out.finish()?.results)
}

fn print_presets() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| preset | model | family | layers | hidden | heads/kv | ffn | vocab |"
    )?;
    writeln!(
        out,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for p in presets::PRESETS {
        let d = p.dims;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} |",
            p.name, p.about, p.family, d.layers, d.hidden, d.heads, d.kv_heads, d.ffn, d.vocab
        )?;
    }
    let mixes: Vec<&str> = presets::MIXES.iter().map(|m| m.name).collect();
    writeln!(out, "\nquantizations: {}", mixes.join(", "))?;
    Ok(())
}

fn write_gguf(a: &RunArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let [spec] = a.synthetic.as_slice() else {
        bail!(usage("--write-gguf needs exactly one --synthetic PRESET"));
    };
    if !a.models.is_empty() {
        bail!(usage("--write-gguf writes a synthetic model; drop -m"));
    }
    let choice = presets::parse(spec).map_err(usage)?;
    let tokenizer = match &a.tokenizer_from {
        Some(p) => bench::synthetic::tokenizer_metadata_from(p)
            .with_context(|| format!("copying the tokenizer of {}", p.display()))?,
        None => bench::synthetic::made_up_tokenizer(choice.preset.dims.vocab)?,
    };
    let parts = bench::synthetic::build(&choice, a.seed, tokenizer, &candle_core::Device::Cpu)?;
    parts
        .write(path)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} ({}) to {}",
        choice.label(),
        choice.preset.about,
        path.display()
    );
    Ok(())
}
