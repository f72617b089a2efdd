//! The network in the real world: dead hosts of every kind, permanent and transient errors,
//! private CAs, transfers that would never end, ranges whose alternates are dead. Every
//! server is real and on 127.0.0.1; names that must not resolve are under `.invalid`.

use super::*;
use support::h2::H2Server;
use support::tls::TestCa;
use support::{refused_port, SilentServer};

/// `fetch`, failing the test instead of hanging when the run does not end in `limit` (a
/// bound that a run with a bounded transfer keeps by far; it is not a timing assertion).
fn fetch_ending_within(
    dir: &Path,
    manifest: &Path,
    cache: &Path,
    args: &[&str],
    limit: Duration,
) -> Run {
    let (dir, manifest, cache) = (
        dir.to_path_buf(),
        manifest.to_path_buf(),
        cache.to_path_buf(),
    );
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = sender.send(fetch(&dir, &manifest, &cache, &args));
    });
    receiver
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("srcgrab fetch did not end within {limit:?}"))
}

fn host_report<'a>(run: &'a Run, host: &str) -> &'a Value {
    find_host(run, host)
        .unwrap_or_else(|| panic!("{host} not in the report: {}", run.report["hosts"]))
}

fn find_host<'a>(run: &'a Run, host: &str) -> Option<&'a Value> {
    run.report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
}

/// A mirror list of 10 for every entry: 7 dead hosts (3 names that do not resolve, 2 ports
/// that refuse, 2 servers that accept and never answer), a 404, a certificate from an
/// unknown CA, and the live server last. Every entry comes from the live one; each dead
/// host is asked a bounded number of times over the whole run, not per entry.
#[test]
fn a_mirror_list_of_ten_with_seven_dead_hosts_costs_each_dead_host_a_few_requests_per_run() {
    let live = TestServer::start();
    let silent = [SilentServer::start(), SilentServer::start()];
    let refused = [refused_port(), refused_port()];
    let untrusted = TestServer::start_tls(TestCa::new("nobody trusts this").acceptor());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let count = 40;
    let mut entries = Vec::new();
    let mut contents = Vec::new();
    for i in 0..count {
        let content = unique(&format!("mirrored {i}"), 3_000);
        let path = format!("/pub/{i}.tar.gz");
        live.route(&path, Route::ok(content.clone()));
        let mut urls: Vec<String> = (0..3)
            .map(|n| format!("http://dead-{n}.invalid{path}"))
            .collect();
        urls.extend(
            refused
                .iter()
                .map(|port| format!("http://127.0.0.1:{port}{path}")),
        );
        urls.extend(
            silent
                .iter()
                .map(|s| format!("http://127.0.0.1:{}{path}", s.port)),
        );
        urls.push(live.url(&format!("/gone{path}")));
        urls.push(untrusted.url(&path));
        urls.push(live.url(&path));
        entries.push(flat_entry(&format!("mirrored-{i}"), &content, urls));
        contents.push(content);
    }
    let manifest = write_manifest(dir.path(), entries.clone());
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &cache,
        &["--host-down-after", "2", "--max-per-host", "4"],
        Duration::from_secs(120),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content) in entries.iter().zip(&contents) {
        assert_published(&cache, entry, content);
    }
    // Without host health: 40 entries x 4 tries each. With it: down after 2 failures in a
    // row, each a wave of at most 4 requests at once (--max-per-host), and a few more
    // that were sent before the host went down.
    let per_run_bound = 12;
    for server in &silent {
        assert!(
            server.accepted() <= per_run_bound,
            "a silent host was asked {} times",
            server.accepted()
        );
    }
    assert!(
        untrusted.connections() <= per_run_bound,
        "{}",
        untrusted.connections()
    );
    let mut dead_hosts: Vec<String> = (0..3).map(|n| format!("dead-{n}.invalid:80")).collect();
    dead_hosts.extend(refused.iter().map(|p| format!("127.0.0.1:{p}")));
    dead_hosts.extend(silent.iter().map(|s| format!("127.0.0.1:{}", s.port)));
    for host in &dead_hosts {
        // Names are looked up all at once when the first entry needs them, and tried after
        // the URLs on known hosts meanwhile: never asked at all, when the live URL came
        // first (and absent from the report when the run ended before their look-up did).
        let named = host.contains(".invalid");
        let report = match find_host(&run, host) {
            None if named => continue,
            _ => host_report(&run, host),
        };
        assert!(report["down"]["sinceSeconds"].is_number(), "{report}");
        let requests = report["requests"].as_u64().unwrap();
        let bound = if named { 0 } else { per_run_bound };
        assert!(requests <= bound, "{host}: {requests} requests");
    }
    assert!(host_report(&run, &untrusted.base()[8..])["down"].is_object());
    // A 404 is permanent: one request per entry (a few more only when a loaded machine
    // let a request time out before the 404 came).
    let asked: Vec<u64> = (0..count)
        .map(|i| live.requests(&format!("/gone/pub/{i}.tar.gz")))
        .collect();
    assert!(asked.iter().all(|n| *n >= 1), "{asked:?}");
    assert!(asked.iter().sum::<u64>() <= count as u64 + 4, "{asked:?}");
}

/// Seven names that do not resolve before the live URL: their names are looked up all at
/// once when the first entry needs them, and meanwhile the live URL (a known host) goes
/// first, so no entry ever sends a request to a dead name nor waits for its resolver.
#[test]
fn dead_names_before_the_live_url_are_looked_up_at_once_and_never_asked() {
    let live = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut entries = Vec::new();
    for i in 0..20 {
        let content = unique(&format!("behind dead names {i}"), 2_000);
        let path = format!("/pub/{i}.tar.gz");
        live.route(&path, Route::ok(content.clone()));
        let mut urls: Vec<String> = (0..7)
            .map(|n| format!("http://mirror-{n}.invalid{path}"))
            .collect();
        urls.push(live.url(&path));
        entries.push((flat_entry(&format!("behind-{i}"), &content, urls), content));
    }
    let manifest = write_manifest(dir.path(), entries.iter().map(|(e, _)| e.clone()).collect());
    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content) in &entries {
        assert_published(&cache, entry, content);
        let report = run.entry(&entry.store_path);
        assert_eq!(report["urlsTried"].as_array().unwrap().len(), 1, "{report}");
    }
    for n in 0..7 {
        if let Some(report) = find_host(&run, &format!("mirror-{n}.invalid:80")) {
            assert_eq!(report["requests"], 0, "{report}");
            assert!(report["down"].is_object(), "{report}");
        }
    }
}

/// Certificates of an unknown CA are permanent errors: one connection, no retries, and the
/// message says why.
#[test]
fn an_unknown_ca_is_refused_at_once() {
    let untrusted = TestServer::start_tls(TestCa::new("unknown").acceptor());
    let dir = tempfile::tempdir().unwrap();
    let content = unique("private", 2_000);
    untrusted.route("/file", Route::ok(content.clone()));
    let entry = flat_entry("private", &content, vec![untrusted.url("/file")]);
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);
    let run = fetch(dir.path(), &manifest, &dir.path().join("cache"), &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let detail = run.entry(&entry.store_path)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("invalid peer certificate"), "{detail}");
    assert!(!detail.contains("gave up after"), "retried: {detail}");
    assert_eq!(untrusted.connections(), 1);
}

/// A private CA is trusted as Nix trusts it: through NIX_SSL_CERT_FILE, SSL_CERT_FILE, or
/// the system store (here SSL_CERT_DIR, which stands in for it as in OpenSSL: the real
/// store of the machine is not touched).
#[test]
fn a_private_ca_is_trusted_through_each_of_the_three_ways() {
    let ca = TestCa::new("research station");
    let server = TestServer::start_tls(ca.acceptor());
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("certs");
    std::fs::create_dir(&ca_dir).unwrap();
    let ca_file = ca_dir.join("station-ca.pem");
    ca.write_pem(&ca_file);
    for (n, variable) in ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .enumerate()
    {
        let content = unique(&format!("private {variable}"), 2_000);
        let path = format!("/file{n}");
        server.route(&path, Route::ok(content.clone()));
        let entry = flat_entry(&format!("private-{n}"), &content, vec![server.url(&path)]);
        let manifest = write_manifest(dir.path(), vec![entry.clone()]);
        let cache = dir.path().join(format!("cache{n}"));
        let value = if *variable == "SSL_CERT_DIR" {
            &ca_dir
        } else {
            &ca_file
        };
        let run = fetch_with_env(dir.path(), &manifest, &cache, &[(variable, value)]);
        assert_eq!(run.code(), 0, "{variable}: {}", run.stderr());
        assert_published(&cache, &entry, &content);
    }
}

/// A narinfo's FileSize caps its NAR's download: a server announcing more is refused before
/// a byte of the body is taken, a body without a length is cut at FileSize; either way the
/// substituter's copy is rejected (once, not retried) and the entry comes from its URL.
#[test]
fn a_narinfo_file_size_caps_the_nar_download() {
    let upstream = TestServer::start();
    let live = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file_size = 1_000;
    let mut entries = Vec::new();
    for (n, nar) in [Route::ok(vec![b'n'; 50_000]), Route::endless(None)]
        .into_iter()
        .enumerate()
    {
        let content = unique(&format!("capped {n}"), 3_000);
        live.route(&format!("/{n}"), Route::ok(content.clone()));
        let entry = flat_entry(
            &format!("capped-{n}"),
            &content,
            vec![live.url(&format!("/{n}"))],
        );
        let hash_part = entry.parsed_store_path().unwrap().hash_part().to_string();
        let narinfo = format!(
            "StorePath: {}\nURL: nar/capped-{n}.nar\nCompression: none\nFileSize: {file_size}\n\
             NarHash: sha256:{:064x}\nNarSize: 5000\nReferences: \n",
            entry.store_path, n
        );
        upstream.route(&format!("/{hash_part}.narinfo"), Route::ok(narinfo));
        upstream.route(&format!("/nar/capped-{n}.nar"), nar);
        entries.push((entry, content));
    }
    let manifest = write_manifest(dir.path(), entries.iter().map(|(e, _)| e.clone()).collect());
    let cache = dir.path().join("cache");
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &cache,
        &["--substituter", &upstream.base()],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let expected = [
        format!("the server announces 50000 bytes, more than the {file_size} it may have"),
        format!("the body goes on past {file_size} bytes"),
    ];
    for (n, ((entry, content), expected)) in entries.iter().zip(expected).enumerate() {
        assert_published(&cache, entry, content);
        let report = run.entry(&entry.store_path);
        assert_eq!(report["how"], "url", "{report}");
        let reason = report["rejected"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(&expected), "{reason}");
        assert_eq!(upstream.requests(&format!("/nar/capped-{n}.nar")), 1);
        let downloaded = report["bytesDownloaded"].as_u64().unwrap();
        assert!(
            downloaded <= file_size + content.len() as u64,
            "{downloaded} bytes downloaded"
        );
    }
}

/// A host that answers in HTTP/2 (over TLS, from a private CA) gets its stream budget: many
/// requests in flight as streams of a few connections, where HTTP/1.1 would start with 8
/// connections of one request each. Every answer waits 300 ms, as on a far link.
#[test]
fn an_http2_host_gets_many_requests_in_flight_over_few_connections() {
    let ca = TestCa::new("far cache");
    let server = H2Server::start(ca.acceptor_h2(), Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(&ca_file);
    let mut entries = Vec::new();
    for i in 0..120 {
        let content = unique(&format!("over h2 {i}"), 3_000);
        let path = format!("/h2/{i}");
        server.route(&path, content.clone());
        entries.push((
            flat_entry(&format!("h2-{i}"), &content, vec![server.url(&path)]),
            content,
        ));
    }
    let manifest = write_manifest(dir.path(), entries.iter().map(|(e, _)| e.clone()).collect());
    let cache = dir.path().join("cache");
    let run = fetch_with_env(
        dir.path(),
        &manifest,
        &cache,
        &[("NIX_SSL_CERT_FILE", &ca_file)],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content) in &entries {
        assert_published(&cache, entry, content);
    }
    assert!(server.requests() >= 120);
    // Before the first answer says HTTP/2, the host has its HTTP/1.1 start (8); after it,
    // requests are streams of the connections already open.
    let connections = server.connections();
    assert!(connections <= 8, "{connections} connections");
    let streams = server.max_concurrent_streams();
    assert!(
        streams > 8 && streams > 2 * connections,
        "{streams} streams at once over {connections} connections"
    );
    let peak = run.report["hosts"][0]["peakConnections"].as_u64().unwrap();
    assert!(peak > 8 && peak <= 64, "{peak} transfers open at once");
}

/// `fetch` with the trust variables cleared, then `env` set.
fn fetch_with_env(dir: &Path, manifest: &Path, cache: &Path, env: &[(&str, &Path)]) -> Run {
    let report_path = dir.join("report.json");
    let _ = std::fs::remove_file(&report_path);
    let mut command = srcgrab();
    command
        .arg("fetch")
        .arg(manifest)
        .arg("--cache")
        .arg(cache)
        .arg("--report")
        .arg(&report_path)
        .args(["--stall-timeout", "2", "--no-substituters"]);
    for variable in ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
        command.env_remove(variable);
    }
    for (variable, value) in env {
        command.env(variable, value);
    }
    let output = command.output().expect("run srcgrab");
    let report = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Run { output, report }
}

/// A large flat file whose alternates are all dead is fetched from the live URL, in ranges:
/// each alternate gets at most its one trial range, and its failure costs the range nothing.
#[test]
fn a_large_file_whose_alternates_are_dead_comes_from_the_live_one_in_ranges() {
    let live = TestServer::start();
    let silent = SilentServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let content = unique("large", 6 * 1024 * 1024);
    live.route(
        "/large",
        Route::ok(content.clone()).rate_cap(16 * 1024 * 1024),
    );
    let entry = flat_entry(
        "large.tar.gz",
        &content,
        vec![
            live.url("/large"),
            "http://dead.invalid/large".into(),
            format!("http://127.0.0.1:{}/large", refused_port()),
            format!("http://127.0.0.1:{}/large", silent.port),
        ],
    );
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &cache,
        &["--segments", "4", "--segment-threshold", "2MiB"],
        Duration::from_secs(120),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_published(&cache, &entry, &content);
    let stats = live.stats("/large");
    assert!(stats.range_requests >= 3, "not in ranges: {stats:?}");
    assert!(silent.accepted() <= 1, "{}", silent.accepted());
    assert_eq!(run.entry(&entry.store_path)["from"], live.url("/large"));
}

/// A server that cuts every answer (Content-Length 12000, 6000 bytes, close, Range ignored)
/// cannot keep a download alive: only new bytes are progress, so the retries (3, as
/// `fetch` sets them) run out.
#[test]
fn a_server_that_cuts_every_response_fails_after_the_retries() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let content = unique("cut", 12_000);
    server.route(
        "/cut",
        Route::ok(content[..6_000].to_vec())
            .claim_length(12_000)
            .ignore_range(),
    );
    let entry = flat_entry("cut", &content, vec![server.url("/cut")]);
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &dir.path().join("cache"),
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let detail = run.entry(&entry.store_path)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("gave up after 4 tries"), "{detail}");
    let stats = server.stats("/cut");
    assert_eq!(stats.requests - stats.head_requests, 4, "{stats:?}");
}

/// A body at one byte a second ends at the deadline the minimum rate gives it.
#[test]
fn a_body_at_one_byte_a_second_hits_the_deadline() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let content = unique("trickle", 5_000);
    server.route(
        "/trickle",
        Route::ok(content.clone()).slow(1, Duration::from_secs(1)),
    );
    let entry = flat_entry("trickle", &content, vec![server.url("/trickle")]);
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &dir.path().join("cache"),
        &["--min-rate", "1000"],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let detail = run.entry(&entry.store_path)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("slower than the minimum rate"), "{detail}");
    assert!(server.stats("/trickle").body_bytes < 100);
}

/// A Content-Length of 10^13 is refused before a byte of it is taken, and a body with no
/// Content-Length is cut at the largest size allowed.
#[test]
fn a_huge_or_endless_body_is_capped() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    server.route("/huge", Route::endless(Some(10_000_000_000_000)));
    server.route("/endless", Route::endless(None));
    let entries = vec![
        flat_entry("huge", b"never", vec![server.url("/huge")]),
        flat_entry("endless", b"never either", vec![server.url("/endless")]),
    ];
    let manifest = write_manifest(dir.path(), entries.clone());
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &dir.path().join("cache"),
        &["--max-size", "1MiB"],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let huge = run.entry(&entries[0].store_path);
    assert!(
        huge["detail"].as_str().unwrap().contains("announces"),
        "{huge}"
    );
    assert_eq!(server.requests("/huge"), 1, "refused, not retried");
    let endless = run.entry(&entries[1].store_path);
    assert!(
        endless["detail"].as_str().unwrap().contains("goes on past"),
        "{endless}"
    );
    let received = endless["bytesDownloaded"].as_u64().unwrap();
    assert!(received <= 1024 * 1024, "{received} bytes taken");
    assert_eq!(server.requests("/endless"), 1);
}

/// A substituter whose narinfos never end (or announce 10^13 bytes) is refused at the
/// narinfo cap, once each, and the entry still comes from its URL.
#[test]
fn endless_and_huge_narinfos_from_a_substituter_are_refused_at_the_cap() {
    let upstream = TestServer::start();
    let live = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    live.route("/a", Route::ok(b"from the url a".to_vec()));
    live.route("/b", Route::ok(b"from the url b".to_vec()));
    let entries = vec![
        flat_entry("a", b"from the url a", vec![live.url("/a")]),
        flat_entry("b", b"from the url b", vec![live.url("/b")]),
    ];
    let narinfo = |entry: &Entry| {
        let hash_part = entry.parsed_store_path().unwrap().hash_part().to_string();
        format!("/{hash_part}.narinfo")
    };
    upstream.route(&narinfo(&entries[0]), Route::endless(None));
    upstream.route(
        &narinfo(&entries[1]),
        Route::endless(Some(10_000_000_000_000)),
    );
    let manifest = write_manifest(dir.path(), entries.clone());
    let upstream_url = upstream.base();
    let run = fetch_ending_within(
        dir.path(),
        &manifest,
        &dir.path().join("cache"),
        &["--substituter", &upstream_url],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for entry in &entries {
        assert_eq!(
            run.entry(&entry.store_path)["status"],
            "fetched",
            "{}",
            run.report
        );
        assert_eq!(
            upstream.requests(&narinfo(entry)),
            1,
            "refused, not retried"
        );
    }
}
