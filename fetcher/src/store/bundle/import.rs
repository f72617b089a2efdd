//! `srcgrab import`: a bundle (directory or tar stream) into the cache, every item checked
//! as it is published (see [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::signature::PublicKey;
use srcgrab_manifest::{Entry, Manifest};

use super::{bad_bundle, check_marker, parse_manifest, MANIFEST, MARKER, MAX_MANIFEST, MAX_MARKER};
use crate::store::binary::{read_narinfo_in, NarInfoText};
use crate::store::regular_file::{self, MAX_NARINFO};
use crate::store::Error;
use crate::store::{decompressor, Cache, DiskLayout, CACHE_INFO};

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

/// The manifest entries by the hash part of their store path.
fn by_hash_part(manifest: &Manifest) -> HashMap<String, &Entry> {
    manifest
        .entries
        .iter()
        .map(|e| (e.store_path.hash_part().to_string(), e))
        .collect()
}

/// Publishes `entry` from a bundle NAR file, checking the narinfo's NarSize/NarHash on the
/// way and the entry's own hash and store path at the end.
fn publish_from_nar(
    cache: &Cache,
    entry: &Entry,
    info: &NarInfo,
    nar: fs::File,
) -> Result<(), Error> {
    if info.store_path != entry.store_path {
        return Err(bad_bundle(format!(
            "narinfo names {}, not {}",
            info.store_path.to_path_string(),
            entry.store_path
        )));
    }
    let buffered = io::BufReader::with_capacity(256 * 1024, nar);
    let reader = decompressor(info.compression, buffered).map_err(|e| Error::NarMismatch {
        what: info.url.to_string(),
        reason: format!("{}: {e}", info.compression),
    })?;
    cache
        .publish_nar_described(entry, &mut { reader }, info.nar_size, &info.nar_hash)
        .map(drop)
}

/// Publishes a flat entry from a bundle's raw file (copied, since the cache may hard-link
/// what it publishes and the bundle is not ours to share).
fn publish_from_file(cache: &Cache, entry: &Entry, file: &mut dyn Read) -> Result<(), Error> {
    cache
        .publish_file_copied(entry, file, "the bundle's file")
        .map(drop)
}

/// Records one entry's outcome.
fn record(report: &mut ImportReport, entry: &Entry, outcome: Result<(), Error>) {
    match outcome {
        Ok(()) => report.imported.push(entry.store_path.to_path_string()),
        Err(e) => report
            .failed
            .push((entry.store_path.to_path_string(), e.to_string())),
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
pub fn import_dir(
    bundle: &Path,
    cache: &Cache,
    keys: &[PublicKey],
) -> Result<(ImportReport, Manifest), Error> {
    // Small regular files only: a marker that is a symlink to /dev/zero names nothing.
    let read = |name: &str, max: u64| regular_file::read_small_or_refuse(&bundle.join(name), max);
    check_marker(&read(MARKER, MAX_MARKER)?)?;
    let manifest = parse_manifest(&read(MANIFEST, MAX_MANIFEST)?)?;
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
            let store_path = &entry.store_path;
            let narinfo = bundle.join(DiskLayout::narinfo_name(store_path.hash_part()));
            let file = Path::new("files").join(store_path.hash_part());
            // What is there, links not followed: a bundle's symlink is refused, never read.
            let there = |rel: &Path| {
                bundle
                    .join(rel)
                    .symlink_metadata()
                    .ok()
                    .map(|m| m.file_type())
            };
            if there(&narinfo).is_some() {
                let info = regular_file::read_small_or_refuse(&narinfo, MAX_NARINFO)
                    .and_then(|text| Ok(NarInfo::parse(&text)?));
                DirOutcome::Published(
                    info.and_then(|info| import_narinfo_below(cache, entry, bundle, &info)),
                )
            } else if there(&file).is_some() {
                DirOutcome::Published(
                    regular_file::open_below(bundle, &file)
                        .and_then(|mut f| publish_from_file(cache, entry, &mut f)),
                )
            } else {
                DirOutcome::Absent
            }
        })
        .collect();
    let mut report = ImportReport::default();
    import_dir_binaries(bundle, cache, keys, &by_hash_part(&manifest), &mut report)?;
    for (entry, outcome) in manifest.entries.iter().zip(outcomes) {
        match outcome {
            DirOutcome::Present => report.present.push(entry.store_path.to_path_string()),
            DirOutcome::Published(outcome) => record(&mut report, entry, outcome),
            DirOutcome::Absent => report.absent.push(entry.store_path.to_path_string()),
        }
    }
    report.sort();
    Ok((report, manifest))
}

/// Publishes `entry` from its narinfo `info`, read from a directory laid out as a binary
/// cache (a bundle directory, a disk), with the NAR it names below that directory.
pub(in crate::store) fn import_narinfo_below(
    cache: &Cache,
    entry: &Entry,
    dir: &Path,
    info: &NarInfo,
) -> Result<(), Error> {
    let nar = regular_file::open_below(dir, info.url.as_path())?;
    publish_from_nar(cache, entry, info, nar)
}

/// Records one binary's outcome.
fn record_binary(report: &mut ImportReport, what: String, outcome: Result<bool, Error>) {
    match outcome {
        Ok(true) => report.imported.push(what),
        Ok(false) => report.present.push(what),
        Err(e) => report.failed.push((what, e.to_string())),
    }
}

/// The binaries of a bundle directory: its narinfos that are no entry's, in parallel.
fn import_dir_binaries(
    bundle: &Path,
    cache: &Cache,
    keys: &[PublicKey],
    entries: &HashMap<String, &Entry>,
    report: &mut ImportReport,
) -> Result<(), Error> {
    let mut names: Vec<String> = fs::read_dir(bundle)
        .map_err(Error::io(format!("listing {}", bundle.display())))?
        .filter_map(|item| item.ok()?.file_name().into_string().ok())
        .filter(|name| {
            DiskLayout::narinfo_hash_part(name).is_some_and(|h| !entries.contains_key(h))
        })
        .collect();
    names.sort();
    let outcomes: Vec<(String, Result<bool, Error>)> = names
        .par_iter()
        .map(|name| match read_narinfo_in(bundle, name) {
            Ok(narinfo) => (
                narinfo.info.store_path.to_path_string(),
                cache.import_binary_below(bundle, &narinfo, keys),
            ),
            Err(e) => (name.clone(), Err(e)),
        })
        .collect();
    for (what, outcome) in outcomes {
        match outcome {
            Err(e) if e.is_disk_full() => return Err(e),
            outcome => record_binary(report, what, outcome),
        }
    }
    Ok(())
}

/// Imports a bundle tar stream (a file or a pipe), item by item as it arrives: each NAR or
/// file is spooled to the cache's temp directory, then published.
pub fn import_tar(
    input: impl Read,
    cache: &Cache,
    keys: &[PublicKey],
) -> Result<(ImportReport, Manifest), Error> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(Error::io("reading the bundle"))?;
    let mut next_text = |expected: &str, max: u64| -> Result<String, Error> {
        let item = entries
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
        item.take(max + 1)
            .read_to_string(&mut text)
            .map_err(Error::io(format!("reading {expected} from the bundle")))?;
        if text.len() as u64 > max {
            return Err(bad_bundle(format!("{expected} has more than {max} bytes")));
        }
        Ok(text)
    };
    check_marker(&next_text(MARKER, MAX_MARKER)?)?;
    let manifest = parse_manifest(&next_text(MANIFEST, MAX_MANIFEST)?)?;
    let entries_by_hash = by_hash_part(&manifest);
    let mut report = ImportReport::default();
    let mut handled = BTreeSet::new();
    // Narinfos read, by the NAR path they name, waiting for their NAR.
    let mut waiting: HashMap<PathBuf, Vec<Waiter>> = HashMap::new();
    for item in entries {
        let mut item = item.map_err(Error::io("reading the bundle"))?;
        let path = item
            .path()
            .map_err(Error::io("reading the bundle"))?
            .into_owned();
        let name = path.to_string_lossy().into_owned();
        if let Some(hash_part) = DiskLayout::narinfo_hash_part(&name) {
            let entry = entries_by_hash.get(hash_part).copied();
            if let Some(entry) = entry {
                handled.insert(entry.store_path.to_path_string());
            }
            let read = read_tar_narinfo(&mut item, &name).and_then(|text| {
                let info = NarInfo::parse(&text)?;
                if info.store_path.hash_part() != hash_part {
                    return Err(bad_bundle(format!("{name} names {}", info.store_path)));
                }
                Ok(NarInfoText { info, text })
            });
            match (read, entry) {
                (Ok(upstream), Some(entry)) => waiting
                    .entry(upstream.info.url.as_path().to_path_buf())
                    .or_default()
                    .push(Waiter::Entry(upstream.info, entry)),
                (Ok(upstream), None) => waiting
                    .entry(upstream.info.url.as_path().to_path_buf())
                    .or_default()
                    .push(Waiter::Binary(upstream)),
                (Err(e), Some(entry)) => record(&mut report, entry, Err(e)),
                (Err(e), None) => record_binary(&mut report, name, Err(e)),
            }
        } else if let Some(waiters) = waiting.remove(&path) {
            import_tar_nar(cache, keys, &mut report, &mut item, waiters)?;
        } else if let Some(entry) = name
            .strip_prefix("files/")
            .and_then(|h| entries_by_hash.get(h).copied())
        {
            handled.insert(entry.store_path.to_path_string());
            import_locked(cache, &mut report, entry, || {
                Ok(publish_from_file(cache, entry, &mut item))
            })?;
        } else if name != CACHE_INFO {
            report.ignored.push(path);
        }
    }
    for (_, waiters) in waiting {
        for waiter in waiters {
            let what = match waiter {
                Waiter::Entry(_, entry) => entry.store_path.to_path_string(),
                Waiter::Binary(upstream) => upstream.info.store_path.to_path_string(),
            };
            report
                .failed
                .push((what, "its NAR is not in the bundle".into()));
        }
    }
    for entry in &manifest.entries {
        if !handled.contains(&entry.store_path.to_path_string()) {
            match cache.is_present(entry) {
                Ok(true) => report.present.push(entry.store_path.to_path_string()),
                _ => report.absent.push(entry.store_path.to_path_string()),
            }
        }
    }
    report.sort();
    Ok((report, manifest))
}

/// A narinfo of the tar stream waiting for the NAR it names.
enum Waiter<'m> {
    Entry(NarInfo, &'m Entry),
    Binary(NarInfoText),
}

/// A narinfo is small: a bundle's huge one is refused, not held in memory.
fn read_tar_narinfo(item: &mut impl Read, name: &str) -> Result<String, Error> {
    let mut text = String::new();
    item.take(MAX_NARINFO + 1)
        .read_to_string(&mut text)
        .map_err(Error::io(format!("reading {name} from the bundle")))?;
    if text.len() as u64 > MAX_NARINFO {
        return Err(bad_bundle(format!(
            "{name} is larger than a narinfo may be"
        )));
    }
    Ok(text)
}

/// One NAR of the tar stream, for the narinfos waiting for it: a lone binary reads it as
/// it streams; otherwise it is spooled once and each publish reads the spool.
fn import_tar_nar(
    cache: &Cache,
    keys: &[PublicKey],
    report: &mut ImportReport,
    item: &mut impl Read,
    waiters: Vec<Waiter>,
) -> Result<(), Error> {
    if let [Waiter::Binary(upstream)] = waiters.as_slice() {
        let what = upstream.info.store_path.to_path_string();
        let outcome =
            cache.import_binary_unless_present(upstream, keys, || Ok(Box::new(&mut *item)));
        return match outcome {
            Err(e) if e.is_disk_full() => Err(e),
            outcome => {
                record_binary(report, what, outcome);
                Ok(())
            }
        };
    }
    let mut spooled = None;
    for waiter in waiters {
        let mut spool_once = || -> Result<fs::File, Error> {
            let nar = match &spooled {
                Some(nar) => nar,
                None => spooled.insert(spool(&mut *item, cache)?),
            };
            reopen(nar)
        };
        match waiter {
            Waiter::Entry(info, entry) => import_locked(cache, report, entry, || {
                Ok(spool_once().and_then(|nar| publish_from_nar(cache, entry, &info, nar)))
            })?,
            Waiter::Binary(upstream) => {
                let what = upstream.info.store_path.to_path_string();
                let outcome = cache
                    .import_binary_unless_present(&upstream, keys, || Ok(Box::new(spool_once()?)));
                match outcome {
                    Err(e) if e.is_disk_full() => return Err(e),
                    outcome => record_binary(report, what, outcome),
                }
            }
        }
    }
    Ok(())
}

fn reopen(spooled: &tempfile::NamedTempFile) -> Result<fs::File, Error> {
    spooled
        .reopen()
        .map_err(Error::io(format!("opening {}", spooled.path().display())))
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
        report.present.push(entry.store_path.to_path_string());
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
