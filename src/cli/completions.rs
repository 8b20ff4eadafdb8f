//! `mlcli completions SHELL`: shell completion scripts generated from the clap definition.

use clap_complete::Shell;

/// Arguments of `mlcli completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script to stdout.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cmd = super::command();
    // Generated into memory: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mlcli", &mut script);
    super::print_stdout(script)
}
