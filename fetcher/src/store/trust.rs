//! The trust token: a hash the store may take instead of hashing a file again, because it
//! was computed over exactly the bytes of that file.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use srcgrab_formats::hash::{Hash, HashAlgo, Hasher};

use crate::store::Error;

use super::WRITE_BUFFER;

/// A hash of a file's bytes, taken as they were written to it ([`HashedWrites::seal`]) or
/// read from it ([`VerifiedHash::of_file`]), and tied to that file by its identity (device,
/// inode, length, modification time). [`Cache::publish_file_verified`](super::Cache::publish_file_verified) takes it instead of
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

    /// The hash, once the file it describes has been checked ([`VerifiedHash::check_describes`]).
    pub(super) fn into_hash(self) -> Hash {
        self.hash
    }

    /// Refuses a file other than the one the hash was sealed to, or one changed since.
    pub(super) fn check_describes(&self, path: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        if self.file != FileIdentity::of(meta) {
            return Err(Error::ChangedSinceHashed(path.to_path_buf()));
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

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::io::Write;

    use srcgrab_formats::hash::HashMode;
    use srcgrab_manifest::Entry;

    use super::*;
    use crate::store::Error;
    use crate::store::{Cache, CacheOptions};

    fn flat_entry(name: &str, hash: &Hash) -> Entry {
        Entry::new(
            &srcgrab_formats::StorePathName::new(name).unwrap(),
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
        assert!(matches!(err, Error::ChangedSinceHashed(_)), "{err}");

        // Same length, other bytes, written after the seal.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&file, b"replaced").unwrap();
        let err = cache
            .publish_file_verified(&entry, &file, verified)
            .unwrap_err();
        assert!(matches!(err, Error::ChangedSinceHashed(_)), "{err}");

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
}
