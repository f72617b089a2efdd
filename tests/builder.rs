//! The Nix builder fallback against the real Nix: a vendor-style fixed-output derivation
//! (custom /bin/sh builder, kind `other`) is realised, exported into the cache, removed from
//! the store again, and then realisable offline from that cache alone.

mod gitfixture;

use gitfixture::{delete_store_path, hash_nix_reports, instantiate, realise};
use srcgrab_fetcher::builder::NixBuilder;
use srcgrab_fetcher::store::{Cache, CacheOptions};
use srcgrab_formats::hash::Hash;
use srcgrab_manifest::{Entry, HashMode, Kind, Manifest, Provenance, StorePathName};
use std::path::Path;
use std::process::Command;

/// A fixed-output derivation made by a shell script, like a cargo/go vendor hash: no URL,
/// nothing srcgrab could download. `salt` makes each test's output its own store path.
struct VendorFod {
    drv: String,
    entry: Entry,
}

fn vendor_fod(name: &str, salt: &str, mode: HashMode) -> VendorFod {
    let script = match mode {
        HashMode::Recursive => format!(
            "mkdir -p $out/vendor/lib $out/bin; echo '{salt}' > $out/vendor/lib/mod.rs; \
             printf '#!/bin/sh\\necho vendored\\n' > $out/bin/tool; chmod +x $out/bin/tool; \
             ln -s ../vendor/lib/mod.rs $out/bin/link"
        ),
        HashMode::Flat => format!("echo 'vendored {salt}' > $out"),
    };
    let mode_attr = match mode {
        HashMode::Recursive => "recursive",
        HashMode::Flat => "flat",
    };
    let attrs = format!(
        r#"  name = "{name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "{script}" ];
  PATH = "/usr/bin:/bin";
  outputHashMode = "{mode_attr}";
  outputHashAlgo = "sha256";"#
    );
    let hash: Hash = hash_nix_reports(&attrs);
    let drv = instantiate(&format!("{attrs}\n  outputHash = \"{}\";", hash.to_sri()));
    let entry = Entry {
        drv_paths: [(
            srcgrab_fetcher::builder::host_system(),
            drv.parse().unwrap(),
        )]
        .into(),
        systems: vec!["x86_64-linux".into()],
        attrs: vec![name.to_string()],
        attr_count: 1,
        ..Entry::new(&StorePathName::new(name).unwrap(), mode, &hash, Kind::Other)
    };
    VendorFod { drv, entry }
}

fn is_valid(path: &str) -> bool {
    Command::new("nix-store")
        .args(["--check-validity", path])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn builder_exports_a_vendor_output_and_leaves_the_store_as_it_was() {
    let fod = vendor_fod("vendor-deps", "builder-api", HashMode::Recursive);
    delete_store_path(&fod.entry.store_path.to_path_string());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cache_dir.path(), CacheOptions::default()).unwrap();

    let built = NixBuilder::new(false).build(&fod.entry, &cache).unwrap();
    assert!(!built.was_in_store);
    assert!(built.removed_from_store);
    assert!(
        !is_valid(&fod.entry.store_path.to_path_string()),
        "the build output was removed again"
    );
    assert!(cache.is_present(&fod.entry).unwrap());

    let substituter = format!("file://{}", cache_dir.path().display());
    let out = realise(&fod.drv, &substituter).expect("realisable from the cache alone");
    assert_eq!(out, fod.entry.store_path.to_path_string());
    assert!(Path::new(&out).join("bin/tool").is_file());

    // Already in the store: exported as is and left there.
    let again = tempfile::tempdir().unwrap();
    let cache = Cache::open(again.path(), CacheOptions::default()).unwrap();
    let built = NixBuilder::new(false).build(&fod.entry, &cache).unwrap();
    assert!(built.was_in_store && !built.removed_from_store);
    assert!(is_valid(&out));
    delete_store_path(&out);
}

#[test]
fn builder_keeps_store_paths_when_asked_and_fills_the_hashed_mirror_for_flat_files() {
    let fod = vendor_fod("vendor-flat", "builder-flat", HashMode::Flat);
    delete_store_path(&fod.entry.store_path.to_path_string());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cache_dir.path(), CacheOptions::default()).unwrap();
    let built = NixBuilder::new(true).build(&fod.entry, &cache).unwrap();
    assert!(!built.removed_from_store);
    assert!(is_valid(&fod.entry.store_path.to_path_string()));
    let hex = fod.entry.hash.hash.to_hex();
    let mirrored = std::fs::read(cache_dir.path().join("sha256").join(hex)).unwrap();
    assert_eq!(mirrored, b"vendored builder-flat\n");
    delete_store_path(&fod.entry.store_path.to_path_string());
}

#[test]
fn builder_refuses_what_nix_cannot_make_or_no_longer_knows() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cache_dir.path(), CacheOptions::default()).unwrap();
    let fod = vendor_fod("vendor-gone", "builder-gone", HashMode::Recursive);

    let mut gone = fod.entry.clone();
    gone.drv_paths = [(
        srcgrab_fetcher::builder::host_system(),
        "/nix/store/00000000000000000000000000000000-gone.drv"
            .parse::<srcgrab_manifest::DrvPath>()
            .unwrap(),
    )]
    .into();
    let err = NixBuilder::new(false).build(&gone, &cache).unwrap_err();
    assert!(
        matches!(err, srcgrab_fetcher::Error::MissingDerivation(_)),
        "{err}"
    );
    assert!(err.to_string().contains("enumerate"), "{err}");

    // A derivation whose builder makes other content than its declared hash.
    let lying = vendor_fod("vendor-lying", "builder-lying", HashMode::Recursive);
    let wrong_drv = instantiate(&format!(
        r#"  name = "vendor-lying";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "mkdir $out; echo other > $out/x" ];
  PATH = "/usr/bin:/bin";
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
  outputHash = "{}";"#,
        lying.entry.hash.hash.to_sri()
    ));
    let mut wrong = lying.entry.clone();
    wrong.drv_paths = [(
        srcgrab_fetcher::builder::host_system(),
        wrong_drv.parse().unwrap(),
    )]
    .into();
    delete_store_path(&wrong.store_path.to_path_string());
    let err = NixBuilder::new(false).build(&wrong, &cache).unwrap_err();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    assert!(!cache.is_present(&wrong).unwrap());
}

/// A manifest file holding `entries`, for the command-line tests.
fn write_manifest(dir: &Path, mut entries: Vec<Entry>) -> std::path::PathBuf {
    entries.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    let manifest = Manifest {
        version: srcgrab_manifest::MANIFEST_VERSION,
        provenance: Provenance {
            systems: vec!["x86_64-linux".into()],
            nix_version: "nix-instantiate (Nix) 2.8.0".into(),
            ..Provenance::default()
        },
        failures: Vec::new(),
        entries,
        build: Default::default(),
    };
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_json()).unwrap();
    path
}

fn srcgrab_fetch(manifest: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .arg("fetch")
        .arg(manifest)
        .arg("--cache")
        .arg(cache)
        .arg("--no-substituters")
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn fetch_command_uses_the_builder_only_when_asked() {
    let fod = vendor_fod("vendor-cli", "builder-cli", HashMode::Recursive);
    delete_store_path(&fod.entry.store_path.to_path_string());
    let work = tempfile::tempdir().unwrap();
    let manifest = write_manifest(work.path(), vec![fod.entry.clone()]);
    let cache_dir = work.path().join("cache");

    let without = srcgrab_fetch(&manifest, &cache_dir, &[]);
    let stdout = String::from_utf8_lossy(&without.stdout).into_owned()
        + &String::from_utf8_lossy(&without.stderr);
    assert_eq!(without.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("nix-store --realise {}", fod.drv)),
        "{stdout}"
    );
    assert!(!is_valid(&fod.entry.store_path.to_path_string()));

    let with = srcgrab_fetch(&manifest, &cache_dir, &["--builder", "nix"]);
    let output =
        String::from_utf8_lossy(&with.stdout).into_owned() + &String::from_utf8_lossy(&with.stderr);
    assert_eq!(with.status.code(), Some(0), "{output}");
    assert!(
        !is_valid(&fod.entry.store_path.to_path_string()),
        "removed from the store again"
    );
    let substituter = format!("file://{}", cache_dir.display());
    let out = realise(&fod.drv, &substituter).expect("realisable from the cache alone");
    assert_eq!(out, fod.entry.store_path.to_path_string());
    delete_store_path(&out);
}

/// A git entry srcgrab may not check out itself (fetchgit with a postFetch step) is realised
/// by Nix from its own .drv with `--builder nix`, and reported as built.
#[test]
fn git_entries_with_post_fetch_go_to_the_builder() {
    let repos = gitfixture::Repos::make();
    let daemon = gitfixture::Daemon::start(repos.served());
    let src = srcgrab_manifest::GitSource {
        fetch_submodules: true,
        ..srcgrab_manifest::GitSource::plain(daemon.url("main.git"), repos.c2.clone())
    };
    let fod = gitfixture::nix_fetchgit("git-post-fetch", &src);
    let mut entry = fod.entry(&src);
    entry.post_fetch = true;
    fod.delete_output();
    let work = tempfile::tempdir().unwrap();
    let manifest = write_manifest(work.path(), vec![entry.clone()]);
    let cache_dir = work.path().join("cache");
    let report_path = work.path().join("report.json");

    let run = srcgrab_fetch(
        &manifest,
        &cache_dir,
        &[
            "--builder",
            "nix",
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["summary"]["fetched"]["builder"], 1, "{report}");
    assert_eq!(report["entries"][0]["how"], "builder", "{report}");
    assert!(
        !is_valid(&entry.store_path.to_path_string()),
        "removed from the store again"
    );
    let cache = Cache::open(&cache_dir, CacheOptions::default()).unwrap();
    assert!(cache.is_present(&entry).unwrap());
}
