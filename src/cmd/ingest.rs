//! `srcgrab ingest DIR --manifest M --cache C`: add the files someone brought (a disk, a
//! downloads folder) to the cache when their hash is a manifest entry's.

use crate::cmd::report::{human_bytes, read_manifest};
use crate::cmd::shared_args::TrustedKeys;
use crate::progress::{bar, PeriodicLog};
use crate::Status;
use indicatif::ProgressBar;
use srcgrab_fetcher::report::Reporter;
use srcgrab_fetcher::store::ingest::{ingest, IngestEvent};
use srcgrab_fetcher::store::{Cache, CacheOptions, Compression};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to scan (recursively; symlinks are not followed).
    dir: PathBuf,
    /// The manifest whose entries the files may be.
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// The cache to add them to (created if needed).
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// How new NARs are compressed: zstd, xz or none.
    #[arg(long, default_value = "zstd")]
    compression: Compression,
    #[command(flatten)]
    trusted: TrustedKeys,
}

pub struct Progress {
    pub bar: ProgressBar,
    log: PeriodicLog,
    bytes: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A byte bar on a terminal, a line every 10 seconds otherwise.
    pub fn new() -> Progress {
        Progress {
            bar: bar(
                0,
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ),
            log: PeriodicLog::new(Duration::from_secs(10)),
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl Reporter<IngestEvent> for Progress {
    fn report(&self, event: IngestEvent) {
        match event {
            IngestEvent::Start { bytes, .. } => self.start(bytes),
            IngestEvent::FileHashed { bytes } => self.file_hashed(bytes),
        }
    }
}

impl Progress {
    fn start(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
        self.bar.set_length(bytes);
    }

    fn file_hashed(&self, bytes: u64) {
        let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bar.inc(bytes);
        self.log.maybe(|| {
            format!(
                "hashed {} of {}",
                human_bytes(done),
                human_bytes(self.total.load(Ordering::Relaxed))
            )
        });
    }
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let manifest = read_manifest(&args.manifest)?;
    anyhow::ensure!(
        args.dir.is_dir(),
        "{} is not a directory",
        args.dir.display()
    );
    let cache = Cache::open(
        &args.cache,
        CacheOptions {
            compression: args.compression,
            ..CacheOptions::default()
        },
    )?;
    let progress = Progress::new();
    let report = ingest(&args.dir, &manifest, &cache, &args.trusted.keys, &progress)?;
    progress.bar.finish_and_clear();
    for (file, store_path) in &report.published {
        say!("added: {} -> {store_path}", file.display());
    }
    for (file, store_path) in &report.already_present {
        say!("present: {} -> {store_path}", file.display());
    }
    for (file, first) in &report.duplicates {
        say!(
            "duplicate: {} (same as {})",
            file.display(),
            first.display()
        );
    }
    for file in &report.unmatched {
        say!("unmatched: {}", file.display());
    }
    for (file, store_path, reason) in &report.failed {
        say!("failed: {} {store_path}: {reason}", file.display());
    }
    let matched: std::collections::BTreeSet<&PathBuf> = report
        .published
        .iter()
        .chain(&report.already_present)
        .map(|(f, _)| f)
        .collect();
    tell!(
        "srcgrab: {} files ({}): {} matched ({} entries added, {} already present), {} duplicates, {} unmatched, {} failed",
        report.files,
        human_bytes(report.bytes),
        matched.len(),
        report.published.len(),
        report.already_present.len(),
        report.duplicates.len(),
        report.unmatched.len(),
        report.failed.len()
    );
    Ok(if report.failed.is_empty() {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}
