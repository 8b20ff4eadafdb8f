//! `mlcli rm MODEL...`: remove cached models — a whole HF repo (`org/repo`), some of its files
//! (`org/repo:QUANT`, `org/repo/FILE`), a PyPI package or version, or an alias's files.

use indicatif::HumanBytes;

use crate::store::Store;

/// Arguments of `mlcli rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to remove, as `mlcli list` names it (or an alias, org/repo:QUANT, org/repo/FILE).
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `mlcli rm`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let store = Store::default();
    let mut report = Vec::new();
    for model in &args.models {
        let removed = store.remove(model).map_err(crate::Error::from)?;
        if !args.json {
            for p in &removed.removed {
                crate::cli::print_stdout(format!("removed {}\n", p.display()))?;
            }
            eprintln!("mlcli: {model}: freed {}", HumanBytes(removed.freed));
        }
        report.push(serde_json::json!({
            "model": model,
            "removed": removed.removed,
            "freed": removed.freed,
        }));
    }
    if args.json {
        crate::cli::print_stdout(serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
