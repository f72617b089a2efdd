//! Partial downloads on disk: `<key>.part` with a `<key>.meta` beside it saying what the
//! bytes are a prefix of (URL, validators, length, and for ranges what each holds).

use serde::{Deserialize, Serialize};
use srcgrab_formats::hash::{encode_hex, HashAlgo};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::retry::Attempt;
use super::Downloader;
use crate::net::Error;
use crate::store::{HashedWrites, VerifiedHash};

/// Beside a partial file: what it is a prefix of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartialMeta {
    pub(super) url: String,
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
    /// The full length, when the server said.
    pub(super) length: Option<u64>,
    /// For a download in ranges: the ranges and how much of each is on disk. Empty for a
    /// download in one stream, whose file is then a prefix of the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) segments: Vec<Segment>,
}

/// One range `[start, end)` of a segmented download, of which `done` bytes from `start`
/// are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Segment {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) done: u64,
}

impl Segment {
    pub(super) fn next_byte(&self) -> u64 {
        self.start + self.done
    }

    pub(super) fn is_complete(&self) -> bool {
        self.next_byte() >= self.end
    }
}

impl PartialMeta {
    /// What to send as `If-Range`: a strong ETag, else the date.
    pub(super) fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// A partial download: the file holds `len` bytes and `hasher` (when known) has seen them.
pub(super) struct Partial {
    pub(super) part: PathBuf,
    pub(super) meta_path: PathBuf,
    pub(super) meta: PartialMeta,
    pub(super) len: u64,
    pub(super) hasher: Option<HashedWrites>,
    pub(super) algo: HashAlgo,
    /// Whether some bytes came from an earlier response (so a bad hash may be a bad splice).
    pub(super) spliced: bool,
    /// Set once splitting failed or gave a wrong hash: the rest of this download is one stream.
    pub(super) single_stream: bool,
    /// The most bytes the download may have.
    pub(super) cap: u64,
    /// The size something said beforehand (a narinfo's FileSize): enough to schedule the
    /// download by, so no HEAD is sent to learn it.
    pub(super) expected: Option<u64>,
    /// The download's id in progress reports.
    pub(super) progress_id: u64,
    /// The length servers announced, for the deadline, which cannot look into `meta`
    /// while a try runs (0: none yet).
    pub(super) announced: Arc<AtomicU64>,
}

impl Partial {
    /// Takes over what an earlier run left for `url` when it can be validated, else starts empty.
    pub(super) fn load(
        part: PathBuf,
        meta_path: PathBuf,
        url: &str,
        algo: HashAlgo,
        progress_id: u64,
    ) -> Partial {
        let meta: Option<PartialMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let usable = meta.filter(|m| {
            m.url == url
                && m.validator().is_some()
                && m.length.is_none_or(|total| len <= total)
                && (m.segments.is_empty() || m.length.is_some())
        });
        let (meta, len) = match usable {
            Some(meta) => (meta, len),
            None => {
                let _ = std::fs::remove_file(&part);
                let _ = std::fs::remove_file(&meta_path);
                (PartialMeta::default(), 0)
            }
        };
        Partial {
            part,
            meta_path,
            meta,
            len,
            hasher: (len == 0).then(|| HashedWrites::new(algo)),
            algo,
            spliced: false,
            single_stream: false,
            cap: u64::MAX,
            expected: None,
            progress_id,
            announced: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes `meta` (from a HEAD or an answer) as what the bytes are a prefix of.
    pub(super) fn describe(&mut self, meta: PartialMeta) {
        self.announced
            .store(meta.length.unwrap_or(0), Ordering::Relaxed);
        self.meta = meta;
    }

    /// Bytes of the content on disk: the prefix, or what every range holds.
    pub(super) fn bytes_on_disk(&self) -> u64 {
        if self.is_segmented() {
            self.meta.segments.iter().map(|s| s.done).sum()
        } else {
            self.len
        }
    }

    pub(super) fn is_segmented(&self) -> bool {
        !self.meta.segments.is_empty()
    }

    pub(super) fn reset(&mut self) {
        self.len = 0;
        self.hasher = Some(HashedWrites::new(self.algo));
        self.spliced = false;
        self.meta.segments.clear();
    }

    pub(super) fn discard(&mut self) {
        self.reset();
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(&self.meta_path);
    }

    pub(super) fn save_meta(&self) -> Result<(), Error> {
        write_meta(&self.meta_path, &self.meta)
    }

    /// Hashes the bytes already on disk (left by an earlier run) so appending can continue.
    pub(super) async fn ensure_hasher(&mut self) -> Result<(), Error> {
        if self.hasher.is_some() {
            return Ok(());
        }
        let part = self.part.clone();
        let (algo, len) = (self.algo, self.len);
        let hashed = tokio::task::spawn_blocking(move || {
            HashedWrites::resume(&part, algo, len)
                .map_err(Error::io(format!("reading {}", part.display())))
        })
        .await
        .map_err(Error::task("hashing"))??;
        self.hasher = Some(hashed);
        Ok(())
    }

    /// The hash of the whole file, once every byte went through the hasher.
    pub(super) fn seal(&self) -> Result<VerifiedHash, Attempt> {
        self.hasher
            .clone()
            .expect("hasher ready")
            .seal(&self.part)
            .map_err(|e| Attempt::Local(Error::io(format!("checking {}", self.part.display()))(e)))
    }
}

/// Replaces the meta file whole (write, then rename), so a killed run never leaves half of one.
pub(super) fn write_meta(path: &Path, meta: &PartialMeta) -> Result<(), Error> {
    let text = serde_json::to_vec(meta).expect("meta serialises");
    let fresh = path.with_extension("meta-new");
    std::fs::write(&fresh, text)
        .and_then(|()| std::fs::rename(&fresh, path))
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Partial downloads untouched this long belong to runs long gone (a download that is
/// alive writes them often), and are removed with their range metadata.
pub(super) const STALE_PARTIAL_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes the `.part`, `.meta` and `.meta-new` files under `dir` not modified for `age`.
pub(super) fn clean_stale_partials(dir: &Path, age: Duration) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for item in listing.flatten() {
        let path = item.path();
        let ours = path
            .extension()
            .is_some_and(|e| e == "part" || e == "meta" || e == "meta-new");
        // symlink_metadata: a planted link is judged (and removed) as itself.
        let stale = std::fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|idle| idle >= age));
        if ours && stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

impl Downloader {
    pub(super) fn partial_stem(&self, key: &str) -> PathBuf {
        self.partial_dir
            .join(&encode_hex(&HashAlgo::Sha256.digest(key.as_bytes()))[..32])
    }

    /// Forgets what a download under `key` left behind (once its entry came from elsewhere).
    pub fn discard_partial(&self, key: &str) {
        let stem = self.partial_stem(key);
        let _ = std::fs::remove_file(stem.with_extension("part"));
        let _ = std::fs::remove_file(stem.with_extension("meta"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_partials_and_their_metadata_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
        for name in ["old.part", "old.meta", "old.meta-new", "other.txt"] {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            file.set_modified(long_ago).unwrap();
        }
        for name in ["fresh.part", "fresh.meta"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        clean_stale_partials(dir.path(), STALE_PARTIAL_AGE);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh.meta", "fresh.part", "other.txt"]);
    }
}
