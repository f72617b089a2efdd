//! Helpers the maintenance commands (diff, stats, verify, export, import, ingest) share:
//! reading a manifest with a one-line error, and printing sizes.

use anyhow::Context as _;
use rayon::prelude::*;
use srcgrab_fetcher::store::regular_file::{self, SmallFile, MAX_NARINFO};
use srcgrab_fetcher::store::DiskLayout;
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_manifest::{Entry, Manifest, StorePath};
use std::collections::HashMap;
use std::path::Path;

/// Reads and validates a manifest; the error names the file and says what is wrong in one
/// line (bad JSON with its line and column, an unsupported version, a bad entry).
pub fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading manifest {}", path.display()))?;
    Manifest::from_json(&text).with_context(|| format!("manifest {}", path.display()))
}

/// What is known of one entry's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Compressed NAR size (what the cache holds and a bundle carries), or for a probed
    /// entry the download's Content-Length.
    pub file_size: Option<u64>,
    /// Uncompressed NAR size: what the store will hold.
    pub nar_size: Option<u64>,
}

impl Sizes {
    /// The size on the wire or in the cache; the NAR size when nothing else is known.
    pub fn compressed(&self) -> Option<u64> {
        self.file_size.or(self.nar_size)
    }
}

/// Sizes by store path.
pub type PathSizes = HashMap<StorePath, Sizes>;

/// Sizes from `<cache>/<hash>.narinfo` of each of `paths` the cache has, read in parallel.
/// A narinfo is read only as a small regular file (a FIFO or a link to /dev/zero there is
/// no size); one that is missing or does not parse gives none (`srcgrab verify` reports it).
pub fn sizes_in_cache(cache: &Path, paths: &[&StorePath]) -> PathSizes {
    paths
        .par_iter()
        .filter_map(|&path| {
            let narinfo = cache.join(DiskLayout::narinfo_name(path.hash_part()));
            let SmallFile::Text(text) = regular_file::read_small(&narinfo, MAX_NARINFO).ok()?
            else {
                return None;
            };
            let info = NarInfo::parse(&text).ok()?;
            let sizes = Sizes {
                file_size: info.file_size,
                nar_size: Some(info.nar_size),
            };
            Some((path.clone(), sizes))
        })
        .collect()
}

/// Entry sizes by store path, from a cache's narinfos, a fetch report or a probe.
#[derive(Debug, Default)]
pub struct EntrySizes {
    by_store_path: PathSizes,
}

impl EntrySizes {
    /// [`sizes_in_cache`] of the entries.
    pub fn from_cache<'a>(
        cache: &Path,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> anyhow::Result<EntrySizes> {
        anyhow::ensure!(
            cache.is_dir(),
            "cache {} is not a directory",
            cache.display()
        );
        let paths: Vec<&StorePath> = entries.map(|e| &e.store_path).collect();
        Ok(EntrySizes {
            by_store_path: sizes_in_cache(cache, &paths),
        })
    }

    /// Reads a `srcgrab fetch --report` file: the bytes each fetched entry wrote into the
    /// cache (else the bytes it downloaded). Entries that were already present have neither.
    pub fn from_fetch_report(path: &Path) -> anyhow::Result<EntrySizes> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading fetch report {}", path.display()))?;
        let report: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("fetch report {}", path.display()))?;
        let entries = report["entries"]
            .as_array()
            .with_context(|| format!("fetch report {}: no \"entries\" list", path.display()))?;
        let by_store_path = entries
            .iter()
            .filter_map(|e| {
                let positive = |key: &str| e[key].as_u64().filter(|n| *n > 0);
                let size = positive("bytesWritten").or_else(|| positive("bytesDownloaded"))?;
                let sizes = Sizes {
                    file_size: Some(size),
                    nar_size: None,
                };
                Some((e["storePath"].as_str()?.parse().ok()?, sizes))
            })
            .collect();
        Ok(EntrySizes { by_store_path })
    }

    pub fn insert(&mut self, store_path: StorePath, sizes: Sizes) {
        self.by_store_path.insert(store_path, sizes);
    }

    /// Adds what `other` knows of entries this does not know.
    pub fn fill_from(&mut self, other: EntrySizes) {
        for (path, sizes) in other.by_store_path {
            self.by_store_path.entry(path).or_insert(sizes);
        }
    }

    pub fn get(&self, entry: &Entry) -> Option<Sizes> {
        self.by_store_path.get(&entry.store_path).copied()
    }

    pub fn file_size(&self, entry: &Entry) -> Option<u64> {
        self.get(entry).and_then(|s| s.compressed())
    }
}

/// Writes a command's output; a closed pipe (`| head`) ends the output quietly instead of
/// panicking as `print!` would.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `1.5 MiB`-style sizes for people; exact byte counts go in JSON output.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn prints_sizes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
