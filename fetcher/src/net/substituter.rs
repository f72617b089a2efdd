//! Upstream binary caches (cache.nixos.org, or `--substituter`): look up the entry's
//! narinfo, download its NAR, and publish it only after every check passed: FileSize and
//! FileHash of the download, NarSize and NarHash of the decompressed stream (checked as it
//! flows, before the last byte reaches the cache), and the content address against the
//! entry (the cache's `publish_nar`). A substituter whose copy fails any check is skipped
//! for that entry, with the reason recorded. With `keep_upstream_compression` the downloaded
//! file itself becomes the cache's NAR file (`Cache::publish_compressed_nar`): its NAR is
//! still decompressed and checked against the declared content address, which pins NarHash.

use srcgrab_formats::hash::Hash;
use srcgrab_formats::store_path::StorePath;
use srcgrab_manifest::Entry;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::net::Error;
use crate::net::{Downloaded, Downloader, Target};
use crate::store::{decompressor, Cache, Published};
use srcgrab_formats::narinfo::{Compression, NarInfo};

/// What one substituter gave for one entry.
#[derive(Debug)]
pub enum Substitution {
    /// It has no narinfo for the path.
    Absent,
    /// It has one, but its copy was not accepted (why).
    Rejected(String),
    Published(Published),
}

/// Narinfo lookups failing in a row (after their retries) before a substituter is taken
/// as unreachable and no longer asked, as Nix disables a failing substituter.
const MAX_CONSECUTIVE_ERRORS: u32 = 5;

/// A binary cache to take NARs from.
#[derive(Debug)]
pub struct Substituter {
    base: String,
    consecutive_errors: AtomicU32,
}

impl Substituter {
    pub fn new(url: &str) -> Substituter {
        Substituter {
            base: url.trim_end_matches('/').to_string(),
            consecutive_errors: AtomicU32::new(0),
        }
    }

    /// Whether lookups failed so often in a row that asking again is pointless.
    pub fn is_disabled(&self) -> bool {
        self.consecutive_errors.load(Ordering::Relaxed) >= MAX_CONSECUTIVE_ERRORS
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Fetches `entry` from this substituter into `cache`. Only a failure of our own side
    /// that should stop the run (a full disk) is an `Err`; everything the substituter does
    /// wrong is a `Rejected`.
    pub async fn substitute(
        &self,
        downloader: &Downloader,
        cache: &Arc<Cache>,
        entry: &Entry,
        tally: &AtomicU64,
    ) -> Result<Substitution, Error> {
        match self.try_substitute(downloader, cache, entry, tally).await {
            Ok(substitution) => Ok(substitution),
            Err(err) if err.is_disk_full() => Err(err),
            Err(err) => Ok(Substitution::Rejected(err.to_string())),
        }
    }

    async fn try_substitute(
        &self,
        downloader: &Downloader,
        cache: &Arc<Cache>,
        entry: &Entry,
        tally: &AtomicU64,
    ) -> Result<Substitution, Error> {
        if self.is_disabled() {
            return Ok(Substitution::Absent);
        }
        let lookup = downloader.get_narinfo(&self.base, &entry.store_path).await;
        // Only a look-up that got no answer counts against the substituter, not a bad one.
        if matches!(lookup, Err(ref err) if !matches!(err, Error::BadUpstream { .. })) {
            self.consecutive_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
        let Some((info, _)) = lookup? else {
            return Ok(Substitution::Absent);
        };
        if let Some(reason) = mismatch(&info, entry) {
            return Ok(Substitution::Rejected(reason));
        }
        let downloaded = fetch_nar(downloader, &self.base, &info, tally).await?;
        let keep = cache.options().keep_upstream_compression;
        let published = match info.compression {
            compression if keep => {
                let (cache, entry, file) = (cache.clone(), entry.clone(), downloaded.path.clone());
                let (verified, nar_size) = (downloaded.verified.clone(), info.nar_size);
                tokio::task::spawn_blocking(move || {
                    cache.publish_compressed_nar(&entry, &file, compression, verified, nar_size)
                })
                .await
                .map_err(Error::task("publishing"))
                .and_then(|published| Ok(published?))
            }
            _ => {
                publish_nar_file(
                    cache.clone(),
                    entry.clone(),
                    downloaded.path.clone(),
                    info.compression,
                    Some((info.nar_size, info.nar_hash.clone())),
                )
                .await
            }
        };
        downloaded.remove();
        published.map(Substitution::Published)
    }
}

/// Downloads the NAR file `info` names at the binary cache `base`: checked against its
/// FileHash on the way, and its FileSize at the end.
pub async fn fetch_nar(
    downloader: &Downloader,
    base: &str,
    info: &NarInfo,
    tally: &AtomicU64,
) -> Result<Downloaded, Error> {
    let url = format!("{base}/{}", info.url);
    let key = format!("nar {} {url}", info.store_path);
    let target = Target {
        key: &key,
        label: info.store_path.name().as_str(),
        hash: info.file_hash.as_ref(),
        size: info.file_size,
    };
    let downloaded = downloader.fetch(&url, &target, tally).await?;
    if let Some(size) = info.file_size.filter(|size| *size != downloaded.size) {
        downloaded.remove();
        return Err(Error::BadUpstream {
            reason: format!("{} bytes, narinfo says FileSize {size}", downloaded.size),
            what: url,
        });
    }
    Ok(downloaded)
}

/// Why a narinfo of `entry`'s path cannot describe `entry`, if it cannot.
fn mismatch(info: &NarInfo, entry: &Entry) -> Option<String> {
    if !info.references.is_empty() {
        return Some(format!(
            "narinfo lists references ({}), a fixed output has none",
            info.references
                .iter()
                .map(StorePath::base_name)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let ca = info.ca.as_ref()?;
    (*ca != entry.hash).then(|| {
        format!(
            "narinfo CA {ca} differs from the entry's {}",
            entry.hash.hash.to_sri()
        )
    })
}

/// Decompresses a downloaded NAR file and publishes it (on a blocking thread), checking
/// NarSize/NarHash on the way when the narinfo gave them.
pub async fn publish_nar_file(
    cache: Arc<Cache>,
    entry: Entry,
    file: std::path::PathBuf,
    compression: Compression,
    check: Option<(u64, Hash)>,
) -> Result<Published, Error> {
    tokio::task::spawn_blocking(move || {
        let opened = open_for_reading(&file)?;
        let buffered = io::BufReader::with_capacity(256 * 1024, opened);
        let reader = decompressor(compression, buffered).map_err(|e| Error::BadUpstream {
            what: file.display().to_string(),
            reason: format!("{compression}: {e}"),
        })?;
        Ok(match check {
            Some((size, hash)) => cache.publish_nar_described(&entry, &mut { reader }, size, &hash),
            None => cache.publish_nar(&entry, &mut { reader }),
        }?)
    })
    .await
    .map_err(Error::task("publishing"))?
}

fn open_for_reading(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))
}
