//! `srcgrab fetch` end to end: the real binary against a real HTTP server on 127.0.0.1 with
//! injected faults, real Nix making an upstream binary cache, and real Nix substituting
//! from the cache srcgrab wrote. Assertions are on what the server counted and what the
//! cache holds, never on timing.

mod support;

#[path = "fetch/net.rs"]
mod net;

use serde_json::Value;
use srcgrab_formats::hash::{Hash, HashAlgo};
use srcgrab_manifest::{Entry, HashMode, Kind, Manifest, StorePath, StorePathName};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::manifest_file::write_manifest;
use support::{Route, TestServer};

fn sha256(bytes: &[u8]) -> Hash {
    Hash {
        algo: HashAlgo::Sha256,
        bytes: HashAlgo::Sha256.digest(bytes),
    }
}

/// Content no earlier run has put in the store, so Nix really has to substitute it:
/// a label, then pseudo-random letters seeded by the clock, the pid and a counter.
fn unique(label: &str, size: usize) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut state = nanos
        ^ ((std::process::id() as u64) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e3779b97f4a7c15)
        | 1;
    let mut bytes = format!("{label} ").into_bytes();
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(b'a' + (state % 26) as u8);
    }
    bytes
}

fn entry(name: &str, mode: HashMode, hash: &Hash, kind: Kind, urls: Vec<String>) -> Entry {
    Entry {
        urls,
        drv_paths: [(
            srcgrab_fetcher::builder::host_system(),
            format!("/nix/store/00000000000000000000000000000000-{name}.drv")
                .parse()
                .unwrap(),
        )]
        .into(),
        systems: vec!["x86_64-linux".into()],
        attrs: vec![name.to_string()],
        attr_count: 1,
        ..Entry::new(&StorePathName::new(name).unwrap(), mode, hash, kind)
    }
}

/// `count` flat entries of `size` unique bytes each, served slowly (`chunk` bytes every
/// `delay_ms`) at `/<label>/<i>`, with their contents.
fn slow_flat_entries(
    server: &TestServer,
    label: &str,
    count: usize,
    size: usize,
    chunk: usize,
    delay_ms: u64,
) -> (Vec<Entry>, Vec<Vec<u8>>) {
    (0..count)
        .map(|i| {
            let content = unique(&format!("{label} {i}"), size);
            let path = format!("/{label}/{i}");
            server.route(
                &path,
                Route::ok(content.clone()).slow(chunk, Duration::from_millis(delay_ms)),
            );
            let entry = flat_entry(&format!("{label}-{i}"), &content, vec![server.url(&path)]);
            (entry, content)
        })
        .unzip()
}

fn flat_entry(name: &str, content: &[u8], urls: Vec<String>) -> Entry {
    entry(name, HashMode::Flat, &sha256(content), Kind::Url, urls)
}

struct Run {
    output: Output,
    report: Value,
}

impl Run {
    fn code(&self) -> i32 {
        self.output.status.code().expect("exited")
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn entry(&self, store_path: &StorePath) -> &Value {
        let store_path = store_path.to_path_string();
        self.report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["storePath"] == store_path)
            .unwrap_or_else(|| panic!("{store_path} not in report: {}", self.report))
    }
}

fn srcgrab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_srcgrab"))
}

/// Runs `srcgrab fetch` with no substituters (unless `args` name some) and short timeouts
/// (a stall timeout of 2 s unless `args` give one).
fn fetch(dir: &Path, manifest: &Path, cache: &Path, args: &[&str]) -> Run {
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
        .args(["--retries", "3"]);
    if !args.contains(&"--stall-timeout") {
        command.args(["--stall-timeout", "2"]);
    }
    if !args.contains(&"--substituter") {
        command.arg("--no-substituters");
    }
    let output = command.args(args).output().expect("run srcgrab");
    let report = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Run { output, report }
}

fn narinfo_path(cache: &Path, entry: &Entry) -> PathBuf {
    let hash_part = entry.store_path.hash_part().to_string();
    cache.join(format!("{hash_part}.narinfo"))
}

/// The entry is in the cache: its narinfo names it, and the mirror file holds the content.
fn assert_published(cache: &Path, entry: &Entry, content: &[u8]) {
    let narinfo = std::fs::read_to_string(narinfo_path(cache, entry))
        .unwrap_or_else(|e| panic!("no narinfo for {}: {e}", entry.store_path));
    assert!(
        narinfo.contains(&format!("StorePath: {}\n", entry.store_path)),
        "{narinfo}"
    );
    let mirror = cache.join("sha256").join(sha256(content).to_hex());
    assert_eq!(
        std::fs::read(&mirror).unwrap(),
        content,
        "{}",
        mirror.display()
    );
}

#[test]
fn falls_back_across_urls_and_retries_transient_errors() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = unique("a", 70_000);
    let b = unique("b", 10_000);
    server.route("/missing/a", Route::status(404));
    server.route("/flaky/a", Route::ok(a.clone()).fail_first(2));
    server.route("/wrong/b", Route::ok(unique("not b", 10_000)));
    server.route("/good/b", Route::ok(b.clone()));
    let entry_a = flat_entry(
        "a.tar.gz",
        &a,
        vec![server.url("/missing/a"), server.url("/flaky/a")],
    );
    let entry_b = flat_entry(
        "b.tar.gz",
        &b,
        vec![server.url("/wrong/b"), server.url("/good/b")],
    );
    let manifest = write_manifest(dir.path(), vec![entry_a.clone(), entry_b.clone()]);

    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_published(&cache, &entry_a, &a);
    assert_published(&cache, &entry_b, &b);
    assert_eq!(server.requests("/missing/a"), 1, "a 404 is not retried");
    assert_eq!(server.requests("/flaky/a"), 3, "two 500s, then the file");
    assert_eq!(
        server.requests("/wrong/b"),
        1,
        "wrong content moves on at once"
    );
    let report_a = run.entry(&entry_a.store_path);
    assert_eq!(report_a["status"], "fetched");
    assert_eq!(report_a["how"], "url");
    assert_eq!(report_a["from"], server.url("/flaky/a"));
    assert_eq!(report_a["urlsTried"].as_array().unwrap().len(), 2);
    assert_eq!(report_a["bytesDownloaded"], a.len() as u64);
    assert!(report_a["bytesWritten"].as_u64().unwrap() > 0);
    assert_eq!(run.report["summary"]["fetched"]["url"], 2);

    // A second run finds both present and asks the server nothing.
    let before = server.total_requests();
    let again = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert_eq!(server.total_requests(), before);
    assert_eq!(again.report["summary"]["present"], 2);
}

#[test]
fn resumes_a_cut_body_with_range_and_restarts_when_range_is_ignored() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let resumable = unique("resumable", 300_000);
    let restart = unique("restart", 300_000);
    let stalled = unique("stalled", 300_000);
    server.route(
        "/cut",
        Route::ok(resumable.clone()).truncate_first(1, 100_000),
    );
    server.route(
        "/cut-no-range",
        Route::ok(restart.clone())
            .truncate_first(1, 100_000)
            .ignore_range(),
    );
    server.route("/stall", Route::ok(stalled.clone()).stall_first(1, 120_000));
    let entries = vec![
        flat_entry("resumable", &resumable, vec![server.url("/cut")]),
        flat_entry("restart", &restart, vec![server.url("/cut-no-range")]),
        flat_entry("stalled", &stalled, vec![server.url("/stall")]),
    ];
    let manifest = write_manifest(dir.path(), entries.clone());

    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content) in entries.iter().zip([&resumable, &restart, &stalled]) {
        assert_published(&cache, entry, content);
    }
    let cut = server.stats("/cut");
    assert_eq!((cut.requests, cut.range_requests), (2, 1));
    assert_eq!(cut.body_bytes, resumable.len() as u64, "no byte sent twice");
    let no_range = server.stats("/cut-no-range");
    assert_eq!(no_range.requests, 2);
    assert_eq!(no_range.body_bytes, 100_000 + restart.len() as u64);
    let stall = server.stats("/stall");
    assert_eq!((stall.requests, stall.range_requests), (2, 1));
    assert_eq!(stall.body_bytes, stalled.len() as u64);
    assert_eq!(
        run.entry(&entries[1].store_path)["bytesDownloaded"],
        100_000 + restart.len() as u64
    );
    let leftovers = std::fs::read_dir(cache.join(".tmp/partial"))
        .unwrap()
        .count();
    assert_eq!(
        leftovers, 0,
        "partial downloads are cleaned up once published"
    );
}

#[test]
fn follows_redirects_applies_rewrites_and_tries_hashed_mirrors_first() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let redirected = unique("redirected", 5_000);
    let mirrored = unique("mirrored", 5_000);
    server.route(
        "/gnu/hello.tar.gz",
        Route::redirect(302, "/files/hello.tar.gz"),
    );
    server.route("/files/hello.tar.gz", Route::ok(redirected.clone()));
    let mirror_path = format!("/mirror/sha256/{}", sha256(&mirrored).to_hex());
    server.route(&mirror_path, Route::ok(mirrored.clone()));
    server.route("/upstream/mirrored", Route::ok(mirrored.clone()));
    let rewritten = flat_entry(
        "hello.tar.gz",
        &redirected,
        vec!["https://ftpmirror.gnu.invalid/hello.tar.gz".into()],
    );
    let from_mirror = flat_entry(
        "mirrored",
        &mirrored,
        vec![server.url("/upstream/mirrored")],
    );
    let manifest = write_manifest(dir.path(), vec![rewritten.clone(), from_mirror.clone()]);

    let rule = format!("https://ftpmirror.gnu.invalid/={}", server.url("/gnu/"));
    let mirror = server.url("/mirror/");
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &["--rewrite", &rule, "--hashed-mirror", &mirror],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_published(&cache, &rewritten, &redirected);
    assert_published(&cache, &from_mirror, &mirrored);
    assert_eq!(server.requests("/gnu/hello.tar.gz"), 1);
    assert_eq!(server.requests("/files/hello.tar.gz"), 1);
    assert_eq!(server.requests(&mirror_path), 1);
    assert_eq!(
        server.requests("/upstream/mirrored"),
        0,
        "the mirror came first"
    );
    let report = run.entry(&rewritten.store_path);
    assert_eq!(report["from"], server.url("/gnu/hello.tar.gz"));
}

#[test]
fn a_redirect_to_a_local_file_is_not_followed_and_says_so() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"not for the cache").unwrap();
    let location = format!("file://{}", secret.display());
    server.route("/away", Route::redirect(302, &location));
    let entry = flat_entry("secret", b"not for the cache", vec![server.url("/away")]);
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);

    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr().contains(&format!(
            "HTTP 302 Found: redirect to {location} not followed (only http and https URLs are)"
        )),
        "{}",
        run.stderr()
    );
    assert_eq!(
        server.requests("/away"),
        1,
        "a redirect's answer is permanent"
    );
    assert!(!narinfo_path(&cache, &entry).exists());
}

#[test]
fn wrong_content_everywhere_fails_with_exit_1_and_publishes_nothing() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let wanted = unique("wanted", 2_000);
    server.route("/one", Route::ok(unique("other", 2_000)));
    server.route("/two", Route::ok(unique("another", 2_000)));
    let bad = flat_entry(
        "wanted",
        &wanted,
        vec![server.url("/one"), server.url("/two")],
    );
    let mut post_fetch = flat_entry("patched", &wanted, vec![server.url("/one")]);
    post_fetch.post_fetch = true;
    let manifest = write_manifest(dir.path(), vec![bad.clone(), post_fetch.clone()]);

    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let report = run.entry(&bad.store_path);
    assert_eq!(report["status"], "failed");
    assert_eq!(report["reason"], "hash mismatch");
    assert_eq!(
        report["urlsTried"],
        serde_json::json!([server.url("/one"), server.url("/two")])
    );
    let needs = run.entry(&post_fetch.store_path);
    assert_eq!(needs["status"], "needs-builder");
    assert_eq!(
        needs["command"],
        format!(
            "nix-store --realise {}",
            post_fetch
                .drv_path_for(&srcgrab_fetcher::builder::host_system())
                .unwrap()
        )
    );
    assert!(!narinfo_path(&cache, &bad).exists());
    assert!(!narinfo_path(&cache, &post_fetch).exists());
    let mirror_files = std::fs::read_dir(cache.join("sha256")).unwrap().count();
    assert_eq!(mirror_files, 0, "nothing unverified reaches the mirror");
}

/// A run may hold one open lock file per item in flight besides its connections: srcgrab
/// raises its soft open-file limit to the hard one, so a shell's usual 1024 (here 256) does
/// not make a large closure fail with "too many open files".
#[test]
fn the_open_file_limit_is_raised_to_what_the_system_allows() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let content = unique("slow to answer", 1_000);
    server.route(
        "/slow",
        Route::ok(content.clone()).first_byte_delay(Duration::from_secs(30)),
    );
    let entry = flat_entry("slow", &content, vec![server.url("/slow")]);
    let manifest = write_manifest(dir.path(), vec![entry]);
    let cache = dir.path().join("cache");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_srcgrab"))
        .arg("fetch")
        .arg(&manifest)
        .arg("--cache")
        .arg(&cache)
        .arg("--no-substituters")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.requests("/slow") == 0 {
        assert!(Instant::now() < deadline, "srcgrab sent no request");
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        open_files[0], open_files[1],
        "soft raised to hard: {limits}"
    );
    assert_ne!(open_files[0], "256", "{limits}");
}

#[test]
fn malformed_manifest_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, r#"{"version": 1, "entries": 7}"#).unwrap();
    let run = fetch(dir.path(), &manifest, &dir.path().join("cache"), &[]);
    assert_eq!(run.code(), 2);
    assert!(run.stderr().contains("manifest"), "{}", run.stderr());
}

/// Adds `file` to the store as a flat sha256 fixed output and copies it with real Nix into
/// the binary cache at `to` (a `file://` URL, with options); returns the store path.
fn add_to_upstream_cache(file: &Path, to: &str) -> String {
    let path = nix_ok(
        "nix-store",
        &["--add-fixed", "sha256", file.to_str().unwrap()],
    );
    nix_ok(
        "nix",
        &[
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--to",
            to,
            &path,
        ],
    );
    path
}

fn nix(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    output
}

fn nix_ok(program: &str, args: &[&str]) -> String {
    let output = nix(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Removes `path` from the local store so only substitution can bring it back.
fn delete_from_store(path: impl std::fmt::Display) {
    let path = path.to_string();
    let _ = nix("nix-store", &["--delete", &path]);
    assert!(!Path::new(&path).exists(), "{path} is still in the store");
}

#[test]
fn upstream_binary_cache_made_by_nix_is_used_and_a_tampered_nar_is_rejected() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let upstream = dir.path().join("upstream");
    let good = unique("substituted", 40_000);
    let tampered = unique("tampered", 40_000);
    let mut store_paths = Vec::new();
    for (name, content) in [("good.tar", &good), ("tampered.tar", &tampered)] {
        let file = dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        let path = add_to_upstream_cache(&file, &format!("file://{}", upstream.display()));
        store_paths.push(path);
    }
    let good_entry = flat_entry("good.tar", &good, vec![server.url("/native/good")]);
    let tampered_entry = flat_entry(
        "tampered.tar",
        &tampered,
        vec![server.url("/native/tampered")],
    );
    assert_eq!(
        store_paths,
        [
            good_entry.store_path.to_path_string(),
            tampered_entry.store_path.to_path_string()
        ]
    );
    // Swap the tampered entry's NAR for the good one's, and drop the file checks so only
    // NarHash can tell.
    let read_narinfo =
        |entry: &Entry| std::fs::read_to_string(narinfo_path(&upstream, entry)).unwrap();
    let nar_url = |narinfo: &str| {
        narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
            .to_string()
    };
    let good_nar = upstream.join(nar_url(&read_narinfo(&good_entry)));
    let tampered_narinfo = read_narinfo(&tampered_entry);
    std::fs::copy(&good_nar, upstream.join(nar_url(&tampered_narinfo))).unwrap();
    let stripped: String = tampered_narinfo
        .lines()
        .filter(|l| !l.starts_with("FileHash:") && !l.starts_with("FileSize:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(narinfo_path(&upstream, &tampered_entry), stripped).unwrap();
    server.serve_dir("/upstream/", &upstream);
    server.route("/native/tampered", Route::ok(tampered.clone()));
    let absent = unique("absent", 1_000);
    server.route("/native/absent", Route::ok(absent.clone()));
    let absent_entry = flat_entry("absent", &absent, vec![server.url("/native/absent")]);
    let manifest = write_manifest(
        dir.path(),
        vec![
            good_entry.clone(),
            tampered_entry.clone(),
            absent_entry.clone(),
        ],
    );

    let substituter = server.url("/upstream");
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &["--substituter", &substituter],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let good_report = run.entry(&good_entry.store_path);
    assert_eq!(good_report["how"], "substituter");
    assert_eq!(good_report["from"], substituter);
    assert_eq!(server.requests("/native/good"), 0);
    let tampered_report = run.entry(&tampered_entry.store_path);
    assert_eq!(tampered_report["how"], "url", "{tampered_report}");
    let reason = tampered_report["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("NarHash mismatch"), "{reason}");
    assert_eq!(run.entry(&absent_entry.store_path)["how"], "url");
    for (entry, content) in [
        (&good_entry, &good),
        (&tampered_entry, &tampered),
        (&absent_entry, &absent),
    ] {
        assert_published(&cache, entry, content);
    }
    for path in &store_paths {
        delete_from_store(path);
    }
}

/// The value of a narinfo field.
fn narinfo_field(narinfo: &str, field: &str) -> String {
    narinfo
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in {narinfo}"))
        .to_string()
}

/// With `--keep-upstream-compression`, NARs from a binary cache made by real Nix (xz, bzip2,
/// zstd) become the cache's NAR files byte for byte, with their FileHash, and Nix
/// substitutes every path from the result with the server gone.
#[test]
fn keeps_upstream_compression_and_nix_substitutes_from_the_result() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let upstream = dir.path().join("upstream");
    let mut items = Vec::new();
    for compression in ["xz", "bzip2", "zstd"] {
        let name = format!("kept-{compression}.tar");
        let content = unique(&name, 60_000);
        let file = dir.path().join(&name);
        std::fs::write(&file, &content).unwrap();
        let path = add_to_upstream_cache(
            &file,
            &format!("file://{}?compression={compression}", upstream.display()),
        );
        // No native URL serves it: only the substituter can.
        let entry = flat_entry(&name, &content, vec![server.url("/native/absent")]);
        assert_eq!(entry.store_path.to_path_string(), path);
        items.push((entry, content, compression));
    }
    server.serve_dir("/upstream/", &upstream);
    let manifest = write_manifest(dir.path(), items.iter().map(|i| i.0.clone()).collect());
    let substituter = server.url("/upstream");
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &["--substituter", &substituter, "--keep-upstream-compression"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content, compression) in &items {
        assert_eq!(run.entry(&entry.store_path)["how"], "substituter");
        assert_published(&cache, entry, content);
        let ours = std::fs::read_to_string(narinfo_path(&cache, entry)).unwrap();
        let theirs = std::fs::read_to_string(narinfo_path(&upstream, entry)).unwrap();
        assert_eq!(narinfo_field(&ours, "Compression"), *compression, "{ours}");
        for field in ["FileHash", "FileSize", "NarHash", "NarSize"] {
            assert_eq!(
                narinfo_field(&ours, field),
                narinfo_field(&theirs, field),
                "{field}"
            );
        }
        assert_eq!(
            std::fs::read(cache.join(narinfo_field(&ours, "URL"))).unwrap(),
            std::fs::read(upstream.join(narinfo_field(&theirs, "URL"))).unwrap(),
            "the NAR file is upstream's, byte for byte"
        );
    }
    server.stop();
    let substituters = format!("file://{}", cache.display());
    for (entry, content, _) in &items {
        delete_from_store(&entry.store_path);
        let out = nix_ok(
            "nix-store",
            &[
                "--realise",
                &entry.store_path.to_path_string(),
                "--option",
                "substituters",
                &substituters,
            ],
        );
        assert_eq!(out, entry.store_path.to_path_string());
        assert_eq!(std::fs::read(&out).unwrap(), *content);
        delete_from_store(&entry.store_path);
    }
}

/// `srcgrab fetch` killed with SIGKILL mid-run, then run again: the cache ends complete and
/// valid, and files finished before the kill are not downloaded again.
#[test]
fn sigkill_mid_run_loses_only_in_flight_downloads() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (mut entries, mut contents) = slow_flat_entries(&server, "slow", 16, 200_000, 20_000, 40);
    // One larger file whose first answer hangs after STALLED bytes, past the 256 KiB a
    // download keeps in memory before it writes: it is on disk and still in flight at the
    // kill however late the kill comes, so there is always a partial download to resume.
    const STALLED: usize = 300_000;
    let stalled_path = format!("/slow/{}", entries.len());
    let stalled_content = unique("slow stalled", 2 * STALLED);
    server.route(
        &stalled_path,
        Route::ok(stalled_content.clone())
            .slow(20_000, Duration::from_millis(40))
            .stall_first(1, STALLED),
    );
    entries.push(flat_entry(
        "slow-stalled",
        &stalled_content,
        vec![server.url(&stalled_path)],
    ));
    contents.push(stalled_content);
    let manifest = write_manifest(dir.path(), entries.clone());
    let mut child = srcgrab()
        .arg("fetch")
        .arg(&manifest)
        .arg("--cache")
        .arg(&cache)
        .args(["--no-substituters", "--jobs", "4"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let published = |entries: &[Entry]| -> Vec<usize> {
        (0..entries.len())
            .filter(|i| narinfo_path(&cache, &entries[*i]).exists())
            .collect()
    };
    // Kill once some files are published and the stalled one has written a batch (the
    // others, 200,000 bytes each, never have more than that on disk).
    let partial_dir = cache.join(".tmp/partial");
    let under_way = || {
        std::fs::read_dir(&partial_dir).is_ok_and(|dir| {
            dir.flatten().any(|f| {
                f.path().extension().is_some_and(|e| e == "part")
                    && f.metadata().is_ok_and(|m| m.len() > 200_000)
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while published(&entries).len() < 5 || !under_way() {
        assert!(Instant::now() < deadline, "srcgrab made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "srcgrab ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = published(&entries);
    assert!(
        done_before.len() < entries.len(),
        "killed too late to test anything"
    );
    let requests_before: Vec<u64> = (0..entries.len())
        .map(|i| server.requests(&format!("/slow/{i}")))
        .collect();

    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content) in entries.iter().zip(&contents) {
        assert_published(&cache, entry, content);
    }
    for i in done_before {
        assert_eq!(
            server.requests(&format!("/slow/{i}")),
            requests_before[i],
            "file {i} was finished before the kill and fetched again"
        );
    }
    assert!(
        server.stats(&stalled_path).range_requests >= 1,
        "the stalled download was not resumed"
    );
    let opened = srcgrab_fetcher::store::Cache::open(&cache, Default::default()).unwrap();
    for entry in &entries {
        let hash_part = entry.store_path.hash_part().to_string();
        opened.verify_narinfo(&hash_part).unwrap();
    }
}

/// The proof: Nix itself, with only the written cache as substituter (or hashed mirror) and
/// the server gone, realises fixed-output derivations whose builder cannot build anything.
#[test]
fn nix_realises_fixed_outputs_from_the_written_cache_alone() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flat = unique("flat", 30_000);
    let mut tool = b"#!/bin/sh\necho ".to_vec();
    tool.extend(unique("tool", 3_000));
    let tool_hash = support::executable_nix_hash(&dir.path().join("tool"), &tool);
    let expression = dir.path().join("fods.nix");
    std::fs::write(
        &expression,
        format!(
            r#"
let fod = name: mode: hash: derivation {{
  inherit name;
  system = builtins.currentSystem;
  builder = "/bin/false";
  outputHashMode = mode;
  outputHashAlgo = "sha256";
  outputHash = hash;
}};
in {{
  flat = fod "flat.tar.gz" "flat" "{flat_hash}";
  tool = fod "tool" "recursive" "{tool_hash}";
  builtin = import <nix/fetchurl.nix> {{
    url = "http://127.0.0.1:9/flat.tar.gz";
    sha256 = "{flat_hash}";
  }};
}}
"#,
            flat_hash = sha256(&flat).to_hex(),
            tool_hash = tool_hash.to_hex()
        ),
    )
    .unwrap();
    let drv = |attr: &str| {
        nix_ok(
            "nix-instantiate",
            &[expression.to_str().unwrap(), "-A", attr],
        )
    };
    let (flat_drv, tool_drv, builtin_drv) = (drv("flat"), drv("tool"), drv("builtin"));
    server.route("/flat.tar.gz", Route::ok(flat.clone()));
    server.route("/tool", Route::ok(tool.clone()));
    let mut flat_entry = flat_entry("flat.tar.gz", &flat, vec![server.url("/flat.tar.gz")]);
    flat_entry.drv_paths = [(
        srcgrab_fetcher::builder::host_system(),
        flat_drv.parse().unwrap(),
    )]
    .into();
    let mut tool_entry = entry(
        "tool",
        HashMode::Recursive,
        &tool_hash,
        Kind::Url,
        vec![server.url("/tool")],
    );
    tool_entry.executable = true;
    tool_entry.drv_paths = [(
        srcgrab_fetcher::builder::host_system(),
        tool_drv.parse().unwrap(),
    )]
    .into();
    for (entry, drv) in [(&flat_entry, &flat_drv), (&tool_entry, &tool_drv)] {
        let out = nix_ok("nix-store", &["--query", "--outputs", drv]);
        assert_eq!(
            out,
            entry.store_path.to_path_string(),
            "srcgrab and Nix agree on the output path"
        );
        delete_from_store(&entry.store_path);
    }
    let manifest = write_manifest(dir.path(), vec![flat_entry.clone(), tool_entry.clone()]);
    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    server.stop();

    let substituters = format!("file://{}", cache.display());
    for (entry, drv) in [(&flat_entry, &flat_drv), (&tool_entry, &tool_drv)] {
        let out = nix_ok(
            "nix-store",
            &["--realise", drv, "--option", "substituters", &substituters],
        );
        assert_eq!(out, entry.store_path.to_path_string());
    }
    assert_eq!(
        std::fs::read(flat_entry.store_path.to_path_string()).unwrap(),
        flat
    );
    let tool_meta = std::fs::metadata(tool_entry.store_path.to_path_string()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&tool_meta.permissions()) & 0o111,
        0o111
    );

    // builtin:fetchurl through Nix's hashed-mirrors, with no substituter and a dead URL.
    delete_from_store(&flat_entry.store_path);
    let mirrors = format!("file://{}/", cache.display());
    let out = nix_ok(
        "nix-store",
        &[
            "--realise",
            &builtin_drv,
            "--option",
            "substituters",
            "",
            "--option",
            "hashed-mirrors",
            &mirrors,
        ],
    );
    assert_eq!(out, flat_entry.store_path.to_path_string());
    assert_eq!(std::fs::read(&out).unwrap(), flat);
    delete_from_store(&flat_entry.store_path);
    delete_from_store(&tool_entry.store_path);
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pkgs")
}

/// The whole proof on the fixture package set: enumerate, fetch every entry (url,
/// url-unpack, builtin from the fixture's sources with its hosts rewritten to the test
/// server, git over git's dumb HTTP protocol from the same server, the vendor FOD with
/// `--builder nix`), stop the server, delete every output from the store, then let Nix
/// realise each FOD and build `hello` and `hello-vendored` with only the cache as
/// substituter; and the fixture fetchurl through NIX_HASHED_MIRRORS alone.
#[test]
fn fixture_package_set_builds_offline_from_the_cache() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let git_served = dir.path().join("git");
    let made = Command::new(fixture().join("../make-git-repo.sh"))
        .arg(&git_served)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    server.serve_dir("/a/git/", &git_served);
    server.serve_dir("/a/", fixture().join("../sources"));
    let cache = dir.path().join("cache");
    let manifest = dir.path().join("manifest.json");
    let enumerate = srcgrab()
        .args(["enumerate", "--system", "x86_64-linux", "--nixpkgs"])
        .arg(fixture())
        .arg("-o")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        matches!(enumerate.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&enumerate.stderr)
    );
    let entries = Manifest::from_json(&std::fs::read_to_string(&manifest).unwrap())
        .unwrap()
        .entries;
    for kind in [
        Kind::Url,
        Kind::UrlUnpack,
        Kind::Builtin,
        Kind::Git,
        Kind::Other,
    ] {
        assert!(entries.iter().any(|e| e.kind == kind), "no {kind} entry");
    }

    let rule_a = format!("http://fixture-a.invalid/={}", server.url("/a/"));
    let rule_b = format!("http://fixture-b.invalid/={}", server.url("/dead/"));
    // The vendor FOD's input (hello's tarball) must come from the cache, not the store.
    let vendor = entries.iter().find(|e| e.kind == Kind::Other).unwrap();
    for entry in &entries {
        delete_from_store(&entry.store_path);
    }
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &[
            "--rewrite",
            &rule_a,
            "--rewrite",
            &rule_b,
            "--builder",
            "nix",
        ],
    );
    for entry in &entries {
        let report = run.entry(&entry.store_path);
        assert_eq!(report["status"], "fetched", "{report}\n{}", run.stderr());
    }
    let git_entry = entries.iter().find(|e| e.kind == Kind::Git).unwrap();
    assert_eq!(run.entry(&git_entry.store_path)["how"], "git");
    assert_eq!(run.entry(&vendor.store_path)["how"], "builder");
    assert_eq!(run.code(), 0, "{}", run.stderr());
    server.stop();

    let hello_drv = nix_ok(
        "nix-instantiate",
        &[fixture().to_str().unwrap(), "-A", "hello"],
    );
    let hello_out = nix_ok("nix-store", &["--query", "--outputs", &hello_drv]);
    let vendored_drv = nix_ok(
        "nix-instantiate",
        &[fixture().to_str().unwrap(), "-A", "hello-vendored"],
    );
    let vendored_out = nix_ok("nix-store", &["--query", "--outputs", &vendored_drv]);
    delete_from_store(&hello_out);
    delete_from_store(&vendored_out);
    for entry in &entries {
        delete_from_store(&entry.store_path);
    }
    let substituters = format!("file://{}", cache.display());
    for entry in &entries {
        let out = nix_ok(
            "nix-store",
            &[
                "--realise",
                &entry
                    .drv_path_for(&srcgrab_fetcher::builder::host_system())
                    .unwrap()
                    .to_string(),
                "--option",
                "substituters",
                &substituters,
            ],
        );
        assert_eq!(out, entry.store_path.to_path_string());
    }
    let built = nix_ok(
        "nix-build",
        &[
            fixture().to_str().unwrap(),
            "-A",
            "hello",
            "--no-out-link",
            "--option",
            "substituters",
            &substituters,
        ],
    );
    assert_eq!(built, hello_out);
    let built = nix_ok(
        "nix-build",
        &[
            fixture().to_str().unwrap(),
            "-A",
            "hello-vendored",
            "--no-out-link",
            "--option",
            "substituters",
            &substituters,
        ],
    );
    assert_eq!(built, vendored_out);
    delete_from_store(&vendored_out);

    // The fixture's fetchurl asks `$NIX_HASHED_MIRRORS/$outputHashAlgo/$outputHash` first.
    let tarball = entries
        .iter()
        .find(|e| e.name == "hello-1.0.tar.gz")
        .expect("hello's tarball");
    delete_from_store(&hello_out);
    delete_from_store(&tarball.store_path);
    let output = Command::new("nix-store")
        .args([
            "--realise",
            &tarball
                .drv_path_for(&srcgrab_fetcher::builder::host_system())
                .unwrap()
                .to_string(),
            "--option",
            "substituters",
            "",
        ])
        .env("NIX_HASHED_MIRRORS", format!("file://{}", cache.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        tarball.store_path.to_path_string()
    );
}

#[test]
fn per_host_limit_bounds_concurrent_transfers() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (entries, _) = slow_flat_entries(&server, "host", 8, 60_000, 10_000, 30);
    let manifest = write_manifest(dir.path(), entries);
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &["--jobs", "8", "--max-per-host", "2"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.report["summary"]["fetched"]["url"], 8);
    assert_eq!(server.max_concurrent_bodies(), 2);
}

#[test]
fn builtin_unpack_downloads_an_xz_nar_and_restores_it() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("bin/busybox"), unique("busybox", 20_000)).unwrap();
    std::fs::set_permissions(
        tree.join("bin/busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("bin/busybox", tree.join("sh")).unwrap();
    let nar = nix("nix-store", &["--dump", tree.to_str().unwrap()]).stdout;
    let mut xz = Command::new("xz")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = xz.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &nar));
    let compressed = xz.wait_with_output().unwrap().stdout;
    writer.join().unwrap().unwrap();
    server.route("/bootstrap-tools.nar.xz", Route::ok(compressed));
    let hash = Hash::parse(
        &nix_ok("nix-hash", &["--type", "sha256", tree.to_str().unwrap()]),
        Some(HashAlgo::Sha256),
    )
    .unwrap();
    let mut tools = entry(
        "bootstrap-tools",
        HashMode::Recursive,
        &hash,
        Kind::Builtin,
        vec![server.url("/bootstrap-tools.nar.xz")],
    );
    tools.post_fetch = true; // builtin:fetchurl's `unpack`, as the extractor records it
    let manifest = write_manifest(dir.path(), vec![tools.clone()]);
    let run = fetch(dir.path(), &manifest, &cache, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.entry(&tools.store_path)["how"], "nar");
    let opened = srcgrab_fetcher::store::Cache::open(&cache, Default::default()).unwrap();
    let hash_part = tools.store_path.hash_part().to_string();
    opened.verify_narinfo(&hash_part).unwrap();
}

/// Unmounts a test tmpfs however the test ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_exit_2() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a 1 MiB tmpfs (needs root)"
    );
    let _mount = Mount(small.clone());
    let mut entries = Vec::new();
    for i in 0..5 {
        let content = unique(&format!("big {i}"), 900_000);
        let path = format!("/big/{i}");
        server.route(&path, Route::ok(content.clone()));
        entries.push(flat_entry(
            &format!("big-{i}"),
            &content,
            vec![server.url(&path)],
        ));
    }
    let manifest = write_manifest(dir.path(), entries);
    let run = fetch(
        dir.path(),
        &manifest,
        &small.join("cache"),
        &["--jobs", "1"],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("disk full"), "{}", run.stderr());
    let stopped = run.report["stopped"]
        .as_str()
        .expect("the report says why it stopped");
    assert!(stopped.contains("disk full"), "{stopped}");
    // Counted in GETs: a HEAD that sizes a waiting file ahead of its turn downloads nothing.
    let gets: u64 = (0..5)
        .map(|i| server.stats(&format!("/big/{i}")))
        .map(|s| s.requests - s.head_requests)
        .sum();
    assert!(
        gets < 5,
        "the run went on after the disk filled: {gets} GETs"
    );

    // What the run left in `.tmp` besides partial downloads (its scratch directory, when
    // the stop did not unwind), and a killed run's (its lock no longer held), go with the
    // next run.
    let temp = small.join("cache/.tmp");
    let scratch = || -> Vec<String> {
        std::fs::read_dir(&temp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "partial")
            .collect()
    };
    let killed = temp.join("run-killed");
    std::fs::create_dir(&killed).unwrap();
    std::fs::write(temp.join("run-killed.lock"), b"").unwrap();
    let before = scratch();
    let again = fetch(
        dir.path(),
        &manifest,
        &small.join("cache"),
        &["--jobs", "1"],
    );
    assert_eq!(again.code(), 2, "{}", again.stderr());
    let after = scratch();
    assert!(
        before.iter().all(|name| !after.contains(name)),
        "left in .tmp: {before:?} before, {after:?} after"
    );
    assert!(
        after.len() <= 2,
        "at most the last run's scratch and lock: {after:?}"
    );
}

#[test]
fn signs_narinfos_and_a_mirror_only_layout_skips_trees() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let flat = unique("signed", 3_000);
    let tool = unique("tree", 3_000);
    server.route("/flat", Route::ok(flat.clone()));
    server.route("/tool", Route::ok(tool.clone()));
    let flat_entry = flat_entry("signed", &flat, vec![server.url("/flat")]);
    let tool_hash = support::executable_nix_hash(&dir.path().join("tool"), &tool);
    let mut tool_entry = entry(
        "tool",
        HashMode::Recursive,
        &tool_hash,
        Kind::Url,
        vec![server.url("/tool")],
    );
    tool_entry.executable = true;
    let manifest = write_manifest(dir.path(), vec![flat_entry.clone(), tool_entry.clone()]);
    let (secret, public) = (dir.path().join("key.sec"), dir.path().join("key.pub"));
    nix_ok(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "test-cache-1",
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
    );

    let signed = dir.path().join("signed");
    let run = fetch(
        dir.path(),
        &manifest,
        &signed,
        &["--sign-key", secret.to_str().unwrap()],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for entry in [&flat_entry, &tool_entry] {
        let narinfo = std::fs::read_to_string(narinfo_path(&signed, entry)).unwrap();
        assert!(narinfo.contains("\nSig: test-cache-1:"), "{narinfo}");
    }

    let mirror = dir.path().join("mirror");
    let run = fetch(dir.path(), &manifest, &mirror, &["--layout", "mirror"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.entry(&tool_entry.store_path)["status"], "skipped");
    assert_eq!(
        server.requests("/tool"),
        1,
        "a skipped entry is not downloaded"
    );
    let mirrored = mirror.join("sha256").join(sha256(&flat).to_hex());
    assert_eq!(std::fs::read(mirrored).unwrap(), flat);
    assert!(!narinfo_path(&mirror, &flat_entry).exists());
}

/// Far links: a large file comes in ranges over several connections, from the entry's
/// mirrors too, and servers that cannot be trusted with ranges get one stream.
const MIB: usize = 1024 * 1024;

/// The `.meta` files of partial downloads under `cache`, parsed.
fn partial_metas(cache: &Path) -> Vec<Value> {
    std::fs::read_dir(cache.join(".tmp/partial"))
        .map(|dir| {
            dir.flatten()
                .filter(|f| f.path().extension().is_some_and(|e| e == "meta"))
                .filter_map(|f| std::fs::read(f.path()).ok())
                .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of a segmented partial download on disk, by its meta file.
fn segment_bytes_done(meta: &Value) -> u64 {
    meta["segments"]
        .as_array()
        .map(|s| s.iter().map(|s| s["done"].as_u64().unwrap()).sum())
        .unwrap_or(0)
}

#[test]
fn a_large_file_arrives_in_ranges_over_parallel_connections_and_mirrors() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let content = unique("large", 24 * MIB);
    for path in ["/origin/large", "/mirror/large"] {
        server.route(path, Route::ok(content.clone()).rate_cap(8 * MIB));
    }
    server.route(
        "/redirect/large",
        Route::redirect(302, &server.url("/origin/large")),
    );
    let large = flat_entry(
        "large",
        &content,
        vec![server.url("/redirect/large"), server.url("/mirror/large")],
    );
    let manifest = write_manifest(dir.path(), vec![large.clone()]);
    let run = fetch(dir.path(), &manifest, &cache, &["--segments", "4"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_published(&cache, &large, &content);
    let (origin, mirror) = (server.stats("/origin/large"), server.stats("/mirror/large"));
    assert!(
        origin.range_requests + mirror.range_requests >= 3,
        "{origin:?} {mirror:?}"
    );
    assert!(mirror.body_bytes > 0, "the mirror served no range");
    assert!(origin.range_requests >= 1, "{origin:?}");
    // Ranges go where the opening GET's redirect led, not through the redirect again.
    assert_eq!(server.requests("/redirect/large"), 1);
    assert!(server.max_concurrent_bodies() >= 3);
    // Every byte once, but for what the opening GET sent past its range before it closed.
    let sent = origin.body_bytes + mirror.body_bytes;
    assert!(
        sent >= content.len() as u64 && sent < (content.len() + MIB) as u64,
        "{sent} bytes sent for {}",
        content.len()
    );
    let hosts = run.report["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert!(hosts[0]["peakConnections"].as_u64().unwrap() >= 3);
    assert!(hosts[0]["bytes"].as_u64().unwrap() >= content.len() as u64);
    assert!(run.stderr().contains("up to"), "{}", run.stderr());
    assert!(
        partial_metas(&cache).is_empty(),
        "partial state left behind"
    );
}

/// A server that answers range requests with the whole file, and one whose file changes
/// after the first request (a new ETag): both end in one fresh stream that verifies.
#[test]
fn ranges_ignored_or_a_changed_file_fall_back_to_one_stream() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ignoring = unique("ignoring", 12 * MIB);
    server.route(
        "/ignoring",
        Route::ok(ignoring.clone())
            .ignore_range()
            .rate_cap(16 * MIB),
    );
    let old = unique("old release", 12 * MIB);
    let new = unique("new release", 12 * MIB);
    server.route(
        "/changing",
        Route::ok(old)
            .changed_after(1, new.clone())
            .rate_cap(16 * MIB),
    );
    let entries = vec![
        flat_entry("ignoring", &ignoring, vec![server.url("/ignoring")]),
        flat_entry("changing", &new, vec![server.url("/changing")]),
    ];
    let manifest = write_manifest(dir.path(), entries.clone());
    // A stall timeout a loaded machine never reaches: a retry would add a request to the
    // exact counts below.
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &["--segments", "4", "--stall-timeout", "60"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_published(&cache, &entries[0], &ignoring);
    assert_published(&cache, &entries[1], &new);
    for path in ["/ignoring", "/changing"] {
        let stats = server.stats(path);
        assert!(stats.range_requests >= 1, "{path}: never split: {stats:?}");
        // The opening GET, the range requests refused, then exactly one plain GET.
        assert_eq!(
            stats.requests,
            stats.range_requests + 2,
            "{path}: {stats:?}"
        );
    }
}

/// A server claiming 16 MiB and sending 10: the run fails cleanly and publishes nothing.
#[test]
fn a_lying_content_length_is_caught_and_nothing_is_published() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let content = unique("liar", 10 * MIB);
    server.route(
        "/liar",
        Route::ok(content.clone()).claim_length(16 * MIB as u64),
    );
    let liar = flat_entry("liar", &content, vec![server.url("/liar")]);
    let manifest = write_manifest(dir.path(), vec![liar.clone()]);
    let run = fetch(dir.path(), &manifest, &cache, &["--segments", "4"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let reported = run.entry(&liar.store_path);
    assert_eq!(reported["status"], "failed", "{reported}");
    assert!(
        reported["detail"]
            .as_str()
            .unwrap()
            .contains("message length"),
        "{reported}"
    );
    assert!(!narinfo_path(&cache, &liar).exists());
    assert!(!cache
        .join("sha256")
        .join(sha256(&content).to_hex())
        .exists());
}

/// SIGKILL in the middle of a segmented download, then a rerun: it asks only for the bytes
/// of each range not yet on disk, and the file verifies.
#[test]
fn sigkill_mid_segmented_download_resumes_range_by_range() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let content = unique("resumable large", 24 * MIB);
    server.route("/large", Route::ok(content.clone()).rate_cap(2 * MIB));
    let large = flat_entry("resumable-large", &content, vec![server.url("/large")]);
    let manifest = write_manifest(dir.path(), vec![large.clone()]);
    let mut child = srcgrab()
        .arg("fetch")
        .arg(&manifest)
        .arg("--cache")
        .arg(&cache)
        .args(["--no-substituters", "--segments", "4"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once every range has saved some progress.
    let saved_in_every_range = || {
        partial_metas(&cache).iter().any(|meta| {
            meta["segments"].as_array().is_some_and(|segments| {
                segments.len() == 4 && segments.iter().all(|s| s["done"].as_u64() > Some(0))
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !saved_in_every_range() {
        assert!(Instant::now() < deadline, "srcgrab made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "srcgrab ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    while server.bodies_in_flight() > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let metas = partial_metas(&cache);
    assert_eq!(metas.len(), 1);
    let on_disk = segment_bytes_done(&metas[0]);
    assert!(on_disk < content.len() as u64, "killed too late");
    let before = server.stats("/large");

    server.route("/large", Route::ok(content.clone()));
    // A stall timeout a loaded machine never reaches: a retried range would be a fifth
    // request (its bytes would still be counted exactly).
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        &["--segments", "4", "--stall-timeout", "60"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_published(&cache, &large, &content);
    let after = server.stats("/large");
    assert_eq!(
        after.body_bytes - before.body_bytes,
        content.len() as u64 - on_disk,
        "the rerun fetched bytes already on disk"
    );
    assert_eq!(after.requests - before.requests, 4, "one request per range");
    assert_eq!(after.range_requests - before.range_requests, 4);
}

/// With one connection for two large files, the one left waiting asks its size with HEAD
/// meanwhile and, once the connection frees, starts with its ranges: no opening GET.
#[test]
fn a_large_file_left_waiting_is_sized_by_head_and_starts_with_ranges() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut entries = Vec::new();
    let mut contents = Vec::new();
    for name in ["first", "second"] {
        let content = unique(name, 12 * MIB);
        server.route(
            &format!("/{name}"),
            Route::ok(content.clone()).rate_cap(8 * MIB),
        );
        entries.push(flat_entry(
            name,
            &content,
            vec![server.url(&format!("/{name}"))],
        ));
        contents.push(content);
    }
    let manifest = write_manifest(dir.path(), entries.clone());
    let run = fetch(
        dir.path(),
        &manifest,
        &cache,
        // No retry on a loaded machine: each would add a request to the counts below.
        &[
            "--max-connections",
            "1",
            "--segments",
            "4",
            "--stall-timeout",
            "60",
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (entry, content) in entries.iter().zip(&contents) {
        assert_published(&cache, entry, content);
    }
    let stats = [server.stats("/first"), server.stats("/second")];
    let (sized, opened): (Vec<_>, Vec<_>) = stats.iter().partition(|s| s.head_requests > 0);
    assert_eq!((sized.len(), opened.len()), (1, 1), "{stats:?}");
    assert_eq!(sized[0].head_requests, 1, "{stats:?}");
    assert_eq!(sized[0].range_requests, 4, "all ranges, no GET: {stats:?}");
    assert_eq!(sized[0].requests, 5, "{stats:?}");
    assert_eq!(
        opened[0].requests,
        opened[0].range_requests + 1,
        "{stats:?}"
    );
    // (The server may still be sending the rest of a closed opening GET meanwhile.)
    assert_eq!(run.report["hosts"][0]["peakConnections"], 1);
}
