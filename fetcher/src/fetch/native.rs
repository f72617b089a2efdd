//! Entries srcgrab makes itself from their URLs: a file as it is, unpacked as fetchzip
//! would, or a NAR, tried URL by URL (hashed mirrors first) and published once verified.

use super::*;

/// Names an entry's partial download of one URL (entries may share a URL).
fn partial_key(entry: &Entry, url: &str) -> String {
    format!("{} {url}", entry.store_path)
}

/// How a downloaded file becomes the entry's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Native {
    /// The file itself (flat), or its NAR (executable / recursive single file).
    File,
    /// Unpacked into a tree (fetchzip).
    Unpack,
    /// The file is a NAR, xz-compressed when the URL ends in `.xz` (builtin:fetchurl `unpack`).
    Nar,
}

impl Native {
    pub(super) fn of(entry: &Entry) -> Native {
        match entry.kind {
            Kind::UrlUnpack => Native::Unpack,
            // builtin:fetchurl's `unpack` (a NAR download) reaches the manifest as postFetch.
            Kind::Builtin if entry.post_fetch || entry.unpack.is_some() => Native::Nar,
            _ => Native::File,
        }
    }

    pub(super) fn how(self) -> How {
        match self {
            Native::File => How::Url,
            Native::Unpack => How::Unpack,
            Native::Nar => How::Nar,
        }
    }
}
impl Run {
    /// The URLs to try, in order and rewritten: hashed mirrors first for flat files (as
    /// Nix's fetchers do), then the entry's own list; each URL once.
    pub(super) fn candidate_urls(&self, entry: &Entry, native: Native) -> Vec<String> {
        let mut urls = Vec::new();
        if native == Native::File && entry.hash.mode == HashMode::Flat && !entry.executable {
            let hash = &entry.hash.hash;
            for mirror in &self.hashed_mirrors {
                let base = mirror.trim_end_matches('/');
                urls.push(format!("{base}/{}/{}", hash.algo, hash.to_hex()));
            }
        }
        urls.extend(entry.urls.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        urls.into_iter()
            .map(|url| rewrite(&self.rewrites, &url))
            .filter(|url| seen.insert(url.clone()))
            .collect()
    }

    pub(super) async fn fetch_native(
        &self,
        entry: &Entry,
        report: &mut EntryReport,
        tally: &AtomicU64,
    ) -> Result<Outcome, Error> {
        let native = Native::of(entry);
        let urls = self
            .downloader
            .order_by_resolution(self.candidate_urls(entry, native))
            .await;
        if urls.is_empty() {
            return Ok(Outcome::Failed {
                reason: "no url".into(),
                detail: "the manifest lists no URL for this entry".into(),
            });
        }
        // Only a flat file can be checked while it downloads; the rest is checked on publishing.
        let expected = (native == Native::File && entry.hash.mode == HashMode::Flat)
            .then_some(&entry.hash.hash);
        let mut mismatches = Vec::new();
        let mut download_errors = Vec::new();
        let mut publish_errors = Vec::new();
        let mut unsafe_archives = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            let url = url.clone();
            report.urls_tried.push(url.clone());
            let key = partial_key(entry, &url);
            // The URLs not tried yet may serve ranges of a large file alongside this one.
            let alternates = &urls[index + 1..];
            let target = Target {
                key: &key,
                label: &entry.name,
                hash: expected,
                size: None,
            };
            let downloaded = match self
                .downloader
                .fetch_from(&url, alternates, &target, tally)
                .await
            {
                Ok(downloaded) => downloaded,
                Err(err @ net::Error::HashMismatch { .. }) => {
                    mismatches.push(err.to_string());
                    continue;
                }
                Err(err) if err.is_disk_full() => return Err(err.into()),
                Err(err) => {
                    download_errors.push(err.to_string());
                    continue;
                }
            };
            let published = self.publish(native, entry, &downloaded).await;
            downloaded.remove();
            match published {
                Ok(published) => {
                    report.bytes_written = published.file_size;
                    for tried in &report.urls_tried {
                        self.downloader.discard_partial(&partial_key(entry, tried));
                    }
                    return Ok(Outcome::Fetched {
                        how: native.how(),
                        from: url,
                    });
                }
                Err(err) if err.is_fatal() => return Err(err),
                Err(err) if err.is_content_mismatch() => mismatches.push(format!("{url}: {err}")),
                Err(err) if matches!(err.as_store(), Some(store::Error::UnsafeArchive { .. })) => {
                    unsafe_archives.push(format!("{url}: {err}"))
                }
                Err(err) => publish_errors.push(format!("{url}: {err}")),
            }
        }
        // A hostile archive (a path leaving the tree, a link out of it) is refused, not left
        // to a builder, which would unpack the same bytes.
        if !unsafe_archives.is_empty() {
            return Ok(Outcome::Failed {
                reason: "unsafe archive".into(),
                detail: [unsafe_archives, mismatches, publish_errors, download_errors]
                    .concat()
                    .join("; "),
            });
        }
        Ok(give_up(
            entry,
            native,
            mismatches,
            publish_errors,
            download_errors,
        ))
    }

    pub(super) async fn publish(
        &self,
        native: Native,
        entry: &Entry,
        downloaded: &Downloaded,
    ) -> Result<Published, Error> {
        let cache = self.cache.clone();
        let entry = entry.clone();
        let path = downloaded.path.clone();
        match native {
            Native::File => {
                // Hashed as it was written: the cache takes that hash instead of its own pass.
                let verified = downloaded.verified.clone();
                blocking(move || cache.publish_file_verified(&entry, &path, verified)).await
            }
            Native::Nar => {
                // As Nix: the entry's own URL, not a mirror's, says whether it is compressed.
                let xz = entry.urls.first().is_some_and(|u| u.ends_with(".xz"));
                let compression = if xz {
                    Compression::Xz
                } else {
                    Compression::None
                };
                Ok(publish_nar_file(cache, entry, path, compression, None).await?)
            }
            Native::Unpack => blocking(move || unpack_and_publish(&cache, &entry, &path)).await,
        }
    }
}

fn unpack_and_publish(
    cache: &Cache,
    entry: &Entry,
    archive: &std::path::Path,
) -> Result<Published, Error> {
    let work = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(cache.temp_dir())
        .map_err(Error::io(format!(
            "creating a directory in {}",
            cache.temp_dir().display()
        )))?;
    let tree = work.path().join("out");
    let options = entry.unpack.clone().unwrap_or(Unpack {
        strip_root: true,
        extension: None,
    });
    let name = entry
        .urls
        .first()
        .map_or(entry.name.as_str(), String::as_str);
    crate::store::unpack::unpack(archive, name, &options, &tree)?;
    Ok(cache.publish_tree(entry, &tree)?)
}

/// The outcome once every URL failed. Content that never matches is for the builder when
/// srcgrab may not reproduce the fetcher's work (postFetch, unpacking); a plain file that
/// never matches is a failure: every server had wrong content.
fn give_up(
    entry: &Entry,
    native: Native,
    mismatches: Vec<String>,
    publish_errors: Vec<String>,
    download_errors: Vec<String>,
) -> Outcome {
    let reproducible = !entry.post_fetch && native != Native::Unpack;
    if !reproducible && (!mismatches.is_empty() || !publish_errors.is_empty()) {
        let mut reasons = mismatches;
        reasons.extend(publish_errors);
        return needs_builder(
            entry,
            format!(
                "the downloaded content does not give the declared hash without the fetcher's own steps: {}",
                reasons.join("; ")
            ),
        );
    }
    let (reason, details) = if !mismatches.is_empty() {
        (
            "hash mismatch",
            [mismatches, publish_errors, download_errors].concat(),
        )
    } else if !publish_errors.is_empty() {
        (
            "unusable content",
            [publish_errors, download_errors].concat(),
        )
    } else {
        ("download", download_errors)
    };
    Outcome::Failed {
        reason: reason.into(),
        detail: details.join("; "),
    }
}
