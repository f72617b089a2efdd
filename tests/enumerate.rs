//! `srcgrab enumerate` end to end: the built binary, the real Nix, the fixture package set.
//!
//! The expected manifest is written here by hand from the fixture's sources (names, hashes,
//! URLs, which attributes use what); store and .drv paths are asked of nix-instantiate.
//! Nothing here is a golden file produced by srcgrab itself.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BOTH: &[&str] = &["aarch64-linux", "x86_64-linux"];
const AARCH64: &[&str] = &["aarch64-linux"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/pkgs")
}

fn srcgrab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("srcgrab runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs enumerate writing to a file, returns (exit code, manifest text).
fn enumerate(dir: &Path, file: &str, args: &[&str]) -> (i32, String) {
    let output = dir.join(file);
    let mut all = vec!["enumerate", "-o", output.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = srcgrab(&all);
    let code = out.status.code().expect("exited");
    assert!(code == 0 || code == 1, "exit {code}: {}", stderr(&out));
    (code, std::fs::read_to_string(output).unwrap())
}

/// A git entry's source, as expected.
#[derive(Clone, Copy)]
struct ExpectedGit {
    url: &'static str,
    rev: &'static str,
    fetch_submodules: bool,
}

/// One expected manifest entry.
#[derive(Clone, Copy)]
struct Expected {
    name: &'static str,
    /// Selects the FOD's derivation from the fixture set `pkgs` (for nix-instantiate).
    select: &'static str,
    sri: &'static str,
    recursive: bool,
    kind: &'static str,
    urls: &'static [&'static str],
    original_urls: &'static [&'static str],
    systems: &'static [&'static str],
    attrs: &'static [&'static str],
    attr_count: u64,
    executable: bool,
    post_fetch: bool,
    /// (stripRoot, extension) for url-unpack.
    unpack: Option<(bool, Option<&'static str>)>,
    git: Option<ExpectedGit>,
    /// The served file, for flat hashes (checked against the file itself).
    served: Option<&'static str>,
}

fn expected_whole_set() -> Vec<Expected> {
    let base = Expected {
        name: "",
        select: "",
        sri: "",
        recursive: false,
        kind: "url",
        urls: &[],
        original_urls: &[],
        systems: BOTH,
        attrs: &[],
        attr_count: 1,
        executable: false,
        post_fetch: false,
        unpack: None,
        git: None,
        served: None,
    };
    vec![
        Expected {
            name: "bootstrap-tools.sh",
            select: "pkgs.bootstrapTools",
            sri: "sha256-L3Qji/8YOk+PFcOUJZemi8IwthWir2WCL6/xBpAh0ho=",
            kind: "builtin",
            urls: &["http://fixture-a.invalid/bootstrap/bootstrap-tools.sh"],
            // Every package's build sources it: 15 derivation attributes evaluate.
            attrs: &["assets", "bootstrapTools", "checked", "data-file", "demo"],
            attr_count: 15,
            served: Some("bootstrap/bootstrap-tools.sh"),
            ..base
        },
        Expected {
            name: "data.txt",
            select: "pkgs.data-file.src",
            sri: "sha256-/rQjzkEE74pE0agcito+tlbexAgJwEf/UsHQFZ9K0DM=",
            urls: &["http://fixture-a.invalid/files/data.txt"],
            attrs: &["data-file"],
            served: Some("files/data.txt"),
            ..base
        },
        Expected {
            name: "tool.sh",
            select: "pkgs.tool.src",
            sri: "sha256-W9+A624EEI0Z9HWcytpjtTUaZMxlyNWo3lQyaZPFdtA=",
            recursive: true,
            urls: &["http://fixture-a.invalid/files/tool.sh"],
            attrs: &["tool"],
            executable: true,
            ..base
        },
        Expected {
            name: "checked.txt",
            select: "pkgs.checked.src",
            sri: "sha256-fQScn37t2drdFNNh0TNFz7v/v5tX0yPIvm2YKNGFa9I=",
            urls: &[
                "http://fixture-b.invalid/files/checked.txt",
                "http://fixture-a.invalid/files/checked.txt",
            ],
            attrs: &["checked"],
            post_fetch: true,
            served: Some("files/checked.txt"),
            ..base
        },
        Expected {
            name: "libfoo-2.0-source",
            select: "pkgs.libfoo.src",
            sri: "sha256-48zi4Nv0Nnm1jRoOstJfdIEg/peYip2zYT+iG2y8zMM=",
            recursive: true,
            kind: "url-unpack",
            urls: &["http://fixture-a.invalid/archives/libfoo-2.0.tar.gz"],
            attrs: &["libfoo"],
            unpack: Some((true, None)),
            ..base
        },
        Expected {
            name: "assets-1",
            select: "pkgs.assets.src",
            sri: "sha256-su/XTjhlPgkm9MVQrV0xOBfOv46zEEqwdV3gwwYZ0U0=",
            recursive: true,
            kind: "url-unpack",
            urls: &["http://fixture-a.invalid/archives/assets-1.zip"],
            attrs: &["assets"],
            unpack: Some((false, None)),
            ..base
        },
        Expected {
            name: "snapshot-3-source",
            select: "pkgs.snapshot.src",
            sri: "sha256-9aAf3g1LkxF5wPMmKZJiclTmdcw/mqLBGAnAun8jBu0=",
            recursive: true,
            kind: "url-unpack",
            urls: &["http://fixture-a.invalid/archives/snapshot"],
            attrs: &["snapshot"],
            unpack: Some((true, Some("tar.gz"))),
            ..base
        },
        Expected {
            name: "demo-0.2-source",
            select: "pkgs.demo.src",
            sri: "sha256-8sJIxrsodjW4fPczLMb2lPJr/HDC8CNz+SfN2nY13UI=",
            recursive: true,
            kind: "git",
            attrs: &["demo"],
            git: Some(ExpectedGit {
                url: "http://fixture-a.invalid/git/demo.git",
                rev: "822dfc54fc7ba20adb4bc8cadcc4fa7930aef36a",
                fetch_submodules: true,
            }),
            ..base
        },
        Expected {
            name: "hello-1.0-vendor",
            select: "pkgs.hello-vendored.vendor",
            sri: "sha256-N+QCXdAyj+ThAcYxs/Rrfiht8JOwYIC4vxtYCOPKLE8=",
            recursive: true,
            kind: "other",
            attrs: &["hello-vendored"],
            ..base
        },
        Expected {
            name: "hello-1.0.tar.gz",
            select: "pkgs.hello.src",
            sri: "sha256-8ggHkEssc+xpTq1LpyPHlk/Fr9gVcnONl3W+Ju1JuB8=",
            urls: &[
                "http://fixture-a.invalid/mirror/hello/hello-1.0.tar.gz",
                "http://fixture-b.invalid/mirror/hello/hello-1.0.tar.gz",
            ],
            original_urls: &["mirror://fixture/hello/hello-1.0.tar.gz"],
            // The vendor FOD's own input: reached through another FOD.
            attrs: &["greeting", "hello", "hello-vendored"],
            attr_count: 3,
            served: Some("mirror/hello/hello-1.0.tar.gz"),
            ..base
        },
        Expected {
            name: "extra-0.1.txt",
            select: r#"pkgs.fetchurl { url = "mirror://fixture/extra/extra-0.1.txt"; sha256 = "f7b9f86252a9580d4b2d7c396086e298f1448a66e7562174ac046b71a585db8a"; }"#,
            sri: "sha256-97n4YlKpWA1LLXw5YIbimPFEimbnViF0rARrcaWF24o=",
            urls: &[
                "http://fixture-a.invalid/mirror/extra/extra-0.1.txt",
                "http://fixture-b.invalid/mirror/extra/extra-0.1.txt",
            ],
            original_urls: &["mirror://fixture/extra/extra-0.1.txt"],
            attrs: &["script-user"],
            served: Some("mirror/extra/extra-0.1.txt"),
            ..base
        },
        Expected {
            name: "firmware-aarch64.bin",
            select: "builtins.head pkgs.firmware.blobs",
            sri: "sha256-mLxPG9gIKHlT6Sv7bfQh1l3AqkAwUM/CvRY4FKQ+I20=",
            urls: &["http://fixture-a.invalid/files/firmware-aarch64.bin"],
            systems: AARCH64,
            attrs: &["firmware"],
            served: Some("files/firmware-aarch64.bin"),
            ..base
        },
        Expected {
            name: "requests-2.0.txt",
            select: "pkgs.fixtureSet.requests.src",
            sri: "sha256-o+PkzhZfycFeJHq/DQFjrSH8CTt5w7VYUkEtedHN52k=",
            urls: &[
                "http://fixture-b.invalid/other/requests-2.0.txt",
                "http://fixture-a.invalid/other/requests-2.0.txt",
            ],
            original_urls: &["mirror://other/requests-2.0.txt"],
            attrs: &["fixtureSet.requests"],
            served: Some("other/requests-2.0.txt"),
            ..base
        },
        Expected {
            name: "six-1.16.txt",
            select: "pkgs.fixtureSet.nested.six.src",
            sri: "sha256-h0A6w2/YSmTDp8tALD+ZTUsl0MbLKA8MXYXgERmuydM=",
            urls: &[
                "http://fixture-b.invalid/other/six-1.16.txt",
                "http://fixture-a.invalid/other/six-1.16.txt",
            ],
            original_urls: &["mirror://other/six-1.16.txt"],
            attrs: &["fixtureSet.nested.six"],
            served: Some("other/six-1.16.txt"),
            ..base
        },
    ]
}

/// Attributes that fail on every system, with a piece of Nix's message.
const EXPECTED_FAILURES: &[(&str, &str)] = &[
    ("aborts", "fixture: this attribute aborts evaluation"),
    ("asserts", "assertion"),
    ("broken-pkg", "is marked as broken"),
    ("fixtureSet.nested.deep-abort", "fixture: nested abort"),
    (
        "fixtureSet.nested.uses-missing",
        "attribute 'nothing-here' missing",
    ),
    ("infinite", "infinite recursion encountered"),
    ("insecure-pkg", "is marked as insecure"),
    ("missing-arg", "without required argument \"notAPackage\""),
    ("missing-attr", "attribute 'no-such-package' missing"),
    ("removed-pkg", "removed-pkg has been removed"),
    ("type-error", "cannot add a string to an integer"),
    ("unfree-blob", "has an unfree license"),
];

/// (drvPath by the derivation's own system, the smallest when a system has several;
/// outPath) of each selected FOD, asked of Nix.
fn nix_paths(
    set: &Path,
    rows: &[&Expected],
) -> BTreeMap<String, (BTreeMap<String, String>, String)> {
    let mut expr = format!(
        "let at = system: import {} {{ inherit system; }}; in {{ ",
        set.display()
    );
    for row in rows {
        let per_system: Vec<String> = row
            .systems
            .iter()
            .map(|s| format!("(let pkgs = at \"{s}\"; in {})", row.select))
            .collect();
        expr.push_str(&format!(
            "\"{}\" = map (d: [ d.drvPath d.outPath d.system ]) [ {} ]; ",
            row.name,
            per_system.join(" ")
        ));
    }
    expr.push('}');
    let out = Command::new("nix-instantiate")
        .args([
            "--eval",
            "--strict",
            "--json",
            "--read-write-mode",
            "--expr",
            &expr,
        ])
        .output()
        .expect("nix-instantiate runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let value: BTreeMap<String, Vec<(String, String, String)>> =
        serde_json::from_slice(&out.stdout).unwrap();
    value
        .into_iter()
        .map(|(name, paths)| {
            let out_path = paths[0].1.clone();
            assert!(
                paths.iter().all(|p| p.1 == out_path),
                "{name}: one output path on all systems"
            );
            let mut drvs: BTreeMap<String, String> = BTreeMap::new();
            for (drv, _, system) in &paths {
                let slot = drvs.entry(system.clone()).or_insert_with(|| drv.clone());
                if drv < slot {
                    *slot = drv.clone();
                }
            }
            (name, (drvs, out_path))
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The manifest's entry names, sorted.
fn entry_names(manifest: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    names
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Compares the manifest's entries with the expectation, field by field: the entries of the
/// fixture set `set`, each with exactly the fields expected.
fn check_entries(manifest: &Value, set: &Path, expected: &[&Expected]) {
    let entries = manifest["entries"].as_array().unwrap();
    let mut want: Vec<&str> = expected.iter().map(|e| e.name).collect();
    want.sort();
    assert_eq!(entry_names(manifest), want);
    let paths = nix_paths(set, expected);
    for row in expected {
        let e = entries.iter().find(|e| e["name"] == row.name).unwrap();
        let (drv, out_path) = &paths[row.name];
        let what = row.name;
        let mut fields: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        let mut want_fields = vec![
            "attrCount",
            "attrs",
            "drvPaths",
            "hash",
            "kind",
            "name",
            "storePath",
            "systems",
        ];
        for (field, present) in [
            ("urls", !row.urls.is_empty()),
            ("originalUrls", !row.original_urls.is_empty()),
            ("executable", row.executable),
            ("postFetch", row.post_fetch),
            ("unpack", row.unpack.is_some()),
            ("git", row.git.is_some()),
        ] {
            if present {
                want_fields.push(field);
            }
        }
        want_fields.sort();
        assert_eq!(fields, want_fields, "{what}: the fields of the entry");
        assert_eq!(e["storePath"], out_path.as_str(), "{what}");
        assert_eq!(e["drvPaths"], serde_json::json!(drv), "{what}");
        assert_eq!(e["hash"]["sri"], row.sri, "{what}");
        assert_eq!(
            e["hash"]["algo"].as_str(),
            row.sri.split('-').next(),
            "{what}"
        );
        assert_eq!(
            e["hash"]["mode"],
            if row.recursive { "recursive" } else { "flat" },
            "{what}"
        );
        assert_eq!(e["kind"], row.kind, "{what}");
        assert_eq!(strings(&e["urls"]), owned(row.urls), "{what}");
        assert_eq!(
            strings(&e["originalUrls"]),
            owned(row.original_urls),
            "{what}"
        );
        assert_eq!(strings(&e["systems"]), owned(row.systems), "{what}");
        assert_eq!(strings(&e["attrs"]), owned(row.attrs), "{what}");
        assert_eq!(e["attrCount"], row.attr_count, "{what}");
        assert_eq!(
            e["executable"].as_bool().unwrap_or(false),
            row.executable,
            "{what}"
        );
        assert_eq!(
            e["postFetch"].as_bool().unwrap_or(false),
            row.post_fetch,
            "{what}"
        );
        match row.unpack {
            Some((strip_root, extension)) => {
                assert_eq!(e["unpack"]["stripRoot"], strip_root, "{what}");
                assert_eq!(e["unpack"]["extension"].as_str(), extension, "{what}");
            }
            None => assert!(e.get("unpack").is_none(), "{what}"),
        }
        if let Some(want) = row.git {
            let git = &e["git"];
            assert_eq!(git["url"], want.url, "{what}");
            assert_eq!(git["rev"], want.rev, "{what}");
            assert_eq!(git["fetchSubmodules"], want.fetch_submodules, "{what}");
            assert_eq!(git["leaveDotGit"], false, "{what}");
            assert_eq!(git["deepClone"], false, "{what}");
            assert_eq!(git["fetchLfs"], false, "{what}");
        }
        if let Some(served) = row.served {
            let file = root().join("tests/fixtures/sources").join(served);
            let out = Command::new("nix-hash")
                .args(["--flat", "--type", "sha256", "--base32"])
                .arg(&file)
                .output()
                .unwrap();
            let nix32 = String::from_utf8(out.stdout).unwrap();
            let from_file =
                srcgrab_manifest::Hash::parse(&format!("sha256:{}", nix32.trim()), None).unwrap();
            assert_eq!(
                from_file.to_sri(),
                row.sri,
                "{what}: the served file has the declared hash"
            );
        }
    }
}

#[test]
fn whole_fixture_for_two_systems_matches_the_hand_written_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let fixture = fixture.to_str().unwrap();
    let args = [
        "--nixpkgs",
        fixture,
        "--system",
        "x86_64-linux",
        "--system",
        "aarch64-linux",
    ];
    let (code, text) = enumerate(
        dir.path(),
        "m.json",
        &[&args[..], &["--jobs", "2"]].concat(),
    );
    assert_eq!(code, 1, "failed attributes make exit code 1");
    let manifest: Value = serde_json::from_str(&text).unwrap();

    let expected = expected_whole_set();
    check_entries(
        &manifest,
        Path::new(fixture),
        &expected.iter().collect::<Vec<_>>(),
    );

    let failures: Vec<(String, String, String)> = manifest["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["system"].as_str().unwrap().to_string(),
                f["attr"].as_str().unwrap().to_string(),
                f["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = BOTH
        .iter()
        .flat_map(|s| EXPECTED_FAILURES.iter().map(move |(attr, _)| (*s, *attr)))
        .collect();
    let got: Vec<(&str, &str)> = failures
        .iter()
        .map(|(s, a, _)| (s.as_str(), a.as_str()))
        .collect();
    assert_eq!(got, want, "failures, sorted by system then attribute");
    for (system, attr, error) in &failures {
        let needle = EXPECTED_FAILURES.iter().find(|(a, _)| a == attr).unwrap().1;
        assert!(error.contains(needle), "{system} {attr}: {error}");
    }
    assert_eq!(
        strings(&manifest["provenance"]["systems"]),
        owned(&["x86_64-linux", "aarch64-linux"])
    );
    assert_eq!(manifest["provenance"]["nixpkgs"], fixture);

    // One evaluator instead of two: the very same bytes.
    let (code, again) = enumerate(
        dir.path(),
        "again.json",
        &[&args[..], &["--jobs", "1"]].concat(),
    );
    assert_eq!(code, 1);
    assert!(
        again == text,
        "a rerun with --jobs 1 must give a byte-identical manifest"
    );
}

#[test]
fn attrs_select_derivations_and_explicit_sets() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let fixture = fixture.to_str().unwrap();
    let (code, text) = enumerate(
        dir.path(),
        "hello.json",
        &[
            "--nixpkgs",
            fixture,
            "--system",
            "x86_64-linux",
            "--attr",
            "hello",
        ],
    );
    assert_eq!(code, 0);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let all = expected_whole_set();
    let mut hello = all
        .iter()
        .find(|e| e.name == "hello-1.0.tar.gz")
        .unwrap()
        .clone_for(&["hello"], 1);
    hello.systems = &["x86_64-linux"];
    let mut bootstrap = all
        .iter()
        .find(|e| e.name == "bootstrap-tools.sh")
        .unwrap()
        .clone_for(&["hello"], 1);
    bootstrap.systems = &["x86_64-linux"];
    check_entries(&manifest, Path::new(fixture), &[&hello, &bootstrap]);
    assert_eq!(manifest["failures"], serde_json::json!([]));
    assert_eq!(strings(&manifest["provenance"]["attrs"]), owned(&["hello"]));

    // A set without recurseForDerivations is walked when asked for by name; an unfree
    // package evaluates with --allow-unfree; a missing attribute is a failure (exit 1).
    let (code, text) = enumerate(
        dir.path(),
        "some.json",
        &[
            "--nixpkgs",
            fixture,
            "--system",
            "x86_64-linux",
            "--allow-unfree",
            "--attr",
            "fixtureSet.hidden",
            "--attr",
            "unfree-blob",
            "--attr",
            "no.such.thing",
        ],
    );
    assert_eq!(code, 1);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        entry_names(&manifest),
        ["blob.txt", "bootstrap-tools.sh", "hidden-0.1.txt"]
    );
    let hidden = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hidden-0.1.txt")
        .unwrap();
    assert_eq!(
        strings(&hidden["attrs"]),
        owned(&["fixtureSet.hidden.hidden-pkg"])
    );
    assert_eq!(manifest["provenance"]["config"]["allowUnfree"], true);
    let failures = manifest["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["attr"], "no.such.thing");
    assert!(failures[0]["error"]
        .as_str()
        .unwrap()
        .contains("attribute 'no' missing"));
}

#[test]
fn file_mode_walks_every_set_and_passes_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let jobset = fixture().join("jobset.nix");
    let (code, text) = enumerate(
        dir.path(),
        "jobset.json",
        &[
            "--file",
            jobset.to_str().unwrap(),
            "--arg",
            "withTool",
            "true",
            "--argstr",
            "label",
            "lbl",
            "--system",
            "x86_64-linux",
        ],
    );
    assert_eq!(code, 0);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let attrs: BTreeMap<&str, Vec<String>> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), strings(&e["attrs"])))
        .collect();
    let want: BTreeMap<&str, Vec<String>> = [
        (
            "bootstrap-tools.sh",
            owned(&["hello", "hidden.hidden-pkg", "labelled.lbl", "tool"]),
        ),
        ("data.txt", owned(&["labelled.lbl"])),
        ("hello-1.0.tar.gz", owned(&["hello"])),
        ("hidden-0.1.txt", owned(&["hidden.hidden-pkg"])),
        ("tool.sh", owned(&["tool"])),
    ]
    .into_iter()
    .collect();
    assert_eq!(attrs, want);
    assert_eq!(
        manifest["provenance"]["args"]["label"],
        serde_json::json!({"type": "str", "value": "lbl"})
    );
}

/// README's NixOS recipe: `--file <nixos>` with `--arg configuration` and the toplevel as
/// `--attr`, for two systems; the closure holds what the configuration installs, and the
/// aarch64-only firmware only for aarch64.
#[test]
fn nixos_recipe_enumerates_the_system_closure_per_system() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = enumerate(
        dir.path(),
        "nixos.json",
        &[
            "--file",
            "tests/fixtures/nixos",
            "--arg",
            "configuration",
            "./tests/fixtures/nixos/configuration.nix",
            "--attr",
            "config.system.build.toplevel",
            "--system",
            "x86_64-linux",
            "--system",
            "aarch64-linux",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let got: BTreeMap<&str, (Vec<String>, Vec<String>)> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                (strings(&e["systems"]), strings(&e["attrs"])),
            )
        })
        .collect();
    let toplevel = owned(&["config.system.build.toplevel"]);
    let want: BTreeMap<&str, (Vec<String>, Vec<String>)> = [
        ("bootstrap-tools.sh", (owned(BOTH), toplevel.clone())),
        ("demo-0.2-source", (owned(BOTH), toplevel.clone())),
        ("firmware-aarch64.bin", (owned(AARCH64), toplevel.clone())),
        ("hello-1.0.tar.gz", (owned(BOTH), toplevel.clone())),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn a_crashing_or_memory_hungry_attribute_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let stress = fixture().join("stress.nix");
    let (code, text) = enumerate(
        dir.path(),
        "stress.json",
        &[
            "--file",
            stress.to_str().unwrap(),
            "--jobs",
            "1",
            "--max-memory",
            "400M",
            "--system",
            "x86_64-linux",
        ],
    );
    assert_eq!(code, 1);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let failures: Vec<(&str, &str)> = manifest["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["attr"].as_str().unwrap(), f["error"].as_str().unwrap()))
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0], ("hog", "exceeded --max-memory"));
    assert_eq!(failures[1].0, "overflow");
    assert!(
        failures[1].1.starts_with("evaluator crashed: "),
        "{}",
        failures[1].1
    );
    assert!(
        failures[1].1.contains("stack overflow"),
        "{}",
        failures[1].1
    );
    // The attributes evaluated after the crash and the kill still are.
    assert_eq!(
        entry_names(&manifest),
        ["bootstrap-tools.sh", "data.txt", "hello-1.0.tar.gz"]
    );
}

#[test]
fn an_attribute_that_never_ends_fails_after_the_eval_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let stress = fixture().join("stress.nix");
    let (code, text) = enumerate(
        dir.path(),
        "spin.json",
        &[
            "--file",
            stress.to_str().unwrap(),
            "--arg",
            "spin",
            "true",
            "--attr",
            "spinning",
            "--attr",
            "before",
            "--attr",
            "zafter",
            "--jobs",
            "1",
            "--eval-timeout",
            "2",
            "--system",
            "x86_64-linux",
        ],
    );
    assert_eq!(code, 1);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let failures: Vec<(&str, &str)> = manifest["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["attr"].as_str().unwrap(), f["error"].as_str().unwrap()))
        .collect();
    assert_eq!(failures, [("spinning", "exceeded --eval-timeout")]);
    // The same worker goes on, with a fresh evaluator, to the attributes after it.
    assert_eq!(
        entry_names(&manifest),
        ["bootstrap-tools.sh", "data.txt", "hello-1.0.tar.gz"]
    );
}

#[test]
fn eval_stack_lowers_the_evaluator_stack_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let stress = fixture().join("stress.nix");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--file",
            stress.to_str().unwrap(),
            "--arg",
            "deep",
            "true",
            "--attr",
            "deep",
            "--attr",
            "zafter",
            "--jobs",
            "1",
            "--system",
            "x86_64-linux",
        ];
        args.extend_from_slice(extra);
        let (code, text) = enumerate(dir.path(), "deep.json", &args);
        let manifest: Value = serde_json::from_str(&text).unwrap();
        let failures: Vec<(String, String)> = manifest["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["attr"].as_str().unwrap().into(),
                    f["error"].as_str().unwrap().into(),
                )
            })
            .collect();
        let mut names: Vec<String> = manifest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().into())
            .collect();
        names.sort();
        (code, failures, names)
    };
    // By default the deep evaluation fits in Nix's own stack.
    let (code, failures, names) = run(&[]);
    assert_eq!((code, failures), (0, vec![]));
    assert_eq!(names, ["bootstrap-tools.sh", "data.txt"]);
    // With a small stack it overflows, ending that evaluator; the next attribute still runs.
    let (code, failures, names) = run(&["--eval-stack", "8M"]);
    assert_eq!(code, 1);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "deep");
    assert!(
        failures[0].1.starts_with("evaluator crashed: ")
            && failures[0].1.contains("stack overflow"),
        "{}",
        failures[0].1
    );
    assert_eq!(names, ["bootstrap-tools.sh", "data.txt"]);
}

#[test]
fn fatal_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("never.json");
    let out = srcgrab(&[
        "enumerate",
        "--nixpkgs",
        "/nonexistent/nixpkgs",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "srcgrab: nixpkgs path /nonexistent/nixpkgs does not exist\n"
    );
    assert!(!output.exists(), "no manifest on a fatal error");

    let fixture = fixture();
    let out = Command::new(env!("CARGO_BIN_EXE_srcgrab"))
        .args(["enumerate", "--nixpkgs", fixture.to_str().unwrap()])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("srcgrab: nix not found on PATH"),
        "{message}"
    );

    // An expression that does not load at all is fatal too, not a failure per attribute.
    let broken = dir.path().join("broken.nix");
    std::fs::write(
        &broken,
        "{ system ? builtins.currentSystem }: abort \"cannot load\"",
    )
    .unwrap();
    let out = srcgrab(&["enumerate", "--file", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("cannot load"), "{message}");
}

impl Expected {
    /// The same FOD as reached from fewer attributes.
    fn clone_for(&self, attrs: &'static [&'static str], attr_count: u64) -> Expected {
        Expected {
            attrs,
            attr_count,
            ..*self
        }
    }
}

#[test]
fn provenance_records_the_commit_of_a_nixpkgs_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("nixpkgs");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(&checkout)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let copied = Command::new("cp")
        .arg("-r")
        .arg(fixture())
        .arg(&checkout)
        .status()
        .unwrap();
    assert!(copied.success());
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fixture"]);
    let head = git(&["rev-parse", "HEAD"]);
    let (code, text) = enumerate(
        dir.path(),
        "m.json",
        &[
            "--nixpkgs",
            checkout.to_str().unwrap(),
            "--attr",
            "data-file",
        ],
    );
    assert_eq!(code, 0);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["provenance"]["nixpkgsRev"], head.as_str());
}

/// `nix-hash` (recursive, sha256) of a path, as SRI.
fn nar_sri(path: &Path) -> String {
    let out = Command::new("nix-hash")
        .args(["--type", "sha256", "--base32"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let nix32 = String::from_utf8(out.stdout).unwrap();
    srcgrab_manifest::Hash::parse(&format!("sha256:{}", nix32.trim()), None)
        .unwrap()
        .to_sri()
}

fn run_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", stderr(&out));
}

/// The unpacked and executable sources hash to what the fixture declares, computed from the
/// served files with tar, python's zipfile, git and nix-hash (no srcgrab code, no store).
#[test]
fn fixture_sources_unpack_to_the_declared_recursive_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let sources = root().join("tests/fixtures/sources");
    let expected = expected_whole_set();
    let sri = |name: &str| expected.iter().find(|e| e.name == name).unwrap().sri;

    let tool = dir.path().join("tool.sh");
    std::fs::copy(sources.join("files/tool.sh"), &tool).unwrap();
    run_ok(Command::new("chmod").arg("755").arg(&tool));
    assert_eq!(nar_sri(&tool), sri("tool.sh"));

    for (archive, top, name) in [
        (
            "archives/libfoo-2.0.tar.gz",
            "libfoo-2.0",
            "libfoo-2.0-source",
        ),
        ("archives/snapshot", "snap-3", "snapshot-3-source"),
    ] {
        let into = dir.path().join(name);
        std::fs::create_dir(&into).unwrap();
        run_ok(
            Command::new("tar")
                .arg("xzf")
                .arg(sources.join(archive))
                .arg("-C")
                .arg(&into),
        );
        assert_eq!(nar_sri(&into.join(top)), sri(name), "{name}: stripRoot");
    }

    let assets = dir.path().join("assets");
    run_ok(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(sources.join("archives/assets-1.zip"))
            .arg(&assets),
    );
    assert_eq!(nar_sri(&assets), sri("assets-1"), "stripRoot = false");

    let served = dir.path().join("served");
    run_ok(Command::new(root().join("tests/fixtures/make-git-repo.sh")).arg(&served));
    let checkout = dir.path().join("checkout");
    run_ok(
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg(served.join("demo.git"))
            .arg(&checkout),
    );
    run_ok(Command::new("git").arg("-C").arg(&checkout).args([
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        "822dfc54fc7ba20adb4bc8cadcc4fa7930aef36a",
    ]));
    std::fs::remove_dir_all(checkout.join(".git")).unwrap();
    assert_eq!(nar_sri(&checkout), sri("demo-0.2-source"));
}

fn current_fixture() -> PathBuf {
    root().join("tests/fixtures/pkgs-current")
}

const GH: &str = "https://github.fixture-a.invalid";

/// The current-shape fixture's manifest, written from its sources: every fetcher as nixpkgs
/// writes it today, and the fork's packages that reach their dependencies by alias names.
fn expected_current_set() -> Vec<Expected> {
    let base = Expected {
        name: "",
        select: "",
        sri: "",
        recursive: false,
        kind: "url",
        urls: &[],
        original_urls: &[],
        systems: BOTH,
        attrs: &[],
        attr_count: 1,
        executable: false,
        post_fetch: false,
        unpack: None,
        git: None,
        served: None,
    };
    let archive = Expected {
        recursive: true,
        kind: "url-unpack",
        unpack: Some((true, Some("tar.gz"))),
        ..base
    };
    vec![
        Expected {
            name: "bootstrap-tools.sh",
            select: "pkgs.bootstrapTools",
            sri: "sha256-L3Qji/8YOk+PFcOUJZemi8IwthWir2WCL6/xBpAh0ho=",
            kind: "builtin",
            urls: &["http://fixture-a.invalid/bootstrap/bootstrap-tools.sh"],
            // Every mkDerivation package (15, the alias users among them).
            attrs: &[
                "app-uses-alias",
                "bootstrapTools",
                "codeberg-app",
                "curl-current",
                "gitapp",
            ],
            attr_count: 15,
            ..base
        },
        Expected {
            name: "zlib-1.3.1",
            select: "pkgs.zlib.src",
            sri: "sha256-DqVcKPgBTYiGtiSP49pdWI9VwII4R6a0V58RMbBRteI=",
            urls: &[
                "https://gnu.fixture-a.invalid/gnu/zlib/zlib-1.3.1.tar.gz",
                "https://gnu-b.fixture-a.invalid/pub/gnu/zlib/zlib-1.3.1.tar.gz",
            ],
            original_urls: &["mirror://gnu/zlib/zlib-1.3.1.tar.gz"],
            // Also reached through the alias zlibOld.
            attrs: &["app-uses-alias", "zlib"],
            attr_count: 2,
            ..base
        },
        Expected {
            name: "app-1.0.tar.gz",
            select: "pkgs.app-uses-alias.src",
            sri: "sha256-Q5ptuBfadyzCVi9S1RCGlVCOD7Oigw/jZnpIXhh+7cs=",
            urls: &["https://downloads.fixture-a.invalid/app-1.0.tar.gz"],
            attrs: &["app-uses-alias"],
            ..base
        },
        Expected {
            name: "curl-src",
            select: "pkgs.curl-current.src",
            sri: "sha256-Qn5LebHw/JAwbL4GSxKXsh3Gg1v6ZW079GvBVuPyS7A=",
            urls: &["https://github.fixture-a.invalid/curl/curl/archive/refs/tags/curl-8_11_0.tar.gz"],
            // tool-uses-alias reaches it as curlMinimalOld.
            attrs: &["curl-current", "tool-uses-alias"],
            attr_count: 2,
            ..archive
        },
        Expected {
            name: "ripgrep-src",
            select: "pkgs.ripgrep.src",
            sri: "sha256-MxZSI6Cjw0dVeDHHjjeAyv5fIu9hoNvypT75o3Vusck=",
            urls: &["https://github.fixture-a.invalid/BurntSushi/ripgrep/archive/4649aa9700619f94cf9c66876e9549d83420e16c.tar.gz"],
            attrs: &["ripgrep"],
            ..archive
        },
        Expected {
            name: "serde-1.0.0.tar.gz",
            select: "pkgs.ripgrep.crate",
            sri: "sha256-i5F8S2FjvILvSv8CXG9fTVQgUjLEWV85t7QwCCVqbLc=",
            urls: &["https://crates.fixture-a.invalid/api/v1/crates/serde/1.0.0/download"],
            attrs: &["ripgrep"],
            ..archive
        },
        Expected {
            name: "withsubs-src",
            select: "pkgs.withsubs.src",
            sri: "sha256-n3tO3aZxdXx9KKtpDDk4XI36ZzH6iVowY09rkaWZfXY=",
            recursive: true,
            kind: "git",
            attrs: &["withsubs"],
            git: Some(ExpectedGit {
                url: "https://github.fixture-a.invalid/acme/withsubs.git",
                rev: "0123456789abcdef0123456789abcdef01234567",
                fetch_submodules: true,
            }),
            ..base
        },
        Expected {
            name: "gitlab-src",
            select: "pkgs.gitlab-app.src",
            sri: "sha256-nZbZ1bGt3X5+YRmiOx5bX2hUUxK/7LIdHNxq8iuGKLg=",
            urls: &["https://gitlab.fixture-a.invalid/api/v4/projects/group%2Flab/repository/archive.tar.gz?sha=refs/tags/v3.1"],
            unpack: Some((true, None)),
            attrs: &["gitlab-app"],
            ..archive
        },
        Expected {
            name: "codeberg-src",
            select: "pkgs.codeberg-app.src",
            sri: "sha256-2hSF7TNjq/zKzPmqoPnwvMfE97qd3xczDhYn6JqSzjc=",
            urls: &["https://codeberg.fixture-a.invalid/forgejo/berg/archive/refs/tags/v0.5.tar.gz"],
            attrs: &["codeberg-app"],
            ..archive
        },
        Expected {
            name: "srht-src",
            select: "pkgs.srht-app.src",
            sri: "sha256-3BKC8DVLsaLbahn/xsJzyliD30Q4NFNgJHnRQeM4L4A=",
            urls: &["https://git.sr.fixture-a.invalid/~alice/hut/archive/89abcdef0123456789abcdef0123456789abcdef.tar.gz"],
            unpack: Some((true, None)),
            attrs: &["srht-app"],
            ..archive
        },
        Expected {
            name: "gitapp-src",
            select: "pkgs.gitapp.src",
            sri: "sha256-ttY5xe6CRSiuT7Xn8Vhhu38Wz7IDz3X3yj5pk88yIso=",
            recursive: true,
            kind: "git",
            attrs: &["gitapp"],
            git: Some(ExpectedGit {
                url: "https://git.fixture-a.invalid/app.git",
                rev: "refs/tags/v2.0",
                fetch_submodules: true,
            }),
            ..base
        },
        Expected {
            name: "abc.patch",
            select: "builtins.head pkgs.patched.patches",
            sri: "sha256-pIletEr8M2/su6blIM1n4XjazgJ2ZV0QL87/qOX3BXA=",
            urls: &["https://github.fixture-a.invalid/acme/app/commit/abc.patch"],
            post_fetch: true,
            attrs: &["patched"],
            ..base
        },
        Expected {
            name: "requests-2.32.3.tar.gz",
            select: "pkgs.pySet.requests.src",
            sri: "sha256-7HJCDfXfvc5BEfcVyWM43zt8t19Y5HjSRJyXIOVg3ow=",
            urls: &["https://pypi.fixture-a.invalid/packages/source/r/requests/requests-2.32.3.tar.gz"],
            original_urls: &["mirror://pypi/r/requests/requests-2.32.3.tar.gz"],
            // uses-old-name reaches it through the set's own alias.
            attrs: &["pySet.requests", "pySet.uses-old-name"],
            attr_count: 2,
            ..base
        },
        Expected {
            name: "amsmath.r61937.tar.xz",
            select: "pkgs.texlivePackages.amsmath.src",
            sri: "sha512-gpWzdfVTTOIuTladwujvt+JidD/c3ByOeXfg3+bDw5TqYoMa6WfZj1a72fJAWM/8ykCX3TPMH9z3lijJ28LnbA==",
            urls: &[
                "https://texlive.fixture-a.invalid/archive/amsmath.r61937.tar.xz",
                "https://texlive-b.fixture-a.invalid/archive/amsmath.r61937.tar.xz",
            ],
            attrs: &["texlivePackages.amsmath"],
            ..base
        },
        Expected {
            name: "amsmath-61937-tex",
            select: "pkgs.texlivePackages.amsmath",
            sri: "sha256-gRvQqBEoEfCDNP/Qvr18295pgz++aHLAT9JfEpc1Z+U=",
            recursive: true,
            kind: "derived",
            attrs: &["texlivePackages.amsmath"],
            ..base
        },
        Expected {
            name: "goapp-src",
            select: "pkgs.goapp.src",
            sri: "sha256-ran/oc/u1oVgJhkCLOb8QiwmGe5gsq70ldbFb0rDDs8=",
            urls: &["https://github.fixture-a.invalid/acme/goapp/archive/fedcba9876543210fedcba9876543210fedcba98.tar.gz"],
            attrs: &["goapp"],
            ..archive
        },
        Expected {
            name: "goapp-1-go-modules",
            select: "pkgs.goapp.goModules",
            sri: "sha256-YKogQCCvrndSnIP5mVwkh7Kj56ftOU1tHXLrcqa4Pr4=",
            recursive: true,
            kind: "other",
            attrs: &["goapp"],
            ..base
        },
    ]
}

#[test]
fn current_fetchers_and_a_forks_alias_users_give_the_exact_manifest_on_both_systems() {
    let dir = tempfile::tempdir().unwrap();
    let set = current_fixture();
    let set = set.to_str().unwrap();
    let args = [
        "--nixpkgs",
        set,
        "--system",
        "x86_64-linux",
        "--system",
        "aarch64-linux",
    ];
    let (code, text) = enumerate(dir.path(), "m.json", &args);
    assert_eq!(
        code, 0,
        "default options evaluate every package of the fork"
    );
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["failures"], serde_json::json!([]));
    assert_eq!(manifest["version"], 2);
    let expected = expected_current_set();
    check_entries(
        &manifest,
        Path::new(set),
        &expected.iter().collect::<Vec<_>>(),
    );
    // GitHub archives of today's shape carry owner/repo/tag/rev in their env, and are
    // still downloads the fetcher unpacks itself.
    assert!(expected
        .iter()
        .any(|e| e.urls.iter().any(|u| u.starts_with(GH)) && e.kind == "url-unpack"));

    // stats counts the two kinds Nix's builder makes; fetch says which needs the network.
    let manifest_path = dir.path().join("m.json");
    let out = srcgrab(&["stats", manifest_path.to_str().unwrap(), "--json"]);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["byKind"]["derived"]["entries"], 1);
    assert_eq!(stats["byKind"]["other"]["entries"], 1);
    let mut only_built: Value = manifest.clone();
    only_built["entries"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["kind"] == "derived" || e["kind"] == "other");
    let built_path = dir.path().join("built.json");
    std::fs::write(&built_path, only_built.to_string()).unwrap();
    let cache = dir.path().join("cache");
    let out = srcgrab(&[
        "fetch",
        built_path.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    let line_of = |name: &str| {
        said.lines()
            .find(|l| l.contains("needs builder") && l.contains(name))
            .unwrap_or_else(|| panic!("{name}: {said}"))
            .to_string()
    };
    assert!(line_of("amsmath-61937-tex").contains("without the network"));
    assert!(line_of("goapp-1-go-modules").contains("with the network"));

    // The rule that used to be the default: aliases off everywhere. The fork's alias users
    // then fail, and what only they need is missing.
    let (code, text) = enumerate(
        dir.path(),
        "no-aliases.json",
        &[&args[..], &["--arg", "config", "{ allowAliases = false; }"]].concat(),
    );
    assert_eq!(code, 1);
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let failed: Vec<(&str, &str)> = manifest["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["system"].as_str().unwrap(), f["attr"].as_str().unwrap()))
        .collect();
    let users = ["app-uses-alias", "pySet.uses-old-name", "tool-uses-alias"];
    let want: Vec<(&str, &str)> = BOTH
        .iter()
        .flat_map(|s| users.iter().map(move |a| (*s, *a)))
        .collect();
    assert_eq!(failed, want);
    assert!(!entry_names(&manifest).contains(&"app-1.0.tar.gz"));
}

#[test]
fn a_users_nixpkgs_config_overlays_and_nix_path_do_not_change_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let set = current_fixture();
    let args = [
        "--nixpkgs",
        set.to_str().unwrap(),
        "--system",
        "x86_64-linux",
    ];
    let (_, clean) = enumerate(dir.path(), "clean.json", &args);

    // A hostile user environment: an overlay that adds a package with a source of its own
    // and removes one, a config that turns aliases off, and the same through NIX_PATH and
    // NIXPKGS_CONFIG.
    let home = dir.path().join("home");
    let user_nixpkgs = home.join(".config/nixpkgs");
    std::fs::create_dir_all(&user_nixpkgs).unwrap();
    let overlays = user_nixpkgs.join("overlays.nix");
    std::fs::write(
        &overlays,
        r#"[ (self: super: {
  hostile = self.mkDerivation { pname = "hostile"; version = "1"; buildCommand = "touch $out";
    src = self.fetchurl { url = "https://evil.fixture-a.invalid/x"; hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; }; };
  zlib = throw "removed by the user's overlay";
}) ]
"#,
    )
    .unwrap();
    let config = user_nixpkgs.join("config.nix");
    std::fs::write(&config, "{ allowAliases = false; }\n").unwrap();
    let hostile = |command: &mut Command| {
        command
            .env("HOME", &home)
            .env("NIXPKGS_CONFIG", &config)
            .env(
                "NIX_PATH",
                format!("nixpkgs-overlays={}", overlays.display()),
            );
    };
    // The fixture does read them when called the way a user would.
    let mut plain = Command::new("nix-instantiate");
    plain.args(["--eval", "--strict", "--expr"]).arg(format!(
        "let pkgs = import {} {{ }}; in [ (pkgs ? hostile) (pkgs ? zlibOld) ]",
        set.display()
    ));
    hostile(&mut plain);
    let out = plain.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[ true false ]",
        "{}",
        stderr(&out)
    );

    let output = dir.path().join("hostile.json");
    let mut run = Command::new(env!("CARGO_BIN_EXE_srcgrab"));
    run.args(["enumerate", "-o", output.to_str().unwrap()])
        .args(args)
        .current_dir(root());
    hostile(&mut run);
    // And a nix.conf of the user's that would stop any evaluation of the set.
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("nix")).unwrap();
    std::fs::write(xdg.join("nix/nix.conf"), "restrict-eval = true\n").unwrap();
    run.env("XDG_CONFIG_HOME", &xdg)
        .env("NIX_USER_CONF_FILES", xdg.join("nix/nix.conf"));
    let out = run.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(output).unwrap() == clean,
        "the user's config, overlays, nix.conf and NIX_PATH must not change the manifest"
    );
}

#[test]
fn shards_merged_give_the_single_runs_manifest_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let set = fixture();
    let args = [
        "--nixpkgs",
        set.to_str().unwrap(),
        "--system",
        "x86_64-linux",
        "--system",
        "aarch64-linux",
        "--jobs",
        "1",
        "--outputs",
    ];
    let (_, whole) = enumerate(dir.path(), "whole.json", &args);
    let whole_manifest: Value = serde_json::from_str(&whole).unwrap();
    assert!(!whole_manifest["build"]["derivations"]
        .as_array()
        .unwrap()
        .is_empty());
    let mut parts = Vec::new();
    for shard in ["3/3", "1/3", "2/3"] {
        let file = format!("part-{}.json", &shard[..1]);
        let (_, text) = enumerate(
            dir.path(),
            &file,
            &[&args[..], &["--shard", shard]].concat(),
        );
        let part: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(part["provenance"]["shard"]["count"], 3);
        // Each part holds only some of the run: the split does something.
        assert!(part["failures"] != whole_manifest["failures"], "{shard}");
        parts.push(dir.path().join(file));
    }
    let merged = dir.path().join("merged.json");
    let mut merge = vec!["merge", "-o", merged.to_str().unwrap()];
    merge.extend(parts.iter().map(|p| p.to_str().unwrap()));
    let out = srcgrab(&merge);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failures carry over: {}",
        stderr(&out)
    );
    assert!(
        std::fs::read_to_string(&merged).unwrap() == whole,
        "merged shards must equal one run byte for byte"
    );

    // Two parts of three are not the run.
    let out = srcgrab(&[
        "merge",
        parts[0].to_str().unwrap(),
        parts[1].to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing or repeated"),
        "{}",
        stderr(&out)
    );
}
