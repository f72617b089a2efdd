//! The binary cache and hashed mirror: the only way anything is published.
//!
//! One root holds both layouts:
//! - binary cache: `nix-cache-info`, `<hashpart>.narinfo`, `nar/<filehash>.nar[.zst|.xz|.bz2]`;
//! - hashed mirror (flat entries only, as hashed mirrors are only asked for flat hashes):
//!   the raw file at `sha256/<hex>`, and relative symlinks to it for every key a fetcher
//!   may ask for: `<algo>/<hex>` and `<algo>/<nix32>` for sha256 and the declared
//!   algorithm, `<algo>-<base64>` at the root (nixpkgs' fetchurl with an SRI hash asks for
//!   `<mirror>//<sri>`) and `<algo>/<algo>-<base64>` (older fetchurl given an SRI `sha256`).
//!   A '/' inside base64 makes a subdirectory, as a URL path would. Fetchers only ever ask
//!   by the declared algorithm, so sha512 keys exist only for entries declared sha512:
//!   hashing every file with sha512 as well (as tarballs.nixos.org does) would cost as much
//!   CPU as the three sha256 passes a publish needs together.
//!
//! Everything is written to a temp file in `<root>/.tmp` (same filesystem), fsynced and
//! renamed into place, with the narinfo last, so a visible narinfo always points at a
//! complete NAR and nothing is visible before the declared hash and store path check out.
//! Directories are not fsynced after a rename (a file system that journals in order, as
//! ext4, XFS and btrfs do, cannot keep the later narinfo rename and lose the earlier NAR
//! one; and should one, [`Cache::is_present`] sees the missing NAR and the entry is
//! published again): an fsync costs milliseconds, and a publish is three already.
//! Temp names are unique and renames atomic, so concurrent publishes cannot corrupt anything.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use srcgrab_formats::hash::{Hash, HashAlgo, HashMode, Hasher};
use srcgrab_formats::nar::{self, SingleFile};
use srcgrab_formats::narinfo::{CacheInfo, NarInfo, NarUrl};
use srcgrab_formats::signature::SecretKey;
use srcgrab_formats::store_path::{StorePath, StorePathName, STORE_DIR};
use srcgrab_formats::ContentAddress;
use srcgrab_manifest::Entry;
use tempfile::{NamedTempFile, TempPath};

pub use srcgrab_formats::narinfo::Compression;

use crate::compression::{decompressor, Compressor};
use crate::Error;

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
    root: PathBuf,
    temp: PathBuf,
    options: CacheOptions,
}

/// Passes bytes through to `inner`, hashing (sha256) and counting them on the way.
/// Without a hasher it only counts: an uncompressed NAR file's hash is the NarHash.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Option<Hasher>,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W, hash: bool) -> Self {
        HashingWriter {
            inner,
            hasher: hash.then(|| Hasher::new(HashAlgo::Sha256)),
            size: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file being written in `.tmp`, removed when dropped unless persisted. Written through
/// the plain `File`, so I/O errors keep their OS code (ENOSPC becomes `Error::DiskFull`;
/// `NamedTempFile`'s own writes would hide it behind the path).
struct TempFile {
    file: File,
    path: TempPath,
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

type NarFileWriter = Compressor<HashingWriter<BufWriter<TempFile>>>;

/// Where the NAR goes in one pass: its sha256 (NarHash) and size, the declared hash when it
/// is a recursive hash with another algorithm, and the compressed file (with FileHash).
struct NarSink {
    nar_hasher: Hasher,
    nar_size: u64,
    declared_recursive: Option<Hasher>,
    file: Option<NarFileWriter>,
}

/// The NAR of a publish, before anything is visible.
struct NarOutcome {
    nar_hash: Hash,
    nar_size: u64,
    declared_recursive: Option<Hash>,
    /// The compressed NAR file; absent for a mirror-only layout.
    file: Option<NarFile>,
}

/// A compressed NAR file ready to be placed, with its FileHash and FileSize.
struct NarFile {
    source: FileSource,
    hash: Hash,
    size: u64,
    compression: Compression,
}

impl Write for NarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.file {
            Some(file) => file.write(buf)?,
            None => buf.len(),
        };
        self.nar_hasher.update(&buf[..n]);
        if let Some(h) = &mut self.declared_recursive {
            h.update(&buf[..n]);
        }
        self.nar_size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl NarSink {
    fn finish(self, compression: Compression) -> Result<NarOutcome, Error> {
        let nar_hash = self.nar_hasher.finalize();
        let file = match self.file {
            Some(compressor) => {
                let hashing = compressor.finish().map_err(Error::io("compressing NAR"))?;
                let file_hash = hashing
                    .hasher
                    .map_or_else(|| nar_hash.clone(), Hasher::finalize);
                let file_size = hashing.size;
                let temp = hashing
                    .inner
                    .into_inner()
                    .map_err(|e| Error::io("writing NAR")(e.into_error()))?;
                Some(NarFile {
                    source: FileSource::Temp(temp),
                    hash: file_hash,
                    size: file_size,
                    compression,
                })
            }
            None => None,
        };
        Ok(NarOutcome {
            nar_hash,
            nar_size: self.nar_size,
            declared_recursive: self.declared_recursive.map(Hasher::finalize),
            file,
        })
    }
}

/// The hashes of a flat file's bytes the mirror and the entry's check need.
#[derive(Clone)]
struct ContentHashes {
    /// Absent when `known` is the sha256.
    sha256: Option<Hasher>,
    sha512: Option<Hasher>,
    /// The declared algorithm when it is neither of the above.
    other: Option<Hasher>,
    /// A hash taken of these bytes already ([`VerifiedHash`]), not computed again.
    known: Option<Hash>,
}

struct ContentDigests {
    sha256: Hash,
    sha512: Option<Hash>,
    other: Option<Hash>,
}

impl ContentHashes {
    /// sha256 (the mirror's file name) and the declared algorithm.
    fn new(declared: HashAlgo) -> Self {
        Self::knowing(declared, None)
    }

    /// As [`ContentHashes::new`], less the algorithm of `known`, whose digest is taken as is.
    fn knowing(declared: HashAlgo, known: Option<Hash>) -> Self {
        let wanted = |algo: HashAlgo| known.as_ref().is_none_or(|k| k.algo != algo);
        ContentHashes {
            sha256: wanted(HashAlgo::Sha256).then(|| Hasher::new(HashAlgo::Sha256)),
            sha512: (declared == HashAlgo::Sha512 && wanted(declared))
                .then(|| Hasher::new(HashAlgo::Sha512)),
            other: (matches!(declared, HashAlgo::Md5 | HashAlgo::Sha1) && wanted(declared))
                .then(|| Hasher::new(declared)),
            known,
        }
    }

    /// Whether any hashing is left to do.
    fn hashes_anything(&self) -> bool {
        self.sha256.is_some() || self.sha512.is_some() || self.other.is_some()
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(h) = &mut self.other {
            h.update(data);
        }
    }

    fn finish(self) -> ContentDigests {
        let known = |algo: HashAlgo| self.known.clone().filter(|k| k.algo == algo);
        let sha256 = match self.sha256 {
            Some(h) => h.finalize(),
            None => known(HashAlgo::Sha256).expect("sha256 is hashed unless known"),
        };
        let sha512 = self
            .sha512
            .map(Hasher::finalize)
            .or(known(HashAlgo::Sha512));
        let other = self
            .other
            .map(Hasher::finalize)
            .or(known(HashAlgo::Md5))
            .or(known(HashAlgo::Sha1));
        ContentDigests {
            sha256,
            sha512,
            other,
        }
    }
}

impl ContentDigests {
    fn get(&self, algo: HashAlgo) -> Option<&Hash> {
        match algo {
            HashAlgo::Sha256 => Some(&self.sha256),
            HashAlgo::Sha512 => self.sha512.as_ref(),
            _ => self.other.as_ref().filter(|h| h.algo == algo),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Hash> {
        std::iter::once(&self.sha256)
            .chain(self.sha512.as_ref())
            .chain(self.other.as_ref())
    }
}

/// A hash of a file's bytes, taken as they were written to it ([`HashedWrites::seal`]) or
/// read from it ([`VerifiedHash::of_file`]), and tied to that file by its identity (device,
/// inode, length, modification time). [`Cache::publish_file_verified`] takes it instead of
/// hashing the bytes again; there is no other way to make one, so the cache still only ever
/// trusts hashes it computed over the bytes it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHash {
    hash: Hash,
    file: FileIdentity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

impl VerifiedHash {
    /// Hashes the whole file at `path` (for bytes not seen in order as they were written).
    pub fn of_file(path: &Path, algo: HashAlgo) -> io::Result<VerifiedHash> {
        let mut file = File::open(path)?;
        let before = FileIdentity::of(&file.metadata()?);
        let mut hasher = Hasher::new(algo);
        let mut buffer = vec![0; WRITE_BUFFER];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        let file = FileIdentity::of(&file.metadata()?);
        if file != before {
            return Err(changed_while_hashed(path));
        }
        Ok(VerifiedHash {
            hash: hasher.finalize(),
            file,
        })
    }

    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// Refuses a file other than the one the hash was sealed to, or one changed since.
    fn check_describes(&self, path: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        if self.file != FileIdentity::of(meta) {
            return Err(Error::Corrupt {
                what: path.display().to_string(),
                reason: "not the file its hash was taken of, or changed since".into(),
            });
        }
        Ok(())
    }
}

fn changed_while_hashed(path: &Path) -> io::Error {
    io::Error::other(format!("{} changed while it was hashed", path.display()))
}

/// Hashes bytes on their way into a file: what [`HashedWrites::seal`] vouches for is exactly
/// what went through [`HashedWrites::write`].
#[derive(Clone)]
pub struct HashedWrites {
    hasher: Hasher,
    len: u64,
}

impl HashedWrites {
    pub fn new(algo: HashAlgo) -> HashedWrites {
        HashedWrites {
            hasher: Hasher::new(algo),
            len: 0,
        }
    }

    /// Hashes the first `len` bytes already in `path` (a download resumed from an earlier
    /// run), to go on writing after them.
    pub fn resume(path: &Path, algo: HashAlgo, len: u64) -> io::Result<HashedWrites> {
        let mut hashed = HashedWrites::new(algo);
        let mut prefix = File::open(path)?.take(len);
        hashed.len = io::copy(&mut prefix, &mut hashed.hasher)?;
        if hashed.len != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than {len} bytes", path.display()),
            ));
        }
        Ok(hashed)
    }

    /// Writes all of `bytes` to `out`, then hashes them.
    pub fn write(&mut self, out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far (resumed ones included).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash of the bytes so far.
    pub fn hash(&self) -> Hash {
        self.hasher.clone().finalize()
    }

    /// Ties the hash to the file the bytes were written to, once they are all flushed: it
    /// must hold exactly as many bytes as were hashed.
    pub fn seal(self, path: &Path) -> io::Result<VerifiedHash> {
        let file = FileIdentity::of(&fs::metadata(path)?);
        if file.len != self.len {
            return Err(io::Error::other(format!(
                "{} holds {} bytes, {} were written",
                path.display(),
                file.len,
                self.len
            )));
        }
        Ok(VerifiedHash {
            hash: self.hasher.finalize(),
            file,
        })
    }
}

/// Files at least this big are hashed on a helper thread.
const BACKGROUND_HASHING_FROM: u64 = 4 << 20;

/// [`ContentHashes`] fed inline, or, for a big file, on a helper thread: then one publish
/// uses a second core for the bytes' sha256 (+ sha512) while this thread builds, hashes and
/// compresses the NAR. Chunks are copied into the channel; a copy is cheap next to a hash.
enum ContentHasher {
    Inline(Box<ContentHashes>),
    Background {
        chunks: mpsc::SyncSender<Vec<u8>>,
        worker: std::thread::JoinHandle<ContentHashes>,
    },
}

impl ContentHasher {
    fn new(hashes: ContentHashes, expected_len: u64) -> Self {
        if expected_len < BACKGROUND_HASHING_FROM {
            return ContentHasher::Inline(Box::new(hashes));
        }
        let (chunks, received) = mpsc::sync_channel::<Vec<u8>>(16);
        let mut background = hashes.clone();
        let spawned = std::thread::Builder::new()
            .name("srcgrab-hash".into())
            .spawn(move || {
                for chunk in received {
                    background.update(&chunk);
                }
                background
            });
        match spawned {
            Ok(worker) => ContentHasher::Background { chunks, worker },
            // No thread to be had (resource limits): hash inline, just slower.
            Err(_) => ContentHasher::Inline(Box::new(hashes)),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Inline(hashes) => hashes.update(data),
            ContentHasher::Background { chunks, .. } => {
                // The worker only stops when the channel closes, so sending cannot fail.
                let _ = chunks.send(data.to_vec());
            }
        }
    }

    fn finish(self) -> ContentDigests {
        match self {
            ContentHasher::Inline(hashes) => hashes.finish(),
            ContentHasher::Background { chunks, worker } => {
                drop(chunks);
                match worker.join() {
                    Ok(hashes) => hashes.finish(),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

/// A reader that feeds what it reads into a [`ContentHasher`].
struct HashingReader<'a, R: Read> {
    inner: R,
    hashes: &'a mut ContentHasher,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hashes.update(&buf[..n]);
        Ok(n)
    }
}

/// A reader that copies what it reads into a NAR sink; a sink error is kept aside so it is
/// reported as a write error, not as a malformed NAR.
struct TeeReader<'a, R: Read> {
    inner: R,
    sink: &'a mut NarSink,
    sink_error: Option<io::Error>,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.sink.write_all(&buf[..n]) {
            let message = e.to_string();
            self.sink_error = Some(e);
            return Err(io::Error::other(message));
        }
        Ok(n)
    }
}

/// The flat file of a publish, before anything is visible.
struct FlatOutcome {
    digests: ContentDigests,
    /// Where the mirror copy comes from, when the layout has a mirror.
    mirror_source: Option<FileSource>,
}

/// Where a file placed in the cache comes from.
enum FileSource {
    /// A file the caller handed in; hard-linked (or copied) into place.
    Existing(PathBuf),
    /// A temp file written while publishing.
    Temp(TempFile),
}

fn is_flat(entry: &Entry) -> bool {
    entry.hash.mode == HashMode::Flat
}

fn declared_hash(entry: &Entry) -> Result<Hash, Error> {
    entry.hash.hash().map_err(|e| Error::Corrupt {
        what: entry.store_path.clone(),
        reason: format!("declared hash: {e}"),
    })
}

/// The relative symlink target from `key` (a path under the root) to `sha256/<hex>`.
fn mirror_link_target(key: &str, sha256_hex: &str) -> PathBuf {
    // Components, not slashes: a base64 `//` makes one directory level, not two.
    let depth = Path::new(key).components().count().saturating_sub(1);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join("sha256").join(sha256_hex)
}

/// Every mirror key (relative path) a fetcher may ask for, besides `sha256/<hex>` itself.
fn mirror_keys(digests: &ContentDigests) -> Vec<String> {
    let mut keys = Vec::new();
    for hash in digests.all() {
        let algo = hash.algo.name();
        if hash.algo != HashAlgo::Sha256 {
            keys.push(format!("{algo}/{}", hash.to_hex()));
        }
        keys.push(format!("{algo}/{}", hash.to_nix32()));
        keys.push(hash.to_sri());
        keys.push(format!("{algo}/{}", hash.to_sri()));
    }
    keys
}

impl Cache {
    /// A cache root as it is, for reading only (`srcgrab verify` of a read-only disk):
    /// creates nothing, so it cannot publish.
    pub fn open_read_only(root: &Path, options: CacheOptions) -> Cache {
        Cache {
            root: root.to_path_buf(),
            temp: root.join(".tmp"),
            options,
        }
    }

    /// Opens (creating if needed) a cache root: its directories and `nix-cache-info`.
    pub fn open(root: &Path, options: CacheOptions) -> Result<Cache, Error> {
        let temp = root.join(".tmp");
        fs::create_dir_all(&temp).map_err(Error::io(format!("creating {}", temp.display())))?;
        let cache = Cache {
            root: root.to_path_buf(),
            temp,
            options,
        };
        if cache.options.layout.cache {
            let nar_dir = root.join("nar");
            fs::create_dir_all(&nar_dir)
                .map_err(Error::io(format!("creating {}", nar_dir.display())))?;
            cache.ensure_cache_info()?;
        }
        if cache.options.layout.mirror {
            let sha256_dir = root.join("sha256");
            fs::create_dir_all(&sha256_dir)
                .map_err(Error::io(format!("creating {}", sha256_dir.display())))?;
        }
        Ok(cache)
    }

    /// Writes `nix-cache-info` unless present; refuses a cache for another store directory.
    fn ensure_cache_info(&self) -> Result<(), Error> {
        let path = self.root.join("nix-cache-info");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let info = CacheInfo::parse(&text)?;
                if info.store_dir != STORE_DIR {
                    return Err(Error::Corrupt {
                        what: path.display().to_string(),
                        reason: format!("cache is for store {}, not {STORE_DIR}", info.store_dir),
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let info = CacheInfo {
                    store_dir: STORE_DIR.to_string(),
                    want_mass_query: true,
                    priority: Some(PRIORITY),
                };
                self.write_atomically(&path, info.render().as_bytes())
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory on the cache's filesystem for downloads, so moving results in is a rename.
    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// Whether this layout has anywhere to put `entry`: a mirror-only layout holds flat files
    /// only, so a recursive entry published there is verified but stored nowhere.
    pub fn wants(&self, entry: &Entry) -> bool {
        self.options.layout.cache || (self.options.layout.mirror && is_flat(entry))
    }

    fn narinfo_path(&self, hash_part: &str) -> PathBuf {
        self.root.join(format!("{hash_part}.narinfo"))
    }

    /// Cheap check that `entry` is already published (narinfo parses and matches, NAR file
    /// exists with its size, mirror file exists when the layout has one); no hashing.
    /// A damaged narinfo counts as absent, so publishing again repairs it.
    pub fn is_present(&self, entry: &Entry) -> Result<bool, Error> {
        if !self.wants(entry) {
            return Ok(false);
        }
        let declared = declared_hash(entry)?;
        let mut expected_nar_size = None;
        if self.options.layout.cache {
            let Some(info) = self.matching_narinfo(entry, &declared)? else {
                return Ok(false);
            };
            // The URL is a checked relative path, so this names a file inside the cache.
            let nar_file = self.root.join(info.url.as_path());
            match fs::metadata(&nar_file) {
                Ok(meta) if Some(meta.len()) == info.file_size || info.file_size.is_none() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io(format!("checking {}", nar_file.display()))(e)),
            }
            expected_nar_size = Some(info.nar_size);
        }
        if self.options.layout.mirror && is_flat(entry) {
            let key = self.root.join(declared.algo.name()).join(declared.to_hex());
            match fs::metadata(&key) {
                Ok(meta) => {
                    if expected_nar_size
                        .is_some_and(|size| nar::file_nar_size(meta.len(), false) != size)
                    {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io(format!("checking {}", key.display()))(e)),
            }
        }
        Ok(true)
    }

    /// The entry's narinfo when it exists, parses, and names the entry's path and hash.
    fn matching_narinfo(&self, entry: &Entry, declared: &Hash) -> Result<Option<NarInfo>, Error> {
        let Ok(store_path) = StorePath::parse(&entry.store_path) else {
            return Ok(None);
        };
        let path = self.narinfo_path(store_path.hash_part());
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        };
        let Ok(info) = NarInfo::parse(&text) else {
            return Ok(None);
        };
        let ca_matches = info
            .ca
            .as_ref()
            .is_some_and(|ca| ca.mode == entry.hash.mode && ca.hash == *declared);
        Ok((info.store_path == store_path && ca_matches).then_some(info))
    }

    /// The sink of a publish: the compressed NAR file when the layout has a cache.
    fn nar_sink(&self, entry: &Entry, declared: &Hash) -> Result<NarSink, Error> {
        let mut sink = self.nar_sink_without_file(entry, declared);
        if self.options.layout.cache {
            let temp = self.new_temp()?;
            let buffered = BufWriter::with_capacity(WRITE_BUFFER, temp);
            sink.file = Some(
                Compressor::new(
                    self.options.compression,
                    HashingWriter::new(buffered, self.options.compression != Compression::None),
                )
                .map_err(Error::io("starting compressor"))?,
            );
        }
        Ok(sink)
    }

    /// A sink that hashes and counts the NAR, and writes no file.
    fn nar_sink_without_file(&self, entry: &Entry, declared: &Hash) -> NarSink {
        let declared_recursive = (entry.hash.mode == HashMode::Recursive
            && declared.algo != HashAlgo::Sha256)
            .then(|| Hasher::new(declared.algo));
        NarSink {
            nar_hasher: Hasher::new(HashAlgo::Sha256),
            nar_size: 0,
            declared_recursive,
            file: None,
        }
    }

    fn new_temp(&self) -> Result<TempFile, Error> {
        let (file, path) = NamedTempFile::new_in(&self.temp)
            .map_err(Error::io(format!(
                "creating a temp file in {}",
                self.temp.display()
            )))?
            .into_parts();
        Ok(TempFile { file, path })
    }

    /// Publishes a downloaded file: flat entries are hashed over the bytes, executable or
    /// recursive ones over the NAR of the file. The file may be hard-linked into the mirror,
    /// so the caller must not modify it afterwards (removing it is fine).
    pub fn publish_file(&self, entry: &Entry, file: &Path) -> Result<Published, Error> {
        self.publish_file_knowing(entry, file, None)
    }

    /// [`Cache::publish_file`] of a file whose bytes were hashed as they were written (a
    /// download): that hash is not computed again. The file must be the one `verified` was
    /// sealed to, unchanged since.
    pub fn publish_file_verified(
        &self,
        entry: &Entry,
        file: &Path,
        verified: VerifiedHash,
    ) -> Result<Published, Error> {
        self.publish_file_knowing(entry, file, Some(verified))
    }

    fn publish_file_knowing(
        &self,
        entry: &Entry,
        file: &Path,
        verified: Option<VerifiedHash>,
    ) -> Result<Published, Error> {
        let declared = declared_hash(entry)?;
        let mut sink = self.nar_sink(entry, &declared)?;
        let mut input =
            File::open(file).map_err(Error::io(format!("opening {}", file.display())))?;
        let meta = input
            .metadata()
            .map_err(Error::io(format!("stat {}", file.display())))?;
        let len = meta.len();
        if let Some(verified) = &verified {
            verified.check_describes(file, &meta)?;
        }
        let flat = if is_flat(entry) {
            let known = verified.map(|v| v.hash);
            let hashes = ContentHashes::knowing(declared.algo, known);
            let digests = if hashes.hashes_anything() {
                let mut hashes = ContentHasher::new(hashes, len);
                let mut reader = HashingReader {
                    inner: &mut input,
                    hashes: &mut hashes,
                };
                nar::write_file_nar(&mut reader, len, false, &mut sink)?;
                hashes.finish()
            } else {
                nar::write_file_nar(&mut input, len, false, &mut sink)?;
                hashes.finish()
            };
            Some(FlatOutcome {
                digests,
                mirror_source: self
                    .options
                    .layout
                    .mirror
                    .then(|| FileSource::Existing(file.to_path_buf())),
            })
        } else {
            nar::write_file_nar(&mut input, len, entry.executable, &mut sink)?;
            None
        };
        self.commit(
            entry,
            &declared,
            sink.finish(self.options.compression)?,
            flat,
        )
    }

    /// Publishes a directory tree (recursive entries): the NAR of `dir`, which may also be a
    /// single file or symlink (e.g. a store path Nix built).
    pub fn publish_tree(&self, entry: &Entry, dir: &Path) -> Result<Published, Error> {
        let declared = declared_hash(entry)?;
        if is_flat(entry) {
            return Err(Error::Corrupt {
                what: entry.store_path.clone(),
                reason: "a flat entry cannot be published from a directory tree".into(),
            });
        }
        let mut sink = self.nar_sink(entry, &declared)?;
        crate::nar::dump_path(dir, &mut sink)?;
        self.commit(
            entry,
            &declared,
            sink.finish(self.options.compression)?,
            None,
        )
    }

    /// Publishes an uncompressed NAR stream (from a substituter or `nix-store --dump`); the
    /// stream must hold exactly one valid NAR, and for a flat entry a single non-executable
    /// regular file (what Nix requires of a flat output).
    pub fn publish_nar(&self, entry: &Entry, nar: &mut dyn Read) -> Result<Published, Error> {
        let declared = declared_hash(entry)?;
        let sink = self.nar_sink(entry, &declared)?;
        let (sink, flat) = self.decode_nar(entry, &declared, nar, sink)?;
        self.commit(
            entry,
            &declared,
            sink.finish(self.options.compression)?,
            flat,
        )
    }

    /// [`Cache::publish_nar`] of a NAR a narinfo describes by its NarSize and sha256 NarHash:
    /// both are checked against what publishing computes anyway, before anything is visible,
    /// which saves the second pass over the NAR that checking the stream on its way would be.
    pub fn publish_nar_described(
        &self,
        entry: &Entry,
        nar: &mut dyn Read,
        nar_size: u64,
        nar_hash: &Hash,
    ) -> Result<Published, Error> {
        let declared = declared_hash(entry)?;
        let sink = self.nar_sink(entry, &declared)?;
        let (sink, flat) = self.decode_nar(entry, &declared, nar, sink)?;
        let outcome = sink.finish(self.options.compression)?;
        let corrupt = |reason: String| Error::Corrupt {
            what: entry.store_path.clone(),
            reason,
        };
        if outcome.nar_size != nar_size {
            return Err(corrupt(format!(
                "NAR has {} bytes, narinfo says NarSize {nar_size}",
                outcome.nar_size
            )));
        }
        if outcome.nar_hash != *nar_hash {
            return Err(corrupt(format!(
                "NarHash mismatch: narinfo says {}, NAR has {}",
                nar_hash.to_nix32_prefixed(),
                outcome.nar_hash.to_nix32_prefixed()
            )));
        }
        self.commit(entry, &declared, outcome, flat)
    }

    /// Publishes a compressed NAR file (from an upstream binary cache) as the cache's own
    /// NAR file, without recompressing: the file is decompressed here and the NAR goes through
    /// every check of [`Cache::publish_nar`]; FileHash and FileSize are of the file's bytes.
    /// The file may be hard-linked into the cache, so the caller must not modify it
    /// afterwards (removing it is fine). A mirror-only layout just publishes the NAR.
    /// `verified` (the download's hash) is the FileHash when it is a sha256.
    pub fn publish_compressed_nar(
        &self,
        entry: &Entry,
        file: &Path,
        compression: Compression,
        verified: VerifiedHash,
    ) -> Result<Published, Error> {
        let declared = declared_hash(entry)?;
        let opened = File::open(file).map_err(Error::io(format!("opening {}", file.display())))?;
        let meta = opened
            .metadata()
            .map_err(Error::io(format!("stat {}", file.display())))?;
        verified.check_describes(file, &meta)?;
        let size = meta.len();
        let hashes = ContentHashes::knowing(HashAlgo::Sha256, Some(verified.hash));
        let mut file_hashes = if hashes.hashes_anything() {
            ContentHasher::new(hashes, size)
        } else {
            ContentHasher::Inline(Box::new(hashes))
        };
        let mut compressed = HashingReader {
            inner: io::BufReader::with_capacity(WRITE_BUFFER, opened),
            hashes: &mut file_hashes,
        };
        let sink = self.nar_sink_without_file(entry, &declared);
        let (sink, flat) = {
            let mut nar =
                decompressor(compression, &mut compressed).map_err(|e| Error::Corrupt {
                    what: file.display().to_string(),
                    reason: e.to_string(),
                })?;
            self.decode_nar(entry, &declared, &mut nar, sink)?
        };
        // The decompressor may stop at the end of its stream; FileHash covers every byte.
        io::copy(&mut compressed, &mut io::sink())
            .map_err(Error::io(format!("reading {}", file.display())))?;
        let mut nar = sink.finish(compression)?;
        if self.options.layout.cache {
            nar.file = Some(NarFile {
                source: FileSource::Existing(file.to_path_buf()),
                hash: file_hashes.finish().sha256,
                size,
                compression,
            });
        }
        self.commit(entry, &declared, nar, flat)
    }

    /// Parses one NAR from `nar` into `sink`; for a flat entry, hashes its file (and copies
    /// it to a mirror temp file when the layout has a mirror).
    fn decode_nar(
        &self,
        entry: &Entry,
        declared: &Hash,
        nar: &mut dyn Read,
        mut sink: NarSink,
    ) -> Result<(NarSink, Option<FlatOutcome>), Error> {
        let mut tee = TeeReader {
            inner: nar,
            sink: &mut sink,
            sink_error: None,
        };
        let flat = if is_flat(entry) {
            let mut mirror = if self.options.layout.mirror {
                Some(self.new_temp()?)
            } else {
                None
            };
            let hashes = ContentHashes::new(declared.algo);
            let parsed = nar::parse_single_file(&mut tee, |file, contents| {
                hash_flat_file(&hashes, mirror.as_mut(), file, contents)
            });
            let (digests, _) = check_tee(tee.sink_error, parsed)?;
            Some(FlatOutcome {
                digests,
                mirror_source: mirror.map(FileSource::Temp),
            })
        } else {
            let parsed = nar::validate(&mut tee).map_err(Error::from);
            check_tee(tee.sink_error, parsed)?;
            None
        };
        Ok((sink, flat))
    }

    /// Checks the declared hash and store path, then makes the item visible: NAR file,
    /// mirror file and keys, and the narinfo last.
    fn commit(
        &self,
        entry: &Entry,
        declared: &Hash,
        nar: NarOutcome,
        flat: Option<FlatOutcome>,
    ) -> Result<Published, Error> {
        let got = match &flat {
            Some(flat) => flat.digests.get(declared.algo).cloned(),
            None if declared.algo == HashAlgo::Sha256 => Some(nar.nar_hash.clone()),
            None => nar.declared_recursive.clone(),
        }
        .expect("the declared algorithm is always hashed");
        if got != *declared {
            return Err(Error::HashMismatch {
                what: entry.store_path.clone(),
                expected: declared.to_sri(),
                got: got.to_sri(),
            });
        }
        let name = StorePathName::new(&entry.name).map_err(|e| Error::Corrupt {
            what: entry.store_path.clone(),
            reason: e.to_string(),
        })?;
        let store_path = content_address(entry, declared).store_path(&name);
        if store_path.to_path_string() != entry.store_path {
            return Err(Error::StorePathMismatch {
                what: entry.name.clone(),
                expected: entry.store_path.clone(),
                got: store_path.to_path_string(),
            });
        }
        let published = Published {
            file_hash: nar
                .file
                .as_ref()
                .map_or_else(|| nar.nar_hash.clone(), |file| file.hash.clone()),
            file_size: nar.file.as_ref().map_or(nar.nar_size, |file| file.size),
            nar_hash: nar.nar_hash,
            nar_size: nar.nar_size,
        };
        let nar_file = match nar.file {
            Some(file) => {
                let url = NarUrl::new(&format!(
                    "nar/{}.nar{}",
                    file.hash.to_nix32(),
                    file.compression.extension()
                ))
                .expect("nar/<nix32>.nar<ext> is a relative path");
                self.place(file.source, &self.root.join(url.as_path()))?;
                Some((url, file.compression))
            }
            None => None,
        };
        if let Some(FlatOutcome {
            digests,
            mirror_source: Some(source),
        }) = flat
        {
            self.publish_mirror(&digests, source)?;
        }
        if let Some((url, compression)) = nar_file {
            self.write_narinfo(entry, declared, store_path, (url, compression), &published)?;
        }
        Ok(published)
    }

    fn write_narinfo(
        &self,
        entry: &Entry,
        declared: &Hash,
        store_path: StorePath,
        (url, compression): (NarUrl, Compression),
        published: &Published,
    ) -> Result<(), Error> {
        let mut info = NarInfo {
            url,
            compression,
            file_hash: Some(published.file_hash.clone()),
            file_size: Some(published.file_size),
            nar_hash: published.nar_hash.clone(),
            nar_size: published.nar_size,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: Some(content_address(entry, declared)),
            store_path,
        };
        if let Some(key) = &self.options.signing_key {
            info.sigs.push(key.sign(&info.fingerprint()));
        }
        let path = self.narinfo_path(info.store_path.hash_part());
        self.write_atomically(&path, info.render().as_bytes())
    }

    /// The raw file at `sha256/<hex>`, then a relative symlink for every other key.
    fn publish_mirror(&self, digests: &ContentDigests, source: FileSource) -> Result<(), Error> {
        let sha256_hex = digests.sha256.to_hex();
        self.place(source, &self.root.join("sha256").join(&sha256_hex))?;
        for key in mirror_keys(digests) {
            self.place_symlink(
                &self.root.join(&key),
                &mirror_link_target(&key, &sha256_hex),
            )?;
        }
        Ok(())
    }

    fn place(&self, source: FileSource, target: &Path) -> Result<(), Error> {
        match source {
            FileSource::Temp(temp) => self.persist(temp, target),
            FileSource::Existing(file) => self.link_or_copy(&file, target),
        }
    }

    /// Makes `link` point to `target`. Creating a symlink is atomic by itself, so an absent
    /// link is created in place (its directory only when missing: publishing thousands of
    /// small files is syscall-bound); an identical one is kept; anything else is replaced
    /// atomically through a temp link and a rename.
    fn place_symlink(&self, link: &Path, target: &Path) -> Result<(), Error> {
        let context = || format!("creating symlink {}", link.display());
        let create = || std::os::unix::fs::symlink(target, link);
        let created = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = link.parent().expect("keys are below the root");
                fs::create_dir_all(parent)
                    .map_err(Error::io(format!("creating {}", parent.display())))?;
                create()
            }
            other => other,
        };
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::read_link(link).is_ok_and(|existing| existing == target) {
                    return Ok(());
                }
                let temp_link = self.temp.join(format!("link-{:016x}", fastrand::u64(..)));
                std::os::unix::fs::symlink(target, &temp_link).map_err(Error::io(context()))?;
                fs::rename(&temp_link, link).map_err(|e| {
                    let _ = fs::remove_file(&temp_link);
                    Error::io(context())(e)
                })
            }
            Err(e) => Err(Error::io(context())(e)),
        }
    }

    /// Hard-links `file` to `target` atomically (link to a temp name, rename), copying
    /// instead when they are on different filesystems.
    fn link_or_copy(&self, file: &Path, target: &Path) -> Result<(), Error> {
        File::open(file)
            .and_then(|f| {
                f.sync_all()?;
                f.set_permissions(fs::Permissions::from_mode(0o644))
            })
            .map_err(Error::io(format!("syncing {}", file.display())))?;
        let temp_link = self.temp.join(format!("mirror-{:016x}", fastrand::u64(..)));
        match fs::hard_link(file, &temp_link) {
            Ok(()) => {
                let renamed = fs::rename(&temp_link, target)
                    .map_err(Error::io(format!("renaming {}", target.display())));
                // rename() between two links to one inode succeeds without doing anything
                // (POSIX), which happens when the same file is published twice.
                let _ = fs::remove_file(&temp_link);
                renamed
            }
            Err(_) => {
                let mut temp = self.new_temp()?;
                let mut input =
                    File::open(file).map_err(Error::io(format!("opening {}", file.display())))?;
                io::copy(&mut input, &mut temp.file)
                    .map_err(Error::io(format!("copying {}", file.display())))?;
                self.persist(temp, target)
            }
        }
    }

    /// fsync, world-readable (a cache is served as is), rename into place.
    fn persist(&self, temp: TempFile, target: &Path) -> Result<(), Error> {
        let context = || format!("writing {}", target.display());
        temp.file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(Error::io(context()))?;
        temp.file.sync_all().map_err(Error::io(context()))?;
        drop(temp.file);
        temp.path
            .persist(target)
            .map_err(|e| Error::io(context())(e.error))
    }

    pub(crate) fn write_atomically(&self, target: &Path, contents: &[u8]) -> Result<(), Error> {
        let mut temp = self.new_temp()?;
        temp.write_all(contents)
            .map_err(Error::io(format!("writing {}", target.display())))?;
        self.persist(temp, target)
    }

    /// Fully re-checks one published item: FileSize/FileHash of the NAR file, NarHash/NarSize
    /// of its decompressed content, the NAR's structure, the CA against the StorePath, and
    /// for a flat item, when the layout has a mirror, the mirror file (a cache opened without
    /// the mirror layout leaves mirror files to its caller).
    pub fn verify_narinfo(&self, hash_part: &str) -> Result<Verified, Error> {
        let narinfo_path = self.narinfo_path(hash_part);
        let what = narinfo_path.display().to_string();
        let corrupt = |reason: String| Error::Corrupt {
            what: what.clone(),
            reason,
        };
        let text =
            fs::read_to_string(&narinfo_path).map_err(Error::io(format!("reading {what}")))?;
        let info = NarInfo::parse(&text)?;
        if info.store_path.hash_part() != hash_part {
            return Err(corrupt(format!(
                "names {}, not a path with hash {hash_part}",
                info.store_path.to_path_string()
            )));
        }
        let ca = info
            .ca
            .clone()
            .ok_or_else(|| corrupt("no CA field".into()))?;
        let expected_path = ca.store_path(info.store_path.name());
        let ContentAddress {
            mode,
            hash: ca_hash,
        } = ca;
        if expected_path != info.store_path {
            return Err(Error::StorePathMismatch {
                what: what.clone(),
                expected: info.store_path.to_path_string(),
                got: expected_path.to_path_string(),
            });
        }

        // The URL is a checked relative path, so this names a file inside the cache.
        let nar_path = self.root.join(info.url.as_path());
        let nar_file =
            File::open(&nar_path).map_err(Error::io(format!("opening {}", nar_path.display())))?;
        let nar_file_size = nar_file
            .metadata()
            .map_err(Error::io(format!("stat {}", nar_path.display())))?
            .len();
        let mut file_hashes =
            ContentHasher::new(ContentHashes::new(HashAlgo::Sha256), nar_file_size);
        let mut compressed = HashingReader {
            inner: io::BufReader::with_capacity(WRITE_BUFFER, nar_file),
            hashes: &mut file_hashes,
        };
        let nar_algo = match mode {
            HashMode::Recursive => ca_hash.algo,
            HashMode::Flat => HashAlgo::Sha256,
        };
        let mut nar_hashes = ContentHasher::new(ContentHashes::new(nar_algo), info.nar_size);
        let (flat, nar_size) = {
            let decompressed = decompressor(info.compression, &mut compressed)
                .map_err(|e| corrupt(format!("{}: {e}", info.compression)))?;
            let mut counted = CountingReader {
                inner: HashingReader {
                    inner: decompressed,
                    hashes: &mut nar_hashes,
                },
                count: 0,
            };
            let flat = if mode == HashMode::Flat {
                let hashes = ContentHashes::new(ca_hash.algo);
                let (digests, _) = nar::parse_single_file(&mut counted, |file, contents| {
                    hash_flat_file(&hashes, None, file, contents)
                })?;
                Some(digests)
            } else {
                nar::validate(&mut counted)?;
                None
            };
            (flat, counted.count)
        };
        // The decompressor may stop at the end of its stream; the file hash covers every byte.
        io::copy(&mut compressed, &mut io::sink())
            .map_err(Error::io(format!("reading {}", nar_path.display())))?;
        let file_digests = file_hashes.finish();
        let nar_digests = nar_hashes.finish();

        let check = |field: &str, expected: &Hash, got: &Hash| {
            if expected != got {
                Err(Error::HashMismatch {
                    what: format!("{what} {field}"),
                    expected: expected.to_nix32_prefixed(),
                    got: got.to_nix32_prefixed(),
                })
            } else {
                Ok(())
            }
        };
        check("NarHash", &info.nar_hash, &nar_digests.sha256)?;
        if info.nar_size != nar_size {
            return Err(corrupt(format!(
                "NarSize {} but the NAR has {nar_size} bytes",
                info.nar_size
            )));
        }
        if let Some(file_hash) = &info.file_hash {
            check("FileHash", file_hash, &file_digests.sha256)?;
        }
        let file_size = nar_file_size;
        if info.file_size.is_some_and(|size| size != file_size) {
            return Err(corrupt(format!(
                "FileSize {} but {} has {file_size} bytes",
                info.file_size.unwrap_or_default(),
                info.url
            )));
        }
        let content_hash = match &flat {
            Some(digests) => digests.get(ca_hash.algo),
            None => nar_digests.get(ca_hash.algo),
        }
        .expect("the CA algorithm is always hashed");
        check("CA", &ca_hash, content_hash)?;

        let mirror_checked = match &flat {
            Some(digests) if self.options.layout.mirror => {
                self.verify_mirror_file(&digests.sha256)?;
                true
            }
            _ => false,
        };
        Ok(Verified {
            store_path: info.store_path.to_path_string(),
            nar_size,
            file_size,
            mirror_checked,
        })
    }

    /// Re-hashes `sha256/<hex>`, which must exist.
    fn verify_mirror_file(&self, sha256: &Hash) -> Result<(), Error> {
        let path = self.root.join("sha256").join(sha256.to_hex());
        let file = File::open(&path)
            .map_err(Error::io(format!("opening mirror file {}", path.display())))?;
        let mut hashes = ContentHasher::Inline(Box::new(ContentHashes::new(HashAlgo::Sha256)));
        let mut reader = HashingReader {
            inner: file,
            hashes: &mut hashes,
        };
        io::copy(&mut reader, &mut io::sink())
            .map_err(Error::io(format!("reading {}", path.display())))?;
        let got = hashes.finish().sha256;
        if got != *sha256 {
            return Err(Error::HashMismatch {
                what: path.display().to_string(),
                expected: sha256.to_hex(),
                got: got.to_hex(),
            });
        }
        Ok(())
    }
}

/// The parse's outcome, unless writing the NAR's bytes to the cache failed first (a NAR
/// that breaks off then is a symptom, not the cause).
fn check_tee<T>(sink_error: Option<io::Error>, parsed: Result<T, Error>) -> Result<T, Error> {
    match sink_error {
        Some(e) => Err(Error::io("writing NAR to the cache")(e)),
        None => parsed,
    }
}

/// The content address a publish checks `entry` against: its mode and declared hash.
fn content_address(entry: &Entry, declared: &Hash) -> ContentAddress {
    ContentAddress {
        mode: entry.hash.mode,
        hash: declared.clone(),
    }
}

struct CountingReader<R: Read> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes the single file of a flat output's NAR (and copies it to a mirror temp file on
/// the way); a flat output is one non-executable regular file.
fn hash_flat_file(
    hashes: &ContentHashes,
    mirror: Option<&mut TempFile>,
    file: SingleFile,
    contents: &mut dyn Read,
) -> Result<ContentDigests, Error> {
    if file.executable {
        return Err(Error::Corrupt {
            what: "NAR".into(),
            reason: "a flat output must not be executable".into(),
        });
    }
    let mut hasher = ContentHasher::new(hashes.clone(), file.size);
    let mut reader = HashingReader {
        inner: contents,
        hashes: &mut hasher,
    };
    match mirror {
        Some(temp) => nar::copy_contents(&mut reader, &mut temp.file)?,
        None => nar::copy_contents(&mut reader, &mut io::sink())?,
    };
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_entry(name: &str, hash: &Hash) -> Entry {
        Entry::new(
            &StorePathName::new(name).unwrap(),
            HashMode::Flat,
            hash,
            srcgrab_manifest::Kind::Url,
        )
    }

    /// Writes `chunks` to `path` through [`HashedWrites`] and seals the hash to it.
    fn write_hashed(path: &Path, algo: HashAlgo, chunks: &[&[u8]]) -> VerifiedHash {
        let mut out = File::create(path).unwrap();
        let mut hashed = HashedWrites::new(algo);
        for chunk in chunks {
            hashed.write(&mut out, chunk).unwrap();
        }
        hashed.seal(path).unwrap()
    }

    #[test]
    fn a_hash_taken_while_writing_publishes_what_rehashing_would() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"bytes hashed on their way to disk".repeat(1000);
        let file = dir.path().join("download");
        let verified = write_hashed(&file, HashAlgo::Sha256, &[&content[..10], &content[10..]]);
        assert_eq!(
            verified,
            VerifiedHash::of_file(&file, HashAlgo::Sha256).unwrap()
        );
        let entry = flat_entry("f", verified.hash());
        let open = |name: &str| Cache::open(&dir.path().join(name), CacheOptions::default());
        let rehashed = open("a").unwrap().publish_file(&entry, &file).unwrap();
        let trusted = open("b")
            .unwrap()
            .publish_file_verified(&entry, &file, verified)
            .unwrap();
        assert_eq!(trusted, rehashed);
        let mirrored = dir.path().join("b/sha256").join(sha256_hex(&content));
        assert_eq!(fs::read(mirrored).unwrap(), content);
    }

    fn sha256_hex(content: &[u8]) -> String {
        let mut h = Hasher::new(HashAlgo::Sha256);
        h.update(content);
        h.finalize().to_hex()
    }

    #[test]
    fn a_verified_hash_is_refused_for_another_or_changed_file_and_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache"), CacheOptions::default()).unwrap();
        let file = dir.path().join("download");
        let verified = write_hashed(&file, HashAlgo::Sha256, &[b"original"]);
        let entry = flat_entry("f", verified.hash());

        let other = dir.path().join("other");
        fs::write(&other, b"original").unwrap();
        let err = cache
            .publish_file_verified(&entry, &other, verified.clone())
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");

        // Same length, other bytes, written after the seal.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&file, b"replaced").unwrap();
        let err = cache
            .publish_file_verified(&entry, &file, verified)
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");

        // A true hash of the bytes that is not the declared one is a mismatch.
        let verified = write_hashed(&file, HashAlgo::Sha256, &[b"something else"]);
        let err = cache
            .publish_file_verified(&entry, &file, verified)
            .unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
        assert!(!cache.is_present(&entry).unwrap());

        // A seal needs the file to hold exactly what was written.
        let mut out = File::create(&file).unwrap();
        let mut hashed = HashedWrites::new(HashAlgo::Sha256);
        hashed.write(&mut out, b"abc").unwrap();
        out.write_all(b"unhashed").unwrap();
        assert!(hashed.seal(&file).is_err());
    }

    #[test]
    fn a_known_sha1_still_gets_the_sha256_the_mirror_is_named_by() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"declared by sha1".to_vec();
        let file = dir.path().join("download");
        let verified = write_hashed(&file, HashAlgo::Sha1, &[&content]);
        let entry = flat_entry("f", verified.hash());
        let cache = Cache::open(&dir.path().join("cache"), CacheOptions::default()).unwrap();
        cache
            .publish_file_verified(&entry, &file, verified.clone())
            .unwrap();
        let sha256 = sha256_hex(&content);
        assert_eq!(
            fs::read(dir.path().join("cache/sha256").join(&sha256)).unwrap(),
            content
        );
        let sha1_key = dir.path().join("cache/sha1").join(verified.hash().to_hex());
        assert_eq!(fs::read(sha1_key).unwrap(), content);
    }

    #[test]
    fn mirror_link_targets_climb_one_level_per_directory() {
        let hex = "ab".repeat(32);
        let to = |key: &str| mirror_link_target(key, &hex);
        assert_eq!(to("sha256/0abc"), Path::new("../sha256").join(&hex));
        assert_eq!(to("sha256-AbC="), Path::new("sha256").join(&hex));
        assert_eq!(to("sha256-Ab/C="), Path::new("../sha256").join(&hex));
        // An empty component ('//' in base64) is no directory level.
        assert_eq!(to("sha256-A//bC="), Path::new("../sha256").join(&hex));
        assert_eq!(
            to("sha1/sha1-a/b/c="),
            Path::new("../../../sha256").join(&hex)
        );
    }

    #[test]
    fn mirror_keys_cover_every_form_of_the_declared_hash() {
        let mut hashes = ContentHashes::new(HashAlgo::Sha1);
        hashes.update(b"contents");
        let digests = hashes.finish();
        let sha1 = digests.get(HashAlgo::Sha1).unwrap().clone();
        let sha256 = digests.sha256.clone();
        let keys = mirror_keys(&digests);
        for expected in [
            format!("sha256/{}", sha256.to_nix32()),
            sha256.to_sri(),
            format!("sha256/{}", sha256.to_sri()),
            format!("sha1/{}", sha1.to_hex()),
            format!("sha1/{}", sha1.to_nix32()),
            sha1.to_sri(),
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|k| k.starts_with("sha512")), "{keys:?}");
    }
}
