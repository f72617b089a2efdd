//! Files of the cache are read only when they are regular files at that very path: no
//! symlink is followed (so nothing outside the cache is read), no FIFO opened (it would
//! block), no device read (/dev/zero never ends). The small text files (narinfos,
//! `nix-cache-info`) are also read only up to a cap, so a planted or damaged file costs
//! bounded memory and time.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::store::Error;

/// A narinfo is a few hundred bytes; one with the References of a large closure a few
/// dozen KiB. Nix itself reads them whole.
pub const MAX_NARINFO: u64 = 1 << 20;
/// `nix-cache-info` is three short lines.
pub const MAX_CACHE_INFO: u64 = 64 << 10;

/// What is at a path where a regular file is expected.
#[derive(Debug)]
pub enum Opened {
    /// Open for reading, with its metadata as opened.
    File(File, Metadata),
    Absent,
    /// Present but not a regular file: what it is, for a report.
    Refused(String),
}

/// Opens `path` for reading when it is a regular file (not through a symlink).
pub fn open(path: &Path) -> Result<Opened, Error> {
    let opened = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO for reading would wait for a writer forever. It has no
        // effect on reading a regular file.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Absent),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Opened::Refused("a symlink, not a regular file".into()))
        }
        Err(e) => return Err(Error::io(format!("opening {}", path.display()))(e)),
    };
    let meta = file
        .metadata()
        .map_err(Error::io(format!("stat {}", path.display())))?;
    if !meta.file_type().is_file() {
        return Ok(Opened::Refused(format!(
            "{}, not a regular file",
            file_kind(&meta.file_type())
        )));
    }
    Ok(Opened::File(file, meta))
}

/// [`open`], with anything but a regular file as an error about `path`.
pub fn open_existing(path: &Path) -> Result<(File, Metadata), Error> {
    match open(path)? {
        Opened::File(file, meta) => Ok((file, meta)),
        Opened::Absent => Err(Error::io(format!("opening {}", path.display()))(
            io::ErrorKind::NotFound.into(),
        )),
        Opened::Refused(why) => Err(refused(path, why)),
    }
}

/// What is at a path where a small text file is expected.
#[derive(Debug)]
pub enum SmallFile {
    Text(String),
    Absent,
    /// Present but not something to read: why, for a report.
    Refused(String),
}

/// Reads `path` when it is a regular file of at most `max` bytes of UTF-8.
pub fn read_small(path: &Path, max: u64) -> Result<SmallFile, Error> {
    let (file, meta) = match open(path)? {
        Opened::File(file, meta) => (file, meta),
        Opened::Absent => return Ok(SmallFile::Absent),
        Opened::Refused(why) => return Ok(SmallFile::Refused(why)),
    };
    if meta.len() > max {
        return Ok(SmallFile::Refused(too_big(meta.len(), max)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the stat: read one byte past the cap to tell.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(format!("reading {}", path.display())))?;
    if bytes.len() as u64 > max {
        return Ok(SmallFile::Refused(too_big(bytes.len() as u64, max)));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SmallFile::Text(text)),
        Err(_) => Ok(SmallFile::Refused("not UTF-8 text".into())),
    }
}

/// Opens `rel` below `dir` (a directory someone brought: a bundle, a disk) when it is a
/// regular file reached through real directories: a symlink anywhere on the way is refused,
/// never followed.
pub fn open_below(dir: &Path, rel: &Path) -> Result<File, Error> {
    let mut at = dir.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .collect();
    for component in parents {
        at.push(component);
        let meta = at
            .symlink_metadata()
            .map_err(Error::io(format!("opening {}", at.display())))?;
        if !meta.is_dir() {
            return Err(refused(
                &at,
                format!("{}, not a directory", file_kind(&meta.file_type())),
            ));
        }
    }
    let path = dir.join(rel);
    match open(&path)? {
        Opened::File(file, _) => Ok(file),
        Opened::Absent => Err(refused(&path, "missing".into())),
        Opened::Refused(why) => Err(refused(&path, why)),
    }
}

/// [`read_small`], with anything but a small regular file as an error about `path`.
pub fn read_small_or_refuse(path: &Path, max: u64) -> Result<String, Error> {
    match read_small(path, max)? {
        SmallFile::Text(text) => Ok(text),
        SmallFile::Absent => Err(refused(path, "missing".into())),
        SmallFile::Refused(why) => Err(refused(path, why)),
    }
}

fn refused(path: &Path, reason: String) -> Error {
    Error::RefusedFile {
        path: path.to_path_buf(),
        reason,
    }
}

fn too_big(len: u64, max: u64) -> String {
    format!("{len} bytes or more, more than the {max} a file of this kind may have")
}

/// A file type's name for a message.
pub fn file_kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path, max: u64) -> String {
        match read_small(path, max).unwrap() {
            SmallFile::Refused(why) => why,
            other => panic!("{} was read: {other:?}", path.display()),
        }
    }

    #[test]
    fn only_small_regular_files_at_the_path_itself_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.narinfo");
        std::fs::write(&file, "StorePath: x\n").unwrap();
        assert!(
            matches!(read_small(&file, 100).unwrap(), SmallFile::Text(t) if t == "StorePath: x\n")
        );
        assert!(matches!(
            read_small(&dir.path().join("none"), 100).unwrap(),
            SmallFile::Absent
        ));
        assert!(refused(&file, 5).contains("more than the 5"));

        let zero = dir.path().join("zero.narinfo");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(refused(&zero, MAX_NARINFO).contains("symlink"));

        let fifo = dir.path().join("fifo.narinfo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        assert!(refused(&fifo, MAX_NARINFO).contains("FIFO"));

        assert!(refused(Path::new("/dev/zero"), MAX_NARINFO).contains("device"));
    }
}
