//! The `mlcli` binary: parse, dispatch, print the error chain, map errors to exit codes
//! (1 runtime, 2 usage or unsupported input; a closed stdout pipe is success).

use std::process::ExitCode;

use mlcli::cli::{self, UsageError};
use mlcli::formats::{chat_template::BudgetAllocator, untrusted};

/// The system allocator, with the memory budget that keeps a chat template (code from the
/// model file) from allocating without bound.
#[global_allocator]
static ALLOCATOR: BudgetAllocator = BudgetAllocator;

/// Longest error line printed: errors repeat what files say, and files can say megabytes.
const MAX_ERROR_LINE: usize = 4096;

fn main() -> ExitCode {
    mlcli::kernels::cpu::heap::keep_freed_buffers();
    let cli = cli::parse();
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "mlcli: error: {}",
                untrusted::line(&chain(&e), MAX_ERROR_LINE)
            );
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes, joined by `: `, without repeating themselves: a cause whose
/// text its parent already ends with (a library error wrapped by a layer that printed it) is
/// left out, and one that starts with what its parent ends with (`loading m.gguf` then
/// `m.gguf: truncated`) says only the rest.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let text = c.to_string();
        if out.ends_with(&text) {
            continue;
        }
        let said = out.trim_end_matches('\'');
        let text = match text.split_once(": ") {
            Some((head, rest)) if !head.is_empty() && said.ends_with(head) => rest,
            _ => &text,
        };
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

fn io_errors(e: &anyhow::Error) -> impl Iterator<Item = &std::io::Error> {
    e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    io_errors(e).any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn exit_code(e: &anyhow::Error) -> u8 {
    let bad_input = e.chain().any(|c| {
        c.is::<UsageError>()
            || c.downcast_ref::<mlcli::Error>()
                .is_some_and(mlcli::Error::is_bad_input)
    });
    // Text that is not UTF-8 (a prompt on stdin, a template file) is bad input too.
    let bad_text = io_errors(e).any(|io| io.kind() == std::io::ErrorKind::InvalidData);
    if bad_input || bad_text {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_chain_does_not_repeat_itself() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("m.gguf: no such file");
        assert_eq!(chain(&e), "m.gguf: no such file");
        let e = anyhow::anyhow!("m.gguf: truncated").context("loading m.gguf");
        assert_eq!(chain(&e), "loading m.gguf: truncated");
        let e = anyhow::anyhow!("/x: not found").context("model '/x'");
        assert_eq!(chain(&e), "model '/x': not found");
        let e = anyhow::anyhow!("bad magic").context("loading m.gguf");
        assert_eq!(chain(&e), "loading m.gguf: bad magic");
    }
}
