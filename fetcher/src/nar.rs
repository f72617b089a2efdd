//! Nix ARchive (NAR) encoding and decoding, streaming and in constant memory.
//!
//! The encoder is byte-identical to `nix-store --dump`: every string is a little-endian u64
//! length, the bytes, and zero padding to 8; a node is `( type regular [executable ""]
//! contents <data> )`, `( type symlink target <t> )` or `( type directory entry ( name <n>
//! node <node> ) ... )` with entries in byte order of their names. Only the owner's execute
//! bit is kept (as Nix does), nothing else of the metadata.
//!
//! The decoder checks the structure as strictly as Nix (sorted, unique, sane names; zero
//! padding; nothing after the end) and hands each node to a [`NarVisitor`], so callers can
//! validate, hash a single file's contents, or restore a tree without buffering the NAR.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

const MAGIC: &[u8] = b"nix-archive-1";
/// Buffer for copying file contents: large enough that syscalls and hashing dominate.
const COPY_BUFFER: usize = 256 * 1024;
/// Longest string (name, symlink target, keyword) the decoder accepts; file contents are
/// streamed and not subject to it. Linux's PATH_MAX is 4096, so this leaves ample room.
const MAX_STRING: u64 = 64 * 1024;
/// Deepest directory nesting the decoder accepts, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 2048;

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Bytes a string takes in a NAR: length prefix, data, padding.
fn string_size(len: u64) -> u64 {
    8 + len + padding(len) as u64
}

/// The size of the NAR of a single regular file of `len` bytes, without building it.
pub fn file_nar_size(len: u64, executable: bool) -> u64 {
    let keywords: &[&[u8]] = &[MAGIC, b"(", b"type", b"regular", b"contents", b")"];
    let executable_marker = if executable {
        string_size(b"executable".len() as u64) + string_size(0)
    } else {
        0
    };
    keywords
        .iter()
        .map(|k| string_size(k.len() as u64))
        .sum::<u64>()
        + executable_marker
        + string_size(len)
}

/// Writes NAR tokens to a sink, counting the bytes so callers learn the NAR size for free.
struct NarWriter<'a, W: Write> {
    out: &'a mut W,
    written: u64,
}

impl<'a, W: Write> NarWriter<'a, W> {
    fn new(out: &'a mut W) -> Self {
        NarWriter { out, written: 0 }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out
            .write_all(bytes)
            .map_err(Error::io("writing NAR"))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// A whole string token in one write: small writes are the common case (keywords, names).
    fn string(&mut self, s: &[u8]) -> Result<(), Error> {
        let mut token = Vec::with_capacity(string_size(s.len() as u64) as usize);
        token.extend_from_slice(&(s.len() as u64).to_le_bytes());
        token.extend_from_slice(s);
        token.resize(token.len() + padding(s.len() as u64), 0);
        self.raw(&token)
    }

    fn strings(&mut self, tokens: &[&[u8]]) -> Result<(), Error> {
        tokens.iter().try_for_each(|t| self.string(t))
    }

    /// A regular file node whose `len` bytes come from `contents`; fails if it yields more or less.
    fn regular(
        &mut self,
        contents: &mut dyn Read,
        len: u64,
        executable: bool,
        what: &dyn Fn() -> String,
    ) -> Result<(), Error> {
        self.strings(&[b"(", b"type", b"regular"])?;
        if executable {
            self.strings(&[b"executable", b""])?;
        }
        self.string(b"contents")?;
        self.raw(&len.to_le_bytes())?;
        let mut buffer = vec![0u8; COPY_BUFFER.min(len.max(1) as usize)];
        let mut remaining = len;
        while remaining > 0 {
            let want = buffer.len().min(remaining as usize);
            let got = match contents.read(&mut buffer[..want]) {
                Ok(0) => {
                    return Err(Error::io(format!("reading {}", what()))(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while archiving ({remaining} bytes missing)"),
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {}", what()))(e)),
            };
            self.raw(&buffer[..got])?;
            remaining -= got as u64;
        }
        if contents
            .read(&mut [0u8; 1])
            .map_err(Error::io(format!("reading {}", what())))?
            != 0
        {
            return Err(Error::io(format!("reading {}", what()))(io::Error::new(
                io::ErrorKind::InvalidData,
                "file grew while archiving",
            )));
        }
        self.raw(&[0u8; 8][..padding(len)])?;
        self.string(b")")
    }

    fn symlink(&mut self, target: &[u8]) -> Result<(), Error> {
        self.strings(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }

    fn path(&mut self, path: &Path) -> Result<(), Error> {
        let meta =
            fs::symlink_metadata(path).map_err(Error::io(format!("lstat {}", path.display())))?;
        let file_type = meta.file_type();
        if file_type.is_file() {
            let mut file =
                fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
            let executable = meta.permissions().mode() & 0o100 != 0;
            self.regular(&mut file, meta.len(), executable, &|| {
                path.display().to_string()
            })
        } else if file_type.is_symlink() {
            let target =
                fs::read_link(path).map_err(Error::io(format!("readlink {}", path.display())))?;
            self.symlink(target.as_os_str().as_bytes())
        } else if file_type.is_dir() {
            let mut names = fs::read_dir(path)
                .map_err(Error::io(format!("listing {}", path.display())))?
                .map(|entry| entry.map(|e| e.file_name().into_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::io(format!("listing {}", path.display())))?;
            names.sort_unstable();
            self.strings(&[b"(", b"type", b"directory"])?;
            for name in names {
                self.strings(&[b"entry", b"(", b"name", &name, b"node"])?;
                self.path(&path.join(std::ffi::OsStr::from_bytes(&name)))?;
                self.string(b")")?;
            }
            self.string(b")")
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
}

/// Serialises the file, symlink or directory tree at `path` as `nix-store --dump` does.
/// Returns the NAR size.
pub fn dump_path(path: &Path, out: &mut impl Write) -> Result<u64, Error> {
    let mut writer = NarWriter::new(out);
    writer.string(MAGIC)?;
    writer.path(path)?;
    Ok(writer.written)
}

/// Wraps `len` bytes read from `contents` into the NAR of a single regular file (what Nix
/// stores for a flat or executable fixed output). Returns the NAR size.
pub fn write_file_nar(
    contents: &mut impl Read,
    len: u64,
    executable: bool,
    out: &mut impl Write,
) -> Result<u64, Error> {
    let mut writer = NarWriter::new(out);
    writer.string(MAGIC)?;
    writer.regular(contents, len, executable, &|| "file contents".to_string())?;
    Ok(writer.written)
}

/// Receives the nodes of a NAR as [`parse`] decodes them, parents before children.
/// Paths are relative to the NAR's root; the root itself is the empty path.
pub trait NarVisitor {
    fn directory(&mut self, path: &Path) -> Result<(), Error>;
    fn symlink(&mut self, path: &Path, target: &Path) -> Result<(), Error>;
    /// `contents` yields exactly `size` bytes; whatever the visitor leaves unread is skipped.
    fn regular(
        &mut self,
        path: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), Error>;
}

/// Decodes a stream that must hold exactly one NAR (nothing after it), checking its structure
/// and handing every node to `visitor`. Returns the NAR size.
pub fn parse(nar: impl Read, visitor: &mut impl NarVisitor) -> Result<u64, Error> {
    let mut reader = NarReader {
        input: BufReader::with_capacity(COPY_BUFFER, nar),
        read: 0,
    };
    reader.expect(MAGIC, "magic 'nix-archive-1'")?;
    reader.node(&mut PathBuf::new(), 0, visitor)?;
    let trailing = reader.input.fill_buf().map_err(read_error)?;
    if !trailing.is_empty() {
        return Err(Error::BadNar(format!(
            "data after the end of the archive at byte {}",
            reader.read
        )));
    }
    Ok(reader.read)
}

fn read_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::BadNar("truncated archive".into())
    } else {
        Error::io("reading NAR")(e)
    }
}

struct NarReader<R: Read> {
    input: BufReader<R>,
    read: u64,
}

impl<R: Read> NarReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.input.read_exact(buf).map_err(read_error)?;
        self.read += buf.len() as u64;
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let mut bytes = [0u8; 8];
        self.exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn padding(&mut self, len: u64) -> Result<(), Error> {
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        self.exact(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(Error::BadNar(format!(
                "non-zero padding at byte {}",
                self.read
            )));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<Vec<u8>, Error> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(Error::BadNar(format!(
                "string of {len} bytes at byte {} is implausibly long",
                self.read
            )));
        }
        let mut s = vec![0u8; len as usize];
        self.exact(&mut s)?;
        self.padding(len)?;
        Ok(s)
    }

    fn expect(&mut self, token: &[u8], what: &str) -> Result<(), Error> {
        let at = self.read;
        let got = self.string()?;
        if got != token {
            return Err(Error::BadNar(format!(
                "expected {what} at byte {at}, found '{}'",
                String::from_utf8_lossy(&got)
            )));
        }
        Ok(())
    }

    fn node(
        &mut self,
        path: &mut PathBuf,
        depth: usize,
        visitor: &mut impl NarVisitor,
    ) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::BadNar(format!(
                "directories nested deeper than {MAX_DEPTH}"
            )));
        }
        self.expect(b"(", "'('")?;
        self.expect(b"type", "'type'")?;
        let at = self.read;
        match self.string()?.as_slice() {
            b"regular" => self.regular(path, visitor)?,
            b"symlink" => {
                self.expect(b"target", "'target'")?;
                let target = self.string()?;
                if target.is_empty() || target.contains(&0) {
                    return Err(Error::BadNar(format!(
                        "bad symlink target at {}",
                        path.display()
                    )));
                }
                visitor.symlink(path, Path::new(std::ffi::OsStr::from_bytes(&target)))?;
                self.expect(b")", "')'")?;
            }
            b"directory" => {
                visitor.directory(path)?;
                self.directory(path, depth, visitor)?;
            }
            other => {
                return Err(Error::BadNar(format!(
                    "unknown node type '{}' at byte {at}",
                    String::from_utf8_lossy(other)
                )))
            }
        }
        Ok(())
    }

    fn regular(&mut self, path: &Path, visitor: &mut impl NarVisitor) -> Result<(), Error> {
        let mut token = self.string()?;
        let executable = token == b"executable";
        if executable {
            self.expect(b"", "empty string after 'executable'")?;
            token = self.string()?;
        }
        if token != b"contents" {
            return Err(Error::BadNar(format!(
                "expected 'contents' in {}, found '{}'",
                path.display(),
                String::from_utf8_lossy(&token)
            )));
        }
        let size = self.u64()?;
        let mut contents = (&mut self.input).take(size);
        visitor.regular(path, executable, size, &mut contents)?;
        io::copy(&mut contents, &mut io::sink()).map_err(read_error)?;
        if contents.limit() != 0 {
            return Err(Error::BadNar("truncated archive".into()));
        }
        self.read += size;
        self.padding(size)?;
        self.expect(b")", "')'")
    }

    fn directory(
        &mut self,
        path: &mut PathBuf,
        depth: usize,
        visitor: &mut impl NarVisitor,
    ) -> Result<(), Error> {
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let at = self.read;
            match self.string()?.as_slice() {
                b")" => return Ok(()),
                b"entry" => {}
                other => {
                    return Err(Error::BadNar(format!(
                        "expected 'entry' or ')' at byte {at}, found '{}'",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
            self.expect(b"(", "'('")?;
            self.expect(b"name", "'name'")?;
            let name = self.string()?;
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(Error::BadNar(format!(
                    "invalid entry name '{}' in {}",
                    String::from_utf8_lossy(&name),
                    path.display()
                )));
            }
            if previous.as_ref().is_some_and(|p| *p >= name) {
                return Err(Error::BadNar(format!(
                    "entries of {} are not sorted or repeat '{}'",
                    path.display(),
                    String::from_utf8_lossy(&name)
                )));
            }
            self.expect(b"node", "'node'")?;
            path.push(std::ffi::OsStr::from_bytes(&name));
            let result = self.node(path, depth + 1, visitor);
            path.pop();
            result?;
            self.expect(b")", "')'")?;
            previous = Some(name);
        }
    }
}

/// What [`extract_file`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractedFile {
    pub executable: bool,
    pub size: u64,
}

/// Copies the contents of a NAR that holds a single regular file to `out` (e.g. an upstream
/// NAR of a flat fixed output, whose bytes the hashed mirror needs).
pub fn extract_file(nar: impl Read, out: &mut impl Write) -> Result<ExtractedFile, Error> {
    struct SingleFile<'a, W: Write> {
        out: &'a mut W,
        found: Option<ExtractedFile>,
    }
    impl<W: Write> NarVisitor for SingleFile<'_, W> {
        fn directory(&mut self, _: &Path) -> Result<(), Error> {
            Err(Error::BadNar(
                "expected a single regular file, found a directory".into(),
            ))
        }
        fn symlink(&mut self, _: &Path, _: &Path) -> Result<(), Error> {
            Err(Error::BadNar(
                "expected a single regular file, found a symlink".into(),
            ))
        }
        fn regular(
            &mut self,
            _: &Path,
            executable: bool,
            size: u64,
            contents: &mut dyn Read,
        ) -> Result<(), Error> {
            copy_contents(contents, self.out)?;
            self.found = Some(ExtractedFile { executable, size });
            Ok(())
        }
    }
    let mut visitor = SingleFile { out, found: None };
    parse(nar, &mut visitor)?;
    visitor
        .found
        .ok_or_else(|| Error::BadNar("no regular file in archive".into()))
}

/// Copies file contents out of a NAR with a large buffer; read errors are NAR errors.
pub(crate) fn copy_contents(contents: &mut dyn Read, out: &mut dyn Write) -> Result<u64, Error> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match contents.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        out.write_all(&buffer[..n])
            .map_err(Error::io("writing extracted file"))?;
        total += n as u64;
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
            copy_contents(contents, &mut file)?;
            Ok(())
        }
    }
    use std::os::unix::fs::OpenOptionsExt;
    parse(nar, &mut Restorer { dest }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &[u8]) -> Vec<u8> {
        let mut t = (s.len() as u64).to_le_bytes().to_vec();
        t.extend_from_slice(s);
        t.resize(t.len() + padding(s.len() as u64), 0);
        t
    }

    fn nar_of(tokens: &[&[u8]]) -> Vec<u8> {
        tokens.iter().flat_map(|t| token(t)).collect()
    }

    #[test]
    fn single_file_nar_matches_the_format_and_predicted_size() {
        for (len, executable) in [(0u64, false), (1, true), (7, false), (8, true), (9, false)] {
            let data = vec![b'x'; len as usize];
            let mut out = Vec::new();
            let size = write_file_nar(&mut data.as_slice(), len, executable, &mut out).unwrap();
            let mut expected: Vec<&[u8]> = vec![MAGIC, b"(", b"type", b"regular"];
            if executable {
                expected.extend([b"executable".as_slice(), b""]);
            }
            expected.extend([b"contents".as_slice(), &data, b")"]);
            assert_eq!(out, nar_of(&expected), "len {len}");
            assert_eq!(size, out.len() as u64);
            assert_eq!(file_nar_size(len, executable), size);
        }
    }

    #[test]
    fn write_file_nar_refuses_a_short_reader() {
        let err = write_file_nar(&mut &b"abc"[..], 4, false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
        let err = write_file_nar(&mut &b"abcde"[..], 4, false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("grew"), "{err}");
    }

    #[test]
    fn extract_file_round_trips_contents() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut nar = Vec::new();
        write_file_nar(&mut data.as_slice(), data.len() as u64, true, &mut nar).unwrap();
        let mut out = Vec::new();
        let found = extract_file(nar.as_slice(), &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            found,
            ExtractedFile {
                executable: true,
                size: data.len() as u64
            }
        );
    }

    fn parse_err(nar: &[u8]) -> String {
        struct Ignore;
        impl NarVisitor for Ignore {
            fn directory(&mut self, _: &Path) -> Result<(), Error> {
                Ok(())
            }
            fn symlink(&mut self, _: &Path, _: &Path) -> Result<(), Error> {
                Ok(())
            }
            fn regular(
                &mut self,
                _: &Path,
                _: bool,
                _: u64,
                _: &mut dyn Read,
            ) -> Result<(), Error> {
                Ok(())
            }
        }
        match parse(nar, &mut Ignore) {
            Err(Error::BadNar(reason)) => reason,
            other => panic!("expected BadNar, got {other:?}"),
        }
    }

    fn dir_nar(names: &[&[u8]]) -> Vec<u8> {
        let mut tokens: Vec<&[u8]> = vec![MAGIC, b"(", b"type", b"directory"];
        for name in names {
            tokens.extend([
                b"entry".as_slice(),
                b"(",
                b"name",
                name,
                b"node",
                b"(",
                b"type",
                b"symlink",
                b"target",
                b"t",
                b")",
                b")",
            ]);
        }
        tokens.push(b")");
        nar_of(&tokens)
    }

    #[test]
    fn decoder_rejects_malformed_archives() {
        assert!(parse_err(&nar_of(&[b"nix-archive-2"])).contains("magic"));
        assert!(parse_err(&dir_nar(&[b"b", b"a"])).contains("not sorted"));
        assert!(parse_err(&dir_nar(&[b"a", b"a"])).contains("repeat"));
        assert!(parse_err(&dir_nar(&[b".."])).contains("invalid entry name"));
        assert!(parse_err(&dir_nar(&[b"a/b"])).contains("invalid entry name"));
        let good = dir_nar(&[b"a", b"b"]);
        assert!(parse_err(&good[..good.len() - 3]).contains("truncated"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse_err(&trailing).contains("after the end"));
        let mut bad_padding = nar_of(&[MAGIC, b"(", b"type", b"regular", b"contents", b"x", b")"]);
        // The last padding byte of "x", just before the closing ")" token.
        let last_padding = bad_padding.len() - 16 - 1;
        bad_padding[last_padding] = 1;
        assert!(parse_err(&bad_padding).contains("padding"));
    }

    #[test]
    fn dump_and_restore_round_trip_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub/empty")).unwrap();
        fs::write(src.join("sub/file"), b"hello").unwrap();
        fs::write(src.join("run"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../run", src.join("sub/link")).unwrap();
        let mut nar = Vec::new();
        let size = dump_path(&src, &mut nar).unwrap();
        assert_eq!(size, nar.len() as u64);
        let copy = tmp.path().join("copy");
        restore(nar.as_slice(), &copy).unwrap();
        let mut again = Vec::new();
        dump_path(&copy, &mut again).unwrap();
        assert_eq!(nar, again);
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
