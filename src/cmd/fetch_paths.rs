//! `srcgrab fetch --store-paths FILE`: mirror store paths (a channel's `store-paths.xz`)
//! and their whole closure from the substituters into the cache; a line every ten seconds
//! (a spinner on a terminal), then a summary naming every path that could not be had.

use crate::cmd::report::human_bytes;
use crate::progress::{self, PeriodicLog};
use anyhow::Context as _;
use indicatif::ProgressBar;
use srcgrab_fetcher::binaries::{
    mirror_closure, read_path_list, ClosureOptions, ClosureReport, PathOutcome,
};
use srcgrab_fetcher::report::{FetchEvent, Reporter};
use srcgrab_fetcher::store::Cache;
use srcgrab_manifest::StorePath;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reads every list (`-` is stdin), in order, without duplicates.
pub fn read_lists(lists: &[std::path::PathBuf]) -> anyhow::Result<Vec<StorePath>> {
    let mut paths = Vec::new();
    for list in lists {
        let what = list.display().to_string();
        let read = if list == Path::new("-") {
            read_path_list(std::io::stdin().lock(), "stdin")
        } else {
            let file = std::fs::File::open(list).with_context(|| format!("opening {what}"))?;
            read_path_list(file, &what)
        };
        paths.extend(read?);
    }
    let mut seen = std::collections::HashSet::new();
    paths.retain(|p| seen.insert(p.hash_part().to_string()));
    Ok(paths)
}

/// Mirrors the closure of `roots`; prints the summary and returns the report. Unless
/// `roots_required`, a root no substituter has is only counted (a manifest's output Hydra
/// did not build, which its sources cover).
pub fn mirror(
    roots: &[StorePath],
    cache: Arc<Cache>,
    options: ClosureOptions,
    roots_required: bool,
) -> anyhow::Result<ClosureReport> {
    let display = Arc::new(Display::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(mirror_closure(roots, cache, options, display.clone()));
    runtime.shutdown_background();
    display.spinner.finish_and_clear();
    let report = result?;
    print_summary(&report, roots_required);
    Ok(report)
}

fn print_summary(report: &ClosureReport, roots_required: bool) {
    let count = |wanted: fn(&PathOutcome) -> bool| {
        report.paths.iter().filter(|p| wanted(&p.outcome)).count()
    };
    let downloaded: u64 = report.paths.iter().map(|p| p.bytes_downloaded).sum();
    let stored: u64 = report.paths.iter().filter_map(|p| p.file_size).sum();
    tell!(
        "srcgrab: {} store paths in the closure: {} already present, {} mirrored, {} missing upstream, {} failed; downloaded {}, closure holds {}",
        report.paths.len(),
        count(|o| matches!(o, PathOutcome::Present)),
        count(|o| matches!(o, PathOutcome::Mirrored { .. })),
        count(|o| matches!(o, PathOutcome::Missing)),
        count(|o| matches!(o, PathOutcome::Failed)),
        human_bytes(downloaded),
        human_bytes(stored),
    );
    for path in &report.paths {
        let by = path
            .referenced_by
            .as_ref()
            .map(|by| format!(" (referenced by {by})"))
            .unwrap_or_default();
        match path.outcome {
            PathOutcome::Missing if roots_required || path.referenced_by.is_some() => {
                tell!(
                    "srcgrab: missing: {}{by}: no substituter has it",
                    path.store_path
                )
            }
            PathOutcome::Failed => {
                let reasons: Vec<String> = path
                    .rejected
                    .iter()
                    .map(|r| format!("{}: {}", r.substituter, r.reason))
                    .collect();
                tell!(
                    "srcgrab: failed: {}{by}: {}",
                    path.store_path,
                    reasons.join("; ")
                )
            }
            _ => {}
        }
    }
}

/// A spinner with counts on a terminal, a line every ten seconds otherwise.
struct Display {
    spinner: ProgressBar,
    log: PeriodicLog,
    done: AtomicU64,
    not_done: AtomicU64,
    downloaded: AtomicU64,
}

impl Display {
    fn new() -> Display {
        Display {
            spinner: progress::bar(0, "{spinner} {pos} store paths [{elapsed_precise}] {msg}"),
            log: PeriodicLog::new(Duration::from_secs(10)),
            done: AtomicU64::new(0),
            not_done: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
        }
    }

    fn show(&self) {
        let line = || {
            format!(
                "{} store paths done ({} not had), {} downloaded",
                self.done.load(Ordering::Relaxed),
                self.not_done.load(Ordering::Relaxed),
                human_bytes(self.downloaded.load(Ordering::Relaxed))
            )
        };
        self.spinner.set_message(line());
        self.log.maybe(|| format!("fetch: {}", line()));
    }
}

impl<'a> Reporter<FetchEvent<'a>> for Display {
    fn report(&self, event: FetchEvent<'a>) {
        match event {
            FetchEvent::DownloadBytes { bytes, .. } => {
                self.downloaded.fetch_add(bytes, Ordering::Relaxed);
                self.show();
            }
            FetchEvent::PathDone(path) => {
                self.done.fetch_add(1, Ordering::Relaxed);
                if !path.is_done() {
                    self.not_done.fetch_add(1, Ordering::Relaxed);
                }
                self.spinner.inc(1);
                self.show();
            }
            _ => {}
        }
    }
}
