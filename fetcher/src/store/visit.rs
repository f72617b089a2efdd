//! How the store reads a flat output's NAR: its single regular file, hashed (and copied to a
//! mirror temp file) on the way. Structure-only checks use [`srcgrab_formats::nar::validate`].

use std::io::{self, Read};

use srcgrab_formats::nar::{self, SingleFile};

use super::hashing::{ContentDigests, ContentHasher, ContentHashes, HashingReader};
use super::place::TempFile;
use crate::store::Error;

/// Hashes the single file of a flat output's NAR, as [`nar::parse_single_file`] hands it
/// over; a flat output is one non-executable regular file.
pub(super) fn hash_flat_file(
    hashes: &ContentHashes,
    mirror: Option<&mut TempFile>,
    file: SingleFile,
    contents: &mut dyn Read,
) -> Result<ContentDigests, Error> {
    if file.executable {
        return Err(Error::NarMismatch {
            what: "NAR".into(),
            reason: "a flat output must not be executable".into(),
        });
    }
    let mut hasher = ContentHasher::new(hashes.clone(), file.size);
    let mut reader = HashingReader {
        inner: contents,
        hashes: &mut hasher,
    };
    match mirror {
        Some(temp) => nar::copy_contents(&mut reader, &mut temp.file)?,
        None => nar::copy_contents(&mut reader, &mut io::sink())?,
    };
    Ok(hasher.finish())
}
