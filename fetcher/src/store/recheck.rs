//! Re-verification of what is in the store: the cheap presence check a fetch skips by,
//! and the full re-check `srcgrab verify` runs.

use std::fs;
use std::io;
use std::path::PathBuf;

use srcgrab_formats::hash::{Hash, HashAlgo, HashMode};
use srcgrab_formats::nar;
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::ContentAddress;
use srcgrab_manifest::Entry;

use super::compression::decompressor;
use super::hashing::ContentDigests;
use super::hashing::{ContentHasher, ContentHashes, CountingReader, HashingReader};
use super::layout::{mirror_keys, mirror_link_target, DiskLayout};
use super::regular_file::{self, SmallFile, MAX_NARINFO};
use super::seal;
use super::visit::hash_flat_file;
use super::{is_flat, Cache, Verified, WRITE_BUFFER};
use crate::store::Error;

impl Cache {
    /// Cheap check that `entry` is already published and untouched since: its narinfo parses
    /// and names the entry, and its NAR file and mirror file are regular files whose seals
    /// still hold ([`seal`]: one `lstat` each, no hashing). Anything else (a damaged
    /// narinfo, a file written to or replaced since it was checked, a symlink where a file
    /// belongs) counts as absent, so publishing again repairs it.
    pub fn is_present(&self, entry: &Entry) -> Result<bool, Error> {
        if !self.wants(entry) {
            return Ok(false);
        }
        let declared = &entry.hash.hash;
        if self.options.layout.cache {
            // The published narinfo of exactly this content (its NAR in `nar/`, sealed).
            let published = self
                .published_binary(&entry.store_path)?
                .filter(|narinfo| narinfo.info.ca.as_ref() == Some(&entry.hash));
            if published.is_none() {
                return Ok(false);
            }
        }
        if self.options.layout.mirror && is_flat(entry) {
            let Some(mirror_file) = self.mirror_file_of(declared) else {
                return Ok(false);
            };
            if !seal::holds(&self.disk, &mirror_file)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The mirror file (`sha256/<hex>`, relative) a flat hash is served from: the key itself
    /// for a sha256, else the file its `<algo>/<hex>` key links to, when that link is exactly
    /// the one a publish makes.
    pub(super) fn mirror_file_of(&self, declared: &Hash) -> Option<PathBuf> {
        let key = DiskLayout::mirror_key_name(declared);
        if declared.algo == HashAlgo::Sha256 {
            return Some(key);
        }
        let target = fs::read_link(self.root().join(&key)).ok()?;
        let name = target.file_name()?.to_str()?;
        (target == mirror_link_target(&key.to_string_lossy(), name))
            .then(|| DiskLayout::mirror_file_name(name))
    }

    /// The mirror file (hex name) of a flat hash, and every key a publish makes for it.
    fn mirror_keys_of(&self, declared: &Hash) -> Option<(String, Vec<String>)> {
        let file = self.mirror_file_of(declared)?;
        let hex = file.file_name()?.to_str()?.to_string();
        let sha256 = Hash::parse_digest(HashAlgo::Sha256, &hex).ok()?;
        let keys = mirror_keys(&ContentDigests::of_known(sha256, declared.clone()));
        Some((hex, keys))
    }

    /// Whether every mirror key of a flat entry is there and links to its mirror file.
    pub fn mirror_keys_complete(&self, entry: &Entry) -> bool {
        let declared = &entry.hash.hash;
        self.mirror_keys_of(declared).is_some_and(|(hex, keys)| {
            keys.iter().all(|key| {
                fs::read_link(self.root().join(key))
                    .is_ok_and(|target| target == mirror_link_target(key, &hex))
            })
        })
    }

    /// Recreates the missing or wrong mirror keys of a present flat entry (a dangling key
    /// removed by `verify --repair`, one deleted by hand); an identical key is kept as is.
    pub fn restore_mirror_keys(&self, entry: &Entry) -> Result<(), Error> {
        if !(self.options.layout.mirror && is_flat(entry)) {
            return Ok(());
        }
        let declared = &entry.hash.hash;
        if let Some((hex, keys)) = self.mirror_keys_of(declared) {
            for key in keys {
                self.place_symlink(&self.root().join(&key), &mirror_link_target(&key, &hex))?;
            }
        }
        Ok(())
    }

    /// Fully re-checks one published item: FileSize/FileHash of the NAR file, NarHash/NarSize
    /// of its decompressed content, the NAR's structure, the CA against the StorePath (a
    /// binary, which has none, stands on its signed NarHash), and
    /// for a flat item, when the layout has a mirror, the mirror file (a cache opened without
    /// the mirror layout leaves mirror files to its caller). Anything but a regular file where
    /// one belongs is corrupt. A NAR file that passed, unchanged while it was read, is sealed
    /// (unless the cache is read-only), so the next fetch takes it as present.
    pub fn verify_narinfo(&self, hash_part: &str) -> Result<Verified, Error> {
        let narinfo_path = self.disk.narinfo(hash_part);
        let what = narinfo_path.display().to_string();
        let damaged = |reason: String| Error::Damaged {
            what: what.clone(),
            reason,
        };
        let text = match regular_file::read_small(&narinfo_path, MAX_NARINFO)? {
            SmallFile::Text(text) => text,
            SmallFile::Absent => {
                return Err(Error::io(format!("reading {what}"))(
                    io::ErrorKind::NotFound.into(),
                ))
            }
            SmallFile::Refused(why) => return Err(damaged(why)),
        };
        let info = NarInfo::parse(&text)?;
        if info.store_path.hash_part() != hash_part {
            return Err(damaged(format!(
                "names {}, not a path with hash {hash_part}",
                info.store_path.to_path_string()
            )));
        }
        // A source is checked against its content address; a binary (no CA: mirrored with
        // `fetch --store-paths` or as a manifest output) has only its signed NarHash.
        let content_address = match &info.ca {
            Some(ca) => Some(ca.clone()),
            None if !info.sigs.is_empty() => None,
            None => return Err(damaged("neither a CA field nor a signature".into())),
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
        let nar_rel = info.url.as_path().to_path_buf();
        let nar_path = self.root().join(&nar_rel);
        let (nar_file, nar_meta) = regular_file::open_existing(&nar_path)?;
        let nar_file_size = nar_meta.len();
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
                .map_err(|e| damaged(format!("{}: {e}", info.compression)))?;
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
            return Err(damaged(format!(
                "NarSize {} but the NAR has {nar_size} bytes",
                info.nar_size
            )));
        }
        if let Some(file_hash) = &info.file_hash {
            check("FileHash", file_hash, &file_digests.sha256)?;
        }
        let file_size = nar_file_size;
        if info.file_size.is_some_and(|size| size != file_size) {
            return Err(damaged(format!(
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

        seal::record_if_unchanged(&self.disk, &nar_rel, &nar_meta);
        let mirror_checked = match &flat {
            Some(digests) if self.options.layout.mirror => {
                self.verify_mirror_file(&digests.sha256.to_hex())?;
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

    /// Re-hashes `sha256/<hex>`, which must be a regular file whose bytes have that sha256;
    /// seals it when it passed, unchanged while it was read.
    pub fn verify_mirror_file(&self, sha256_hex: &str) -> Result<(), Error> {
        let rel = DiskLayout::mirror_file_name(sha256_hex);
        let path = self.root().join(&rel);
        let (file, meta) = regular_file::open_existing(&path)?;
        let mut hashes = ContentHasher::Inline(Box::new(ContentHashes::new(HashAlgo::Sha256)));
        let mut reader = HashingReader {
            inner: file,
            hashes: &mut hashes,
        };
        io::copy(&mut reader, &mut io::sink())
            .map_err(Error::io(format!("reading {}", path.display())))?;
        let got = hashes.finish().sha256.to_hex();
        if got != sha256_hex {
            return Err(Error::HashMismatch {
                what: rel.display().to_string(),
                expected: sha256_hex.to_string(),
                got,
            });
        }
        seal::record_if_unchanged(&self.disk, &rel, &meta);
        Ok(())
    }
}
