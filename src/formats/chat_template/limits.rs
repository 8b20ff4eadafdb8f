//! What compiling and rendering a chat template may spend: instructions (minijinja's fuel),
//! output bytes, memory (through [`super::budget`]) and wall-clock time. Every bound grows with the
//! conversation, so real templates render conversations of any length that fits a context
//! window, while a template that loops or doubles without end stops with a clean error.

use std::time::Duration;

use minijinja::value::{Kwargs, StringInput};
use minijinja::{Error as JinjaError, ErrorKind, Value};

/// Bounds for one render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// minijinja instructions (fuel).
    pub fuel: u64,
    /// Bytes written, at the top level and into `{% set %}` blocks and macro calls.
    pub output_bytes: usize,
    /// Bytes the rendering thread may hold (enforced where [`super::BudgetAllocator`] is the
    /// global allocator).
    pub memory_bytes: usize,
    /// Wall-clock time.
    pub time: Duration,
}

/// Fuel for any conversation. The shipped and tested real templates render 2,001 messages
/// within a tenth of the bound (a unit test checks it), so this is thousands of turns.
const BASE_FUEL: u64 = 2_000_000;
/// Fuel per message and per input byte, for the conversations longer than that.
const FUEL_PER_MESSAGE: u64 = 2_000;
const FUEL_PER_BYTE: u64 = 4;
/// Output for any conversation, and per input byte: a template writes each message once or
/// twice, plus a fixed preamble.
const BASE_OUTPUT: usize = 4 << 20;
const OUTPUT_PER_BYTE: usize = 8;
/// Memory for any conversation, and per input byte (the messages are held as minijinja values,
/// copied into strings, and written out).
const BASE_MEMORY: usize = 256 << 20;
const MEMORY_PER_BYTE: usize = 32;
/// Wall-clock time: fuel stops runaway loops long before this; it is the last resort.
const TIME: Duration = Duration::from_secs(20);
/// Widest `indent(width)` (minijinja repeats a space `width` times in one allocation).
pub const MAX_INDENT: usize = 1 << 10;

impl Limits {
    /// The bounds for rendering `messages` messages holding `input_bytes` bytes of text.
    pub fn for_input(messages: usize, input_bytes: usize) -> Self {
        let messages = u64::try_from(messages).unwrap_or(u64::MAX);
        let bytes = u64::try_from(input_bytes).unwrap_or(u64::MAX);
        Limits {
            fuel: BASE_FUEL
                .saturating_add(FUEL_PER_MESSAGE.saturating_mul(messages))
                .saturating_add(FUEL_PER_BYTE.saturating_mul(bytes)),
            output_bytes: BASE_OUTPUT.saturating_add(OUTPUT_PER_BYTE.saturating_mul(input_bytes)),
            memory_bytes: BASE_MEMORY.saturating_add(MEMORY_PER_BYTE.saturating_mul(input_bytes)),
            time: TIME,
        }
    }

    /// The bounds for compiling a template of `source_bytes` bytes (memory and time: minijinja
    /// folds constant expressions such as `'x' * 99999999` while compiling).
    pub fn for_source(source_bytes: usize) -> Self {
        Limits {
            fuel: BASE_FUEL,
            output_bytes: BASE_OUTPUT,
            memory_bytes: BASE_MEMORY.saturating_add(MEMORY_PER_BYTE.saturating_mul(source_bytes)),
            time: TIME,
        }
    }
}

thread_local! {
    /// The output bound of the render on this thread (0: none) and what it wrote so far; a
    /// render has a thread of its own, so these are per render.
    static OUTPUT: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// Starts counting output against `bytes` on this thread.
pub fn set_output_limit(bytes: usize) {
    OUTPUT.with(|o| o.set((bytes, 0)));
}

/// Marks an error as a spent limit, so rendering reports it as such.
#[derive(Debug)]
pub struct Spent(pub String);

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Spent {}

/// A minijinja error carrying [`Spent`].
pub fn spent(what: String) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, what.clone()).with_source(Spent(what))
}

/// Counts `n` more bytes of output (every `{{ value }}`, captured or not) against the bound.
pub fn count_output(n: usize) -> Result<(), JinjaError> {
    let (limit, written) = OUTPUT.with(|o| o.get());
    if limit == 0 {
        return Ok(());
    }
    let written = written.saturating_add(n);
    OUTPUT.with(|o| o.set((limit, written)));
    if written > limit {
        return Err(spent(format!("wrote more than {limit} bytes")));
    }
    Ok(())
}

/// An `io::Write` that refuses to grow a `Vec` past `limit` bytes (the raw text between tags
/// does not pass through the formatter, so the top-level output is bounded here too).
pub struct BoundedOutput {
    /// What was written.
    pub bytes: Vec<u8>,
    /// The bound.
    pub limit: usize,
    /// True once a write was refused.
    pub overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output bound reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// jinja2's `indent` filter with its width bounded by [`MAX_INDENT`].
pub fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, JinjaError> {
    let by_name: Option<usize> = kwargs.peek("width")?;
    if let Some(w) = width.or(by_name).filter(|&w| w > MAX_INDENT) {
        return Err(spent(format!(
            "asked for an indent width of {w} (at most {MAX_INDENT})"
        )));
    }
    minijinja::filters::indent(value, width, first, blank, kwargs)
}
