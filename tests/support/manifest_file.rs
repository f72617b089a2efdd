//! A manifest of hand-made entries written where a test's `srcgrab` run reads it.

use srcgrab_manifest::{Entry, Manifest, Provenance};
use std::path::{Path, PathBuf};

/// Writes `entries` as `DIR/manifest.json` (normalised, as enumerate writes it) for one
/// system, and returns its path.
pub fn write_manifest(dir: &Path, entries: Vec<Entry>) -> PathBuf {
    let mut manifest = Manifest {
        version: srcgrab_manifest::MANIFEST_VERSION,
        provenance: Provenance {
            systems: vec!["x86_64-linux".into()],
            nix_version: "test".into(),
            ..Provenance::default()
        },
        failures: Vec::new(),
        entries,
        build: Default::default(),
    };
    manifest.normalize();
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_json()).unwrap();
    path
}
