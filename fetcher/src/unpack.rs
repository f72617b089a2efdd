//! Archives -> directory trees with nixpkgs fetchzip semantics.

use std::path::Path;

use srcgrab_manifest::Unpack;

use crate::Error;

/// Unpacks `archive` into `dest` (which must not exist) as fetchzip would: the format comes
/// from `options.extension`, else from `name` (the URL or file name), else from magic bytes;
/// with `strip_root` the single top-level entry becomes `dest`.
pub fn unpack(archive: &Path, name: &str, options: &Unpack, dest: &Path) -> Result<(), Error> {
    let _ = (archive, name, options, dest);
    todo!("in progress")
}
