//! The network's error: a URL that gave nothing usable, bytes that are not the declared ones,
//! or the local side (scratch files, the store a substitution publishes into) failing.

use crate::error::{local_constructors, IoError, TaskFailed};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL refused for good (404, 403, ...), or transient errors (connection, timeout,
    /// 429, 5xx, stalled body) that outlasted the retries.
    #[error("{url}: {reason}")]
    Download { url: String, reason: String },
    /// A URL that served a whole file whose hash is not the declared one.
    #[error("{url}: hash mismatch: expected {expected}, got {got}")]
    HashMismatch {
        url: String,
        expected: String,
        got: String,
    },
    /// What a substituter served that cannot be taken as it says: a narinfo that does not
    /// parse or names another path, a NAR that does not decompress or has another size.
    #[error("{what}: {reason}")]
    BadUpstream { what: String, reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    TaskFailed(#[from] TaskFailed),
}

local_constructors!(Error, io, task);

impl Error {
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io(err) => err.is_disk_full(),
            Error::Store(err) => err.is_disk_full(),
            _ => false,
        }
    }
}
