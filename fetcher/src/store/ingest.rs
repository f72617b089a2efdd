//! Files someone brought on a disk → cache (`srcgrab ingest DIR`). Every file under DIR is
//! hashed once, in parallel, with every algorithm the manifest's flat entries use (and as
//! a single-file NAR when recursive file entries exist); a file whose hash is an entry's is
//! published through [`Cache::publish_file`], which checks it all again. Archives that no
//! flat hash explains, and whose extension is one a `url-unpack` entry uses, are unpacked
//! as fetchzip would and matched by the NAR hash of the tree. Files with the same content
//! (by blake3) are handled once; the others are reported as duplicates.
//!
//! A disk may also be a binary cache (`nix copy --to file://…`): a narinfo whose path is an
//! entry's is published from the NAR it names, checked like an import; any other narinfo is a
//! binary, imported when a trusted key signed it ([`Cache::import_binary_below`]). Neither the
//! narinfo nor its NAR file is then hashed as a loose file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use srcgrab_formats::hash::{Hash, HashAlgo, HashMode, Hasher};
use srcgrab_formats::name::strip_archive_extension;
use srcgrab_formats::signature::PublicKey;
use srcgrab_manifest::{Entry, Kind, Manifest, Unpack};

use crate::store::binary::{read_narinfo_in, NarInfoText};
use crate::store::hashing::HashingReader;
use crate::store::{bundle, regular_file, Cache, DiskLayout};
use crate::store::{tree, unpack, Error};
use srcgrab_reporter::Reporter;

/// What an ingest run reports as it goes, from many threads.
#[derive(Debug, Clone, Copy)]
pub enum IngestEvent {
    /// `files` files of `bytes` in all will be hashed.
    Start { files: u64, bytes: u64 },
    /// One file of `bytes` was hashed.
    FileHashed { bytes: u64 },
}

#[derive(Debug, Default)]
pub struct IngestReport {
    pub files: u64,
    pub bytes: u64,
    /// (file, store path) newly added to the cache.
    pub published: Vec<(PathBuf, String)>,
    /// (file, store path) the cache already had.
    pub already_present: Vec<(PathBuf, String)>,
    /// (file, the earlier file with the same content).
    pub duplicates: Vec<(PathBuf, PathBuf)>,
    pub unmatched: Vec<PathBuf>,
    /// (file, store path, why) that matched but could not be published.
    pub failed: Vec<(PathBuf, String, String)>,
}

/// The hashes the manifest needs of each file, decided once from its entries.
struct Wanted<'a> {
    flat_algos: BTreeSet<HashAlgo>,
    /// (executable, algo) of single-file NARs (recursive url/builtin entries).
    file_nar_algos: BTreeSet<(bool, HashAlgo)>,
    flat: HashMap<Hash, Vec<&'a Entry>>,
    file_nar: HashMap<(bool, Hash), Vec<&'a Entry>>,
    /// url-unpack entries by the archive extension their URL (or `extension`) names.
    unpack_by_extension: BTreeMap<String, Vec<&'a Entry>>,
}

/// The archive extension of a file or URL name (`.tar.gz` of `x-1.0.tar.gz`), if any.
fn archive_extension(name: &str) -> Option<&str> {
    let stem = strip_archive_extension(name);
    (stem.len() < name.len()).then(|| &name[stem.len()..])
}

impl<'a> Wanted<'a> {
    fn new(manifest: &'a Manifest) -> Wanted<'a> {
        let mut w = Wanted {
            flat_algos: BTreeSet::new(),
            file_nar_algos: BTreeSet::new(),
            flat: HashMap::new(),
            file_nar: HashMap::new(),
            unpack_by_extension: BTreeMap::new(),
        };
        for e in &manifest.entries {
            let hash = &e.hash.hash;
            match (e.hash.mode, &e.unpack) {
                (HashMode::Flat, _) => {
                    w.flat_algos.insert(hash.algo);
                    w.flat.entry(hash.clone()).or_default().push(e);
                }
                (HashMode::Recursive, Some(options)) if e.kind == Kind::UrlUnpack => {
                    let from_url = e.urls.iter().find_map(|u| archive_extension(u));
                    let ext = options
                        .extension
                        .as_deref()
                        .map(|x| format!(".{}", x.trim_start_matches('.')))
                        .or(from_url.map(str::to_string));
                    if let Some(ext) = ext {
                        w.unpack_by_extension.entry(ext).or_default().push(e);
                    }
                }
                (HashMode::Recursive, None) if matches!(e.kind, Kind::Url | Kind::Builtin) => {
                    w.file_nar_algos.insert((e.executable, hash.algo));
                    w.file_nar
                        .entry((e.executable, hash.clone()))
                        .or_default()
                        .push(e);
                }
                _ => {}
            }
        }
        w
    }
}

/// What one pass over a file found.
struct Hashed {
    blake3: [u8; 32],
    flat: Vec<Hash>,
    file_nar: Vec<(bool, Hash)>,
}

/// The hashers of one pass over a file's bytes: the flat ones and blake3.
struct FileHashers<'h> {
    flat: &'h mut [Hasher],
    blake3: &'h mut blake3::Hasher,
}

impl io::Write for FileHashers<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for h in self.flat.iter_mut() {
            h.update(buf);
        }
        self.blake3.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes into several hashers (the NAR hashes of one variant).
struct MultiHasher(Vec<Hasher>);

impl io::Write for MultiHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for h in &mut self.0 {
            h.update(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn hash_file(path: &Path, len: u64, wanted: &Wanted) -> Result<Hashed, Error> {
    let open = || fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())));
    let mut flat: Vec<Hasher> = wanted.flat_algos.iter().map(|a| a.hasher()).collect();
    let mut blake3 = blake3::Hasher::new();
    let mut file_nar = Vec::new();
    // The first pass hashes the bytes (flat) and, when wanted, the non-executable NAR;
    // a second pass is needed only for executable single-file NARs.
    for executable in [false, true] {
        let algos: Vec<HashAlgo> = wanted
            .file_nar_algos
            .iter()
            .filter(|(x, _)| *x == executable)
            .map(|(_, a)| *a)
            .collect();
        if executable && algos.is_empty() {
            break;
        }
        let mut no_flat: [Hasher; 0] = [];
        let mut scratch = blake3::Hasher::new();
        let mut hashers = FileHashers {
            flat: if executable { &mut no_flat } else { &mut flat },
            blake3: if executable {
                &mut scratch
            } else {
                &mut blake3
            },
        };
        let mut reader = HashingReader {
            inner: io::BufReader::with_capacity(1 << 20, open()?),
            hashes: &mut hashers,
        };
        let mut nar_hashers = MultiHasher(algos.iter().map(|a| a.hasher()).collect());
        if algos.is_empty() {
            io::copy(&mut reader, &mut io::sink())
                .map_err(Error::io(format!("reading {}", path.display())))?;
        } else {
            srcgrab_formats::nar::write_file_nar(&mut reader, len, executable, &mut nar_hashers)?;
        }
        file_nar.extend(
            nar_hashers
                .0
                .into_iter()
                .map(|h| (executable, h.finalize())),
        );
    }
    Ok(Hashed {
        blake3: *blake3.finalize().as_bytes(),
        flat: flat.into_iter().map(Hasher::finalize).collect(),
        file_nar,
    })
}

/// Regular files under `dir`, sorted, with their sizes; symlinks are not followed.
fn list_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, Error> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = fs::read_dir(&d).map_err(Error::io(format!("listing {}", d.display())))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("listing {}", d.display())))?;
            let meta = entry
                .metadata()
                .map_err(Error::io(format!("stat {}", entry.path().display())))?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                files.push((entry.path(), meta.len()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Publishes `entries` from `file` unless present, recording each outcome in `report`.
fn publish_matches(
    cache: &Cache,
    file: &Path,
    entries: &[&Entry],
    publish: &dyn Fn(&Entry) -> Result<(), Error>,
    report: &Mutex<IngestReport>,
) {
    for entry in entries {
        // Under the entry's lock, so a fetch or import into the same cache never works on
        // it at the same time.
        let outcome = cache
            .lock_item(entry)
            .and_then(|_lock| match cache.is_present(entry) {
                Ok(true) => Ok(false),
                Ok(false) => publish(entry).map(|()| true),
                Err(e) => Err(e),
            });
        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
        let item = (file.to_path_buf(), entry.store_path.to_path_string());
        match outcome {
            Ok(true) => r.published.push(item),
            Ok(false) => r.already_present.push(item),
            Err(e) => r.failed.push((item.0, item.1, e.to_string())),
        }
    }
}

/// Publishes a copy of `file`: the cache may hard-link what it publishes into the mirror,
/// and the files on the visitor's disk are not ours to share. A symlink there is not followed.
fn publish_copy(cache: &Cache, file: &Path, entry: &Entry) -> Result<(), Error> {
    let (mut opened, _) = regular_file::open_existing(file)?;
    let what = file.display().to_string();
    cache
        .publish_file_copied(entry, &mut opened, &what)
        .map(drop)
}

/// Unpacks `archive` with each option set its candidate entries use and publishes the
/// entries whose NAR hash the tree has. Returns whether any entry matched.
fn try_unpack(
    cache: &Cache,
    archive: &Path,
    candidates: &[&Entry],
    report: &Mutex<IngestReport>,
) -> bool {
    let mut by_options: Vec<(&Unpack, Vec<&Entry>)> = Vec::new();
    for e in candidates {
        let options = e
            .unpack
            .as_ref()
            .expect("url-unpack candidates have options");
        match by_options.iter_mut().find(|(o, _)| *o == options) {
            Some((_, list)) => list.push(e),
            None => by_options.push((options, vec![e])),
        }
    }
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut matched = false;
    for (options, entries) in by_options {
        let Ok(scratch) = tempfile::tempdir_in(cache.temp_dir()) else {
            continue;
        };
        let tree = scratch.path().join("tree");
        if unpack::unpack(archive, &name, options, &tree).is_err() {
            continue;
        }
        let algos: BTreeSet<HashAlgo> = entries.iter().map(|e| e.hash.hash.algo).collect();
        let mut hashers = MultiHasher(algos.iter().map(|a| a.hasher()).collect());
        if tree::dump_path(&tree, &mut hashers).is_err() {
            continue;
        }
        let digests: Vec<Hash> = hashers.0.into_iter().map(Hasher::finalize).collect();
        let hits: Vec<&Entry> = entries
            .into_iter()
            .filter(|e| digests.contains(&e.hash.hash))
            .collect();
        if !hits.is_empty() {
            matched = true;
            let publish = |e: &Entry| cache.publish_tree(e, &tree).map(drop);
            publish_matches(cache, archive, &hits, &publish, report);
        }
    }
    matched
}

/// The narinfos among `files` and the NAR files they name; each is published (an entry's) or
/// imported (a binary's), and both leave `files`.
fn ingest_narinfos(
    files: &mut Vec<(PathBuf, u64)>,
    manifest: &Manifest,
    cache: &Cache,
    keys: &[PublicKey],
    report: &mut IngestReport,
) {
    let entries: HashMap<String, &Entry> = manifest
        .entries
        .iter()
        .map(|e| (e.store_path.hash_part().to_string(), e))
        .collect();
    // Read once: a narinfo that does not parse is hashed as a loose file like any other.
    let narinfos: Vec<(PathBuf, PathBuf, NarInfoText)> = files
        .iter()
        .filter_map(|(path, _)| {
            let name = path.file_name()?.to_str()?;
            DiskLayout::narinfo_hash_part(name)?;
            let dir = path.parent()?.to_path_buf();
            let narinfo = read_narinfo_in(&dir, name).ok()?;
            Some((dir, path.clone(), narinfo))
        })
        .collect();
    let taken: BTreeSet<PathBuf> = narinfos
        .iter()
        .flat_map(|(dir, path, narinfo)| [path.clone(), dir.join(narinfo.info.url.as_path())])
        .collect();
    files.retain(|(path, _)| !taken.contains(path));
    let outcomes: Vec<(PathBuf, String, Result<bool, Error>)> = narinfos
        .par_iter()
        .map(|(dir, path, narinfo)| {
            let info = &narinfo.info;
            let Some(entry) = entries.get(info.store_path.hash_part()) else {
                let outcome = cache.import_binary_below(dir, narinfo, keys);
                return (path.clone(), info.store_path.to_path_string(), outcome);
            };
            let outcome = cache.lock_item(entry).and_then(|_lock| {
                if cache.is_present(entry)? {
                    return Ok(false);
                }
                bundle::import_narinfo_below(cache, entry, dir, info).map(|()| true)
            });
            (path.clone(), entry.store_path.to_path_string(), outcome)
        })
        .collect();
    for (path, what, outcome) in outcomes {
        match outcome {
            Ok(true) => report.published.push((path, what)),
            Ok(false) => report.already_present.push((path, what)),
            Err(e) => report.failed.push((path, what, e.to_string())),
        }
    }
}

/// Hashes every file under `dir` and adds what matches `manifest` to `cache`; binaries of a
/// binary cache on the disk are taken when one of `keys` signed them.
pub fn ingest(
    dir: &Path,
    manifest: &Manifest,
    cache: &Cache,
    keys: &[PublicKey],
    progress: &dyn Reporter<IngestEvent>,
) -> Result<IngestReport, Error> {
    let mut files = list_files(dir)?;
    let mut from_narinfos = IngestReport {
        files: files.len() as u64,
        bytes: files.iter().map(|(_, len)| len).sum(),
        ..IngestReport::default()
    };
    ingest_narinfos(&mut files, manifest, cache, keys, &mut from_narinfos);
    let wanted = Wanted::new(manifest);
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    progress.report(IngestEvent::Start {
        files: files.len() as u64,
        bytes: total,
    });
    let hashed: Vec<(PathBuf, Result<Hashed, Error>)> = files
        .par_iter()
        .map(|(path, len)| {
            let h = hash_file(path, *len, &wanted);
            progress.report(IngestEvent::FileHashed { bytes: *len });
            (path.clone(), h)
        })
        .collect();

    let report = Mutex::new(from_narinfos);
    // First file (in path order) of each content; later ones are duplicates.
    let mut first_by_content: HashMap<[u8; 32], PathBuf> = HashMap::new();
    let mut unique = Vec::new();
    for (path, result) in hashed {
        let h = match result {
            Ok(h) => h,
            Err(e) => {
                let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                r.failed.push((path, String::new(), e.to_string()));
                continue;
            }
        };
        match first_by_content.get(&h.blake3) {
            Some(first) => report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .duplicates
                .push((path, first.clone())),
            None => {
                first_by_content.insert(h.blake3, path.clone());
                unique.push((path, h));
            }
        }
    }

    unique.par_iter().for_each(|(path, h)| {
        let mut entries: Vec<&Entry> = h
            .flat
            .iter()
            .filter_map(|d| wanted.flat.get(d))
            .chain(
                h.file_nar
                    .iter()
                    .filter_map(|(x, d)| wanted.file_nar.get(&(*x, d.clone()))),
            )
            .flatten()
            .copied()
            .collect();
        entries.sort_by(|a, b| a.store_path.cmp(&b.store_path));
        entries.dedup_by(|a, b| a.store_path == b.store_path);
        if !entries.is_empty() {
            let publish = |e: &Entry| publish_copy(cache, path, e);
            publish_matches(cache, path, &entries, &publish, &report);
            return;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let candidates = archive_extension(&name)
            .and_then(|ext| wanted.unpack_by_extension.get(ext))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if candidates.is_empty() || !try_unpack(cache, path, candidates, &report) {
            report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unmatched
                .push(path.clone());
        }
    });

    let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
    r.published.sort();
    r.already_present.sort();
    r.unmatched.sort();
    r.failed.sort();
    Ok(r)
}
