//! A real HTTP/1.1 server on 127.0.0.1 for end-to-end tests, with per-path fault injection.
//!
//! Hand-rolled over a tokio `TcpListener` so faults can break the protocol on purpose
//! (a body shorter than its Content-Length, a stall mid-body), which a proper server
//! library refuses to do. It counts requests, bytes and connections so tests assert on
//! counts, never on seconds. Used with `mod support;` from any root-crate integration test.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub mod h2;
pub mod manifest_file;
pub mod tls;

/// What a connection is carried over: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// How one path answers. Faults that take a count apply to the first N requests of the
/// path, then the path answers normally.
#[derive(Clone, Debug)]
pub struct Route {
    body: Vec<u8>,
    /// Answer this status, with no body, to every request (e.g. 404).
    status: Option<u16>,
    /// Answer 500 to the first N requests.
    fail_first: u32,
    /// Answer with this redirect (status, location) to every request.
    redirect: Option<(u16, String)>,
    first_byte_delay: Duration,
    chunk_size: usize,
    chunk_delay: Duration,
    /// The first N responses promise the full length but close after `truncate_at` bytes.
    truncate_first: u32,
    truncate_at: usize,
    /// The first N responses hang forever after `stall_at` bytes.
    stall_first: u32,
    stall_at: usize,
    /// Answer 200 with the whole body to `Range:` requests.
    ignore_range: bool,
    /// Send no ETag/Last-Modified, so a client cannot validate a partial download.
    no_validators: bool,
    /// Claim this total length (Content-Length, Content-Range) whatever the body's real one,
    /// send what there is and close.
    claimed_length: Option<u64>,
    /// After the first N requests, serve this body instead (a new release under the same URL).
    changed_after: Option<(u64, Vec<u8>)>,
    /// Send filler bytes without end, announcing this Content-Length (`None`: none at all).
    endless: Option<Option<u64>>,
}

impl Route {
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route {
            body: body.into(),
            status: None,
            fail_first: 0,
            redirect: None,
            first_byte_delay: Duration::ZERO,
            chunk_size: 64 * 1024,
            chunk_delay: Duration::ZERO,
            truncate_first: 0,
            truncate_at: 0,
            stall_first: 0,
            stall_at: 0,
            ignore_range: false,
            no_validators: false,
            claimed_length: None,
            changed_after: None,
            endless: None,
        }
    }

    /// A body that never ends, with `Content-Length: length` or with none (then the end of
    /// the connection would end it), sent in chunks as `slow`/`rate_cap` say.
    pub fn endless(length: Option<u64>) -> Route {
        Route {
            endless: Some(length),
            ..Route::ok(Vec::new())
        }
    }

    pub fn status(code: u16) -> Route {
        Route {
            status: Some(code),
            ..Route::ok(Vec::new())
        }
    }

    pub fn redirect(code: u16, location: &str) -> Route {
        Route {
            redirect: Some((code, location.to_string())),
            ..Route::ok(Vec::new())
        }
    }

    pub fn fail_first(mut self, n: u32) -> Route {
        self.fail_first = n;
        self
    }

    pub fn first_byte_delay(mut self, delay: Duration) -> Route {
        self.first_byte_delay = delay;
        self
    }

    /// Sends the body `chunk_size` bytes at a time with `delay` between chunks.
    pub fn slow(mut self, chunk_size: usize, delay: Duration) -> Route {
        self.chunk_size = chunk_size.max(1);
        self.chunk_delay = delay;
        self
    }

    pub fn truncate_first(mut self, n: u32, at: usize) -> Route {
        self.truncate_first = n;
        self.truncate_at = at;
        self
    }

    pub fn stall_first(mut self, n: u32, at: usize) -> Route {
        self.stall_first = n;
        self.stall_at = at;
        self
    }

    pub fn ignore_range(mut self) -> Route {
        self.ignore_range = true;
        self
    }

    pub fn no_validators(mut self) -> Route {
        self.no_validators = true;
        self
    }

    /// At most `bytes_per_second` on each response, as one TCP connection over a long link
    /// carries (each response has its connection to itself while it is sent).
    pub fn rate_cap(self, bytes_per_second: usize) -> Route {
        let chunk = 16 * 1024;
        let delay = Duration::from_secs_f64(chunk as f64 / bytes_per_second.max(1) as f64);
        self.slow(chunk, delay)
    }

    /// Lies about the length: claims `length` bytes, sends the real body, closes.
    pub fn claim_length(mut self, length: u64) -> Route {
        self.claimed_length = Some(length);
        self
    }

    /// Serves `body` (with its own ETag) from request `n + 1` on.
    pub fn changed_after(mut self, n: u64, body: impl Into<Vec<u8>>) -> Route {
        self.changed_after = Some((n, body.into()));
        self
    }

    /// A strong validator derived from the content, so a changed body changes it.
    fn etag(&self) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in &self.body {
            h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
        }
        format!("\"{:x}-{h:016x}\"", self.body.len())
    }
}

/// What the server saw for one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    pub requests: u64,
    /// Requests carrying a `Range:` header.
    pub range_requests: u64,
    /// HEAD requests.
    pub head_requests: u64,
    /// Body bytes written (not counting headers).
    pub body_bytes: u64,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    /// (URL path prefix, directory): files served as `Route::ok` when no route matches.
    dirs: Mutex<Vec<(String, PathBuf)>>,
    stats: Mutex<HashMap<String, PathStats>>,
    connections: AtomicU64,
    /// Responses whose body is being sent now, and the most there ever were at once.
    active: AtomicU64,
    max_active: AtomicU64,
    /// Requests being answered now (from the request read to the response's end, first
    /// byte delay included), and the most there ever were at once.
    answering: AtomicU64,
    max_answering: AtomicU64,
}

/// Counts one in `current` until dropped, keeping in `peak` the most there ever were at once
/// (responses being sent, requests being answered, HTTP/2 streams open).
struct PeakGuard<'a>(&'a AtomicU64);

impl<'a> PeakGuard<'a> {
    fn new(current: &'a AtomicU64, peak: &AtomicU64) -> PeakGuard<'a> {
        let now = current.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        PeakGuard(current)
    }
}

impl Drop for PeakGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A multi-threaded runtime for a test server and a listener on a free loopback port.
fn loopback_listener() -> (tokio::runtime::Runtime, TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test server runtime");
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (runtime, listener, addr)
}

pub struct TestServer {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(None)
    }

    /// The same server over TLS (HTTP/1.1), presenting `acceptor`'s certificate.
    pub fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> TestServer {
        TestServer::start_with(Some(acceptor))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> TestServer {
        let (runtime, listener, addr) = loopback_listener();
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                match tls.clone() {
                    None => drop(tokio::spawn(serve_connection(stream, state))),
                    Some(acceptor) => drop(tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, state).await;
                        }
                    })),
                }
            }
        });
        TestServer {
            addr,
            scheme,
            state,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`) with no trailing slash.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), route);
    }

    /// Serves the files under `dir` at `prefix` (e.g. "/cache/").
    pub fn serve_dir(&self, prefix: &str, dir: impl Into<PathBuf>) {
        self.state
            .dirs
            .lock()
            .unwrap()
            .push((prefix.to_string(), dir.into()));
    }

    pub fn stats(&self, path: &str) -> PathStats {
        self.state
            .stats
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    pub fn requests(&self, path: &str) -> u64 {
        self.stats(path).requests
    }

    /// Requests on all paths.
    pub fn total_requests(&self) -> u64 {
        self.state
            .stats
            .lock()
            .unwrap()
            .values()
            .map(|s| s.requests)
            .sum()
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Responses sending a body now (to wait until a killed client's are all gone).
    pub fn bodies_in_flight(&self) -> u64 {
        self.state.active.load(Ordering::SeqCst)
    }

    /// The most responses that were sending a body at the same time.
    pub fn max_concurrent_bodies(&self) -> u64 {
        self.state.max_active.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same time (first byte delays
    /// included): how many a client had in flight.
    pub fn max_requests_in_flight(&self) -> u64 {
        self.state.max_answering.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection.
    pub fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Request {
    method: String,
    path: String,
    range_start: Option<u64>,
    /// The last byte asked for (`bytes=START-END`), inclusive.
    range_end: Option<u64>,
    if_range: Option<String>,
    keep_alive: bool,
}

async fn read_request(reader: &mut BufReader<impl Stream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let path = target.split('?').next()?.to_string();
    let http10 = parts.next() == Some("HTTP/1.0");
    let mut request = Request {
        method,
        path,
        range_start: None,
        range_end: None,
        if_range: None,
        keep_alive: !http10,
    };
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            return Some(request);
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "range" => {
                let range = value.strip_prefix("bytes=").and_then(|r| r.split_once('-'));
                if let Some((start, end)) = range {
                    request.range_start = start.parse().ok();
                    request.range_end = end.parse().ok();
                }
            }
            "if-range" => request.if_range = Some(value.to_string()),
            "connection" => request.keep_alive = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
}

fn lookup(state: &State, path: &str) -> Option<Route> {
    if let Some(route) = state.routes.lock().unwrap().get(path) {
        return Some(route.clone());
    }
    for (prefix, dir) in state.dirs.lock().unwrap().iter() {
        if let Some(rel) = path.strip_prefix(prefix.as_str()) {
            if rel.split('/').any(|c| c == "..") {
                return None;
            }
            if let Ok(body) = std::fs::read(dir.join(rel)) {
                return Some(Route::ok(body));
            }
        }
    }
    None
}

async fn serve_connection(stream: impl Stream, state: Arc<State>) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader).await {
        let keep_alive = request.keep_alive;
        let answering = PeakGuard::new(&state.answering, &state.max_answering);
        let responded = respond(&mut reader, &state, request).await;
        drop(answering);
        match responded {
            Ok(true) if keep_alive => continue,
            _ => return,
        }
    }
}

async fn write_head(
    stream: &mut BufReader<impl Stream>,
    status: u16,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.get_mut().write_all(head.as_bytes()).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Answers one request; `Ok(true)` when the connection may serve another.
async fn respond(
    stream: &mut BufReader<impl Stream>,
    state: &State,
    request: Request,
) -> std::io::Result<bool> {
    let index = {
        let mut stats = state.stats.lock().unwrap();
        let s = stats.entry(request.path.clone()).or_default();
        s.requests += 1;
        if request.range_start.is_some() {
            s.range_requests += 1;
        }
        if request.method == "HEAD" {
            s.head_requests += 1;
        }
        s.requests - 1
    };
    let Some(route) = lookup(state, &request.path) else {
        write_head(stream, 404, &[("Content-Length", "0".into())]).await?;
        return Ok(true);
    };
    if route.first_byte_delay > Duration::ZERO {
        tokio::time::sleep(route.first_byte_delay).await;
    }
    if index < route.fail_first as u64 {
        write_head(stream, 500, &[("Content-Length", "0".into())]).await?;
        return Ok(true);
    }
    if let Some(code) = route.status {
        write_head(stream, code, &[("Content-Length", "0".into())]).await?;
        return Ok(true);
    }
    if let Some((code, location)) = &route.redirect {
        let headers = [
            ("Location", location.clone()),
            ("Content-Length", "0".into()),
        ];
        write_head(stream, *code, &headers).await?;
        return Ok(true);
    }

    if let Some(length) = route.endless {
        return respond_endless(stream, state, &request.path, &route, length).await;
    }
    let route = match route.changed_after.clone() {
        Some((n, body)) if index >= n => Route { body, ..route },
        _ => route,
    };
    let etag = route.etag();
    let validator_ok = match &request.if_range {
        Some(v) => *v == etag,
        None => true,
    };
    let total = route.claimed_length.unwrap_or(route.body.len() as u64);
    let ranged = request.range_start.is_some() && !route.ignore_range && validator_ok;
    let start = if ranged {
        request.range_start.unwrap_or(0)
    } else {
        0
    };
    let end = match request.range_end {
        Some(last) if ranged => (last + 1).min(total),
        _ => total,
    };
    if start > total || (ranged && start >= end && request.range_end.is_some()) {
        write_head(
            stream,
            416,
            &[
                ("Content-Range", format!("bytes */{total}")),
                ("Content-Length", "0".into()),
            ],
        )
        .await?;
        return Ok(true);
    }
    let mut headers = vec![("Content-Length", (end - start).to_string())];
    if !route.no_validators {
        headers.push(("ETag", etag));
    }
    if !route.ignore_range {
        headers.push(("Accept-Ranges", "bytes".into()));
    }
    let status = if ranged && (start > 0 || request.range_end.is_some()) {
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{total}", end - 1),
        ));
        206
    } else {
        200
    };
    write_head(stream, status, &headers).await?;
    if request.method == "HEAD" {
        return Ok(true);
    }

    // Active until just before the last chunk is written: a client cannot have seen the whole
    // body (and started its next transfer) while the response still counts, so the maximum
    // never over-counts.
    let mut active = Some(PeakGuard::new(&state.active, &state.max_active));
    let real = route.body.len();
    let body = &route.body[(start as usize).min(real)..(end as usize).min(real)];
    // Faults cut the response short: `limit` bytes are sent, then the connection is closed
    // (truncation) or left hanging (stall).
    let truncate = index < route.truncate_first as u64;
    let stall = index < route.stall_first as u64;
    let limit = if truncate {
        route.truncate_at.min(body.len())
    } else if stall {
        route.stall_at.min(body.len())
    } else {
        body.len()
    };
    let chunks = limit.div_ceil(route.chunk_size);
    for (i, chunk) in body[..limit].chunks(route.chunk_size).enumerate() {
        if i > 0 && route.chunk_delay > Duration::ZERO {
            tokio::time::sleep(route.chunk_delay).await;
        }
        if i + 1 == chunks {
            active.take();
        }
        stream.get_mut().write_all(chunk).await?;
        let mut stats = state.stats.lock().unwrap();
        stats.entry(request.path.clone()).or_default().body_bytes += chunk.len() as u64;
    }
    stream.get_mut().flush().await?;
    if stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(limit == body.len() && route.claimed_length.is_none())
}

/// Sends filler without end (until the client goes away).
async fn respond_endless(
    stream: &mut BufReader<impl Stream>,
    state: &State,
    path: &str,
    route: &Route,
    length: Option<u64>,
) -> std::io::Result<bool> {
    let head = match length {
        Some(length) => vec![("Content-Length", length.to_string())],
        None => vec![("Connection", "close".to_string())],
    };
    write_head(stream, 200, &head).await?;
    let chunk = vec![b'x'; route.chunk_size];
    let _active = PeakGuard::new(&state.active, &state.max_active);
    loop {
        stream.get_mut().write_all(&chunk).await?;
        state
            .stats
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .body_bytes += chunk.len() as u64;
        if route.chunk_delay > Duration::ZERO {
            tokio::time::sleep(route.chunk_delay).await;
        }
    }
}

/// A port on 127.0.0.1 where nothing listens: connections to it are refused.
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server on 127.0.0.1 that accepts connections and never answers, counting them.
pub struct SilentServer {
    pub port: u16,
    accepted: Arc<AtomicU64>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        SilentServer { port, accepted }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Writes `content` as an executable file at `path` and returns the recursive sha256 real Nix
/// gives it (`nix-hash --type sha256`): the hash of a fetchurl `executable = true` entry.
pub fn executable_nix_hash(path: &std::path::Path, content: &[u8]) -> srcgrab_manifest::Hash {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("nix-hash")
        .args(["--type", "sha256"])
        .arg(path)
        .output()
        .expect("nix-hash runs");
    assert!(
        out.status.success(),
        "nix-hash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap();
    srcgrab_manifest::Hash::parse(hex.trim(), Some(srcgrab_manifest::HashAlgo::Sha256)).unwrap()
}
