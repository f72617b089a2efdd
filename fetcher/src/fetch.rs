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
use crate::git::{forge_git_source, GitFetcher};
use crate::net::substituter::{publish_nar_file, Substituter, Substitution};
use crate::net::{rewrite, DownloadOptions, Downloaded, Downloader, Rewrite, Target};
use crate::report::{EntryReport, How, Outcome, Progress, Rejection, Report};
use crate::store::{Cache, Compression, Published};
use crate::Error;

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

/// Errors that stop the whole run: every further entry would fail the same way.
pub fn is_fatal(err: &Error) -> bool {
    matches!(err, Error::DiskFull { .. })
}

/// The command that makes an entry with Nix's own builder.
pub fn builder_command(entry: &Entry) -> String {
    match crate::builder::host_drv(entry) {
        Ok(drv) => format!("nix-store --realise {drv}"),
        Err(err) => err.to_string(),
    }
}

fn needs_builder(entry: &Entry, reason: impl Into<String>) -> Outcome {
    Outcome::NeedsBuilder {
        reason: reason.into(),
        command: builder_command(entry),
    }
}

/// Names an entry's partial download of one URL (entries may share a URL).
fn partial_key(entry: &Entry, url: &str) -> String {
    format!("{} {url}", entry.store_path)
}

/// How a downloaded file becomes the entry's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Native {
    /// The file itself (flat), or its NAR (executable / recursive single file).
    File,
    /// Unpacked into a tree (fetchzip).
    Unpack,
    /// The file is a NAR, xz-compressed when the URL ends in `.xz` (builtin:fetchurl `unpack`).
    Nar,
}

impl Native {
    fn of(entry: &Entry) -> Native {
        match entry.kind {
            Kind::UrlUnpack => Native::Unpack,
            // builtin:fetchurl's `unpack` (a NAR download) reaches the manifest as postFetch.
            Kind::Builtin if entry.post_fetch || entry.unpack.is_some() => Native::Nar,
            _ => Native::File,
        }
    }

    fn how(self) -> How {
        match self {
            Native::File => How::Url,
            Native::Unpack => How::Unpack,
            Native::Nar => How::Nar,
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
}

/// Fetches every entry into `cache`. Returns the report of every entry, in the order given.
/// A fatal error (a full disk) stops the run: the report then says why in `stopped` and
/// holds the entries finished before; whatever was published stays. `Err` only when the
/// run cannot start.
pub async fn fetch(
    entries: &[Entry],
    cache: Arc<Cache>,
    options: FetchOptions,
    progress: Arc<dyn Progress>,
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
        cache,
        substituters: options
            .substituters
            .iter()
            .map(|s| Substituter::new(s))
            .collect(),
        hashed_mirrors: options.hashed_mirrors,
        rewrites: options.rewrites,
    });
    progress.start(entries.len() as u64);
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
            progress.entry_done(&report);
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
            progress.entry_done(&report);
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
            .map_err(task_failed)
            .and_then(|(index, result)| Ok((index, result?)))
        {
            Ok((index, (report, builder_may_help))) => done(index, report, builder_may_help),
            Err(fatal) => return Some(fatal.to_string()),
        }
    }
    None
}

fn closed() -> Error {
    Error::Corrupt {
        what: "fetch".into(),
        reason: "worker slots closed".into(),
    }
}

fn task_failed(err: tokio::task::JoinError) -> Error {
    Error::Corrupt {
        what: "fetch task".into(),
        reason: err.to_string(),
    }
}

/// Runs cache work (hashing, compressing, unpacking) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(task_failed)?
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
        let present = blocking(move || {
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
            Err(err) if is_fatal(&err) => return Err(err),
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

    /// Checks out a git source of the entry through the shared mirrors and publishes it.
    async fn fetch_git(
        &self,
        entry: &Entry,
        source: GitSource,
        report: &mut EntryReport,
    ) -> Result<Outcome, Error> {
        if entry.post_fetch {
            return Ok(needs_builder(
                entry,
                "fetchgit with a postFetch step changes the checkout",
            ));
        }
        let git = match &self.git {
            Ok(git) => git.clone(),
            Err(why) => return Ok(needs_builder(entry, format!("no usable git: {why}"))),
        };
        let _slot = self.git_slots.acquire().await.map_err(|_| closed())?;
        let cache = self.cache.clone();
        let task_entry = entry.clone();
        let task_source = source.clone();
        let result = blocking(move || git.fetch(&task_entry, &task_source, &cache)).await;
        Ok(match result {
            Ok(published) => {
                report.bytes_written = published.file_size;
                Outcome::Fetched {
                    how: How::Git,
                    from: format!("{} {}", source.url, source.rev),
                }
            }
            Err(err) if is_fatal(&err) => return Err(err),
            Err(Error::NeedsBuilder(reason)) => needs_builder(entry, reason),
            // A kept .git holds packs whose bytes depend on git's version.
            Err(err @ (Error::HashMismatch { .. } | Error::StorePathMismatch { .. }))
                if source.leave_dot_git =>
            {
                needs_builder(
                    entry,
                    format!("the kept .git depends on the git version that made it: {err}"),
                )
            }
            Err(err @ (Error::HashMismatch { .. } | Error::StorePathMismatch { .. })) => {
                Outcome::Failed {
                    reason: "hash mismatch".into(),
                    detail: err.to_string(),
                }
            }
            Err(err) => Outcome::Failed {
                reason: "git".into(),
                detail: err.to_string(),
            },
        })
    }

    /// With `--builder nix`, whatever the native paths did not publish is realised by Nix.
    /// The native outcome is kept when there is no builder.
    async fn or_builder(
        &self,
        entry: &Entry,
        native: Outcome,
        report: &mut EntryReport,
    ) -> Result<Outcome, Error> {
        let Some(builder) = self.builder.clone() else {
            return Ok(native);
        };
        let before = match &native {
            Outcome::NeedsBuilder { reason, .. } => reason.clone(),
            Outcome::Failed { detail, .. } => detail.clone(),
            _ => return Ok(native),
        };
        let _slot = self.builder_slots.acquire().await.map_err(|_| closed())?;
        let cache = self.cache.clone();
        let task_entry = entry.clone();
        let built = blocking(move || {
            let _lock = cache.lock_item(&task_entry)?;
            builder.build(&task_entry, &cache)
        });
        match built.await {
            Ok(built) => {
                report.bytes_written = built.published.file_size;
                Ok(Outcome::Fetched {
                    how: How::Builder,
                    from: if built.removed_from_store {
                        format!("{} (removed from the store again)", built.drv_path)
                    } else {
                        built.drv_path.clone()
                    },
                })
            }
            Err(err) if is_fatal(&err) => Err(err),
            Err(err) => Ok(Outcome::Failed {
                reason: "builder".into(),
                detail: format!("{before}; then {}: {err}", builder_command(entry)),
            }),
        }
    }

    /// The URLs to try, in order and rewritten: hashed mirrors first for flat files (as
    /// Nix's fetchers do), then the entry's own list; each URL once.
    fn candidate_urls(&self, entry: &Entry, native: Native) -> Vec<String> {
        let mut urls = Vec::new();
        if native == Native::File && entry.hash.mode == HashMode::Flat && !entry.executable {
            if let Ok(hash) = entry.hash.hash() {
                for mirror in &self.hashed_mirrors {
                    let base = mirror.trim_end_matches('/');
                    urls.push(format!("{base}/{}/{}", hash.algo, hash.to_hex()));
                }
            }
        }
        urls.extend(entry.urls.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        urls.into_iter()
            .map(|url| rewrite(&self.rewrites, &url))
            .filter(|url| seen.insert(url.clone()))
            .collect()
    }

    async fn fetch_native(
        &self,
        entry: &Entry,
        report: &mut EntryReport,
        tally: &AtomicU64,
    ) -> Result<Outcome, Error> {
        let native = Native::of(entry);
        let urls = self
            .downloader
            .order_by_resolution(self.candidate_urls(entry, native))
            .await;
        if urls.is_empty() {
            return Ok(Outcome::Failed {
                reason: "no url".into(),
                detail: "the manifest lists no URL for this entry".into(),
            });
        }
        // Only a flat file can be checked while it downloads; the rest is checked on publishing.
        let expected = (native == Native::File && entry.hash.mode == HashMode::Flat)
            .then(|| entry.hash.hash().ok())
            .flatten();
        let mut mismatches = Vec::new();
        let mut download_errors = Vec::new();
        let mut publish_errors = Vec::new();
        let mut unsafe_archives = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            let url = url.clone();
            report.urls_tried.push(url.clone());
            let key = partial_key(entry, &url);
            // The URLs not tried yet may serve ranges of a large file alongside this one.
            let alternates = &urls[index + 1..];
            let target = Target {
                key: &key,
                label: &entry.name,
                hash: expected.as_ref(),
                size: None,
            };
            let downloaded = match self
                .downloader
                .fetch_from(&url, alternates, &target, tally)
                .await
            {
                Ok(downloaded) => downloaded,
                Err(err) if is_fatal(&err) => return Err(err),
                Err(err @ Error::HashMismatch { .. }) => {
                    mismatches.push(err.to_string());
                    continue;
                }
                Err(err) => {
                    download_errors.push(err.to_string());
                    continue;
                }
            };
            let published = self.publish(native, entry, &downloaded).await;
            downloaded.remove();
            match published {
                Ok(published) => {
                    report.bytes_written = published.file_size;
                    for tried in &report.urls_tried {
                        self.downloader.discard_partial(&partial_key(entry, tried));
                    }
                    return Ok(Outcome::Fetched {
                        how: native.how(),
                        from: url,
                    });
                }
                Err(err) if is_fatal(&err) => return Err(err),
                Err(err @ (Error::HashMismatch { .. } | Error::StorePathMismatch { .. })) => {
                    mismatches.push(format!("{url}: {err}"))
                }
                Err(err @ Error::UnsafeArchive { .. }) => {
                    unsafe_archives.push(format!("{url}: {err}"))
                }
                Err(err) => publish_errors.push(format!("{url}: {err}")),
            }
        }
        // A hostile archive (a path leaving the tree, a link out of it) is refused, not left
        // to a builder, which would unpack the same bytes.
        if !unsafe_archives.is_empty() {
            return Ok(Outcome::Failed {
                reason: "unsafe archive".into(),
                detail: [unsafe_archives, mismatches, publish_errors, download_errors]
                    .concat()
                    .join("; "),
            });
        }
        Ok(give_up(
            entry,
            native,
            mismatches,
            publish_errors,
            download_errors,
        ))
    }

    async fn publish(
        &self,
        native: Native,
        entry: &Entry,
        downloaded: &Downloaded,
    ) -> Result<Published, Error> {
        let cache = self.cache.clone();
        let entry = entry.clone();
        let path = downloaded.path.clone();
        match native {
            Native::File => {
                // Hashed as it was written: the cache takes that hash instead of its own pass.
                let verified = downloaded.verified.clone();
                blocking(move || cache.publish_file_verified(&entry, &path, verified)).await
            }
            Native::Nar => {
                // As Nix: the entry's own URL, not a mirror's, says whether it is compressed.
                let xz = entry.urls.first().is_some_and(|u| u.ends_with(".xz"));
                let compression = if xz {
                    Compression::Xz
                } else {
                    Compression::None
                };
                publish_nar_file(cache, entry, path, compression, None).await
            }
            Native::Unpack => blocking(move || unpack_and_publish(&cache, &entry, &path)).await,
        }
    }
}

fn unpack_and_publish(
    cache: &Cache,
    entry: &Entry,
    archive: &std::path::Path,
) -> Result<Published, Error> {
    let work = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(cache.temp_dir())
        .map_err(Error::io(format!(
            "creating a directory in {}",
            cache.temp_dir().display()
        )))?;
    let tree = work.path().join("out");
    let options = entry.unpack.clone().unwrap_or(Unpack {
        strip_root: true,
        extension: None,
    });
    let name = entry
        .urls
        .first()
        .map_or(entry.name.as_str(), String::as_str);
    crate::unpack::unpack(archive, name, &options, &tree)?;
    cache.publish_tree(entry, &tree)
}

/// The outcome once every URL failed. Content that never matches is for the builder when
/// srcgrab may not reproduce the fetcher's work (postFetch, unpacking); a plain file that
/// never matches is a failure: every server had wrong content.
fn give_up(
    entry: &Entry,
    native: Native,
    mismatches: Vec<String>,
    publish_errors: Vec<String>,
    download_errors: Vec<String>,
) -> Outcome {
    let reproducible = !entry.post_fetch && native != Native::Unpack;
    if !reproducible && (!mismatches.is_empty() || !publish_errors.is_empty()) {
        let mut reasons = mismatches;
        reasons.extend(publish_errors);
        return needs_builder(
            entry,
            format!(
                "the downloaded content does not give the declared hash without the fetcher's own steps: {}",
                reasons.join("; ")
            ),
        );
    }
    let (reason, details) = if !mismatches.is_empty() {
        (
            "hash mismatch",
            [mismatches, publish_errors, download_errors].concat(),
        )
    } else if !publish_errors.is_empty() {
        (
            "unusable content",
            [publish_errors, download_errors].concat(),
        )
    } else {
        ("download", download_errors)
    };
    Outcome::Failed {
        reason: reason.into(),
        detail: details.join("; "),
    }
}
