//! What a bump costs over the link (`srcgrab diff`): the sources (entries) and binaries
//! (build-graph outputs) the new manifest has and the old one lacks, with their sizes where
//! a cache or a substituter knows them.

use crate::cmd::report::EntrySizes;
use crate::cmd::report::PathSizes;
use crate::cmd::stats::Totals;
use serde_json::json;
use srcgrab_manifest::{Manifest, StorePath};
use std::collections::HashSet;

pub struct BumpCost {
    pub sources: Totals,
    pub binaries: Totals,
}

/// The outputs `new` has and `old` lacks.
pub fn new_outputs<'a>(old: &Manifest, new: &'a Manifest) -> Vec<&'a StorePath> {
    let before: HashSet<&StorePath> = old.build.output_paths().into_iter().collect();
    new.build
        .output_paths()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}

pub fn compute(
    old: &Manifest,
    new: &Manifest,
    entry_sizes: &EntrySizes,
    output_sizes: &PathSizes,
) -> BumpCost {
    let before: HashSet<&StorePath> = old.entries.iter().map(|e| &e.store_path).collect();
    let mut cost = BumpCost {
        sources: Totals::default(),
        binaries: Totals::default(),
    };
    for entry in new
        .entries
        .iter()
        .filter(|e| !before.contains(&e.store_path))
    {
        cost.sources.add(entry_sizes.get(entry));
    }
    for output in new_outputs(old, new) {
        cost.binaries.add(output_sizes.get(output).copied());
    }
    cost
}

impl BumpCost {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "sources": self.sources.json(),
            "binaries": self.binaries.json(),
            "total": self.sources.plus(&self.binaries).json(),
        })
    }

    /// One line: paths, compressed and unpacked bytes, and how many are of unknown size.
    pub fn text(&self) -> String {
        format!(
            "\nover the link: sources {}\n               binaries {}\n",
            self.sources.text(true).trim(),
            self.binaries.text(true).trim()
        )
    }
}
