//! Small requests outside the transfer budget: narinfo look-ups and HEADs of `stats --probe`.

use reqwest::header::CONTENT_LENGTH;

use super::retry::{classify, status_attempt, transient};
use super::{header_text, Downloader};
use crate::Error;

impl Downloader {
    /// GETs a small document (a narinfo) into memory. `Ok(None)` when the server says it has
    /// no such thing (404, 403, 410, as S3-backed caches answer for missing keys).
    pub async fn get_small(&self, url: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with_retries(url, || async {
            let _slot = self
                .queries
                .acquire()
                .await
                .expect("semaphore never closed");
            let response = self.send(url, self.client.get(url)).await?;
            let (status, headers) = (response.status(), response.headers().clone());
            if matches!(status.as_u16(), 403 | 404 | 410) {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(status_attempt(status, &headers));
            }
            match tokio::time::timeout(self.options.stall_timeout, response.bytes()).await {
                Err(_) => Err(transient("body timed out")),
                Ok(Err(err)) => Err(classify(&err)),
                Ok(Ok(body)) => Ok(Some(body.to_vec())),
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
