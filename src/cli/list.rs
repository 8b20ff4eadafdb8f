//! `mlcli list`: the cached models of both caches (HF and PyPI-sourced) with their files,
//! size, quant and last use; `--aliases` shows the catalogue instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{HumanBytes, HumanDuration};

use crate::store::{catalogue, Store};

/// Arguments of `mlcli list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (one array of models, or of catalogue entries with --aliases).
    #[arg(long)]
    pub json: bool,
    /// List the catalogue's aliases (what `mlcli run ALIAS` / `mlcli pull ALIAS` fetch).
    #[arg(long)]
    pub aliases: bool,
}

/// Runs `mlcli list`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.aliases {
        return aliases(args.json);
    }
    let store = Store::default();
    let models = store.list().map_err(crate::Error::from)?;
    if args.json {
        return super::print_stdout(serde_json::to_string_pretty(&models)? + "\n");
    }
    if models.is_empty() {
        let c = store.config();
        eprintln!(
            "mlcli: no cached models (HF cache {}, mlcli cache {})",
            c.hub_cache.display(),
            c.pypi_dir().display()
        );
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = vec![[
        "NAME".to_string(),
        "SOURCE".into(),
        "FILES".into(),
        "SIZE".into(),
        "QUANT".into(),
        "LAST USED".into(),
        "ALIASES".into(),
    ]];
    for m in &models {
        rows.push([
            m.name.clone(),
            m.source.to_string(),
            m.files.len().to_string(),
            HumanBytes(m.size).to_string(),
            or_dash(m.quant.join(",")),
            m.last_used.map_or_else(
                || "-".into(),
                |t| {
                    format!(
                        "{} ago",
                        HumanDuration(Duration::from_secs(now.saturating_sub(t)))
                    )
                },
            ),
            or_dash(m.aliases.join(",")),
        ]);
    }
    super::print_stdout(table(&rows))
}

fn aliases(json: bool) -> anyhow::Result<()> {
    let c = catalogue::catalogue();
    if json {
        return super::print_stdout(serde_json::to_string_pretty(&c.models)? + "\n");
    }
    let mut rows = vec![[
        "ALIAS".to_string(),
        "HUB FILE".into(),
        "PYPI FALLBACK".into(),
        "ABOUT".into(),
    ]];
    for e in &c.models {
        rows.push([
            e.alias.clone(),
            format!("{}/{}", e.repo, e.file),
            or_dash(e.pypi.clone().unwrap_or_default()),
            e.about.clone(),
        ]);
    }
    super::print_stdout(table(&rows))
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// The rows as aligned columns, one line each.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
