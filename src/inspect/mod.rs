//! `inspect`, the model porter's microscope: what a GGUF or safetensors model holds, what it
//! would take to run it, and where a forward pass goes wrong. Every view is a plain data type
//! that serialises to stable JSON ([`json`]) and renders as text ([`text`]); the CLI only
//! parses arguments, calls one view and prints it.
//!
//! Files are read with the tolerant header readers in [`crate::formats`], so models this
//! build cannot run (unknown architectures, IQ*/TQ*/MXFP4 tensors, safetensors checkpoints)
//! are still shown, with the reason they cannot run.

pub mod hf;
pub mod json;
pub mod machine;
pub mod memory;
pub mod metadata;
pub mod probe;
pub mod stats;
pub mod summary;
pub mod tensors;
pub mod text;
pub mod values;

use std::path::{Path, PathBuf};

use crate::formats::detect::{self, Format};
use crate::formats::gguf_header::{self, Header, ReadOptions};
use crate::formats::safetensors_index::Checkpoint;
use crate::Result;

/// A model opened for inspection: its headers, never its weights.
#[derive(Debug)]
pub enum Model {
    /// A GGUF file, with the metadata arrays [`Model::open`] or [`Model::open_full`] keeps.
    Gguf {
        /// The file.
        path: PathBuf,
        /// Its header.
        header: Header,
    },
    /// A safetensors checkpoint (one file, a directory, or shards through an index).
    Safetensors {
        /// What was given on the command line.
        path: PathBuf,
        /// The directory where `config.json` and the tokenizer files would be.
        dir: Option<PathBuf>,
        /// The files and their headers.
        checkpoint: Checkpoint,
    },
}

impl Model {
    /// Opens `path` as `run` resolves it (a GGUF file recognised by content, a Hugging Face
    /// directory), and also a single `*.safetensors` file or a `*.safetensors.index.json`.
    /// GGUF metadata arrays other than the tokenizer's are kept abbreviated.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, ReadOptions::LOAD)
    }

    /// Like [`Model::open`], with every GGUF metadata array read whole (`--metadata --full`:
    /// the user asked to see them, so memory follows the array sizes).
    pub fn open_full(path: &Path) -> Result<Self> {
        Self::open_with(path, ReadOptions::FULL)
    }

    fn open_with(path: &Path, gguf: ReadOptions) -> Result<Self> {
        let is_index = path.is_file()
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".safetensors.index.json"));
        if is_index {
            return Ok(Self::Safetensors {
                path: path.to_path_buf(),
                dir: path.parent().map(Path::to_path_buf),
                checkpoint: Checkpoint::from_index(path)?,
            });
        }
        // A single safetensors file is read as itself, with the Hugging Face files beside it
        // (config.json, tokenizer) when there are any; `run` needs the whole directory.
        if path.is_file() && detect::is_safetensors_file(path) {
            return Ok(Self::Safetensors {
                checkpoint: Checkpoint::single(path)?,
                dir: path.parent().map(Path::to_path_buf),
                path: path.to_path_buf(),
            });
        }
        match detect::detect(path)? {
            Format::Gguf(p) => Ok(Self::Gguf {
                header: gguf_header::read_with(&p, gguf)?,
                path: p,
            }),
            Format::SafetensorsDir(d) => Ok(Self::Safetensors {
                checkpoint: Checkpoint::from_dir(&d)?,
                path: d.clone(),
                dir: Some(d),
            }),
        }
    }

    /// What was opened.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf { path, .. } | Self::Safetensors { path, .. } => path,
        }
    }

    /// The file (or directory) name, for display.
    pub fn display_name(&self) -> String {
        let p = self.path();
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
    }

    /// `"GGUF"` or `"safetensors"`.
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::Gguf { .. } => "GGUF",
            Self::Safetensors { .. } => "safetensors",
        }
    }
}
