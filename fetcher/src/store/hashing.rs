//! Hashing adapters: the hashes one pass over a file's bytes or a NAR must give, and the
//! readers and writers that feed them on the way.

use std::io::{self, Read, Write};
use std::sync::mpsc;

use srcgrab_formats::hash::{Hash, HashAlgo, Hasher};

/// Passes bytes through to `inner`, hashing (sha256) and counting them on the way.
/// Without a hasher it only counts: an uncompressed NAR file's hash is the NarHash.
pub(super) struct HashingWriter<W: Write> {
    pub(super) inner: W,
    pub(super) hasher: Option<Hasher>,
    pub(super) size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W, hash: bool) -> Self {
        HashingWriter {
            inner,
            hasher: hash.then(|| Hasher::new(HashAlgo::Sha256)),
            size: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The hashes of a flat file's bytes the mirror and the entry's check need.
#[derive(Clone)]
pub(super) struct ContentHashes {
    /// Absent when `known` is the sha256.
    sha256: Option<Hasher>,
    sha512: Option<Hasher>,
    /// The declared algorithm when it is neither of the above.
    pub(super) other: Option<Hasher>,
    /// A hash taken of these bytes already ([`VerifiedHash`]), not computed again.
    pub(super) known: Option<Hash>,
}

pub(super) struct ContentDigests {
    pub(super) sha256: Hash,
    sha512: Option<Hash>,
    other: Option<Hash>,
}

impl ContentHashes {
    /// sha256 (the mirror's file name) and the declared algorithm.
    pub(super) fn new(declared: HashAlgo) -> Self {
        Self::knowing(declared, None)
    }

    /// As [`ContentHashes::new`], less the algorithm of `known`, whose digest is taken as is.
    pub(super) fn knowing(declared: HashAlgo, known: Option<Hash>) -> Self {
        let wanted = |algo: HashAlgo| known.as_ref().is_none_or(|k| k.algo != algo);
        ContentHashes {
            sha256: wanted(HashAlgo::Sha256).then(|| Hasher::new(HashAlgo::Sha256)),
            sha512: (declared == HashAlgo::Sha512 && wanted(declared))
                .then(|| Hasher::new(HashAlgo::Sha512)),
            other: (matches!(declared, HashAlgo::Md5 | HashAlgo::Sha1) && wanted(declared))
                .then(|| Hasher::new(declared)),
            known,
        }
    }

    /// Whether any hashing is left to do.
    pub(super) fn hashes_anything(&self) -> bool {
        self.sha256.is_some() || self.sha512.is_some() || self.other.is_some()
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(h) = &mut self.other {
            h.update(data);
        }
    }

    pub(super) fn finish(self) -> ContentDigests {
        let known = |algo: HashAlgo| self.known.clone().filter(|k| k.algo == algo);
        let sha256 = match self.sha256 {
            Some(h) => h.finalize(),
            None => known(HashAlgo::Sha256).expect("sha256 is hashed unless known"),
        };
        let sha512 = self
            .sha512
            .map(Hasher::finalize)
            .or(known(HashAlgo::Sha512));
        let other = self
            .other
            .map(Hasher::finalize)
            .or(known(HashAlgo::Md5))
            .or(known(HashAlgo::Sha1));
        ContentDigests {
            sha256,
            sha512,
            other,
        }
    }
}

impl ContentDigests {
    /// The digests of a published mirror file whose sha256 and declared hash are known.
    pub(super) fn of_known(sha256: Hash, declared: Hash) -> ContentDigests {
        let (sha512, other) = match declared.algo {
            HashAlgo::Sha256 => (None, None),
            HashAlgo::Sha512 => (Some(declared), None),
            _ => (None, Some(declared)),
        };
        ContentDigests {
            sha256,
            sha512,
            other,
        }
    }

    pub(super) fn get(&self, algo: HashAlgo) -> Option<&Hash> {
        match algo {
            HashAlgo::Sha256 => Some(&self.sha256),
            HashAlgo::Sha512 => self.sha512.as_ref(),
            _ => self.other.as_ref().filter(|h| h.algo == algo),
        }
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Hash> {
        std::iter::once(&self.sha256)
            .chain(self.sha512.as_ref())
            .chain(self.other.as_ref())
    }
}

/// Files at least this big are hashed on a helper thread.
pub(super) const BACKGROUND_HASHING_FROM: u64 = 4 << 20;

/// [`ContentHashes`] fed inline, or, for a big file, on a helper thread: then one publish
/// uses a second core for the bytes' sha256 (+ sha512) while this thread builds, hashes and
/// compresses the NAR. Chunks are copied into the channel; a copy is cheap next to a hash.
pub(super) enum ContentHasher {
    Inline(Box<ContentHashes>),
    Background {
        chunks: mpsc::SyncSender<Vec<u8>>,
        worker: std::thread::JoinHandle<ContentHashes>,
    },
}

impl ContentHasher {
    pub(super) fn new(hashes: ContentHashes, expected_len: u64) -> Self {
        if expected_len < BACKGROUND_HASHING_FROM {
            return ContentHasher::Inline(Box::new(hashes));
        }
        let (chunks, received) = mpsc::sync_channel::<Vec<u8>>(16);
        let mut background = hashes.clone();
        let spawned = std::thread::Builder::new()
            .name("srcgrab-hash".into())
            .spawn(move || {
                for chunk in received {
                    background.update(&chunk);
                }
                background
            });
        match spawned {
            Ok(worker) => ContentHasher::Background { chunks, worker },
            // No thread to be had (resource limits): hash inline, just slower.
            Err(_) => ContentHasher::Inline(Box::new(hashes)),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Inline(hashes) => hashes.update(data),
            ContentHasher::Background { chunks, .. } => {
                // The worker only stops when the channel closes, so sending cannot fail.
                let _ = chunks.send(data.to_vec());
            }
        }
    }

    pub(super) fn finish(self) -> ContentDigests {
        match self {
            ContentHasher::Inline(hashes) => hashes.finish(),
            ContentHasher::Background { chunks, worker } => {
                drop(chunks);
                match worker.join() {
                    Ok(hashes) => hashes.finish(),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

/// A reader that feeds what it reads into hashers (a [`ContentHasher`] unless told
/// otherwise), so one pass over a file both uses its bytes and hashes them.
pub(super) struct HashingReader<'a, R: Read, H: Write = ContentHasher> {
    pub(super) inner: R,
    pub(super) hashes: &'a mut H,
}

impl<R: Read, H: Write> Read for HashingReader<'_, R, H> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hashes.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) struct CountingReader<R: Read> {
    pub(super) inner: R,
    pub(super) count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Passes at most `limit` bytes of a NAR through and fails the read that would go past it:
/// a NAR from a substituter is never longer than its narinfo's NarSize, so a decompression
/// bomb (a few hundred KiB of xz claiming NarSize 5000) is refused at byte NarSize + 1,
/// before the rest of it reaches the disk.
pub(super) struct NarSizeBound<R: Read> {
    pub(super) inner: R,
    pub(super) limit: u64,
    pub(super) seen: u64,
}

impl<R: Read> Read for NarSizeBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than allowed is enough to tell.
        let room = (self.limit - self.seen).saturating_add(1);
        let wanted = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..wanted])?;
        self.seen += n as u64;
        if self.seen > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the NAR is longer than its NarSize {}", self.limit),
            ));
        }
        Ok(n)
    }
}
