//! The NAR visitors the store decodes with: a flat output's single file, or structure only.

use std::io::{self, Read};
use std::path::Path;

use super::hashing::{ContentDigests, ContentHasher, ContentHashes, HashingReader};
use super::place::TempFile;
use crate::nar::{self, NarVisitor};
use crate::Error;

/// Decodes the NAR of a flat output: one non-executable regular file, hashed (and copied
/// to a mirror temp file) on the way.
pub(super) struct FlatFileVisitor {
    /// The hashers to run over the file's bytes.
    pub(super) hashes: ContentHashes,
    /// What they gave, once the file was seen.
    pub(super) digests: Option<ContentDigests>,
    pub(super) mirror: Option<TempFile>,
}

impl FlatFileVisitor {
    pub(super) fn digests(&mut self) -> Result<ContentDigests, Error> {
        self.digests
            .take()
            .ok_or_else(|| Error::BadNar("no regular file in archive".into()))
    }
}

impl NarVisitor for FlatFileVisitor {
    fn directory(&mut self, _: &Path) -> Result<(), Error> {
        Err(Error::BadNar(
            "a flat output must be a single regular file, found a directory".into(),
        ))
    }
    fn symlink(&mut self, _: &Path, _: &Path) -> Result<(), Error> {
        Err(Error::BadNar(
            "a flat output must be a single regular file, found a symlink".into(),
        ))
    }
    fn regular(
        &mut self,
        _: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), Error> {
        if executable {
            return Err(Error::BadNar("a flat output must not be executable".into()));
        }
        let mut hashes = ContentHasher::new(self.hashes.clone(), size);
        let mut reader = HashingReader {
            inner: contents,
            hashes: &mut hashes,
        };
        match &mut self.mirror {
            Some(temp) => nar::copy_contents(&mut reader, &mut temp.file)?,
            None => nar::copy_contents(&mut reader, &mut io::sink())?,
        };
        self.digests = Some(hashes.finish());
        Ok(())
    }
}

/// Checks a NAR's structure and nothing else.
pub(super) struct ValidateOnly;

impl NarVisitor for ValidateOnly {
    fn directory(&mut self, _: &Path) -> Result<(), Error> {
        Ok(())
    }
    fn symlink(&mut self, _: &Path, _: &Path) -> Result<(), Error> {
        Ok(())
    }
    fn regular(&mut self, _: &Path, _: bool, _: u64, _: &mut dyn Read) -> Result<(), Error> {
        Ok(())
    }
}
