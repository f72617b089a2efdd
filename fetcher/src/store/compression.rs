//! How NAR files are compressed: the narinfo names, the streaming encoders a publish
//! writes through, and the decoders that read a NAR back.

use std::io::{self, Read, Write};
use std::str::FromStr;

const ZSTD_LEVEL: i32 = 3;
const XZ_LEVEL: u32 = 6;

/// How NAR files are compressed. Bzip2 is Nix's old default, still found upstream (and
/// kept as is with `keep_upstream_compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Xz,
    #[default]
    Zstd,
    Bzip2,
}

impl Compression {
    /// The narinfo `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The NAR file name's suffix after `.nar`, as Nix names them.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
            Compression::Bzip2 => ".bz2",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "xz" => Ok(Compression::Xz),
            "zstd" => Ok(Compression::Zstd),
            "bzip2" => Ok(Compression::Bzip2),
            other => Err(format!(
                "unknown compression '{other}' (none, xz, zstd, bzip2)"
            )),
        }
    }
}

pub(crate) enum Compressor<W: Write> {
    None(W),
    Xz(xz2::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Bzip2(bzip2::write::BzEncoder<W>),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(compression: Compression, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::None(inner),
            Compression::Xz => Compressor::Xz(xz2::write::XzEncoder::new(inner, XZ_LEVEL)),
            // Single-threaded on purpose: many files are published in parallel.
            Compression::Zstd => {
                Compressor::Zstd(zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?)
            }
            Compression::Bzip2 => Compressor::Bzip2(bzip2::write::BzEncoder::new(
                inner,
                bzip2::Compression::best(),
            )),
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Xz(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::Bzip2(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Xz(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Bzip2(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Xz(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::Bzip2(e) => e.flush(),
        }
    }
}

pub(super) fn decompressor<'a>(
    compression: &str,
    input: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        "none" => Box::new(input),
        "xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(input)?),
        "bzip2" => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unsupported compression '{other}'"),
            ))
        }
    })
}
