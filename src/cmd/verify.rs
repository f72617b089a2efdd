//! `srcgrab verify --cache DIR [--manifest M] [--quick] [--repair]`: re-check every item of
//! a cache; exit 1 when anything is corrupt, missing or unreferenced.

use crate::cmd::report::{human_bytes, read_manifest};
use crate::progress::{bar, PeriodicLog};
use crate::Status;
use anyhow::Context as _;
use indicatif::ProgressBar;
use srcgrab_fetcher::report::Reporter;
use srcgrab_fetcher::store::verify::{
    remove_corrupt, verify_cache, VerifyEvent, VerifyOptions, VerifyReport,
};
use srcgrab_fetcher::store::DiskLayout;
use srcgrab_manifest::Manifest;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The cache directory to check.
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// Also report the entries of this manifest the cache lacks.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Accept files whose blake3 still matches the index written by an earlier verify;
    /// everything else gets the full (sha256) check.
    #[arg(long)]
    quick: bool,
    /// Remove what is corrupt, then fetch it and what is missing again with `srcgrab fetch`
    /// (needs --manifest); arguments after `--` go to fetch (e.g. `-- --no-substituters`).
    #[arg(long, requires = "manifest")]
    repair: bool,
    /// Options for the `srcgrab fetch` that --repair runs.
    #[arg(last = true, value_name = "FETCH ARGS", requires = "repair")]
    fetch_args: Vec<String>,
}

/// A byte bar on a terminal, a line every 10 seconds otherwise.
struct Progress {
    bar: ProgressBar,
    log: PeriodicLog,
    items: AtomicU64,
    total_items: AtomicU64,
    bytes: AtomicU64,
    total_bytes: AtomicU64,
}

impl Reporter<VerifyEvent> for Progress {
    fn report(&self, event: VerifyEvent) {
        match event {
            VerifyEvent::Start { items, bytes } => self.start(items, bytes),
            VerifyEvent::ItemDone { bytes } => self.item_done(bytes),
        }
    }
}

impl Progress {
    fn start(&self, items: u64, bytes: u64) {
        self.total_items.store(items, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.bar.set_length(bytes);
    }

    fn item_done(&self, bytes: u64) {
        let items = self.items.fetch_add(1, Ordering::Relaxed) + 1;
        let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bar.inc(bytes);
        self.log.maybe(|| {
            format!(
                "verified {items}/{} items, {} of {}",
                self.total_items.load(Ordering::Relaxed),
                human_bytes(done),
                human_bytes(self.total_bytes.load(Ordering::Relaxed))
            )
        });
    }
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let manifest = args.manifest.as_deref().map(read_manifest).transpose()?;
    let options = VerifyOptions { quick: args.quick };
    let report = verify_once(&args, manifest.as_ref(), options)?;
    let Some(manifest) = manifest.filter(|_| args.repair && !report.is_clean()) else {
        return Ok(status(&report));
    };
    repair(&args, &manifest, &report)?;
    let again = verify_once(&args, Some(&manifest), VerifyOptions::default())?;
    Ok(status(&again))
}

/// Removes the corrupt files, then runs `srcgrab fetch` (this same binary, so with exactly
/// fetch's rules) on a manifest of the entries to mend.
fn repair(args: &Args, manifest: &Manifest, report: &VerifyReport) -> anyhow::Result<()> {
    remove_corrupt(&args.cache, report)?;
    let broken = report.broken_store_paths();
    let subset = Manifest {
        entries: manifest
            .entries
            .iter()
            .filter(|e| broken.contains(&e.store_path))
            .cloned()
            .collect(),
        failures: Vec::new(),
        build: Default::default(),
        ..manifest.clone()
    };
    if subset.entries.is_empty() {
        return Ok(());
    }
    let dir = DiskLayout::new(&args.cache).state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let subset_path = dir.join("repair-manifest.json");
    std::fs::write(&subset_path, subset.to_json())
        .with_context(|| format!("writing {}", subset_path.display()))?;
    tell!(
        "srcgrab: repairing {} entries with srcgrab fetch",
        subset.entries.len()
    );
    let fetch = std::process::Command::new(std::env::current_exe()?)
        .arg("fetch")
        .arg(&subset_path)
        .arg("--cache")
        .arg(&args.cache)
        .args(&args.fetch_args)
        .status()
        .context("running srcgrab fetch")?;
    anyhow::ensure!(
        fetch.code().is_some_and(|c| c <= 1),
        "srcgrab fetch failed ({fetch})"
    );
    Ok(())
}

fn status(report: &VerifyReport) -> Status {
    if report.is_clean() {
        Status::Ok
    } else {
        Status::SomeFailed
    }
}

fn verify_once(
    args: &Args,
    manifest: Option<&Manifest>,
    options: VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let progress = Progress {
        bar: bar(
            0,
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        log: PeriodicLog::new(Duration::from_secs(10)),
        items: AtomicU64::new(0),
        total_items: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        total_bytes: AtomicU64::new(0),
    };
    let report = verify_cache(&args.cache, manifest, options, &progress)?;
    progress.bar.finish_and_clear();
    print_report(&report, started.elapsed());
    Ok(report)
}

fn print_report(report: &VerifyReport, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut summary = format!(
        "checked {} narinfos and {} mirror files, {} in {seconds:.1}s ({}/s)",
        report.narinfos,
        report.mirror_files,
        human_bytes(report.bytes),
        human_bytes((report.bytes as f64 / seconds) as u64)
    );
    if report.quick_accepted > 0 {
        summary.push_str(&format!(
            "; {} accepted by the blake3 index",
            report.quick_accepted
        ));
    }
    tell!("srcgrab: {summary}");
    if let Some(err) = &report.index_error {
        tell!("srcgrab: warning: blake3 index not updated: {err}");
    }
    for c in &report.corrupt {
        let owner = c.store_path.as_deref().unwrap_or("no known store path");
        say!("corrupt: {} ({owner}): {}", c.path.display(), c.reason);
    }
    for store_path in &report.missing {
        say!("missing: {store_path}");
    }
    for path in &report.unreferenced {
        say!("unreferenced: {}", path.display());
    }
    if !report.is_clean() {
        tell!(
            "srcgrab: {} corrupt, {} missing, {} unreferenced",
            report.corrupt.len(),
            report.missing.len(),
            report.unreferenced.len()
        );
    }
}
