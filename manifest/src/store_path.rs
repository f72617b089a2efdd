//! Store paths of fixed outputs, computed the way Nix does, so a path can be checked
//! against the hash that claims to produce it without asking Nix.

use crate::hash::{Hash, HashAlgo, HashMode};
use crate::nixbase32;

pub const STORE_DIR: &str = "/nix/store";

/// Length of the base-32 hash part of a store path.
pub const HASH_PART_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is not a store path: it must be {STORE_DIR}/<32-char hash>-<name>")]
    NotAStorePath(String),
    #[error("store path name '{0}' has a character Nix does not allow")]
    BadName(String),
}

/// A parsed `/nix/store/<hash>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    pub hash_part: String,
    pub name: String,
}

impl StorePath {
    pub fn parse(path: &str) -> Result<StorePath, StorePathError> {
        let bad = || StorePathError::NotAStorePath(path.to_string());
        let base = path
            .strip_prefix(STORE_DIR)
            .and_then(|p| p.strip_prefix('/'))
            .ok_or_else(bad)?;
        if base.len() < HASH_PART_LEN + 2 || base.as_bytes()[HASH_PART_LEN] != b'-' {
            return Err(bad());
        }
        let (hash_part, name) = (&base[..HASH_PART_LEN], &base[HASH_PART_LEN + 1..]);
        if nixbase32::decode(hash_part, 20).is_none() {
            return Err(bad());
        }
        check_name(name)?;
        Ok(StorePath {
            hash_part: hash_part.to_string(),
            name: name.to_string(),
        })
    }

    pub fn to_path_string(&self) -> String {
        format!("{STORE_DIR}/{}-{}", self.hash_part, self.name)
    }
}

/// Nix allows `[A-Za-z0-9+\-._?=]` in names, not starting with a dot.
pub fn check_name(name: &str) -> Result<(), StorePathError> {
    let ok = !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(StorePathError::BadName(name.to_string()))
    }
}

/// XOR-folds a digest into `size` bytes, as Nix's `compressHash`.
fn compress_hash(digest: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, b) in digest.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

fn make_store_path(kind: &str, inner_hex: &str, name: &str) -> StorePath {
    let fingerprint = format!("{kind}:sha256:{inner_hex}:{STORE_DIR}:{name}");
    let digest = HashAlgo::Sha256.digest(fingerprint.as_bytes());
    StorePath {
        hash_part: nixbase32::encode(&compress_hash(&digest, 20)),
        name: name.to_string(),
    }
}

/// The output path of a fixed-output derivation (no references), as `makeFixedOutputPath`.
pub fn fixed_output_path(name: &str, mode: HashMode, hash: &Hash) -> StorePath {
    if mode == HashMode::Recursive && hash.algo == HashAlgo::Sha256 {
        return make_store_path("source", &hash.to_hex(), name);
    }
    let prefix = if mode == HashMode::Recursive {
        "r:"
    } else {
        ""
    };
    let inner = format!("fixed:out:{prefix}{}:{}:", hash.algo, hash.to_hex());
    let inner_hex = crate::hash::encode_hex(&HashAlgo::Sha256.digest(inner.as_bytes()));
    make_store_path("output:out", &inner_hex, name)
}

/// The `CA:` value of a narinfo for a fixed output: `fixed:[r:]<algo>:<nix32>`.
pub fn content_address(mode: HashMode, hash: &Hash) -> String {
    let prefix = if mode == HashMode::Recursive {
        "r:"
    } else {
        ""
    };
    format!("fixed:{prefix}{}:{}", hash.algo, hash.to_nix32())
}

/// Parses a `CA:` value written by [`content_address`] (or by Nix).
pub fn parse_content_address(ca: &str) -> Option<(HashMode, Hash)> {
    let rest = ca.strip_prefix("fixed:")?;
    let (mode, rest) = match rest.strip_prefix("r:") {
        Some(r) => (HashMode::Recursive, r),
        None => (HashMode::Flat, rest),
    };
    let hash = Hash::parse(rest, None).ok()?;
    Some((mode, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_store_paths() {
        let p = StorePath::parse("/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv").unwrap();
        assert_eq!(p.hash_part, "97qlv6h78lxlm9zc8849ahsbcklhsi2y");
        assert_eq!(p.name, "x.drv");
        assert_eq!(
            p.to_path_string(),
            "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv"
        );
        for bad in [
            "/nix/store/short-x",
            "/tmp/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x",
            "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2e-x",
            "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-a/b",
            "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-.hidden",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad}");
        }
    }

    /// Expected paths printed by `nix-store --add-fixed [--recursive] ALGO` (Nix 2.8).
    #[test]
    fn fixed_output_paths_match_nix() {
        let empty = Hash::parse(
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            None,
        )
        .unwrap();
        assert_eq!(
            fixed_output_path("empty", HashMode::Flat, &empty).to_path_string(),
            "/nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty"
        );
        let dir = Hash::parse(
            "sha256:1jpg5v8rcf4d08rlpq51vnd1w800l64h34r0bw4vkb6z3qlk089k",
            None,
        )
        .unwrap();
        assert_eq!(
            fixed_output_path("d", HashMode::Recursive, &dir).to_path_string(),
            "/nix/store/hh0jwqmsbfc93z2prvb2x6qin9ir4mj1-d"
        );
        let dir_sha1 = Hash::parse("sha1:e5be857c417aef45f57cf09fbc42afda089ab4d1", None).unwrap();
        assert_eq!(
            fixed_output_path("d", HashMode::Recursive, &dir_sha1).to_path_string(),
            "/nix/store/vvv95ls996yqnjwwgrv7f76bgnf3d74p-d"
        );
    }

    #[test]
    fn content_address_round_trips() {
        let h = Hash::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", None).unwrap();
        for mode in [HashMode::Flat, HashMode::Recursive] {
            let ca = content_address(mode, &h);
            assert_eq!(parse_content_address(&ca), Some((mode, h.clone())));
        }
        assert_eq!(
            content_address(HashMode::Recursive, &h),
            "fixed:r:sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }
}
