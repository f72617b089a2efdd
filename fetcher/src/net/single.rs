//! A download in one stream: resumed with `Range:` when a partial file is there, turned
//! into a segmented download when the answer shows a large file.

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::StatusCode;
use srcgrab_formats::hash::{Hash, HashAlgo};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::hosts::Lease;
use super::partial::{Partial, PartialMeta};
use super::retry::{classify, error_chain, status_attempt, transient, Attempt};
use super::{content_range_start, header_text, Downloaded, Downloader};
use crate::store::VerifiedHash;
use crate::Error;

/// Buffer between the network and the partial file: also the most of each in-flight
/// download a killed run loses.
pub(super) const WRITE_BUFFER: usize = 64 * 1024;
/// A download waiting this long for a connection asks its size with HEAD meanwhile.
pub(super) const PROBE_AFTER: Duration = Duration::from_millis(500);

/// What a HEAD said about a download.
pub(super) struct Head {
    pub(super) meta: PartialMeta,
    pub(super) headers: HeaderMap,
}

impl Downloader {
    /// A slot for the first request of a download of unknown size. When it has waited
    /// [`PROBE_AFTER`] (a slow link: slots turn over slowly), a HEAD (outside the connection
    /// budget, like narinfo lookups) asks the size, so that large files waiting behind
    /// small ones move ahead once known; its answer comes along.
    pub(super) async fn lease_sized(&self, url: &str) -> (Lease<'_>, Option<Head>) {
        // Boxed so that dropping it really leaves the queue before asking again.
        let mut waiting = Box::pin(self.lease(url, 0));
        let head = tokio::select! {
            lease = &mut waiting => return (lease, None),
            head = async {
                tokio::time::sleep(PROBE_AFTER).await;
                self.head(url).await
            } => head,
        };
        match head {
            Some(head) if head.meta.length.is_some_and(|size| size > 0) => {
                drop(waiting);
                let size = head.meta.length.unwrap_or(0);
                (self.lease(url, size).await, Some(head))
            }
            _ => (waiting.await, None),
        }
    }

    /// One HEAD, no retries: only a hint.
    pub(super) async fn head(&self, url: &str) -> Option<Head> {
        let _slot = self.queries.acquire().await.ok()?;
        let response =
            tokio::time::timeout(self.options.stall_timeout, self.client.head(url).send())
                .await
                .ok()?
                .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let headers = response.headers().clone();
        Some(Head {
            meta: PartialMeta {
                url: url.to_string(),
                etag: header_text(&headers, ETAG),
                last_modified: header_text(&headers, LAST_MODIFIED),
                length: header_text(&headers, CONTENT_LENGTH).and_then(|l| l.parse().ok()),
                segments: Vec::new(),
            },
            headers,
        })
    }

    /// [`Downloader::fetch_from`] with no alternate URLs.
    pub async fn fetch(
        &self,
        url: &str,
        key: &str,
        expected: Option<&Hash>,
        tally: &AtomicU64,
    ) -> Result<Downloaded, Error> {
        self.fetch_from(url, &[], key, expected, tally).await
    }

    /// Downloads `url` into the partial directory under a name derived from `key` (which
    /// must differ between concurrent downloads), hashing with `expected`'s algorithm (sha256
    /// when `None`). A hash other than `expected` is `Error::HashMismatch`, after one fresh
    /// try in one stream when the bytes were spliced from several responses. Bytes received
    /// are added to `tally` as they arrive, failed attempts included. When the file is split
    /// into ranges and `expected` is known, `alternates` (other URLs of the same content)
    /// serve ranges too: the hash decides whether they really had the same bytes.
    pub async fn fetch_from(
        &self,
        url: &str,
        alternates: &[String],
        key: &str,
        expected: Option<&Hash>,
        tally: &AtomicU64,
    ) -> Result<Downloaded, Error> {
        let stem = self.partial_stem(key);
        let algo = expected.map_or(HashAlgo::Sha256, |h| h.algo);
        let mut partial = Partial::load(
            stem.with_extension("part"),
            stem.with_extension("meta"),
            url,
            algo,
        );
        partial.spliced = partial.len > 0 || partial.is_segmented();
        let alternates = if expected.is_some() { alternates } else { &[] };
        let mut failures = 0;
        let mut fresh_retry_done = false;
        loop {
            let attempt = if partial.is_segmented() {
                self.fill_segments(url, alternates, &mut partial, tally, None)
                    .await
            } else {
                self.attempt(url, alternates, &mut partial, tally).await
            };
            match attempt {
                Ok(verified) => {
                    let hash = verified.hash().clone();
                    let matches = expected.is_none_or(|e| *e == hash);
                    if matches {
                        return Ok(Downloaded {
                            path: partial.part.clone(),
                            meta: partial.meta_path.clone(),
                            size: partial.len,
                            verified,
                        });
                    }
                    let spliced = partial.spliced;
                    partial.discard();
                    if spliced && !fresh_retry_done {
                        fresh_retry_done = true;
                        partial.single_stream = true;
                        continue;
                    }
                    return Err(Error::HashMismatch {
                        what: url.to_string(),
                        expected: expected.map(Hash::to_sri).unwrap_or_default(),
                        got: hash.to_sri(),
                    });
                }
                Err(Attempt::Transient { reason, progressed }) => {
                    self.note_retry(url);
                    failures = if progressed { 1 } else { failures + 1 };
                    if failures > self.options.retries {
                        return Err(Error::Download {
                            url: url.to_string(),
                            reason: format!("{reason} (gave up after {failures} tries)"),
                        });
                    }
                    tokio::time::sleep(self.backoff(failures)).await;
                }
                Err(Attempt::Refused(reason)) => {
                    partial.discard();
                    return Err(Error::Download {
                        url: url.to_string(),
                        reason,
                    });
                }
                Err(Attempt::Local(err)) => return Err(err),
            }
        }
    }

    /// One request: resumes when there is a partial file, streams the body into it, or
    /// turns into a segmented download when the answer shows a large file.
    pub(super) async fn attempt(
        &self,
        url: &str,
        alternates: &[String],
        partial: &mut Partial,
        tally: &AtomicU64,
    ) -> Result<VerifiedHash, Attempt> {
        let (lease, head) = match partial.meta.length {
            Some(length) => (self.lease(url, length).await, None),
            None => self.lease_sized(url).await,
        };
        // A HEAD showed a large file with a validator to check ranges against: straight to
        // ranges, saving the round trip of an opening GET.
        if let Some(head) = head.filter(|h| partial.len == 0 && h.meta.validator().is_some()) {
            partial.meta = head.meta;
            if let Some(segments) = self.split(partial, &head.headers) {
                partial.meta.segments = segments;
                partial.save_meta().map_err(Attempt::Local)?;
                drop(lease);
                return self
                    .fill_segments(url, alternates, partial, tally, None)
                    .await;
            }
        }

        let mut request = self.client.get(url);
        if partial.len > 0 {
            request = request.header(RANGE, format!("bytes={}-", partial.len));
            if let Some(validator) = partial.meta.validator() {
                request = request.header(IF_RANGE, validator);
            }
        }
        let response = match tokio::time::timeout(self.options.stall_timeout, request.send()).await
        {
            Err(_) => return Err(transient("no response (timed out)")),
            Ok(Err(err)) => return Err(classify(err)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let headers = response.headers().clone();
        match status {
            StatusCode::PARTIAL_CONTENT if partial.len > 0 => {
                if content_range_start(&headers) != Some(partial.len) {
                    partial.discard();
                    return Err(transient("server resumed at the wrong offset; restarting"));
                }
                partial.spliced = true;
            }
            StatusCode::OK => {
                partial.reset();
                partial.meta = PartialMeta {
                    url: url.to_string(),
                    etag: header_text(&headers, ETAG),
                    last_modified: header_text(&headers, LAST_MODIFIED),
                    length: response.content_length(),
                    segments: Vec::new(),
                };
                if let Some(segments) = self.split(partial, &headers) {
                    partial.meta.segments = segments;
                    partial.save_meta().map_err(Attempt::Local)?;
                    return self
                        .fill_segments(url, alternates, partial, tally, Some((response, lease)))
                        .await;
                }
                partial.save_meta().map_err(Attempt::Local)?;
            }
            StatusCode::RANGE_NOT_SATISFIABLE if partial.len > 0 => {
                // Either the partial file is already whole, or it belongs to other content.
                if partial.meta.length == Some(partial.len) {
                    partial.ensure_hasher().await.map_err(Attempt::Local)?;
                    return partial.seal();
                }
                partial.discard();
                return Err(transient("range not satisfiable; restarting"));
            }
            _ if status.is_success() => {
                return Err(Attempt::Refused(format!("unexpected HTTP {status}")))
            }
            _ => return Err(status_attempt(status)),
        }
        partial.ensure_hasher().await.map_err(Attempt::Local)?;
        let expected_len = partial.meta.length;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let remaining = expected_len.map(|total| total.saturating_sub(partial.len));
        self.progress.download_start(id, url, remaining);
        let result = self.stream_body(url, response, partial, tally, id).await;
        drop(lease);
        self.progress.download_end(id);
        let kept = result?;
        if let Some(total) = expected_len {
            if partial.len != total {
                return Err(Attempt::Transient {
                    reason: format!("body ended at {} of {total} bytes", partial.len),
                    progressed: kept > 0,
                });
            }
        }
        partial.seal()
    }

    /// Appends the body to the partial file; returns how many bytes it kept.
    pub(super) async fn stream_body(
        &self,
        url: &str,
        response: reqwest::Response,
        partial: &mut Partial,
        tally: &AtomicU64,
        id: u64,
    ) -> Result<u64, Attempt> {
        let context = || format!("writing {}", partial.part.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial.part)
            .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
        file.set_len(partial.len)
            .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(partial.len))
            .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
        let mut body = response.bytes_stream();
        let mut kept = 0u64;
        let outcome = loop {
            let chunk = match tokio::time::timeout(self.options.stall_timeout, body.next()).await {
                Err(_) => break Err(format!("body stalled for {:?}", self.options.stall_timeout)),
                Ok(None) => break Ok(()),
                Ok(Some(Err(err))) => break Err(error_chain(&err)),
                Ok(Some(Ok(chunk))) => chunk,
            };
            if let Some(rate) = &self.rate {
                rate.take(chunk.len()).await;
            }
            partial
                .hasher
                .as_mut()
                .expect("hasher ready")
                .write(&mut out, &chunk)
                .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
            partial.len += chunk.len() as u64;
            kept += chunk.len() as u64;
            self.count_bytes(url, id, chunk.len() as u64, tally);
        };
        out.flush()
            .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
        match outcome {
            Ok(()) => Ok(kept),
            Err(reason) => Err(Attempt::Transient {
                reason,
                progressed: kept > 0,
            }),
        }
    }
}
