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

use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use srcgrab_formats::hash::{encode_hex, Hash, HashAlgo};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use crate::cache::{HashedWrites, VerifiedHash};
use crate::report::{HostReport, Progress};
use crate::schedule::{Slot, Slots};
use crate::Error;

/// Buffer between the network and the partial file: also the most of each in-flight
/// download a killed run loses.
const WRITE_BUFFER: usize = 64 * 1024;
/// Longest backoff between two tries of one URL.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes of one range received between two saves of what is on disk: what a killed
/// segmented download loses per range at most.
const SEGMENT_SAVE_EVERY: u64 = 1024 * 1024;
/// A download waiting this long for a connection asks its size with HEAD meanwhile.
const PROBE_AFTER: Duration = Duration::from_millis(500);
/// No range is made smaller than this, however many segments are asked for.
const MIN_SEGMENT: u64 = 1024 * 1024;

/// A `--rewrite FROM=TO` rule: URLs starting with FROM get TO instead of that prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
}

/// Applies the first rule whose prefix matches, as given on the command line.
pub fn rewrite(rules: &[Rewrite], url: &str) -> String {
    rules
        .iter()
        .find_map(|r| {
            url.strip_prefix(&r.from)
                .map(|rest| format!("{}{rest}", r.to))
        })
        .unwrap_or_else(|| url.to_string())
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Connections transferring at once overall (whole files and ranges alike).
    pub jobs: usize,
    /// Connections transferring at once per host (host and port).
    pub max_per_host: usize,
    /// Ranges a large file is split into (1: never split).
    pub segments: usize,
    /// Files at least this large (by the server's Content-Length) are split.
    pub segment_threshold: u64,
    /// Small requests (narinfo) in flight; these are not bound by `jobs` or `max_per_host`.
    pub queries: usize,
    /// Retries of one URL after transient errors with no progress in between.
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Longest wait for the response head, or for more body bytes.
    pub stall_timeout: Duration,
    /// First delay before a retry; doubled on each retry, with jitter.
    pub backoff: Duration,
    /// Bytes per second over all transfers.
    pub rate_limit: Option<u64>,
}

impl Default for DownloadOptions {
    fn default() -> DownloadOptions {
        DownloadOptions {
            jobs: 32,
            max_per_host: 8,
            segments: 4,
            segment_threshold: 8 * 1024 * 1024,
            queries: 32,
            retries: 4,
            connect_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(60),
            backoff: Duration::from_millis(250),
            rate_limit: None,
        }
    }
}

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

/// What one try of a URL ended with, when it did not end well.
enum Attempt {
    /// Try again later (connection, timeout, 429, 5xx, cut body); `progressed` when some
    /// bytes were kept, so the retry budget starts over.
    Transient { reason: String, progressed: bool },
    /// The server said no; move to the next URL.
    Refused(String),
    /// Our side failed (disk).
    Local(Error),
}

fn transient(reason: impl Into<String>) -> Attempt {
    Attempt::Transient {
        reason: reason.into(),
        progressed: false,
    }
}

fn classify(err: reqwest::Error) -> Attempt {
    let text = error_chain(&err);
    if err.is_builder() || err.is_redirect() {
        Attempt::Refused(text)
    } else {
        transient(text)
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn status_attempt(status: StatusCode) -> Attempt {
    let text = format!("HTTP {status}");
    match status.as_u16() {
        408 | 429 | 500..=599 => transient(text),
        _ => Attempt::Refused(text),
    }
}

/// Beside a partial file: what it is a prefix of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartialMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The full length, when the server said.
    length: Option<u64>,
    /// For a download in ranges: the ranges and how much of each is on disk. Empty for a
    /// download in one stream, whose file is then a prefix of the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    segments: Vec<Segment>,
}

/// One range `[start, end)` of a segmented download, of which `done` bytes from `start`
/// are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    start: u64,
    end: u64,
    done: u64,
}

impl Segment {
    fn next_byte(&self) -> u64 {
        self.start + self.done
    }

    fn is_complete(&self) -> bool {
        self.next_byte() >= self.end
    }
}

/// `total` bytes cut into at most `count` ranges of at least [`MIN_SEGMENT`] bytes.
fn plan_segments(total: u64, count: usize) -> Vec<Segment> {
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

impl PartialMeta {
    /// What to send as `If-Range`: a strong ETag, else the date.
    fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// A partial download: the file holds `len` bytes and `hasher` (when known) has seen them.
struct Partial {
    part: PathBuf,
    meta_path: PathBuf,
    meta: PartialMeta,
    len: u64,
    hasher: Option<HashedWrites>,
    algo: HashAlgo,
    /// Whether some bytes came from an earlier response (so a bad hash may be a bad splice).
    spliced: bool,
    /// Set once splitting failed or gave a wrong hash: the rest of this download is one stream.
    single_stream: bool,
}

impl Partial {
    /// Takes over what an earlier run left for `url` when it can be validated, else starts empty.
    fn load(part: PathBuf, meta_path: PathBuf, url: &str, algo: HashAlgo) -> Partial {
        let meta: Option<PartialMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let usable = meta.filter(|m| {
            m.url == url
                && m.validator().is_some()
                && m.length.is_none_or(|total| len <= total)
                && (m.segments.is_empty() || m.length.is_some())
        });
        let (meta, len) = match usable {
            Some(meta) => (meta, len),
            None => {
                let _ = std::fs::remove_file(&part);
                let _ = std::fs::remove_file(&meta_path);
                (PartialMeta::default(), 0)
            }
        };
        Partial {
            part,
            meta_path,
            meta,
            len,
            hasher: (len == 0).then(|| HashedWrites::new(algo)),
            algo,
            spliced: false,
            single_stream: false,
        }
    }

    fn is_segmented(&self) -> bool {
        !self.meta.segments.is_empty()
    }

    fn reset(&mut self) {
        self.len = 0;
        self.hasher = Some(HashedWrites::new(self.algo));
        self.spliced = false;
        self.meta.segments.clear();
    }

    fn discard(&mut self) {
        self.reset();
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(&self.meta_path);
    }

    fn save_meta(&self) -> Result<(), Error> {
        write_meta(&self.meta_path, &self.meta)
    }

    /// Hashes the bytes already on disk (left by an earlier run) so appending can continue.
    async fn ensure_hasher(&mut self) -> Result<(), Error> {
        if self.hasher.is_some() {
            return Ok(());
        }
        let part = self.part.clone();
        let (algo, len) = (self.algo, self.len);
        let hashed = tokio::task::spawn_blocking(move || {
            HashedWrites::resume(&part, algo, len)
                .map_err(Error::io(format!("reading {}", part.display())))
        })
        .await
        .map_err(|e| Error::HttpClient(format!("hashing task failed: {e}")))??;
        self.hasher = Some(hashed);
        Ok(())
    }

    /// The hash of the whole file, once every byte went through the hasher.
    fn seal(&self) -> Result<VerifiedHash, Attempt> {
        self.hasher
            .clone()
            .expect("hasher ready")
            .seal(&self.part)
            .map_err(|e| Attempt::Local(Error::io(format!("checking {}", self.part.display()))(e)))
    }
}

/// Replaces the meta file whole (write, then rename), so a killed run never leaves half of one.
fn write_meta(path: &Path, meta: &PartialMeta) -> Result<(), Error> {
    let text = serde_json::to_vec(meta).expect("meta serialises");
    let fresh = path.with_extension("meta-new");
    std::fs::write(&fresh, text)
        .and_then(|()| std::fs::rename(&fresh, path))
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Overall rate limit: a token bucket holding at most one second of tokens; a transfer
/// that takes more than there is waits for the debt to be paid.
struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    async fn take(&self, bytes: usize) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (tokens, last) = &mut *state;
            let now = Instant::now();
            *tokens =
                (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
            *last = now;
            *tokens -= bytes as f64;
            (*tokens < 0.0).then(|| Duration::from_secs_f64(-*tokens / self.rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What one host gave during a run, for the per-host report.
#[derive(Debug, Default)]
struct HostTally {
    bytes: u64,
    requests: u64,
    retries: u64,
    open: u64,
    peak_open: u64,
    /// Time with at least one transfer open, up to the last time none was.
    busy: Duration,
    busy_since: Option<Instant>,
}

/// A connection slot held for one request, counted in its host's tally while it lives.
struct Lease<'a> {
    _slot: Slot<'a>,
    downloader: &'a Downloader,
    host: String,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut hosts = self.downloader.lock_tallies();
        let tally = hosts.entry(self.host.clone()).or_default();
        tally.open -= 1;
        if tally.open == 0 {
            if let Some(since) = tally.busy_since.take() {
                tally.busy += since.elapsed();
            }
        }
    }
}

/// A segmented download in progress: the file written at offsets, what each range has.
struct Assembly<'a> {
    file: std::fs::File,
    part: &'a Path,
    meta_path: &'a Path,
    meta: PartialMeta,
    total: u64,
    /// The URL whose validator and length the ranges are checked against: where the
    /// opening GET's redirects ended, so ranges do not pay for them again.
    primary: String,
    /// Other URLs of the same content that may serve ranges; dropped when they fail.
    alternates: Mutex<Vec<String>>,
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

    /// The URL for try `turn` of a range: the primary and the alternates in turn.
    fn source(&self, turn: usize) -> String {
        let alternates = self.alternates.lock().unwrap_or_else(|e| e.into_inner());
        match turn % (alternates.len() + 1) {
            0 => self.primary.to_string(),
            i => alternates[i - 1].clone(),
        }
    }

    fn drop_alternate(&self, url: &str) {
        self.alternates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|u| u != url);
    }
}

/// What a HEAD said about a download.
struct Head {
    meta: PartialMeta,
    headers: HeaderMap,
}

/// How one request for a range ended, when it did not bring the whole range.
enum RangeTry {
    /// This server cannot be trusted with ranges of this file: one stream from now on.
    Fallback(String),
    /// An alternate URL that cannot serve ranges of this content; the others go on.
    SourceRefused(String),
    Attempt(Attempt),
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

/// `host:port` of a URL: what connection limits and the per-host report count by.
fn host_key(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_default()
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

    fn lock_tallies(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostTally>> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a connection slot to `url`'s host; `priority` is the download's size when known.
    async fn lease(&self, url: &str, priority: u64) -> Lease<'_> {
        let host = host_key(url);
        let slot = self.slots.acquire(&host, priority).await;
        let mut hosts = self.lock_tallies();
        let tally = hosts.entry(host.clone()).or_default();
        tally.requests += 1;
        tally.open += 1;
        tally.peak_open = tally.peak_open.max(tally.open);
        tally.busy_since.get_or_insert_with(Instant::now);
        Lease {
            _slot: slot,
            downloader: self,
            host,
        }
    }

    /// A slot for the first request of a download of unknown size. When it has waited
    /// [`PROBE_AFTER`] (a slow link: slots turn over slowly), a HEAD (outside the connection
    /// budget, like narinfo lookups) asks the size, so that large files waiting behind
    /// small ones move ahead once known; its answer comes along.
    async fn lease_sized(&self, url: &str) -> (Lease<'_>, Option<Head>) {
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
    async fn head(&self, url: &str) -> Option<Head> {
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

    fn note_bytes(&self, url: &str, bytes: u64) {
        self.lock_tallies().entry(host_key(url)).or_default().bytes += bytes;
    }

    fn note_retry(&self, url: &str) {
        self.lock_tallies()
            .entry(host_key(url))
            .or_default()
            .retries += 1;
    }

    /// What every host gave so far, by host.
    pub fn host_reports(&self) -> Vec<HostReport> {
        self.lock_tallies()
            .iter()
            .filter(|(_, t)| t.requests > 0)
            .map(|(host, t)| {
                let busy = t.busy + t.busy_since.map_or(Duration::ZERO, |s| s.elapsed());
                HostReport {
                    host: host.clone(),
                    bytes: t.bytes,
                    bytes_per_second: (t.bytes as f64 / busy.as_secs_f64().max(1e-3)) as u64,
                    busy_seconds: busy.as_secs_f64(),
                    requests: t.requests,
                    retries: t.retries,
                    peak_connections: t.peak_open,
                }
            })
            .collect()
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exponential = self
            .options
            .backoff
            .saturating_mul(1 << failures.min(16).saturating_sub(1));
        exponential
            .min(MAX_BACKOFF)
            .mul_f64(0.75 + fastrand::f64() * 0.5)
    }

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

    /// Runs a small request until it answers, retrying transient failures with backoff.
    async fn with_retries<T, Request, Pending>(
        &self,
        url: &str,
        mut try_once: Request,
    ) -> Result<T, Error>
    where
        Request: FnMut() -> Pending,
        Pending: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut failures = 0;
        loop {
            let reason = match try_once().await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Transient { reason, .. }) => reason,
                Err(Attempt::Refused(reason)) => {
                    return Err(Error::Download {
                        url: url.to_string(),
                        reason,
                    })
                }
                Err(Attempt::Local(err)) => return Err(err),
            };
            failures += 1;
            if failures > self.options.retries {
                return Err(Error::Download {
                    url: url.to_string(),
                    reason: format!("{reason} (gave up after {failures} tries)"),
                });
            }
            tokio::time::sleep(self.backoff(failures)).await;
        }
    }

    fn partial_stem(&self, key: &str) -> PathBuf {
        self.partial_dir
            .join(&encode_hex(&HashAlgo::Sha256.digest(key.as_bytes()))[..32])
    }

    /// Forgets what a download under `key` left behind (once its entry came from elsewhere).
    pub fn discard_partial(&self, key: &str) {
        let stem = self.partial_stem(key);
        let _ = std::fs::remove_file(stem.with_extension("part"));
        let _ = std::fs::remove_file(stem.with_extension("meta"));
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
    async fn attempt(
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
    async fn stream_body(
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

/// Segmented downloads.
impl Downloader {
    fn count_bytes(&self, url: &str, id: u64, bytes: u64, tally: &AtomicU64) {
        tally.fetch_add(bytes, Ordering::Relaxed);
        self.note_bytes(url, bytes);
        self.progress.download_bytes(id, bytes);
    }

    /// The ranges to fetch a fresh `200` answer in, when it is worth splitting: large
    /// enough, ranges not refused (`Accept-Ranges: none`), and no earlier failure.
    fn split(&self, partial: &Partial, headers: &HeaderMap) -> Option<Vec<Segment>> {
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
    async fn fill_segments(
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
        let context = || format!("writing {}", partial.part.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial.part)
            .and_then(|file| file.set_len(total).map(|()| file))
            .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
        let assembly = Assembly {
            file,
            part: &partial.part,
            meta_path: &partial.meta_path,
            meta: partial.meta.clone(),
            total,
            primary: opened
                .as_ref()
                .map_or(url, |(response, _)| response.url().as_str())
                .to_string(),
            alternates: Mutex::new(alternates.to_vec()),
            segments: Mutex::new(partial.meta.segments.clone()),
        };
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
                return Err(Attempt::Transient {
                    reason: format!("{reason}; falling back to one stream"),
                    progressed: true,
                });
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

    /// Fetches one range until it is complete, retrying it alone after transient errors,
    /// each try from the next source in turn.
    async fn fill_segment(
        &self,
        assembly: &Assembly<'_>,
        index: usize,
        mut opened: Option<(reqwest::Response, Lease<'_>)>,
        tally: &AtomicU64,
    ) -> Result<(), RangeTry> {
        let mut failures = 0;
        let mut turn = index;
        while !assembly.segment(index).is_complete() {
            let source = match &opened {
                Some(_) => assembly.primary.to_string(),
                None => assembly.source(turn),
            };
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
            let (reason, progressed) = match result {
                Ok(_) => continue,
                Err(RangeTry::Attempt(Attempt::Transient { reason, progressed })) => {
                    (reason, progressed)
                }
                Err(RangeTry::SourceRefused(reason)) if source != assembly.primary.as_str() => {
                    assembly.drop_alternate(&source);
                    (format!("{source}: {reason}"), false)
                }
                Err(RangeTry::SourceRefused(reason)) => {
                    return Err(RangeTry::Attempt(Attempt::Refused(reason)))
                }
                Err(other) => return Err(other),
            };
            self.note_retry(&source);
            turn += 1;
            failures = if progressed { 1 } else { failures + 1 };
            if failures > self.options.retries {
                return Err(RangeTry::Attempt(transient(format!(
                    "{reason} (range gave up after {failures} tries)"
                ))));
            }
            tokio::time::sleep(self.backoff(failures)).await;
        }
        Ok(())
    }

    /// One request for the rest of range `index` from `source`, checked against the first
    /// answer: a `206` for exactly the bytes asked, of the same total length and ETag.
    async fn request_range(
        &self,
        source: &str,
        assembly: &Assembly<'_>,
        index: usize,
        tally: &AtomicU64,
    ) -> Result<u64, RangeTry> {
        let segment = assembly.segment(index);
        let primary = source == assembly.primary;
        // Another URL's answer would fail its own way; ranges it cannot give it does not get.
        let distrust = |reason: String| {
            if primary {
                RangeTry::Fallback(reason)
            } else {
                RangeTry::SourceRefused(reason)
            }
        };
        let lease = self.lease(source, assembly.total).await;
        let mut request = self.range_client.get(source).header(
            RANGE,
            format!("bytes={}-{}", segment.next_byte(), segment.end - 1),
        );
        if let Some(validator) = assembly.meta.validator().filter(|_| primary) {
            request = request.header(IF_RANGE, validator);
        }
        let response = match tokio::time::timeout(self.options.stall_timeout, request.send()).await
        {
            Err(_) => return Err(RangeTry::Attempt(transient("no response (timed out)"))),
            Ok(Err(err)) => {
                return Err(match classify(err) {
                    Attempt::Refused(reason) => RangeTry::SourceRefused(reason),
                    other => RangeTry::Attempt(other),
                })
            }
            Ok(Ok(response)) => response,
        };
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
                return Err(match status_attempt(status) {
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
    async fn stream_range(
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.progress
            .download_start(id, source, Some(segment.end - segment.next_byte()));
        let mut body = response.bytes_stream();
        let mut kept = 0u64;
        let mut unsaved = 0u64;
        let outcome = loop {
            let position = segment.next_byte() + kept;
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
                self.progress.download_end(id);
                return Err(RangeTry::Fallback(
                    "a range answer carries more bytes than asked for".into(),
                ));
            }
            let chunk = &chunk[..chunk.len().min(room)];
            if let Some(rate) = &self.rate {
                rate.take(chunk.len()).await;
            }
            if let Err(err) = assembly.file.write_all_at(chunk, position) {
                self.progress.download_end(id);
                return Err(local(err));
            }
            kept += chunk.len() as u64;
            unsaved += chunk.len() as u64;
            self.count_bytes(source, id, chunk.len() as u64, tally);
            assembly.segments.lock().unwrap_or_else(|e| e.into_inner())[index].done +=
                chunk.len() as u64;
            if unsaved >= SEGMENT_SAVE_EVERY {
                unsaved = 0;
                if let Err(err) = assembly.save() {
                    self.progress.download_end(id);
                    return Err(RangeTry::Attempt(Attempt::Local(err)));
                }
            }
        };
        self.progress.download_end(id);
        match outcome {
            Ok(()) => Ok(kept),
            Err(reason) => Err(RangeTry::Attempt(Attempt::Transient {
                reason,
                progressed: kept > 0,
            })),
        }
    }
}

/// The `algo` hash of `path`, which must be `len` bytes long, off the async threads.
async fn hash_file(path: &Path, algo: HashAlgo, len: u64) -> Result<VerifiedHash, Error> {
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
    .map_err(|e| Error::HttpClient(format!("hashing task failed: {e}")))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_by_first_matching_prefix() {
        let rule = |from: &str, to: &str| Rewrite {
            from: from.into(),
            to: to.into(),
        };
        let rules = [
            rule("https://ftpmirror.gnu.org/", "http://mirror.lan/gnu/"),
            rule("https://", "http://proxy/"),
        ];
        assert_eq!(
            rewrite(&rules, "https://ftpmirror.gnu.org/hello/hello-2.12.tar.gz"),
            "http://mirror.lan/gnu/hello/hello-2.12.tar.gz"
        );
        assert_eq!(
            rewrite(&rules, "https://example.org/x"),
            "http://proxy/example.org/x"
        );
        assert_eq!(
            rewrite(&rules, "ftp://example.org/x"),
            "ftp://example.org/x"
        );
    }

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
