//! `srcgrab fetch --store-paths`: binaries built by real Nix, copied by real Nix into a
//! signed upstream cache served on 127.0.0.1, mirrored with their closure, deleted from the
//! store, and realised again by Nix trusting only the upstream key, with no builds allowed.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::TestServer;

/// Four derivations built with `/bin/sh` (sandbox off), whose outputs reference each
/// other: c -> b -> a, c -> a, d -> a. `seed` makes the paths new on every run.
const CLOSURE_NIX: &str = r#"{ seed }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  a = mk "bin-a" "echo 'a ${seed}' > $out";
  b = mk "bin-b" "echo 'b ${seed} uses ${a}' > $out";
  c = mk "bin-c" "echo 'c ${seed} uses ${b} and ${a}' > $out";
  d = mk "bin-d" "echo 'd ${seed} uses ${a}' > $out";
in { inherit a b c d; }
"#;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn nix_command(args: &[&str]) -> String {
    let mut all = vec!["--extra-experimental-features", "nix-command"];
    all.extend_from_slice(args);
    run_ok("nix", &all)
}

/// The closure's outputs by attribute name, built by Nix.
struct Closure {
    paths: BTreeMap<&'static str, String>,
    contents: BTreeMap<&'static str, Vec<u8>>,
}

impl Closure {
    fn build(dir: &Path) -> Closure {
        let expr = dir.join("closure.nix");
        std::fs::write(&expr, CLOSURE_NIX).unwrap();
        let seed = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let mut paths = BTreeMap::new();
        let mut contents = BTreeMap::new();
        for name in ["a", "b", "c", "d"] {
            let path = run_ok(
                "nix-build",
                &[
                    expr.to_str().unwrap(),
                    "--argstr",
                    "seed",
                    &seed,
                    "-A",
                    name,
                    "--no-out-link",
                ],
            );
            contents.insert(name, std::fs::read(&path).unwrap());
            paths.insert(name, path);
        }
        Closure { paths, contents }
    }

    fn path(&self, name: &str) -> &str {
        &self.paths[name]
    }

    fn hash_part(&self, name: &str) -> String {
        Path::new(self.path(name))
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()[..32]
            .to_string()
    }

    /// Removes every output from the store, referrers first.
    fn delete(&self) {
        for name in ["c", "d", "b", "a"] {
            let _ = run("nix-store", &["--delete", self.path(name)]);
            assert!(
                !Path::new(self.path(name)).exists(),
                "{name} still in the store"
            );
        }
    }
}

/// A signing key pair made by Nix: (secret key file, public key).
fn signing_key(dir: &Path) -> (PathBuf, String) {
    let (secret, public) = (dir.join("key.sec"), dir.join("key.pub"));
    run_ok(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "upstream-test-1",
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
    );
    (
        secret,
        std::fs::read_to_string(public).unwrap().trim().to_string(),
    )
}

/// `nix copy` of `paths` (with their closure) into a signed file:// cache at `upstream`.
fn copy_to_upstream(upstream: &Path, secret: &Path, paths: &[&str]) {
    let to = format!(
        "file://{}?secret-key={}",
        upstream.display(),
        secret.display()
    );
    let mut args = vec!["copy", "--to", &to];
    args.extend_from_slice(paths);
    nix_command(&args);
}

struct Fetch {
    output: Output,
    report: Value,
}

impl Fetch {
    fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn path(&self, store_path: &str) -> &Value {
        self.report["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["storePath"] == store_path)
            .unwrap_or_else(|| panic!("{store_path} not in the report: {}", self.report))
    }

    fn statuses(&self) -> Vec<String> {
        let mut statuses: Vec<String> = self.report["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap().to_string())
            .collect();
        statuses.sort();
        statuses
    }
}

fn fetch_store_paths(dir: &Path, cache: &Path, lists: &[&Path], extra: &[&str]) -> Fetch {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut command = Command::new(env!("CARGO_BIN_EXE_srcgrab"));
    command.arg("fetch").arg("--cache").arg(cache);
    for list in lists {
        command.arg("--store-paths").arg(list);
    }
    command
        .arg("--report")
        .arg(&report)
        .args(["--stall-timeout", "2", "--retries", "1"])
        .args(extra);
    let output = command.stdin(Stdio::null()).output().unwrap();
    let report = std::fs::read_to_string(&report)
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null);
    Fetch { output, report }
}

fn field(narinfo: &str, key: &str) -> Vec<String> {
    narinfo
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(str::to_string)
        .collect()
}

fn narinfo(cache: &Path, hash_part: &str) -> String {
    std::fs::read_to_string(cache.join(format!("{hash_part}.narinfo")))
        .unwrap_or_else(|e| panic!("{hash_part}.narinfo in {}: {e}", cache.display()))
}

/// Realises `path` with `cache` as the only substituter, only `public_key` trusted,
/// signatures required and no builds allowed.
fn realise_from(cache: &Path, public_key: &str, path: &str) -> Output {
    run(
        "nix-store",
        &[
            "--realise",
            path,
            "--max-jobs",
            "0",
            "--option",
            "substituters",
            &format!("file://{}", cache.display()),
            "--option",
            "trusted-public-keys",
            public_key,
            "--option",
            "require-sigs",
            "true",
        ],
    )
}

#[test]
fn mirrored_closure_is_realised_by_nix_trusting_only_the_upstream_key() {
    let dir = tempfile::tempdir().unwrap();
    let closure = Closure::build(dir.path());
    let (secret, public_key) = signing_key(dir.path());
    let upstream = dir.path().join("upstream");
    copy_to_upstream(&upstream, &secret, &[closure.path("c"), closure.path("d")]);
    let server = TestServer::start();
    server.serve_dir("/upstream/", &upstream);
    let substituter = server.url("/upstream");

    // c in a plain list, d in an xz one: a and b come in through References.
    let plain = dir.path().join("paths.txt");
    std::fs::write(&plain, format!("{}\n", closure.path("c"))).unwrap();
    let xz_list = dir.path().join("paths.xz");
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut encoder, format!("{}\n", closure.path("d")).as_bytes()).unwrap();
    std::fs::write(&xz_list, encoder.finish().unwrap()).unwrap();
    let cache = dir.path().join("cache");
    let run = fetch_store_paths(
        dir.path(),
        &cache,
        &[&plain, &xz_list],
        &["--substituter", &substituter],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.statuses(), ["mirrored"; 4]);
    let a_by = run.path(closure.path("a"))["referencedBy"].clone();
    assert!(
        a_by == closure.path("b") || a_by == closure.path("c") || a_by == closure.path("d"),
        "{a_by}"
    );
    assert!(run.path(closure.path("c"))["referencedBy"].is_null());
    assert!(
        installable_from(dir.path(), &cache, closure.path("c")),
        "c and its References are all mirrored"
    );
    for name in ["a", "b", "c", "d"] {
        let ours = narinfo(&cache, &closure.hash_part(name));
        let theirs = narinfo(&upstream, &closure.hash_part(name));
        for key in [
            "StorePath",
            "NarHash",
            "NarSize",
            "References",
            "Deriver",
            "Sig",
            "CA",
        ] {
            assert_eq!(field(&ours, key), field(&theirs, key), "{name}: {key}");
        }
        // Upstream compression kept: the very file, under its own name.
        assert_eq!(field(&ours, "Compression"), ["xz"]);
        assert_eq!(
            std::fs::read(cache.join(&field(&ours, "URL")[0])).unwrap(),
            std::fs::read(upstream.join(&field(&theirs, "URL")[0])).unwrap()
        );
    }
    assert_eq!(
        field(&narinfo(&cache, &closure.hash_part("a")), "Sig").len(),
        1
    );

    // Again: everything is present, no NAR is downloaded.
    let nar_requests = |server: &TestServer| -> u64 {
        std::fs::read_dir(upstream.join("nar"))
            .unwrap()
            .map(|f| {
                let name = f.unwrap().file_name().into_string().unwrap();
                server.requests(&format!("/upstream/nar/{name}"))
            })
            .sum()
    };
    let before = nar_requests(&server);
    let again = fetch_store_paths(
        dir.path(),
        &cache,
        &[&plain, &xz_list],
        &["--substituter", &substituter],
    );
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert_eq!(again.statuses(), ["present"; 4]);
    assert_eq!(nar_requests(&server), before);

    // verify re-checks binaries by their NarHash (they have no CA), and finds a changed NAR.
    let verify = || {
        let output = Command::new(env!("CARGO_BIN_EXE_srcgrab"))
            .args(["verify", "--cache"])
            .arg(&cache)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (code, said) = verify();
    assert_eq!(code, Some(0), "{said}");
    let a_nar = cache.join(&field(&narinfo(&cache, &closure.hash_part("a")), "URL")[0]);
    let good_nar = std::fs::read(&a_nar).unwrap();
    let mut nar = Vec::new();
    std::io::Read::read_to_end(&mut xz2::read::XzDecoder::new(&good_nar[..]), &mut nar).unwrap();
    let at = nar.windows(2).position(|w| w == b"a ").unwrap();
    nar[at] = b'b';
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut encoder, &nar).unwrap();
    std::fs::write(&a_nar, encoder.finish().unwrap()).unwrap();
    let (code, said) = verify();
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(closure.path("a")), "{said}");
    std::fs::write(&a_nar, good_nar).unwrap();

    // The NAR rewritten above no longer matches its seal, and a narinfo planted as a
    // symlink to an endless device is not read: both count as absent and are mirrored again.
    let b_narinfo = cache.join(format!("{}.narinfo", closure.hash_part("b")));
    std::fs::remove_file(&b_narinfo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &b_narinfo).unwrap();
    let repaired = fetch_store_paths(
        dir.path(),
        &cache,
        &[&plain, &xz_list],
        &["--substituter", &substituter],
    );
    assert_eq!(repaired.code(), 0, "{}", repaired.stderr());
    assert_eq!(repaired.path(closure.path("a"))["status"], "mirrored");
    assert_eq!(repaired.path(closure.path("b"))["status"], "mirrored");
    assert_eq!(repaired.path(closure.path("c"))["status"], "present");
    assert!(b_narinfo.symlink_metadata().unwrap().is_file());
    let (code, said) = verify();
    assert_eq!(code, Some(0), "{said}");

    // Recompressed to zstd: the signature still holds (it covers the NAR, not the file).
    // With `--sign-key`, our own signature is added beside the upstream one.
    let own_dir = dir.path().join("own-key");
    std::fs::create_dir(&own_dir).unwrap();
    let (own_secret, own_public) = signing_key(&own_dir);
    let zstd_cache = dir.path().join("zstd-cache");
    let zstd = fetch_store_paths(
        dir.path(),
        &zstd_cache,
        &[&plain],
        &[
            "--substituter",
            &substituter,
            "--compression",
            "zstd",
            "--sign-key",
            own_secret.to_str().unwrap(),
        ],
    );
    assert_eq!(zstd.code(), 0, "{}", zstd.stderr());
    let b_narinfo = narinfo(&zstd_cache, &closure.hash_part("b"));
    assert_eq!(field(&b_narinfo, "Compression"), ["zstd"]);
    assert_eq!(field(&b_narinfo, "Sig").len(), 2, "{b_narinfo}");
    server.stop();

    for (cache, key, roots) in [
        (&cache, &public_key, ["c", "d"].as_slice()),
        (&zstd_cache, &public_key, &["c"]),
        (&zstd_cache, &own_public, &["c"]),
    ] {
        closure.delete();
        for root in roots {
            let realised = realise_from(cache, key, closure.path(root));
            assert!(
                realised.status.success(),
                "realising {root} from {}: {}",
                cache.display(),
                String::from_utf8_lossy(&realised.stderr)
            );
        }
        for name in ["a", "b", "c"] {
            assert_eq!(
                std::fs::read(closure.path(name)).unwrap(),
                closure.contents[name]
            );
        }
    }
    // Without the upstream key, Nix refuses the same cache: the signatures are what counts.
    closure.delete();
    let untrusted = realise_from(
        &cache,
        "other-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        closure.path("a"),
    );
    assert!(!untrusted.status.success());
    closure.delete();
}

#[test]
fn tampered_nars_and_paths_missing_upstream_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let closure = Closure::build(dir.path());
    let (secret, _) = signing_key(dir.path());
    let upstream = dir.path().join("upstream");
    copy_to_upstream(&upstream, &secret, &[closure.path("c"), closure.path("d")]);
    closure.delete();
    // One byte of d's NAR changed (same NarSize), recompressed, file checks dropped: only
    // NarHash can tell.
    let d_narinfo = upstream.join(format!("{}.narinfo", closure.hash_part("d")));
    let d_nar = upstream.join(&field(&std::fs::read_to_string(&d_narinfo).unwrap(), "URL")[0]);
    let mut nar = Vec::new();
    std::io::Read::read_to_end(
        &mut xz2::read::XzDecoder::new(std::fs::File::open(&d_nar).unwrap()),
        &mut nar,
    )
    .unwrap();
    let at = nar.windows(2).position(|w| w == b"d ").unwrap();
    nar[at] = b'e';
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut encoder, &nar).unwrap();
    std::fs::write(&d_nar, encoder.finish().unwrap()).unwrap();
    let stripped: String = std::fs::read_to_string(&d_narinfo)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("FileHash:") && !l.starts_with("FileSize:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&d_narinfo, stripped).unwrap();
    // b references a, which upstream lacks: the closure is incomplete.
    std::fs::remove_file(upstream.join(format!("{}.narinfo", closure.hash_part("a")))).unwrap();
    let server = TestServer::start();
    server.serve_dir("/upstream/", &upstream);
    let list = dir.path().join("paths.txt");
    let never_built = "/nix/store/00000000000000000000000000000000-never-built";
    std::fs::write(
        &list,
        format!(
            "{}\n{}\n{never_built}\n",
            closure.path("c"),
            closure.path("d")
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = fetch_store_paths(
        dir.path(),
        &cache,
        &[&list],
        &["--substituter", &server.url("/upstream")],
    );
    server.stop();
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let stderr = run.stderr();

    let d = run.path(closure.path("d"));
    assert_eq!(d["status"], "failed", "{d}");
    let reason = d["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("NarHash mismatch"), "{reason}");
    assert!(!cache
        .join(format!("{}.narinfo", closure.hash_part("d")))
        .exists());

    let a = run.path(closure.path("a"));
    assert_eq!(a["status"], "missing", "{a}");
    assert!(
        stderr.contains(&format!("missing: {}", closure.path("a"))),
        "{stderr}"
    );
    // Referenced by b or c (whichever was read first), both of which name it.
    let by = a["referencedBy"].as_str().unwrap();
    assert!(by == closure.path("b") || by == closure.path("c"), "{by}");
    assert_eq!(run.path(never_built)["status"], "missing");
    assert!(run.path(never_built)["referencedBy"].is_null());
    for name in ["b", "c"] {
        assert_eq!(run.path(closure.path(name))["status"], "mirrored");
    }

    // A malformed list is fatal, naming the line.
    std::fs::write(&list, "/nix/store/not-a-store-path\n").unwrap();
    let bad = fetch_store_paths(dir.path(), &cache, &[&list], &["--no-substituters"]);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("line 1"), "{}", bad.stderr());
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pkgs")
}

/// What `srcgrab check` says of an attribute whose one derivation builds `output`: is it
/// installable from `cache` (the output with its whole References closure there)?
fn installable_from(dir: &Path, cache: &Path, output: &str) -> bool {
    let drv_path =
        srcgrab_manifest::DrvPath::parse(&format!("/nix/store/{}-attr.drv", "0".repeat(32)))
            .unwrap();
    let manifest = srcgrab_manifest::Manifest {
        version: srcgrab_manifest::MANIFEST_VERSION,
        provenance: Default::default(),
        failures: Vec::new(),
        entries: Vec::new(),
        build: srcgrab_manifest::BuildGraph {
            derivations: vec![srcgrab_manifest::BuiltDerivation {
                drv_path: drv_path.clone(),
                system: "x86_64-linux".into(),
                outputs: [("out".to_string(), output.parse().unwrap())].into(),
                inputs: Vec::new(),
                sources: Vec::new(),
            }],
            attributes: vec![srcgrab_manifest::Attribute {
                system: "x86_64-linux".into(),
                attr: "attr".into(),
                drv_path,
            }],
        },
    };
    let path = dir.join("check-manifest.json");
    std::fs::write(&path, manifest.to_json()).unwrap();
    let output = srcgrab(&[
        "check",
        path.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]);
    let checks: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    checks[0]["installable"].as_bool().unwrap()
}

fn srcgrab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `srcgrab BASE EXTRA…`: its exit code and stdout.
fn code_and_stdout(base: &[&str], extra: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&str> = base.iter().chain(extra).copied().collect();
    let output = srcgrab(&args);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `nix-build -A hello` of the fixture with `cache` as the only substituter, only `public_key`
/// trusted, signatures required and no builds allowed; it must succeed.
fn build_hello_offline(fixture: &str, cache: &Path, public_key: &str) -> Output {
    let built = run(
        "nix-build",
        &[
            fixture,
            "-A",
            "hello",
            "--no-out-link",
            "--max-jobs",
            "0",
            "--option",
            "substituters",
            &format!("file://{}", cache.display()),
            "--option",
            "trusted-public-keys",
            public_key,
            "--option",
            "require-sigs",
            "true",
        ],
    );
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    built
}

/// `enumerate --outputs` records the fixture packages' outputs; a fetch of that manifest
/// takes them from an upstream cache holding them (the sources from their URLs), and Nix
/// then gets `hello` from the srcgrab cache alone with no build allowed.
#[test]
fn outputs_of_a_manifest_come_from_substituters_and_nix_builds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    server.serve_dir("/a/", fixture().join("../sources"));
    let rule = format!("http://fixture-a.invalid/={}", server.url("/a/"));
    let manifest = dir.path().join("m.json");
    let fixture = fixture();
    let fixture = fixture.to_str().unwrap();
    let system = srcgrab_fetcher::builder::host_system();
    let enumerate = srcgrab(&[
        "enumerate",
        "--nixpkgs",
        fixture,
        "--attr",
        "hello",
        "--attr",
        "data-file",
        "--system",
        &system,
        "--outputs",
        "-o",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        enumerate.status.success(),
        "{}",
        String::from_utf8_lossy(&enumerate.stderr)
    );
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["version"], 2);
    let drv = |attr: &str| run_ok("nix-instantiate", &[fixture, "-A", attr]);
    let out = |attr: &str| run_ok("nix-store", &["--query", "--outputs", &drv(attr)]);
    let (hello, data) = (out("hello"), out("data-file"));
    let recorded: Vec<&str> = m["build"]["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["outputs"].as_object().unwrap().values())
        .map(|p| p.as_str().unwrap())
        .collect();
    for path in [&hello, &data] {
        assert!(
            recorded.contains(&path.as_str()),
            "{path} not in {recorded:?}"
        );
    }
    assert_eq!(m["build"]["attributes"].as_array().unwrap().len(), 2);

    // Build both once from their sources, and put the outputs into a signed upstream.
    let sources = dir.path().join("sources");
    let fetched = srcgrab(&[
        "fetch",
        manifest.to_str().unwrap(),
        "--cache",
        sources.to_str().unwrap(),
        "--no-substituters",
        "--rewrite",
        &rule,
    ]);
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    for attr in ["hello", "data-file"] {
        run_ok(
            "nix-build",
            &[
                fixture,
                "-A",
                attr,
                "--no-out-link",
                "--option",
                "substituters",
                &format!("file://{}", sources.display()),
            ],
        );
    }
    let (secret, public_key) = signing_key(dir.path());
    let upstream = dir.path().join("upstream");
    copy_to_upstream(&upstream, &secret, &[&hello, &data]);
    server.serve_dir("/upstream/", &upstream);
    for path in [&hello, &data] {
        let _ = run("nix-store", &["--delete", path]);
        assert!(!Path::new(path).exists());
    }

    // Sizes from the upstream's narinfos: the binaries are known, the sources (not there,
    // no --probe) are counted as unknown.
    let stats = srcgrab(&[
        "stats",
        manifest.to_str().unwrap(),
        "--substituter",
        &server.url("/upstream"),
        "--json",
    ]);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let kit = &stats["kit"]["all"];
    let upstream_bytes: u64 = [&hello, &data]
        .iter()
        .map(|p| {
            let hash_part = &Path::new(p).file_name().unwrap().to_str().unwrap()[..32];
            field(&narinfo(&upstream, hash_part), "FileSize")[0]
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(kit["binaries"]["entries"], 2, "{kit}");
    assert_eq!(kit["binaries"]["unknownSizes"], 0, "{kit}");
    assert_eq!(kit["binaries"]["fileBytes"], upstream_bytes, "{kit}");
    let sources = m["entries"].as_array().unwrap().len();
    assert_eq!(kit["sources"]["entries"], sources, "{kit}");
    assert_eq!(kit["sources"]["unknownSizes"], sources, "{kit}");
    assert_eq!(
        stats["kit"]["bySystem"][&system]["total"]["entries"],
        2 + sources
    );

    // A bump from hello alone to hello and data-file costs data-file's binary and source.
    let old = dir.path().join("old.json");
    let enumerate = srcgrab(&[
        "enumerate",
        "--nixpkgs",
        fixture,
        "--attr",
        "hello",
        "--system",
        &system,
        "--outputs",
        "-o",
        old.to_str().unwrap(),
    ]);
    assert!(
        enumerate.status.success(),
        "{}",
        String::from_utf8_lossy(&enumerate.stderr)
    );
    let diff = srcgrab(&[
        "diff",
        old.to_str().unwrap(),
        manifest.to_str().unwrap(),
        "--format",
        "json",
        "--substituter",
        &server.url("/upstream"),
    ]);
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let cost = &serde_json::from_slice::<Value>(&diff.stdout).unwrap()["bumpCost"];
    let data_hash_part = &Path::new(&data).file_name().unwrap().to_str().unwrap()[..32];
    let data_bytes: u64 = field(&narinfo(&upstream, data_hash_part), "FileSize")[0]
        .parse()
        .unwrap();
    assert_eq!(cost["binaries"]["entries"], 1, "{cost}");
    assert_eq!(cost["binaries"]["fileBytes"], data_bytes, "{cost}");
    assert_eq!(cost["sources"]["entries"], 1, "{cost}");

    let cache = dir.path().join("cache");
    let report = dir.path().join("report.json");
    let fetched = srcgrab(&[
        "fetch",
        manifest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--substituter",
        &server.url("/upstream"),
        "--rewrite",
        &rule,
        "--report",
        report.to_str().unwrap(),
    ]);
    server.stop();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for path in [&hello, &data] {
        let entry = report["outputs"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["storePath"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} not in {report}"));
        assert_eq!(entry["status"], "mirrored", "{entry}");
    }

    let built = build_hello_offline(fixture, &cache, &public_key);
    assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), hello);
    assert!(Path::new(&hello).join("bin/hello").exists());
    let _ = run("nix-store", &["--delete", &hello]);

    // A bundle carries the binaries too: a delta since `old` has only data-file's.
    let delta = dir.path().join("delta");
    let exported = srcgrab(&[
        "export",
        "--manifest",
        manifest.to_str().unwrap(),
        "--since",
        old.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--to",
        delta.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&exported.stderr);
    assert!(exported.status.success(), "{said}");
    assert!(said.contains("and 1 binaries"), "{said}");
    assert!(delta.join(format!("{data_hash_part}.narinfo")).is_file());
    let bundle = dir.path().join("all.tar");
    let exported = srcgrab(&[
        "export",
        "--manifest",
        manifest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--to",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    // Imported only with the key that signed them; the sources need none (their hashes).
    let imported_cache = dir.path().join("imported");
    let import = |extra: &[&str]| {
        let base = [
            "import",
            bundle.to_str().unwrap(),
            "--cache",
            imported_cache.to_str().unwrap(),
        ];
        code_and_stdout(&base, extra)
    };
    let (code, said) = import(&[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "failed: {hello}: narinfo: a binary: give --trusted-public-key"
        )),
        "{said}"
    );
    let (code, said) = import(&[
        "--trusted-public-key",
        "other-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("not signed by a trusted key (other-1)"),
        "{said}"
    );
    let (code, said) = import(&["--trusted-public-key", &public_key]);
    assert_eq!(code, Some(0), "{said}");
    for path in [&hello, &data] {
        assert!(said.contains(&format!("imported: {path}")), "{said}");
    }
    build_hello_offline(fixture, &imported_cache, &public_key);
    let _ = run("nix-store", &["--delete", &hello]);

    // A disk that is a binary cache (`nix copy --to file://`): ingest takes its binaries when
    // a trusted key signed them, and does not report their files as unmatched.
    let ingested = dir.path().join("ingested");
    let ingest = |extra: &[&str]| {
        let base = [
            "ingest",
            upstream.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--cache",
            ingested.to_str().unwrap(),
        ];
        code_and_stdout(&base, extra)
    };
    let (code, said) = ingest(&[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("give --trusted-public-key"), "{said}");
    let (code, said) = ingest(&["--trusted-public-key", &public_key]);
    assert_eq!(code, Some(0), "{said}");
    for path in [&hello, &data] {
        assert!(said.contains(&format!("-> {path}")), "{said}");
    }
    assert!(
        !said
            .lines()
            .any(|l| l.starts_with("unmatched: ") && l.contains("/nar/")),
        "{said}"
    );
    build_hello_offline(fixture, &ingested, &public_key);
    let _ = run("nix-store", &["--delete", &hello]);
}

/// `srcgrab check` on the fixture's hello, greeting (built from hello) and data-file: with
/// every source cached all three build offline; with hello's tarball gone, exactly that
/// source is named, with exactly the two attributes it breaks.
#[test]
fn check_names_the_missing_source_and_the_attributes_it_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    server.serve_dir("/a/", fixture().join("../sources"));
    let rule = format!("http://fixture-a.invalid/={}", server.url("/a/"));
    let manifest = dir.path().join("m.json");
    let fixture = fixture();
    let fixture = fixture.to_str().unwrap();
    let system = srcgrab_fetcher::builder::host_system();
    let enumerate = srcgrab(&[
        "enumerate",
        "--nixpkgs",
        fixture,
        "--attr",
        "hello",
        "--attr",
        "greeting",
        "--attr",
        "data-file",
        "--system",
        &system,
        "--outputs",
        "-o",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        enumerate.status.success(),
        "{}",
        String::from_utf8_lossy(&enumerate.stderr)
    );
    let cache = dir.path().join("cache");
    let fetched = srcgrab(&[
        "fetch",
        manifest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--no-substituters",
        "--rewrite",
        &rule,
    ]);
    server.stop();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let check = |json: bool| {
        let mut args = vec![
            "check",
            manifest.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        srcgrab(&args)
    };
    let verdicts = |output: &Output| -> Vec<(String, bool, bool, Vec<String>)> {
        let checks: Value = serde_json::from_slice(&output.stdout).unwrap();
        checks
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["attr"].as_str().unwrap().to_string(),
                    c["installable"].as_bool().unwrap(),
                    c["buildable"].as_bool().unwrap(),
                    c["missingSources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    };
    let whole = check(true);
    assert_eq!(
        whole.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let none: Vec<String> = Vec::new();
    assert_eq!(
        verdicts(&whole),
        [
            ("data-file".to_string(), false, true, none.clone()),
            ("greeting".to_string(), false, true, none.clone()),
            ("hello".to_string(), false, true, none.clone()),
        ]
    );

    let m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let tarball = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hello-1.0.tar.gz")
        .unwrap()["storePath"]
        .as_str()
        .unwrap()
        .to_string();
    let hash_part = &Path::new(&tarball).file_name().unwrap().to_str().unwrap()[..32];
    std::fs::remove_file(cache.join(format!("{hash_part}.narinfo"))).unwrap();
    let broken = check(true);
    assert_eq!(broken.status.code(), Some(1));
    assert_eq!(
        verdicts(&broken),
        [
            ("data-file".to_string(), false, true, none),
            ("greeting".to_string(), false, false, vec![tarball.clone()]),
            ("hello".to_string(), false, false, vec![tarball.clone()]),
        ]
    );
    let text = check(false);
    assert_eq!(text.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&text.stdout);
    let named: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("missing source"))
        .collect();
    assert_eq!(
        named,
        [format!(
            "missing source {tarball}: breaks {system} greeting, {system} hello"
        )],
        "{stdout}"
    );
}
