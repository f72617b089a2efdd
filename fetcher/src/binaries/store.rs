//! Binary store paths in the cache. A binary has no content address: what makes Nix accept
//! it is the upstream signature over StorePath, NarHash, NarSize and References, so the
//! upstream narinfo is kept line for line and only the fields about the NAR *file* (URL,
//! and when recompressed Compression, FileHash and FileSize), which no signature covers,
//! are ours. The NAR file is placed first and the narinfo last, both atomically, and only
//! once FileSize, FileHash (the download), NarSize and NarHash (decompressed) all checked out.

use srcgrab_formats::hash::{Hash, HashAlgo};
use srcgrab_formats::store_path::StorePath;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::net::substituter::CheckedNar;
use crate::store::{decompressor, Cache, Compression, Compressor, VerifiedHash};
use crate::Error;
use srcgrab_formats::narinfo::NarInfo;

/// Where a mirrored path's NAR file ended up, and how big it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarFile {
    pub compression: Compression,
    pub file_hash: Hash,
    pub file_size: u64,
    pub nar_size: u64,
}

impl NarFile {
    /// `nar/<FileHash>.nar<.ext>`, named by content as Nix names them.
    fn url(&self) -> String {
        format!(
            "nar/{}.nar{}",
            self.file_hash.to_nix32(),
            self.compression.extension()
        )
    }
}

/// The store paths a narinfo references, other than itself (the narinfo parse already
/// refused a reference that is no store path).
pub fn references(info: &NarInfo) -> Vec<StorePath> {
    info.references
        .iter()
        .filter(|reference| **reference != info.store_path)
        .cloned()
        .collect()
}

/// `text` with its file fields replaced by `file`'s, every other line as it was (the signed
/// fields, and fields of newer Nix versions this code does not know).
pub fn with_file_fields(text: &str, file: &NarFile) -> String {
    let ours = format!(
        "URL: {}\nCompression: {}\nFileHash: {}\nFileSize: {}\n",
        file.url(),
        file.compression.name(),
        file.file_hash.to_nix32_prefixed(),
        file.file_size
    );
    let mut out = String::with_capacity(text.len() + ours.len());
    for line in text.lines() {
        let key = line.split(':').next().unwrap_or("");
        if matches!(key, "URL" | "Compression" | "FileHash" | "FileSize") || line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if key == "StorePath" {
            out.push_str(&ours);
        }
    }
    out
}

/// The cache's narinfo of `path` when it is a complete published binary (or source): it
/// parses, names `path`, and its NAR file is there with its FileSize. Anything less counts
/// as absent, so mirroring again repairs it. The URL is a path inside the cache (the parse
/// refuses any other) and must name a file directly in `nar/`.
pub fn published(cache: &Cache, path: &StorePath) -> Result<Option<NarInfo>, Error> {
    let narinfo = cache.root().join(format!("{}.narinfo", path.hash_part()));
    let text = match fs::read_to_string(&narinfo) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", narinfo.display()))(e)),
    };
    let Ok(info) = NarInfo::parse(&text) else {
        return Ok(None);
    };
    let inside = info
        .url
        .as_str()
        .strip_prefix("nar/")
        .is_some_and(|name| !name.is_empty() && !name.contains('/') && !name.starts_with('.'));
    if info.store_path != *path || !inside {
        return Ok(None);
    }
    let nar_file = cache.root().join(&info.url);
    match fs::metadata(&nar_file) {
        Ok(meta) if info.file_size.is_none_or(|size| size == meta.len()) => Ok(Some(info)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("checking {}", nar_file.display()))(e)),
    }
}

/// Checks the downloaded NAR file `download` against `info` (the upstream narinfo, whose
/// text is `text`) and publishes it: as it is, or recompressed to `recompress`. `verified`
/// is the download's hash, taken as it was written (the FileHash check already passed).
pub fn publish(
    cache: &Cache,
    info: &NarInfo,
    text: &str,
    download: &Path,
    verified: &VerifiedHash,
    recompress: Option<Compression>,
) -> Result<NarFile, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        what: info.store_path.to_path_string(),
        reason,
    };
    let compression = info.compression;
    let opened =
        File::open(download).map_err(Error::io(format!("opening {}", download.display())))?;
    let buffered = io::BufReader::with_capacity(256 * 1024, opened);
    let nar =
        decompressor(compression, buffered).map_err(|e| corrupt(format!("{compression}: {e}")))?;
    let mut checked = CheckedNar::new(nar, info.nar_size, info.nar_hash.clone());
    let nar_error = |e: io::Error| match e.kind() {
        io::ErrorKind::InvalidData => corrupt(e.to_string()),
        _ => corrupt(format!("decompressing the NAR: {e}")),
    };
    let file = match recompress.filter(|wanted| *wanted != compression) {
        None => {
            io::copy(&mut checked, &mut io::sink()).map_err(nar_error)?;
            let file_hash = match verified.hash() {
                hash if hash.algo == HashAlgo::Sha256 => hash.clone(),
                _ => VerifiedHash::of_file(download, HashAlgo::Sha256)
                    .map_err(Error::io(format!("hashing {}", download.display())))?
                    .hash()
                    .clone(),
            };
            let file = NarFile {
                compression,
                file_size: fs::metadata(download)
                    .map_err(Error::io(format!("stat {}", download.display())))?
                    .len(),
                file_hash,
                nar_size: info.nar_size,
            };
            place(download, &cache.root().join(file.url()))?;
            file
        }
        Some(wanted) => {
            let temp = tempfile::NamedTempFile::new_in(cache.temp_dir()).map_err(Error::io(
                format!("creating a temp file in {}", cache.temp_dir().display()),
            ))?;
            let context = || format!("writing {}", temp.path().display());
            let writer = BufWriter::with_capacity(256 * 1024, temp.as_file());
            let mut compressor = Compressor::new(wanted, writer).map_err(Error::io(context()))?;
            match io::copy(&mut checked, &mut compressor) {
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(nar_error(e)),
                other => other.map_err(Error::io(context()))?,
            };
            compressor
                .finish()
                .and_then(|mut w| w.flush())
                .map_err(Error::io(context()))?;
            let sealed = VerifiedHash::of_file(temp.path(), HashAlgo::Sha256)
                .map_err(Error::io(context()))?;
            let file = NarFile {
                compression: wanted,
                file_size: temp
                    .as_file()
                    .metadata()
                    .map_err(Error::io(context()))?
                    .len(),
                file_hash: sealed.hash().clone(),
                nar_size: info.nar_size,
            };
            let target = cache.root().join(file.url());
            let (_, path) = temp.into_parts();
            place(&path, &target)?;
            file
        }
    };
    let narinfo = cache
        .root()
        .join(format!("{}.narinfo", info.store_path.hash_part()));
    cache.write_atomically(&narinfo, with_file_fields(text, &file).as_bytes())?;
    Ok(file)
}

/// Moves a finished file into the cache: readable by all, on disk, then renamed.
fn place(file: &Path, target: &Path) -> Result<(), Error> {
    let context = || format!("writing {}", target.display());
    let opened = File::open(file).map_err(Error::io(context()))?;
    opened
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(Error::io(context()))?;
    opened.sync_all().map_err(Error::io(context()))?;
    fs::rename(file, target).map_err(Error::io(context()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "StorePath: /nix/store/7axliih0sjilbssndsdyl3h42l1ffl37-a\nURL: nar/x.nar.xz\nCompression: xz\nFileHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\nFileSize: 9\nNarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\nNarSize: 120\nReferences: 1lkng22apxd5rf03vpzlpjld1sq5bqmm-b 7axliih0sjilbssndsdyl3h42l1ffl37-a\nDeriver: 1vr47ziimm88v9b46f4kl6p4l9c9d0y7-a.drv\nSig: key-1:c2ln\nFutureField: kept\n";

    #[test]
    fn only_the_file_fields_change_and_the_signed_ones_stay_as_written() {
        let hash = Hash {
            algo: HashAlgo::Sha256,
            bytes: HashAlgo::Sha256.digest(b"file"),
        };
        let file = NarFile {
            compression: Compression::Zstd,
            file_hash: hash.clone(),
            file_size: 42,
            nar_size: 120,
        };
        let ours = with_file_fields(UPSTREAM, &file);
        let upstream = NarInfo::parse(UPSTREAM).unwrap();
        let parsed = NarInfo::parse(&ours).unwrap();
        assert_eq!(
            parsed.url.as_str(),
            format!("nar/{}.nar.zst", hash.to_nix32())
        );
        assert_eq!(parsed.compression, Compression::Zstd);
        assert_eq!(parsed.file_hash, Some(hash));
        assert_eq!(parsed.file_size, Some(42));
        assert_eq!(parsed.fingerprint(), upstream.fingerprint());
        for kept in [
            "Deriver: ",
            "Sig: ",
            "References: ",
            "NarHash: ",
            "FutureField: ",
        ] {
            let line = |text: &str| {
                text.lines()
                    .find(|l| l.starts_with(kept))
                    .map(str::to_string)
            };
            assert_eq!(line(&ours), line(UPSTREAM), "{kept}");
        }
    }

    #[test]
    fn references_leave_out_the_path_itself() {
        let info = NarInfo::parse(UPSTREAM).unwrap();
        let names: Vec<String> = references(&info)
            .into_iter()
            .map(|p| p.name().to_string())
            .collect();
        assert_eq!(names, ["b"]);
    }
}
