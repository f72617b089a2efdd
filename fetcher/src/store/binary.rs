//! Binary store paths in the cache. A binary has no content address: what makes Nix accept
//! it is the upstream signature over StorePath, NarHash, NarSize and References, so the
//! upstream narinfo is kept line for line and only the fields about the NAR *file* (URL,
//! and when recompressed Compression, FileHash and FileSize), which no signature covers,
//! are ours, plus our own `Sig:` when the cache has a signing key. The NAR file is placed
//! (and sealed) first and the narinfo last, both atomically, under the path's item lock, and
//! only once FileSize, FileHash (the download), NarSize and NarHash (decompressed) all
//! checked out.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use srcgrab_formats::hash::{Hash, HashAlgo};
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::signature::PublicKey;
use srcgrab_formats::store_path::StorePath;

use super::place::FileSource;
use super::regular_file::{self, SmallFile, MAX_NARINFO};
use super::{decompressor, lock, seal, Cache, Compression, Compressor, DiskLayout, FileLock};
use super::{VerifiedHash, WRITE_BUFFER};
use crate::store::CheckedNar;
use crate::store::Error;

/// Where a mirrored path's NAR file ended up, and how big it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarFile {
    pub compression: Compression,
    pub file_hash: Hash,
    pub file_size: u64,
    pub nar_size: u64,
}

/// A narinfo parsed, and its text: as an upstream cache or a bundle served it (whose signed
/// lines are kept as they were written), or as the cache holds it.
#[derive(Debug, Clone)]
pub struct NarInfoText {
    pub info: NarInfo,
    pub text: String,
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
/// fields, and fields of newer Nix versions this code does not know), and `own_sig` added
/// unless it is there already.
fn with_file_fields(text: &str, file: &NarFile, own_sig: Option<String>) -> String {
    let url = DiskLayout::nar_url(&file.file_hash, file.compression);
    let ours = format!(
        "URL: {url}\nCompression: {}\nFileHash: {}\nFileSize: {}\n",
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
    if let Some(sig) = own_sig {
        let line = format!("Sig: {sig}");
        if !out.lines().any(|existing| existing == line) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Refuses a binary whose narinfo no key of `keys` signed: for a NAR that comes from
/// outside (a bundle, a disk), the upstream signature is the only thing that says what it is.
pub fn check_signed(info: &NarInfo, keys: &[PublicKey]) -> Result<(), Error> {
    let fingerprint = info.fingerprint();
    let signed = info
        .sigs
        .iter()
        .any(|sig| keys.iter().any(|key| key.verifies(&fingerprint, sig)));
    if signed {
        return Ok(());
    }
    let reason = if keys.is_empty() {
        "a binary: give --trusted-public-key to check its signature".to_string()
    } else {
        let names: Vec<&str> = keys.iter().map(PublicKey::name).collect();
        format!("not signed by a trusted key ({})", names.join(", "))
    };
    // The path is named by whoever reports this; the message says what is wrong with it.
    Err(Error::Unsigned(reason))
}

impl Cache {
    /// Waits for, then holds, the item lock of a store path (the one entries take too).
    pub fn lock_store_path(&self, path: &StorePath) -> Result<FileLock, Error> {
        lock::lock_item(&self.disk, path)
    }

    /// The cache's narinfo of `hash_part` when it is a complete published item: a small
    /// regular file that parses, whose NAR file is a regular file in `nar/` under its seal
    /// (what a publish or `srcgrab verify` checked, unchanged since). Anything less counts as
    /// absent, so mirroring again repairs it.
    pub fn published_narinfo(&self, hash_part: &str) -> Result<Option<NarInfoText>, Error> {
        let SmallFile::Text(text) =
            regular_file::read_small(&self.disk.narinfo(hash_part), MAX_NARINFO)?
        else {
            return Ok(None);
        };
        let Ok(info) = NarInfo::parse(&text) else {
            return Ok(None);
        };
        let nar = info.url.as_path();
        if info.store_path.hash_part() != hash_part
            || !DiskLayout::is_in_nar_dir(nar)
            || !seal::holds(&self.disk, nar)?
        {
            return Ok(None);
        }
        Ok(Some(NarInfoText { info, text }))
    }

    /// [`Cache::published_narinfo`] of exactly `path`.
    pub fn published_binary(&self, path: &StorePath) -> Result<Option<NarInfoText>, Error> {
        Ok(self
            .published_narinfo(path.hash_part())?
            .filter(|published| published.info.store_path == *path))
    }

    /// Checks the downloaded NAR file `download` against `upstream` and publishes it: as it
    /// is, or recompressed to `recompress`. `verified` is the download's hash, taken as it
    /// was written (the FileHash check already passed). The file may be hard-linked into the
    /// cache, so the caller must not modify it afterwards (removing it is fine). The caller
    /// holds the path's item lock ([`Cache::lock_store_path`]), from its presence check on.
    pub fn publish_binary(
        &self,
        upstream: &NarInfoText,
        download: &Path,
        verified: VerifiedHash,
        recompress: Option<Compression>,
    ) -> Result<NarFile, Error> {
        let info = &upstream.info;
        let mismatch = |reason: String| Error::NarMismatch {
            what: "NAR".into(),
            reason,
        };
        let (opened, meta) = regular_file::open_existing(download)?;
        verified.check_describes(download, &meta)?;
        let compression = info.compression;
        let buffered = io::BufReader::with_capacity(WRITE_BUFFER, opened);
        let nar = decompressor(compression, buffered)
            .map_err(|e| mismatch(format!("{compression}: {e}")))?;
        let mut checked = CheckedNar::new(nar, info.nar_size, info.nar_hash.clone());
        let nar_error = |e: io::Error| match e.kind() {
            io::ErrorKind::InvalidData => mismatch(e.to_string()),
            _ => mismatch(format!("decompressing the NAR: {e}")),
        };
        let (file, source) = match recompress.filter(|wanted| *wanted != compression) {
            None => {
                io::copy(&mut checked, &mut io::sink()).map_err(nar_error)?;
                let file_hash = match verified.into_hash() {
                    hash if hash.algo == HashAlgo::Sha256 => hash,
                    _ => VerifiedHash::of_file(download, HashAlgo::Sha256)
                        .map_err(Error::io(format!("hashing {}", download.display())))?
                        .into_hash(),
                };
                let file = NarFile {
                    compression,
                    file_size: meta.len(),
                    file_hash,
                    nar_size: info.nar_size,
                };
                (file, FileSource::Existing(download.to_path_buf()))
            }
            Some(wanted) => {
                let temp = self.new_temp()?;
                let context = || format!("writing {}", temp.path.display());
                let writer = BufWriter::with_capacity(WRITE_BUFFER, &temp.file);
                let mut compressor =
                    Compressor::new(wanted, writer).map_err(Error::io(context()))?;
                match io::copy(&mut checked, &mut compressor) {
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(nar_error(e)),
                    other => other.map_err(Error::io(context()))?,
                };
                compressor
                    .finish()
                    .and_then(|mut w| w.flush())
                    .map_err(Error::io(context()))?;
                let sealed = VerifiedHash::of_file(&temp.path, HashAlgo::Sha256)
                    .map_err(Error::io(context()))?;
                let file_size = temp.file.metadata().map_err(Error::io(context()))?.len();
                let file = NarFile {
                    compression: wanted,
                    file_size,
                    file_hash: sealed.into_hash(),
                    nar_size: info.nar_size,
                };
                (file, FileSource::Temp(temp))
            }
        };
        let own_sig = self
            .options
            .signing_key
            .as_ref()
            .map(|key| key.sign(&info.fingerprint()));
        let narinfo = with_file_fields(&upstream.text, &file, own_sig);
        let url = DiskLayout::nar_url(&file.file_hash, file.compression);
        self.place(source, url.as_path())?;
        self.write_atomically(
            &self.disk.narinfo(info.store_path.hash_part()),
            narinfo.as_bytes(),
        )?;
        Ok(file)
    }
}

impl Cache {
    /// Publishes a binary carried in from outside (a bundle, a disk): its narinfo must be
    /// signed by one of `keys`; its NAR file (`nar`, at most FileSize bytes are read) is
    /// copied into the cache's temp directory while hashed, since it is not ours to
    /// hard-link, then checked and published as a download is. Its compression is kept.
    fn import_binary(
        &self,
        upstream: &NarInfoText,
        nar: &mut dyn Read,
        keys: &[PublicKey],
    ) -> Result<NarFile, Error> {
        let info = &upstream.info;
        check_signed(info, keys)?;
        let mismatch = |reason: String| Error::NarMismatch {
            what: "NAR file".into(),
            reason,
        };
        let limit = info
            .file_size
            .map_or(u64::MAX, |size| size.saturating_add(1));
        let (temp, hashed) = self.copy_to_temp(
            &mut nar.take(limit),
            HashAlgo::Sha256,
            &format!("the NAR of {}", info.store_path),
        )?;
        if let Some(size) = info.file_size.filter(|size| *size != hashed.len()) {
            return Err(mismatch(format!(
                "NAR file has {} bytes or more, narinfo says FileSize {size}",
                hashed.len()
            )));
        }
        if let Some(expected) = info
            .file_hash
            .as_ref()
            .filter(|h| h.algo == HashAlgo::Sha256)
        {
            let got = hashed.hash();
            if got != *expected {
                return Err(mismatch(format!(
                    "FileHash mismatch: narinfo says {}, file has {}",
                    expected.to_nix32_prefixed(),
                    got.to_nix32_prefixed()
                )));
            }
        }
        let verified = hashed
            .seal(&temp.path)
            .map_err(Error::io(format!("writing {}", temp.path.display())))?;
        self.publish_binary(upstream, &temp.path, verified, None)
    }
}

impl Cache {
    /// [`Cache::import_binary`] unless the cache holds the path already (`Ok(false)`); `nar`
    /// opens its NAR file only when it is needed.
    pub fn import_binary_unless_present<'r>(
        &self,
        upstream: &NarInfoText,
        keys: &[PublicKey],
        nar: impl FnOnce() -> Result<Box<dyn Read + 'r>, Error>,
    ) -> Result<bool, Error> {
        let _lock = self.lock_store_path(&upstream.info.store_path)?;
        if self.published_binary(&upstream.info.store_path)?.is_some() {
            return Ok(false);
        }
        self.import_binary(upstream, &mut nar()?, keys)?;
        Ok(true)
    }

    /// One binary of a directory laid out as a binary cache (a bundle, a disk made by
    /// `nix copy --to file://…`), whose narinfo [`read_narinfo_in`] read: its NAR is opened
    /// below `dir` without following links. `Ok(false)`: already present.
    pub fn import_binary_below(
        &self,
        dir: &Path,
        narinfo: &NarInfoText,
        keys: &[PublicKey],
    ) -> Result<bool, Error> {
        self.import_binary_unless_present(narinfo, keys, || {
            Ok(Box::new(regular_file::open_below(
                dir,
                narinfo.info.url.as_path(),
            )?))
        })
    }
}

/// The narinfo `name` in `dir` (a bundle, a disk), read only as a small regular file, which
/// must parse and name the path its file name says.
pub fn read_narinfo_in(dir: &Path, name: &str) -> Result<NarInfoText, Error> {
    let text = regular_file::read_small_or_refuse(&dir.join(name), MAX_NARINFO)?;
    let info = NarInfo::parse(&text)?;
    if DiskLayout::narinfo_name(info.store_path.hash_part()) != name {
        return Err(Error::MisnamedNarinfo {
            name: name.to_string(),
            store_path: info.store_path,
        });
    }
    Ok(NarInfoText { info, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "StorePath: /nix/store/7axliih0sjilbssndsdyl3h42l1ffl37-a\nURL: nar/x.nar.xz\nCompression: xz\nFileHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\nFileSize: 9\nNarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\nNarSize: 120\nReferences: 1lkng22apxd5rf03vpzlpjld1sq5bqmm-b 7axliih0sjilbssndsdyl3h42l1ffl37-a\nDeriver: 1vr47ziimm88v9b46f4kl6p4l9c9d0y7-a.drv\nSig: key-1:c2ln\nFutureField: kept\n";

    fn zstd_file() -> (NarFile, Hash) {
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
        (file, hash)
    }

    #[test]
    fn only_the_file_fields_change_and_the_signed_ones_stay_as_written() {
        let (file, hash) = zstd_file();
        let ours = with_file_fields(UPSTREAM, &file, None);
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
    fn our_own_signature_is_added_once_next_to_the_upstream_one() {
        let (file, _) = zstd_file();
        let ours = with_file_fields(UPSTREAM, &file, Some("ours-1:b3Vycw==".into()));
        let again = with_file_fields(&ours, &file, Some("ours-1:b3Vycw==".into()));
        let sigs = NarInfo::parse(&again).unwrap().sigs;
        assert_eq!(sigs, ["key-1:c2ln", "ours-1:b3Vycw=="]);
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
