//! Mirrors store paths and their whole References closure from upstream binary caches:
//! every path is looked up in the substituters in order, its NAR downloaded (resumable,
//! through the shared [`Downloader`]) and published by [`crate::store::binary`], and its references
//! queued as soon as its narinfo is read, so lookups of the next level overlap the
//! downloads of this one. A path no substituter has is reported with the path that
//! referenced it, never dropped; only a full disk stops the run.

use serde::Serialize;
use srcgrab_formats::store_path::StorePath;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;

use crate::net::substituter::fetch_nar;
use crate::net::{DownloadOptions, Downloader};
use crate::report::{FetchEvent, FetchReporter, HostReport, Rejection};
use crate::store::binary::{references, NarFile, NarInfoText};
use crate::store::{Cache, Compression};
use crate::Error;

#[derive(Debug, Clone)]
pub struct ClosureOptions {
    /// Binary caches to ask, in order.
    pub substituters: Vec<String>,
    /// Recompress NARs to this; `None` keeps each as upstream compressed it (the
    /// signature covers the NAR, not the file, so either way Nix accepts the copy).
    pub recompress: Option<Compression>,
    pub download: DownloadOptions,
    /// Paths worked on at once (lookups in flight plus downloads waiting for a slot): more
    /// than a host's look-up ceiling plus its transfers, so the per-host rules, not this,
    /// decide how many requests are out. Each holds its item lock open, so no more than a
    /// quarter of the process's open-file limit are.
    pub paths_in_flight: usize,
}

impl Default for ClosureOptions {
    fn default() -> ClosureOptions {
        ClosureOptions {
            substituters: Vec::new(),
            recompress: None,
            download: DownloadOptions::default(),
            paths_in_flight: 1024,
        }
    }
}

/// The final state of one store path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum PathOutcome {
    /// Already complete in the cache.
    Present,
    /// Published during this run, from this substituter.
    Mirrored { from: String },
    /// No substituter has a narinfo for it.
    Missing,
    /// Some substituter has it (or could not be asked), but no copy verified: see `rejected`.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathReport {
    pub store_path: String,
    #[serde(flatten)]
    pub outcome: PathOutcome,
    /// The path whose References brought this one in; absent for a path asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referenced_by: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
    /// Of the NAR file in the cache, when it is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nar_size: Option<u64>,
    /// Body bytes received for it, failed attempts included.
    pub bytes_downloaded: u64,
}

impl PathReport {
    fn new(path: &StorePath, referenced_by: Option<String>) -> PathReport {
        PathReport {
            store_path: path.to_path_string(),
            outcome: PathOutcome::Missing,
            referenced_by,
            rejected: Vec::new(),
            file_size: None,
            nar_size: None,
            bytes_downloaded: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(
            self.outcome,
            PathOutcome::Present | PathOutcome::Mirrored { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClosureReport {
    /// Why the run stopped early (a full disk); `paths` then holds what finished before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub hosts: Vec<HostReport>,
    /// Sorted by store path.
    pub paths: Vec<PathReport>,
}

impl ClosureReport {
    /// Whether every path of the closure is in the cache (exit status 0).
    pub fn all_done(&self) -> bool {
        self.stopped.is_none() && self.paths.iter().all(PathReport::is_done)
    }

    /// Whether the closure of every path that was had is complete: only paths asked for may
    /// be missing (a manifest's outputs Hydra did not build; their sources cover them).
    pub fn closures_complete(&self) -> bool {
        self.stopped.is_none()
            && self.paths.iter().all(|p| {
                p.is_done() || (p.outcome == PathOutcome::Missing && p.referenced_by.is_none())
            })
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("report serialises");
        text.push('\n');
        text
    }
}

struct Run {
    cache: Arc<Cache>,
    downloader: Downloader,
    substituters: Vec<String>,
    recompress: Option<Compression>,
}

/// A path to take, and the path that referenced it.
type Pending = (StorePath, Option<String>);

/// Mirrors `roots` and everything they reference into `cache`.
pub async fn mirror_closure(
    roots: &[StorePath],
    cache: Arc<Cache>,
    options: ClosureOptions,
    progress: Arc<FetchReporter>,
) -> Result<ClosureReport, Error> {
    let partial_dir = cache.disk().partial_dir();
    let run = Arc::new(Run {
        downloader: Downloader::new(options.download, &partial_dir, progress.clone())?,
        cache,
        substituters: options
            .substituters
            .iter()
            .map(|s| s.trim_end_matches('/').to_string())
            .collect(),
        recompress: options.recompress,
    });
    let mut seen = HashSet::new();
    let mut pending: VecDeque<Pending> = roots
        .iter()
        .filter(|root| seen.insert(root.hash_part().to_string()))
        .map(|root| (root.clone(), None))
        .collect();
    let in_flight = options.paths_in_flight.min(lock_budget()).max(1);
    let mut tasks = JoinSet::new();
    let mut paths = Vec::new();
    let mut stopped = None;
    while stopped.is_none() && !(pending.is_empty() && tasks.is_empty()) {
        while tasks.len() < in_flight {
            let Some((path, referenced_by)) = pending.pop_front() else {
                break;
            };
            let run = run.clone();
            tasks.spawn(async move { run.take(path, referenced_by).await });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined
            .map_err(Error::task("mirroring"))
            .and_then(|taken| taken)
        {
            Ok((report, references)) => {
                for reference in references {
                    if seen.insert(reference.hash_part().to_string()) {
                        pending.push_back((reference, Some(report.store_path.clone())));
                    }
                }
                progress.report(FetchEvent::PathDone(&report));
                paths.push(report);
            }
            Err(fatal) => stopped = Some(fatal.to_string()),
        }
    }
    tasks.abort_all();
    paths.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    Ok(ClosureReport {
        stopped,
        hosts: run.downloader.host_reports(),
        paths,
    })
}

/// Each path in flight holds its lock file open: at most a quarter of the files the process
/// may open, so the rest stays for connections and partial downloads.
fn lock_budget() -> usize {
    rlimit::Resource::NOFILE.get().map_or(256, |(soft, _)| {
        usize::try_from(soft / 4).unwrap_or(usize::MAX)
    })
}

impl Run {
    /// One path: already there, or from the first substituter whose copy verifies. Returns
    /// its report and the paths it references (none when it could not be had).
    async fn take(
        &self,
        path: StorePath,
        referenced_by: Option<String>,
    ) -> Result<(PathReport, Vec<StorePath>), Error> {
        let mut report = PathReport::new(&path, referenced_by);
        let cache = self.cache.clone();
        let wanted = path.clone();
        // Held from the presence check to the publish, the download's partial file included
        // (see `Cache::lock_item`): another process mirroring the same path waits, then finds it.
        let (_lock, present) = tokio::task::spawn_blocking(move || {
            let lock = cache.lock_store_path(&wanted)?;
            let present = cache.published_binary(&wanted)?;
            Ok::<_, Error>((lock, present))
        })
        .await
        .map_err(Error::task("mirroring"))??;
        if let Some(NarInfoText { info, .. }) = present {
            report.outcome = PathOutcome::Present;
            report.file_size = info.file_size;
            report.nar_size = Some(info.nar_size);
            return Ok((report, references(&info)));
        }
        for substituter in &self.substituters {
            let tally = AtomicU64::new(0);
            let taken = self.take_from(substituter, &path, &tally).await;
            report.bytes_downloaded += tally.load(Ordering::Relaxed);
            match taken {
                Ok(None) => {}
                Ok(Some((file, references))) => {
                    report.outcome = PathOutcome::Mirrored {
                        from: substituter.clone(),
                    };
                    report.file_size = Some(file.file_size);
                    report.nar_size = Some(file.nar_size);
                    return Ok((report, references));
                }
                Err(err) if err.is_fatal() => return Err(err),
                Err(err) => report.rejected.push(Rejection {
                    substituter: substituter.clone(),
                    reason: err.to_string(),
                }),
            }
        }
        if !report.rejected.is_empty() {
            report.outcome = PathOutcome::Failed;
        }
        Ok((report, Vec::new()))
    }

    /// `Ok(None)` when `substituter` has no narinfo for `path`.
    async fn take_from(
        &self,
        substituter: &str,
        path: &StorePath,
        tally: &AtomicU64,
    ) -> Result<Option<(NarFile, Vec<StorePath>)>, Error> {
        let Some((info, text)) = self.downloader.get_narinfo(substituter, path).await? else {
            return Ok(None);
        };
        let references = references(&info);
        let downloaded = fetch_nar(&self.downloader, substituter, &info, tally).await?;
        let (cache, file, verified) = (
            self.cache.clone(),
            downloaded.path.clone(),
            downloaded.verified.clone(),
        );
        let recompress = self.recompress;
        let published = tokio::task::spawn_blocking(move || {
            cache.publish_binary(&NarInfoText { info, text }, &file, verified, recompress)
        })
        .await
        .map_err(Error::task("mirroring"))
        .and_then(|published| Ok(published?));
        downloaded.remove();
        Ok(Some((published?, references)))
    }
}
