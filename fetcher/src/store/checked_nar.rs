//! A NAR stream checked against its narinfo as it flows, for NARs whose NarHash the
//! publish does not compute itself (a binary's, or a NarHash of another algorithm than sha256).

use std::io::{self, Read};

use srcgrab_formats::hash::{Hash, Hasher};

/// Passes a NAR through while checking it against the narinfo's NarSize and NarHash. The
/// read that would complete a NAR with the wrong hash fails instead, so a cache consuming
/// this reader never commits it.
pub(crate) struct CheckedNar<R> {
    inner: R,
    hasher: Hasher,
    seen: u64,
    size: u64,
    hash: Hash,
}

impl<R: Read> CheckedNar<R> {
    pub(crate) fn new(inner: R, size: u64, hash: Hash) -> CheckedNar<R> {
        CheckedNar {
            inner,
            hasher: hash.algo.hasher(),
            seen: 0,
            size,
            hash,
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl<R: Read> Read for CheckedNar<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.seen != self.size {
                return Err(invalid(format!(
                    "NAR ends after {} bytes, narinfo says NarSize {}",
                    self.seen, self.size
                )));
            }
            return Ok(0);
        }
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(invalid(format!(
                "NAR is longer than its NarSize {}",
                self.size
            )));
        }
        self.hasher.update(&buf[..n]);
        if self.seen == self.size {
            let got = self.hasher.clone().finalize();
            if got != self.hash {
                return Err(invalid(format!(
                    "NarHash mismatch: narinfo says {}, NAR has {}",
                    self.hash.to_nix32_prefixed(),
                    got.to_nix32_prefixed()
                )));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use srcgrab_formats::hash::HashAlgo;

    fn sha256(bytes: &[u8]) -> Hash {
        Hash {
            algo: HashAlgo::Sha256,
            bytes: HashAlgo::Sha256.digest(bytes),
        }
    }

    fn read_all(reader: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Small reads, so the check happens on a read boundary like a real consumer's.
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn checked_nar_passes_the_declared_stream_and_refuses_others() {
        let nar = b"a stand-in for NAR bytes, any length".to_vec();
        let good = &mut CheckedNar::new(&nar[..], nar.len() as u64, sha256(&nar));
        assert_eq!(read_all(good).unwrap(), nar);

        let err = read_all(&mut CheckedNar::new(
            &nar[..],
            nar.len() as u64,
            sha256(b"x"),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("NarHash mismatch"), "{err}");
        let err = read_all(&mut CheckedNar::new(
            &nar[..],
            nar.len() as u64 + 1,
            sha256(&nar),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("NAR ends after"), "{err}");
        let err = read_all(&mut CheckedNar::new(
            &nar[..],
            nar.len() as u64 - 1,
            sha256(&nar[..nar.len() - 1]),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("longer than its NarSize"), "{err}");
    }
}
