//! The build graph a manifest made with `srcgrab enumerate --outputs` carries besides its
//! FOD entries: every non-fixed derivation of the evaluated attributes' build closure with
//! its output paths and inputs, and which derivation each attribute is. It is what lets
//! `srcgrab fetch` take binaries (the `output` records) from substituters and
//! `srcgrab check` tell, per attribute, whether a cache can install or build it offline.

use serde::{Deserialize, Serialize};
use srcgrab_formats::store_path::{DrvPath, StorePath};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildGraph {
    /// Every non-fixed derivation reachable from an attribute without passing through a
    /// FOD (a FOD's own inputs, such as the curl that fetchurl runs, are not needed once
    /// the FOD is in the cache), sorted by `drv_path`.
    pub derivations: Vec<BuiltDerivation>,
    /// Every evaluated attribute and its derivation, sorted by (system, attr).
    pub attributes: Vec<Attribute>,
}

impl BuildGraph {
    pub fn is_empty(&self) -> bool {
        self.derivations.is_empty() && self.attributes.is_empty()
    }

    /// Every output path of the graph (the `output` records), sorted and distinct.
    pub fn output_paths(&self) -> Vec<&StorePath> {
        let mut paths: Vec<&StorePath> = self
            .derivations
            .iter()
            .flat_map(|d| d.outputs.values())
            .collect();
        paths.sort_unstable();
        paths.dedup();
        paths
    }

    /// The derivation at `drv_path`, when the graph has it (`derivations` must be
    /// normalized: the search uses the order [`BuildGraph::normalize`] sorts by).
    pub fn derivation(&self, drv_path: &DrvPath) -> Option<&BuiltDerivation> {
        self.derivations
            .binary_search_by(|d| d.drv_path.cmp(drv_path))
            .ok()
            .map(|i| &self.derivations[i])
    }

    /// Sorts derivations by `drv_path` (`DrvPath`'s order, which is its text's: hash parts
    /// have one length) and attributes by (system, attr).
    pub fn normalize(&mut self) {
        self.derivations.sort_by(|a, b| a.drv_path.cmp(&b.drv_path));
        self.attributes.sort();
    }
}

/// A derivation whose outputs are not fixed: a package, a stdenv stage, a build script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuiltDerivation {
    pub drv_path: DrvPath,
    /// The system that builds it (the .drv's `system`).
    pub system: String,
    /// Output name -> store path.
    pub outputs: BTreeMap<String, StorePath>,
    /// The non-fixed input derivations (sorted drv paths, each in `derivations`).
    pub inputs: Vec<DrvPath>,
    /// The fixed outputs it takes directly (sorted store paths, each a manifest entry).
    pub sources: Vec<StorePath>,
}

/// One evaluated attribute on one system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attribute {
    pub system: String,
    pub attr: String,
    pub drv_path: DrvPath,
}
