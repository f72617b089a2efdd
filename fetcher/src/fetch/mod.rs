//! The fetch orchestrator: takes every manifest entry to the cache, or says why it could not.
//!
//! Per entry, in order: already present → nothing to do; upstream binary caches (NARs checked
//! end to end); then natively by kind: `url` and `builtin` download the file (configured
//! hashed mirrors first, as Nix does), `url-unpack` downloads and unpacks with fetchzip
//! semantics (falling back to the entry's git source when it has one); `builtin` with
//! `unpack` downloads a NAR; `git` is checked out through shared mirrors ([`crate::git`]).
//! Hg, svn and other kinds, and entries whose content cannot be made to match the hash (a
//! `postFetch` step, unusual unpacking), need Nix's builder: with `--builder nix` they (and
//! every other entry the native paths could not verify) are realised by Nix
//! ([`crate::builder`]); otherwise they are reported with the command to run.
//!
//! Entries run concurrently (bounded), each on its own task; only a full disk stops the run.

use futures_util::StreamExt;
use srcgrab_manifest::{Entry, GitSource, HashMode, Kind, Unpack};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::builder::NixBuilder;
use crate::error::TaskFailed;
use crate::git::{forge_git_source, GitFetcher};
use crate::net;
use crate::net::substituter::{publish_nar_file, Substituter, Substitution};
use crate::net::{rewrite, DownloadOptions, Downloaded, Downloader, Rewrite, Target};
use crate::report::{EntryReport, FetchEvent, FetchReporter, How, Outcome, Rejection, Report};
use crate::store::{self, Cache, Compression, Published};
use crate::Error;

mod fallback;
mod native;

use fallback::needs_builder;

/// Nix's default substituter, asked first unless told otherwise.
pub const DEFAULT_SUBSTITUTER: &str = "https://cache.nixos.org";

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Binary caches to ask first, in order.
    pub substituters: Vec<String>,
    /// Hashed mirrors (`<mirror>/<algo>/<hex>`), tried before an entry's own URLs.
    pub hashed_mirrors: Vec<String>,
    /// URL prefix rewrites, applied to every URL.
    pub rewrites: Vec<Rewrite>,
    pub download: DownloadOptions,
    /// Entries worked on at once: narinfo lookups in flight plus transfers waiting for a
    /// slot. Higher than `download.jobs` so lookups overlap with downloads.
    pub entries_in_flight: usize,
    /// Where the shared git mirrors live (one bare repository per URL); by default
    /// `<cache>/.srcgrab/git`.
    pub git_mirrors: Option<std::path::PathBuf>,
    /// Git checkouts at once.
    pub git_jobs: usize,
    /// Realise what srcgrab cannot make with Nix's own builder (`--builder nix`).
    pub builder: Option<NixBuilder>,
    /// Nix builds at once.
    pub builder_jobs: usize,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            substituters: vec![DEFAULT_SUBSTITUTER.to_string()],
            hashed_mirrors: Vec::new(),
            rewrites: Vec::new(),
            download: DownloadOptions::default(),
            entries_in_flight: 256,
            git_mirrors: None,
            git_jobs: 4,
            builder: None,
            builder_jobs: 2,
        }
    }
}

struct Run {
    cache: Arc<Cache>,
    downloader: Downloader,
    substituters: Vec<Substituter>,
    hashed_mirrors: Vec<String>,
    rewrites: Vec<Rewrite>,
    /// The git fetcher, or why there is none (no git installed).
    git: Result<Arc<GitFetcher>, String>,
    git_slots: Arc<tokio::sync::Semaphore>,
    builder: Option<NixBuilder>,
    builder_slots: Arc<tokio::sync::Semaphore>,
    progress: Arc<FetchReporter>,
    step_ids: AtomicU64,
}

/// Fetches every entry into `cache`. Returns the report of every entry, in the order given.
/// A fatal error (a full disk) stops the run: the report then says why in `stopped` and
/// holds the entries finished before; whatever was published stays. `Err` only when the
/// run cannot start.
pub async fn fetch(
    entries: &[Entry],
    cache: Arc<Cache>,
    options: FetchOptions,
    progress: Arc<FetchReporter>,
) -> Result<Report, Error> {
    let partial_dir = cache.disk().partial_dir();
    let git_mirrors = options
        .git_mirrors
        .clone()
        .unwrap_or_else(|| cache.disk().git_dir());
    let git = GitFetcher::new(&git_mirrors, options.rewrites.clone())
        .map(Arc::new)
        .map_err(|err| err.to_string());
    let run = Arc::new(Run {
        git,
        git_slots: Arc::new(tokio::sync::Semaphore::new(options.git_jobs.max(1))),
        builder: options.builder.clone(),
        builder_slots: Arc::new(tokio::sync::Semaphore::new(options.builder_jobs.max(1))),
        downloader: Downloader::new(options.download, &partial_dir, progress.clone())?,
        progress: progress.clone(),
        step_ids: AtomicU64::new(0),
        cache,
        substituters: options
            .substituters
            .iter()
            .map(|s| Substituter::new(s))
            .collect(),
        hashed_mirrors: options.hashed_mirrors,
        rewrites: options.rewrites,
    });
    progress.report(FetchEvent::Start {
        entries: entries.len() as u64,
    });
    let mut reports: Vec<Option<EntryReport>> = vec![None; entries.len()];
    let mut tasks = futures_util::stream::iter(entries.iter().cloned().enumerate())
        .map(|(index, entry)| {
            let run = run.clone();
            tokio::spawn(async move { (index, run.fetch_entry(entry).await) })
        })
        .buffer_unordered(options.entries_in_flight.max(1));
    let mut for_builder = Vec::new();
    let mut stopped = collect(&mut tasks, |index, report, builder_may_help| {
        if builder_may_help && run.builder.is_some() {
            for_builder.push((index, report));
        } else {
            progress.report(FetchEvent::EntryDone(&report));
            reports[index] = Some(report);
        }
    })
    .await;
    drop(tasks);
    // The builder runs once every native fetch is done, so a build whose inputs are entries
    // too (a vendor FOD and its source) finds them in the cache ([`NixBuilder`] passes it
    // as a substituter).
    if stopped.is_some() {
        for (index, report) in for_builder.drain(..) {
            reports[index] = Some(report);
        }
    } else if !for_builder.is_empty() {
        let mut builds = futures_util::stream::iter(for_builder)
            .map(|(index, mut report)| {
                let run = run.clone();
                let entry = entries[index].clone();
                tokio::spawn(async move {
                    let native = report.outcome.clone();
                    let built = run.or_builder(&entry, native, &mut report).await;
                    let result = built.map(|outcome| {
                        report.outcome = outcome;
                        (report, false)
                    });
                    (index, result)
                })
            })
            .buffer_unordered(options.builder_jobs.max(1));
        stopped = collect(&mut builds, |index, report, _| {
            progress.report(FetchEvent::EntryDone(&report));
            reports[index] = Some(report);
        })
        .await;
    }
    // After a fatal stop every entry is still in the report: those not reached say so.
    let not_reached = || Outcome::Failed {
        reason: "not reached".into(),
        detail: stopped.clone().unwrap_or_default(),
    };
    let entry_reports = reports
        .into_iter()
        .zip(entries)
        .map(|(report, entry)| report.unwrap_or_else(|| EntryReport::new(entry, not_reached())))
        .collect();
    let mut report = Report::new(entry_reports);
    report.stopped = stopped;
    report.hosts = run.downloader.host_reports();
    Ok(report)
}

type EntryTask = Result<(usize, Result<(EntryReport, bool), Error>), tokio::task::JoinError>;

/// Hands every finished entry (its report, and whether the builder may still make it) to
/// `done`; returns why the run stopped when a fatal error came back.
async fn collect(
    tasks: &mut (impl futures_util::Stream<Item = EntryTask> + Unpin),
    mut done: impl FnMut(usize, EntryReport, bool),
) -> Option<String> {
    while let Some(joined) = tasks.next().await {
        match joined
            .map_err(Error::task("fetch"))
            .and_then(|(index, result)| Ok((index, result?)))
        {
            Ok((index, (report, builder_may_help))) => done(index, report, builder_may_help),
            Err(fatal) => return Some(fatal.to_string()),
        }
    }
    None
}

fn closed() -> Error {
    Error::TaskFailed(TaskFailed {
        task: "fetch",
        reason: "worker slots closed".into(),
    })
}

/// Runs cache work (hashing, compressing, unpacking) off the async threads.
async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Error>
where
    Error: From<E>,
{
    let done = tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::task("fetch"))?;
    Ok(done?)
}

impl Run {
    /// The entry's report after the native paths, and whether the builder may still make it.
    async fn fetch_entry(&self, entry: Entry) -> Result<(EntryReport, bool), Error> {
        let mut report = EntryReport::new(&entry, Outcome::Present);
        if !self.cache.wants(&entry) {
            report.outcome = Outcome::Skipped {
                reason: "the cache layout has no place for it (a mirror holds flat files only)"
                    .into(),
            };
            return Ok((report, false));
        }
        // Held until the entry is done, so another process working on the same cache waits
        // here and then finds the entry present; partial downloads of the entry are only
        // touched under it.
        let cache = self.cache.clone();
        let checked = entry.clone();
        let present = blocking(move || -> Result<_, store::Error> {
            let lock = cache.lock_item(&checked)?;
            let present = cache.is_present(&checked)?;
            if present {
                cache.restore_mirror_keys(&checked)?;
            }
            Ok((lock, present))
        })
        .await;
        let _lock = match present {
            Ok((_, true)) => return Ok((report, false)),
            Ok((lock, false)) => lock,
            Err(err) if err.is_fatal() => return Err(err),
            Err(err) => {
                report.outcome = Outcome::Failed {
                    reason: "cache".into(),
                    detail: err.to_string(),
                };
                return Ok((report, false));
            }
        };
        let tally = AtomicU64::new(0);
        let outcome = self.obtain(&entry, &mut report, &tally).await;
        report.bytes_downloaded = tally.load(Ordering::Relaxed);
        report.outcome = outcome?;
        let builder_may_help = matches!(
            report.outcome,
            Outcome::NeedsBuilder { .. } | Outcome::Failed { .. }
        );
        Ok((report, builder_may_help))
    }

    async fn obtain(
        &self,
        entry: &Entry,
        report: &mut EntryReport,
        tally: &AtomicU64,
    ) -> Result<Outcome, Error> {
        for substituter in &self.substituters {
            match substituter
                .substitute(&self.downloader, &self.cache, entry, tally)
                .await?
            {
                Substitution::Absent => {}
                Substitution::Rejected(reason) => report.rejected.push(Rejection {
                    substituter: substituter.url().to_string(),
                    reason,
                }),
                Substitution::Published(published) => {
                    report.bytes_written = published.file_size;
                    return Ok(Outcome::Fetched {
                        how: How::Substituter,
                        from: substituter.url().to_string(),
                    });
                }
            }
        }
        let native = match entry.kind {
            Kind::Url | Kind::Builtin => self.fetch_native(entry, report, tally).await?,
            Kind::UrlUnpack => {
                let outcome = self.fetch_native(entry, report, tally).await?;
                // A forge archive (fetchFromGitHub) that did not give the entry: its git
                // source may, when the archive was merely unavailable.
                let source = entry
                    .git
                    .clone()
                    .or_else(|| entry.urls.iter().find_map(|url| forge_git_source(url)));
                match (&outcome, source) {
                    (Outcome::Fetched { .. }, _) | (_, None) => outcome,
                    (_, Some(source)) => match self.fetch_git(entry, source, report).await? {
                        fetched @ Outcome::Fetched { .. } => fetched,
                        _ => outcome,
                    },
                }
            }
            Kind::Git => match entry.git.clone() {
                Some(source) => self.fetch_git(entry, source, report).await?,
                None => Outcome::Failed {
                    reason: "no git source".into(),
                    detail: "the manifest gives no git URL for this entry".into(),
                },
            },
            Kind::Hg | Kind::Svn => needs_builder(
                entry,
                format!("srcgrab does not fetch {} sources itself", entry.kind),
            ),
            Kind::Derived => needs_builder(
                entry,
                "made by Nix's builder from other entries, without the network: works offline with --builder nix",
            ),
            Kind::Other => needs_builder(
                entry,
                "made by Nix's builder with the network (vendor hash or custom fetcher): build it before going offline, or get it from a substituter",
            ),
        };
        Ok(native)
    }
}
