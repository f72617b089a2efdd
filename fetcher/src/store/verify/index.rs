//! The blake3 index (`.srcgrab/blake3-index`): size, mtime and blake3 of every file that
//! passed a full check, so `verify --quick` can accept a file whose bytes are still those.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::store::regular_file;
use crate::store::DiskLayout;
use crate::store::Error;

/// One file's identity in the blake3 index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) size: u64,
    pub(super) mtime_ns: u128,
    blake3: [u8; 32],
}

/// `<blake3 hex> <size> <mtime ns> <path>` per line, sorted by path.
#[derive(Debug, Default)]
pub(super) struct Blake3Index {
    pub(super) files: HashMap<PathBuf, Fingerprint>,
}

impl Blake3Index {
    pub(super) fn read(disk: &DiskLayout) -> Blake3Index {
        let Ok(text) = fs::read_to_string(disk.blake3_index()) else {
            return Blake3Index::default();
        };
        let parse = |line: &str| -> Option<(PathBuf, Fingerprint)> {
            let mut parts = line.splitn(4, ' ');
            let hex = parts.next()?;
            let size = parts.next()?.parse().ok()?;
            let mtime_ns = parts.next()?.parse().ok()?;
            let path = PathBuf::from(parts.next()?);
            let blake3 = blake3::Hash::from_hex(hex).ok()?;
            Some((
                path,
                Fingerprint {
                    size,
                    mtime_ns,
                    blake3: *blake3.as_bytes(),
                },
            ))
        };
        // A damaged line only costs that file a full check.
        Blake3Index {
            files: text.lines().filter_map(parse).collect(),
        }
    }

    pub(super) fn write(&self, disk: &DiskLayout) -> Result<(), Error> {
        let dir = disk.state_dir();
        fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let sorted: BTreeMap<_, _> = self.files.iter().collect();
        let mut text = String::new();
        for (path, f) in sorted {
            text.push_str(&format!(
                "{} {} {} {}\n",
                blake3::Hash::from(f.blake3).to_hex(),
                f.size,
                f.mtime_ns,
                path.display()
            ));
        }
        let mut temp = tempfile::NamedTempFile::new_in(&dir).map_err(Error::io(format!(
            "creating a temp file in {}",
            dir.display()
        )))?;
        io::Write::write_all(&mut temp, text.as_bytes()).map_err(Error::io(format!(
            "writing {}",
            disk.blake3_index().display()
        )))?;
        temp.persist(disk.blake3_index()).map_err(|e| {
            Error::io(format!("writing {}", disk.blake3_index().display()))(e.error)
        })?;
        Ok(())
    }
}

/// Size, mtime and blake3 of a regular file as it is now (never through a symlink).
pub(super) fn fingerprint(path: &Path) -> Result<Fingerprint, Error> {
    let (mut file, meta) = regular_file::open_existing(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Fingerprint {
        size: meta.len(),
        mtime_ns: mtime_ns(&meta),
        blake3: *hasher.finalize().as_bytes(),
    })
}

pub(super) fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blake3_index_reads_back_what_it_wrote_and_skips_damaged_lines() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("a"), b"contents").unwrap();
        let print = fingerprint(&root.path().join("a")).unwrap();
        assert_eq!(print.blake3, *blake3::hash(b"contents").as_bytes());
        let mut index = Blake3Index::default();
        index
            .files
            .insert(PathBuf::from("nar/with space.nar"), print);
        let disk = DiskLayout::new(root.path());
        index.write(&disk).unwrap();
        let path = disk.blake3_index();
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("not-hex 1 2 nar/broken\n");
        fs::write(&path, text).unwrap();
        let back = Blake3Index::read(&disk);
        assert_eq!(back.files.len(), 1);
        assert_eq!(back.files[Path::new("nar/with space.nar")], print);
    }
}
