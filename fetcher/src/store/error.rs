//! The store's error: what publishing, re-checking, bundling or ingesting found wrong on disk
//! or in the bytes handed to it. Each kind of damage has its own variant, so callers (and
//! tests) tell a mismatch from a refused file from a damaged item without reading messages.

use std::path::PathBuf;

use srcgrab_formats::nar::NarError;
use srcgrab_formats::narinfo::NarInfoError;
use srcgrab_formats::signature::KeyError;
use srcgrab_formats::store_path::{StorePath, STORE_DIR};

use crate::error::{io_error, local_constructors, IoError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{what}: hash mismatch: expected {expected}, got {got}")]
    HashMismatch {
        what: String,
        expected: String,
        got: String,
    },
    /// Content that hashes right but lands at another store path than the entry says.
    #[error("{what}: store path mismatch: expected {expected}, got {got}")]
    StorePathMismatch {
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
    /// A NAR stream that does not follow the format (or is truncated).
    #[error("{0}")]
    BadNar(NarError),
    /// A NAR that follows the format but disagrees with what its narinfo or entry declares
    /// (size, hash, compression, a flat output that is not one plain file).
    #[error("{what}: {reason}")]
    NarMismatch { what: String, reason: String },
    /// A file type NAR cannot hold (socket, device, fifo).
    #[error("{path}: cannot be archived: {kind}")]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error(transparent)]
    BadNarinfo(#[from] NarInfoError),
    #[error(transparent)]
    BadKey(#[from] KeyError),
    /// A path that must be a regular file (or a directory) of bounded size and is missing, a
    /// symlink, a device, or too large: never followed or read unbounded.
    #[error("{path}: {reason}")]
    RefusedFile { path: PathBuf, reason: String },
    /// A published item whose files disagree (narinfo vs NAR, CA vs store path, a narinfo
    /// that does not parse): `srcgrab verify --repair` removes it.
    #[error("{what}: {reason}")]
    Damaged { what: String, reason: String },
    /// A file that is not the one its hash was taken of, or changed since.
    #[error("{0}: not the file its hash was taken of, or changed since")]
    ChangedSinceHashed(PathBuf),
    /// A manifest entry that cannot be published as it is declared.
    #[error("{store_path}: {reason}")]
    BadEntry {
        store_path: StorePath,
        reason: String,
    },
    /// A binary from outside (a bundle, a disk) whose narinfo no trusted key signed.
    #[error("narinfo: {0}")]
    Unsigned(String),
    /// A narinfo file whose name is not the hash part of the path it describes.
    #[error("narinfo: {name} names {store_path}")]
    MisnamedNarinfo { name: String, store_path: StorePath },
    #[error("{0}: not a srcgrab cache (no nix-cache-info and no sha256/ directory)")]
    NotACache(PathBuf),
    #[error("{path}: cache is for store {store_dir}, not {STORE_DIR}")]
    OtherStoreDir { path: PathBuf, store_dir: String },
    #[error("bundle: {0}")]
    BadBundle(String),
    #[error("{0}: bundle directory is not empty")]
    BundleDirNotEmpty(PathBuf),
    /// A scratch directory's lock another process took between its making and its locking.
    #[error("{0}: locked by another process as soon as it was made")]
    ScratchTaken(PathBuf),
}

local_constructors!(Error, io);

impl Error {
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io(err) if err.is_disk_full())
    }

    /// The bytes are not the declared ones: another source of them may still have them right.
    pub fn is_content_mismatch(&self) -> bool {
        matches!(
            self,
            Error::HashMismatch { .. } | Error::StorePathMismatch { .. }
        )
    }
}

/// Stream errors keep their OS code (a full disk while writing a NAR stays a full disk).
impl From<NarError> for Error {
    fn from(error: NarError) -> Error {
        match error {
            NarError::Write(source) => io_error("writing NAR")(source),
            NarError::Read(source) => io_error("reading NAR")(source),
            NarError::ReadContents(source) => io_error("reading file contents")(source),
            other => Error::BadNar(other),
        }
    }
}
