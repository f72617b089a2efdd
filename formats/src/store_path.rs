//! Store paths, computed the way Nix does, so a path can be checked against the hash that
//! claims to produce it without asking Nix. Each type is validated when it is made, so code
//! holding one never parses it again.

use std::fmt;
use std::str::FromStr;

use crate::content_address::ContentAddress;
use crate::hash::{encode_hex, HashAlgo, HashMode};
use crate::nixbase32;

pub const STORE_DIR: &str = "/nix/store";

/// Length of the base-32 hash part of a store path.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix accepts (`StorePath::MaxPathLen` less the hash part and the dash).
const MAX_NAME_LEN: usize = 211;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is not a store path: it must be {STORE_DIR}/<32-char hash>-<name>")]
    NotAStorePath(String),
    #[error("store path name '{0}' has a character Nix does not allow")]
    BadName(String),
    #[error("'{0}' is not a derivation path (a store path ending in .drv)")]
    NotADerivation(String),
}

/// The name part of a store path: `[A-Za-z0-9+\-._?=]`, not starting with a dot, at most
/// 211 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePathName(String);

impl StorePathName {
    pub fn new(name: &str) -> Result<StorePathName, StorePathError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c));
        if ok {
            Ok(StorePathName(name.to_string()))
        } else {
            Err(StorePathError::BadName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePathName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StorePathName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A parsed `/nix/store/<hash>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    hash_part: String,
    name: StorePathName,
}

impl StorePath {
    pub fn parse(path: &str) -> Result<StorePath, StorePathError> {
        let base = path
            .strip_prefix(STORE_DIR)
            .and_then(|p| p.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotAStorePath(path.to_string()))?;
        StorePath::from_base_name(base).map_err(|e| match e {
            StorePathError::NotAStorePath(_) => StorePathError::NotAStorePath(path.to_string()),
            other => other,
        })
    }

    /// Parses `<hash>-<name>`, the form of narinfo `References:` and `Deriver:`.
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        let bad = || StorePathError::NotAStorePath(base.to_string());
        if base.len() < HASH_PART_LEN + 2 || base.as_bytes()[HASH_PART_LEN] != b'-' {
            return Err(bad());
        }
        let (hash_part, name) = (&base[..HASH_PART_LEN], &base[HASH_PART_LEN + 1..]);
        if nixbase32::decode(hash_part, 20).is_none() {
            return Err(bad());
        }
        Ok(StorePath {
            hash_part: hash_part.to_string(),
            name: StorePathName::new(name)?,
        })
    }

    /// The 32 base-32 characters that name the path in a binary cache (`<hash>.narinfo`).
    pub fn hash_part(&self) -> &str {
        &self.hash_part
    }

    pub fn name(&self) -> &StorePathName {
        &self.name
    }

    /// `<hash>-<name>`, without the store directory.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash_part, self.name)
    }

    pub fn to_path_string(&self) -> String {
        format!("{STORE_DIR}/{}-{}", self.hash_part, self.name)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash_part, self.name)
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}

/// The store path of a derivation (`….drv`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DrvPath(StorePath);

impl DrvPath {
    pub fn parse(path: &str) -> Result<DrvPath, StorePathError> {
        let store_path = StorePath::parse(path)?;
        if !store_path.name.as_str().ends_with(".drv") {
            return Err(StorePathError::NotADerivation(path.to_string()));
        }
        Ok(DrvPath(store_path))
    }

    pub fn store_path(&self) -> &StorePath {
        &self.0
    }
}

impl fmt::Display for DrvPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DrvPath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DrvPath::parse(s)
    }
}

/// Store paths travel as their full text in JSON (manifests, reports).
macro_rules! serde_as_string {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_string!(StorePath);
serde_as_string!(DrvPath);

/// XOR-folds a digest into `size` bytes, as Nix's `compressHash`.
fn compress_hash(digest: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, b) in digest.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

fn make_store_path(kind: &str, inner_hex: &str, name: &StorePathName) -> StorePath {
    let fingerprint = format!("{kind}:sha256:{inner_hex}:{STORE_DIR}:{name}");
    let digest = HashAlgo::Sha256.digest(fingerprint.as_bytes());
    StorePath {
        hash_part: nixbase32::encode(&compress_hash(&digest, 20)),
        name: name.clone(),
    }
}

/// The output path of a fixed-output derivation (no references), as `makeFixedOutputPath`.
pub fn fixed_output_path(name: &StorePathName, ca: &ContentAddress) -> StorePath {
    let ContentAddress { mode, hash } = ca;
    if *mode == HashMode::Recursive && hash.algo == HashAlgo::Sha256 {
        return make_store_path("source", &hash.to_hex(), name);
    }
    let prefix = if *mode == HashMode::Recursive {
        "r:"
    } else {
        ""
    };
    let inner = format!("fixed:out:{prefix}{}:{}:", hash.algo, hash.to_hex());
    let inner_hex = encode_hex(&HashAlgo::Sha256.digest(inner.as_bytes()));
    make_store_path("output:out", &inner_hex, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;

    #[test]
    fn parses_and_prints_store_paths() {
        let p = StorePath::parse("/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv").unwrap();
        assert_eq!(p.hash_part(), "97qlv6h78lxlm9zc8849ahsbcklhsi2y");
        assert_eq!(p.name().as_str(), "x.drv");
        assert_eq!(
            p.to_path_string(),
            "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv"
        );
        assert_eq!(p.to_string(), p.to_path_string());
        assert_eq!(p.base_name(), "97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv");
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

    #[test]
    fn derivation_paths_end_in_drv() {
        let drv = DrvPath::parse("/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv").unwrap();
        assert_eq!(drv.store_path().name().as_str(), "x.drv");
        assert_eq!(
            DrvPath::parse("/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x"),
            Err(StorePathError::NotADerivation(
                "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x".into()
            ))
        );
    }

    #[test]
    fn store_paths_are_json_strings() {
        let p = StorePath::parse("/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x\"");
        assert_eq!(serde_json::from_str::<StorePath>(&json).unwrap(), p);
        assert!(serde_json::from_str::<StorePath>("\"/tmp/x\"").is_err());
    }

    /// Expected paths printed by `nix-store --add-fixed [--recursive] ALGO` (Nix 2.8).
    #[test]
    fn fixed_output_paths_match_nix() {
        let path = |name: &str, mode, hash: &str| {
            let ca = ContentAddress {
                mode,
                hash: Hash::parse(hash, None).unwrap(),
            };
            fixed_output_path(&StorePathName::new(name).unwrap(), &ca).to_path_string()
        };
        assert_eq!(
            path(
                "empty",
                HashMode::Flat,
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
            ),
            "/nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty"
        );
        assert_eq!(
            path(
                "d",
                HashMode::Recursive,
                "sha256:1jpg5v8rcf4d08rlpq51vnd1w800l64h34r0bw4vkb6z3qlk089k"
            ),
            "/nix/store/hh0jwqmsbfc93z2prvb2x6qin9ir4mj1-d"
        );
        assert_eq!(
            path(
                "d",
                HashMode::Recursive,
                "sha1:e5be857c417aef45f57cf09fbc42afda089ab4d1"
            ),
            "/nix/store/vvv95ls996yqnjwwgrv7f76bgnf3d74p-d"
        );
    }
}
