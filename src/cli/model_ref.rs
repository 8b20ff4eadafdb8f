//! The model-reference flags shared by `run` and `pull` (`--offline`, `--revision`), and
//! resolving a reference through the store with progress on stderr.

use anyhow::Context;

use crate::cli::progress::Reporter;
use crate::store::{self, Mode, Resolved, Store};

/// Where a model may come from.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StoreArgs {
    /// Use only cached files; never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Hub revision of the model: a branch, tag or commit (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

/// Resolves `model` (the default alias when `None`) to local files, downloading what is
/// missing; `mode` says whether the cache is trusted as is (`run`) or refreshed (`pull`).
pub fn resolve(model: Option<&str>, args: &StoreArgs, mode: Mode) -> anyhow::Result<Resolved> {
    let model = model.unwrap_or_else(|| store::default_model());
    let options = store::Options {
        offline: args.offline,
        revision: args.revision.clone(),
        mode,
    };
    let resolved = Store::default().resolve(model, &options, &Reporter::new());
    match resolved {
        Ok(r) => Ok(r),
        // The error already quotes the reference: saying it twice reads as "X: X".
        Err(e @ store::Error::BadReference { .. }) => Err(crate::Error::from(e).into()),
        Err(e) => Err(crate::Error::from(e)).with_context(|| format!("model '{model}'")),
    }
}
