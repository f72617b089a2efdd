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
            let sent = tokio::time::timeout(self.options.stall_timeout, async {
                let response = self.client.get(url).send().await?;
                let status = response.status();
                response.bytes().await.map(|body| (status, body))
            })
            .await;
            match sent {
                Err(_) => Err(transient("timed out")),
                Ok(Err(err)) => Err(classify(err)),
                Ok(Ok((status, body))) if status.is_success() => Ok(Some(body.to_vec())),
                Ok(Ok((status, _))) if matches!(status.as_u16(), 403 | 404 | 410) => Ok(None),
                Ok(Ok((status, _))) => Err(status_attempt(status)),
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
            let _lease = self.lease(url, 0).await;
            let sent =
                tokio::time::timeout(self.options.stall_timeout, self.client.head(url).send())
                    .await;
            match sent {
                Err(_) => Err(transient("no response (timed out)")),
                Ok(Err(err)) => Err(classify(err)),
                Ok(Ok(response)) if response.status().is_success() => {
                    Ok(header_text(response.headers(), CONTENT_LENGTH)
                        .and_then(|length| length.parse().ok()))
                }
                Ok(Ok(response)) => Err(status_attempt(response.status())),
            }
        })
        .await
    }
}
