//! Re-checks a whole cache root (`srcgrab verify`): every narinfo with its NAR
//! ([`Cache::verify_narinfo`]: FileHash, FileSize, NarHash, NarSize, CA against the store
//! path), every hashed-mirror file against its name, every mirror key symlink; and, given a
//! manifest, which entries are missing. Files nothing refers to are reported too.
//!
//! ## The blake3 index
//! A full verify is the authority (sha256, decompression, NAR parsing) but is slow on a large
//! disk. Each run records, for every file that passed, its size, mtime and blake3 in
//! `<root>/.srcgrab/blake3-index`. `quick` mode re-reads every file but only hashes it with
//! blake3 (no decompression, several times faster than the full check): a file whose bytes
//! still have the blake3 recorded when it passed a full check is the same file, so it passed
//! again. Anything else (not indexed, size or mtime changed, blake3 differs) falls back to
//! the full check, so `quick` never accepts a file the full check has not accepted once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use srcgrab_formats::hash::{HashAlgo, HashMode};
use srcgrab_formats::store_path::StorePath;
use srcgrab_manifest::{Entry, Manifest};

use crate::store::regular_file::{self, file_kind, SmallFile, MAX_CACHE_INFO, MAX_NARINFO};
use crate::store::Error;
use crate::store::{lock, Cache, CacheOptions, DiskLayout, Layout, CACHE_INFO};
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_reporter::Reporter;

mod index;
mod keys;

use index::{fingerprint, mtime_ns, Blake3Index, Fingerprint};

/// What a verify run reports as it goes, from many threads.
#[derive(Debug, Clone, Copy)]
pub enum VerifyEvent {
    /// The run will check `items` narinfos and mirror files, reading about `bytes`.
    Start { items: u64, bytes: u64 },
    /// One item was checked; `bytes` were read for it.
    ItemDone { bytes: u64 },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Accept files whose blake3 matches the index of an earlier full verify.
    pub quick: bool,
}

/// A file that failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// Relative to the cache root.
    pub path: PathBuf,
    /// The store path the file belongs to, when it can be told.
    pub store_path: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub narinfos: u64,
    pub mirror_files: u64,
    /// Bytes read to check them.
    pub bytes: u64,
    /// Items accepted by the blake3 index without a full check (`quick`).
    pub quick_accepted: u64,
    pub corrupt: Vec<Corrupt>,
    /// Store paths of manifest entries the cache lacks (narinfo or mirror file).
    pub missing: Vec<String>,
    /// Files (relative to the root) no narinfo points to and no entry explains.
    pub unreferenced: Vec<PathBuf>,
    /// Why the blake3 index could not be written (a read-only disk), if it could not.
    pub index_error: Option<String>,
    /// NAR files a narinfo that passed points to: kept by `--repair` even when a corrupt
    /// narinfo names them too (two paths with the same content share one NAR file).
    pub kept_nars: HashSet<PathBuf>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.unreferenced.is_empty()
    }

    /// The store paths to fetch again: corrupt ones that can be told, and missing ones.
    pub fn broken_store_paths(&self) -> BTreeSet<String> {
        self.corrupt
            .iter()
            .filter_map(|c| c.store_path.clone())
            .chain(self.missing.iter().cloned())
            .collect()
    }
}

/// What a cache root holds, as found on disk.
#[derive(Debug, Default)]
struct Contents {
    layout: Option<Layout>,
    /// Hash parts of `<hash>.narinfo` files.
    narinfos: Vec<String>,
    /// Files under `nar/`, relative to the root.
    nar_files: Vec<PathBuf>,
    /// Hex names of regular files under `sha256/`.
    mirror_files: Vec<String>,
    /// Symlinks anywhere outside `nar/` (mirror keys), relative to the root.
    mirror_keys: Vec<PathBuf>,
    /// Top-level paths that are not what belongs there (a symlink for `sha256/`, a FIFO
    /// for `nix-cache-info`), with why.
    misplaced: Vec<(PathBuf, String)>,
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, Error> {
    match fs::read_dir(dir) {
        Ok(iter) => iter
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::io(format!("listing {}", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("listing {}", dir.display()))(e)),
    }
}

fn scan(disk: &DiskLayout) -> Result<Contents, Error> {
    let root = disk.root();
    // As they are, not through a symlink: a symlinked `sha256/` is corrupt, not a mirror.
    let is = |path: PathBuf, kind: fn(&fs::FileType) -> bool| {
        fs::symlink_metadata(path).is_ok_and(|m| kind(&m.file_type()))
    };
    let cache = is(disk.cache_info(), fs::FileType::is_file);
    // A `sha256/` that is no directory still makes a mirror layout, with every file missing.
    let mirror = fs::symlink_metadata(disk.mirror_dir()).is_ok();
    let mut contents = Contents {
        layout: (cache || mirror).then_some(Layout { cache, mirror }),
        ..Contents::default()
    };
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in read_dir(&root.join(&rel))? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = rel.join(&*name);
            let file_type = entry
                .file_type()
                .map_err(Error::io(format!("stat {}", path.display())))?;
            let top = rel.as_os_str().is_empty();
            // Where a file belongs, whatever is there is checked as that file (and anything
            // but a regular file is corrupt); elsewhere a symlink is a mirror key.
            let narinfo = top.then(|| DiskLayout::narinfo_hash_part(&name)).flatten();
            if let Some(hash_part) = narinfo.filter(|_| !file_type.is_dir()) {
                contents.narinfos.push(hash_part.to_string());
            } else if top && DiskLayout::is_item_dir(&name) && !file_type.is_dir() {
                let why = format!("{}, not a directory", file_kind(&file_type));
                contents.misplaced.push((path, why));
            } else if top && name == CACHE_INFO {
                if let SmallFile::Refused(why) =
                    regular_file::read_small(&disk.cache_info(), MAX_CACHE_INFO)?
                {
                    contents.misplaced.push((path, why));
                }
            } else if file_type.is_dir() {
                if !(top && DiskLayout::is_private_dir(&name)) {
                    dirs.push(path);
                }
            } else if DiskLayout::is_in_nar_dir(&path) {
                contents.nar_files.push(path);
            } else if DiskLayout::is_in_mirror_dir(&path)
                && (!file_type.is_symlink() || DiskLayout::is_mirror_file_name(&name))
            {
                contents.mirror_files.push(name.into_owned());
            } else if file_type.is_symlink() {
                contents.mirror_keys.push(path);
            }
        }
    }
    contents.narinfos.sort();
    contents.nar_files.sort();
    contents.mirror_files.sort();
    contents.mirror_keys.sort();
    Ok(contents)
}

/// What the narinfos say, read before checking so references are known up front.
struct NarinfoFacts {
    /// hash part → parsed narinfo (absent when it does not parse).
    parsed: HashMap<String, NarInfo>,
    /// NAR files narinfos point to (parseable or not: a corrupt narinfo's NAR is not an orphan).
    referenced_nars: HashSet<PathBuf>,
}

fn read_narinfos(disk: &DiskLayout, hash_parts: &[String]) -> NarinfoFacts {
    let parsed: HashMap<String, NarInfo> = hash_parts
        .par_iter()
        .filter_map(|h| {
            let SmallFile::Text(text) =
                regular_file::read_small(&disk.narinfo(h), MAX_NARINFO).ok()?
            else {
                return None;
            };
            Some((h.clone(), NarInfo::parse(&text).ok()?))
        })
        .collect();
    let referenced_nars = parsed
        .values()
        .map(|i| i.url.as_path().to_path_buf())
        .collect();
    NarinfoFacts {
        parsed,
        referenced_nars,
    }
}

/// Checks every item under `root`. Fails only when the root is not a cache at all or cannot
/// be listed; every problem with an item is in the report.
pub fn verify_cache(
    root: &Path,
    manifest: Option<&Manifest>,
    options: VerifyOptions,
    progress: &dyn Reporter<VerifyEvent>,
) -> Result<VerifyReport, Error> {
    let disk = DiskLayout::new(root);
    let contents = scan(&disk)?;
    let Some(layout) = contents.layout else {
        return Err(Error::NotACache(root.to_path_buf()));
    };
    // Mirror files are checked here, each once, so the narinfo check skips them.
    let cache = Cache::open_read_only(
        root,
        CacheOptions {
            layout: Layout {
                cache: layout.cache,
                mirror: false,
            },
            ..CacheOptions::default()
        },
    );
    // Behind a misplaced `nar/` or `sha256/` nothing counts as there.
    let misplaced = |dir: &str| contents.misplaced.iter().any(|(p, _)| p == Path::new(dir));
    let (no_nars, no_mirror) = (misplaced("nar"), misplaced("sha256"));
    let facts = read_narinfos(&disk, &contents.narinfos);
    let old_index = if options.quick {
        Blake3Index::read(&disk)
    } else {
        Blake3Index::default()
    };
    let by_hash_part: HashMap<String, &Entry> = manifest
        .map(|m| {
            m.entries
                .iter()
                .map(|e| (e.store_path.hash_part().to_string(), e))
                .collect()
        })
        .unwrap_or_default();

    let size_of = |rel: &Path| fs::symlink_metadata(root.join(rel)).map_or(0, |m| m.len());
    // Each file is checked once: a narinfo item is the narinfo and its NAR (the cache is
    // opened without a mirror layout, so `verify_narinfo` leaves mirror files alone); each
    // mirror file is an item of its own.
    let narinfo_files = |h: &str| -> Vec<PathBuf> {
        let mut files = vec![PathBuf::from(DiskLayout::narinfo_name(h))];
        files.extend(
            facts
                .parsed
                .get(h)
                .map(|info| info.url.as_path().to_path_buf()),
        );
        files
    };

    let total_bytes: u64 = contents
        .narinfos
        .iter()
        .flat_map(|h| narinfo_files(h))
        .chain(
            contents
                .mirror_files
                .iter()
                .map(|h| DiskLayout::mirror_file_name(h)),
        )
        .map(|p| size_of(&p))
        .sum();
    progress.report(VerifyEvent::Start {
        items: (contents.narinfos.len() + contents.mirror_files.len()) as u64,
        bytes: total_bytes,
    });

    let new_index = Mutex::new(Blake3Index::default());
    let corrupt = Mutex::new(Vec::new());
    let bytes_read = AtomicU64::new(0);
    let quick_accepted = AtomicU64::new(0);
    // Checks one item made of `files`: by the index when quick and every file matches,
    // else by `full`; on success the files' fingerprints go into the new index.
    let check_item =
        |files: Vec<PathBuf>, store_path: Option<String>, full: &dyn Fn() -> Result<(), Error>| {
            let bytes: u64 = files.iter().map(|f| size_of(f)).sum();
            let indexed = |rel: &PathBuf| -> Option<Fingerprint> {
                let known = old_index.files.get(rel)?;
                let meta = fs::symlink_metadata(root.join(rel)).ok()?;
                if !meta.file_type().is_file()
                    || meta.len() != known.size
                    || mtime_ns(&meta) != known.mtime_ns
                {
                    return None;
                }
                let now = fingerprint(&root.join(rel)).ok()?;
                (now == *known).then_some(now)
            };
            let by_index: Option<Vec<Fingerprint>> = if options.quick {
                files.iter().map(indexed).collect()
            } else {
                None
            };
            let outcome = match by_index {
                Some(prints) => {
                    quick_accepted.fetch_add(1, Ordering::Relaxed);
                    Ok(prints)
                }
                None => {
                    full().and_then(|()| files.iter().map(|f| fingerprint(&root.join(f))).collect())
                }
            };
            match outcome {
                Ok(prints) => {
                    let mut index = new_index.lock().unwrap_or_else(|e| e.into_inner());
                    index.files.extend(files.iter().cloned().zip(prints));
                }
                Err(err) => corrupt
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Corrupt {
                        path: files[0].clone(),
                        store_path,
                        reason: err.to_string(),
                    }),
            }
            bytes_read.fetch_add(bytes, Ordering::Relaxed);
            progress.report(VerifyEvent::ItemDone { bytes });
        };

    contents.narinfos.par_iter().for_each(|h| {
        let store_path = facts
            .parsed
            .get(h)
            .map(|i| i.store_path.to_path_string())
            .or_else(|| by_hash_part.get(h).map(|e| e.store_path.to_path_string()));
        check_item(narinfo_files(h), store_path, &|| {
            cache.verify_narinfo(h).map(drop)
        });
    });

    // Which manifest entry (if any) each mirror file serves, through its keys.
    let flat_entries: Vec<&Entry> = manifest
        .map(|m| {
            m.entries
                .iter()
                .filter(|e| e.hash.mode == HashMode::Flat)
                .collect()
        })
        .unwrap_or_default();
    let mirror_owner = mirror_owners(root, &flat_entries, &facts);
    contents.mirror_files.par_iter().for_each(|hex| {
        let rel = DiskLayout::mirror_file_name(hex);
        let store_path = mirror_owner.get(hex.as_str()).cloned();
        check_item(vec![rel.clone()], store_path, &|| {
            cache.verify_mirror_file(hex)
        });
    });

    let mut corrupt = corrupt.into_inner().unwrap_or_else(|e| e.into_inner());
    let mirror_files: HashSet<&str> = contents.mirror_files.iter().map(String::as_str).collect();
    corrupt.extend(keys::check_keys(root, &contents.mirror_keys, &mirror_files));
    corrupt.extend(
        contents
            .misplaced
            .into_iter()
            .map(|(path, reason)| Corrupt {
                path,
                store_path: None,
                reason,
            }),
    );
    corrupt.sort_by(|a, b| a.path.cmp(&b.path));
    let corrupt_paths: HashSet<&Path> = corrupt.iter().map(|c| c.path.as_path()).collect();
    let kept_nars: HashSet<PathBuf> = facts
        .parsed
        .iter()
        .filter(|(h, _)| !corrupt_paths.contains(Path::new(&DiskLayout::narinfo_name(h))))
        .map(|(_, info)| info.url.as_path().to_path_buf())
        .filter(|nar| !corrupt_paths.contains(nar.as_path()))
        .collect();

    let mut unreferenced: Vec<PathBuf> = contents
        .nar_files
        .iter()
        .filter(|p| !facts.referenced_nars.contains(*p))
        .cloned()
        .collect();
    unreferenced.extend(
        contents
            .mirror_files
            .iter()
            .filter(|hex| !mirror_owner.contains_key(hex.as_str()))
            .map(|hex| DiskLayout::mirror_file_name(hex)),
    );
    unreferenced.sort();

    let missing = manifest
        .map(|m| missing_entries(&cache, layout, no_nars, no_mirror, &m.entries))
        .unwrap_or_default();

    // A read-only disk can be verified; it just keeps its old index.
    let index_error = new_index
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .write(&disk)
        .err()
        .map(|e| e.to_string());
    Ok(VerifyReport {
        index_error,
        narinfos: contents.narinfos.len() as u64,
        mirror_files: contents.mirror_files.len() as u64,
        bytes: bytes_read.into_inner(),
        quick_accepted: quick_accepted.into_inner(),
        corrupt,
        missing,
        unreferenced,
        kept_nars,
    })
}

/// Maps mirror file names (sha256 hex) to the store path they serve: a flat sha256 hash names
/// its file directly; another algorithm's key `<algo>/<hex>` is a symlink to it.
fn mirror_owners(
    root: &Path,
    flat_entries: &[&Entry],
    facts: &NarinfoFacts,
) -> HashMap<String, String> {
    let from_narinfos = facts.parsed.values().filter_map(|info| {
        let ca = info.ca.as_ref()?;
        (ca.mode == HashMode::Flat).then(|| (ca.hash.clone(), info.store_path.to_path_string()))
    });
    let from_manifest = flat_entries
        .iter()
        .map(|e| (e.hash.hash.clone(), e.store_path.to_path_string()));
    let mut owners = HashMap::new();
    for (hash, store_path) in from_narinfos.chain(from_manifest) {
        let file = if hash.algo == HashAlgo::Sha256 {
            Some(hash.to_hex())
        } else {
            fs::read_link(root.join(DiskLayout::mirror_key_name(&hash)))
                .ok()
                .and_then(|target| Some(target.file_name()?.to_string_lossy().into_owned()))
        };
        if let Some(file) = file {
            owners.entry(file).or_insert(store_path);
        }
    }
    owners
}

/// Entries whose narinfo (cache layout) or any mirror key (mirror layout, flat entries) is
/// absent: a fetch of them recreates what is missing.
fn missing_entries(
    cache: &Cache,
    layout: Layout,
    no_nars: bool,
    no_mirror: bool,
    entries: &[Entry],
) -> Vec<String> {
    let root = cache.root();
    entries
        .par_iter()
        .filter(|e| {
            let path = &e.store_path;
            let flat = e.hash.mode == HashMode::Flat;
            let narinfo_missing = layout.cache
                && (no_nars
                    || !root
                        .join(DiskLayout::narinfo_name(path.hash_part()))
                        .exists());
            let mirror_missing =
                layout.mirror && flat && (no_mirror || !cache.mirror_keys_complete(e));
            narinfo_missing || mirror_missing
        })
        .map(|e| e.store_path.to_path_string())
        .collect()
}

/// Deletes what `report` found corrupt, so a fetch puts it back: for a narinfo, the narinfo
/// first (a visible narinfo must never point at a missing NAR), then its NAR file unless a
/// narinfo that passed points to it too; for a mirror file, the file. Returns the store paths whose items were removed.
pub fn remove_corrupt(root: &Path, report: &VerifyReport) -> Result<BTreeSet<String>, Error> {
    let remove = |rel: &Path| match fs::remove_file(root.join(rel)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", rel.display()))(e))
        }
        _ => Ok(()),
    };
    let disk = DiskLayout::new(root);
    let locks = disk.locks_dir();
    fs::create_dir_all(&locks).map_err(Error::io(format!("creating {}", locks.display())))?;
    // Only NAR files are removed for a narinfo, and only through a real `nar/` directory:
    // whatever else a damaged narinfo's URL names (a mirror file, `nix-cache-info`) stays.
    let nar_dir_is_real = fs::symlink_metadata(disk.nar_dir()).is_ok_and(|m| m.is_dir());
    let mut removed = BTreeSet::new();
    for c in &report.corrupt {
        // A fetch working on the same item finishes first (see `Cache::lock_item`).
        let _lock = c
            .store_path
            .as_deref()
            .and_then(|p| StorePath::parse(p).ok())
            .map(|p| lock::lock_item(&disk, &p))
            .transpose()?;
        let is_narinfo = c.path.extension().is_some_and(|e| e == "narinfo");
        // Read as a small regular file only: a narinfo planted as a symlink names nothing.
        let nar = is_narinfo
            .then(|| regular_file::read_small(&root.join(&c.path), MAX_NARINFO).ok())
            .flatten()
            .and_then(|read| match read {
                SmallFile::Text(text) => NarInfo::parse(&text).ok(),
                _ => None,
            })
            .map(|info| info.url.as_path().to_path_buf())
            .filter(|nar| nar_dir_is_real && DiskLayout::is_in_nar_dir(nar));
        remove(&c.path)?;
        if let Some(nar) = nar.filter(|nar| !report.kept_nars.contains(nar)) {
            remove(&nar)?;
        }
        removed.extend(c.store_path.clone());
    }
    Ok(removed)
}
