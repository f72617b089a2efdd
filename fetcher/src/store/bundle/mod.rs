//! Delta bundles (`srcgrab export` / `srcgrab import`): the cache items of a manifest that an
//! older manifest lacks, to carry over a thin link or on a disk.
//!
//! A bundle is laid out like a binary cache, so a bundle directory is itself a `file://`
//! substituter:
//! - `srcgrab-bundle` (first, `srcgrab-bundle 1`), `manifest.json` (the new manifest, whole),
//!   `nix-cache-info`;
//! - per entry, in store-path order: `<hash>.narinfo` then the NAR it names under `nar/`;
//!   or, for a flat entry the cache holds only as a hashed-mirror file, `files/<hash>`;
//! - per binary (an output of the manifest's build graph, or a path in their References
//!   closure, that the cache holds): `<hash>.narinfo` with its upstream signatures, then its
//!   NAR under `nar/`.
//!
//! The same paths in the same order make the tar form, so `import` can read it from a pipe.
//! Import trusts nothing in the bundle: every entry goes through the cache's publish path,
//! which checks the content against the manifest entry's hash and store path (the narinfo
//! only says where the NAR is and how it is compressed; its NarHash/NarSize are checked on
//! the way too). A binary has no hash in the manifest, so its narinfo must carry a signature
//! by a key the importer trusts (`--trusted-public-key`), and its NAR must match that signed
//! narinfo. Publishing is atomic per item and present items are skipped, so an interrupted
//! import can simply be run again.

mod export;
mod import;

pub use export::{export, BundleTarget, ExportReport};
pub(super) use import::import_narinfo_below;
pub use import::{import_dir, import_tar, ImportReport};

use srcgrab_manifest::Manifest;

use crate::store::Error;

pub const MARKER: &str = "srcgrab-bundle";
const MARKER_CONTENTS: &str = "srcgrab-bundle 1\n";
pub const MANIFEST: &str = "manifest.json";
/// A bundle comes from outside, so its marker and manifest are never read unbounded (a
/// manifest of 100,000 entries has about 60 MB).
const MAX_MARKER: u64 = 64;
const MAX_MANIFEST: u64 = 1 << 30;
const CACHE_INFO_CONTENTS: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";

fn bad_bundle(reason: impl Into<String>) -> Error {
    Error::BadBundle(reason.into())
}

fn parse_manifest(text: &str) -> Result<Manifest, Error> {
    Manifest::from_json(text).map_err(|e| bad_bundle(format!("{MANIFEST}: {e}")))
}

fn check_marker(text: &str) -> Result<(), Error> {
    if text != MARKER_CONTENTS {
        return Err(bad_bundle(format!(
            "unsupported bundle version '{}'",
            text.trim()
        )));
    }
    Ok(())
}
