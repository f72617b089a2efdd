//! The on-disk layout: where each kind of item lives under the cache root.

use std::path::{Path, PathBuf};

use srcgrab_manifest::hash::HashAlgo;

use super::hashing::ContentDigests;
use super::Cache;

/// The relative symlink target from `key` (a path under the root) to `sha256/<hex>`.
pub(super) fn mirror_link_target(key: &str, sha256_hex: &str) -> PathBuf {
    // Components, not slashes: a base64 `//` makes one directory level, not two.
    let depth = Path::new(key).components().count().saturating_sub(1);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join("sha256").join(sha256_hex)
}

/// Every mirror key (relative path) a fetcher may ask for, besides `sha256/<hex>` itself.
pub(super) fn mirror_keys(digests: &ContentDigests) -> Vec<String> {
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
    pub(super) fn narinfo_path(&self, hash_part: &str) -> PathBuf {
        self.root.join(format!("{hash_part}.narinfo"))
    }
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
