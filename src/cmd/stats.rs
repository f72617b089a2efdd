//! `srcgrab stats MANIFEST`: how big the cache of a manifest is, or would be. Sizes come from
//! a cache's narinfos (`--cache`: compressed and NAR sizes).

use crate::cmd::report::{human_bytes, read_manifest, write_stdout, CacheSizes, NarSizes};
use crate::Status;
use serde_json::json;
use srcgrab_manifest::{Entry, Kind};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
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
}

/// Entry count and sizes of a group of entries.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    entries: u64,
    /// Compressed (FileSize), as the cache stores them.
    file_bytes: u64,
    /// Uncompressed (NarSize), as the store will hold them.
    nar_bytes: u64,
    unknown_sizes: u64,
}

impl Totals {
    fn add(&mut self, size: Option<NarSizes>) {
        self.entries += 1;
        match size {
            Some(s) => {
                self.file_bytes += s.file_size.unwrap_or(s.nar_size);
                self.nar_bytes += s.nar_size;
            }
            None => self.unknown_sizes += 1,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "entries": self.entries,
            "fileBytes": self.file_bytes,
            "narBytes": self.nar_bytes,
            "unknownSizes": self.unknown_sizes,
        })
    }

    fn text(&self, known_any: bool) -> String {
        let mut s = format!("{:>7} entries", self.entries);
        if known_any {
            let _ = write!(
                s,
                "  {:>10} compressed  {:>10} unpacked",
                human_bytes(self.file_bytes),
                human_bytes(self.nar_bytes)
            );
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
    largest: Vec<(&'a Entry, NarSizes)>,
}

fn compute<'a>(
    entries: &'a [Entry],
    systems: &[String],
    sizes: &CacheSizes,
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
        if let Some(size) = size {
            stats.largest.push((e, size));
        }
    }
    stats.largest.sort_by(|a, b| {
        b.1.file_size
            .cmp(&a.1.file_size)
            .then(b.1.nar_size.cmp(&a.1.nar_size))
            .then_with(|| a.0.store_path.cmp(&b.0.store_path))
    });
    stats.largest.truncate(largest);
    stats
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let manifest = read_manifest(&args.manifest)?;
    let sizes = match &args.cache {
        Some(dir) => CacheSizes::read(dir, manifest.entries.iter())?,
        None => CacheSizes::default(),
    };
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
        let mut s = serde_json::to_string_pretty(&stats_json(&stats))?;
        s.push('\n');
        s
    } else {
        stats_text(&stats, &systems)
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
            "fileSize": s.file_size,
            "narSize": s.nar_size,
        })).collect::<Vec<_>>(),
    })
}

fn stats_text(stats: &Stats, systems: &[String]) -> String {
    let known = stats.total.unknown_sizes < stats.total.entries;
    let mut s = String::new();
    let _ = writeln!(s, "total                    {}", stats.total.text(known));
    if !known && stats.total.entries > 0 {
        let _ = writeln!(s, "(no sizes known: give --cache DIR of a fetched cache)");
    }
    let _ = writeln!(s, "\nby kind:");
    for (kind, t) in &stats.by_kind {
        let _ = writeln!(s, "  {:<22} {}", kind.to_string(), t.text(known));
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
            let _ = writeln!(
                s,
                "  {:>10} {:>10}  {}",
                human_bytes(size.file_size.unwrap_or(size.nar_size)),
                human_bytes(size.nar_size),
                e.store_path
            );
        }
    }
    s
}
