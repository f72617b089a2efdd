//! `srcgrab fetch MANIFEST --cache DIR`: download every entry, verify it, publish it into a
//! binary cache and hashed mirror; bars on a terminal, periodic lines otherwise, a summary
//! at the end and optionally a JSON report of every entry.

use crate::cli_values::{parse_rate, parse_rewrite, parse_size};
use crate::cmd::fetch_display::Display;
use crate::cmd::fetch_paths;
use crate::cmd::report::{human_bytes, read_manifest};
use crate::cmd::shared_args::Lookups;
use crate::Status;
use anyhow::Context as _;
use srcgrab_fetcher::binaries::ClosureOptions;
use srcgrab_fetcher::builder::NixBuilder;
use srcgrab_fetcher::fetch::{FetchOptions, DEFAULT_SUBSTITUTER};
use srcgrab_fetcher::net::{DownloadOptions, Rewrite};
use srcgrab_fetcher::report::{Outcome, Report};
use srcgrab_fetcher::store::{Cache, CacheOptions, Compression, Layout};
use srcgrab_formats::signature::SecretKey;
use srcgrab_manifest::StorePath;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The manifest written by `srcgrab enumerate`.
    #[arg(required_unless_present = "store_paths")]
    manifest: Option<PathBuf>,
    /// Instead of a manifest: a list of store paths (one a line, plain, xz or zstd, `-` for
    /// stdin; repeatable), mirrored with their whole closure from the substituters, their
    /// narinfos kept as upstream signed them.
    #[arg(long = "store-paths", value_name = "FILE", conflicts_with = "manifest")]
    store_paths: Vec<PathBuf>,
    /// The cache directory to fill (binary cache and hashed mirror).
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// Connections transferring at once overall (files and ranges of large files), shared
    /// fairly between hosts.
    #[arg(long, alias = "jobs", default_value_t = 32, value_name = "N")]
    max_connections: usize,
    /// The most HTTP/1.1 connections transferring at once per host: the count starts at 8
    /// and grows while each new connection adds throughput, up to this (Nix itself opens
    /// up to 25 to one host).
    #[arg(long, default_value_t = 32, value_name = "N")]
    max_per_host: usize,
    /// Requests in flight at once to a host that answers in HTTP/2 (streams of one
    /// connection, within --max-connections).
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_streams_per_host: usize,
    #[command(flatten)]
    lookups: Lookups,
    /// Ranges a large file is fetched in at once, over parallel connections and mirrors
    /// (1: one stream per file).
    #[arg(long, default_value_t = 4, value_name = "N")]
    segments: usize,
    /// Files at least this large are fetched in ranges (e.g. 8MiB).
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_size)]
    segment_threshold: u64,
    /// Retries of one URL after transient errors (connection, timeout, 429, 5xx, cut body).
    #[arg(long, default_value_t = 4, value_name = "N")]
    retries: u32,
    /// Seconds to wait for a response, or for more of its body, before retrying.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    stall_timeout: u64,
    /// The slowest average a download may keep: one URL's download, retries included, must
    /// end within the stall timeout plus its size (known beforehand, else received so far)
    /// at this rate.
    #[arg(long, default_value = "4KiB/s", value_name = "RATE", value_parser = parse_rate)]
    min_rate: u64,
    /// Largest download accepted when neither a narinfo nor the server says how large it is.
    #[arg(long, default_value = "64GiB", value_name = "SIZE", value_parser = parse_size)]
    max_size: u64,
    /// Tries in a row that do not reach a host (no such name, refused, TLS, no answer)
    /// before it is marked down and skipped for the run.
    #[arg(long, default_value_t = 3, value_name = "N")]
    host_down_after: u32,
    /// Seconds a host marked down is skipped before one request probes it again.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    host_cooldown: u64,
    /// Overall download rate limit, e.g. 2MiB/s.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    rate_limit: Option<u64>,
    /// A binary cache to take NARs from first (repeatable; replaces the default
    /// https://cache.nixos.org).
    #[arg(long = "substituter", value_name = "URL")]
    substituters: Vec<String>,
    /// Ask no binary cache; download everything from its own URLs.
    #[arg(long, conflicts_with = "substituters")]
    no_substituters: bool,
    /// A hashed mirror (`<URL>/<algo>/<hex>`) tried before an entry's URLs (repeatable).
    #[arg(long = "hashed-mirror", value_name = "URL")]
    hashed_mirrors: Vec<String>,
    /// Rewrite URLs starting with FROM to start with TO (repeatable; first match wins).
    #[arg(long = "rewrite", value_name = "FROM=TO", value_parser = parse_rewrite)]
    rewrites: Vec<Rewrite>,
    /// Compression of the NARs written (default: zstd; for --store-paths, each NAR as
    /// upstream compressed it).
    #[arg(long, value_name = "none|xz|zstd|bzip2")]
    compression: Option<Compression>,
    /// Keep a NAR taken from a binary cache as it came (xz, zstd, bzip2, none) instead of
    /// recompressing it; it is still decompressed and checked.
    #[arg(long)]
    keep_upstream_compression: bool,
    /// What to write: `cache` (narinfo + NAR), `mirror` (`<algo>/<hex>` files), or both.
    #[arg(long, default_value = "cache,mirror", value_parser = parse_layout)]
    layout: Layout,
    /// Sign narinfos with this Nix secret key file (binaries keep their upstream signatures too).
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Write a JSON report of every entry here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Where to keep the shared git mirrors, one bare repository per URL (default:
    /// `<cache>/.srcgrab/git`).
    #[arg(long, value_name = "DIR")]
    git_cache: Option<PathBuf>,
    /// Git checkouts at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    git_jobs: usize,
    /// Realise what srcgrab cannot fetch itself (hg, svn, vendor hashes, postFetch, entries
    /// that did not verify) with this builder; only `nix` (the entry's own .drv) exists.
    #[arg(long, value_name = "nix", value_parser = ["nix"])]
    builder: Option<String>,
    /// Nix builds at once with `--builder nix`.
    #[arg(long, default_value_t = 2, value_name = "N")]
    builder_jobs: usize,
    /// Leave outputs built with `--builder nix` in the Nix store (default: delete those that
    /// were not there before).
    #[arg(long)]
    keep_store_paths: bool,
}

fn parse_layout(text: &str) -> Result<Layout, String> {
    let mut layout = Layout {
        cache: false,
        mirror: false,
    };
    for part in text.split(',').map(str::trim) {
        match part {
            "cache" => layout.cache = true,
            "mirror" => layout.mirror = true,
            other => return Err(format!("unknown layout '{other}' (cache, mirror)")),
        }
    }
    Ok(layout)
}

/// `--sign-key`: signs every narinfo the cache writes, sources and binaries alike.
fn signing_key(args: &Args) -> anyhow::Result<Option<SecretKey>> {
    let Some(path) = &args.sign_key else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading signing key {}", path.display()))?;
    Ok(Some(SecretKey::parse(&text)?))
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let Some(manifest_path) = &args.manifest else {
        return run_store_paths(&args);
    };
    let manifest = read_manifest(manifest_path)?;
    let cache = Cache::open(
        &args.cache,
        CacheOptions {
            compression: args.compression.unwrap_or_default(),
            layout: args.layout,
            signing_key: signing_key(&args)?,
            keep_upstream_compression: args.keep_upstream_compression,
        },
    )
    .with_context(|| format!("opening cache {}", args.cache.display()))?;
    let cache = Arc::new(cache);
    let options = FetchOptions {
        substituters: substituters(&args),
        hashed_mirrors: args.hashed_mirrors.clone(),
        rewrites: args.rewrites.clone(),
        download: download_options(&args),
        git_mirrors: args.git_cache.clone(),
        git_jobs: args.git_jobs,
        builder: args
            .builder
            .is_some()
            .then(|| NixBuilder::new(args.keep_store_paths)),
        builder_jobs: args.builder_jobs,
        ..FetchOptions::default()
    };
    let display = Arc::new(Display::new(manifest.entries.len() as u64));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(srcgrab_fetcher::fetch::fetch(
        &manifest.entries,
        cache.clone(),
        options,
        display.clone(),
    ));
    // Drop in-flight work (after a fatal error) before printing.
    runtime.shutdown_background();
    display.finish();
    let mut report = result?;
    print_summary(&report, manifest.entries.len() as u64);
    let outputs = manifest.build.output_paths();
    if report.stopped.is_none() && !outputs.is_empty() && args.layout.cache && !args.no_substituters
    {
        let roots: Vec<StorePath> = outputs.into_iter().cloned().collect();
        tell!(
            "srcgrab: {} outputs of the build graph, from the substituters",
            roots.len()
        );
        report.outputs = Some(fetch_paths::mirror(
            &roots,
            cache,
            closure_options(&args),
            false,
        )?);
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    if let Some(why) = report
        .stopped
        .as_ref()
        .or(report.outputs.as_ref().and_then(|o| o.stopped.as_ref()))
    {
        anyhow::bail!("fetch stopped: {why}");
    }
    let outputs_complete = report
        .outputs
        .as_ref()
        .is_none_or(|o| o.closures_complete());
    Ok(if report.all_done() && outputs_complete {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}

fn substituters(args: &Args) -> Vec<String> {
    if args.no_substituters {
        Vec::new()
    } else if args.substituters.is_empty() {
        vec![DEFAULT_SUBSTITUTER.to_string()]
    } else {
        args.substituters.clone()
    }
}

fn download_options(args: &Args) -> DownloadOptions {
    DownloadOptions {
        jobs: args.max_connections,
        max_per_host: args.max_per_host,
        streams_per_host: args.max_streams_per_host,
        max_lookups_per_host: args.lookups.max_lookups_per_host,
        segments: args.segments.max(1),
        segment_threshold: args.segment_threshold,
        retries: args.retries,
        stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
        rate_limit: args.rate_limit,
        min_rate: args.min_rate,
        max_size: args.max_size,
        host_down_after: args.host_down_after,
        host_cooldown: Duration::from_secs(args.host_cooldown),
        ..DownloadOptions::default()
    }
}

fn closure_options(args: &Args) -> ClosureOptions {
    ClosureOptions {
        substituters: substituters(args),
        recompress: args.compression,
        download: download_options(args),
        ..ClosureOptions::default()
    }
}

/// `--store-paths`: the listed paths and their closure, from the substituters only.
fn run_store_paths(args: &Args) -> anyhow::Result<Status> {
    let roots = fetch_paths::read_lists(&args.store_paths)?;
    let cache = Cache::open(
        &args.cache,
        CacheOptions {
            layout: Layout {
                cache: true,
                mirror: false,
            },
            signing_key: signing_key(args)?,
            ..CacheOptions::default()
        },
    )
    .with_context(|| format!("opening cache {}", args.cache.display()))?;
    let report = fetch_paths::mirror(&roots, Arc::new(cache), closure_options(args), true)?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    if let Some(why) = &report.stopped {
        anyhow::bail!("fetch stopped: {why}");
    }
    Ok(if report.all_done() {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}

/// `total` is the manifest's entry count: a stopped run reports fewer.
fn print_summary(report: &Report, total: u64) {
    let s = &report.summary;
    let fetched: u64 = s.fetched.values().sum();
    let by_how: Vec<String> = s
        .fetched
        .iter()
        .map(|(how, n)| format!("{n} {how}"))
        .collect();
    let failed: u64 = s.failed.values().sum();
    let by_reason: Vec<String> = s
        .failed
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    let mut line = format!(
        "{total} entries: {} already present, {fetched} fetched",
        s.present
    );
    if !by_how.is_empty() {
        line.push_str(&format!(" ({})", by_how.join(", ")));
    }
    line.push_str(&format!(", {failed} failed"));
    if !by_reason.is_empty() {
        line.push_str(&format!(" ({})", by_reason.join(", ")));
    }
    line.push_str(&format!(", {} need a builder", s.needs_builder));
    if s.skipped > 0 {
        line.push_str(&format!(", {} skipped", s.skipped));
    }
    if report.stopped.is_some() {
        line.push_str(&format!(
            ", {} not reached",
            total.saturating_sub(s.entries)
        ));
    }
    tell!("srcgrab: {line}");
    tell!(
        "srcgrab: downloaded {}, wrote {}",
        human_bytes(s.bytes_downloaded),
        human_bytes(s.bytes_written)
    );
    for host in &report.hosts {
        tell!(
            "srcgrab: {}: {} at {}/s over {:.1} s, {} requests, up to {} connections and {} look-ups at once, {} retries",
            host.host,
            human_bytes(host.bytes),
            human_bytes(host.bytes_per_second),
            host.busy_seconds,
            host.requests,
            host.peak_connections,
            host.peak_lookups,
            host.retries
        );
        if let Some(down) = &host.down {
            tell!(
                "srcgrab: {}: marked down {:.1} s into the run{}",
                host.host,
                down.since_seconds,
                if down.still_down {
                    ", still down at the end"
                } else {
                    ", back later"
                }
            );
        }
    }
    for entry in &report.entries {
        match &entry.outcome {
            Outcome::Failed { reason, detail } => {
                tell!("srcgrab: failed: {} ({reason}): {detail}", entry.store_path)
            }
            Outcome::NeedsBuilder { reason, command } => tell!(
                "srcgrab: needs builder: {} ({reason}): {command}",
                entry.store_path
            ),
            _ => {}
        }
    }
}
