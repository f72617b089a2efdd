//! Seals: what makes "already present" mean "verified present" without hashing again.
//!
//! When a NAR file or a hashed-mirror file is placed (its bytes hashed on the way), or when
//! `srcgrab verify` has re-hashed it, its identity (device, inode, size, modification time)
//! is recorded under `.srcgrab/seals/<its path>`. A file whose identity still matches its
//! seal holds the bytes that were checked: anything that writes into it changes its mtime,
//! anything that replaces it changes its inode. A presence check compares the two with one
//! `lstat` and one small read; a file without a seal, or whose seal does not match, counts as
//! absent, so the next fetch publishes it again. Seals are written without fsync: a seal
//! lost in a crash only costs a publish.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::layout::DiskLayout;
use crate::store::Error;

/// A file's identity as recorded in its seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Identity {
        Identity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_ns: meta.mtime_nsec(),
        }
    }

    fn render(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            self.device, self.inode, self.size, self.mtime, self.mtime_ns
        )
    }

    fn parse(text: &str) -> Option<Identity> {
        let mut fields = text.split_ascii_whitespace().map(str::parse::<i128>);
        let mut next = || fields.next()?.ok();
        let identity = Identity {
            device: next()?.try_into().ok()?,
            inode: next()?.try_into().ok()?,
            size: next()?.try_into().ok()?,
            mtime: next()?.try_into().ok()?,
            mtime_ns: next()?.try_into().ok()?,
        };
        Some(identity)
    }
}

/// A seal is one short line; anything longer is not one.
const MAX_SEAL: u64 = 128;

/// Records the identity of `rel` (a regular file under the root) as it is now.
pub(super) fn record(disk: &DiskLayout, rel: &Path) -> Result<(), Error> {
    let file = disk.root().join(rel);
    let meta =
        fs::symlink_metadata(&file).map_err(Error::io(format!("stat {}", file.display())))?;
    let seal = disk.seal(rel);
    let dir = seal.parent().expect("seals are below the state directory");
    fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(format!(
        "creating a temp file in {}",
        dir.display()
    )))?;
    io::Write::write_all(&mut temp, Identity::of(&meta).render().as_bytes())
        .map_err(Error::io(format!("writing {}", seal.display())))?;
    temp.persist(&seal)
        .map_err(|e| Error::io(format!("writing {}", seal.display()))(e.error))?;
    Ok(())
}

/// Seals `rel` after a check that read it, when it is still the file `checked` describes (the
/// metadata taken as it was opened): a file written to during the check is left unsealed.
/// Best effort: on a read-only cache nothing is recorded and the check stands as it is.
pub(super) fn record_if_unchanged(disk: &DiskLayout, rel: &Path, checked: &fs::Metadata) {
    let now = fs::symlink_metadata(disk.root().join(rel));
    if now.is_ok_and(|now| Identity::of(&now) == Identity::of(checked)) {
        let _ = record(disk, rel);
    }
}

/// Whether `rel` is a regular file (not a symlink, FIFO or device) whose identity matches its
/// seal.
pub(super) fn holds(disk: &DiskLayout, rel: &Path) -> Result<bool, Error> {
    let file = disk.root().join(rel);
    let meta = match fs::symlink_metadata(&file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("checking {}", file.display()))(e)),
    };
    if !meta.file_type().is_file() {
        return Ok(false);
    }
    let seal = disk.seal(rel);
    let mut text = String::new();
    let read = fs::File::open(&seal).and_then(|f| f.take(MAX_SEAL).read_to_string(&mut text));
    match read {
        Ok(_) => Ok(Identity::parse(&text) == Some(Identity::of(&meta))),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::io(format!("reading {}", seal.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_holds_until_it_is_written_to_or_replaced() {
        let root = tempfile::tempdir().unwrap();
        let disk = DiskLayout::new(root.path());
        let rel = Path::new("sha256/abc");
        fs::create_dir_all(root.path().join("sha256")).unwrap();
        fs::write(root.path().join(rel), b"checked").unwrap();
        assert!(!holds(&disk, rel).unwrap(), "no seal yet");
        record(&disk, rel).unwrap();
        assert!(holds(&disk, rel).unwrap());

        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(root.path().join(rel), b"changed").unwrap();
        assert!(!holds(&disk, rel).unwrap(), "written to since");

        record(&disk, rel).unwrap();
        fs::remove_file(root.path().join(rel)).unwrap();
        std::os::unix::fs::symlink("/dev/null", root.path().join(rel)).unwrap();
        assert!(!holds(&disk, rel).unwrap(), "a symlink is no sealed file");
    }
}
