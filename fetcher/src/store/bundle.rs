//! Delta bundles (`srcgrab export` / `srcgrab import`): the cache items of a manifest that an
//! older manifest lacks, to carry over a thin link or on a disk.
//!
//! A bundle is laid out like a binary cache, so a bundle directory is itself a `file://`
//! substituter:
//! - `srcgrab-bundle` (first, `srcgrab-bundle 1`), `manifest.json` (the new manifest, whole),
//!   `nix-cache-info`;
//! - per entry, in store-path order: `<hash>.narinfo` then the NAR it names under `nar/`;
//!   or, for a flat entry the cache holds only as a hashed-mirror file, `files/<hash>`.
//!
//! The same paths in the same order make the tar form, so `import` can read it from a pipe.
//! Import trusts nothing in the bundle: every item goes through the cache's publish path,
//! which checks the content against the manifest entry's hash and store path (the narinfo
//! only says where the NAR is and how it is compressed; its NarHash/NarSize are checked on
//! the way too). Publishing is atomic per item and present items are skipped, so an
//! interrupted import can simply be run again.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use srcgrab_formats::hash::HashMode;
use srcgrab_manifest::{Entry, Manifest};

use crate::net::substituter::CheckedNar;
use crate::store::regular_file::{self, SmallFile, MAX_NARINFO};
use crate::store::{decompressor, Cache, DiskLayout, CACHE_INFO};
use crate::Error;
use srcgrab_formats::narinfo::NarInfo;

pub const MARKER: &str = "srcgrab-bundle";
const MARKER_CONTENTS: &str = "srcgrab-bundle 1\n";
pub const MANIFEST: &str = "manifest.json";
const CACHE_INFO_CONTENTS: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";

/// Where a bundle is written.
pub enum BundleTarget {
    /// A new (or empty) directory.
    Dir(PathBuf),
    /// A tar stream: a file or stdout.
    Tar(Box<dyn Write>),
}

#[derive(Debug, Default)]
pub struct ExportReport {
    /// Entries of the manifest that `since` lacks.
    pub new_entries: u64,
    /// Of those, the store paths put in the bundle.
    pub exported: Vec<String>,
    /// Bytes of cache files in the bundle.
    pub bytes: u64,
    /// New entries the cache does not hold (nothing to export for them).
    pub not_in_cache: Vec<String>,
}

/// One file of the bundle: its path in the bundle, where its bytes are.
struct Item {
    bundle_path: PathBuf,
    source: Source,
}

enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Item {
    fn len(&self) -> io::Result<u64> {
        match &self.source {
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::File(p) => fs::metadata(p).map(|m| m.len()),
        }
    }
}

/// The files that carry `entry` from the cache at `root`, or `None` when it holds none.
fn entry_items(root: &Path, entry: &Entry) -> Result<Option<Vec<Item>>, Error> {
    let store_path = entry.parsed_store_path().map_err(|e| Error::Corrupt {
        what: entry.store_path.clone(),
        reason: e.to_string(),
    })?;
    let narinfo_name = DiskLayout::narinfo_name(store_path.hash_part());
    match fs::read_to_string(root.join(&narinfo_name)) {
        Ok(text) => {
            let info = NarInfo::parse(&text).map_err(|e| Error::Corrupt {
                what: narinfo_name.clone(),
                reason: e.to_string(),
            })?;
            let nar = info.url.as_path().to_path_buf();
            return Ok(Some(vec![
                Item {
                    bundle_path: PathBuf::from(&narinfo_name),
                    source: Source::Bytes(text.into_bytes()),
                },
                Item {
                    bundle_path: nar.clone(),
                    source: Source::File(root.join(nar)),
                },
            ]));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {narinfo_name}"))(e)),
    }
    if entry.hash.mode == HashMode::Flat {
        let hash = entry.hash.hash().map_err(|e| Error::Corrupt {
            what: entry.store_path.clone(),
            reason: e.to_string(),
        })?;
        let mirror = root.join(DiskLayout::mirror_key_name(&hash));
        if mirror.is_file() {
            return Ok(Some(vec![Item {
                bundle_path: Path::new("files").join(store_path.hash_part()),
                source: Source::File(mirror),
            }]));
        }
    }
    Ok(None)
}

/// Writes the bundle of `manifest`'s entries that `since` lacks (all of them without
/// `since`), taking their files from the cache at `cache_root`.
pub fn export(
    cache_root: &Path,
    manifest: &Manifest,
    since: Option<&Manifest>,
    to: BundleTarget,
) -> Result<ExportReport, Error> {
    let known: BTreeSet<&str> = since
        .map(|m| m.entries.iter().map(|e| e.store_path.as_str()).collect())
        .unwrap_or_default();
    let mut report = ExportReport::default();
    let mut items = vec![
        Item {
            bundle_path: MARKER.into(),
            source: Source::Bytes(MARKER_CONTENTS.into()),
        },
        Item {
            bundle_path: MANIFEST.into(),
            source: Source::Bytes(manifest.to_json().into_bytes()),
        },
        Item {
            bundle_path: CACHE_INFO.into(),
            source: Source::Bytes(CACHE_INFO_CONTENTS.into()),
        },
    ];
    let mut nars_seen = BTreeSet::new();
    for entry in manifest
        .entries
        .iter()
        .filter(|e| !known.contains(e.store_path.as_str()))
    {
        report.new_entries += 1;
        match entry_items(cache_root, entry)? {
            Some(found) => {
                report.exported.push(entry.store_path.clone());
                // Two narinfos may share one NAR file (same content, different names).
                items.extend(
                    found
                        .into_iter()
                        .filter(|i| nars_seen.insert(i.bundle_path.clone())),
                );
            }
            None => report.not_in_cache.push(entry.store_path.clone()),
        }
    }
    for item in &items[3..] {
        report.bytes += item
            .len()
            .map_err(Error::io(format!("stat {}", item.bundle_path.display())))?;
    }
    match to {
        BundleTarget::Dir(dir) => write_dir(&dir, &items)?,
        BundleTarget::Tar(out) => write_tar(out, &items)?,
    }
    Ok(report)
}

fn write_dir(dir: &Path, items: &[Item]) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let not_empty = fs::read_dir(dir)
        .map_err(Error::io(format!("listing {}", dir.display())))?
        .next()
        .is_some();
    if not_empty {
        // Never overwrite: an earlier import may have hard-linked these files into a cache.
        return Err(Error::Corrupt {
            what: dir.display().to_string(),
            reason: "bundle directory is not empty".into(),
        });
    }
    for item in items {
        let target = dir.join(&item.bundle_path);
        let context = || format!("writing {}", target.display());
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::io(context()))?;
        }
        match &item.source {
            Source::Bytes(b) => fs::write(&target, b).map_err(Error::io(context()))?,
            Source::File(p) => {
                fs::copy(p, &target).map_err(Error::io(context()))?;
            }
        }
    }
    Ok(())
}

fn write_tar(out: Box<dyn Write>, items: &[Item]) -> Result<(), Error> {
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    for item in items {
        let context = || format!("writing {} to the bundle", item.bundle_path.display());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        match &item.source {
            Source::Bytes(b) => {
                header.set_size(b.len() as u64);
                tar.append_data(&mut header, &item.bundle_path, b.as_slice())
            }
            Source::File(p) => {
                let file =
                    fs::File::open(p).map_err(Error::io(format!("opening {}", p.display())))?;
                let len = file.metadata().map_err(Error::io(context()))?.len();
                header.set_size(len);
                tar.append_data(&mut header, &item.bundle_path, file)
            }
        }
        .map_err(Error::io(context()))?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(Error::io("finishing the bundle"))
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: Vec<String>,
    /// Entries the cache already held.
    pub present: Vec<String>,
    /// (store path, why) of items that failed verification or could not be written.
    pub failed: Vec<(String, String)>,
    /// Bundle files that belong to no entry of its manifest (ignored).
    pub ignored: Vec<PathBuf>,
    /// Manifest entries neither in the bundle nor in the cache.
    pub absent: Vec<String>,
}

impl ImportReport {
    fn sort(&mut self) {
        self.imported.sort();
        self.present.sort();
        self.failed.sort();
        self.ignored.sort();
        self.absent.sort();
    }
}

fn bad_bundle(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "bundle".into(),
        reason: reason.into(),
    }
}

fn parse_manifest(text: &str) -> Result<Manifest, Error> {
    Manifest::from_json(text).map_err(|e| bad_bundle(format!("{MANIFEST}: {e}")))
}

fn check_marker(text: &str) -> Result<(), Error> {
    if text != MARKER_CONTENTS {
        return Err(bad_bundle(format!(
            "unsupported bundle version '{}'",
            text.trim()
        )));
    }
    Ok(())
}

/// The manifest entries by the hash part of their store path.
fn by_hash_part(manifest: &Manifest) -> HashMap<String, &Entry> {
    manifest
        .entries
        .iter()
        .filter_map(|e| Some((e.parsed_store_path().ok()?.hash_part().to_string(), e)))
        .collect()
}

/// Publishes `entry` from a bundle NAR file, checking the narinfo's NarSize/NarHash on the
/// way and the entry's own hash and store path at the end.
fn publish_from_nar(cache: &Cache, entry: &Entry, info: &NarInfo, nar: &Path) -> Result<(), Error> {
    if info.store_path.to_path_string() != entry.store_path {
        return Err(bad_bundle(format!(
            "narinfo names {}, not {}",
            info.store_path.to_path_string(),
            entry.store_path
        )));
    }
    let file = fs::File::open(nar).map_err(Error::io(format!("opening {}", nar.display())))?;
    let buffered = io::BufReader::with_capacity(256 * 1024, file);
    let reader = decompressor(info.compression, buffered).map_err(|e| Error::Corrupt {
        what: nar.display().to_string(),
        reason: format!("{}: {e}", info.compression),
    })?;
    let mut checked = CheckedNar::new(reader, info.nar_size, info.nar_hash.clone());
    cache.publish_nar(entry, &mut checked).map(drop)
}

/// Publishes a flat entry from a bundle's raw file (copied first, since the cache may
/// hard-link what it publishes and the bundle is not ours to share).
fn publish_from_file(cache: &Cache, entry: &Entry, file: &Path) -> Result<(), Error> {
    let copy = tempfile::NamedTempFile::new_in(cache.temp_dir())
        .map_err(Error::io("creating a temp file in the cache"))?;
    fs::copy(file, copy.path()).map_err(Error::io(format!("copying {}", file.display())))?;
    cache.publish_file(entry, copy.path()).map(drop)
}

/// Records one entry's outcome.
fn record(report: &mut ImportReport, entry: &Entry, outcome: Result<(), Error>) {
    match outcome {
        Ok(()) => report.imported.push(entry.store_path.clone()),
        Err(e) => report
            .failed
            .push((entry.store_path.clone(), e.to_string())),
    }
}

/// What became of one entry of a bundle directory.
enum DirOutcome {
    Present,
    /// Neither in the bundle nor in the cache.
    Absent,
    Published(Result<(), Error>),
}

/// Imports a bundle directory, entries in parallel. Returns the report and the manifest.
pub fn import_dir(bundle: &Path, cache: &Cache) -> Result<(ImportReport, Manifest), Error> {
    let read = |name: &str| {
        fs::read_to_string(bundle.join(name)).map_err(Error::io(format!(
            "reading {}",
            bundle.join(name).display()
        )))
    };
    check_marker(&read(MARKER)?)?;
    let manifest = parse_manifest(&read(MANIFEST)?)?;
    let outcomes: Vec<DirOutcome> = manifest
        .entries
        .par_iter()
        .map(|entry| {
            // Held from the presence check to the publish (see `Cache::lock_item`).
            let _lock = match cache.lock_item(entry) {
                Ok(lock) => lock,
                Err(e) => return DirOutcome::Published(Err(e)),
            };
            if cache.is_present(entry).unwrap_or(false) {
                return DirOutcome::Present;
            }
            let Ok(store_path) = entry.parsed_store_path() else {
                return DirOutcome::Absent;
            };
            let narinfo = bundle.join(DiskLayout::narinfo_name(store_path.hash_part()));
            let file = bundle.join("files").join(store_path.hash_part());
            // What is there, links not followed: a bundle's symlink is refused, never read.
            let there = |path: &Path| path.symlink_metadata().ok().map(|m| m.file_type());
            if there(&narinfo).is_some() {
                DirOutcome::Published(import_narinfo_file(cache, entry, bundle, &narinfo))
            } else if let Some(kind) = there(&file) {
                DirOutcome::Published(if kind.is_file() {
                    publish_from_file(cache, entry, &file)
                } else {
                    Err(bad_bundle(format!(
                        "{} is a {}, not a regular file",
                        file.display(),
                        regular_file::file_kind(&kind)
                    )))
                })
            } else {
                DirOutcome::Absent
            }
        })
        .collect();
    let mut report = ImportReport::default();
    for (entry, outcome) in manifest.entries.iter().zip(outcomes) {
        match outcome {
            DirOutcome::Present => report.present.push(entry.store_path.clone()),
            DirOutcome::Published(outcome) => record(&mut report, entry, outcome),
            DirOutcome::Absent => report.absent.push(entry.store_path.clone()),
        }
    }
    report.sort();
    Ok((report, manifest))
}

fn import_narinfo_file(
    cache: &Cache,
    entry: &Entry,
    bundle: &Path,
    narinfo: &Path,
) -> Result<(), Error> {
    // Only a small regular file: a bundle's symlink, FIFO or huge file is refused.
    let text = match regular_file::read_small(narinfo, MAX_NARINFO)? {
        SmallFile::Text(text) => text,
        SmallFile::Absent => return Err(bad_bundle(format!("{} vanished", narinfo.display()))),
        SmallFile::Refused(why) => return Err(bad_bundle(format!("{}: {why}", narinfo.display()))),
    };
    let info = NarInfo::parse(&text)?;
    publish_from_nar(cache, entry, &info, &bundle.join(info.url.as_path()))
}

/// Imports a bundle tar stream (a file or a pipe), item by item as it arrives: each NAR or
/// file is spooled to the cache's temp directory, then published.
pub fn import_tar(input: impl Read, cache: &Cache) -> Result<(ImportReport, Manifest), Error> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(Error::io("reading the bundle"))?;
    let mut next_text = |expected: &str| -> Result<String, Error> {
        let mut item = entries
            .next()
            .ok_or_else(|| bad_bundle(format!("ends before {expected}")))?
            .map_err(Error::io("reading the bundle"))?;
        let path = item
            .path()
            .map_err(Error::io("reading the bundle"))?
            .into_owned();
        if path != Path::new(expected) {
            return Err(bad_bundle(format!(
                "expected {expected}, found {} (not a srcgrab bundle?)",
                path.display()
            )));
        }
        let mut text = String::new();
        item.read_to_string(&mut text)
            .map_err(Error::io(format!("reading {expected} from the bundle")))?;
        Ok(text)
    };
    check_marker(&next_text(MARKER)?)?;
    let manifest = parse_manifest(&next_text(MANIFEST)?)?;
    let entries_by_hash = by_hash_part(&manifest);
    let mut report = ImportReport::default();
    let mut handled = BTreeSet::new();
    // Narinfos read, by the NAR path they name, waiting for their NAR.
    let mut waiting: HashMap<PathBuf, Vec<(NarInfo, &Entry)>> = HashMap::new();
    for item in entries {
        let mut item = item.map_err(Error::io("reading the bundle"))?;
        let path = item
            .path()
            .map_err(Error::io("reading the bundle"))?
            .into_owned();
        let name = path.to_string_lossy().into_owned();
        if let Some(hash_part) = DiskLayout::narinfo_hash_part(&name) {
            let Some(entry) = entries_by_hash.get(hash_part).copied() else {
                report.ignored.push(path);
                continue;
            };
            // A narinfo is small: a bundle's huge one is refused, not held in memory.
            let mut text = String::new();
            (&mut item)
                .take(MAX_NARINFO + 1)
                .read_to_string(&mut text)
                .map_err(Error::io(format!("reading {name} from the bundle")))?;
            if text.len() as u64 > MAX_NARINFO {
                record(
                    &mut report,
                    entry,
                    Err(bad_bundle(format!(
                        "{name} is larger than a narinfo may be"
                    ))),
                );
                handled.insert(entry.store_path.clone());
                continue;
            }
            match NarInfo::parse(&text) {
                Ok(info) => waiting
                    .entry(info.url.as_path().to_path_buf())
                    .or_default()
                    .push((info, entry)),
                Err(e) => record(&mut report, entry, Err(e.into())),
            }
            handled.insert(entry.store_path.clone());
        } else if let Some(waiters) = waiting.remove(&path) {
            let mut spooled = None;
            for (info, entry) in waiters {
                import_locked(cache, &mut report, entry, || {
                    let nar = match &spooled {
                        Some(nar) => nar,
                        None => spooled.insert(spool(&mut item, cache)?),
                    };
                    Ok(publish_from_nar(cache, entry, &info, nar.path()))
                })?;
            }
        } else if let Some(entry) = name
            .strip_prefix("files/")
            .and_then(|h| entries_by_hash.get(h).copied())
        {
            handled.insert(entry.store_path.clone());
            import_locked(cache, &mut report, entry, || {
                let spooled = spool(&mut item, cache)?;
                Ok(publish_from_file(cache, entry, spooled.path()))
            })?;
        } else if name != CACHE_INFO {
            report.ignored.push(path);
        }
    }
    for (_, waiters) in waiting {
        for (_, entry) in waiters {
            report.failed.push((
                entry.store_path.clone(),
                "its NAR is not in the bundle".into(),
            ));
        }
    }
    for entry in &manifest.entries {
        if !handled.contains(&entry.store_path) {
            match cache.is_present(entry) {
                Ok(true) => report.present.push(entry.store_path.clone()),
                _ => report.absent.push(entry.store_path.clone()),
            }
        }
    }
    report.sort();
    Ok((report, manifest))
}

/// Imports one entry under its lock (see `Cache::lock_item`): nothing when it is already
/// present, else what `publish` makes of it. The outer `Err` of `publish` (a full disk, a
/// bundle stream that cannot be read) stops the whole import.
fn import_locked(
    cache: &Cache,
    report: &mut ImportReport,
    entry: &Entry,
    publish: impl FnOnce() -> Result<Result<(), Error>, Error>,
) -> Result<(), Error> {
    let _lock = match cache.lock_item(entry) {
        Ok(lock) => lock,
        Err(e) => {
            record(report, entry, Err(e));
            return Ok(());
        }
    };
    if cache.is_present(entry).unwrap_or(false) {
        report.present.push(entry.store_path.clone());
        return Ok(());
    }
    let outcome = publish()?;
    record(report, entry, outcome);
    Ok(())
}

/// Copies one tar item to a temp file on the cache's filesystem.
fn spool(item: &mut impl Read, cache: &Cache) -> Result<tempfile::NamedTempFile, Error> {
    let mut temp = tempfile::NamedTempFile::new_in(cache.temp_dir())
        .map_err(Error::io("creating a temp file in the cache"))?;
    io::copy(item, temp.as_file_mut()).map_err(Error::io("reading the bundle"))?;
    Ok(temp)
}
