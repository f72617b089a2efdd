//! The compressions of NAR files: the streaming encoder a publish writes through and the
//! one decoder every reader uses (the cache re-reading its own NARs, upstream NAR files,
//! bundles), both named by the narinfo's typed [`Compression`].

use std::io::{self, Read, Write};

pub use srcgrab_formats::narinfo::Compression;

const ZSTD_LEVEL: i32 = 3;
const XZ_LEVEL: u32 = 6;

/// Compresses into `W` as the narinfo's `Compression:` says.
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

/// Reads the NAR out of a file compressed with `compression`. Multi-stream xz and bzip2 are
/// read to the end, as Nix writes and reads them.
pub(crate) fn decompressor<'a>(
    compression: Compression,
    input: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compression_reads_back_what_it_wrote() {
        let plain = b"nix-archive-1 stand-in".repeat(1000);
        for compression in [
            Compression::None,
            Compression::Xz,
            Compression::Zstd,
            Compression::Bzip2,
        ] {
            let mut compressor = Compressor::new(compression, Vec::new()).unwrap();
            compressor.write_all(&plain).unwrap();
            let written = compressor.finish().unwrap();
            let mut out = Vec::new();
            decompressor(compression, written.as_slice())
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain, "{compression}");
        }
    }
}
