//! The on-disk layout: the one place that knows where each kind of item lives under a cache
//! root. Everything else asks [`DiskLayout`] for a path (or gets a relative key from it).
//!
//! ```text
//! nix-cache-info                  binary cache header
//! <hashpart>.narinfo              one per published store path
//! nar/<filehash>.nar[.zst|.xz|.bz2]
//! sha256/<hex>                    hashed-mirror file
//! <algo>/<hex|nix32|sri>, <sri>   mirror keys: relative symlinks to sha256/<hex>
//! .tmp/run-XXXX/                  one scratch directory per writing process (see `scratch`)
//! .tmp/partial/                   resumable downloads
//! .srcgrab/                       srcgrab's own state (blake3 index, seals, locks, git)
//! ```

use std::path::{Path, PathBuf};

use srcgrab_formats::hash::{Hash, HashAlgo};
use srcgrab_formats::narinfo::NarUrl;

use super::hashing::ContentDigests;
use super::Compression;

pub const CACHE_INFO: &str = "nix-cache-info";
const NAR_DIR: &str = "nar";
const MIRROR_DIR: &str = "sha256";
const TEMP_DIR: &str = ".tmp";
const STATE_DIR: &str = ".srcgrab";
const NARINFO_SUFFIX: &str = ".narinfo";

/// Paths under one cache root.
#[derive(Debug, Clone)]
pub struct DiskLayout {
    root: PathBuf,
    temp: PathBuf,
}

impl DiskLayout {
    pub fn new(root: &Path) -> DiskLayout {
        DiskLayout {
            root: root.to_path_buf(),
            temp: root.join(TEMP_DIR),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cache_info(&self) -> PathBuf {
        self.root.join(CACHE_INFO)
    }

    pub fn nar_dir(&self) -> PathBuf {
        self.root.join(NAR_DIR)
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.root.join(MIRROR_DIR)
    }

    /// Temp files and directories: on the cache's filesystem, so placing one is a rename.
    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    /// Downloads kept between runs to be resumed.
    pub fn partial_dir(&self) -> PathBuf {
        self.temp.join("partial")
    }

    /// srcgrab's own state, which no substituter serves.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Where `srcgrab verify` records the blake3 of every file that passed.
    pub fn blake3_index(&self) -> PathBuf {
        self.state_dir().join("blake3-index")
    }

    /// The lock stripe a store path's items are published under ([`super::lock`]).
    pub fn lock_file(&self, hash_part: &str) -> PathBuf {
        self.locks_dir().join(super::lock::stripe(hash_part))
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.state_dir().join("locks")
    }

    /// The seal of `rel`, a file under the root ([`super::seal`]).
    pub fn seal(&self, rel: &Path) -> PathBuf {
        self.state_dir().join("seals").join(rel)
    }

    /// The git repositories fetches clone into, unless told otherwise.
    pub fn git_dir(&self) -> PathBuf {
        self.state_dir().join("git")
    }

    /// Whether a top-level directory is srcgrab's own (temp files, state), not cache items.
    pub fn is_private_dir(name: &str) -> bool {
        name == TEMP_DIR || name == STATE_DIR
    }

    /// `<hashpart>.narinfo`, relative to the root.
    pub fn narinfo_name(hash_part: &str) -> String {
        format!("{hash_part}{NARINFO_SUFFIX}")
    }

    /// The hash part of a top-level file name when it is a narinfo's.
    pub fn narinfo_hash_part(name: &str) -> Option<&str> {
        name.strip_suffix(NARINFO_SUFFIX)
    }

    pub fn narinfo(&self, hash_part: &str) -> PathBuf {
        self.root.join(Self::narinfo_name(hash_part))
    }

    /// The narinfo `URL:` of a NAR file with this FileHash and compression.
    pub fn nar_url(file_hash: &Hash, compression: Compression) -> NarUrl {
        NarUrl::new(&format!(
            "{NAR_DIR}/{}.nar{}",
            file_hash.to_nix32(),
            compression.extension()
        ))
        .expect("nar/<nix32>.nar<ext> is a relative path")
    }

    /// Whether `rel` (relative to the root) is a NAR file's place.
    pub fn is_in_nar_dir(rel: &Path) -> bool {
        rel.parent() == Some(Path::new(NAR_DIR))
    }

    /// Whether a top-level name is a directory of items (`nar/`, `sha256/`), which must be a
    /// real directory: a symlink there would make every item reach outside the root.
    pub fn is_item_dir(name: &str) -> bool {
        name == NAR_DIR || name == MIRROR_DIR
    }

    /// `sha256/<hex>`, relative to the root.
    pub fn mirror_file_name(sha256_hex: &str) -> PathBuf {
        Path::new(MIRROR_DIR).join(sha256_hex)
    }

    /// Whether `rel` (relative to the root) is a hashed-mirror file's place.
    pub fn is_in_mirror_dir(rel: &Path) -> bool {
        rel.parent() == Some(Path::new(MIRROR_DIR))
    }

    /// Whether a name in `sha256/` is a mirror file's (64 hex digits); the others there are
    /// keys (`sha256/<nix32>`, `sha256/<sri>`).
    pub fn is_mirror_file_name(name: &str) -> bool {
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// `<algo>/<hex>`: the key every flat entry is found by (for sha256, the file itself).
    pub fn mirror_key_name(hash: &Hash) -> PathBuf {
        Path::new(hash.algo.name()).join(hash.to_hex())
    }
}

/// The algorithm a mirror key (relative to the root) is of: `<algo>/...` or a top-level
/// `<algo>-<base64>`; `None` for a name no publish makes.
pub fn mirror_key_algo(key: &str) -> Option<HashAlgo> {
    let dir = key
        .split_once('/')
        .and_then(|(dir, _)| HashAlgo::from_name(dir));
    dir.or_else(|| HashAlgo::from_name(key.split_once('-')?.0))
}

/// A key as a path, one level per non-empty component (a base64 `//` is one directory, as
/// it is on disk).
pub fn normal_key(key: &str) -> PathBuf {
    Path::new(key).components().collect()
}

/// The relative symlink target from `key` (a path under the root) to `sha256/<hex>`.
pub(super) fn mirror_link_target(key: &str, sha256_hex: &str) -> PathBuf {
    // Components, not slashes: a base64 `//` makes one directory level, not two.
    let depth = Path::new(key).components().count().saturating_sub(1);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join(DiskLayout::mirror_file_name(sha256_hex))
}

/// Every mirror key (relative path) a fetcher may ask for, besides `sha256/<hex>` itself.
pub(super) fn mirror_keys(digests: &ContentDigests) -> Vec<String> {
    digests.all().flat_map(keys_of_hash).collect()
}

/// The mirror keys of one of a file's hashes.
pub(super) fn keys_of_hash(hash: &Hash) -> Vec<String> {
    let algo = hash.algo.name();
    let mut keys = Vec::new();
    if hash.algo != HashAlgo::Sha256 {
        keys.push(format!("{algo}/{}", hash.to_hex()));
    }
    keys.push(format!("{algo}/{}", hash.to_nix32()));
    keys.push(hash.to_sri());
    keys.push(format!("{algo}/{}", hash.to_sri()));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hashing::ContentHashes;

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
