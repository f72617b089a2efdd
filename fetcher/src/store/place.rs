//! Atomic placement: every file becomes visible by a rename from `.tmp` (same filesystem),
//! after an fsync, so a reader sees the whole file or none.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempPath};

use srcgrab_formats::hash::HashAlgo;

use super::{seal, Cache, HashedWrites, WRITE_BUFFER};
use crate::store::Error;

/// A file being written in `.tmp`, removed when dropped unless persisted. Written through
/// the plain `File`, so I/O errors keep their OS code (ENOSPC stays a full disk;
/// `NamedTempFile`'s own writes would hide it behind the path).
pub(super) struct TempFile {
    pub(super) file: File,
    pub(super) path: TempPath,
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Where a file placed in the cache comes from.
pub(super) enum FileSource {
    /// A file the caller handed in; hard-linked (or copied) into place.
    Existing(PathBuf),
    /// A temp file written while publishing.
    Temp(TempFile),
}

impl Cache {
    pub(super) fn new_temp(&self) -> Result<TempFile, Error> {
        let (file, path) = NamedTempFile::new_in(self.temp_dir())
            .map_err(Error::io(format!(
                "creating a temp file in {}",
                self.temp_dir().display()
            )))?
            .into_parts();
        Ok(TempFile { file, path })
    }

    /// Copies bytes that are not the cache's to keep (a bundle's, a visitor's disk's) into a
    /// temp file, hashed with `algo` on the way, so what is published from the copy is not
    /// read again to hash it. `what` names the source in a read error.
    pub(super) fn copy_to_temp(
        &self,
        source: &mut dyn Read,
        algo: HashAlgo,
        what: &str,
    ) -> Result<(TempFile, HashedWrites), Error> {
        let mut temp = self.new_temp()?;
        let written = format!("writing {}", temp.path.display());
        let mut hashed = HashedWrites::new(algo);
        let mut buffer = vec![0; WRITE_BUFFER];
        loop {
            let n = source
                .read(&mut buffer)
                .map_err(Error::io(format!("reading {what}")))?;
            if n == 0 {
                break;
            }
            hashed
                .write(&mut temp.file, &buffer[..n])
                .map_err(Error::io(written.clone()))?;
        }
        temp.file.flush().map_err(Error::io(written))?;
        Ok((temp, hashed))
    }

    /// Places a content-named file (a NAR file, a mirror file; `rel` is relative to the root)
    /// and seals it. A file already there under its seal holds these very bytes (its name is
    /// their hash, checked when it was sealed) and is kept: replacing it would only break the
    /// seal of another entry that shares it.
    pub(super) fn place(&self, source: FileSource, rel: &Path) -> Result<(), Error> {
        if seal::holds(&self.disk, rel)? {
            return Ok(());
        }
        let target = self.root().join(rel);
        match source {
            FileSource::Temp(temp) => self.persist(temp, &target)?,
            FileSource::Existing(file) => self.link_or_copy(&file, &target)?,
        }
        seal::record(&self.disk, rel)
    }

    /// Makes `link` point to `target`. Creating a symlink is atomic by itself, so an absent
    /// link is created in place (its directory only when missing: publishing thousands of
    /// small files is syscall-bound); an identical one is kept; anything else is replaced
    /// atomically through a temp link and a rename.
    pub(super) fn place_symlink(&self, link: &Path, target: &Path) -> Result<(), Error> {
        let context = || format!("creating symlink {}", link.display());
        let create = || std::os::unix::fs::symlink(target, link);
        let created = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = link.parent().expect("keys are below the root");
                fs::create_dir_all(parent)
                    .map_err(Error::io(format!("creating {}", parent.display())))?;
                create()
            }
            other => other,
        };
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::read_link(link).is_ok_and(|existing| existing == target) {
                    return Ok(());
                }
                let temp_link = self
                    .temp_dir()
                    .join(format!("link-{:016x}", fastrand::u64(..)));
                std::os::unix::fs::symlink(target, &temp_link).map_err(Error::io(context()))?;
                fs::rename(&temp_link, link).map_err(|e| {
                    let _ = fs::remove_file(&temp_link);
                    Error::io(context())(e)
                })
            }
            Err(e) => Err(Error::io(context())(e)),
        }
    }

    /// Hard-links `file` to `target` atomically (link to a temp name, rename), copying
    /// instead when they are on different filesystems.
    pub(super) fn link_or_copy(&self, file: &Path, target: &Path) -> Result<(), Error> {
        File::open(file)
            .and_then(|f| {
                f.sync_all()?;
                f.set_permissions(fs::Permissions::from_mode(0o644))
            })
            .map_err(Error::io(format!("syncing {}", file.display())))?;
        let temp_link = self
            .temp_dir()
            .join(format!("mirror-{:016x}", fastrand::u64(..)));
        match fs::hard_link(file, &temp_link) {
            Ok(()) => {
                let renamed = fs::rename(&temp_link, target)
                    .map_err(Error::io(format!("renaming {}", target.display())));
                // rename() between two links to one inode succeeds without doing anything
                // (POSIX), which happens when the same file is published twice.
                let _ = fs::remove_file(&temp_link);
                renamed
            }
            Err(_) => {
                let mut temp = self.new_temp()?;
                let mut input =
                    File::open(file).map_err(Error::io(format!("opening {}", file.display())))?;
                io::copy(&mut input, &mut temp.file)
                    .map_err(Error::io(format!("copying {}", file.display())))?;
                self.persist(temp, target)
            }
        }
    }

    /// fsync, world-readable (a cache is served as is), rename into place.
    pub(super) fn persist(&self, temp: TempFile, target: &Path) -> Result<(), Error> {
        let context = || format!("writing {}", target.display());
        temp.file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(Error::io(context()))?;
        temp.file.sync_all().map_err(Error::io(context()))?;
        drop(temp.file);
        temp.path
            .persist(target)
            .map_err(|e| Error::io(context())(e.error))
    }

    pub(crate) fn write_atomically(&self, target: &Path, contents: &[u8]) -> Result<(), Error> {
        let mut temp = self.new_temp()?;
        temp.write_all(contents)
            .map_err(Error::io(format!("writing {}", target.display())))?;
        self.persist(temp, target)
    }
}
