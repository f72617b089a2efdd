//! The store: the cache root on disk (a Nix binary cache and a hashed mirror in one), and the
//! only way anything is published into it. Synchronous: callers on an async runtime run it
//! on blocking threads.
//!
//! - [`layout`](DiskLayout): where every item lives; nothing else builds a path.
//! - `place`: atomic placement (temp file in `.tmp`, fsync, rename; symlinks, hard links).
//! - `publish`: every publish checks the declared hash and store path over the bytes it
//!   publishes, then places the NAR, the mirror file and keys, and the narinfo last, so a
//!   visible narinfo always points at a complete NAR.
//! - `trust`: [`VerifiedHash`], a hash of exactly a file's bytes, so a download's hash is
//!   not computed twice.
//! - `compression`, `hashing`, `visit`: the streaming adapters a publish is made of.
//! - `scratch`: each writing process's own temp directory, removed after a crash by the next.
//! - [`tree`], [`unpack`]: NAR to and from a directory tree, and archives unpacked as
//!   fetchzip does, for publishing and ingesting trees.
//! - [`Error`]: the store's own error, one variant per kind of damage.
//! - `recheck`: presence checks and the full re-check of one item.
//! - [`binary`]: binaries (no content address), kept as their upstream signed them.
//! - [`verify`], [`bundle`], [`ingest`]: maintenance over a whole store.
//!
//! The hashed mirror holds flat entries only (hashed mirrors are only asked for flat
//! hashes): the raw file at `sha256/<hex>`, and relative symlinks to it for every key a
//! fetcher may ask for: `<algo>/<hex>` and `<algo>/<nix32>` for sha256 and the declared
//! algorithm, `<algo>-<base64>` at the root (nixpkgs' fetchurl with an SRI hash asks for
//! `<mirror>//<sri>`) and `<algo>/<algo>-<base64>` (older fetchurl given an SRI `sha256`).
//! A '/' inside base64 makes a subdirectory, as a URL path would. Fetchers only ever ask
//! by the declared algorithm, so sha512 keys exist only for entries declared sha512:
//! hashing every file with sha512 as well (as tarballs.nixos.org does) would cost as much
//! CPU as the three sha256 passes a publish needs together.
//!
//! Directories are not fsynced after a rename (a file system that journals in order, as
//! ext4, XFS and btrfs do, cannot keep the later narinfo rename and lose the earlier NAR
//! one; and should one, [`Cache::is_present`] sees the missing NAR and the entry is
//! published again): an fsync costs milliseconds, and a publish is three already.

pub mod binary;
pub mod bundle;
mod checked_nar;
mod compression;
mod error;
mod hashing;
pub mod ingest;
mod layout;
mod lock;
mod place;
mod publish;
mod recheck;
pub mod regular_file;
mod scratch;
mod seal;
pub mod tree;
mod trust;
pub mod unpack;
pub mod verify;
mod visit;

pub(crate) use checked_nar::CheckedNar;
pub use compression::Compression;
pub(crate) use compression::{decompressor, Compressor};
pub use error::Error;
pub use layout::{DiskLayout, CACHE_INFO};
pub use lock::FileLock;
pub use trust::{HashedWrites, VerifiedHash};

use std::fs;
use std::path::Path;

use srcgrab_formats::hash::{Hash, HashMode};
use srcgrab_formats::store_path::STORE_DIR;
use srcgrab_manifest::Entry;

use regular_file::{SmallFile, MAX_CACHE_INFO};
use srcgrab_formats::narinfo::CacheInfo;
use srcgrab_formats::signature::SecretKey;

/// Binary caches with a lower number win; cache.nixos.org says 40, so ours is asked first.
const PRIORITY: u32 = 30;
const WRITE_BUFFER: usize = 256 * 1024;

/// Which layouts are written into the cache root (`--layout cache,mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub cache: bool,
    pub mirror: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            cache: true,
            mirror: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    pub compression: Compression,
    pub layout: Layout,
    pub signing_key: Option<SecretKey>,
    /// NARs from an upstream binary cache keep their downloaded file (and its compression)
    /// instead of being recompressed ([`Cache::publish_compressed_nar`]).
    pub keep_upstream_compression: bool,
}

/// What a publish wrote (or, for a mirror-only layout, what the NAR would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// Size of the compressed NAR file.
    pub file_size: u64,
    pub file_hash: Hash,
}

/// What [`Cache::verify_narinfo`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub store_path: String,
    pub nar_size: u64,
    pub file_size: u64,
    /// Whether a hashed-mirror file was found and checked too.
    pub mirror_checked: bool,
}

pub struct Cache {
    disk: DiskLayout,
    options: CacheOptions,
    /// This process's temp files (none when opened read-only).
    scratch: Option<scratch::Scratch>,
}

fn is_flat(entry: &Entry) -> bool {
    entry.hash.mode == HashMode::Flat
}

impl Cache {
    /// A cache root as it is, for reading only (`srcgrab verify` of a read-only disk):
    /// creates nothing, so it cannot publish.
    pub fn open_read_only(root: &Path, options: CacheOptions) -> Cache {
        Cache {
            disk: DiskLayout::new(root),
            options,
            scratch: None,
        }
    }

    /// Opens (creating if needed) a cache root: its directories and `nix-cache-info`.
    pub fn open(root: &Path, options: CacheOptions) -> Result<Cache, Error> {
        let disk = DiskLayout::new(root);
        let create = |dir: &Path| {
            // Through a symlinked `nar/` or `sha256/` every item would land outside the root.
            if fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
                return Err(Error::RefusedFile {
                    path: dir.to_path_buf(),
                    reason: "not a directory (`srcgrab verify --repair` puts one back)".into(),
                });
            }
            fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))
        };
        create(disk.temp_dir())?;
        create(&disk.locks_dir())?;
        if options.layout.cache {
            create(&disk.nar_dir())?;
        }
        if options.layout.mirror {
            create(&disk.mirror_dir())?;
        }
        // A cache that cannot be written to (read-only disk or mount, another user's) is
        // refused here, before anything is downloaded for it.
        let scratch = scratch::Scratch::open(disk.temp_dir()).map_err(|e| match e {
            Error::Io(err) => {
                Error::io(format!("{} is not writable", disk.temp_dir().display()))(err.source)
            }
            other => other,
        })?;
        let cache = Cache {
            disk,
            options,
            scratch: Some(scratch),
        };
        if cache.options.layout.cache {
            cache.ensure_cache_info()?;
        }
        Ok(cache)
    }

    /// Writes `nix-cache-info` unless present; refuses a cache for another store directory.
    fn ensure_cache_info(&self) -> Result<(), Error> {
        let path = self.disk.cache_info();
        match regular_file::read_small(&path, MAX_CACHE_INFO)? {
            SmallFile::Text(text) => {
                let info = CacheInfo::parse(&text)?;
                if info.store_dir != STORE_DIR {
                    return Err(Error::OtherStoreDir {
                        path: path.to_path_buf(),
                        store_dir: info.store_dir,
                    });
                }
                Ok(())
            }
            SmallFile::Refused(why) => Err(Error::RefusedFile {
                path: path.to_path_buf(),
                reason: why,
            }),
            SmallFile::Absent => {
                let info = CacheInfo {
                    store_dir: STORE_DIR.to_string(),
                    want_mass_query: true,
                    priority: Some(PRIORITY),
                };
                self.write_atomically(&path, info.render().as_bytes())
            }
        }
    }

    pub fn root(&self) -> &Path {
        self.disk.root()
    }

    /// Where everything lives under the root.
    pub fn disk(&self) -> &DiskLayout {
        &self.disk
    }

    /// A directory on the cache's filesystem for temp files, so moving results in is a
    /// rename: this process's own scratch directory, which the next run removes should this
    /// one die without cleaning up ([`scratch`]).
    pub fn temp_dir(&self) -> &Path {
        self.scratch
            .as_ref()
            .map_or(self.disk.temp_dir(), |scratch| scratch.dir())
    }

    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// Waits for, then holds, the lock of `entry`'s items. Whoever checks and publishes an
    /// entry (fetch, import, ingest, repair) holds it from the presence check to the publish,
    /// so two processes never work on one item at once ([`lock`]). Publishing does not take
    /// it itself: the holder may publish several times under one lock.
    pub fn lock_item(&self, entry: &Entry) -> Result<FileLock, Error> {
        self.lock_store_path(&entry.store_path)
    }

    /// Whether this layout has anywhere to put `entry`: a mirror-only layout holds flat files
    /// only, so a recursive entry published there is verified but stored nowhere.
    pub fn wants(&self, entry: &Entry) -> bool {
        self.options.layout.cache || (self.options.layout.mirror && is_flat(entry))
    }
}
