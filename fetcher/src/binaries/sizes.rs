//! Sizes of store paths without downloading them (`srcgrab stats --substituter`): the
//! narinfo of each path from the first substituter that has one, many lookups in flight
//! (a channel is tens of thousands of small requests), as many as each host's look-up
//! count allows.

use futures_util::StreamExt;
use srcgrab_formats::store_path::StorePath;
use std::sync::Arc;

use crate::net::{DownloadOptions, Downloader};
use crate::report::Silent;
use crate::Error;

/// What a substituter's narinfo says of a path's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarinfoSizes {
    /// FileSize: the compressed NAR, what a mirror downloads and stores.
    pub file_size: Option<u64>,
    /// NarSize: what the store holds once unpacked.
    pub nar_size: u64,
}

/// The sizes of every path, in the order given; `None` where no substituter answered with a
/// narinfo for it (absent, or failing: sizes are only counted, so a failure is an unknown).
pub async fn narinfo_sizes(
    paths: &[StorePath],
    substituters: &[String],
    download: DownloadOptions,
) -> Result<Vec<Option<NarinfoSizes>>, Error> {
    let scratch = tempfile::tempdir().map_err(Error::io("creating a temp directory"))?;
    // Enough waiting that every substituter's look-up count can reach its ceiling: the
    // downloader's per-host rules decide how many are really sent.
    let in_flight = download.max_lookups_per_host.max(1) * substituters.len().max(1);
    let downloader = Arc::new(Downloader::new(download, scratch.path(), Arc::new(Silent))?);
    let substituters: Arc<Vec<String>> = Arc::new(
        substituters
            .iter()
            .map(|s| s.trim_end_matches('/').to_string())
            .collect(),
    );
    let mut sizes = vec![None; paths.len()];
    let mut lookups = futures_util::stream::iter(paths.iter().cloned().enumerate())
        .map(|(index, path)| {
            let (downloader, substituters) = (downloader.clone(), substituters.clone());
            async move {
                for substituter in substituters.iter() {
                    if let Ok(Some((info, _))) = downloader.get_narinfo(substituter, &path).await {
                        let sizes = NarinfoSizes {
                            file_size: info.file_size,
                            nar_size: info.nar_size,
                        };
                        return (index, Some(sizes));
                    }
                }
                (index, None)
            }
        })
        .buffer_unordered(in_flight);
    while let Some((index, found)) = lookups.next().await {
        sizes[index] = found;
    }
    Ok(sizes)
}
