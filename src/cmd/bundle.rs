//! `srcgrab export` and `srcgrab import`: carry the cache items a new manifest adds over a
//! thin link (a directory, a tar file, or a pipe).

use crate::cmd::report::{human_bytes, read_manifest};
use crate::cmd::shared_args::TrustedKeys;
use crate::Status;
use anyhow::Context as _;
use srcgrab_fetcher::store::bundle::{export, import_dir, import_tar, BundleTarget, ImportReport};
use srcgrab_fetcher::store::{Cache, CacheOptions, Compression};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The manifest whose entries to carry.
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// The manifest the other side already has: its entries are left out.
    #[arg(long, value_name = "FILE")]
    since: Option<PathBuf>,
    /// The cache holding the entries.
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// A new directory, a file ending in `.tar`, or `-` for a tar stream on stdout.
    #[arg(long, value_name = "PATH")]
    to: PathBuf,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<Status> {
    let manifest = read_manifest(&args.manifest)?;
    let since = args.since.as_deref().map(read_manifest).transpose()?;
    anyhow::ensure!(
        args.cache.is_dir(),
        "cache {} is not a directory",
        args.cache.display()
    );
    let target = if args.to.as_os_str() == "-" {
        BundleTarget::Tar(Box::new(std::io::stdout()))
    } else if args.to.extension().is_some_and(|e| e == "tar") {
        let file = std::fs::File::create(&args.to)
            .with_context(|| format!("creating {}", args.to.display()))?;
        BundleTarget::Tar(Box::new(file))
    } else {
        BundleTarget::Dir(args.to.clone())
    };
    let cache = Cache::open_read_only(&args.cache, CacheOptions::default());
    let report = export(&cache, &manifest, since.as_ref(), target)?;
    for store_path in &report.not_in_cache {
        tell!("srcgrab: not in the cache, left out: {store_path}");
    }
    tell!(
        "srcgrab: exported {} of {} new entries and {} binaries ({}) to {}; {} new outputs have no binary in the cache",
        report.exported.len(),
        report.new_entries,
        report.binaries.len(),
        human_bytes(report.bytes),
        args.to.display(),
        report.outputs_not_in_cache,
    );
    Ok(if report.not_in_cache.is_empty() {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// A bundle directory, a bundle `.tar`, or `-` for a tar stream on stdin.
    bundle: PathBuf,
    /// The cache to add the entries to (created if needed).
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// How imported NARs are compressed in the cache: zstd, xz or none.
    #[arg(long, default_value = "zstd")]
    compression: Compression,
    /// Also write the bundle's manifest here.
    #[arg(long, value_name = "FILE")]
    save_manifest: Option<PathBuf>,
    #[command(flatten)]
    trusted: TrustedKeys,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<Status> {
    let cache = Cache::open(
        &args.cache,
        CacheOptions {
            compression: args.compression,
            ..CacheOptions::default()
        },
    )?;
    let keys = &args.trusted.keys;
    let (report, manifest) = if args.bundle.as_os_str() == "-" {
        import_tar(std::io::stdin().lock(), &cache, keys)?
    } else if args.bundle.is_dir() {
        import_dir(&args.bundle, &cache, keys)?
    } else {
        let file = std::fs::File::open(&args.bundle)
            .with_context(|| format!("opening bundle {}", args.bundle.display()))?;
        import_tar(
            std::io::BufReader::with_capacity(1 << 20, file),
            &cache,
            keys,
        )?
    };
    if let Some(path) = &args.save_manifest {
        std::fs::write(path, manifest.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print_import(&report);
    Ok(if report.failed.is_empty() {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}

fn print_import(report: &ImportReport) {
    for store_path in &report.imported {
        say!("imported: {store_path}");
    }
    for (store_path, reason) in &report.failed {
        say!("failed: {store_path}: {reason}");
    }
    for path in &report.ignored {
        say!("ignored: {}", path.display());
    }
    tell!(
        "srcgrab: {} imported, {} already present, {} failed; {} entries of the manifest are neither in the bundle nor in the cache",
        report.imported.len(),
        report.present.len(),
        report.failed.len(),
        report.absent.len()
    );
}
