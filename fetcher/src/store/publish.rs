//! Publishing: the only way anything enters the store. Every path checks the declared hash
//! and store path over the bytes it publishes, then places NAR, mirror file and keys, and
//! the narinfo last.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use srcgrab_formats::hash::{Hash, HashAlgo, HashMode, Hasher};
use srcgrab_formats::nar;
use srcgrab_formats::narinfo::{NarInfo, NarUrl};
use srcgrab_formats::store_path::{StorePath, StorePathName};
use srcgrab_manifest::Entry;

use super::checked_nar::CheckedNar;
use super::compression::{decompressor, Compressor};
use super::hashing::{
    ContentDigests, ContentHasher, ContentHashes, HashingReader, HashingWriter, NarSizeBound,
};
use super::layout::DiskLayout;
use super::layout::{mirror_keys, mirror_link_target};
use super::place::{FileSource, TempFile};
use super::tree;
use super::visit::hash_flat_file;
use super::{is_flat, Cache, Compression, Published, VerifiedHash, WRITE_BUFFER};
use crate::store::Error;

pub(super) type NarFileWriter = Compressor<HashingWriter<BufWriter<TempFile>>>;

/// Where the NAR goes in one pass: its sha256 (NarHash) and size, the declared hash when it
/// is a recursive hash with another algorithm, and the compressed file (with FileHash).
pub(super) struct NarSink {
    pub(super) nar_hasher: Hasher,
    pub(super) nar_size: u64,
    pub(super) declared_recursive: Option<Hasher>,
    pub(super) file: Option<NarFileWriter>,
}

/// The NAR of a publish, before anything is visible.
pub(super) struct NarOutcome {
    pub(super) nar_hash: Hash,
    pub(super) nar_size: u64,
    pub(super) declared_recursive: Option<Hash>,
    /// The compressed NAR file; absent for a mirror-only layout.
    pub(super) file: Option<NarFile>,
}

/// A compressed NAR file ready to be placed, with its FileHash and FileSize.
pub(super) struct NarFile {
    pub(super) source: FileSource,
    pub(super) hash: Hash,
    pub(super) size: u64,
    pub(super) compression: Compression,
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
    pub(super) fn finish(self, compression: Compression) -> Result<NarOutcome, Error> {
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

/// A reader that copies what it reads into a NAR sink; a sink error is kept aside so it is
/// reported as a write error, not as a malformed NAR.
pub(super) struct TeeReader<'a, R: Read> {
    pub(super) inner: R,
    pub(super) sink: &'a mut NarSink,
    pub(super) sink_error: Option<io::Error>,
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
pub(super) struct FlatOutcome {
    pub(super) digests: ContentDigests,
    /// Where the mirror copy comes from, when the layout has a mirror.
    pub(super) mirror_source: Option<FileSource>,
}

impl Cache {
    pub(super) fn nar_sink(&self, entry: &Entry) -> Result<NarSink, Error> {
        let mut sink = self.nar_sink_without_file(entry);
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
    pub(super) fn nar_sink_without_file(&self, entry: &Entry) -> NarSink {
        let declared = &entry.hash.hash;
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

    /// [`Cache::publish_file`] of bytes that are not the cache's to hard-link (a bundle's
    /// file, one on a visitor's disk): copied into the cache first, hashed on the way.
    pub fn publish_file_copied(
        &self,
        entry: &Entry,
        source: &mut dyn Read,
        what: &str,
    ) -> Result<Published, Error> {
        let (temp, hashed) = self.copy_to_temp(source, entry.hash.hash.algo, what)?;
        let verified = hashed
            .seal(&temp.path)
            .map_err(Error::io(format!("writing {}", temp.path.display())))?;
        self.publish_file_verified(entry, &temp.path, verified)
    }

    pub(super) fn publish_file_knowing(
        &self,
        entry: &Entry,
        file: &Path,
        verified: Option<VerifiedHash>,
    ) -> Result<Published, Error> {
        let declared = &entry.hash.hash;
        let mut sink = self.nar_sink(entry)?;
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
            let known = verified.map(VerifiedHash::into_hash);
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
        self.commit(entry, sink.finish(self.options.compression)?, flat)
    }

    /// Publishes a directory tree (recursive entries): the NAR of `dir`, which may also be a
    /// single file or symlink (e.g. a store path Nix built).
    pub fn publish_tree(&self, entry: &Entry, dir: &Path) -> Result<Published, Error> {
        if is_flat(entry) {
            return Err(Error::BadEntry {
                store_path: entry.store_path.clone(),
                reason: "a flat entry cannot be published from a directory tree".into(),
            });
        }
        let mut sink = self.nar_sink(entry)?;
        tree::dump_path(dir, &mut sink)?;
        self.commit(entry, sink.finish(self.options.compression)?, None)
    }

    /// Publishes an uncompressed NAR stream (from a substituter or `nix-store --dump`); the
    /// stream must hold exactly one valid NAR, and for a flat entry a single non-executable
    /// regular file (what Nix requires of a flat output).
    pub fn publish_nar(&self, entry: &Entry, nar: &mut dyn Read) -> Result<Published, Error> {
        let sink = self.nar_sink(entry)?;
        let (sink, flat) = self.decode_nar(entry, nar, sink)?;
        self.commit(entry, sink.finish(self.options.compression)?, flat)
    }

    /// [`Cache::publish_nar`] of a NAR a narinfo describes by its NarSize and NarHash, both
    /// checked before anything is visible. A sha256 NarHash is compared with the one the
    /// publish computes anyway, which saves a second hash of the NAR; another algorithm's is
    /// checked on the stream's way.
    pub fn publish_nar_described(
        &self,
        entry: &Entry,
        nar: &mut dyn Read,
        nar_size: u64,
        nar_hash: &Hash,
    ) -> Result<Published, Error> {
        if nar_hash.algo != HashAlgo::Sha256 {
            let mut checked = CheckedNar::new(nar, nar_size, nar_hash.clone());
            return self.publish_nar(entry, &mut checked);
        }
        let sink = self.nar_sink(entry)?;
        let mut bounded = NarSizeBound {
            inner: nar,
            limit: nar_size,
            seen: 0,
        };
        let (sink, flat) = self.decode_nar(entry, &mut bounded, sink)?;
        let outcome = sink.finish(self.options.compression)?;
        let mismatch = |reason: String| Error::NarMismatch {
            what: entry.store_path.to_path_string(),
            reason,
        };
        if outcome.nar_size != nar_size {
            return Err(mismatch(format!(
                "NAR has {} bytes, narinfo says NarSize {nar_size}",
                outcome.nar_size
            )));
        }
        if outcome.nar_hash != *nar_hash {
            return Err(mismatch(format!(
                "NarHash mismatch: narinfo says {}, NAR has {}",
                nar_hash.to_nix32_prefixed(),
                outcome.nar_hash.to_nix32_prefixed()
            )));
        }
        self.commit(entry, outcome, flat)
    }

    /// Publishes a compressed NAR file (from an upstream binary cache) as the cache's own
    /// NAR file, without recompressing: the file is decompressed here and the NAR goes through
    /// every check of [`Cache::publish_nar`]; FileHash and FileSize are of the file's bytes.
    /// The file may be hard-linked into the cache, so the caller must not modify it
    /// afterwards (removing it is fine). A mirror-only layout just publishes the NAR.
    /// `verified` (the download's hash) is the FileHash when it is a sha256; the NAR must
    /// have exactly `nar_size` bytes (the narinfo's NarSize), and decompressing stops at one
    /// byte more.
    pub fn publish_compressed_nar(
        &self,
        entry: &Entry,
        file: &Path,
        compression: Compression,
        verified: VerifiedHash,
        nar_size: u64,
    ) -> Result<Published, Error> {
        let opened = File::open(file).map_err(Error::io(format!("opening {}", file.display())))?;
        let meta = opened
            .metadata()
            .map_err(Error::io(format!("stat {}", file.display())))?;
        verified.check_describes(file, &meta)?;
        let size = meta.len();
        let hashes = ContentHashes::knowing(HashAlgo::Sha256, Some(verified.into_hash()));
        let mut file_hashes = if hashes.hashes_anything() {
            ContentHasher::new(hashes, size)
        } else {
            ContentHasher::Inline(Box::new(hashes))
        };
        let mut compressed = HashingReader {
            inner: io::BufReader::with_capacity(WRITE_BUFFER, opened),
            hashes: &mut file_hashes,
        };
        let sink = self.nar_sink_without_file(entry);
        let (sink, flat) = {
            let nar =
                decompressor(compression, &mut compressed).map_err(|e| Error::NarMismatch {
                    what: file.display().to_string(),
                    reason: e.to_string(),
                })?;
            self.decode_nar(
                entry,
                &mut NarSizeBound {
                    inner: nar,
                    limit: nar_size,
                    seen: 0,
                },
                sink,
            )?
        };
        // The decompressor may stop at the end of its stream; FileHash covers every byte.
        io::copy(&mut compressed, &mut io::sink())
            .map_err(Error::io(format!("reading {}", file.display())))?;
        let mut nar = sink.finish(compression)?;
        if nar.nar_size != nar_size {
            return Err(Error::NarMismatch {
                what: entry.store_path.to_path_string(),
                reason: format!(
                    "NAR has {} bytes, narinfo says NarSize {nar_size}",
                    nar.nar_size
                ),
            });
        }
        if self.options.layout.cache {
            nar.file = Some(NarFile {
                source: FileSource::Existing(file.to_path_buf()),
                hash: file_hashes.finish().sha256,
                size,
                compression,
            });
        }
        self.commit(entry, nar, flat)
    }

    /// Parses one NAR from `nar` into `sink`; for a flat entry, hashes its file (and copies
    /// it to a mirror temp file when the layout has a mirror).
    pub(super) fn decode_nar(
        &self,
        entry: &Entry,
        nar: &mut dyn Read,
        mut sink: NarSink,
    ) -> Result<(NarSink, Option<FlatOutcome>), Error> {
        let declared = &entry.hash.hash;
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
    pub(super) fn commit(
        &self,
        entry: &Entry,
        nar: NarOutcome,
        flat: Option<FlatOutcome>,
    ) -> Result<Published, Error> {
        let declared = &entry.hash.hash;
        let got = match &flat {
            Some(flat) => flat.digests.get(declared.algo).cloned(),
            None if declared.algo == HashAlgo::Sha256 => Some(nar.nar_hash.clone()),
            None => nar.declared_recursive.clone(),
        }
        .expect("the declared algorithm is always hashed");
        if got != *declared {
            return Err(Error::HashMismatch {
                what: entry.store_path.to_path_string(),
                expected: declared.to_sri(),
                got: got.to_sri(),
            });
        }
        let name = StorePathName::new(&entry.name).map_err(|e| Error::BadEntry {
            store_path: entry.store_path.clone(),
            reason: e.to_string(),
        })?;
        let store_path = entry.hash.store_path(&name);
        if store_path != entry.store_path {
            return Err(Error::StorePathMismatch {
                what: entry.name.clone(),
                expected: entry.store_path.to_path_string(),
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
                let url = DiskLayout::nar_url(&file.hash, file.compression);
                self.place(file.source, url.as_path())?;
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
            self.write_narinfo(entry, store_path, (url, compression), &published)?;
        }
        Ok(published)
    }

    pub(super) fn write_narinfo(
        &self,
        entry: &Entry,
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
            ca: Some(entry.hash.clone()),
            store_path,
        };
        if let Some(key) = &self.options.signing_key {
            info.sigs.push(key.sign(&info.fingerprint()));
        }
        let path = self.disk.narinfo(info.store_path.hash_part());
        self.write_atomically(&path, info.render().as_bytes())
    }

    /// The raw file at `sha256/<hex>`, then a relative symlink for every other key.
    pub(super) fn publish_mirror(
        &self,
        digests: &ContentDigests,
        source: FileSource,
    ) -> Result<(), Error> {
        let sha256_hex = digests.sha256.to_hex();
        self.place(source, &DiskLayout::mirror_file_name(&sha256_hex))?;
        for key in mirror_keys(digests) {
            self.place_symlink(
                &self.root().join(&key),
                &mirror_link_target(&key, &sha256_hex),
            )?;
        }
        Ok(())
    }
}

/// The parse's outcome, unless writing the NAR's bytes to the cache failed first (a NAR
/// that breaks off then is a symptom, not the cause).
pub(super) fn check_tee<T>(
    sink_error: Option<io::Error>,
    parsed: Result<T, Error>,
) -> Result<T, Error> {
    match sink_error {
        Some(e) => Err(Error::io("writing NAR to the cache")(e)),
        None => parsed,
    }
}
