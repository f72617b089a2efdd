//! The fetcher's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: hash mismatch: expected {expected}, got {got}")]
    HashMismatch {
        what: String,
        expected: String,
        got: String,
    },
    #[error("unsafe archive {archive}: {reason}")]
    UnsafeArchive { archive: PathBuf, reason: String },
}

impl Error {
    /// Wraps an I/O error with what was being done, since a bare "No such file" helps nobody.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
