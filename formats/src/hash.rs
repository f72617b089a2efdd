//! Content hashes as Nix writes them: algorithms, the flat/recursive mode of a fixed
//! output, and the textual forms (hex, Nix base-32, base64, SRI) that Nix accepts.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::fmt;

use crate::nixbase32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub const ALL: [HashAlgo; 4] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<HashAlgo> {
        HashAlgo::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize().bytes
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a fixed output is hashed: the file's bytes (`flat`) or the NAR of the tree (`recursive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashMode {
    Flat,
    Recursive,
}

/// Incremental hasher over any of the algorithms Nix supports.
#[derive(Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finalize(self) -> Hash {
        let (algo, bytes) = match self {
            Hasher::Md5(h) => (HashAlgo::Md5, h.finalize().to_vec()),
            Hasher::Sha1(h) => (HashAlgo::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (HashAlgo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashAlgo::Sha512, h.finalize().to_vec()),
        };
        Hash { algo, bytes }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgo(String),
    #[error("'{0}' is not a valid {1} hash (hex, Nix base-32, base64 or SRI)")]
    BadEncoding(String, HashAlgo),
    #[error("'{0}' names no hash algorithm (expected e.g. 'sha256-…' or 'sha256:…')")]
    NoAlgo(String),
}

/// A digest together with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash {
    pub algo: HashAlgo,
    pub bytes: Vec<u8>,
}

impl Hash {
    /// Parses the digest part alone, in any encoding Nix accepts for `algo`:
    /// hex, Nix base-32, or (padded) base64, told apart by length as Nix does.
    pub fn parse_digest(algo: HashAlgo, text: &str) -> Result<Hash, HashError> {
        let bad = || HashError::BadEncoding(text.to_string(), algo);
        let size = algo.size();
        let bytes = if text.len() == size * 2 {
            decode_hex(text).ok_or_else(bad)?
        } else if text.len() == nixbase32::encoded_len(size) {
            nixbase32::decode(text, size).ok_or_else(bad)?
        } else {
            let b = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad())?;
            if b.len() != size {
                return Err(bad());
            }
            b
        };
        Ok(Hash { algo, bytes })
    }

    /// Parses `algo-base64` (SRI), `algo:digest` (Nix's prefixed form), or a bare digest
    /// when `default_algo` is given (e.g. `outputHashAlgo` beside `outputHash`).
    pub fn parse(text: &str, default_algo: Option<HashAlgo>) -> Result<Hash, HashError> {
        for sep in ['-', ':'] {
            if let Some((name, rest)) = text.split_once(sep) {
                if let Some(algo) = HashAlgo::from_name(name) {
                    if sep == '-' {
                        let b = base64::engine::general_purpose::STANDARD
                            .decode(rest)
                            .map_err(|_| HashError::BadEncoding(text.to_string(), algo))?;
                        if b.len() != algo.size() {
                            return Err(HashError::BadEncoding(text.to_string(), algo));
                        }
                        return Ok(Hash { algo, bytes: b });
                    }
                    return Hash::parse_digest(algo, rest);
                }
                if sep == ':' {
                    return Err(HashError::UnknownAlgo(name.to_string()));
                }
            }
        }
        match default_algo {
            Some(algo) => Hash::parse_digest(algo, text),
            None => Err(HashError::NoAlgo(text.to_string())),
        }
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.bytes)
    }

    pub fn to_nix32(&self) -> String {
        nixbase32::encode(&self.bytes)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }

    /// `sha256-<base64>`, the form nixpkgs writes in `hash = …`.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, self.to_base64())
    }

    /// `sha256:<nix32>`, the form of narinfo `NarHash`/`FileHash`.
    pub fn to_nix32_prefixed(&self) -> String {
        format!("{}:{}", self.algo, self.to_nix32())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256_HEX: &str =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_every_encoding_to_the_same_hash() {
        let hex = Hash::parse(&format!("sha256:{EMPTY_SHA256_HEX}"), None).unwrap();
        let nix32 = Hash::parse(
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            None,
        )
        .unwrap();
        let sri = Hash::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", None).unwrap();
        let bare = Hash::parse(EMPTY_SHA256_HEX, Some(HashAlgo::Sha256)).unwrap();
        assert_eq!(hex, nix32);
        assert_eq!(hex, sri);
        assert_eq!(hex, bare);
        assert_eq!(hex.bytes, HashAlgo::Sha256.digest(b""));
        assert_eq!(sri.to_hex(), EMPTY_SHA256_HEX);
        assert_eq!(
            hex.to_sri(),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn rejects_malformed_hashes() {
        assert_eq!(
            Hash::parse("blake9:abc", None),
            Err(HashError::UnknownAlgo("blake9".into()))
        );
        assert!(matches!(
            Hash::parse("sha256-abc", None),
            Err(HashError::BadEncoding(..))
        ));
        assert!(matches!(
            Hash::parse("sha256:zz", None),
            Err(HashError::BadEncoding(..))
        ));
        assert!(matches!(
            Hash::parse("abcd", None),
            Err(HashError::NoAlgo(..))
        ));
    }

    #[test]
    fn streaming_equals_one_shot() {
        for algo in HashAlgo::ALL {
            let mut h = algo.hasher();
            h.update(b"hello ");
            h.update(b"world");
            assert_eq!(h.finalize().bytes, algo.digest(b"hello world"), "{algo}");
        }
    }
}
