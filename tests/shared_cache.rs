//! One cache, many processes, and a cache or upstream that is hostile: two `srcgrab fetch`
//! runs at once, then `verify` and Nix itself; narinfos and mirror files replaced by
//! symlinks, FIFOs, /dev/zero and huge files; wrong and missing mirror keys; an xz bomb from
//! a substituter; a hostile archive; a full disk and a read-only cache.

mod support;

use serde_json::Value;
use srcgrab_formats::hash::{Hash, HashAlgo};
use srcgrab_manifest::{Entry, HashMode, Kind};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::manifest_file::write_manifest;
use support::{Route, TestServer};

fn sha256(bytes: &[u8]) -> Hash {
    Hash {
        algo: HashAlgo::Sha256,
        bytes: HashAlgo::Sha256.digest(bytes),
    }
}

/// Bytes no earlier run has put in the Nix store: a label, the clock and the pid.
fn unique(label: &str, size: usize) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut bytes = format!("{label} {nanos} {} ", std::process::id()).into_bytes();
    let mut state = (nanos as u64) | 1;
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(b'a' + (state % 26) as u8);
    }
    bytes
}

fn flat_entry(name: &str, content: &[u8], urls: Vec<String>) -> Entry {
    with_origin(
        Entry::new(&name_of(name), HashMode::Flat, &sha256(content), Kind::Url),
        urls,
    )
}

/// `entry` with `urls` and as enumerate writes one: a derivation, a system, an attribute.
fn with_origin(entry: Entry, urls: Vec<String>) -> Entry {
    Entry {
        urls,
        drv_paths: [(
            srcgrab_fetcher::builder::host_system(),
            format!(
                "/nix/store/00000000000000000000000000000000-{}.drv",
                entry.name
            )
            .parse()
            .unwrap(),
        )]
        .into(),
        systems: vec!["x86_64-linux".into()],
        attrs: vec![entry.name.clone()],
        attr_count: 1,
        ..entry
    }
}

fn srcgrab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_srcgrab"))
}

fn fetch_command(manifest: &Path, cache: &Path, report: &Path) -> Command {
    let mut command = srcgrab();
    command
        .arg("fetch")
        .arg(manifest)
        .arg("--cache")
        .arg(cache)
        .arg("--report")
        .arg(report)
        .args([
            "--no-substituters",
            "--stall-timeout",
            "5",
            "--retries",
            "2",
        ]);
    command
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn verify(cache: &Path, manifest: &Path, extra: &[&str]) -> Output {
    srcgrab()
        .arg("verify")
        .arg("--cache")
        .arg(cache)
        .arg("--manifest")
        .arg(manifest)
        .args(extra)
        .output()
        .unwrap()
}

fn outcomes(report: &Path) -> Vec<String> {
    let report: Value = serde_json::from_str(&fs::read_to_string(report).unwrap()).unwrap();
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn name_of(name: &str) -> srcgrab_manifest::StorePathName {
    srcgrab_manifest::StorePathName::new(name).unwrap()
}

fn hash_part(entry: &Entry) -> String {
    entry.store_path.hash_part().to_string()
}

/// Two fetches of the same 100 entries into one cache at once, a few rounds: neither ever
/// fails an entry, `verify` finds the cache clean, a rerun finds all present, and Nix
/// realises every path from the cache alone.
#[test]
fn two_fetches_of_one_manifest_into_one_cache_never_corrupt_or_fail() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    const COUNT: usize = 100;
    let mut entries = Vec::new();
    for i in 0..COUNT {
        let content = unique(&format!("shared {i}"), 20_000 + 97 * i);
        // Served slowly enough that both runs are in the middle of the same entries.
        let path = format!("/sha256/{}", sha256(&content).to_hex());
        server.route(
            &path,
            Route::ok(content.clone()).slow(4096, Duration::from_millis(2)),
        );
        entries.push(flat_entry(
            &format!("shared-{i}.tar.gz"),
            &content,
            vec![server.url(&format!("/gone/{i}"))],
        ));
    }
    let manifest = write_manifest(dir.path(), entries.clone());
    for round in 0..3 {
        let cache = dir.path().join(format!("cache-{round}"));
        let children: Vec<_> = (0..2)
            .map(|run| {
                let report = dir.path().join(format!("report-{round}-{run}.json"));
                let child = fetch_command(&manifest, &cache, &report)
                    .args(["--hashed-mirror", &server.base()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (child, report)
            })
            .collect();
        for (child, report) in children {
            let output = child.wait_with_output().unwrap();
            assert_eq!(
                output.status.code(),
                Some(0),
                "round {round}: {}",
                text(&output)
            );
            let outcomes = outcomes(&report);
            assert_eq!(outcomes.len(), COUNT);
            assert!(
                outcomes.iter().all(|o| o == "fetched" || o == "present"),
                "round {round}: {outcomes:?}"
            );
        }
        let verified = verify(&cache, &manifest, &[]);
        assert_eq!(
            verified.status.code(),
            Some(0),
            "round {round}: {}",
            text(&verified)
        );
        let report = dir.path().join("rerun.json");
        let rerun = fetch_command(&manifest, &cache, &report).output().unwrap();
        assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
        assert!(outcomes(&report).iter().all(|o| o == "present"));
    }
    server.stop();
    realise_all_from(&dir.path().join("cache-2"), &entries, dir.path());
}

/// Instantiates one fixed-output derivation per entry and has Nix realise them all with
/// the cache as its only substituter.
fn realise_all_from(cache: &Path, entries: &[Entry], dir: &Path) {
    let attrs: String = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "  e{i} = derivation {{ name = \"{}\"; system = builtins.currentSystem; builder = \"/bin/false\"; outputHashMode = \"flat\"; outputHashAlgo = \"sha256\"; outputHash = \"{}\"; }};\n",
                e.name,
                e.hash.hash.to_hex()
            )
        })
        .collect();
    let expression = dir.join("all.nix");
    fs::write(&expression, format!("{{\n{attrs}}}\n")).unwrap();
    let instantiated = Command::new("nix-instantiate")
        .arg(&expression)
        .output()
        .unwrap();
    assert!(instantiated.status.success(), "{}", text(&instantiated));
    let drvs: Vec<String> = String::from_utf8(instantiated.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(drvs.len(), entries.len());
    let substituters = format!("file://{}", cache.display());
    let realised = Command::new("nix-store")
        .arg("--realise")
        .args(&drvs)
        .args(["--option", "substituters", &substituters])
        .output()
        .unwrap();
    assert!(realised.status.success(), "{}", text(&realised));
    let outputs = String::from_utf8(realised.stdout).unwrap();
    for entry in entries {
        assert!(
            outputs.contains(&entry.store_path.to_path_string()),
            "{} not realised",
            entry.store_path
        );
        let _ = Command::new("nix-store")
            .args(["--delete", &entry.store_path.to_path_string()])
            .output();
    }
}

/// A small published cache of three flat entries (one declared by sha1, so it has keys
/// that are links), with the server still up for repairs.
struct Planted {
    server: TestServer,
    dir: tempfile::TempDir,
    cache: PathBuf,
    manifest: PathBuf,
    entries: Vec<Entry>,
}

fn published_cache() -> Planted {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut entries = Vec::new();
    for i in 0..3 {
        let content = unique(&format!("planted {i}"), 5_000);
        server.route(&format!("/f{i}"), Route::ok(content.clone()));
        let mut entry = flat_entry(
            &format!("planted-{i}"),
            &content,
            vec![server.url(&format!("/f{i}"))],
        );
        if i == 2 {
            let sha1 = Hash {
                algo: HashAlgo::Sha1,
                bytes: HashAlgo::Sha1.digest(&content),
            };
            let sha1_entry = Entry::new(&name_of("planted-2"), HashMode::Flat, &sha1, Kind::Url);
            entry = with_origin(sha1_entry, entry.urls);
        }
        entries.push(entry);
    }
    let manifest = write_manifest(dir.path(), entries.clone());
    let report = dir.path().join("report.json");
    let run = fetch_command(&manifest, &cache, &report).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let clean = verify(&cache, &manifest, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    Planted {
        server,
        dir,
        cache,
        manifest,
        entries,
    }
}

/// Replaces `path` by a symlink to a copy of it outside the cache.
fn symlink_out(planted: &Planted, path: &Path) {
    let outside = planted
        .dir
        .path()
        .join(format!("outside-{}", outside_name(path)));
    fs::copy(path, &outside).unwrap();
    fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink(&outside, path).unwrap();
}

fn outside_name(path: &Path) -> String {
    path.file_name()
        .unwrap()
        .to_string_lossy()
        .replace('/', "_")
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// Runs verify within a time limit (a FIFO must not hang it), returning its output.
fn verify_in_time(planted: &Planted, extra: &[&str]) -> Output {
    let started = Instant::now();
    let output = verify(&planted.cache, &planted.manifest, extra);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "verify took too long"
    );
    output
}

/// Every blind spot the probe found: each is reported as corrupt (or missing), `--repair`
/// fixes it, and afterwards the cache is clean and holds only regular files where files
/// belong.
#[test]
fn verify_reports_and_repair_fixes_what_is_not_a_regular_file_or_a_right_key() {
    let planted = published_cache();
    let root = &planted.cache;
    let [a, b, c] = [0, 1, 2].map(|i| planted.entries[i].clone());
    // a: its narinfo is a symlink to a copy outside the cache.
    let narinfo_a = root.join(format!("{}.narinfo", hash_part(&a)));
    symlink_out(&planted, &narinfo_a);
    // b: its mirror file is a symlink to a copy outside the cache.
    let mirror_b = root.join("sha256").join(b.hash.hash.to_hex());
    symlink_out(&planted, &mirror_b);
    // c (sha1): its `sha1/<hex>` key links to a's mirror file, another hash.
    let sha1 = c.hash.hash.clone();
    let key_c = root.join("sha1").join(sha1.to_hex());
    let a_hex = a.hash.hash.to_hex();
    fs::remove_file(&key_c).unwrap();
    std::os::unix::fs::symlink(Path::new("../sha256").join(&a_hex), &key_c).unwrap();
    // c: its SRI key is gone (as `--repair` used to leave a dangling one).
    let sri_c = root.join(sha1.to_sri());
    fs::remove_file(&sri_c).unwrap();

    let found = verify_in_time(&planted, &[]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let out = String::from_utf8_lossy(&found.stdout).into_owned();
    for expected in [
        format!("corrupt: {}.narinfo", hash_part(&a)),
        format!("corrupt: sha256/{}", b.hash.hash.to_hex()),
        format!("corrupt: sha1/{}", sha1.to_hex()),
        format!("missing: {}", c.store_path),
    ] {
        assert!(out.contains(&expected), "{expected} not in:\n{out}");
    }

    let repaired = verify_in_time(&planted, &["--repair"]);
    assert_eq!(repaired.status.code(), Some(0), "{}", text(&repaired));
    let clean = verify_in_time(&planted, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    for path in [&narinfo_a, &mirror_b] {
        assert!(
            fs::symlink_metadata(path).unwrap().file_type().is_file(),
            "{}",
            path.display()
        );
    }
    assert_eq!(
        fs::read_link(&key_c).unwrap(),
        fs::read_link(root.join("sha1").join(sha1.to_nix32())).unwrap()
    );
    assert!(fs::read(&sri_c).is_ok(), "the SRI key is back");
    planted.server.stop();
}

/// A narinfo that is a FIFO, a symlink to /dev/zero, or 2 MiB, is refused in bounded time
/// and memory by verify (corrupt) and by fetch (absent, so published again).
#[test]
fn fifo_dev_zero_and_huge_narinfos_are_refused_quickly() {
    let planted = published_cache();
    let root = &planted.cache;
    let narinfo = |i: usize| root.join(format!("{}.narinfo", hash_part(&planted.entries[i])));
    fs::remove_file(narinfo(0)).unwrap();
    mkfifo(&narinfo(0));
    fs::remove_file(narinfo(1)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", narinfo(1)).unwrap();
    let mut huge = fs::read_to_string(narinfo(2)).unwrap();
    huge.push_str(&format!("X-Padding: {}\n", "x".repeat(2 << 20)));
    fs::write(narinfo(2), huge).unwrap();

    let found = verify_in_time(&planted, &[]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let out = String::from_utf8_lossy(&found.stdout).into_owned();
    for (i, why) in [(0, "a FIFO"), (1, "a symlink"), (2, "more than the")] {
        let line = out
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "corrupt: {}.narinfo",
                    hash_part(&planted.entries[i])
                ))
            })
            .unwrap_or_else(|| panic!("narinfo {i} not reported:\n{out}"));
        assert!(line.contains(why), "{line}");
    }

    let started = Instant::now();
    let report = planted.dir.path().join("refetch.json");
    let run = fetch_command(&planted.manifest, root, &report)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(
        outcomes(&report).iter().all(|o| o == "fetched"),
        "{:?}",
        outcomes(&report)
    );
    let clean = verify_in_time(&planted, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    planted.server.stop();
}

/// A cache whose `sha256/` is a symlink to a directory elsewhere is corrupt (not a cache
/// with 0 mirror files), and `--repair` puts a real directory back.
#[test]
fn a_symlinked_mirror_directory_is_corrupt_and_repaired() {
    let planted = published_cache();
    let root = &planted.cache;
    let elsewhere = planted.dir.path().join("elsewhere");
    fs::rename(root.join("sha256"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("sha256")).unwrap();
    let found = verify_in_time(&planted, &[]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let out = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        out.lines()
            .any(|l| l.starts_with("corrupt: sha256 ") && l.contains("not a directory")),
        "{out}"
    );
    let repaired = verify_in_time(&planted, &["--repair"]);
    assert_eq!(repaired.status.code(), Some(0), "{}", text(&repaired));
    assert!(fs::symlink_metadata(root.join("sha256")).unwrap().is_dir());
    let clean = verify_in_time(&planted, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    planted.server.stop();
}

/// Total bytes of the regular files under `dir`.
fn disk_use(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_use(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// A substituter serving a 64 KiB-ish `.nar.xz` that expands to a 128 MiB NAR while its
/// narinfo says NarSize 5000: refused at byte 5001, and the cache never holds more than a
/// few MiB while it happens, with or without recompression.
#[test]
fn a_decompression_bomb_from_a_substituter_is_refused_at_its_nar_size() {
    const BOMB: u64 = 128 << 20;
    const NAR_SIZE: u64 = 5000;
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nar = Vec::new();
    srcgrab_formats::nar::write_file_nar(&mut std::io::repeat(0).take(BOMB), BOMB, false, &mut nar)
        .unwrap();
    let mut xz = Command::new("xz")
        .args(["-0", "-T1", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = xz.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &nar));
    let bomb = xz.wait_with_output().unwrap().stdout;
    writer.join().unwrap().unwrap();
    assert!((bomb.len() as u64) < BOMB / 100, "{} bytes", bomb.len());

    let content = unique("bombed", 4000);
    let entry = flat_entry("bombed.tar", &content, vec![server.url("/gone")]);
    let declared = entry.hash.hash.clone();
    let narinfo = format!(
        "StorePath: {}\nURL: nar/bomb.nar.xz\nCompression: xz\nFileHash: {}\nFileSize: {}\nNarHash: {}\nNarSize: {NAR_SIZE}\nReferences: \nCA: {}\n",
        entry.store_path,
        sha256(&bomb).to_nix32_prefixed(),
        bomb.len(),
        sha256(b"what the NAR should have been").to_nix32_prefixed(),
        srcgrab_manifest::ContentAddress {
            mode: HashMode::Flat,
            hash: declared.clone(),
        },
    );
    server.route(
        "/up/nix-cache-info",
        Route::ok("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"),
    );
    server.route(
        &format!("/up/{}.narinfo", hash_part(&entry)),
        Route::ok(narinfo),
    );
    server.route("/up/nar/bomb.nar.xz", Route::ok(bomb.clone()));
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);
    for (round, extra) in [&[][..], &["--keep-upstream-compression"][..]]
        .iter()
        .enumerate()
    {
        let cache = dir.path().join(format!("cache-{round}"));
        let report = dir.path().join(format!("report-{round}.json"));
        let mut command = srcgrab();
        command
            .arg("fetch")
            .arg(&manifest)
            .arg("--cache")
            .arg(&cache)
            .arg("--report")
            .arg(&report)
            .args(["--substituter", &server.url("/up"), "--retries", "0"])
            .args(*extra);
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut most = 0;
        while child.try_wait().unwrap().is_none() {
            most = most.max(disk_use(&cache));
            std::thread::sleep(Duration::from_millis(2));
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let report: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
        let rejected = report["entries"][0]["rejected"][0]["reason"]
            .as_str()
            .unwrap_or("");
        assert!(
            rejected.contains("longer than its NarSize 5000"),
            "{report}"
        );
        assert!(
            most < 8 << 20,
            "the cache held {most} bytes while refusing the bomb"
        );
    }
    server.stop();
}

/// An archive with a member leaving the tree is refused as unsafe: a failure, not a job
/// for the builder (which would unpack the same bytes).
#[test]
fn a_hostile_archive_is_refused_not_left_to_a_builder() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("evil"), b"outside").unwrap();
    let archive = dir.path().join("evil.tar");
    let tar = Command::new("tar")
        .current_dir(&work)
        .args(["-P", "--transform", "s,^,../,", "-cf"])
        .arg(&archive)
        .arg("evil")
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar));
    server.route("/evil.tar", Route::ok(fs::read(&archive).unwrap()));
    let tree = Entry::new(
        &name_of("evil"),
        HashMode::Recursive,
        &sha256(b"any tree"),
        Kind::UrlUnpack,
    );
    let entry = Entry {
        unpack: Some(srcgrab_manifest::Unpack {
            strip_root: false,
            extension: None,
        }),
        ..with_origin(tree, vec![server.url("/evil.tar")])
    };
    let manifest = write_manifest(dir.path(), vec![entry.clone()]);
    let report_path = dir.path().join("report.json");
    let cache = dir.path().join("cache");
    let run = fetch_command(&manifest, &cache, &report_path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let report: Value = serde_json::from_str(&fs::read_to_string(&report_path).unwrap()).unwrap();
    let only = &report["entries"][0];
    assert_eq!(only["status"], "failed", "{only}");
    assert_eq!(only["reason"], "unsafe archive", "{only}");
    assert!(!dir.path().join("evil").exists());
    server.stop();
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, options: &str) -> Mounted {
        fs::create_dir_all(at).unwrap();
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(mount.status.success(), "mount: {}", text(&mount));
        Mounted(at.to_path_buf())
    }

    fn remount(&self, options: &str) {
        let mount = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(mount.status.success(), "remount: {}", text(&mount));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// A full disk stops the run (exit 2) and the report still lists every entry, those not
/// reached saying so; an existing cache on a read-only disk is refused up front (exit 2)
/// without a single download.
#[test]
fn a_full_disk_reports_every_entry_and_a_read_only_cache_is_refused_up_front() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    const COUNT: usize = 300;
    let entries: Vec<Entry> = (0..COUNT)
        .map(|i| {
            let content = unique(&format!("full {i}"), 3000);
            server.route(&format!("/d/{i}"), Route::ok(content.clone()));
            flat_entry(
                &format!("full-{i}"),
                &content,
                vec![server.url(&format!("/d/{i}"))],
            )
        })
        .collect();
    let manifest = write_manifest(dir.path(), entries);
    let mounted = Mounted::tmpfs(&dir.path().join("cache"), "size=1m");
    let report_path = dir.path().join("report.json");
    let run = fetch_command(&manifest, &mounted.0, &report_path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    let statuses = outcomes(&report_path);
    assert_eq!(statuses.len(), COUNT, "{statuses:?}");
    let report: Value = serde_json::from_str(&fs::read_to_string(&report_path).unwrap()).unwrap();
    assert!(
        report["stopped"]
            .as_str()
            .is_some_and(|s| s.contains("disk full")),
        "{report}"
    );
    assert!(
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "not reached"),
        "{report}"
    );

    mounted.remount("ro");
    let requests = server.total_requests();
    let run = fetch_command(&manifest, &mounted.0, &report_path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("not writable"),
        "{}",
        text(&run)
    );
    assert_eq!(server.total_requests(), requests, "nothing is downloaded");
    drop(mounted);
    server.stop();
}
