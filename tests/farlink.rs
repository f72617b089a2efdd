//! Far links on loopback: many small requests to one host whose every answer waits before
//! its first byte. Narinfo look-ups follow the per-host rules (a count of their own that
//! grows while answers come faster, up to `--max-lookups-per-host`; over HTTP/2, streams).

mod support;

use serde_json::{json, Value};
use srcgrab_fetcher::binaries::sizes::{narinfo_sizes, NarinfoSizes};
use srcgrab_fetcher::net::DownloadOptions;
use srcgrab_formats::store_path::StorePath;
use std::path::Path;
use std::time::Duration;
use support::h2::H2Server;
use support::tls::TestCa;
use support::{Route, TestServer};

const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A store path and its narinfo, both made from `i`.
fn narinfo(i: usize) -> (StorePath, String) {
    // `i` in base 32, in Nix's alphabet: a valid hash part, different for every `i`.
    let hash: String = (0..32)
        .rev()
        .map(|k| NIX32[(i >> (5 * k).min(63)) % 32] as char)
        .collect();
    let path = format!("/nix/store/{hash}-small-{i}");
    let nar_hash = format!("{:064x}", i);
    let text = format!(
        "StorePath: {path}\nURL: nar/{hash}.nar.xz\nCompression: xz\nFileSize: {}\n\
         NarHash: sha256:{nar_hash}\nNarSize: {}\nReferences: \n",
        1000 + i,
        3000 + i
    );
    (StorePath::parse(&path).unwrap(), text)
}

/// `count` narinfos on `server`, each answered after `delay`.
fn serve_narinfos(server: &TestServer, count: usize, delay: Duration) -> Vec<StorePath> {
    (0..count)
        .map(|i| {
            let (path, text) = narinfo(i);
            let route = Route::ok(text).first_byte_delay(delay);
            server.route(&format!("/cache/{}.narinfo", path.hash_part()), route);
            path
        })
        .collect()
}

fn sizes(paths: &[StorePath], substituter: &str, ceiling: usize) -> Vec<Option<NarinfoSizes>> {
    let options = DownloadOptions {
        max_lookups_per_host: ceiling,
        ..DownloadOptions::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(narinfo_sizes(paths, &[substituter.to_string()], options))
        .unwrap()
}

#[test]
fn narinfo_lookups_grow_past_their_start_on_a_far_link_and_keep_to_their_ceiling() {
    let server = TestServer::start();
    let paths = serve_narinfos(&server, 900, Duration::from_millis(200));
    let found = sizes(&paths, &server.url("/cache"), 128);
    for (i, found) in found.iter().enumerate() {
        let expected = NarinfoSizes {
            file_size: Some(1000 + i as u64),
            nar_size: 3000 + i as u64,
        };
        assert_eq!(*found, Some(expected), "path {i}");
    }
    assert_eq!(server.total_requests(), 900, "each narinfo asked once");
    let peak = server.max_requests_in_flight();
    // 32 at first: more only if the count grew as the answers came faster.
    assert!(
        peak > 32 && peak <= 128,
        "{peak} look-ups in flight at most"
    );

    let server = TestServer::start();
    let paths = serve_narinfos(&server, 100, Duration::from_millis(200));
    let found = sizes(&paths, &server.url("/cache"), 16);
    assert!(found.iter().all(Option::is_some));
    assert_eq!(
        server.max_requests_in_flight(),
        16,
        "the ceiling, saturated"
    );
}

/// A manifest whose build graph has `paths` as outputs, for `stats` to size.
fn outputs_manifest(dir: &Path, paths: &[StorePath]) -> std::path::PathBuf {
    let derivations: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            json!({
                "drvPath": format!("/nix/store/{}-out-{i}.drv", path.hash_part()),
                "system": "x86_64-linux",
                "outputs": {"out": path.to_path_string()},
                "inputs": [],
                "sources": [],
            })
        })
        .collect();
    let attribute = json!({
        "system": "x86_64-linux",
        "attr": "all",
        "drvPath": derivations[0]["drvPath"],
    });
    let manifest = json!({
        "version": 2,
        "provenance": {
            "systems": ["x86_64-linux"],
            "nixVersion": "test",
            "config": {"allowUnfree": false, "allowBroken": false, "allowInsecure": false},
            "attrs": [],
        },
        "failures": [],
        "entries": [],
        "build": {"derivations": derivations, "attributes": [attribute]},
    });
    let path = dir.join("outputs.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

/// `srcgrab stats` of 300 outputs from a binary cache speaking HTTP/2 only, each answer
/// after 300 ms: every size known, the look-ups many streams at once over few connections.
#[test]
fn stats_over_http2_sends_its_lookups_as_many_streams_of_few_connections() {
    let ca = TestCa::new("far cache");
    let server = H2Server::start(ca.acceptor_h2(), Duration::from_millis(300));
    let paths: Vec<StorePath> = (0..300)
        .map(|i| {
            let (path, text) = narinfo(i);
            server.route(&format!("/cache/{}.narinfo", path.hash_part()), text);
            path
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(&ca_file);
    let manifest = outputs_manifest(dir.path(), &paths);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .arg("stats")
        .arg(&manifest)
        .args(["--substituter", &server.url("/cache"), "--json"])
        .env("NIX_SSL_CERT_FILE", &ca_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stats: Value = serde_json::from_slice(&output.stdout).unwrap();
    let binaries = &stats["kit"]["all"]["binaries"];
    assert_eq!(binaries["entries"], 300, "{binaries}");
    assert_eq!(binaries["unknownSizes"], 0, "{binaries}");
    let file_bytes: u64 = (0..300).map(|i| 1000 + i).sum();
    assert_eq!(binaries["fileBytes"], file_bytes, "{binaries}");
    assert_eq!(server.requests(), 300, "each narinfo asked once");
    let (connections, streams) = (server.connections(), server.max_concurrent_streams());
    // More than the 32 an HTTP/1.1 host starts its look-ups with, over at most that many
    // connections (opened before the first answer said HTTP/2).
    assert!(connections <= 32, "{connections} connections");
    assert!(
        streams > 32 && streams > 2 * connections,
        "{streams} streams at once over {connections} connections"
    );
}
