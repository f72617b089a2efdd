//! Archives -> directory trees with nixpkgs fetchzip semantics.
//!
//! fetchzip renames the download to `download.<extension>` (or the basename of its first URL,
//! query string included) and runs stdenv's `unpackFile` on it: names matching `*.tar.xz`,
//! `*.tar.lzma`, `*.txz`, `*.tar`, `*.tar.*`, `*.tgz`, `*.tbz2`, `*.tbz` go to GNU tar (which
//! picks the decompressor from the magic bytes), names ending in `.zip` to unzip, anything
//! else fails. Here, a name that says nothing falls back to the magic bytes; a wrong guess
//! only produces a tree whose hash will not match.
//!
//! unzip drops control characters from entry names, so this does too.
//!
//! Then with `stripRoot` there must be exactly one top-level entry ("zip file must contain a
//! single file or directory"): a directory (or symlink) becomes the output, a lone file is
//! put inside an output directory. Only what a NAR records survives: the tree, file contents,
//! the owner's execute bit, symlink targets.
//!
//! Safety: nothing is ever written outside the destination. Entries with `..` or absolute
//! names, device and fifo entries, hard links to outside the tree, and entries whose path
//! runs through a symlink are refused with [`Error::UnsafeArchive`]. Symlinks themselves are
//! kept whatever they point to, absolute or `../..` included: GNU tar extracts them that way
//! in fetchzip (so refusing them would make such sources unreproducible), a dangling link in
//! a store path is harmless, and since nothing is ever written through a symlink they cannot
//! be used to escape during unpacking.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use srcgrab_manifest::Unpack;

use crate::store::Error;

const READ_BUFFER: usize = 256 * 1024;

/// The archive container, as unpackFile chooses its tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// GNU tar, with whatever compression the magic bytes say.
    Tar,
    Zip,
}

/// How a tar stream is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TarCompression {
    None,
    Gzip,
    Bzip2,
    Xz,
    /// The legacy `.lzma` format, which has no magic bytes: only a `.tar.lzma` name says so.
    Lzma,
    Zstd,
}

/// The file name fetchzip gives the download: `download.<extension>`, else the basename of
/// the URL as Nix's `baseNameOf` computes it (trailing slash dropped, query string kept).
pub fn download_name(url: &str, extension: Option<&str>) -> String {
    match extension {
        Some(extension) => format!("download.{extension}"),
        None => {
            let trimmed = url.strip_suffix('/').unwrap_or(url);
            trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
        }
    }
}

/// The format stdenv's unpackFile would use for a file of this name, if any.
pub fn format_from_name(file_name: &str) -> Option<ArchiveFormat> {
    let tar_suffixes = [
        ".tar.xz",
        ".tar.lzma",
        ".txz",
        ".tar",
        ".tgz",
        ".tbz2",
        ".tbz",
    ];
    if tar_suffixes.iter().any(|s| file_name.ends_with(s)) || file_name.contains(".tar.") {
        Some(ArchiveFormat::Tar)
    } else if file_name.ends_with(".zip") {
        Some(ArchiveFormat::Zip)
    } else {
        None
    }
}

fn magic_compression(head: &[u8]) -> Option<TarCompression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(TarCompression::Gzip)
    } else if head.starts_with(b"BZh") {
        Some(TarCompression::Bzip2)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(TarCompression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(TarCompression::Zstd)
    } else {
        None
    }
}

fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

fn is_plain_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// Unpacks `archive` into `dest` (which must not exist; its parent must) as fetchzip would.
/// `url` is the URL as the package wrote it (fetchzip looks at the basename of the first
/// one); `options.extension` overrides it.
pub fn unpack(archive: &Path, url: &str, options: &Unpack, dest: &Path) -> Result<(), Error> {
    let unpack_error = |reason: String| Error::Unpack {
        archive: archive.to_path_buf(),
        reason,
    };
    let mut file =
        File::open(archive).map_err(Error::io(format!("opening {}", archive.display())))?;
    let mut head = Vec::with_capacity(512);
    (&mut file)
        .take(512)
        .read_to_end(&mut head)
        .map_err(Error::io(format!("reading {}", archive.display())))?;
    file.rewind()
        .map_err(Error::io(format!("reading {}", archive.display())))?;

    let name = download_name(url, options.extension.as_deref());
    let format = match format_from_name(&name) {
        Some(format) => format,
        None if is_zip(&head) => ArchiveFormat::Zip,
        None if magic_compression(&head).is_some() || is_plain_tar(&head) => ArchiveFormat::Tar,
        None => return Err(unpack_error(format!("do not know how to unpack '{name}'"))),
    };

    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(Error::io(format!(
            "creating a directory in {}",
            parent.display()
        )))?;
    let root = staging.path().join("unpack");
    fs::create_dir(&root).map_err(Error::io(format!("creating {}", root.display())))?;
    let tree = Tree {
        root: &root,
        archive,
    };
    match format {
        ArchiveFormat::Tar => {
            let compression = magic_compression(&head).unwrap_or(if name.ends_with(".tar.lzma") {
                TarCompression::Lzma
            } else {
                TarCompression::None
            });
            extract_tar(&tree, decompress(compression, file)?)?;
        }
        ArchiveFormat::Zip => extract_zip(&tree, file)?,
    }

    let moved = if options.strip_root {
        let mut entries = fs::read_dir(&root)
            .map_err(Error::io(format!("listing {}", root.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::io(format!("listing {}", root.display())))?;
        if entries.len() != 1 {
            return Err(unpack_error(format!(
                "with stripRoot the archive must contain a single file or directory, \
                 found {} top-level entries",
                entries.len()
            )));
        }
        let single = entries.pop().expect("one entry").path();
        let file_type = fs::symlink_metadata(&single)
            .map_err(Error::io(format!("lstat {}", single.display())))?
            .file_type();
        if file_type.is_file() {
            fs::create_dir(dest)
                .and_then(|()| fs::rename(&single, dest.join(single.file_name().expect("named"))))
        } else {
            fs::rename(&single, dest)
        }
    } else {
        fs::rename(&root, dest)
    };
    moved.map_err(Error::io(format!(
        "moving the unpacked tree to {}",
        dest.display()
    )))
}

fn decompress(compression: TarCompression, file: File) -> Result<Box<dyn Read>, Error> {
    let buffered = BufReader::with_capacity(READ_BUFFER, file);
    Ok(match compression {
        TarCompression::None => Box::new(buffered),
        TarCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        TarCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(buffered)),
        TarCompression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(buffered)),
        TarCompression::Lzma => Box::new(xz2::read::XzDecoder::new_stream(
            buffered,
            xz2::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| Error::io("starting lzma decoder")(e.into()))?,
        )),
        TarCompression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(Error::io("starting zstd decoder"))?,
        ),
    })
}

/// The directory being filled, with the checks that keep every write inside it.
struct Tree<'a> {
    root: &'a Path,
    archive: &'a Path,
}

impl Tree<'_> {
    fn unsafe_archive(&self, reason: String) -> Error {
        Error::UnsafeArchive {
            archive: self.archive.to_path_buf(),
            reason,
        }
    }

    fn unpack_error(&self, reason: String) -> Error {
        Error::Unpack {
            archive: self.archive.to_path_buf(),
            reason,
        }
    }

    /// An entry name made relative and normal (`./a//b/` -> `a/b`); `None` for the root
    /// itself. Absolute names and `..` are refused.
    fn relative(&self, raw: &[u8]) -> Result<Option<PathBuf>, Error> {
        let shown = || String::from_utf8_lossy(raw).into_owned();
        if raw.contains(&0) {
            return Err(self.unsafe_archive(format!("entry name with a NUL byte: {}", shown())));
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(raw));
        let mut relative = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(self.unsafe_archive(format!("entry '{}' contains '..'", shown())))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_archive(format!("entry '{}' is absolute", shown())))
                }
            }
        }
        Ok((!relative.as_os_str().is_empty()).then_some(relative))
    }

    /// Checks that every existing ancestor of `relative` is a real directory (never a symlink)
    /// and returns the full path; creates missing ancestors when `create` is set.
    fn walk_parents(&self, relative: &Path, create: bool) -> Result<PathBuf, Error> {
        let mut current = self.root.to_path_buf();
        let parents: Vec<_> = relative.components().collect();
        for component in &parents[..parents.len().saturating_sub(1)] {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.unsafe_archive(format!(
                        "entry '{}' goes through the symlink '{}'",
                        relative.display(),
                        current
                            .strip_prefix(self.root)
                            .unwrap_or(&current)
                            .display()
                    )))
                }
                Ok(_) => {
                    return Err(self.unpack_error(format!(
                        "entry '{}' goes through a file",
                        relative.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&current)
                        .map_err(Error::io(format!("creating {}", current.display())))?;
                }
                Err(e) => return Err(Error::io(format!("lstat {}", current.display()))(e)),
            }
        }
        Ok(self.root.join(relative))
    }

    /// Makes room for a new non-directory entry: a later duplicate replaces an earlier file
    /// or link, as tar does; it never replaces a directory.
    fn clear(&self, path: &Path) -> Result<(), Error> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_dir() => Err(self.unpack_error(format!(
                "entry '{}' would replace a directory",
                path.strip_prefix(self.root).unwrap_or(path).display()
            ))),
            Ok(_) => {
                fs::remove_file(path).map_err(Error::io(format!("replacing {}", path.display())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("lstat {}", path.display()))(e)),
        }
    }

    fn directory(&self, relative: &Path) -> Result<(), Error> {
        let path = self.walk_parents(relative, true)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => Ok(()),
            Ok(_) => Err(self.unpack_error(format!(
                "directory entry '{}' would replace a file or symlink",
                relative.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(Error::io(format!("creating {}", path.display())))
            }
            Err(e) => Err(Error::io(format!("lstat {}", path.display()))(e)),
        }
    }

    fn file(&self, relative: &Path, mode: u32, contents: &mut dyn Read) -> Result<(), Error> {
        let path = self.walk_parents(relative, true)?;
        self.clear(&path)?;
        let executable = mode & 0o100 != 0;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o755 } else { 0o644 })
            .open(&path)
            .map_err(Error::io(format!("creating {}", path.display())))?;
        let mut writer = io::BufWriter::with_capacity(READ_BUFFER, &mut out);
        io::copy(contents, &mut writer)
            .and_then(|_| io::Write::flush(&mut writer))
            .map_err(|e| self.io_or_corrupt(e, &path))?;
        Ok(())
    }

    /// A read error while extracting is a corrupt archive; a write error is the disk's.
    fn io_or_corrupt(&self, error: io::Error, path: &Path) -> Error {
        match error.kind() {
            io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof => {
                self.unpack_error(format!("corrupt data for {}: {error}", path.display()))
            }
            _ => Error::io(format!("writing {}", path.display()))(error),
        }
    }

    fn symlink(&self, relative: &Path, target: &[u8]) -> Result<(), Error> {
        if target.is_empty() || target.contains(&0) {
            return Err(self.unpack_error(format!(
                "symlink '{}' has no valid target",
                relative.display()
            )));
        }
        let path = self.walk_parents(relative, true)?;
        self.clear(&path)?;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
            .map_err(Error::io(format!("creating symlink {}", path.display())))
    }

    /// A tar hard link: another name for an already extracted regular file in the tree.
    fn hard_link(&self, relative: &Path, target: &[u8]) -> Result<(), Error> {
        let target_relative = self.relative(target)?.ok_or_else(|| {
            self.unsafe_archive(format!("hard link '{}' to the root", relative.display()))
        })?;
        let source = self.walk_parents(&target_relative, false)?;
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.file_type().is_file() => {}
            _ => {
                return Err(self.unsafe_archive(format!(
                    "hard link '{}' points to '{}', which is not a file extracted earlier",
                    relative.display(),
                    target_relative.display()
                )))
            }
        }
        let path = self.walk_parents(relative, true)?;
        if path == source {
            return Ok(());
        }
        self.clear(&path)?;
        fs::hard_link(&source, &path).map_err(Error::io(format!("linking {}", path.display())))
    }
}

fn extract_tar(tree: &Tree, input: Box<dyn Read>) -> Result<(), Error> {
    let corrupt = |e: io::Error| tree.unpack_error(format!("not a readable tar archive: {e}"));
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) || kind.as_byte() == b'V' {
            continue;
        }
        let raw_name = entry.path_bytes().into_owned();
        let Some(relative) = tree.relative(&raw_name)? else {
            continue;
        };
        let mode = entry.header().mode().map_err(corrupt)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                tree.file(&relative, mode, &mut entry)?
            }
            tar::EntryType::Directory => tree.directory(&relative)?,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    tree.unpack_error(format!("link '{}' without a target", relative.display()))
                })?;
                if kind == tar::EntryType::Symlink {
                    tree.symlink(&relative, &target)?
                } else {
                    tree.hard_link(&relative, &target)?
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(tree.unsafe_archive(format!(
                    "entry '{}' is a device or fifo",
                    relative.display()
                )))
            }
            other => {
                return Err(tree.unpack_error(format!(
                    "entry '{}' has unsupported tar type '{}'",
                    relative.display(),
                    other.as_byte() as char
                )))
            }
        }
    }
    Ok(())
}

fn extract_zip(tree: &Tree, file: File) -> Result<(), Error> {
    let corrupt =
        |e: zip::result::ZipError| tree.unpack_error(format!("not a readable zip archive: {e}"));
    let mut archive =
        zip::ZipArchive::new(BufReader::with_capacity(READ_BUFFER, file)).map_err(corrupt)?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(corrupt)?;
        let mut raw_name = entry.name_raw().to_vec();
        // unzip drops control characters from the names it extracts (a tab included).
        raw_name.retain(|&byte| byte >= 0x20);
        let Some(relative) = tree.relative(&raw_name)? else {
            continue;
        };
        let mode = entry.unix_mode().unwrap_or(0o644);
        let file_type = mode & libc::S_IFMT;
        if entry.is_dir() || file_type == libc::S_IFDIR {
            tree.directory(&relative)?;
        } else if file_type == libc::S_IFLNK {
            let mut target = Vec::new();
            entry
                .read_to_end(&mut target)
                .map_err(|e| tree.io_or_corrupt(e, &relative))?;
            tree.symlink(&relative, &target)?;
        } else if matches!(file_type, 0 | libc::S_IFREG) {
            tree.file(&relative, mode, &mut entry)?;
        } else {
            return Err(tree.unsafe_archive(format!(
                "entry '{}' is a device, fifo or socket",
                relative.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_name_follows_fetchzip() {
        assert_eq!(
            download_name("https://x.org/a/b-1.0.tar.gz", None),
            "b-1.0.tar.gz"
        );
        assert_eq!(
            download_name("https://x.org/get?f=b.zip", None),
            "get?f=b.zip"
        );
        assert_eq!(download_name("https://x.org/dir/", None), "dir");
        assert_eq!(
            download_name("https://x.org/archive", Some("tar.gz")),
            "download.tar.gz"
        );
    }

    #[test]
    fn format_from_name_follows_unpack_file() {
        for tar in [
            "a.tar",
            "a.tar.gz",
            "a.tgz",
            "a.tar.zst",
            "a.tbz2",
            "a.txz",
            "a.tar.gz?raw=1",
        ] {
            assert_eq!(format_from_name(tar), Some(ArchiveFormat::Tar), "{tar}");
        }
        assert_eq!(format_from_name("a.zip"), Some(ArchiveFormat::Zip));
        // unzip's hook matches '\.zip$' only, case-sensitively.
        assert_eq!(format_from_name("a.ZIP"), None);
        assert_eq!(format_from_name("a.zip?raw=1"), None);
        assert_eq!(format_from_name("a.gz"), None);
    }

    #[test]
    fn magic_bytes_identify_compressions() {
        assert_eq!(
            magic_compression(&[0x1f, 0x8b, 8]),
            Some(TarCompression::Gzip)
        );
        assert_eq!(magic_compression(b"BZh91AY"), Some(TarCompression::Bzip2));
        assert_eq!(
            magic_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(TarCompression::Zstd)
        );
        assert_eq!(magic_compression(b"\xfd7zXZ\0"), Some(TarCompression::Xz));
        assert_eq!(magic_compression(b"plain"), None);
        assert!(is_zip(b"PK\x03\x04rest"));
    }
}
