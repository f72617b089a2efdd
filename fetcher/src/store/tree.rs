//! NAR to and from the filesystem: `nix-store --dump` of a path and its inverse, on top of
//! the pure codec in [`srcgrab_formats::nar`]. Only the owner's execute bit is kept (as Nix
//! does), nothing else of the metadata.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use srcgrab_formats::nar::{self, NarEncoder, NarError, NarVisitor};

use crate::store::Error;

/// Serialises the file, symlink or directory tree at `path` as `nix-store --dump` does.
/// Returns the NAR size.
pub fn dump_path(path: &Path, out: &mut impl Write) -> Result<u64, Error> {
    let mut encoder = NarEncoder::new(out)?;
    dump_node(&mut encoder, path)?;
    Ok(encoder.written())
}

fn dump_node<W: Write>(encoder: &mut NarEncoder<W>, path: &Path) -> Result<(), Error> {
    let meta =
        fs::symlink_metadata(path).map_err(Error::io(format!("lstat {}", path.display())))?;
    let file_type = meta.file_type();
    if file_type.is_file() {
        let mut file =
            fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
        let executable = meta.permissions().mode() & 0o100 != 0;
        encoder
            .regular(&mut file, meta.len(), executable)
            .map_err(|e| match e {
                NarError::ReadContents(source) => {
                    Error::io(format!("reading {}", path.display()))(source)
                }
                NarError::ContentsLength(how) => {
                    Error::io(format!("reading {}", path.display()))(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("file {how} while archiving"),
                    ))
                }
                other => other.into(),
            })
    } else if file_type.is_symlink() {
        let target =
            fs::read_link(path).map_err(Error::io(format!("readlink {}", path.display())))?;
        Ok(encoder.symlink(target.as_os_str().as_bytes())?)
    } else if file_type.is_dir() {
        let mut names = fs::read_dir(path)
            .map_err(Error::io(format!("listing {}", path.display())))?
            .map(|entry| entry.map(|e| e.file_name().into_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::io(format!("listing {}", path.display())))?;
        names.sort_unstable();
        encoder.directory()?;
        for name in names {
            encoder.entry(&name)?;
            dump_node(encoder, &path.join(std::ffi::OsStr::from_bytes(&name)))?;
            encoder.end_entry()?;
        }
        Ok(encoder.end_directory()?)
    } else {
        let kind = if file_type.is_socket() {
            "socket"
        } else if file_type.is_fifo() {
            "fifo"
        } else if file_type.is_block_device() {
            "block device"
        } else if file_type.is_char_device() {
            "character device"
        } else {
            "unknown file type"
        };
        Err(Error::UnsupportedFileType {
            path: path.to_path_buf(),
            kind,
        })
    }
}

/// Recreates the tree of a NAR at `dest`, which must not exist yet. Files get mode 0644 or
/// 0755 and directories 0755 (writable, unlike the store, so the result can be moved or
/// deleted); the NAR's structure checks guarantee nothing lands outside `dest`.
pub fn restore(nar: impl Read, dest: &Path) -> Result<(), Error> {
    struct Restorer<'a> {
        dest: &'a Path,
    }
    impl Restorer<'_> {
        fn target(&self, path: &Path) -> PathBuf {
            if path.as_os_str().is_empty() {
                self.dest.to_path_buf()
            } else {
                self.dest.join(path)
            }
        }
    }
    impl NarVisitor for Restorer<'_> {
        type Error = Error;
        fn directory(&mut self, path: &Path) -> Result<(), Error> {
            let target = self.target(path);
            fs::create_dir(&target).map_err(Error::io(format!("creating {}", target.display())))
        }
        fn symlink(&mut self, path: &Path, link: &Path) -> Result<(), Error> {
            let target = self.target(path);
            std::os::unix::fs::symlink(link, &target)
                .map_err(Error::io(format!("creating symlink {}", target.display())))
        }
        fn regular(
            &mut self,
            path: &Path,
            executable: bool,
            _size: u64,
            contents: &mut dyn Read,
        ) -> Result<(), Error> {
            let target = self.target(path);
            let mode = if executable { 0o755 } else { 0o644 };
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)
                .map_err(Error::io(format!("creating {}", target.display())))?;
            nar::copy_contents(contents, &mut file)?;
            Ok(())
        }
    }
    nar::parse(nar, &mut Restorer { dest }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_and_restore_round_trip_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub/empty")).unwrap();
        fs::write(src.join("sub/file"), b"hello").unwrap();
        fs::write(src.join("run"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../run", src.join("sub/link")).unwrap();
        let mut nar_bytes = Vec::new();
        let size = dump_path(&src, &mut nar_bytes).unwrap();
        assert_eq!(size, nar_bytes.len() as u64);
        let copy = tmp.path().join("copy");
        restore(nar_bytes.as_slice(), &copy).unwrap();
        let mut again = Vec::new();
        dump_path(&copy, &mut again).unwrap();
        assert_eq!(nar_bytes, again);
        assert_eq!(
            fs::read_link(copy.join("sub/link")).unwrap(),
            Path::new("../run")
        );
    }

    #[test]
    fn dump_refuses_a_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let err = dump_path(tmp.path(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFileType { kind: "fifo", .. }),
            "{err}"
        );
    }
}
