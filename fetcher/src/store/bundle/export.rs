//! `srcgrab export`: the bundle of what a manifest adds, taken from the cache. Only what the
//! cache vouches for is read: narinfos as small regular files, NAR and mirror files as
//! regular files at their own path (a symlink planted in the cache is not followed).

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use srcgrab_formats::hash::HashMode;
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::store_path::StorePath;
use srcgrab_manifest::{Entry, Manifest};

use super::{CACHE_INFO_CONTENTS, MANIFEST, MARKER, MARKER_CONTENTS};
use crate::store::binary::NarInfoText;
use crate::store::regular_file::{self, SmallFile, MAX_NARINFO};
use crate::store::Error;
use crate::store::{Cache, DiskLayout, CACHE_INFO};

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
    /// Binaries put in the bundle: new outputs of the build graph and their closure.
    pub binaries: Vec<String>,
    /// New outputs the cache holds no binary of (built from sources on the other side).
    pub outputs_not_in_cache: u64,
}

/// One file of the bundle: its path in the bundle, where its bytes are.
struct Item {
    bundle_path: PathBuf,
    source: Source,
}

enum Source {
    Bytes(Vec<u8>),
    /// A regular file of the cache, relative to its root.
    File(PathBuf),
}

/// The narinfo of `hash_part` as the cache holds it, and the items that carry it.
fn narinfo_items(cache: &Cache, hash_part: &str) -> Result<Option<(NarInfo, Vec<Item>)>, Error> {
    let narinfo_name = DiskLayout::narinfo_name(hash_part);
    let text = match regular_file::read_small(&cache.disk().narinfo(hash_part), MAX_NARINFO)? {
        SmallFile::Text(text) => text,
        SmallFile::Absent => return Ok(None),
        SmallFile::Refused(why) => {
            return Err(Error::Damaged {
                what: narinfo_name,
                reason: format!("{why} (`srcgrab verify --repair` removes it)"),
            })
        }
    };
    let info = NarInfo::parse(&text).map_err(|e| Error::Damaged {
        what: narinfo_name,
        reason: e.to_string(),
    })?;
    Ok(Some(items_of(NarInfoText { info, text })))
}

/// A narinfo's items in a bundle: the narinfo, then the NAR file it names.
fn items_of(narinfo: NarInfoText) -> (NarInfo, Vec<Item>) {
    let nar = narinfo.info.url.as_path().to_path_buf();
    let items = vec![
        Item {
            bundle_path: PathBuf::from(DiskLayout::narinfo_name(
                narinfo.info.store_path.hash_part(),
            )),
            source: Source::Bytes(narinfo.text.into_bytes()),
        },
        Item {
            bundle_path: nar.clone(),
            source: Source::File(nar),
        },
    ];
    (narinfo.info, items)
}

/// The files that carry `entry` from the cache, or `None` when it holds none.
fn entry_items(cache: &Cache, entry: &Entry) -> Result<Option<Vec<Item>>, Error> {
    let store_path = &entry.store_path;
    if let Some((_, items)) = narinfo_items(cache, store_path.hash_part())? {
        return Ok(Some(items));
    }
    if entry.hash.mode == HashMode::Flat {
        if let Some(mirror_file) = cache.mirror_file_of(&entry.hash.hash) {
            if cache.root().join(&mirror_file).symlink_metadata().is_ok() {
                return Ok(Some(vec![Item {
                    bundle_path: Path::new("files").join(store_path.hash_part()),
                    source: Source::File(mirror_file),
                }]));
            }
        }
    }
    Ok(None)
}

/// The binaries to carry: the new outputs the cache holds, and the paths of their References
/// closure the cache holds, less what `known` (the store paths of `since`, its outputs and
/// entries) already carried and what is an entry of the manifest (exported as one).
fn binary_items(
    cache: &Cache,
    manifest: &Manifest,
    known: &BTreeSet<String>,
    report: &mut ExportReport,
) -> Result<Vec<Item>, Error> {
    let entries: BTreeSet<&StorePath> = manifest.entries.iter().map(|e| &e.store_path).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<(StorePath, bool)> = manifest
        .build
        .output_paths()
        .into_iter()
        .filter(|p| !known.contains(&p.to_path_string()))
        .map(|p| (p.clone(), true))
        .collect();
    let mut items = Vec::new();
    while let Some((path, is_output)) = queue.pop_front() {
        let absolute = path.to_path_string();
        if !seen.insert(absolute.clone()) || entries.contains(&path) {
            continue;
        }
        let Some((info, found)) = cache.published_binary(&path)?.map(items_of) else {
            if is_output {
                report.outputs_not_in_cache += 1;
            }
            continue;
        };
        report.binaries.push(absolute);
        items.extend(found);
        for reference in crate::store::binary::references(&info) {
            if !known.contains(&reference.to_path_string()) {
                queue.push_back((reference, false));
            }
        }
    }
    Ok(items)
}

/// Writes the bundle of `manifest`'s entries and binaries that `since` lacks (all of them
/// without `since`), taking their files from `cache`.
pub fn export(
    cache: &Cache,
    manifest: &Manifest,
    since: Option<&Manifest>,
    to: BundleTarget,
) -> Result<ExportReport, Error> {
    let known: BTreeSet<String> = since
        .map(|m| {
            let entries = m.entries.iter().map(|e| e.store_path.to_path_string());
            let outputs = m
                .build
                .output_paths()
                .into_iter()
                .map(StorePath::to_path_string);
            entries.chain(outputs).collect()
        })
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
    let header_items = items.len();
    for entry in manifest
        .entries
        .iter()
        .filter(|e| !known.contains(&e.store_path.to_path_string()))
    {
        report.new_entries += 1;
        match entry_items(cache, entry)? {
            Some(found) => {
                report.exported.push(entry.store_path.to_path_string());
                items.extend(found);
            }
            None => report.not_in_cache.push(entry.store_path.to_path_string()),
        }
    }
    items.extend(binary_items(cache, manifest, &known, &mut report)?);
    // Two narinfos may share one NAR file (same content, different names).
    let mut bundle_paths = BTreeSet::new();
    items.retain(|i| bundle_paths.insert(i.bundle_path.clone()));
    for item in &items[header_items..] {
        report.bytes += match &item.source {
            Source::Bytes(b) => b.len() as u64,
            Source::File(rel) => open_cache_file(cache, rel)?.1,
        };
    }
    match to {
        BundleTarget::Dir(dir) => write_dir(cache, &dir, &items)?,
        BundleTarget::Tar(out) => write_tar(cache, out, &items)?,
    }
    Ok(report)
}

/// A cache file to copy into a bundle: a regular file at that very path, and its length.
fn open_cache_file(cache: &Cache, rel: &Path) -> Result<(fs::File, u64), Error> {
    let (file, meta) = regular_file::open_existing(&cache.root().join(rel))?;
    Ok((file, meta.len()))
}

fn write_dir(cache: &Cache, dir: &Path, items: &[Item]) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let not_empty = fs::read_dir(dir)
        .map_err(Error::io(format!("listing {}", dir.display())))?
        .next()
        .is_some();
    if not_empty {
        // Never overwrite: an earlier import may have hard-linked these files into a cache.
        return Err(Error::BundleDirNotEmpty(dir.to_path_buf()));
    }
    for item in items {
        let target = dir.join(&item.bundle_path);
        let context = || format!("writing {}", target.display());
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::io(context()))?;
        }
        match &item.source {
            Source::Bytes(b) => fs::write(&target, b).map_err(Error::io(context()))?,
            Source::File(rel) => {
                let (mut file, _) = open_cache_file(cache, rel)?;
                let mut out = fs::File::create(&target).map_err(Error::io(context()))?;
                io::copy(&mut file, &mut out).map_err(Error::io(context()))?;
            }
        }
    }
    Ok(())
}

fn write_tar(cache: &Cache, out: Box<dyn Write>, items: &[Item]) -> Result<(), Error> {
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
            Source::File(rel) => {
                let (file, len) = open_cache_file(cache, rel)?;
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
