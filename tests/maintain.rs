//! Keeping a cache current over a thin link, end to end with the real binary: `diff`,
//! `stats`, `verify` (and `--repair`), `export`/`import`, `ingest`. Caches are made by
//! `ingest` from files on disk (or by `fetch` from a real HTTP server on 127.0.0.1), and the
//! round trip ends with the real Nix realising a derivation from the imported cache alone.

mod support;

use serde_json::Value;
use srcgrab_formats::hash::{Hash, HashAlgo};
use srcgrab_manifest::{
    Entry, HashMode, Kind, Manifest, Provenance, StorePathName, MANIFEST_VERSION,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use support::{Route, TestServer};

fn srcgrab(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run srcgrab")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Content no earlier run put in the Nix store: a label and letters seeded by the clock,
/// the pid and a counter.
fn unique(label: &str, size: usize) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut state = (nanos ^ ((std::process::id() as u64) << 32))
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) << 20)
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

fn digest(algo: HashAlgo, bytes: &[u8]) -> Hash {
    Hash {
        algo,
        bytes: algo.digest(bytes),
    }
}

fn entry(name: &str, mode: HashMode, hash: &Hash) -> Entry {
    Entry {
        urls: vec![format!("https://example.org/{name}")],
        drv_paths: [(
            srcgrab_fetcher::builder::host_system(),
            format!("/nix/store/00000000000000000000000000000000-{name}.drv")
                .parse()
                .unwrap(),
        )]
        .into(),
        systems: vec!["x86_64-linux".into()],
        attrs: vec![name.into()],
        attr_count: 1,
        ..Entry::new(&StorePathName::new(name).unwrap(), mode, hash, Kind::Url)
    }
}

fn flat(name: &str, content: &[u8]) -> Entry {
    entry(name, HashMode::Flat, &digest(HashAlgo::Sha256, content))
}

fn write_manifest(path: &Path, entries: Vec<Entry>) -> PathBuf {
    let mut m = Manifest {
        version: MANIFEST_VERSION,
        provenance: Provenance {
            systems: vec!["aarch64-linux".into(), "x86_64-linux".into()],
            nix_version: "nix-instantiate (Nix) 2.8.0".into(),
            ..Provenance::default()
        },
        failures: vec![],
        entries,
        build: Default::default(),
    };
    m.normalize();
    std::fs::write(path, m.to_json()).unwrap();
    path.to_path_buf()
}

fn hash_part(e: &Entry) -> String {
    e.store_path.hash_part().to_string()
}

fn narinfo_url(cache: &Path, e: &Entry) -> PathBuf {
    let text = std::fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(e)))).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("narinfo has a URL");
    cache.join(url)
}

fn nix(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nix");
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Three files on disk, the manifest of their entries, and a cache `ingest` made of them.
struct IngestedCache {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    cache: PathBuf,
    entries: Vec<Entry>,
    contents: Vec<Vec<u8>>,
}

/// `srcgrab ingest FILES --manifest M --cache C --compression X`, which must succeed.
fn ingest_ok(files: &Path, manifest: &Path, cache: &Path, compression: &str) {
    let o = srcgrab(&[
        &"ingest",
        &files,
        &"--manifest",
        &manifest,
        &"--cache",
        &cache,
        &"--compression",
        &compression,
    ]);
    assert_code(&o, 0);
}

fn ingested_cache(compression: &str) -> IngestedCache {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let contents: Vec<Vec<u8>> = (0..3)
        .map(|i| unique(&format!("item{i}"), 50_000))
        .collect();
    let names = ["one-1.0.tar.gz", "two-2.0.tar.xz", "three-3.0.zip"];
    let mut entries = Vec::new();
    for (name, content) in names.iter().zip(&contents) {
        std::fs::write(files.join(name), content).unwrap();
        entries.push(flat(name, content));
    }
    let manifest = write_manifest(&dir.path().join("m.json"), entries.clone());
    let cache = dir.path().join("cache");
    ingest_ok(&files, &manifest, &cache, compression);
    IngestedCache {
        dir,
        manifest,
        cache,
        entries,
        contents,
    }
}

fn verify(cache: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"verify", &"--cache", &cache];
    args.extend_from_slice(extra);
    srcgrab(&args)
}

#[test]
fn diff_reads_a_new_version_as_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let mut moved = flat("zlib-1.3.tar.gz", b"zlib");
    let old = write_manifest(
        &dir.path().join("old.json"),
        vec![
            flat("openssl-3.0.13.tar.gz", b"old ssl"),
            moved.clone(),
            flat("gone-1.0.tar.gz", b"gone"),
        ],
    );
    moved.systems.insert(0, "aarch64-linux".into());
    let new = write_manifest(
        &dir.path().join("new.json"),
        vec![
            flat("openssl-3.0.14.tar.gz", b"new ssl"),
            moved,
            flat("fresh-0.1.tar.gz", b"fresh"),
        ],
    );
    let o = srcgrab(&[&"diff", &old, &new, &"--format", &"json"]);
    assert_code(&o, 0);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let updated = report["updated"].as_array().unwrap();
    assert_eq!(updated.len(), 1, "{report}");
    assert_eq!(updated[0]["package"], "openssl");
    assert_eq!(updated[0]["oldVersion"], "3.0.13");
    assert_eq!(updated[0]["newVersion"], "3.0.14");
    assert_eq!(report["added"][0]["name"], "fresh-0.1.tar.gz");
    assert_eq!(report["removed"][0]["name"], "gone-1.0.tar.gz");
    assert_eq!(report["metadataChanged"][0]["fields"][0], "systems");
    assert_eq!(
        report["summary"]["bySystem"]["aarch64-linux"]["metadataChanged"]["count"],
        1
    );

    let o = srcgrab(&[
        &"diff",
        &old,
        &new,
        &"--format",
        &"markdown",
        &"--fail-on-change",
    ]);
    assert_code(&o, 1);
    let markdown = stdout(&o);
    assert!(markdown.contains("| updated | 1 |"), "{markdown}");
    assert!(
        markdown.contains("<details><summary>Updated (1)</summary>"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| openssl | 3.0.13 → 3.0.14 |"),
        "{markdown}"
    );
    let again = srcgrab(&[&"diff", &old, &new, &"--format", &"markdown"]);
    assert_eq!(stdout(&again), markdown, "output is deterministic");

    assert_code(&srcgrab(&[&"diff", &new, &new, &"--fail-on-change"]), 0);
}

#[test]
fn malformed_or_wrong_version_manifests_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_manifest(
        &dir.path().join("good.json"),
        vec![flat("a-1.tar.gz", b"a")],
    );
    let text = std::fs::read_to_string(&good).unwrap();
    let cases = [
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "truncated.json",
        ),
        (
            "float.json",
            text.replace(
                &format!("\"version\": {MANIFEST_VERSION}"),
                "\"version\": 1.0",
            ),
            "\"version\" must be a whole number, not 1.0",
        ),
        (
            "v7.json",
            text.replace(
                &format!("\"version\": {MANIFEST_VERSION}"),
                "\"version\": 7",
            ),
            "version 7 is not supported",
        ),
        (
            "badpath.json",
            text.replace("-a-1.tar.gz\"", "-b-1.tar.gz\""),
            "differs from the store path",
        ),
        (
            // Control characters from the input are shown escaped, on the one line.
            "control.json",
            text.replace("-a-1.tar.gz\"", "-a\\n1\\u0000.tar.gz\""),
            "'a\\n1\\0.tar.gz' has a character Nix does not allow",
        ),
    ];
    for (name, contents, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        for args in [
            vec![&"diff" as &dyn AsRef<std::ffi::OsStr>, &good, &path],
            vec![&"stats", &path],
            vec![&"verify", &"--cache", &dir.path(), &"--manifest", &path],
        ] {
            let o = srcgrab(&args);
            assert_code(&o, 2);
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            // Said once: the cause is not repeated after the message that holds it.
            if let Some((_, cause)) = err.split_once("not a srcgrab manifest: ") {
                let start: String = cause.chars().take(20).collect();
                assert_eq!(err.matches(&start).count(), 1, "{err}");
            }
            assert!(err.contains(expected) && err.contains(name), "{err}");
        }
    }
    let o = srcgrab(&[&"diff", &good, &dir.path().join("absent.json")]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("absent.json"), "{}", stderr(&o));
}

#[test]
fn ingest_adds_matching_files_once_and_reports_duplicates_and_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(disk.join("deep/er")).unwrap();
    let tarball = unique("tarball", 20_000);
    let sha512_file = unique("sha512", 10_000);
    let tool = unique("#!/bin/sh\n", 5_000);
    std::fs::write(disk.join("hello-2.12.tar.gz"), &tarball).unwrap();
    std::fs::write(disk.join("deep/er/renamed-copy"), &tarball).unwrap();
    std::fs::write(disk.join("deep/data.bin"), &sha512_file).unwrap();
    std::fs::write(disk.join("tool"), &tool).unwrap();
    std::fs::write(disk.join("notes.txt"), unique("notes", 100)).unwrap();
    // A release tarball (a url-unpack entry: matched by the NAR hash of its unpacked tree)
    // and another archive that unpacks to something nobody asked for.
    let tree = dir.path().join("proj-1.0");
    std::fs::create_dir_all(tree.join("src")).unwrap();
    std::fs::write(tree.join("README"), unique("readme", 3_000)).unwrap();
    std::fs::write(tree.join("src/main.c"), unique("int main", 3_000)).unwrap();
    let tar = |archive: PathBuf| {
        let status = Command::new("tar")
            .arg("czf")
            .arg(archive)
            .arg("-C")
            .arg(dir.path())
            .arg("proj-1.0")
            .status()
            .unwrap();
        assert!(status.success());
    };
    tar(disk.join("proj-1.0.tar.gz"));
    let tree_hash = Hash::parse(
        &nix("nix-hash", &["--type", "sha256", tree.to_str().unwrap()]),
        Some(HashAlgo::Sha256),
    )
    .unwrap();
    std::fs::write(tree.join("README"), b"changed").unwrap();
    tar(disk.join("deep/other-2.0.tar.gz"));
    let mut proj = entry("source", HashMode::Recursive, &tree_hash);
    proj.kind = Kind::UrlUnpack;
    proj.unpack = Some(srcgrab_manifest::Unpack {
        strip_root: true,
        extension: None,
    });
    proj.urls = vec!["https://github.com/o/proj/archive/v1.0.tar.gz".into()];

    // The recursive hash of an executable file, as Nix computes it.
    let tool_hash = support::executable_nix_hash(&dir.path().join("tool-exec"), &tool);
    let mut tool_entry = entry("tool", HashMode::Recursive, &tool_hash);
    tool_entry.executable = true;
    let hello = flat("hello-2.12.tar.gz", &tarball);
    let sha512 = entry(
        "data.bin",
        HashMode::Flat,
        &digest(HashAlgo::Sha512, &sha512_file),
    );
    let never = flat("never-1.0.tar.gz", b"not on the disk");
    // Real Nix agrees on the store path of a flat file.
    let added = nix(
        "nix-store",
        &[
            "--add-fixed",
            "sha256",
            disk.join("hello-2.12.tar.gz").to_str().unwrap(),
        ],
    );
    assert_eq!(added, hello.store_path.to_path_string());
    let manifest = write_manifest(
        &dir.path().join("m.json"),
        vec![
            hello.clone(),
            sha512.clone(),
            tool_entry.clone(),
            never.clone(),
            proj.clone(),
        ],
    );
    let cache = dir.path().join("cache");
    let ingest = || {
        srcgrab(&[
            &"ingest",
            &disk,
            &"--manifest",
            &manifest,
            &"--cache",
            &cache,
        ])
    };
    let o = ingest();
    assert_code(&o, 0);
    let out = stdout(&o);
    for e in [&hello, &sha512, &tool_entry, &proj] {
        assert!(out.contains(&format!("-> {}", e.store_path)), "{out}");
    }
    assert!(
        out.contains(&format!(
            "unmatched: {}",
            disk.join("deep/other-2.0.tar.gz").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "duplicate: {}",
            disk.join("hello-2.12.tar.gz").display()
        )) || out.contains(&format!(
            "duplicate: {}",
            disk.join("deep/er/renamed-copy").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("unmatched: {}", disk.join("notes.txt").display())),
        "{out}"
    );
    assert!(stderr(&o).contains("7 files"), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("4 matched (4 entries added, 0 already present), 1 duplicates, 2 unmatched"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(
            cache
                .join("sha512")
                .join(digest(HashAlgo::Sha512, &sha512_file).to_hex())
        )
        .unwrap(),
        sha512_file
    );

    // What ingest added passes a full verify; only the entry nobody brought is missing.
    let o = verify(&cache, &[&"--manifest", &manifest]);
    assert_code(&o, 1);
    assert_eq!(stdout(&o).trim(), format!("missing: {}", never.store_path));

    // Again: nothing new.
    let o = ingest();
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("(0 entries added, 4 already present)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verify_finds_bit_flips_truncations_missing_items_and_strays() {
    let c = ingested_cache("none");
    assert_code(&verify(&c.cache, &[&"--manifest", &c.manifest]), 0);

    // A flipped bit inside the NAR of the first entry.
    let nar = narinfo_url(&c.cache, &c.entries[0]);
    let mut bytes = std::fs::read(&nar).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&nar, bytes).unwrap();
    // A truncated mirror file of the second.
    let mirror = c.cache.join("sha256").join(c.entries[1].hash.hash.to_hex());
    let len = std::fs::metadata(&mirror).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mirror)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    // The third's narinfo is gone, and a stray NAR appears.
    std::fs::remove_file(
        c.cache
            .join(format!("{}.narinfo", hash_part(&c.entries[2]))),
    )
    .unwrap();
    std::fs::write(c.cache.join("nar/stray.nar"), b"stray").unwrap();

    let o = verify(&c.cache, &[&"--manifest", &c.manifest]);
    assert_code(&o, 1);
    let out = stdout(&o);
    let corrupt: Vec<&str> = out.lines().filter(|l| l.starts_with("corrupt: ")).collect();
    assert_eq!(corrupt.len(), 2, "{out}");
    assert!(
        corrupt.iter().any(|l| l.contains(&format!(
            "{}.narinfo ({})",
            hash_part(&c.entries[0]),
            c.entries[0].store_path
        ))),
        "{out}"
    );
    assert!(
        corrupt.iter().any(
            |l| l.contains(&format!("sha256/{}", c.entries[1].hash.hash.to_hex()))
                && l.contains("hash mismatch")
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("missing: {}", c.entries[2].store_path)),
        "{out}"
    );
    assert!(out.contains("unreferenced: nar/stray.nar"), "{out}");
    // The third entry's NAR lost its narinfo, so it is unreferenced too.
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("unreferenced: "))
            .count(),
        2,
        "{out}"
    );
}

#[test]
fn quick_verify_trusts_only_files_whose_blake3_is_unchanged() {
    let c = ingested_cache("zstd");
    let o = verify(&c.cache, &[]);
    assert_code(&o, 0);
    assert!(c.cache.join(".srcgrab/blake3-index").is_file());
    let o = verify(&c.cache, &[&"--quick"]);
    assert_code(&o, 0);
    // 3 narinfos (with their NARs) and 3 mirror files, all accepted by the index.
    assert!(
        stderr(&o).contains("6 accepted by the blake3 index"),
        "{}",
        stderr(&o)
    );

    // Bit rot: same size, same mtime, different bytes.
    let nar = narinfo_url(&c.cache, &c.entries[1]);
    let mtime = std::fs::metadata(&nar).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&nar).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::fs::write(&nar, bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&nar)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let o = verify(&c.cache, &[&"--quick"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("5 accepted by the blake3 index"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains(&c.entries[1].store_path.to_path_string()),
        "{}",
        stdout(&o)
    );
}

#[test]
fn repair_refetches_corrupt_and_missing_entries() {
    let c = ingested_cache("zstd");
    let server = TestServer::start();
    let mut entries = c.entries.clone();
    for (e, content) in entries.iter_mut().zip(&c.contents) {
        let path = format!("/{}", e.name);
        server.route(&path, Route::ok(content.clone()));
        e.urls = vec![server.url(&path)];
    }
    let manifest = write_manifest(&c.dir.path().join("served.json"), entries.clone());
    let nar = narinfo_url(&c.cache, &entries[0]);
    let len = std::fs::metadata(&nar).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&nar)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mirror = c.cache.join("sha256").join(entries[1].hash.hash.to_hex());
    let mut bytes = std::fs::read(&mirror).unwrap();
    bytes[100] ^= 4;
    std::fs::write(&mirror, bytes).unwrap();
    std::fs::remove_file(c.cache.join(format!("{}.narinfo", hash_part(&entries[2])))).unwrap();

    let o = verify(
        &c.cache,
        &[
            &"--manifest",
            &manifest,
            &"--repair",
            &"--",
            &"--no-substituters",
        ],
    );
    assert_code(&o, 0);
    for e in &entries[..2] {
        assert!(
            server.requests(&format!("/{}", e.name)) >= 1,
            "{} refetched",
            e.name
        );
    }
    assert_code(&verify(&c.cache, &[&"--manifest", &manifest]), 0);
    assert_eq!(std::fs::read(&mirror).unwrap(), c.contents[1]);
    server.stop();
}

/// Two entries with the same content share one NAR file: a repair of one's damaged narinfo
/// leaves the other whole.
#[test]
fn repair_keeps_a_nar_file_that_a_good_narinfo_shares() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let content = unique("shared", 20_000);
    std::fs::write(files.join("same.tar.gz"), &content).unwrap();
    let entries = vec![
        flat("same-1.tar.gz", &content),
        flat("same-2.tar.gz", &content),
    ];
    let manifest = write_manifest(&dir.path().join("m.json"), entries.clone());
    let cache = dir.path().join("cache");
    ingest_ok(&files, &manifest, &cache, "zstd");
    let shared = narinfo_url(&cache, &entries[0]);
    assert_eq!(
        shared,
        narinfo_url(&cache, &entries[1]),
        "one NAR file for both"
    );
    let damaged = cache.join(format!("{}.narinfo", hash_part(&entries[0])));
    let text = std::fs::read_to_string(&damaged).unwrap();
    std::fs::write(&damaged, text.replace("NarSize: ", "NarSize: 1")).unwrap();

    let o = verify_fails_then_repair_offline(&cache, &manifest);
    assert!(!damaged.exists(), "the damaged narinfo is removed");
    assert!(
        shared.exists(),
        "the NAR file the good narinfo names is kept: {}",
        stdout(&o)
    );
    let good = verify(&cache, &[]);
    assert!(
        !stdout(&good).contains(&hash_part(&entries[1])),
        "{}",
        stdout(&good)
    );
}

/// `verify` of `cache` against `manifest` finds something wrong (exit 1); then `--repair`
/// with a fetch that may not use substituters. Returns the repair's output.
fn verify_fails_then_repair_offline(cache: &Path, manifest: &Path) -> Output {
    assert_code(&verify(cache, &[&"--manifest", &manifest]), 1);
    verify(
        cache,
        &[
            &"--manifest",
            &manifest,
            &"--repair",
            &"--",
            &"--no-substituters",
        ],
    )
}

/// A cache in `dir` made by ingesting `contents` as flat entries `file-<i>.tar.gz`
/// (uncompressed): the entries, the manifest and the cache.
fn ingested_flat_files(dir: &Path, contents: &[Vec<u8>]) -> (Vec<Entry>, PathBuf, PathBuf) {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let entries: Vec<Entry> = contents
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let name = format!("file-{i}.tar.gz");
            std::fs::write(files.join(&name), content).unwrap();
            flat(&name, content)
        })
        .collect();
    let manifest = write_manifest(&dir.join("m.json"), entries.clone());
    let cache = dir.join("cache");
    ingest_ok(&files, &manifest, &cache, "none");
    (entries, manifest, cache)
}

/// A damaged narinfo whose `URL:` names another file of the cache (here the mirror file of
/// a good entry): repair removes the narinfo, never the file it names, which is no NAR.
#[test]
fn repair_removes_only_nar_files_whatever_a_narinfo_names() {
    let dir = tempfile::tempdir().unwrap();
    let contents = [unique("damaged", 20_000), unique("good", 20_000)];
    let (entries, manifest, cache) = ingested_flat_files(dir.path(), &contents);
    let good_mirror_file = format!("sha256/{}", entries[1].hash.hash.to_hex());
    assert!(cache.join(&good_mirror_file).exists());
    let damaged = cache.join(format!("{}.narinfo", hash_part(&entries[0])));
    let text = std::fs::read_to_string(&damaged).unwrap();
    let url_line = text.lines().find(|l| l.starts_with("URL: ")).unwrap();
    let pointing_elsewhere = text.replace(url_line, &format!("URL: {good_mirror_file}"));
    std::fs::write(&damaged, pointing_elsewhere).unwrap();

    verify_fails_then_repair_offline(&cache, &manifest);
    assert!(!damaged.exists(), "the damaged narinfo is removed");
    assert_eq!(
        std::fs::read(cache.join(&good_mirror_file)).unwrap(),
        contents[1],
        "the mirror file it named is no NAR file and stays"
    );
}

/// `stats --cache` reads the cache's narinfos only as small regular files: one that is a
/// FIFO (which would block a plain read for ever) just has no size, the others do.
#[test]
fn stats_of_a_cache_with_a_fifo_narinfo_finishes_and_sizes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let contents = [unique("fifo", 20_000), unique("sized", 30_000)];
    let (entries, manifest, cache) = ingested_flat_files(dir.path(), &contents);
    let narinfo = cache.join(format!("{}.narinfo", hash_part(&entries[0])));
    std::fs::remove_file(&narinfo).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&narinfo)
        .status()
        .unwrap()
        .success());

    let mut child = Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .arg("stats")
        .arg(&manifest)
        .arg("--cache")
        .arg(&cache)
        .arg("--json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("stats blocked on the FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0);
    let stats: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let url = &stats["byKind"]["url"];
    assert_eq!(url["unknownSizes"], 1, "{stats}");
    assert_eq!(url["entries"], 2, "{stats}");
    assert!(url["fileBytes"].as_u64().unwrap() > 30_000, "{stats}");
}

/// A tiny FOD whose builder cannot build: only a substituter can realise it.
fn instantiate_fod(dir: &Path, name: &str, content: &[u8]) -> String {
    let expr = dir.join(format!("{name}.nix"));
    std::fs::write(
        &expr,
        format!(
            r#"derivation {{
  name = "{name}";
  system = builtins.currentSystem;
  builder = "/bin/false";
  outputHashMode = "flat";
  outputHashAlgo = "sha256";
  outputHash = "{}";
}}"#,
            digest(HashAlgo::Sha256, content).to_hex()
        ),
    )
    .unwrap();
    nix("nix-instantiate", &[expr.to_str().unwrap()])
}

#[test]
fn export_import_round_trip_ends_in_a_cache_nix_realises_from_offline() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let old_content = unique("old", 30_000);
    let new_content = unique("new", 40_000);
    std::fs::write(disk.join("lib-1.0.tar.gz"), &old_content).unwrap();
    std::fs::write(disk.join("lib-1.1.tar.gz"), &new_content).unwrap();
    let mut old_entry = flat("lib-1.0.tar.gz", &old_content);
    let mut new_entry = flat("lib-1.1.tar.gz", &new_content);
    old_entry.drv_paths = [(
        srcgrab_fetcher::builder::host_system(),
        instantiate_fod(dir.path(), "lib-1.0.tar.gz", &old_content)
            .parse()
            .unwrap(),
    )]
    .into();
    new_entry.drv_paths = [(
        srcgrab_fetcher::builder::host_system(),
        instantiate_fod(dir.path(), "lib-1.1.tar.gz", &new_content)
            .parse()
            .unwrap(),
    )]
    .into();
    for e in [&old_entry, &new_entry] {
        assert_eq!(
            nix(
                "nix-store",
                &[
                    "--query",
                    "--outputs",
                    &e.drv_path_for(&srcgrab_fetcher::builder::host_system())
                        .unwrap()
                        .to_string()
                ]
            ),
            e.store_path.to_path_string()
        );
        let _ = nix("nix-store", &["--delete", &e.store_path.to_path_string()]);
    }
    let v1 = write_manifest(&dir.path().join("v1.json"), vec![old_entry.clone()]);
    let v2 = write_manifest(
        &dir.path().join("v2.json"),
        vec![old_entry.clone(), new_entry.clone()],
    );
    let online = dir.path().join("online");
    assert_code(
        &srcgrab(&[
            &"ingest",
            &disk,
            &"--manifest",
            &v2,
            &"--cache",
            &online,
            &"--compression",
            &"none",
        ]),
        0,
    );

    // First trip: everything of v1, as a directory. Second: only what v2 adds, as a tar on a pipe.
    let full = dir.path().join("full-bundle");
    assert_code(
        &srcgrab(&[
            &"export",
            &"--manifest",
            &v1,
            &"--cache",
            &online,
            &"--to",
            &full,
        ]),
        0,
    );
    let offline = dir.path().join("offline");
    let o = srcgrab(&[&"import", &full, &"--cache", &offline]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!("imported: {}", old_entry.store_path)
    );

    let delta = Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .args(["export", "--manifest"])
        .arg(&v2)
        .arg("--since")
        .arg(&v1)
        .arg("--cache")
        .arg(&online)
        .args(["--to", "-"])
        .output()
        .unwrap();
    assert_code(&delta, 0);
    assert!(
        stderr(&delta).contains("exported 1 of 1 new entries"),
        "{}",
        stderr(&delta)
    );
    let import = |bytes: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_srcgrab"))
            .args(["import", "-", "--cache"])
            .arg(&offline)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
        child.wait_with_output().unwrap()
    };
    // A tampered copy of the stream is refused, and leaves nothing behind.
    let mut tampered = delta.stdout.clone();
    let at = tampered
        .windows(20)
        .position(|w| w == &new_content[1000..1020])
        .expect("the NAR is stored uncompressed enough to find")
        + 5;
    tampered[at] ^= 1;
    let o = import(&tampered);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains(&format!("failed: {}", new_entry.store_path)),
        "{}",
        stdout(&o)
    );
    assert!(!offline
        .join(format!("{}.narinfo", hash_part(&new_entry)))
        .exists());
    // So is a stream cut in the middle of the NAR (a link that dropped): exit 2, nothing
    // half-written visible, no temp file left.
    let o = import(&delta.stdout[..at]);
    assert_code(&o, 2);
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(!offline
        .join(format!("{}.narinfo", hash_part(&new_entry)))
        .exists());
    assert_eq!(std::fs::read_dir(offline.join(".tmp")).unwrap().count(), 0);

    let o = import(&delta.stdout);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!("imported: {}", new_entry.store_path)
    );
    let o = import(&delta.stdout);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("0 imported, 2 already present"),
        "{}",
        stderr(&o)
    );
    assert_code(&verify(&offline, &[&"--manifest", &v2]), 0);

    let substituters = format!("file://{}", offline.display());
    for (e, content) in [(&old_entry, &old_content), (&new_entry, &new_content)] {
        let out = nix(
            "nix-store",
            &[
                "--realise",
                &e.drv_path_for(&srcgrab_fetcher::builder::host_system())
                    .unwrap()
                    .to_string(),
                "--option",
                "substituters",
                &substituters,
            ],
        );
        assert_eq!(out, e.store_path.to_path_string());
        assert_eq!(&std::fs::read(&out).unwrap(), content);
        let _ = nix("nix-store", &["--delete", &out]);
    }
}

#[test]
fn stats_counts_sizes_from_the_cache_and_what_systems_share() {
    let c = ingested_cache("none");
    let mut entries = c.entries.clone();
    entries[0].systems = vec!["aarch64-linux".into(), "x86_64-linux".into()];
    let manifest = write_manifest(&c.dir.path().join("stats.json"), entries);
    let o = srcgrab(&[&"stats", &manifest, &"--cache", &c.cache, &"--json"]);
    assert_code(&o, 0);
    let stats: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["total"]["entries"], 3);
    assert_eq!(stats["total"]["unknownSizes"], 0);
    // Uncompressed NARs of 50,000-byte files: the content plus the NAR framing.
    let nar_bytes = stats["total"]["narBytes"].as_u64().unwrap();
    assert!(nar_bytes > 150_000 && nar_bytes < 150_500, "{stats}");
    assert_eq!(stats["shared"]["allSystems"]["entries"], 1);
    assert_eq!(stats["shared"]["onlyOn"]["x86_64-linux"]["entries"], 2);
    assert_eq!(stats["bySystem"]["x86_64-linux"]["entries"], 3);
    assert_eq!(stats["largest"].as_array().unwrap().len(), 3);
}

/// `scripts/manifest-diff` (what the CI workflow runs) on two revisions of a tiny package
/// set: hello updated, zlib kept, oldtool removed, newlib added.
#[test]
fn manifest_diff_script_enumerates_two_revisions_and_prints_the_markdown_diff() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(root.join("scripts/manifest-diff"))
        .arg(root.join("tests/fixtures/pkgs-v1"))
        .arg(root.join("tests/fixtures/pkgs-v2"))
        .env("SRCGRAB", env!("CARGO_BIN_EXE_srcgrab"))
        .env("OUT_DIR", out.path())
        .output()
        .unwrap();
    assert_code(&o, 0);
    let markdown = stdout(&o);
    assert_eq!(
        std::fs::read_to_string(out.path().join("diff.md")).unwrap(),
        markdown
    );
    for row in [
        "| hello | 2.12 → 2.13 | url |",
        "| newlib-1.0.tar.gz | url |",
        "| oldtool-0.9.tar.gz | url |",
    ] {
        assert!(markdown.contains(row), "{row} in:\n{markdown}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("diff.json")).unwrap())
            .unwrap();
    assert_eq!(report["updated"].as_array().unwrap().len(), 1);
    assert_eq!(report["added"].as_array().unwrap().len(), 1);
    assert_eq!(report["removed"].as_array().unwrap().len(), 1);
    // zlib and the bootstrap tools are the same store paths on both sides.
    let unchanged = report["unchanged"].as_u64().unwrap()
        + report["metadataChanged"].as_array().unwrap().len() as u64;
    assert_eq!(unchanged, 2, "{report}");
}

/// `stats --probe` sizes entries by HEAD requests through fetch's engine: rewrites applied,
/// a 500 retried, a 404 URL skipped for the next one; nothing downloaded.
#[test]
fn stats_probe_sizes_entries_with_head_requests_only() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let big = unique("big", 300_000);
    let small = unique("small", 1_000);
    server.route("/big.tar.gz", Route::ok(big.clone()).fail_first(1));
    server.route("/small.tar.gz", Route::ok(small.clone()));
    server.route("/gone.tar.gz", Route::status(404));
    let mut big_entry = flat("big-1.0.tar.gz", &big);
    big_entry.urls = vec!["http://upstream.invalid/big.tar.gz".into()];
    let mut small_entry = flat("small-1.0.tar.gz", &small);
    small_entry.urls = vec![server.url("/gone.tar.gz"), server.url("/small.tar.gz")];
    let mut git_entry = entry(
        "source",
        HashMode::Recursive,
        &digest(HashAlgo::Sha256, b"tree"),
    );
    git_entry.kind = Kind::Git;
    git_entry.urls = vec![];
    git_entry.git = Some(srcgrab_manifest::GitSource::plain(
        "http://upstream.invalid/repo.git",
        "0123456789abcdef0123456789abcdef01234567",
    ));
    let manifest = write_manifest(
        &dir.path().join("m.json"),
        vec![big_entry.clone(), small_entry.clone(), git_entry],
    );
    let rewrite = format!("http://upstream.invalid/={}/", server.base());
    let o = srcgrab(&[
        &"stats",
        &manifest,
        &"--probe",
        &"--json",
        &"--rewrite",
        &rewrite,
        &"--retries",
        &"2",
    ]);
    assert_code(&o, 0);
    let stats: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["total"]["entries"], 3);
    assert_eq!(stats["total"]["unknownSizes"], 1, "the git entry: {stats}");
    assert_eq!(
        stats["total"]["fileBytes"],
        (big.len() + small.len()) as u64
    );
    // The NAR sizes of single files, as `nix-store --dump` writes them.
    let nar = |content: &[u8]| {
        let file = dir.path().join("dump-me");
        std::fs::write(&file, content).unwrap();
        let dump = Command::new("nix-store")
            .arg("--dump")
            .arg(&file)
            .output()
            .unwrap();
        assert!(dump.status.success());
        dump.stdout.len() as u64
    };
    assert_eq!(stats["total"]["narBytes"], nar(&big) + nar(&small));
    assert_eq!(
        stats["largest"][0]["storePath"],
        big_entry.store_path.to_path_string()
    );
    assert_eq!(server.requests("/big.tar.gz"), 2, "retried after the 500");
    assert_eq!(server.requests("/gone.tar.gz"), 1);
    for path in ["/big.tar.gz", "/small.tar.gz"] {
        assert_eq!(server.stats(path).body_bytes, 0, "{path}: no body sent");
    }
    server.stop();
}

/// Sizes in `diff` come from a fetched cache's narinfos or from the fetch's own report, and
/// the two agree.
#[test]
fn diff_sizes_come_from_the_cache_or_the_fetch_report() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let old_content = unique("lib-1.0", 20_000);
    let new_content = unique("lib-1.1", 60_000);
    server.route("/lib-1.1.tar.gz", Route::ok(new_content.clone()));
    let old = flat("lib-1.0.tar.gz", &old_content);
    let mut new = flat("lib-1.1.tar.gz", &new_content);
    new.urls = vec![server.url("/lib-1.1.tar.gz")];
    let v1 = write_manifest(&dir.path().join("v1.json"), vec![old]);
    let v2 = write_manifest(&dir.path().join("v2.json"), vec![new.clone()]);
    let cache = dir.path().join("cache");
    let report = dir.path().join("report.json");
    let o = srcgrab(&[
        &"fetch",
        &v2,
        &"--cache",
        &cache,
        &"--no-substituters",
        &"--report",
        &report,
    ]);
    assert_code(&o, 0);
    let sizes = |source: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"diff", &v1, &v2, &"--format", &"json"];
        args.extend_from_slice(source);
        let o = srcgrab(&args);
        assert_code(&o, 0);
        let diff: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            diff["updated"][0]["new"]["storePath"],
            new.store_path.to_path_string()
        );
        (
            diff["updated"][0]["new"]["fileSize"].as_u64(),
            diff["summary"]["total"]["updated"]["bytes"].as_u64(),
        )
    };
    let from_cache = sizes(&[&"--cache", &cache]);
    let from_report = sizes(&[&"--report", &report]);
    assert!(from_cache.0.is_some_and(|s| s > 1_000), "{from_cache:?}");
    assert_eq!(from_cache, from_report);
    assert_eq!(sizes(&[]).0, None);
    server.stop();
}

/// A mirror-only cache (no narinfos) exports its flat files as such; import publishes them
/// into a full cache (narinfo, NAR and mirror), from a directory and from a tar file.
#[test]
fn a_mirror_only_cache_exports_its_files_and_import_makes_full_entries() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let content = unique("mirror-only", 10_000);
    server.route("/m-1.0.tar.gz", Route::ok(content.clone()));
    let mut e = flat("m-1.0.tar.gz", &content);
    e.urls = vec![server.url("/m-1.0.tar.gz")];
    let manifest = write_manifest(&dir.path().join("m.json"), vec![e.clone()]);
    let mirror = dir.path().join("mirror");
    let o = srcgrab(&[
        &"fetch",
        &manifest,
        &"--cache",
        &mirror,
        &"--no-substituters",
        &"--layout",
        &"mirror",
    ]);
    assert_code(&o, 0);
    server.stop();
    assert!(!mirror.join(format!("{}.narinfo", hash_part(&e))).exists());
    assert_code(&verify(&mirror, &[&"--manifest", &manifest]), 0);

    for to in ["bundle", "bundle.tar"] {
        let bundle = dir.path().join(to);
        let o = srcgrab(&[
            &"export",
            &"--manifest",
            &manifest,
            &"--cache",
            &mirror,
            &"--to",
            &bundle,
        ]);
        assert_code(&o, 0);
        let offline = dir.path().join(format!("offline-{to}"));
        let o = srcgrab(&[&"import", &bundle, &"--cache", &offline]);
        assert_code(&o, 0);
        assert_eq!(stdout(&o).trim(), format!("imported: {}", e.store_path));
        assert!(offline.join(format!("{}.narinfo", hash_part(&e))).is_file());
        assert_code(&verify(&offline, &[&"--manifest", &manifest]), 0);
    }
}

/// A narinfo whose URL points outside the cache is corrupt, and `--repair` deletes only
/// inside the cache.
#[test]
fn repair_never_deletes_outside_the_cache() {
    let c = ingested_cache("zstd");
    let victim = c.dir.path().join("victim.nar");
    std::fs::write(&victim, b"not the cache's").unwrap();
    let narinfo = c
        .cache
        .join(format!("{}.narinfo", hash_part(&c.entries[0])));
    let text = std::fs::read_to_string(&narinfo).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_string();
    std::fs::write(&narinfo, text.replace(&url, "../victim.nar")).unwrap();
    let o = verify(&c.cache, &[]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains(&format!("corrupt: {}.narinfo", hash_part(&c.entries[0]))),
        "{}",
        stdout(&o)
    );
    let o = verify(
        &c.cache,
        &[
            &"--manifest",
            &c.manifest,
            &"--repair",
            &"--",
            &"--no-substituters",
            &"--retries",
            &"0",
            &"--rewrite",
            &"https://example.org/=http://127.0.0.1:9/",
        ],
    );
    assert_code(&o, 1);
    assert_eq!(std::fs::read(&victim).unwrap(), b"not the cache's");
    assert!(!narinfo.exists(), "the corrupt narinfo is gone");
    assert!(
        stdout(&o).contains(&format!("missing: {}", c.entries[0].store_path)),
        "{}",
        stdout(&o)
    );
}

/// A planted narinfo whose `URL:` leaves the cache (an absolute path, or `..`) and names a
/// valid copy of the NAR: a reader that joined the URL to the cache root unchecked would
/// read that file, so verify would pass and fetch and import would take the entry as present.
/// Each must refuse the narinfo instead, and nothing outside the cache is touched.
#[test]
fn a_narinfo_pointing_outside_the_cache_is_refused_by_verify_repair_import_and_fetch() {
    let c = ingested_cache("zstd");
    let e = &c.entries[0];
    let narinfo_name = format!("{}.narinfo", hash_part(e));
    let original = std::fs::read_to_string(c.cache.join(&narinfo_name)).unwrap();
    let url = original
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_string();
    let outside = c.dir.path().join("outside.nar");
    std::fs::copy(c.cache.join(&url), &outside).unwrap();
    let outside_bytes = std::fs::read(&outside).unwrap();
    let outside_urls = [
        outside.to_str().unwrap().to_string(),
        "../outside.nar".to_string(),
    ];
    let plant = |cache: &Path, to: &str| {
        std::fs::write(cache.join(&narinfo_name), original.replace(&url, to)).unwrap();
        // The cache's own NAR is gone: only the file outside would make the entry whole.
        let _ = std::fs::remove_file(cache.join(&url));
    };

    for to in &outside_urls {
        plant(&c.cache, to);
        let o = verify(&c.cache, &[]);
        assert_code(&o, 1);
        assert!(
            stdout(&o).contains(&format!("corrupt: {narinfo_name}")),
            "{to}: {}",
            stdout(&o)
        );
    }

    let server = TestServer::start();
    let mut entries = c.entries.clone();
    for (entry, content) in entries.iter_mut().zip(&c.contents) {
        let path = format!("/{}", entry.name);
        server.route(&path, Route::ok(content.clone()));
        entry.urls = vec![server.url(&path)];
    }
    let manifest = write_manifest(&c.dir.path().join("served.json"), entries);
    let route = format!("/{}", e.name);
    for to in &outside_urls {
        plant(&c.cache, to);
        let before = server.requests(&route);
        let o = srcgrab(&[
            &"fetch",
            &manifest,
            &"--cache",
            &c.cache,
            &"--no-substituters",
        ]);
        assert_code(&o, 0);
        assert_eq!(server.requests(&route), before + 1, "{to}: fetched again");
        assert_code(&verify(&c.cache, &[&"--manifest", &manifest]), 0);
    }

    plant(&c.cache, &outside_urls[0]);
    let o = verify(
        &c.cache,
        &[
            &"--manifest",
            &manifest,
            &"--repair",
            &"--",
            &"--no-substituters",
        ],
    );
    assert_code(&o, 0);
    assert_code(&verify(&c.cache, &[&"--manifest", &manifest]), 0);
    server.stop();

    let bundle = c.dir.path().join("bundle");
    let o = srcgrab(&[
        &"export",
        &"--manifest",
        &manifest,
        &"--cache",
        &c.cache,
        &"--to",
        &bundle,
    ]);
    assert_code(&o, 0);
    let offline = c.dir.path().join("offline");
    assert_code(&srcgrab(&[&"import", &bundle, &"--cache", &offline]), 0);
    for to in &outside_urls {
        plant(&offline, to);
        let o = srcgrab(&[&"import", &bundle, &"--cache", &offline]);
        assert_code(&o, 0);
        assert!(
            stdout(&o).contains(&format!("imported: {}", e.store_path)),
            "{to}: {}",
            stdout(&o)
        );
        assert_code(&verify(&offline, &[&"--manifest", &manifest]), 0);
    }
    assert_eq!(std::fs::read(&outside).unwrap(), outside_bytes);
}

/// A bundle's narinfo (or marker) that is a symlink to /dev/zero or a huge file is refused by import
/// in bounded time and memory, and nothing is imported for it.
#[test]
fn a_bundle_narinfo_that_is_a_symlink_or_huge_is_refused_by_import() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let content = unique("bundled", 10_000);
    server.route("/b-1.0.tar.gz", Route::ok(content.clone()));
    let mut e = flat("b-1.0.tar.gz", &content);
    e.urls = vec![server.url("/b-1.0.tar.gz")];
    let manifest = write_manifest(&dir.path().join("m.json"), vec![e.clone()]);
    let cache = dir.path().join("cache");
    let o = srcgrab(&[
        &"fetch",
        &manifest,
        &"--cache",
        &cache,
        &"--no-substituters",
    ]);
    assert_code(&o, 0);
    server.stop();
    let bundle = dir.path().join("bundle");
    let o = srcgrab(&[
        &"export",
        &"--manifest",
        &manifest,
        &"--cache",
        &cache,
        &"--to",
        &bundle,
    ]);
    assert_code(&o, 0);
    let narinfo = bundle.join(format!("{}.narinfo", hash_part(&e)));
    assert!(narinfo.is_file());
    let huge = dir.path().join("huge.narinfo");
    std::fs::write(&huge, vec![b'x'; 2 << 20]).unwrap();
    for (target, why) in [(Path::new("/dev/zero"), "symlink"), (huge.as_path(), "")] {
        std::fs::remove_file(&narinfo).unwrap();
        if why == "symlink" {
            std::os::unix::fs::symlink(target, &narinfo).unwrap();
        } else {
            std::fs::copy(target, &narinfo).unwrap();
        }
        let offline = dir.path().join(format!("offline-{}", why.len()));
        let started = std::time::Instant::now();
        let o = srcgrab(&[&"import", &bundle, &"--cache", &offline]);
        assert_code(&o, 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let said = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
        assert!(
            said.contains(&e.store_path.to_path_string()) && said.contains(why),
            "{said}"
        );
        assert!(!offline.join(format!("{}.narinfo", hash_part(&e))).exists());
    }
    // The bundle's marker too: read as a small regular file, never followed to /dev/zero.
    let marker = bundle.join("srcgrab-bundle");
    std::fs::remove_file(&marker).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &marker).unwrap();
    let started = std::time::Instant::now();
    let o = srcgrab(&[
        &"import",
        &bundle,
        &"--cache",
        &dir.path().join("offline-marker"),
    ]);
    assert_code(&o, 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("srcgrab-bundle"), "{said}");
}
