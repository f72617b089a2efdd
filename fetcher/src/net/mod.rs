//! HTTP(S) downloads: bounded concurrency overall and per host, retries with exponential
//! backoff and jitter on transient errors, resume with `Range:` (within a run and across
//! runs), an overall rate limit, and the hash computed while the bytes stream in, so a
//! wrong file is known the moment it ends and memory stays constant.
//!
//! Partial downloads live in a directory on the cache's filesystem as `<key>.part` with a
//! `<key>.meta` beside it (URL and validators). A killed run leaves them; the next run
//! resumes them only when the URL is the same and the server confirms the validator
//! (`If-Range`), and the final hash check catches anything else.
//!
//! Over a link where one connection carries only a fraction of the bandwidth (a satellite
//! hop: long round trips, per-connection windows), a large file from a server that honours
//! ranges is fetched as several ranges at once, from the entry's other URLs too, written at
//! their offsets into the one partial file and hashed as a whole once every range is in;
//! the `.meta` then records which bytes of each range are on disk, so a killed run resumes
//! range by range. A server that ignores ranges, changes the file between requests or
//! disagrees with itself about the length makes the download fall back to one stream.

mod adapt;
mod bounds;
mod client;
mod error;
mod hosts;
mod options;
mod partial;
mod rate;
mod resolve;
mod retry;
pub mod schedule;
mod segmented;
mod single;
mod small;
pub mod substituter;

pub use error::Error;
pub use options::{rewrite, DownloadOptions, Rewrite};

use reqwest::header::{HeaderMap, CONTENT_RANGE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::report::FetchReporter;
use crate::store::VerifiedHash;
use adapt::Traffic;
use hosts::HostTally;
use partial::{clean_stale_partials, STALE_PARTIAL_AGE};
use rate::TokenBucket;
use retry::{classify, error_chain, is_resolution_failure, Attempt};
use schedule::Slots;
use srcgrab_formats::hash::Hash;

/// A complete download, left in the partial directory for the caller to publish, then
/// [`Downloaded::remove`].
#[derive(Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    meta: PathBuf,
    pub size: u64,
    /// Of the bytes, in the algorithm asked for, taken as they were written (or read back
    /// once the ranges were all in), so publishing need not hash them again.
    pub verified: VerifiedHash,
}

impl Downloaded {
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.meta);
    }
}

pub struct Downloader {
    client: reqwest::Client,
    /// For ranges: HTTP/1.1 only ([`client::clients`]).
    range_client: reqwest::Client,
    options: DownloadOptions,
    partial_dir: PathBuf,
    slots: Slots,
    /// For small requests, per host apart from transfers ([`hosts::HostTally`]).
    lookup_slots: Slots,
    resolutions: Arc<resolve::Resolutions>,
    tallies: Mutex<BTreeMap<String, HostTally>>,
    rate: Option<TokenBucket>,
    progress: Arc<FetchReporter>,
    next_id: AtomicU64,
    /// When the run began, for the times in the per-host report.
    started: Instant,
}

/// What one download is for: where its partial file lives, what it is called, and what it
/// must turn out to be.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Names the partial file; must differ between concurrent downloads.
    pub key: &'a str,
    /// What progress shows: the entry's name.
    pub label: &'a str,
    /// The hash the bytes must have; sha256 is taken when `None`.
    pub hash: Option<&'a Hash>,
    /// The size the download must have, when something says (a narinfo's FileSize): a
    /// server announcing or sending more is refused at once.
    pub size: Option<u64>,
}

impl Downloader {
    /// `partial_dir` keeps partial downloads; it should be on the cache's filesystem so a
    /// finished download moves in by rename. Proxies come from the environment
    /// (`http_proxy`, `https_proxy`, `no_proxy`), as curl and Nix take them. HTTP/2 is used
    /// where TLS offers it, so small files share one connection; over HTTP/1.1 idle
    /// connections are kept alive for the next file of the same host.
    pub fn new(
        options: DownloadOptions,
        partial_dir: &Path,
        progress: Arc<FetchReporter>,
    ) -> Result<Downloader, Error> {
        std::fs::create_dir_all(partial_dir)
            .map_err(Error::io(format!("creating {}", partial_dir.display())))?;
        clean_stale_partials(partial_dir, STALE_PARTIAL_AGE);
        let (client, range_client) = client::clients(&options)?;
        Ok(Downloader {
            client,
            range_client,
            // A host starts where its adaptive count starts, not at the ceiling.
            slots: Slots::new(
                options.jobs,
                Traffic::Transfers.starting_limit(options.max_per_host),
            ),
            lookup_slots: Slots::new(
                usize::MAX,
                Traffic::Lookups.starting_limit(options.max_lookups_per_host),
            ),
            resolutions: Arc::default(),
            tallies: Mutex::new(BTreeMap::new()),
            rate: options.rate_limit.map(TokenBucket::new),
            partial_dir: partial_dir.to_path_buf(),
            options,
            progress,
            next_id: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Sends one request to `url` unless its host is down, waiting at most the stall timeout
    /// for the response head, and notes whether the host answered.
    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Attempt> {
        self.admit(url)?;
        let sent = Instant::now();
        let attempt = match tokio::time::timeout(self.options.stall_timeout, request.send()).await {
            Ok(Ok(response)) => {
                self.note_reached(url);
                self.note_response(url, &response);
                return Ok(response);
            }
            Err(_) => Attempt::Unreachable {
                reason: format!("no response within {:?}", self.options.stall_timeout),
                permanent: false,
            },
            // No response head in time (reqwest's read timeout): the host does not answer.
            Ok(Err(err)) if err.is_timeout() => Attempt::Unreachable {
                reason: error_chain(&err),
                permanent: false,
            },
            Ok(Err(err)) => classify(&err),
        };
        if let Attempt::Unreachable { reason, .. } = &attempt {
            let at_once = is_resolution_failure(reason);
            self.note_unreached(url, reason, sent, at_once);
        }
        Err(attempt)
    }
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The first byte position of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    content_range(headers).map(|(start, _, _)| start)
}

/// `Content-Range: bytes START-END/TOTAL` as (START, END, TOTAL), TOTAL `None` for `*`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let text = header_text(headers, CONTENT_RANGE)?;
    let (range, total) = text.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok(),
    ))
}
