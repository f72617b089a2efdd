//! A download in one stream: resumed with `Range:` when a partial file is there, turned
//! into a segmented download when the answer shows a large file.

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::StatusCode;
use srcgrab_formats::hash::{Hash, HashAlgo};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::bounds::Deadline;
use super::hosts::Lease;
use super::partial::{Partial, PartialMeta};
use super::retry::{error_chain, status_attempt, transient, Attempt};
use super::{content_range_start, header_text, Downloaded, Downloader, Target};
use crate::net::Error;
use crate::report::FetchEvent;
use crate::store::{HashedWrites, VerifiedHash};

/// Bytes gathered from the network before one write to the partial file: also the most
/// of each in-flight download a killed run loses.
const WRITE_BUFFER: usize = 256 * 1024;
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
    /// small ones move ahead once known; its answer comes along. The HEAD waits until the host
    /// answered something: a host that does not answer is not sent a HEAD per waiting file.
    pub(super) async fn lease_sized(&self, url: &str) -> (Lease<'_>, Option<Head>) {
        // Boxed so that dropping it really leaves the queue before asking again.
        let mut waiting = Box::pin(self.lease(url, 0));
        let head = tokio::select! {
            lease = &mut waiting => return (lease, None),
            head = async {
                tokio::time::sleep(PROBE_AFTER).await;
                while !self.has_answered(url) {
                    tokio::time::sleep(PROBE_AFTER).await;
                }
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
        let _lease = self.lookup_lease(url).await;
        let response = self.send(url, self.client.head(url)).await.ok()?;
        self.note_lookup_answered(url);
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
        target: &Target<'_>,
        tally: &AtomicU64,
    ) -> Result<Downloaded, Error> {
        self.fetch_from(url, &[], target, tally).await
    }

    /// Downloads `url` into the partial directory under a name derived from `target.key`,
    /// hashing with `target.hash`'s algorithm (sha256 when `None`). A hash other than the
    /// target's is `Error::HashMismatch`, after one fresh try in one stream when the bytes
    /// were spliced from several responses. Bytes received are added to `tally` as they
    /// arrive, failed attempts included. When the file is split into ranges and the hash is
    /// known, `alternates` (other URLs of the same content) may serve ranges too: the hash
    /// decides whether they really had the same bytes.
    ///
    /// Bounded: the download ends within `stall_timeout + size / min_rate` (retries and
    /// backoff included; the size as known beforehand, else as received so far), takes at
    /// most the target's size (else `max_size`), and tries that bring no byte beyond what
    /// earlier tries already had count against the retries.
    pub async fn fetch_from(
        &self,
        url: &str,
        alternates: &[String],
        target: &Target<'_>,
        tally: &AtomicU64,
    ) -> Result<Downloaded, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.progress.report(FetchEvent::DownloadStart {
            id,
            label: target.label,
            length: target.size,
        });
        let result = self.fetch_bounded(url, alternates, target, tally, id).await;
        self.progress.report(FetchEvent::DownloadEnd { id });
        result
    }

    async fn fetch_bounded(
        &self,
        url: &str,
        alternates: &[String],
        target: &Target<'_>,
        tally: &AtomicU64,
        id: u64,
    ) -> Result<Downloaded, Error> {
        let stem = self.partial_stem(target.key);
        let algo = target.hash.map_or(HashAlgo::Sha256, |h| h.algo);
        let mut partial = Partial::load(
            stem.with_extension("part"),
            stem.with_extension("meta"),
            url,
            algo,
            id,
        );
        partial.spliced = partial.len > 0 || partial.is_segmented();
        partial.cap = target.size.unwrap_or(self.options.max_size);
        partial.expected = target.size;
        let alternates = if target.hash.is_some() {
            alternates
        } else {
            &[]
        };
        partial.describe(partial.meta.clone());
        let deadline = Deadline::new(&self.options, target.size, &partial.announced, tally);
        let give_up = |reason: String| Error::Download {
            url: url.to_string(),
            reason,
        };
        let mut failures = 0;
        let mut best = partial.bytes_on_disk();
        let mut fresh_retry_done = false;
        loop {
            let attempt = async {
                if partial.is_segmented() {
                    self.fill_segments(url, alternates, &mut partial, tally, None)
                        .await
                } else {
                    self.attempt(url, alternates, &mut partial, tally).await
                }
            };
            let Some(attempt) = deadline.run(attempt).await else {
                return Err(give_up(deadline.exceeded()));
            };
            let (reason, wait) = match attempt {
                Ok(verified) => {
                    let hash = verified.hash().clone();
                    if target.hash.is_none_or(|e| *e == hash) {
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
                        url: url.to_string(),
                        expected: target.hash.map(Hash::to_sri).unwrap_or_default(),
                        got: hash.to_sri(),
                    });
                }
                Err(Attempt::Local(err)) => return Err(err),
                Err(Attempt::Refused(reason)) => {
                    partial.discard();
                    return Err(give_up(reason));
                }
                Err(Attempt::Unreachable {
                    reason,
                    permanent: true,
                }) => return Err(give_up(reason)),
                Err(Attempt::Transient { reason, wait, .. }) => (reason, wait),
                Err(Attempt::Unreachable { reason, .. }) => (reason, None),
            };
            self.note_retry(url);
            // Only bytes beyond what earlier tries brought are progress: a server that cuts
            // every answer at the same place cannot keep this going.
            let now = partial.bytes_on_disk();
            failures = if now > best { 1 } else { failures + 1 };
            best = best.max(now);
            if failures > self.options.retries {
                return Err(give_up(format!(
                    "{reason} (gave up after {failures} tries)"
                )));
            }
            let pause = self.backoff(failures, wait);
            if !deadline.allows(pause) {
                return Err(give_up(format!("{reason}; {}", deadline.exceeded())));
            }
            tokio::time::sleep(pause).await;
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
        self.check_up(url)?;
        let (lease, head) = match partial.meta.length.or(partial.expected) {
            Some(length) => (self.lease(url, length).await, None),
            None => self.lease_sized(url).await,
        };
        // A HEAD showed a large file with a validator to check ranges against: straight to
        // ranges, saving the round trip of an opening GET.
        if let Some(head) = head.filter(|h| partial.len == 0 && h.meta.validator().is_some()) {
            check_cap(head.meta.length, partial.cap)?;
            partial.describe(head.meta);
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
        let response = self.send(url, request).await?;
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
                check_cap(response.content_length(), partial.cap)?;
                partial.reset();
                partial.describe(PartialMeta {
                    url: url.to_string(),
                    etag: header_text(&headers, ETAG),
                    last_modified: header_text(&headers, LAST_MODIFIED),
                    length: response.content_length(),
                    segments: Vec::new(),
                });
                if let Some(length) = partial.meta.length {
                    self.progress.report(FetchEvent::DownloadLength {
                        id: partial.progress_id,
                        length,
                    });
                }
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
            _ => return Err(status_attempt(status, &headers)),
        }
        partial.ensure_hasher().await.map_err(Attempt::Local)?;
        let expected_len = partial.meta.length;
        let result = self.stream_body(url, response, partial, tally).await;
        drop(lease);
        let kept = result?;
        if let Some(total) = expected_len {
            if partial.len != total {
                return Err(Attempt::Transient {
                    reason: format!("body ended at {} of {total} bytes", partial.len),
                    progressed: kept > 0,
                    wait: None,
                });
            }
        }
        partial.seal()
    }

    /// Appends the body to the partial file; returns how many bytes it kept. The writes
    /// (and the hashing) run on blocking threads in batches, so a slow disk does not stall
    /// the network.
    pub(super) async fn stream_body(
        &self,
        url: &str,
        response: reqwest::Response,
        partial: &mut Partial,
        tally: &AtomicU64,
    ) -> Result<u64, Attempt> {
        let part = partial.part.clone();
        let local =
            |e: std::io::Error| Attempt::Local(Error::io(format!("writing {}", part.display()))(e));
        let start = partial.len;
        let opened = part.clone();
        let file = blocking_io(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&opened)?;
            file.set_len(start)?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
            Ok(file)
        })
        .await
        .map_err(local)?;
        let hasher = partial.hasher.take().expect("hasher ready");
        let mut batch = Batch {
            file,
            hasher,
            bytes: Vec::with_capacity(WRITE_BUFFER),
        };
        let mut body = response.bytes_stream();
        let mut kept = 0u64;
        let outcome = loop {
            let chunk = match tokio::time::timeout(self.options.stall_timeout, body.next()).await {
                Err(_) => {
                    break Err(transient(format!(
                        "body stalled for {:?}",
                        self.options.stall_timeout
                    )))
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(err))) => break Err(transient(error_chain(&err))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            let length = partial.len + batch.bytes.len() as u64 + chunk.len() as u64;
            if length > partial.cap {
                break Err(Attempt::Refused(format!(
                    "the body goes on past {} bytes, the most it may have",
                    partial.cap
                )));
            }
            if let Some(rate) = &self.rate {
                rate.take(chunk.len()).await;
            }
            batch.bytes.extend_from_slice(&chunk);
            kept += chunk.len() as u64;
            self.count_bytes(url, partial.progress_id, chunk.len() as u64, tally);
            if batch.bytes.len() >= WRITE_BUFFER {
                let written = batch.bytes.len() as u64;
                batch = batch.write().await.map_err(local)?;
                partial.len += written;
            }
        };
        let written = batch.bytes.len() as u64;
        let batch = batch.write().await.map_err(local)?;
        partial.len += written;
        partial.hasher = Some(batch.hasher);
        match outcome {
            Ok(()) => Ok(kept),
            Err(Attempt::Transient { reason, wait, .. }) => Err(Attempt::Transient {
                reason,
                progressed: kept > 0,
                wait,
            }),
            Err(other) => Err(other),
        }
    }
}

/// Body bytes on their way to the partial file, with the file and the hasher they go through.
struct Batch {
    file: std::fs::File,
    hasher: HashedWrites,
    bytes: Vec<u8>,
}

impl Batch {
    /// Writes and hashes the bytes on a blocking thread; gives the emptied batch back.
    async fn write(self) -> std::io::Result<Batch> {
        blocking_io(move || {
            let Batch {
                mut file,
                mut hasher,
                mut bytes,
            } = self;
            hasher.write(&mut file, &bytes)?;
            bytes.clear();
            Ok(Batch {
                file,
                hasher,
                bytes,
            })
        })
        .await
    }
}

/// Refuses a download announced larger than it may be.
fn check_cap(announced: Option<u64>, cap: u64) -> Result<(), Attempt> {
    match announced {
        Some(length) if length > cap => Err(Attempt::Refused(format!(
            "the server announces {length} bytes, more than the {cap} it may have"
        ))),
        _ => Ok(()),
    }
}

/// File work of the download path, off the async threads.
pub(super) async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("file task failed: {e}"))))
}
