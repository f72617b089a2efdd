//! Content addresses of fixed outputs, the narinfo `CA:` field: `fixed:[r:]<algo>:<nix32>`.
//! A narinfo with one is accepted by Nix unsigned, since the path follows from the content.

use std::fmt;
use std::str::FromStr;

use crate::hash::{Hash, HashError, HashMode};
use crate::store_path::{fixed_output_path, StorePath, StorePathName};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentAddressError {
    #[error("content address '{0}' is not of a fixed output (expected 'fixed:[r:]<algo>:<hash>')")]
    NotFixed(String),
    #[error("content address '{text}': {source}")]
    BadHash {
        text: String,
        #[source]
        source: HashError,
    },
}

/// How a fixed output is addressed: its mode and the hash of its file or NAR.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentAddress {
    pub mode: HashMode,
    pub hash: Hash,
}

impl ContentAddress {
    /// The store path this content has under `name`.
    pub fn store_path(&self, name: &StorePathName) -> StorePath {
        fixed_output_path(name, self)
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.mode {
            HashMode::Recursive => "r:",
            HashMode::Flat => "",
        };
        write!(
            f,
            "fixed:{prefix}{}:{}",
            self.hash.algo,
            self.hash.to_nix32()
        )
    }
}

impl FromStr for ContentAddress {
    type Err = ContentAddressError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix("fixed:")
            .ok_or_else(|| ContentAddressError::NotFixed(text.to_string()))?;
        let (mode, rest) = match rest.strip_prefix("r:") {
            Some(r) => (HashMode::Recursive, r),
            None => (HashMode::Flat, rest),
        };
        let hash = Hash::parse(rest, None).map_err(|source| ContentAddressError::BadHash {
            text: text.to_string(),
            source,
        })?;
        Ok(ContentAddress { mode, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_modes() {
        let hash =
            Hash::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", None).unwrap();
        for mode in [HashMode::Flat, HashMode::Recursive] {
            let ca = ContentAddress {
                mode,
                hash: hash.clone(),
            };
            assert_eq!(ca.to_string().parse::<ContentAddress>(), Ok(ca));
        }
        let ca = ContentAddress {
            mode: HashMode::Recursive,
            hash,
        };
        assert_eq!(
            ca.to_string(),
            "fixed:r:sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn refuses_other_addresses() {
        assert!(matches!(
            "text:sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
                .parse::<ContentAddress>(),
            Err(ContentAddressError::NotFixed(_))
        ));
        assert!(matches!(
            "fixed:r:sha256:zz".parse::<ContentAddress>(),
            Err(ContentAddressError::BadHash { .. })
        ));
    }
}
