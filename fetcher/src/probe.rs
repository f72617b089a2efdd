//! Sizes of manifest entries without downloading them (`srcgrab stats --probe`): a HEAD
//! request per entry through the download engine, so the same transfer and per-host limits,
//! retries and URL rewrites apply as for `srcgrab fetch`. An entry's URLs are tried in
//! order; the first Content-Length given wins.

use std::sync::Arc;

use futures_util::StreamExt;
use srcgrab_manifest::{Entry, Kind};

use crate::net::{rewrite, DownloadOptions, Downloader, Rewrite};
use crate::report::Silent;
use crate::Error;
use srcgrab_formats::nar;

#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    pub rewrites: Vec<Rewrite>,
    pub download: DownloadOptions,
}

/// What a probe learnt of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// The download's Content-Length, and the NAR size when the download is the whole
    /// content (a single file, not an archive to unpack).
    Size { download: u64, nar: Option<u64> },
    /// No URL to ask (git, vendor hashes), or no server said.
    Unknown,
    /// Every URL failed; the last reason.
    Failed(String),
}

/// Probes every entry, many at once; results are in the order of `entries`.
pub async fn probe(entries: &[Entry], options: ProbeOptions) -> Result<Vec<Probed>, Error> {
    let scratch = tempfile::tempdir().map_err(Error::io("creating a temp directory"))?;
    let downloader = Arc::new(Downloader::new(
        options.download,
        scratch.path(),
        Arc::new(Silent),
    )?);
    let rewrites = Arc::new(options.rewrites);
    let mut results = vec![Probed::Unknown; entries.len()];
    let mut tasks = futures_util::stream::iter(entries.iter().cloned().enumerate())
        .map(|(index, entry)| {
            let downloader = downloader.clone();
            let rewrites = rewrites.clone();
            async move { (index, probe_entry(&downloader, &rewrites, &entry).await) }
        })
        .buffer_unordered(256);
    while let Some((index, probed)) = tasks.next().await {
        results[index] = probed;
    }
    Ok(results)
}

async fn probe_entry(downloader: &Downloader, rewrites: &[Rewrite], entry: &Entry) -> Probed {
    if !matches!(entry.kind, Kind::Url | Kind::UrlUnpack | Kind::Builtin) {
        return Probed::Unknown;
    }
    let whole_file = entry.unpack.is_none();
    let mut last_error = None;
    for url in &entry.urls {
        match downloader.content_length(&rewrite(rewrites, url)).await {
            Ok(Some(download)) => {
                let nar = whole_file.then(|| nar::file_nar_size(download, entry.executable));
                return Probed::Size { download, nar };
            }
            Ok(None) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    last_error.map_or(Probed::Unknown, Probed::Failed)
}
