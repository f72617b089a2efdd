//! Segmented downloads: a large file fetched as several ranges at once, from the entry's
//! other URLs too, written at their offsets into one partial file.

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT_RANGES, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use reqwest::StatusCode;
use srcgrab_formats::hash::HashAlgo;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::hosts::Lease;
use super::partial::{write_meta, Partial, PartialMeta, Segment};
use super::retry::{error_chain, status_attempt, transient, Attempt};
use super::single::blocking_io;
use super::{content_range, header_text, Downloader};
use crate::net::Error;
use crate::report::FetchEvent;
use crate::store::VerifiedHash;

/// Bytes of one range received between two saves of what is on disk: what a killed
/// segmented download loses per range at most.
pub(super) const SEGMENT_SAVE_EVERY: u64 = 1024 * 1024;
/// Bytes of one range gathered before one write at its offset.
const WRITE_BATCH: usize = 256 * 1024;
/// No range is made smaller than this, however many segments are asked for.
pub(super) const MIN_SEGMENT: u64 = 1024 * 1024;

/// `total` bytes cut into at most `count` ranges of at least [`MIN_SEGMENT`] bytes.
pub(super) fn plan_segments(total: u64, count: usize) -> Vec<Segment> {
    let count = (count as u64).min(total / MIN_SEGMENT).max(1);
    let size = total.div_ceil(count);
    (0..count)
        .map(|i| Segment {
            start: i * size,
            end: ((i + 1) * size).min(total),
            done: 0,
        })
        .filter(|s| s.start < s.end)
        .collect()
}

/// Where the ranges of one file come from. The primary serves any range; an alternate URL
/// gets one range as a trial and more only once it answered that one with the right
/// length and validator; an alternate that fails is dropped without counting against the
/// range's retries, and its range goes back to the primary.
struct Sources {
    /// The URL whose validator and length the ranges are checked against: where the
    /// opening GET's redirects ended, so ranges do not pay for them again.
    primary: String,
    /// Alternates not asked yet, in the entry's order.
    untried: Vec<String>,
    /// Alternates that served a range of this content.
    proven: Vec<String>,
}

impl Sources {
    /// The source for the first try of range `index`: a trial for the next untried
    /// alternate (ranges after the first), else the primary and proven ones in turn.
    fn first(&mut self, index: usize) -> String {
        if index > 0 && !self.untried.is_empty() {
            return self.untried.remove(0);
        }
        self.rotation(index)
    }

    /// The primary and the proven alternates, by `turn`.
    fn rotation(&self, turn: usize) -> String {
        match turn % (self.proven.len() + 1) {
            0 => self.primary.clone(),
            i => self.proven[i - 1].clone(),
        }
    }

    fn drop_alternate(&mut self, url: &str) {
        self.proven.retain(|u| u != url);
    }

    fn prove(&mut self, url: &str) {
        if url != self.primary && !self.proven.iter().any(|u| u == url) {
            self.proven.push(url.to_string());
        }
    }
}

/// A segmented download in progress: the file written at offsets, what each range has.
pub(super) struct Assembly<'a> {
    file: Arc<std::fs::File>,
    part: &'a Path,
    meta_path: &'a Path,
    meta: PartialMeta,
    total: u64,
    progress_id: u64,
    sources: Mutex<Sources>,
    segments: Mutex<Vec<Segment>>,
}

impl Assembly<'_> {
    fn save(&self) -> Result<(), Error> {
        let mut meta = self.meta.clone();
        meta.segments = self
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        write_meta(self.meta_path, &meta)
    }

    fn segment(&self, index: usize) -> Segment {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())[index]
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_primary(&self, url: &str) -> bool {
        self.sources().primary == url
    }

    /// Writes `bytes` at `offset` of the partial file on a blocking thread.
    async fn write_at(&self, bytes: Vec<u8>, offset: u64) -> std::io::Result<Vec<u8>> {
        let file = self.file.clone();
        blocking_io(move || file.write_all_at(&bytes, offset).map(|()| bytes)).await
    }
}

/// How one request for a range ended, when it did not bring the whole range.
pub(super) enum RangeTry {
    /// This server cannot be trusted with ranges of this file: one stream from now on.
    Fallback(String),
    /// An alternate URL that cannot serve ranges of this content; the others go on.
    SourceRefused(String),
    Attempt(Attempt),
}

impl Downloader {
    /// The ranges to fetch a fresh `200` answer in, when it is worth splitting: large
    /// enough, ranges not refused (`Accept-Ranges: none`), and no earlier failure.
    pub(super) fn split(&self, partial: &Partial, headers: &HeaderMap) -> Option<Vec<Segment>> {
        let total = partial.meta.length?;
        let refuses_ranges = header_text(headers, ACCEPT_RANGES)
            .is_some_and(|value| value.eq_ignore_ascii_case("none"));
        let worth_it = self.options.segments > 1
            && total >= self.options.segment_threshold.max(1)
            && !refuses_ranges
            && !partial.single_stream;
        let segments = plan_segments(total, self.options.segments);
        (worth_it && segments.len() > 1).then_some(segments)
    }

    /// Fetches every unfinished range of `partial` at once, the first over `opened` (the
    /// response of a plain GET, read up to the end of its range) when given, then hashes
    /// the whole file. A server that cannot be trusted with ranges makes the download start
    /// over in one stream; any other failure keeps what is on disk for the next try.
    pub(super) async fn fill_segments(
        &self,
        url: &str,
        alternates: &[String],
        partial: &mut Partial,
        tally: &AtomicU64,
        opened: Option<(reqwest::Response, Lease<'_>)>,
    ) -> Result<VerifiedHash, Attempt> {
        let total = partial
            .meta
            .length
            .expect("segmented downloads have a length");
        let part = partial.part.clone();
        let file = blocking_io(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&part)?;
            file.set_len(total)?;
            Ok(file)
        })
        .await
        .map_err(|e| Attempt::Local(Error::io(format!("writing {}", partial.part.display()))(e)))?;
        let primary = opened
            .as_ref()
            .map_or(url, |(response, _)| response.url().as_str())
            .to_string();
        let assembly = Assembly {
            file: Arc::new(file),
            part: &partial.part,
            meta_path: &partial.meta_path,
            meta: partial.meta.clone(),
            total,
            progress_id: partial.progress_id,
            sources: Mutex::new(Sources {
                primary,
                untried: alternates.to_vec(),
                proven: Vec::new(),
            }),
            segments: Mutex::new(partial.meta.segments.clone()),
        };
        self.progress.report(FetchEvent::DownloadRanges {
            id: partial.progress_id,
            ranges: partial.meta.segments.len(),
        });
        let mut opened = opened;
        let workers = (0..partial.meta.segments.len())
            .filter(|&index| !partial.meta.segments[index].is_complete())
            .map(|index| {
                let first = if index == 0 { opened.take() } else { None };
                self.fill_segment(&assembly, index, first, tally)
            });
        let filled = futures_util::future::try_join_all(workers).await;
        drop(opened);
        partial.meta.segments = assembly
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        partial.spliced = true;
        match filled {
            Ok(_) => {}
            Err(RangeTry::Fallback(reason)) => {
                partial.discard();
                partial.single_stream = true;
                return Err(transient(format!("{reason}; falling back to one stream")));
            }
            Err(RangeTry::SourceRefused(reason)) => return Err(Attempt::Refused(reason)),
            Err(RangeTry::Attempt(attempt)) => {
                assembly.save().map_err(Attempt::Local)?;
                return Err(attempt);
            }
        }
        assembly.save().map_err(Attempt::Local)?;
        let hash = hash_file(&partial.part, partial.algo, total)
            .await
            .map_err(Attempt::Local)?;
        partial.len = total;
        Ok(hash)
    }

    /// Fetches one range until it is complete, retrying it alone after transient errors.
    /// Only failures of the primary and of proven alternates count against the retries.
    pub(super) async fn fill_segment(
        &self,
        assembly: &Assembly<'_>,
        index: usize,
        mut opened: Option<(reqwest::Response, Lease<'_>)>,
        tally: &AtomicU64,
    ) -> Result<(), RangeTry> {
        let mut failures = 0;
        let mut turn = index;
        let mut source = match &opened {
            Some(_) => assembly.sources().primary.clone(),
            None => assembly.sources().first(index),
        };
        while !assembly.segment(index).is_complete() {
            let result = match opened.take() {
                Some((response, lease)) => {
                    let kept = self
                        .stream_range(&source, response, assembly, index, true, tally)
                        .await;
                    drop(lease);
                    kept
                }
                None => self.request_range(&source, assembly, index, tally).await,
            };
            let err = match result {
                Ok(_) => continue,
                Err(RangeTry::Attempt(Attempt::Local(err))) => {
                    return Err(RangeTry::Attempt(Attempt::Local(err)))
                }
                Err(err) => err,
            };
            self.note_retry(&source);
            if !assembly.is_primary(&source) {
                // An alternate that fails is no longer asked; the range goes back to the
                // primary, and the failure is not the primary's.
                let mut sources = assembly.sources();
                sources.drop_alternate(&source);
                source = sources.primary.clone();
                continue;
            }
            let (reason, wait, progressed) = match err {
                RangeTry::Attempt(Attempt::Transient {
                    reason,
                    wait,
                    progressed,
                }) => (reason, wait, progressed),
                RangeTry::Attempt(Attempt::Unreachable {
                    reason,
                    permanent: false,
                }) => (reason, None, false),
                RangeTry::Attempt(permanent) if assembly.sources().proven.is_empty() => {
                    return Err(RangeTry::Attempt(permanent))
                }
                RangeTry::SourceRefused(reason) if assembly.sources().proven.is_empty() => {
                    return Err(RangeTry::Attempt(Attempt::Refused(reason)))
                }
                other @ RangeTry::Fallback(_) => return Err(other),
                // The primary will not serve this range again, a proven alternate may.
                RangeTry::Attempt(_) | RangeTry::SourceRefused(_) => {
                    turn += 1;
                    let sources = assembly.sources();
                    source = sources.proven[turn % sources.proven.len()].clone();
                    continue;
                }
            };
            // Bytes a range keeps are never fetched again: its progress is real.
            failures = if progressed { 1 } else { failures + 1 };
            if failures > self.options.retries {
                return Err(RangeTry::Attempt(transient(format!(
                    "{reason} (range gave up after {failures} tries)"
                ))));
            }
            turn += 1;
            source = assembly.sources().rotation(turn);
            tokio::time::sleep(self.backoff(failures, wait)).await;
        }
        Ok(())
    }

    /// One request for the rest of range `index` from `source`, checked against the first
    /// answer: a `206` for exactly the bytes asked, of the same total length and ETag.
    pub(super) async fn request_range(
        &self,
        source: &str,
        assembly: &Assembly<'_>,
        index: usize,
        tally: &AtomicU64,
    ) -> Result<u64, RangeTry> {
        let segment = assembly.segment(index);
        let primary = assembly.is_primary(source);
        // Another URL's answer would fail its own way; ranges it cannot give it does not get.
        let distrust = |reason: String| {
            if primary {
                RangeTry::Fallback(reason)
            } else {
                RangeTry::SourceRefused(reason)
            }
        };
        self.check_up(source).map_err(RangeTry::Attempt)?;
        let lease = self.lease(source, assembly.total).await;
        let mut request = self.range_client.get(source).header(
            RANGE,
            format!("bytes={}-{}", segment.next_byte(), segment.end - 1),
        );
        if let Some(validator) = assembly.meta.validator().filter(|_| primary) {
            request = request.header(IF_RANGE, validator);
        }
        let response = self
            .send(source, request)
            .await
            .map_err(|attempt| match attempt {
                Attempt::Refused(reason) => RangeTry::SourceRefused(reason),
                other => RangeTry::Attempt(other),
            })?;
        let status = response.status();
        let headers = response.headers();
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = content_range(headers);
                if range.is_none_or(|(_, _, total)| total != Some(assembly.total)) {
                    return Err(distrust(format!(
                        "a range answer gives another length than {} (Content-Range {:?})",
                        assembly.total,
                        header_text(headers, CONTENT_RANGE)
                    )));
                }
                if range.is_some_and(|(start, _, _)| start != segment.next_byte()) {
                    return Err(distrust("a range answer starts at another offset".into()));
                }
                let etag = header_text(headers, ETAG);
                if primary && etag.is_some() && assembly.meta.etag.is_some() && etag != assembly.meta.etag {
                    return Err(RangeTry::Fallback(
                        "the ETag changed between requests (the file changed)".into(),
                    ));
                }
                assembly.sources().prove(source);
            }
            StatusCode::OK => {
                return Err(distrust(
                    "the server answered a range request with the whole file (it ignores ranges, or the file changed)".into(),
                ))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(distrust(format!(
                    "range not satisfiable: the file is not {} bytes long",
                    assembly.total
                )))
            }
            _ if status.is_success() => {
                return Err(distrust(format!("unexpected HTTP {status} to a range request")))
            }
            _ => {
                return Err(match status_attempt(status, headers) {
                    Attempt::Refused(reason) => RangeTry::SourceRefused(reason),
                    other => RangeTry::Attempt(other),
                })
            }
        }
        let kept = self
            .stream_range(source, response, assembly, index, false, tally)
            .await;
        drop(lease);
        kept
    }

    /// Writes a body at the offsets of range `index`. `bounded_by_us`: the body goes on past
    /// the range (the plain GET that opened the download) and is dropped at its end; any
    /// other body that goes past its range is a server not doing what it says.
    pub(super) async fn stream_range(
        &self,
        source: &str,
        response: reqwest::Response,
        assembly: &Assembly<'_>,
        index: usize,
        bounded_by_us: bool,
        tally: &AtomicU64,
    ) -> Result<u64, RangeTry> {
        let local = |e: std::io::Error| {
            RangeTry::Attempt(Attempt::Local(Error::io(format!(
                "writing {}",
                assembly.part.display()
            ))(e)))
        };
        let segment = assembly.segment(index);
        let mut body = response.bytes_stream();
        let mut kept = 0u64;
        let mut unsaved = 0u64;
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        // Writes what was gathered, then counts it as on disk.
        let flush = |batch: Vec<u8>, kept_before: u64| async move {
            let written = batch.len() as u64;
            let batch = assembly
                .write_at(batch, segment.next_byte() + kept_before)
                .await
                .map_err(local)?;
            assembly.segments.lock().unwrap_or_else(|e| e.into_inner())[index].done += written;
            Ok::<_, RangeTry>(batch)
        };
        let outcome = loop {
            let position = segment.next_byte() + kept + batch.len() as u64;
            if position >= segment.end {
                break Ok(());
            }
            let chunk = match tokio::time::timeout(self.options.stall_timeout, body.next()).await {
                Err(_) => break Err(format!("body stalled for {:?}", self.options.stall_timeout)),
                Ok(None) => {
                    break Err(format!(
                        "range body ended at byte {position} of {}..{}",
                        segment.start, segment.end
                    ))
                }
                Ok(Some(Err(err))) => break Err(error_chain(&err)),
                Ok(Some(Ok(chunk))) => chunk,
            };
            let room = (segment.end - position) as usize;
            if chunk.len() > room && !bounded_by_us {
                return Err(RangeTry::Fallback(
                    "a range answer carries more bytes than asked for".into(),
                ));
            }
            let chunk = &chunk[..chunk.len().min(room)];
            if let Some(rate) = &self.rate {
                rate.take(chunk.len()).await;
            }
            batch.extend_from_slice(chunk);
            self.count_bytes(source, assembly.progress_id, chunk.len() as u64, tally);
            if batch.len() >= WRITE_BATCH {
                let written = batch.len() as u64;
                batch = flush(batch, kept).await?;
                batch.clear();
                kept += written;
                unsaved += written;
            }
            if unsaved >= SEGMENT_SAVE_EVERY {
                unsaved = 0;
                assembly
                    .save()
                    .map_err(|err| RangeTry::Attempt(Attempt::Local(err)))?;
            }
        };
        let written = batch.len() as u64;
        flush(batch, kept).await?;
        kept += written;
        match outcome {
            Ok(()) => Ok(kept),
            Err(reason) => Err(RangeTry::Attempt(Attempt::Transient {
                reason,
                progressed: kept > 0,
                wait: None,
            })),
        }
    }
}

/// The `algo` hash of `path`, which must be `len` bytes long, off the async threads.
pub(super) async fn hash_file(
    path: &Path,
    algo: HashAlgo,
    len: u64,
) -> Result<VerifiedHash, Error> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<VerifiedHash, Error> {
        let context = || format!("reading {}", path.display());
        let verified = VerifiedHash::of_file(&path, algo).map_err(Error::io(context()))?;
        let got = std::fs::metadata(&path)
            .map_err(Error::io(context()))?
            .len();
        if got != len {
            return Err(Error::io(context())(std::io::Error::other(format!(
                "{got} bytes, expected {len}"
            ))));
        }
        Ok(verified)
    })
    .await
    .map_err(Error::task("hashing"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_ranges_that_cover_the_file_once() {
        let total = 24 * 1024 * 1024 + 5;
        let segments = plan_segments(total, 4);
        assert_eq!(segments.len(), 4);
        assert_eq!(segments[0].start, 0);
        assert_eq!(segments[3].end, total);
        assert!(segments.windows(2).all(|w| w[0].end == w[1].start));
        // Never ranges below the minimum: a 2.5 MiB file gets two.
        assert_eq!(plan_segments(5 * MIN_SEGMENT / 2, 8).len(), 2);
        assert_eq!(plan_segments(10, 4).len(), 1);
    }
}
