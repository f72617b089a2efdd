//! HTTP(S) downloads: bounded concurrency overall and per host, retries with exponential
//! backoff and jitter on transient errors, resume with `Range:` (within a run and across
//! runs), an overall rate limit, and the hash computed while the bytes stream in, so a
//! wrong file is known the moment it ends and memory stays constant.
//!
//! Partial downloads live in a directory on the cache's filesystem as `<key>.part` with a
//! `<key>.meta` beside it (URL and validators). A killed run leaves them; the next run
//! resumes them only when the URL is the same and the server confirms the validator
//! (`If-Range`), and the final hash check catches anything else.

use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use srcgrab_manifest::hash::{encode_hex, Hash, HashAlgo, Hasher};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use crate::report::Progress;
use crate::Error;

/// Buffer between the network and the partial file: also the most of each in-flight
/// download a killed run loses.
const WRITE_BUFFER: usize = 64 * 1024;
/// Longest backoff between two tries of one URL.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A `--rewrite FROM=TO` rule: URLs starting with FROM get TO instead of that prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
}

impl FromStr for Rewrite {
    type Err = String;
    fn from_str(text: &str) -> Result<Rewrite, String> {
        match text.split_once('=') {
            Some((from, to)) if !from.is_empty() => Ok(Rewrite {
                from: from.to_string(),
                to: to.to_string(),
            }),
            _ => Err(format!("'{text}' is not a rewrite rule FROM=TO")),
        }
    }
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

/// Parses a rate such as `2MiB/s`, `500k`, `10MB/s` or `1000000` into bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a rate (e.g. 2MiB/s, 500KB/s, 100000)");
    let body = text.trim().trim_end_matches("/s");
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let rate = (number * multiplier) as u64;
    if rate == 0 {
        return Err(bad());
    }
    Ok(rate)
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Transfers in flight overall.
    pub jobs: usize,
    /// Transfers in flight per host (host and port).
    pub max_per_host: usize,
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
            jobs: 16,
            max_per_host: 4,
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
    /// Of the bytes, in the algorithm asked for.
    pub hash: Hash,
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
    hasher: Option<Hasher>,
    algo: HashAlgo,
    /// Whether some bytes came from an earlier response (so a bad hash may be a bad splice).
    spliced: bool,
}

impl Partial {
    /// Takes over what an earlier run left for `url` when it can be validated, else starts empty.
    fn load(part: PathBuf, meta_path: PathBuf, url: &str, algo: HashAlgo) -> Partial {
        let meta: Option<PartialMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let usable = meta.filter(|m| {
            m.url == url && m.validator().is_some() && m.length.is_none_or(|total| len <= total)
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
            hasher: (len == 0).then(|| algo.hasher()),
            algo,
            spliced: false,
        }
    }

    fn reset(&mut self) {
        self.len = 0;
        self.hasher = Some(self.algo.hasher());
        self.spliced = false;
    }

    fn discard(&mut self) {
        self.reset();
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(&self.meta_path);
    }

    fn save_meta(&self) -> Result<(), Error> {
        let text = serde_json::to_vec(&self.meta).expect("meta serialises");
        std::fs::write(&self.meta_path, text)
            .map_err(Error::io(format!("writing {}", self.meta_path.display())))
    }

    /// Hashes the bytes already on disk (left by an earlier run) so appending can continue.
    async fn ensure_hasher(&mut self) -> Result<(), Error> {
        if self.hasher.is_some() {
            return Ok(());
        }
        let part = self.part.clone();
        let (algo, len) = (self.algo, self.len);
        let hashed = tokio::task::spawn_blocking(move || -> Result<Hasher, Error> {
            let context = || format!("reading {}", part.display());
            let file = std::fs::File::open(&part).map_err(Error::io(context()))?;
            let mut hasher = algo.hasher();
            std::io::copy(&mut file.take(len), &mut hasher).map_err(Error::io(context()))?;
            Ok(hasher)
        })
        .await
        .map_err(|e| Error::HttpClient(format!("hashing task failed: {e}")))??;
        self.hasher = Some(hashed);
        Ok(())
    }
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

pub struct Downloader {
    client: reqwest::Client,
    options: DownloadOptions,
    partial_dir: PathBuf,
    transfers: Semaphore,
    queries: Semaphore,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    rate: Option<TokenBucket>,
    progress: Arc<dyn Progress>,
    next_id: AtomicU64,
}

impl Downloader {
    /// `partial_dir` keeps partial downloads; it should be on the cache's filesystem so a
    /// finished download moves in by rename. Proxies come from the environment
    /// (`http_proxy`, `https_proxy`, `no_proxy`), as curl and Nix take them.
    pub fn new(
        options: DownloadOptions,
        partial_dir: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<Downloader, Error> {
        std::fs::create_dir_all(partial_dir)
            .map_err(Error::io(format!("creating {}", partial_dir.display())))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("srcgrab/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.stall_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| Error::HttpClient(error_chain(&e)))?;
        Ok(Downloader {
            client,
            transfers: Semaphore::new(options.jobs.max(1)),
            queries: Semaphore::new(options.queries.max(1)),
            hosts: Mutex::new(HashMap::new()),
            rate: options.rate_limit.map(TokenBucket::new),
            partial_dir: partial_dir.to_path_buf(),
            options,
            progress,
            next_id: AtomicU64::new(0),
        })
    }

    fn host_slots(&self, url: &str) -> Arc<Semaphore> {
        let host = reqwest::Url::parse(url)
            .ok()
            .map(|u| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or(""),
                    u.port_or_known_default().unwrap_or(0)
                )
            })
            .unwrap_or_default();
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.options.max_per_host.max(1))))
            .clone()
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
            let host_slots = self.host_slots(url);
            let _host_slot = host_slots.acquire().await.expect("semaphore never closed");
            let _slot = self
                .transfers
                .acquire()
                .await
                .expect("semaphore never closed");
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

    /// Downloads `url` into the partial directory under a name derived from `key` (which
    /// must differ between concurrent downloads), hashing with `expected`'s algorithm (sha256
    /// when `None`). A hash other than `expected` is `Error::HashMismatch`, after one fresh
    /// try when the bytes were spliced from several responses. Bytes received are added to
    /// `tally` as they arrive, failed attempts included.
    pub async fn fetch(
        &self,
        url: &str,
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
        partial.spliced = partial.len > 0;
        let mut failures = 0;
        let mut fresh_retry_done = false;
        loop {
            match self.attempt(url, &mut partial, tally).await {
                Ok(hash) => {
                    let matches = expected.is_none_or(|e| *e == hash);
                    if matches {
                        return Ok(Downloaded {
                            path: partial.part.clone(),
                            meta: partial.meta_path.clone(),
                            size: partial.len,
                            hash,
                        });
                    }
                    let spliced = partial.spliced;
                    partial.discard();
                    if spliced && !fresh_retry_done {
                        fresh_retry_done = true;
                        continue;
                    }
                    return Err(Error::HashMismatch {
                        what: url.to_string(),
                        expected: expected.map(Hash::to_sri).unwrap_or_default(),
                        got: hash.to_sri(),
                    });
                }
                Err(Attempt::Transient { reason, progressed }) => {
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

    /// One request: resumes when there is a partial file, streams the body into it.
    async fn attempt(
        &self,
        url: &str,
        partial: &mut Partial,
        tally: &AtomicU64,
    ) -> Result<Hash, Attempt> {
        let host_slots = self.host_slots(url);
        let _host_slot = host_slots.acquire().await.expect("semaphore never closed");
        let _slot = self
            .transfers
            .acquire()
            .await
            .expect("semaphore never closed");

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
                };
                partial.save_meta().map_err(Attempt::Local)?;
            }
            StatusCode::RANGE_NOT_SATISFIABLE if partial.len > 0 => {
                // Either the partial file is already whole, or it belongs to other content.
                if partial.meta.length == Some(partial.len) {
                    partial.ensure_hasher().await.map_err(Attempt::Local)?;
                    return Ok(partial.hasher.clone().expect("hasher ready").finalize());
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
        let result = self.stream_body(response, partial, tally, id).await;
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
        Ok(partial.hasher.clone().expect("hasher ready").finalize())
    }

    /// Appends the body to the partial file; returns how many bytes it kept.
    async fn stream_body(
        &self,
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
            out.write_all(&chunk)
                .map_err(|e| Attempt::Local(Error::io(context())(e)))?;
            partial
                .hasher
                .as_mut()
                .expect("hasher ready")
                .update(&chunk);
            partial.len += chunk.len() as u64;
            kept += chunk.len() as u64;
            tally.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            self.progress.download_bytes(id, chunk.len() as u64);
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

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The first byte position of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    header_text(headers, CONTENT_RANGE)?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_by_first_matching_prefix() {
        let rules: Vec<Rewrite> = [
            "https://ftpmirror.gnu.org/=http://mirror.lan/gnu/",
            "https://=http://proxy/",
        ]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
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
        assert!("no-equals-sign".parse::<Rewrite>().is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("2MiB/s"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_rate("500KB/s"), Ok(500_000));
        assert_eq!(parse_rate("1.5k"), Ok(1500));
        assert_eq!(parse_rate("100000"), Ok(100_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3 parsecs").is_err());
    }
}
