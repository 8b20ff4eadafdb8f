//! The `mlcli` binary: parse, dispatch, print the error chain, map errors to exit codes
//! (1 runtime, 2 usage or unsupported input; a closed stdout pipe is success).

use std::process::ExitCode;

use mlcli::cli::{self, UsageError};

fn main() -> ExitCode {
    let cli = cli::parse();
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("mlcli: error: {}", chain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code(e: &anyhow::Error) -> u8 {
    let bad_input = e.chain().any(|c| {
        c.is::<UsageError>()
            || c.downcast_ref::<mlcli::Error>()
                .is_some_and(mlcli::Error::is_bad_input)
    });
    if bad_input {
        2
    } else {
        1
    }
}
