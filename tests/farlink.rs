//! Far links on loopback: many small requests to one host whose every answer waits before
//! its first byte. Narinfo look-ups follow the per-host rules (a count of their own that
//! grows while answers come faster, up to `--max-lookups-per-host`).

mod support;

use srcgrab_fetcher::binaries::sizes::{narinfo_sizes, NarinfoSizes};
use srcgrab_fetcher::net::DownloadOptions;
use srcgrab_formats::store_path::StorePath;
use std::time::Duration;
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
