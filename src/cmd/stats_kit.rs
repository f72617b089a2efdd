//! The offline kit's size (`srcgrab stats` of a manifest made with `enumerate --outputs`):
//! binaries (the build graph's outputs) and sources (the FOD entries), per system and for
//! all systems together (each path once), compressed and unpacked, with how many paths are
//! of unknown size. Sizes come from a cache's narinfos, then from the substituters'.

use crate::cmd::report::{EntrySizes, PathSizes, Sizes};
use crate::cmd::stats::Totals;
use anyhow::Context as _;
use serde_json::json;
use srcgrab_fetcher::binaries::sizes::narinfo_sizes;
use srcgrab_fetcher::net::DownloadOptions;
use srcgrab_manifest::{Manifest, StorePath};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Sizes from the substituters' narinfos, many lookups in flight.
pub fn from_substituters(
    paths: &[&StorePath],
    substituters: &[String],
    download: DownloadOptions,
) -> anyhow::Result<PathSizes> {
    let paths: Vec<StorePath> = paths.iter().map(|&p| p.clone()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let found = runtime.block_on(narinfo_sizes(&paths, substituters, download))?;
    Ok(paths
        .into_iter()
        .zip(found)
        .filter_map(|(path, sizes)| {
            let sizes = sizes?;
            Some((
                path,
                Sizes {
                    file_size: sizes.file_size,
                    nar_size: Some(sizes.nar_size),
                },
            ))
        })
        .collect())
}

/// Binaries and sources of one system, or of all together.
#[derive(Debug, Default, Clone, Copy)]
pub struct KitTotals {
    pub binaries: Totals,
    pub sources: Totals,
}

impl KitTotals {
    fn total(&self) -> Totals {
        self.binaries.plus(&self.sources)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "binaries": self.binaries.json(),
            "sources": self.sources.json(),
            "total": self.total().json(),
        })
    }
}

pub struct Kit {
    pub by_system: BTreeMap<String, KitTotals>,
    /// Every path once, whatever system needs it.
    pub all: KitTotals,
}

/// The kit's totals; `entry_sizes` knows the sources, `output_sizes` the binaries.
pub fn compute(manifest: &Manifest, entry_sizes: &EntrySizes, output_sizes: &PathSizes) -> Kit {
    let mut kit = Kit {
        by_system: BTreeMap::new(),
        all: KitTotals::default(),
    };
    for entry in &manifest.entries {
        let size = entry_sizes.get(entry);
        kit.all.sources.add(size);
        for system in &entry.systems {
            kit.by_system
                .entry(system.clone())
                .or_default()
                .sources
                .add(size);
        }
    }
    let mut counted = BTreeSet::new();
    for drv in &manifest.build.derivations {
        for output in drv.outputs.values() {
            let size = output_sizes.get(output).copied();
            kit.by_system
                .entry(drv.system.clone())
                .or_default()
                .binaries
                .add(size);
            if counted.insert(output) {
                kit.all.binaries.add(size);
            }
        }
    }
    kit
}

pub fn json(kit: &Kit) -> serde_json::Value {
    json!({
        "bySystem": kit.by_system.iter().map(|(s, t)| (s.clone(), t.json())).collect::<serde_json::Map<_, _>>(),
        "all": kit.all.json(),
    })
}

pub fn text(kit: &Kit) -> String {
    let mut s = String::from("\nbinaries and sources (the offline kit):\n");
    let rows = kit
        .by_system
        .iter()
        .map(|(system, t)| (system.as_str(), t))
        .chain(std::iter::once(("all systems", &kit.all)));
    for (name, totals) in rows {
        for (what, t) in [
            ("binaries", totals.binaries),
            ("sources", totals.sources),
            ("total", totals.total()),
        ] {
            let _ = writeln!(s, "  {name:<14} {what:<8} {}", t.text(true));
        }
    }
    s
}
