//! Small requests: narinfo look-ups, under each host's look-up count ([`super::adapt`]), and
//! the HEADs of `stats --probe`, under the transfer limits.

use reqwest::header::CONTENT_LENGTH;

use super::retry::{classify, status_attempt, transient, Attempt};
use super::{header_text, Downloader};
use crate::net::Error;
use crate::store::regular_file::MAX_NARINFO;
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::store_path::StorePath;

impl Downloader {
    /// The narinfo of `path` at the binary cache `base`, with its text: `Ok(None)` when the
    /// cache has none. One that is not UTF-8, does not parse or describes another path is
    /// [`Error::BadUpstream`].
    pub async fn get_narinfo(
        &self,
        base: &str,
        path: &StorePath,
    ) -> Result<Option<(NarInfo, String)>, Error> {
        let url = format!("{base}/{}.narinfo", path.hash_part());
        let Some(bytes) = self.get_small(&url).await? else {
            return Ok(None);
        };
        let bad = |reason: String| Error::BadUpstream {
            what: url.clone(),
            reason,
        };
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let info = NarInfo::parse(&text).map_err(|e| bad(e.to_string()))?;
        if info.store_path != *path {
            return Err(bad(format!("narinfo is for {}", info.store_path)));
        }
        Ok(Some((info, text)))
    }

    /// GETs a small document (a narinfo) into memory. `Ok(None)` when the server says it has
    /// no such thing (404, 403, 410, as S3-backed caches answer for missing keys). The body
    /// is read up to the narinfo cap of the cache itself ([`MAX_NARINFO`]): a lying cache's
    /// endless answer is refused there, not held in memory while hundreds of look-ups run at once.
    pub async fn get_small(&self, url: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with_retries(url, || async {
            self.check_up(url)?;
            let _lease = self.lookup_lease(url).await;
            let mut response = self.send(url, self.client.get(url)).await?;
            self.note_lookup_answered(url);
            let (status, headers) = (response.status(), response.headers().clone());
            if matches!(status.as_u16(), 403 | 404 | 410) {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(status_attempt(status, &headers));
            }
            if response.content_length().is_some_and(|n| n > MAX_NARINFO) {
                return Err(too_large());
            }
            let body = async {
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|err| classify(&err))? {
                    if (body.len() + chunk.len()) as u64 > MAX_NARINFO {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(Some(body))
            };
            match tokio::time::timeout(self.options.stall_timeout, body).await {
                Err(_) => Err(transient("body timed out")),
                Ok(result) => result,
            }
        })
        .await
    }

    /// The size a download of `url` would have, asked with HEAD (Content-Length), under the
    /// same transfer and per-host limits and retry rules as a download (`srcgrab stats
    /// --probe`). `Ok(None)` when the server does not say; `Err` when it refuses or keeps
    /// failing.
    pub async fn content_length(&self, url: &str) -> Result<Option<u64>, Error> {
        self.with_retries(url, || async {
            self.check_up(url)?;
            let _lease = self.lease(url, 0).await;
            let response = self.send(url, self.client.head(url)).await?;
            if response.status().is_success() {
                Ok(header_text(response.headers(), CONTENT_LENGTH)
                    .and_then(|length| length.parse().ok()))
            } else {
                Err(status_attempt(response.status(), response.headers()))
            }
        })
        .await
    }
}

/// A narinfo larger than any real one: the cache is not asked again for it.
fn too_large() -> Attempt {
    Attempt::Refused(format!(
        "answer is larger than a narinfo may be ({MAX_NARINFO} bytes)"
    ))
}
