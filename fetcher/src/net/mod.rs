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

mod hosts;
mod options;
mod partial;
mod rate;
mod retry;
pub mod schedule;
mod segmented;
mod single;
mod small;
pub mod substituter;

pub use options::{rewrite, DownloadOptions, Rewrite};

use reqwest::header::{HeaderMap, CONTENT_RANGE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

use crate::report::Progress;
use crate::store::VerifiedHash;
use crate::Error;
use hosts::HostTally;
use rate::TokenBucket;
use retry::error_chain;
use schedule::Slots;

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
    /// For ranges: HTTP/1.1 only, so that ranges fetched at once travel over separate TCP
    /// connections (each with its own window, which is the point on a far link) rather than
    /// as streams of one HTTP/2 connection.
    range_client: reqwest::Client,
    options: DownloadOptions,
    partial_dir: PathBuf,
    slots: Slots,
    queries: Semaphore,
    tallies: Mutex<BTreeMap<String, HostTally>>,
    rate: Option<TokenBucket>,
    progress: Arc<dyn Progress>,
    next_id: AtomicU64,
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
        progress: Arc<dyn Progress>,
    ) -> Result<Downloader, Error> {
        std::fs::create_dir_all(partial_dir)
            .map_err(Error::io(format!("creating {}", partial_dir.display())))?;
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("srcgrab/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(options.connect_timeout)
                .read_timeout(options.stall_timeout)
                .redirect(reqwest::redirect::Policy::limited(10))
                .pool_max_idle_per_host(options.max_per_host.max(1))
        };
        let client = builder()
            .build()
            .map_err(|e| Error::HttpClient(error_chain(&e)))?;
        let range_client = builder()
            .http1_only()
            .build()
            .map_err(|e| Error::HttpClient(error_chain(&e)))?;
        Ok(Downloader {
            client,
            range_client,
            slots: Slots::new(options.jobs, options.max_per_host),
            queries: Semaphore::new(options.queries.max(1)),
            tallies: Mutex::new(BTreeMap::new()),
            rate: options.rate_limit.map(TokenBucket::new),
            partial_dir: partial_dir.to_path_buf(),
            options,
            progress,
            next_id: AtomicU64::new(0),
        })
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
