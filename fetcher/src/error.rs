//! The fetcher's errors, one enum per part: [`store::Error`](crate::store::Error) for the
//! synchronous cache, [`net::Error`](crate::net::Error) for the network, and [`Error`] for a
//! fetch as a whole (git, Nix's builder, binaries' closures), which holds either. Pure
//! formats have theirs in `srcgrab-formats`. Shared here: a local I/O failure that says what
//! was being done, and a task that did not return (a bug or a shutdown, never an item's fault).

use std::fmt;
use std::io;

use srcgrab_process::ProcessError;

use crate::{net, store};

/// A local file operation that failed, with what was being done, since a bare "No such
/// file" helps nobody.
#[derive(Debug)]
pub struct IoError {
    pub context: String,
    pub source: io::Error,
}

impl IoError {
    /// ENOSPC/EDQUOT, told apart so a run stops early instead of failing every remaining item.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_disk_full() {
            write!(f, "{}: disk full ({})", self.context, self.source)
        } else {
            write!(f, "{}: {}", self.context, self.source)
        }
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps an I/O error with what was being done, as whichever error holds an [`IoError`]
/// (each enum's `Error::io` names that error, so `.map_err(Error::io("reading x"))?` infers).
pub fn io_error<E: From<IoError>>(context: impl Into<String>) -> impl FnOnce(io::Error) -> E {
    let context = context.into();
    move |source| E::from(IoError { context, source })
}

/// `Error::io` (and `Error::task`) for an error enum that holds an [`IoError`] (and a
/// [`TaskFailed`]): they name the enum, so `.map_err(Error::io("reading x"))?` infers.
macro_rules! local_constructors {
    ($error:ident, io) => {
        impl $error {
            /// Wraps an I/O error with what was being done (see [`IoError`]).
            pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> $error {
                $crate::error::io_error(context)
            }
        }
    };
    ($error:ident, io, task) => {
        $crate::error::local_constructors!($error, io);
        impl $error {
            /// Maps the join error of a `task` (spawned or blocking) that did not return.
            pub fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> $error {
                $crate::error::task_failed(task)
            }
        }
    };
}
pub(crate) use local_constructors;

/// A worker task that panicked or was cancelled, or a pool that closed under a run.
#[derive(Debug, thiserror::Error)]
#[error("{task} task failed: {reason}")]
pub struct TaskFailed {
    pub task: &'static str,
    pub reason: String,
}

/// Maps the join error of a `task` (spawned or blocking) that did not return, as whichever
/// error holds a [`TaskFailed`].
pub fn task_failed<E: From<TaskFailed>>(
    task: &'static str,
) -> impl FnOnce(tokio::task::JoinError) -> E {
    move |err| {
        E::from(TaskFailed {
            task,
            reason: err.to_string(),
        })
    }
}

/// Why one fetch (an entry, a git checkout, a build, a binary closure) did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Net(#[from] net::Error),
    #[error(transparent)]
    Io(#[from] IoError),
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
    /// Nix realised the derivation, but to another path than the entry's.
    #[error("{drv_path}: store path mismatch: expected {expected}, got {got}")]
    BuiltElsewhere {
        drv_path: String,
        expected: String,
        got: String,
    },
    /// A line of a list of store paths that is not one.
    #[error("{what}: {reason}")]
    BadPathList { what: String, reason: String },
    #[error(transparent)]
    TaskFailed(#[from] TaskFailed),
}

local_constructors!(Error, io, task);

impl Error {
    /// Errors that stop the whole run: every further entry would fail the same way.
    pub fn is_fatal(&self) -> bool {
        self.is_disk_full()
    }

    /// The store's error, when the fetch failed there (directly or under a substitution).
    pub fn as_store(&self) -> Option<&store::Error> {
        match self {
            Error::Store(err) | Error::Net(net::Error::Store(err)) => Some(err),
            _ => None,
        }
    }

    /// Bytes that are not the declared ones: another source of them may still have them right.
    pub fn is_content_mismatch(&self) -> bool {
        matches!(self, Error::Net(net::Error::HashMismatch { .. }))
            || self
                .as_store()
                .is_some_and(store::Error::is_content_mismatch)
    }

    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Store(err) => err.is_disk_full(),
            Error::Net(err) => err.is_disk_full(),
            Error::Io(err) => err.is_disk_full(),
            _ => false,
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
                io_error(format!("running {command}"))(source)
            }
            ProcessError::Io { command, source } => io_error(command)(source),
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
        let err: Error = runtime.block_on(async {
            tokio::task::spawn_blocking(|| panic!("boom"))
                .await
                .map_err(Error::task("hashing"))
                .unwrap_err()
        });
        assert!(
            matches!(
                err,
                Error::TaskFailed(TaskFailed {
                    task: "hashing",
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("hashing task failed: "),
            "{err}"
        );
    }

    #[test]
    fn a_full_disk_is_told_apart_through_every_layer() {
        let full =
            || -> IoError { io_error("writing x")(io::Error::from_raw_os_error(libc::ENOSPC)) };
        let other =
            || -> IoError { io_error("writing x")(io::Error::from_raw_os_error(libc::EACCES)) };
        assert!(Error::from(store::Error::from(full())).is_disk_full());
        assert!(Error::from(net::Error::from(store::Error::from(full()))).is_disk_full());
        assert!(Error::from(full()).is_disk_full());
        assert!(!Error::from(store::Error::from(other())).is_disk_full());
        assert!(full().to_string().contains("disk full"), "{}", full());
    }

    #[test]
    fn wrong_bytes_are_a_content_mismatch_whichever_part_found_them() {
        let mismatch = || store::Error::HashMismatch {
            what: "x".into(),
            expected: "sha256-a".into(),
            got: "sha256-b".into(),
        };
        assert!(Error::from(mismatch()).is_content_mismatch());
        assert!(Error::from(net::Error::from(mismatch())).is_content_mismatch());
        let download = net::Error::HashMismatch {
            url: "http://x".into(),
            expected: "sha256-a".into(),
            got: "sha256-b".into(),
        };
        assert!(Error::from(download).is_content_mismatch());
        let refused = store::Error::RefusedFile {
            path: "x".into(),
            reason: "a symlink".into(),
        };
        assert!(!Error::from(refused).is_content_mismatch());
    }
}
