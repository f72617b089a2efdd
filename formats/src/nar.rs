//! Nix ARchive (NAR) encoding and decoding, streaming and in constant memory.
//!
//! The format, byte-identical to `nix-store --dump`: every string is a little-endian u64
//! length, the bytes, and zero padding to 8; a node is `( type regular [executable ""]
//! contents <data> )`, `( type symlink target <t> )` or `( type directory entry ( name <n>
//! node <node> ) ... )` with entries in byte order of their names.
//!
//! [`NarEncoder`] writes the tokens of a tree its caller walks (the fetcher walks the
//! filesystem); [`parse`] checks a stream as strictly as Nix (sorted, unique, sane names;
//! zero padding; nothing after the end) and hands each node to a [`NarVisitor`], so callers
//! can validate, hash a single file's contents or restore a tree without buffering the NAR.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"nix-archive-1";
/// Buffer for copying file contents: large enough that syscalls and hashing dominate.
const COPY_BUFFER: usize = 256 * 1024;
/// Longest string (name, symlink target, keyword) the decoder accepts; file contents are
/// streamed and not subject to it. Linux's PATH_MAX is 4096, so this leaves ample room.
const MAX_STRING: u64 = 64 * 1024;
/// Deepest directory nesting the decoder accepts, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// A stream that does not follow the format; `offset` is where the bad token starts.
    #[error("malformed NAR at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("malformed NAR: truncated archive at byte {offset}")]
    Truncated { offset: u64 },
    /// A NAR that is well formed but not the single regular file the caller needs.
    #[error("malformed NAR: expected a single regular file, found {found}")]
    NotASingleFile { found: &'static str },
    #[error("reading NAR: {0}")]
    Read(#[source] io::Error),
    #[error("writing NAR: {0}")]
    Write(#[source] io::Error),
    /// The contents handed to the encoder did not have the length announced for them.
    #[error("file {0} while archiving")]
    ContentsLength(&'static str),
    /// Reading the contents handed to the encoder failed.
    #[error("reading file contents: {0}")]
    ReadContents(#[source] io::Error),
}

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

/// Writes a NAR node by node, counting the bytes so callers learn the NAR size for free.
/// The caller walks the tree: [`NarEncoder::regular`] or [`NarEncoder::symlink`] for a
/// leaf, [`NarEncoder::directory`], then for each entry in byte order of its name
/// [`NarEncoder::entry`] + the entry's node + [`NarEncoder::end_entry`], and
/// [`NarEncoder::end_directory`].
pub struct NarEncoder<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> NarEncoder<W> {
    /// Starts a NAR (writes the magic).
    pub fn new(out: W) -> Result<Self, NarError> {
        let mut encoder = NarEncoder { out, written: 0 };
        encoder.string(MAGIC)?;
        Ok(encoder)
    }

    /// The NAR size so far (the whole size once the root node is written).
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.out.write_all(bytes).map_err(NarError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// A whole string token in one write: small writes are the common case (keywords, names).
    fn string(&mut self, s: &[u8]) -> Result<(), NarError> {
        let mut token = Vec::with_capacity(string_size(s.len() as u64) as usize);
        token.extend_from_slice(&(s.len() as u64).to_le_bytes());
        token.extend_from_slice(s);
        token.resize(token.len() + padding(s.len() as u64), 0);
        self.raw(&token)
    }

    fn strings(&mut self, tokens: &[&[u8]]) -> Result<(), NarError> {
        tokens.iter().try_for_each(|t| self.string(t))
    }

    /// A regular file node whose `len` bytes come from `contents`; fails if it yields more
    /// or less (a file that changed while it was archived).
    pub fn regular(
        &mut self,
        contents: &mut dyn Read,
        len: u64,
        executable: bool,
    ) -> Result<(), NarError> {
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
                Ok(0) => return Err(NarError::ContentsLength("shrank")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NarError::ReadContents(e)),
            };
            self.raw(&buffer[..got])?;
            remaining -= got as u64;
        }
        if contents
            .read(&mut [0u8; 1])
            .map_err(NarError::ReadContents)?
            != 0
        {
            return Err(NarError::ContentsLength("grew"));
        }
        self.raw(&[0u8; 8][..padding(len)])?;
        self.string(b")")
    }

    pub fn symlink(&mut self, target: &[u8]) -> Result<(), NarError> {
        self.strings(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }

    pub fn directory(&mut self) -> Result<(), NarError> {
        self.strings(&[b"(", b"type", b"directory"])
    }

    /// Starts the entry `name`; its node comes next, then [`NarEncoder::end_entry`].
    pub fn entry(&mut self, name: &[u8]) -> Result<(), NarError> {
        self.strings(&[b"entry", b"(", b"name", name, b"node"])
    }

    pub fn end_entry(&mut self) -> Result<(), NarError> {
        self.string(b")")
    }

    pub fn end_directory(&mut self) -> Result<(), NarError> {
        self.string(b")")
    }
}

/// Wraps `len` bytes read from `contents` into the NAR of a single regular file (what Nix
/// stores for a flat or executable fixed output). Returns the NAR size.
pub fn write_file_nar(
    contents: &mut impl Read,
    len: u64,
    executable: bool,
    out: &mut impl Write,
) -> Result<u64, NarError> {
    let mut encoder = NarEncoder::new(out)?;
    encoder.regular(contents, len, executable)?;
    Ok(encoder.written())
}

/// Receives the nodes of a NAR as [`parse`] decodes them, parents before children.
/// Paths are relative to the NAR's root; the root itself is the empty path. The visitor's
/// own error type carries the decoder's, so a visitor that writes files can fail with its
/// own I/O errors.
pub trait NarVisitor {
    type Error: From<NarError>;
    fn directory(&mut self, path: &Path) -> Result<(), Self::Error>;
    fn symlink(&mut self, path: &Path, target: &Path) -> Result<(), Self::Error>;
    /// `contents` yields exactly `size` bytes; whatever the visitor leaves unread is skipped.
    fn regular(
        &mut self,
        path: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), Self::Error>;
}

/// Decodes a stream that must hold exactly one NAR (nothing after it), checking its structure
/// and handing every node to `visitor`. Returns the NAR size.
pub fn parse<V: NarVisitor>(nar: impl Read, visitor: &mut V) -> Result<u64, V::Error> {
    let mut reader = NarReader {
        input: BufReader::with_capacity(COPY_BUFFER, nar),
        read: 0,
    };
    reader.expect(MAGIC, "magic 'nix-archive-1'")?;
    reader.node(&mut PathBuf::new(), 0, visitor)?;
    let offset = reader.read;
    let trailing = reader.input.fill_buf().map_err(NarError::Read)?;
    if !trailing.is_empty() {
        return Err(NarError::Malformed {
            offset,
            reason: "data after the end of the archive".into(),
        }
        .into());
    }
    Ok(reader.read)
}

/// Checks a NAR's structure and nothing else. Returns the NAR size.
pub fn validate(nar: impl Read) -> Result<u64, NarError> {
    struct ValidateOnly;
    impl NarVisitor for ValidateOnly {
        type Error = NarError;
        fn directory(&mut self, _: &Path) -> Result<(), NarError> {
            Ok(())
        }
        fn symlink(&mut self, _: &Path, _: &Path) -> Result<(), NarError> {
            Ok(())
        }
        fn regular(&mut self, _: &Path, _: bool, _: u64, _: &mut dyn Read) -> Result<(), NarError> {
            Ok(())
        }
    }
    parse(nar, &mut ValidateOnly)
}

/// A NAR's single regular file, as [`parse_single_file`] hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SingleFile {
    pub executable: bool,
    pub size: u64,
}

/// Decodes a NAR that must hold one regular file and nothing else (a flat or executable
/// fixed output), handing its contents to `file`. Returns what `file` returned and the NAR
/// size.
pub fn parse_single_file<T, E: From<NarError>>(
    nar: impl Read,
    file: impl FnOnce(SingleFile, &mut dyn Read) -> Result<T, E>,
) -> Result<(T, u64), E> {
    struct Visitor<F, T, E> {
        file: Option<F>,
        result: Option<T>,
        error: std::marker::PhantomData<E>,
    }
    impl<T, E: From<NarError>, F: FnOnce(SingleFile, &mut dyn Read) -> Result<T, E>> NarVisitor
        for Visitor<F, T, E>
    {
        type Error = E;
        fn directory(&mut self, _: &Path) -> Result<(), E> {
            Err(NarError::NotASingleFile {
                found: "a directory",
            }
            .into())
        }
        fn symlink(&mut self, _: &Path, _: &Path) -> Result<(), E> {
            Err(NarError::NotASingleFile { found: "a symlink" }.into())
        }
        fn regular(
            &mut self,
            _: &Path,
            executable: bool,
            size: u64,
            contents: &mut dyn Read,
        ) -> Result<(), E> {
            // The root is the only node when it is a regular file, so this runs once.
            if let Some(file) = self.file.take() {
                self.result = Some(file(SingleFile { executable, size }, contents)?);
            }
            Ok(())
        }
    }
    let mut visitor = Visitor {
        file: Some(file),
        result: None,
        error: std::marker::PhantomData,
    };
    let size = parse(nar, &mut visitor)?;
    match visitor.result {
        Some(result) => Ok((result, size)),
        None => Err(NarError::NotASingleFile { found: "nothing" }.into()),
    }
}

/// Copies a node's contents (as a visitor gets them) to `out` with a large buffer.
pub fn copy_contents(contents: &mut dyn Read, out: &mut dyn Write) -> Result<u64, NarError> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match contents.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(NarError::Truncated { offset: total })
            }
            Err(e) => return Err(NarError::Read(e)),
        };
        out.write_all(&buffer[..n]).map_err(NarError::Write)?;
        total += n as u64;
    }
}

struct NarReader<R: Read> {
    input: BufReader<R>,
    read: u64,
}

impl<R: Read> NarReader<R> {
    fn read_error(&self, e: io::Error) -> NarError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            NarError::Truncated { offset: self.read }
        } else {
            NarError::Read(e)
        }
    }

    fn malformed(&self, offset: u64, reason: String) -> NarError {
        NarError::Malformed { offset, reason }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.input.read_exact(buf).map_err(|e| self.read_error(e))?;
        self.read += buf.len() as u64;
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut bytes = [0u8; 8];
        self.exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let at = self.read;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        self.exact(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(self.malformed(at, "non-zero padding".into()));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<Vec<u8>, NarError> {
        let at = self.read;
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(self.malformed(at, format!("string of {len} bytes is implausibly long")));
        }
        let mut s = vec![0u8; len as usize];
        self.exact(&mut s)?;
        self.padding(len)?;
        Ok(s)
    }

    fn expect(&mut self, token: &[u8], what: &str) -> Result<(), NarError> {
        let at = self.read;
        let got = self.string()?;
        if got != token {
            return Err(self.malformed(
                at,
                format!("expected {what}, found '{}'", String::from_utf8_lossy(&got)),
            ));
        }
        Ok(())
    }

    fn node<V: NarVisitor>(
        &mut self,
        path: &mut PathBuf,
        depth: usize,
        visitor: &mut V,
    ) -> Result<(), V::Error> {
        if depth > MAX_DEPTH {
            let at = self.read;
            return Err(self
                .malformed(at, format!("directories nested deeper than {MAX_DEPTH}"))
                .into());
        }
        self.expect(b"(", "'('")?;
        self.expect(b"type", "'type'")?;
        let at = self.read;
        match self.string()?.as_slice() {
            b"regular" => self.regular(path, visitor)?,
            b"symlink" => {
                self.expect(b"target", "'target'")?;
                let at = self.read;
                let target = self.string()?;
                if target.is_empty() || target.contains(&0) {
                    return Err(self
                        .malformed(at, format!("bad symlink target at {}", path.display()))
                        .into());
                }
                visitor.symlink(path, Path::new(std::ffi::OsStr::from_bytes(&target)))?;
                self.expect(b")", "')'")?;
            }
            b"directory" => {
                visitor.directory(path)?;
                self.directory(path, depth, visitor)?;
            }
            other => {
                let reason = format!("unknown node type '{}'", String::from_utf8_lossy(other));
                return Err(self.malformed(at, reason).into());
            }
        }
        Ok(())
    }

    fn regular<V: NarVisitor>(&mut self, path: &Path, visitor: &mut V) -> Result<(), V::Error> {
        let at = self.read;
        let mut token = self.string()?;
        let executable = token == b"executable";
        if executable {
            self.expect(b"", "empty string after 'executable'")?;
            token = self.string()?;
        }
        if token != b"contents" {
            let reason = format!(
                "expected 'contents' in {}, found '{}'",
                path.display(),
                String::from_utf8_lossy(&token)
            );
            return Err(self.malformed(at, reason).into());
        }
        let size = self.u64()?;
        let start = self.read;
        let mut contents = (&mut self.input).take(size);
        visitor.regular(path, executable, size, &mut contents)?;
        let skipped = io::copy(&mut contents, &mut io::sink());
        let left = contents.limit();
        skipped.map_err(|e| self.read_error(e))?;
        if left != 0 {
            return Err(NarError::Truncated {
                offset: start + size - left,
            }
            .into());
        }
        self.read += size;
        self.padding(size)?;
        Ok(self.expect(b")", "')'")?)
    }

    fn directory<V: NarVisitor>(
        &mut self,
        path: &mut PathBuf,
        depth: usize,
        visitor: &mut V,
    ) -> Result<(), V::Error> {
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let at = self.read;
            match self.string()?.as_slice() {
                b")" => return Ok(()),
                b"entry" => {}
                other => {
                    let reason = format!(
                        "expected 'entry' or ')', found '{}'",
                        String::from_utf8_lossy(other)
                    );
                    return Err(self.malformed(at, reason).into());
                }
            }
            self.expect(b"(", "'('")?;
            self.expect(b"name", "'name'")?;
            let at = self.read;
            let name = self.string()?;
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                let reason = format!(
                    "invalid entry name '{}' in {}",
                    String::from_utf8_lossy(&name),
                    path.display()
                );
                return Err(self.malformed(at, reason).into());
            }
            if previous.as_ref().is_some_and(|p| *p >= name) {
                let reason = format!(
                    "entries of {} are not sorted or repeat '{}'",
                    path.display(),
                    String::from_utf8_lossy(&name)
                );
                return Err(self.malformed(at, reason).into());
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn token(s: &[u8]) -> Vec<u8> {
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
    fn write_file_nar_refuses_a_short_or_long_reader() {
        let err = write_file_nar(&mut &b"abc"[..], 4, false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
        let err = write_file_nar(&mut &b"abcde"[..], 4, false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("grew"), "{err}");
    }

    #[test]
    fn single_file_round_trips_contents() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut nar = Vec::new();
        write_file_nar(&mut data.as_slice(), data.len() as u64, true, &mut nar).unwrap();
        let ((found, out), size) = parse_single_file(nar.as_slice(), |file, contents| {
            let mut out = Vec::new();
            copy_contents(contents, &mut out)?;
            Ok::<_, NarError>((file, out))
        })
        .unwrap();
        assert_eq!(out, data);
        assert_eq!(size, nar.len() as u64);
        assert_eq!(
            found,
            SingleFile {
                executable: true,
                size: data.len() as u64
            }
        );
        let err = parse_single_file(dir_nar(&[b"a"]).as_slice(), |_, _| Ok::<_, NarError>(()))
            .unwrap_err();
        assert!(matches!(
            err,
            NarError::NotASingleFile {
                found: "a directory"
            }
        ));
    }

    fn parse_err(nar: &[u8]) -> String {
        match validate(nar) {
            Err(e @ (NarError::Malformed { .. } | NarError::Truncated { .. })) => e.to_string(),
            other => panic!("expected a malformed NAR, got {other:?}"),
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
    fn decoder_rejects_malformed_archives_and_says_where() {
        assert!(parse_err(&nar_of(&[b"nix-archive-2"])).contains("magic"));
        assert!(parse_err(&dir_nar(&[b"b", b"a"])).contains("not sorted"));
        assert!(parse_err(&dir_nar(&[b"a", b"a"])).contains("repeat"));
        assert!(parse_err(&dir_nar(&[b".."])).contains("invalid entry name"));
        assert!(parse_err(&dir_nar(&[b"a/b"])).contains("invalid entry name"));
        let good = dir_nar(&[b"a", b"b"]);
        assert!(parse_err(&good[..good.len() - 3]).contains("truncated"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            parse_err(&trailing),
            format!(
                "malformed NAR at byte {}: data after the end of the archive",
                good.len()
            )
        );
        let mut bad_padding = nar_of(&[MAGIC, b"(", b"type", b"regular", b"contents", b"x", b")"]);
        // The last padding byte of "x", just before the closing ")" token.
        let last_padding = bad_padding.len() - 16 - 1;
        bad_padding[last_padding] = 1;
        assert!(parse_err(&bad_padding).contains("padding"));
    }

    #[test]
    fn encoder_writes_what_the_decoder_reads() {
        let mut nar = Vec::new();
        let mut encoder = NarEncoder::new(&mut nar).unwrap();
        encoder.directory().unwrap();
        encoder.entry(b"a").unwrap();
        encoder.symlink(b"t").unwrap();
        encoder.end_entry().unwrap();
        encoder.entry(b"b").unwrap();
        encoder.symlink(b"t").unwrap();
        encoder.end_entry().unwrap();
        encoder.end_directory().unwrap();
        let written = encoder.written();
        assert_eq!(nar, dir_nar(&[b"a", b"b"]));
        assert_eq!(validate(nar.as_slice()).unwrap(), written);
    }
}
