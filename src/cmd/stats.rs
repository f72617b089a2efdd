//! `srcgrab stats MANIFEST`: how big the cache of a manifest is, or would be. Sizes come from
//! a cache's narinfos (`--cache`: compressed and NAR sizes), then from the servers
//! (`--probe`: Content-Length of a HEAD request; the NAR size too for single files).

use crate::cli_values::parse_rewrite;
use crate::cmd::report::{
    self, human_bytes, read_manifest, write_stdout, EntrySizes, PathSizes, Sizes,
};
use crate::cmd::shared_args::Lookups;
use crate::cmd::stats_kit;
use crate::Status;
use anyhow::Context as _;
use serde_json::json;
use srcgrab_fetcher::net::{DownloadOptions, Rewrite};
use srcgrab_fetcher::probe::{probe, ProbeOptions, Probed};
use srcgrab_manifest::{Entry, Kind, StorePath};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The manifest to count.
    manifest: PathBuf,
    /// A cache holding (some of) the entries: sizes come from its narinfos.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How many of the largest entries to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    largest: usize,
    /// Ask the servers: a HEAD request per entry the cache does not size (Content-Length),
    /// nothing downloaded; with fetch's limits, retries and rewrites.
    #[arg(long)]
    probe: bool,
    /// Requests in flight overall (--probe).
    #[arg(long, default_value_t = 16, value_name = "N")]
    jobs: usize,
    /// Requests in flight per host (--probe).
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_per_host: usize,
    /// Retries of one URL after transient errors (--probe).
    #[arg(long, default_value_t = 4, value_name = "N")]
    retries: u32,
    /// Seconds to wait for a response before retrying (--probe).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    stall_timeout: u64,
    /// Rewrite URLs starting with FROM to start with TO (repeatable; --probe).
    #[arg(long = "rewrite", value_name = "FROM=TO", value_parser = parse_rewrite)]
    rewrites: Vec<Rewrite>,
    /// A binary cache whose narinfos give sizes (FileSize, NarSize) of the outputs and of
    /// the sources it holds, nothing downloaded (repeatable; asked in order).
    #[arg(long = "substituter", value_name = "URL")]
    substituters: Vec<String>,
    #[command(flatten)]
    lookups: Lookups,
}

impl Args {
    fn download_options(&self) -> DownloadOptions {
        DownloadOptions {
            jobs: self.jobs,
            max_per_host: self.max_per_host,
            retries: self.retries,
            stall_timeout: Duration::from_secs(self.stall_timeout.max(1)),
            max_lookups_per_host: self.lookups.max_lookups_per_host,
            ..DownloadOptions::default()
        }
    }
}

/// Sizes of what `known` lacks among `paths`, from the substituters' narinfos.
fn substituter_sizes(args: &Args, paths: Vec<&StorePath>) -> anyhow::Result<PathSizes> {
    if args.substituters.is_empty() || paths.is_empty() {
        return Ok(Default::default());
    }
    stats_kit::from_substituters(&paths, &args.substituters, args.download_options())
}

/// Sizes of the entries `known` lacks, from HEAD requests; failures are counted on stderr.
fn probe_sizes(args: &Args, entries: &[Entry], known: &mut EntrySizes) -> anyhow::Result<()> {
    let unsized_entries: Vec<Entry> = entries
        .iter()
        .filter(|e| known.get(e).is_none())
        .cloned()
        .collect();
    let options = ProbeOptions {
        rewrites: args.rewrites.clone(),
        download: args.download_options(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let probed = runtime.block_on(probe(&unsized_entries, options))?;
    let mut failed = 0;
    for (entry, probed) in unsized_entries.iter().zip(probed) {
        match probed {
            Probed::Size { download, nar } => known.insert(
                entry.store_path.clone(),
                Sizes {
                    file_size: Some(download),
                    nar_size: nar,
                },
            ),
            Probed::Failed(reason) => {
                failed += 1;
                tell!("srcgrab: probing {}: {reason}", entry.store_path);
            }
            Probed::Unknown => {}
        }
    }
    if failed > 0 {
        tell!("srcgrab: {failed} entries could not be probed");
    }
    Ok(())
}

/// Entry count and sizes of a group of entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    entries: u64,
    /// Compressed (FileSize), as the cache stores them (or Content-Length, probed).
    file_bytes: u64,
    /// Uncompressed (NarSize), as the store will hold them, where known.
    nar_bytes: u64,
    /// Entries of no known size (not in `file_bytes`).
    unknown_sizes: u64,
    /// Entries of no known NAR size (not in `nar_bytes`).
    unknown_nar_sizes: u64,
}

impl Totals {
    pub fn add(&mut self, size: Option<Sizes>) {
        self.entries += 1;
        let size = size.unwrap_or_default();
        match size.compressed() {
            Some(bytes) => self.file_bytes += bytes,
            None => self.unknown_sizes += 1,
        }
        match size.nar_size {
            Some(bytes) => self.nar_bytes += bytes,
            None => self.unknown_nar_sizes += 1,
        }
    }

    /// Both groups together (disjoint ones: a path is a binary or a source).
    pub fn plus(&self, other: &Totals) -> Totals {
        Totals {
            entries: self.entries + other.entries,
            file_bytes: self.file_bytes + other.file_bytes,
            nar_bytes: self.nar_bytes + other.nar_bytes,
            unknown_sizes: self.unknown_sizes + other.unknown_sizes,
            unknown_nar_sizes: self.unknown_nar_sizes + other.unknown_nar_sizes,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "entries": self.entries,
            "fileBytes": self.file_bytes,
            "narBytes": self.nar_bytes,
            "unknownSizes": self.unknown_sizes,
            "unknownNarSizes": self.unknown_nar_sizes,
        })
    }

    pub fn text(&self, known_any: bool) -> String {
        let mut s = format!("{:>7} entries", self.entries);
        if known_any {
            let _ = write!(s, "  {:>10} compressed", human_bytes(self.file_bytes));
            if self.unknown_nar_sizes < self.entries {
                let _ = write!(s, "  {:>10} unpacked", human_bytes(self.nar_bytes));
            }
            if self.unknown_sizes > 0 {
                let _ = write!(s, "  ({} of unknown size)", self.unknown_sizes);
            }
        }
        s
    }
}

/// The statistics themselves, apart from how they print.
struct Stats<'a> {
    total: Totals,
    by_kind: BTreeMap<Kind, Totals>,
    by_system: BTreeMap<String, Totals>,
    /// Entries every system of the manifest needs; then those only one system needs.
    on_all_systems: Totals,
    only_on: BTreeMap<String, Totals>,
    /// Needed by more than one system but not all.
    on_some_systems: Totals,
    largest: Vec<(&'a Entry, Sizes)>,
}

fn compute<'a>(
    entries: &'a [Entry],
    systems: &[String],
    sizes: &EntrySizes,
    largest: usize,
) -> Stats<'a> {
    let mut stats = Stats {
        total: Totals::default(),
        by_kind: BTreeMap::new(),
        by_system: BTreeMap::new(),
        on_all_systems: Totals::default(),
        only_on: BTreeMap::new(),
        on_some_systems: Totals::default(),
        largest: Vec::new(),
    };
    for e in entries {
        let size = sizes.get(e);
        stats.total.add(size);
        stats.by_kind.entry(e.kind).or_default().add(size);
        for system in &e.systems {
            stats.by_system.entry(system.clone()).or_default().add(size);
        }
        let on_all = systems.iter().all(|s| e.systems.contains(s));
        match e.systems.as_slice() {
            _ if on_all => stats.on_all_systems.add(size),
            [only] => stats.only_on.entry(only.clone()).or_default().add(size),
            _ => stats.on_some_systems.add(size),
        }
        if let Some(size) = size.filter(|s| s.compressed().is_some()) {
            stats.largest.push((e, size));
        }
    }
    stats.largest.sort_by(|a, b| {
        b.1.compressed()
            .cmp(&a.1.compressed())
            .then(b.1.nar_size.cmp(&a.1.nar_size))
            .then_with(|| a.0.store_path.cmp(&b.0.store_path))
    });
    stats.largest.truncate(largest);
    stats
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let manifest = read_manifest(&args.manifest)?;
    let mut sizes = match &args.cache {
        Some(dir) => EntrySizes::from_cache(dir, manifest.entries.iter())?,
        None => EntrySizes::default(),
    };
    let unsized_entries = manifest
        .entries
        .iter()
        .filter(|e| sizes.get(e).is_none())
        .map(|e| &e.store_path)
        .collect();
    for (path, found) in substituter_sizes(&args, unsized_entries)? {
        sizes.insert(path, found);
    }
    if args.probe {
        probe_sizes(&args, &manifest.entries, &mut sizes)?;
    }
    let kit = (!manifest.build.is_empty())
        .then(|| -> anyhow::Result<stats_kit::Kit> {
            let outputs = manifest.build.output_paths();
            let mut output_sizes = match &args.cache {
                Some(dir) => report::sizes_in_cache(dir, &outputs),
                None => Default::default(),
            };
            let unsized_outputs = outputs
                .iter()
                .copied()
                .filter(|p| !output_sizes.contains_key(*p))
                .collect();
            output_sizes.extend(substituter_sizes(&args, unsized_outputs)?);
            Ok(stats_kit::compute(&manifest, &sizes, &output_sizes))
        })
        .transpose()?;
    // The systems evaluated; an entry on all of them is what every machine needs.
    let mut systems = manifest.provenance.systems.clone();
    if systems.is_empty() {
        systems = manifest
            .entries
            .iter()
            .flat_map(|e| e.systems.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    let stats = compute(&manifest.entries, &systems, &sizes, args.largest);
    let out = if args.json {
        let mut value = stats_json(&stats);
        if let Some(kit) = &kit {
            value["kit"] = stats_kit::json(kit);
        }
        let mut s = serde_json::to_string_pretty(&value)?;
        s.push('\n');
        s
    } else {
        let mut s = stats_text(&stats, &systems, args.probe);
        if let Some(kit) = &kit {
            s.push_str(&stats_kit::text(kit));
        }
        s
    };
    write_stdout(&out)?;
    Ok(Status::Ok)
}

fn stats_json(stats: &Stats) -> serde_json::Value {
    let map = |m: &BTreeMap<String, Totals>| -> serde_json::Value {
        m.iter().map(|(k, t)| (k.clone(), t.json())).collect()
    };
    let by_kind: BTreeMap<String, Totals> = stats
        .by_kind
        .iter()
        .map(|(k, t)| (k.to_string(), *t))
        .collect();
    json!({
        "total": stats.total.json(),
        "byKind": map(&by_kind),
        "bySystem": map(&stats.by_system),
        "shared": {
            "allSystems": stats.on_all_systems.json(),
            "someSystems": stats.on_some_systems.json(),
            "onlyOn": map(&stats.only_on),
        },
        "largest": stats.largest.iter().map(|(e, s)| json!({
            "storePath": e.store_path,
            "kind": e.kind,
            "fileSize": s.compressed(),
            "narSize": s.nar_size,
        })).collect::<Vec<_>>(),
    })
}

fn stats_text(stats: &Stats, systems: &[String], probed: bool) -> String {
    let known = stats.total.unknown_sizes < stats.total.entries;
    let mut s = String::new();
    let _ = writeln!(s, "total                    {}", stats.total.text(known));
    if !known && stats.total.entries > 0 {
        let hint = if probed {
            "no server gave a size"
        } else {
            "give --cache DIR of a fetched cache, or --probe"
        };
        let _ = writeln!(s, "(no sizes known: {hint})");
    }
    let _ = writeln!(s, "\nby kind:");
    for (kind, t) in &stats.by_kind {
        let _ = writeln!(s, "  {:<22} {}", kind.to_string(), t.text(known));
    }
    if stats.by_kind.contains_key(&Kind::Derived) {
        let _ = writeln!(
            s,
            "  (derived: Nix builds them offline from other entries: fetch --builder nix)"
        );
    }
    if stats.by_kind.contains_key(&Kind::Other) {
        let _ = writeln!(s, "  (other: Nix builds them with the network: build them before going offline, or have a substituter)");
    }
    let _ = writeln!(s, "\nby system (a cache for that system alone):");
    for (system, t) in &stats.by_system {
        let _ = writeln!(s, "  {system:<22} {}", t.text(known));
    }
    let _ = writeln!(s, "\nshared between systems:");
    let _ = writeln!(
        s,
        "  {:<22} {}",
        format!("all {}", systems.len()),
        stats.on_all_systems.text(known)
    );
    let _ = writeln!(
        s,
        "  {:<22} {}",
        "several",
        stats.on_some_systems.text(known)
    );
    for (system, t) in &stats.only_on {
        let _ = writeln!(s, "  {:<22} {}", format!("only {system}"), t.text(known));
    }
    if !stats.largest.is_empty() {
        let _ = writeln!(s, "\nlargest:");
        for (e, size) in &stats.largest {
            let nar = size.nar_size.map(human_bytes).unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:>10} {:>10}  {}",
                human_bytes(size.compressed().unwrap_or_default()),
                nar,
                e.store_path
            );
        }
    }
    s
}
