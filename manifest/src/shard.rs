//! One enumeration split across machines: `srcgrab enumerate --shard K/N` evaluates the
//! attribute paths of part K, and [`merge`] joins the N parts into the manifest a single run
//! writes, byte for byte.
//!
//! Every shard walks every set (listing names is cheap); only the derivations and failures
//! of the paths it owns are its own. A path's part depends on nothing but its dotted text,
//! so the split is the same on every machine, for every system and every release.

use crate::build_graph::BuildGraph;
use crate::{Entry, Manifest, StorePath, MANIFEST_VERSION, MAX_LISTED_ATTRS};
use serde::{Deserialize, Serialize};
use srcgrab_formats::HashAlgo;
use std::collections::btree_map::{BTreeMap, Entry as Slot};

/// Part `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("bad shard '{0}': K/N with 1 <= K <= N is expected (e.g. 2/4)")]
    Syntax(String),
    #[error("no manifests to merge")]
    Nothing,
    #[error("manifest {0} is not a shard (it has no provenance.shard)")]
    NotAShard(usize),
    #[error("the manifests are not shards of one run: their provenance or version differs ({0})")]
    DifferentRuns(String),
    #[error("shards of one run are missing or repeated: got {got:?} of {count}")]
    Incomplete { got: Vec<u32>, count: u32 },
}

impl Shard {
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Syntax(text.to_string());
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let shard = Shard {
            index: index.trim().parse().map_err(|_| bad())?,
            count: count.trim().parse().map_err(|_| bad())?,
        };
        if shard.index == 0 || shard.index > shard.count {
            return Err(bad());
        }
        Ok(shard)
    }

    /// Whether this part owns the attribute path (as written in manifests, `a.b."c.d"`):
    /// the first 8 bytes of its SHA-256, big-endian, modulo the count.
    pub fn owns(&self, attr: &str) -> bool {
        let digest = HashAlgo::Sha256.digest(attr.as_bytes());
        let number = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        number % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Joins the manifests of all N shards of one run into the manifest of the whole run.
pub fn merge(shards: Vec<Manifest>) -> Result<Manifest, ShardError> {
    let first = shards.first().ok_or(ShardError::Nothing)?;
    let count = first
        .provenance
        .shard
        .ok_or(ShardError::NotAShard(1))?
        .count;
    let mut provenance = first.provenance.clone();
    provenance.shard = None;
    let mut got = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let part = shard.provenance.shard.ok_or(ShardError::NotAShard(i + 1))?;
        let mut unsharded = shard.provenance.clone();
        unsharded.shard = None;
        if unsharded != provenance || shard.version != first.version || part.count != count {
            return Err(ShardError::DifferentRuns(format!("manifest {}", i + 1)));
        }
        got.push(part.index);
    }
    got.sort_unstable();
    if got != (1..=count).collect::<Vec<_>>() {
        return Err(ShardError::Incomplete { got, count });
    }
    let mut failures = Vec::new();
    let mut entries: BTreeMap<StorePath, Entry> = BTreeMap::new();
    let mut build = BuildGraph::default();
    for shard in shards {
        failures.extend(shard.failures);
        // Parts reach some derivations alike (the stdenv); each attribute is in one part.
        build.derivations.extend(shard.build.derivations);
        build.attributes.extend(shard.build.attributes);
        for entry in shard.entries {
            match entries.entry(entry.store_path.clone()) {
                Slot::Vacant(slot) => {
                    slot.insert(entry);
                }
                Slot::Occupied(mut slot) => join(slot.get_mut(), entry),
            }
        }
    }
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        provenance,
        failures,
        entries: entries.into_values().collect(),
        build,
    };
    manifest.normalize();
    manifest
        .build
        .derivations
        .dedup_by(|a, b| a.drv_path == b.drv_path);
    Ok(manifest)
}

/// One output found by two shards. A single run describes it by its smallest derivation
/// (the fetch fields come from there), keeps each system's smallest derivation, and counts
/// the attribute paths reaching it, which no two shards share.
fn join(kept: &mut Entry, other: Entry) {
    let smallest = |e: &Entry| e.drv_paths.values().min().cloned();
    let attr_count = kept.attr_count + other.attr_count;
    let mut attrs: Vec<String> = kept.attrs.iter().chain(&other.attrs).cloned().collect();
    let mut systems: Vec<String> = kept.systems.iter().chain(&other.systems).cloned().collect();
    let mut drv_paths = kept.drv_paths.clone();
    for (system, path) in &other.drv_paths {
        drv_paths
            .entry(system.clone())
            .and_modify(|p| {
                if path < p {
                    p.clone_from(path)
                }
            })
            .or_insert_with(|| path.clone());
    }
    if smallest(&other) < smallest(kept) {
        *kept = other;
    }
    attrs.sort();
    attrs.dedup();
    attrs.truncate(MAX_LISTED_ATTRS);
    systems.sort();
    systems.dedup();
    kept.attrs = attrs;
    kept.systems = systems;
    kept.drv_paths = drv_paths;
    kept.attr_count = attr_count;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "2", "a/b", "1/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_path_has_exactly_one_owner() {
        let shards: Vec<Shard> = (1..=3).map(|index| Shard { index, count: 3 }).collect();
        let mut per_shard = [0; 3];
        for i in 0..300 {
            let attr = format!("python3Packages.pkg{i}");
            let owners: Vec<usize> = (0..3).filter(|&s| shards[s].owns(&attr)).collect();
            assert_eq!(owners.len(), 1, "{attr}");
            per_shard[owners[0]] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 60), "{per_shard:?}");
        // Fixed by the path's text alone.
        assert!(Shard { index: 1, count: 1 }.owns("hello"));
    }
}
