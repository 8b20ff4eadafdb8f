//! The library's error type: what went wrong, what was expected and what is supported.

use std::path::PathBuf;

/// Everything the library can fail with. The CLI adds context with `anyhow` at its edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The input is not a model format this build knows.
    #[error("{path}: {found}; expected a GGUF file (magic \"GGUF\") or a directory with config.json and *.safetensors")]
    UnknownFormat {
        /// The path given.
        path: PathBuf,
        /// What was found there instead.
        found: String,
    },
    /// A recognised format that this build cannot load yet.
    #[error("{path}: {format}: not supported yet by this build")]
    FormatNotSupported {
        /// The path given.
        path: PathBuf,
        /// The format that was recognised.
        format: &'static str,
    },
    /// A GGUF file whose structure is broken (truncated, bad lengths, bad offsets).
    #[error("{path}: malformed GGUF: {reason}")]
    MalformedGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the offset where it was found.
        reason: String,
    },
    /// A safetensors file or shard index whose structure is broken.
    #[error("{path}: malformed safetensors: {reason}")]
    MalformedSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor asked for by name that the model does not hold.
    #[error("no tensor named '{name}' in the model{hint}")]
    UnknownTensor {
        /// The name asked for.
        name: String,
        /// Close names, as `; did you mean ...?`, or empty.
        hint: String,
    },
    /// A Hugging Face `tokenizer.json` that could not be loaded.
    #[error("{path}: {reason}")]
    HfTokenizer {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A family did not report every block to the tracer (a bug in its `forward`).
    #[error("the '{family}' family reported blocks [{reported}] to the tracer, expected 0..{expected}: every block must call ctx.trace(layer, \"block_out\", &x)")]
    TraceIncomplete {
        /// The family.
        family: &'static str,
        /// The blocks it reported.
        reported: String,
        /// The number of blocks.
        expected: usize,
    },
    /// A tensor stored in a type this build cannot compute with.
    #[error("tensor '{tensor}' has type {found}, which this build does not support; supported: {supported}")]
    UnsupportedTensorType {
        /// The tensor's name.
        tensor: String,
        /// The type found in the file.
        found: String,
        /// The types this build supports.
        supported: String,
    },
    /// An architecture no family in the registry handles.
    #[error("unsupported architecture '{found}'; supported: {supported}")]
    UnsupportedArchitecture {
        /// The architecture named by the file.
        found: String,
        /// The architectures of every registered family.
        supported: String,
    },
    /// A metadata key that the model needs is absent.
    #[error("missing metadata key '{0}'")]
    MissingMetadata(String),
    /// A key that the model needs is absent from a JSON configuration file.
    #[error("missing key '{key}' in {origin}")]
    MissingConfigKey {
        /// The key.
        key: String,
        /// The file (and nested object) it was looked for in.
        origin: String,
    },
    /// A metadata key with an unusable value.
    #[error("metadata key '{key}': expected {expected}, found {found}")]
    BadMetadata {
        /// The key.
        key: String,
        /// What the reader expected.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },
    /// A tensor the model needs is absent.
    #[error("missing tensor '{name}' (looked for '{stored}' in the file)")]
    MissingTensor {
        /// The canonical (Hugging Face) name.
        name: String,
        /// The name in the file's own convention.
        stored: String,
    },
    /// A tensor whose shape does not match the configuration.
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    TensorShape {
        /// The canonical name.
        name: String,
        /// Shape implied by the configuration.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// Tensors were left over after loading: the family does not understand this checkpoint.
    #[error(
        "{count} tensor(s) in the file were not used by the '{family}' family, e.g. {examples}"
    )]
    UnusedTensors {
        /// The family that loaded the file.
        family: &'static str,
        /// How many were left.
        count: usize,
        /// A few of their names.
        examples: String,
    },
    /// A configuration value the family cannot run with (or a file whose content cannot be
    /// converted as asked).
    #[error("unsupported configuration: {0}")]
    UnsupportedConfig(String),
    /// A JSON configuration file that is not what it should be.
    #[error("{file}: {key}{why}")]
    MalformedConfig {
        /// The file (and nested object).
        file: String,
        /// The key, with `: ` after it, or empty for the whole file.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The prompt (plus what is already cached) does not fit the context window.
    #[error("the prompt needs {needed} tokens but the context holds {ctx_size}; use a shorter prompt or a larger -c/--ctx-size (model maximum {model_max})")]
    ContextFull {
        /// Tokens needed.
        needed: usize,
        /// Context size of this run.
        ctx_size: usize,
        /// The model's trained context length.
        model_max: usize,
    },
    /// A value given by the user that cannot be honoured (a flag, an option, an argument).
    #[error("{0}")]
    InvalidArgument(String),
    /// A sampling setting outside its range, with where the value came from when known.
    #[error("sampling setting {setting}{}", .origin.as_ref().map(|o| format!(" (source: {o})")).unwrap_or_default())]
    InvalidSampling {
        /// The setting, its value and what it accepts.
        setting: crate::engine::sampler::OutOfRange,
        /// The source of the value (`flag`, `catalogue: smollm2`, ...).
        origin: Option<String>,
    },
    /// A prompt with no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Something that should not happen did (a bug, or a backend failing mid-run): a runtime
    /// failure, not bad input.
    #[error("internal error: {0}")]
    Internal(String),
    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::formats::tokenizer::Error),
    /// Chat-template compilation or rendering failed (the message names the template).
    #[error(transparent)]
    Template(#[from] crate::formats::chat_template::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Resolving, downloading or removing a model failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

impl Error {
    /// True for errors about the input itself (unknown or unsupported format, broken file,
    /// unsupported architecture or type): the CLI exits with status 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::UnknownFormat { .. }
                | Error::FormatNotSupported { .. }
                | Error::MalformedGguf { .. }
                | Error::MalformedSafetensors { .. }
                | Error::UnknownTensor { .. }
                | Error::HfTokenizer { .. }
                | Error::UnsupportedTensorType { .. }
                | Error::UnsupportedArchitecture { .. }
                | Error::MissingMetadata(_)
                | Error::MissingConfigKey { .. }
                | Error::BadMetadata { .. }
                | Error::MissingTensor { .. }
                | Error::TensorShape { .. }
                | Error::UnusedTensors { .. }
                | Error::UnsupportedConfig(_)
                | Error::MalformedConfig { .. }
                | Error::Tokenizer(_)
                | Error::Template(_)
                | Error::ContextFull { .. }
                | Error::InvalidArgument(_)
                | Error::InvalidSampling { .. }
                | Error::EmptyPrompt
        ) || matches!(self, Error::Store(e) if e.is_bad_input())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
