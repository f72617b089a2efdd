//! Helpers the maintenance commands (diff, stats, verify, export, import, ingest) share:
//! reading a manifest with a one-line error, and printing sizes.

use anyhow::Context as _;
use rayon::prelude::*;
use srcgrab_fetcher::narinfo::NarInfo;
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

/// The sizes a cache's narinfos record, by store path.
#[derive(Debug, Default)]
pub struct CacheSizes {
    by_store_path: HashMap<String, NarSizes>,
}

#[derive(Debug, Clone, Copy)]
pub struct NarSizes {
    /// Compressed NAR size: what the cache holds and a bundle carries.
    pub file_size: Option<u64>,
    /// Uncompressed NAR size: what the store will hold.
    pub nar_size: u64,
}

impl CacheSizes {
    /// Reads `<cache>/<hash>.narinfo` of each entry, in parallel. Entries the cache lacks, or
    /// whose narinfo does not parse, simply have no size (`srcgrab verify` reports those).
    pub fn read<'a>(
        cache: &Path,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> anyhow::Result<CacheSizes> {
        anyhow::ensure!(
            cache.is_dir(),
            "cache {} is not a directory",
            cache.display()
        );
        let paths: Vec<&str> = entries.map(|e| e.store_path.as_str()).collect();
        let by_store_path = paths
            .into_par_iter()
            .filter_map(|path| {
                let hash_part = StorePath::parse(path).ok()?.hash_part;
                let text =
                    std::fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).ok()?;
                let info = NarInfo::parse(&text).ok()?;
                let sizes = NarSizes {
                    file_size: info.file_size,
                    nar_size: info.nar_size,
                };
                Some((path.to_string(), sizes))
            })
            .collect();
        Ok(CacheSizes { by_store_path })
    }

    pub fn get(&self, entry: &Entry) -> Option<NarSizes> {
        self.by_store_path.get(&entry.store_path).copied()
    }

    /// The compressed size (the NAR size for an uncompressed cache).
    pub fn file_size(&self, entry: &Entry) -> Option<u64> {
        self.get(entry).map(|s| s.file_size.unwrap_or(s.nar_size))
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
