//! How the store reports what it is doing: the CLI implements [`Progress`] (progress bars in
//! a terminal, plain lines otherwise); the library itself never prints.

/// Receives notes and per-file download progress.
pub trait Progress {
    /// A one-line note for the user (a fallback taken, a file already present).
    fn note(&self, message: &str);
    /// A download starts: `total` bytes (if known), `start` of them already on disk.
    fn file(&self, name: &str, total: Option<u64>, start: u64) -> Box<dyn FileProgress + '_>;
}

/// Progress of one file.
pub trait FileProgress {
    /// Bytes on disk so far (may go back when a server ignores a resume request).
    fn set(&mut self, position: u64);
    /// The file is complete and verified.
    fn finish(&mut self);
}

/// A [`Progress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn note(&self, _message: &str) {}

    fn file(&self, _name: &str, _total: Option<u64>, _start: u64) -> Box<dyn FileProgress + '_> {
        Box::new(Silent)
    }
}

impl FileProgress for Silent {
    fn set(&mut self, _position: u64) {}
    fn finish(&mut self) {}
}
