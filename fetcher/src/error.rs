//! The fetcher's error type. Pure formats have their own (in `srcgrab-formats`); a task that
//! panicked or a pool that closed is `TaskFailed`, never mistaken for a damaged item.

use std::path::PathBuf;

use srcgrab_formats::nar::NarError;
use srcgrab_formats::narinfo::NarInfoError;
use srcgrab_formats::signature::KeyError;
use srcgrab_process::ProcessError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// ENOSPC/EDQUOT, split out so callers can stop early instead of failing every remaining item.
    #[error("{context}: disk full ({source})")]
    DiskFull {
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
    /// An archive that is not hostile but cannot be unpacked as fetchzip would (unknown format,
    /// not exactly one top-level entry with stripRoot, corrupt data).
    #[error("cannot unpack {archive}: {reason}")]
    Unpack { archive: PathBuf, reason: String },
    /// A NAR stream that does not follow the format (or is truncated), or is not the
    /// single file a flat output must be.
    #[error("{0}")]
    BadNar(NarError),
    /// A file type NAR cannot hold (socket, device, fifo).
    #[error("{path}: cannot be archived: {kind}")]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error(transparent)]
    BadNarinfo(#[from] NarInfoError),
    #[error(transparent)]
    BadKey(#[from] KeyError),
    /// Content that hashes right but lands at another store path than the entry says.
    #[error("{what}: store path mismatch: expected {expected}, got {got}")]
    StorePathMismatch {
        what: String,
        expected: String,
        got: String,
    },
    /// A published cache item that is inconsistent (missing NAR, wrong size, bad CA, ...).
    #[error("{what}: {reason}")]
    Corrupt { what: String, reason: String },
    /// An external program (git, nix-store) failed; `stderr` holds the end of what it said.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// An entry srcgrab cannot make itself; only Nix's own builder can (`--builder nix`).
    #[error("needs builder: {0}")]
    NeedsBuilder(String),
    /// A hand-made manifest entry without any derivation to realise.
    #[error("manifest entry {0} names no derivation")]
    NoDerivation(String),
    /// The entry's .drv is gone from the Nix store (garbage-collected since enumeration).
    #[error("derivation {0} is not in the Nix store any more; run `srcgrab enumerate` again to re-instantiate it")]
    MissingDerivation(String),
    /// A URL that gave nothing usable: refused for good (404, 403, ...), or transient errors
    /// (connection, timeout, 429, 5xx, stalled body) that outlasted the retries.
    #[error("{url}: {reason}")]
    Download { url: String, reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
    /// A worker task that panicked or was cancelled, or a pool that closed under a run: a
    /// bug or a shutdown, never something about an item.
    #[error("{task} task failed: {reason}")]
    TaskFailed { task: &'static str, reason: String },
}

impl Error {
    /// Maps the join error of a `task` (spawned or blocking) that did not return.
    pub fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Error {
        move |err| Error::TaskFailed {
            task,
            reason: err.to_string(),
        }
    }

    /// Wraps an I/O error with what was being done, since a bare "No such file" helps nobody.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| {
            if matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ) {
                Error::DiskFull { context, source }
            } else {
                Error::Io { context, source }
            }
        }
    }
}

/// Stream errors keep their OS code (a full disk while writing a NAR is `DiskFull`).
impl From<NarError> for Error {
    fn from(error: NarError) -> Error {
        match error {
            NarError::Write(source) => Error::io("writing NAR")(source),
            NarError::Read(source) => Error::io("reading NAR")(source),
            NarError::ReadContents(source) => Error::io("reading file contents")(source),
            other => Error::BadNar(other),
        }
    }
}

/// A program that failed is a `Command` error (its stderr told why); one that could not be
/// started or talked to is an I/O error about that command.
impl From<ProcessError> for Error {
    fn from(error: ProcessError) -> Error {
        match error {
            ProcessError::Failed { command, stderr } => Error::Command { command, stderr },
            ProcessError::Start { command, source } => {
                Error::io(format!("running {command}"))(source)
            }
            ProcessError::Io { command, source } => Error::io(command)(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_panics_is_a_task_failure_not_an_item_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime.block_on(async {
            tokio::task::spawn_blocking(|| panic!("boom"))
                .await
                .map_err(Error::task("hashing"))
                .unwrap_err()
        });
        assert!(
            matches!(
                err,
                Error::TaskFailed {
                    task: "hashing",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("hashing task failed: "),
            "{err}"
        );
    }
}
