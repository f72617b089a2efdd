//! Re-verification of what is in the store: the cheap presence check a fetch skips by,
//! and the full re-check `srcgrab verify` runs.

use std::fs::{self, File};
use std::io::{self};

use srcgrab_formats::hash::{Hash, HashAlgo, HashMode};
use srcgrab_formats::nar;
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::store_path::StorePath;
use srcgrab_formats::ContentAddress;
use srcgrab_manifest::Entry;

use super::compression::decompressor;
use super::hashing::{ContentHasher, ContentHashes, CountingReader, HashingReader};
use super::visit::hash_flat_file;
use super::{declared_hash, is_flat, Cache, Verified, WRITE_BUFFER};
use crate::Error;

impl Cache {
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
            // A URL that would leave the cache fails the narinfo's parse: absent.
            let nar_file = self.disk.nar_file(&info.url);
            match fs::metadata(&nar_file) {
                Ok(meta) if Some(meta.len()) == info.file_size || info.file_size.is_none() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io(format!("checking {}", nar_file.display()))(e)),
            }
            expected_nar_size = Some(info.nar_size);
        }
        if self.options.layout.mirror && is_flat(entry) {
            let key = self.disk.mirror_key(&declared);
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
    pub(super) fn matching_narinfo(
        &self,
        entry: &Entry,
        declared: &Hash,
    ) -> Result<Option<NarInfo>, Error> {
        let Ok(store_path) = StorePath::parse(&entry.store_path) else {
            return Ok(None);
        };
        let path = self.disk.narinfo(store_path.hash_part());
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
    /// Fully re-checks one published item: FileSize/FileHash of the NAR file, NarHash/NarSize
    /// of its decompressed content, the NAR's structure, the CA against the StorePath (a
    /// binary, which has none, stands on its signed NarHash), and
    /// for a flat item, when the layout has a mirror, the mirror file (a cache opened without
    /// the mirror layout leaves mirror files to its caller).
    pub fn verify_narinfo(&self, hash_part: &str) -> Result<Verified, Error> {
        let narinfo_path = self.disk.narinfo(hash_part);
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
        // A source is checked against its content address; a binary (no CA: mirrored with
        // `fetch --store-paths` or as a manifest output) has only its signed NarHash.
        let content_address = match &info.ca {
            Some(ca) => Some(ca.clone()),
            None if !info.sigs.is_empty() => None,
            None => return Err(corrupt("neither a CA field nor a signature".into())),
        };
        if let Some(ca) = &content_address {
            let expected_path = ca.store_path(info.store_path.name());
            if expected_path != info.store_path {
                return Err(Error::StorePathMismatch {
                    what: what.clone(),
                    expected: info.store_path.to_path_string(),
                    got: expected_path.to_path_string(),
                });
            }
        }

        // The URL is a checked relative path, so this names a file inside the cache.
        let nar_path = self.disk.nar_file(&info.url);
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
        let nar_algo = match &content_address {
            Some(ContentAddress {
                mode: HashMode::Recursive,
                hash,
            }) => hash.algo,
            _ => HashAlgo::Sha256,
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
            let flat = if let Some(ContentAddress {
                mode: HashMode::Flat,
                hash,
            }) = &content_address
            {
                let hashes = ContentHashes::new(hash.algo);
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
        if let Some(ContentAddress { hash: ca_hash, .. }) = &content_address {
            let content_hash = match &flat {
                Some(digests) => digests.get(ca_hash.algo),
                None => nar_digests.get(ca_hash.algo),
            }
            .expect("the CA algorithm is always hashed");
            check("CA", ca_hash, content_hash)?;
        }

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
    pub(super) fn verify_mirror_file(&self, sha256: &Hash) -> Result<(), Error> {
        let path = self.disk.mirror_file(sha256);
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
