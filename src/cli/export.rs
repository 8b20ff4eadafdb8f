//! `mlcli export MODEL DIR`: write a GGUF model as a Hugging Face safetensors checkpoint
//! (weights dequantized, names and converter quirks undone, config and tokenizer files), and
//! print the directory on stdout.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::HumanBytes;

use crate::cli::model_ref::{self, StoreArgs};
use crate::convert::{self, ExportOptions};
use crate::formats::detect::{self, Format};
use crate::formats::gguf::Gguf;
use crate::store::Mode;

/// Arguments of `mlcli export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model: a file, org/repo[:QUANT|/FILE], pypi:PACKAGE, or an alias.
    pub model: String,
    /// The directory to write (created if needed; existing files of the same names are
    /// replaced).
    pub out: PathBuf,
    /// dtype of the written tensors: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Split the weights into shards of at most this many MiB (with an index file).
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub max_shard_mib: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `mlcli export`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = model_ref::resolve(Some(&args.model), &args.store, Mode::PreferCache)?.model;
    let path = match detect::detect(&model)? {
        Format::Gguf(p) => p,
        Format::SafetensorsDir(d) => anyhow::bail!(crate::Error::InvalidArgument(format!(
            "{} is already a safetensors checkpoint; export reads GGUF files",
            d.display()
        ))),
    };
    let dtype = crate::cli::precision(Some(&args.dtype), None)?.dtype;
    let gguf = Gguf::open(&path)?;
    let start = std::time::Instant::now();
    let summary = convert::gguf_to_hf(
        &gguf,
        &args.out,
        ExportOptions {
            dtype,
            max_shard_bytes: args.max_shard_mib.max(1) << 20,
        },
    )
    .with_context(|| format!("exporting {}", path.display()))?;
    eprintln!(
        "mlcli: exported {} ({}): {} tensors, {} of weights, {} files in {:.1}s",
        path.display(),
        summary.family,
        summary.tensors,
        HumanBytes(summary.bytes),
        summary.files.len(),
        start.elapsed().as_secs_f64()
    );
    crate::cli::print_stdout(format!("{}\n", args.out.display()))?;
    Ok(())
}
