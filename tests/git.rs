//! Native git fetching checked against the real Nix: for every fetchgit flag combination,
//! srcgrab's checkout must be the very NAR that a Nix build of the same fetch produces (the
//! fixture builder `tests/fixtures/git/fetchgit-builder.sh` follows nix-prefetch-git), and the
//! cache srcgrab writes must let Nix realise the source with the git server gone.
//!
//! Repositories are made here (tags, an executable, a symlink, a CRLF attribute, a 3 MiB file,
//! a submodule with a nested submodule, relative submodule URLs) and served by `git daemon`
//! on 127.0.0.1 and over file://.

mod gitfixture;
mod support;

use gitfixture::{nix_fetchgit, realise, Daemon, Repos};
use srcgrab_fetcher::git::GitFetcher;
use srcgrab_fetcher::net::Rewrite;
use srcgrab_fetcher::store::tree;
use srcgrab_fetcher::store::{Cache, CacheOptions};
use srcgrab_manifest::{GitSource, HashMode, Kind, Manifest, Provenance, Unpack};
use std::path::Path;
use std::process::Command;

fn nar_of(path: &Path) -> Vec<u8> {
    let mut nar = Vec::new();
    tree::dump_path(path, &mut nar).unwrap();
    nar
}

fn nix_dump(store_path: &str) -> Vec<u8> {
    let out = Command::new("nix-store")
        .args(["--dump", store_path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// srcgrab's checkout of `src` has the NAR of Nix's own build of it.
fn assert_same_as_nix(fetcher: &GitFetcher, case: &str, src: &GitSource) {
    let fod = nix_fetchgit(case, src);
    let built = realise(&fod.drv, "").unwrap_or_else(|e| panic!("{case}: nix build: {e}"));
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("out");
    fetcher
        .checkout(src, &ours)
        .unwrap_or_else(|e| panic!("{case}: srcgrab checkout: {e}"));
    if nar_of(&ours) != nix_dump(&built) {
        let diff = Command::new("diff")
            .args(["-r", "--no-dereference"])
            .arg(&ours)
            .arg(&built)
            .output()
            .unwrap();
        panic!(
            "{case}: srcgrab's tree differs from Nix's {built}:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
    fod.delete_output();
}

#[test]
fn every_fetchgit_flag_combination_matches_real_nix() {
    let repos = Repos::make();
    let daemon = Daemon::start(repos.served());
    let git_url = daemon.url("main.git");
    let file_url = repos.file_url("main.git");
    let mirrors = tempfile::tempdir().unwrap();
    // One fetcher for all cases: every revision below shares the repository's one mirror.
    let fetcher = GitFetcher::new(mirrors.path(), Vec::new()).unwrap();

    let cases: Vec<(&str, GitSource)> = vec![
        ("plain-file", GitSource::plain(&file_url, &repos.c1)),
        ("plain-daemon", GitSource::plain(&git_url, &repos.c3)),
        (
            "submodules",
            GitSource {
                fetch_submodules: true,
                ..GitSource::plain(&git_url, &repos.c3)
            },
        ),
        (
            "submodules-file",
            GitSource {
                fetch_submodules: true,
                ..GitSource::plain(&file_url, &repos.c2)
            },
        ),
        (
            "leave-dot-git",
            GitSource {
                leave_dot_git: true,
                fetch_submodules: true,
                ..GitSource::plain(&git_url, &repos.c2)
            },
        ),
        (
            "deep-clone",
            GitSource {
                deep_clone: true,
                leave_dot_git: true,
                ..GitSource::plain(&git_url, &repos.c2)
            },
        ),
        (
            "deep-clone-tree-only",
            GitSource {
                deep_clone: true,
                fetch_submodules: true,
                ..GitSource::plain(&git_url, &repos.c3)
            },
        ),
        (
            "sparse-cone",
            GitSource {
                sparse_checkout: vec!["src/lib".into()],
                ..GitSource::plain(&git_url, &repos.c3)
            },
        ),
        (
            "sparse-non-cone",
            GitSource {
                sparse_checkout: vec!["/docs/".into(), "*.c".into()],
                non_cone_mode: true,
                ..GitSource::plain(&git_url, &repos.c3)
            },
        ),
        ("tag-name", GitSource::plain(&git_url, "v1.0")),
        ("branch-ref", GitSource::plain(&git_url, "refs/heads/main")),
        (
            "branch-name",
            GitSource {
                branch_name: Some("release".into()),
                leave_dot_git: true,
                ..GitSource::plain(&git_url, &repos.c3)
            },
        ),
    ];
    for (case, src) in &cases {
        assert_same_as_nix(&fetcher, case, src);
    }

    // Two URLs (git://, file://) of the main repository, two submodule repositories each.
    let mirror_count = std::fs::read_dir(mirrors.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "git")
        })
        .count();
    assert_eq!(mirror_count, 6, "one mirror per repository URL");
}

/// A static file server speaks only git's "dumb" HTTP protocol: no shallow fetches, no
/// fetching a bare commit. Both fall back to fetching the branches and tags whole.
#[test]
fn dumb_http_servers_give_the_same_trees() {
    let repos = Repos::make();
    let server = support::TestServer::start();
    server.serve_dir("/git/", repos.served());
    let mirrors = tempfile::tempdir().unwrap();
    let fetcher = GitFetcher::new(mirrors.path(), Vec::new()).unwrap();
    let url = server.url("/git/main.git");
    let submodules = GitSource {
        fetch_submodules: true,
        ..GitSource::plain(&url, &repos.c3)
    };
    assert_same_as_nix(&fetcher, "dumb-http-submodules", &submodules);
    assert_same_as_nix(&fetcher, "dumb-http-tag", &GitSource::plain(&url, "v2.0"));
    server.stop();
}

#[test]
fn concurrent_entries_of_one_repository_share_a_mirror_safely() {
    let repos = Repos::make();
    let daemon = Daemon::start(repos.served());
    let url = daemon.url("main.git");
    let revs = [
        &repos.c1, &repos.c2, &repos.c3, &repos.c2, &repos.c1, &repos.c3,
    ];

    let reference_mirrors = tempfile::tempdir().unwrap();
    let sequential = GitFetcher::new(reference_mirrors.path(), Vec::new()).unwrap();
    let expected: Vec<Vec<u8>> = revs
        .iter()
        .map(|rev| {
            let dir = tempfile::tempdir().unwrap();
            let src = GitSource {
                fetch_submodules: true,
                ..GitSource::plain(&url, *rev)
            };
            sequential.checkout(&src, &dir.path().join("out")).unwrap();
            nar_of(&dir.path().join("out"))
        })
        .collect();
    assert_ne!(expected[0], expected[1]);

    let shared_mirrors = tempfile::tempdir().unwrap();
    let shared = GitFetcher::new(shared_mirrors.path(), Vec::new()).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = revs
            .iter()
            .map(|rev| {
                let shared = &shared;
                let url = &url;
                scope.spawn(move || {
                    let dir = tempfile::tempdir().unwrap();
                    let src = GitSource {
                        fetch_submodules: true,
                        ..GitSource::plain(url, *rev)
                    };
                    shared.checkout(&src, &dir.path().join("out")).unwrap();
                    nar_of(&dir.path().join("out"))
                })
            })
            .collect();
        for (handle, want) in handles.into_iter().zip(&expected) {
            assert!(handle.join().unwrap() == *want);
        }
    });
}

#[test]
fn rewrite_rules_reach_the_repository_and_its_submodules() {
    let repos = Repos::make();
    let daemon = Daemon::start(repos.served());
    // The package names a host that does not exist; the rule sends it (and the submodules,
    // whose relative URLs resolve against it) to the loopback daemon.
    let unreachable = "git://unreachable.invalid/";
    let src = GitSource {
        fetch_submodules: true,
        ..GitSource::plain(format!("{unreachable}main.git"), &repos.c3)
    };
    let mirrors = tempfile::tempdir().unwrap();
    let plain = GitFetcher::new(mirrors.path(), Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(plain.checkout(&src, &dir.path().join("a")).is_err());

    let rules = vec![Rewrite {
        from: unreachable.to_string(),
        to: daemon.url(""),
    }];
    let rewriting = GitFetcher::new(mirrors.path(), rules).unwrap();
    rewriting.checkout(&src, &dir.path().join("b")).unwrap();
    let direct = GitSource {
        url: daemon.url("main.git"),
        ..src.clone()
    };
    rewriting.checkout(&direct, &dir.path().join("c")).unwrap();
    assert!(nar_of(&dir.path().join("b")) == nar_of(&dir.path().join("c")));
    assert!(dir.path().join("b/vendor/sub/nested/nested.txt").is_file());
}

#[test]
fn cache_lets_nix_realise_a_git_source_with_the_server_gone() {
    let repos = Repos::make();
    let daemon = Daemon::start(repos.served());
    let src = GitSource {
        fetch_submodules: true,
        ..GitSource::plain(daemon.url("main.git"), &repos.c3)
    };
    let fod = nix_fetchgit("offline", &src);
    let entry = fod.entry(&src);
    assert_eq!(entry.hash.mode, HashMode::Recursive);

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cache_dir.path(), CacheOptions::default()).unwrap();
    let mirrors = tempfile::tempdir().unwrap();
    let fetcher = GitFetcher::new(mirrors.path(), Vec::new()).unwrap();
    fetcher.fetch(&entry, &src, &cache).unwrap();
    assert!(cache.is_present(&entry).unwrap());

    // A wrong declared hash is refused and nothing is published for it.
    let mut wrong = nix_fetchgit(
        "offline-wrong",
        &GitSource::plain(daemon.url("main.git"), &repos.c1),
    )
    .entry(&src);
    wrong.git = Some(src.clone());
    assert!(fetcher.fetch(&wrong, &src, &cache).is_err());
    assert!(!cache.is_present(&wrong).unwrap());

    drop(daemon);
    fod.delete_output();
    let substituter = format!("file://{}", cache_dir.path().display());
    let out = realise(&fod.drv, &substituter).expect("realised from srcgrab's cache");
    assert_eq!(out, entry.store_path.to_path_string());
    let work = tempfile::tempdir().unwrap();
    let mirrors_after = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(repos.served());
    let again = GitSource {
        url: daemon.url("main.git"),
        ..src.clone()
    };
    GitFetcher::new(mirrors_after.path(), Vec::new())
        .unwrap()
        .checkout(&again, &work.path().join("out"))
        .unwrap();
    assert!(nar_of(&work.path().join("out")) == nix_dump(&out));
    fod.delete_output();
}

#[test]
fn lfs_sources_need_the_builder_when_git_lfs_is_missing() {
    if Command::new("git-lfs").arg("version").output().is_ok() {
        return; // this machine could fetch it natively
    }
    let mirrors = tempfile::tempdir().unwrap();
    let fetcher = GitFetcher::new(mirrors.path(), Vec::new()).unwrap();
    let src = GitSource {
        fetch_lfs: true,
        ..GitSource::plain("git://127.0.0.1:1/none.git", "HEAD")
    };
    let dir = tempfile::tempdir().unwrap();
    let err = fetcher.checkout(&src, &dir.path().join("out")).unwrap_err();
    assert!(
        matches!(err, srcgrab_fetcher::Error::NeedsBuilder(_)),
        "{err}"
    );
}

/// `srcgrab fetch` on a manifest of git entries: checked out natively (a forge archive that
/// cannot be downloaded through its git source), reported as `git`, present on a rerun.
#[test]
fn fetch_command_checks_out_git_entries_and_falls_back_to_git_for_archives() {
    let repos = Repos::make();
    let daemon = Daemon::start(repos.served());
    let url = daemon.url("main.git");
    let with_submodules = GitSource {
        fetch_submodules: true,
        ..GitSource::plain(&url, &repos.c3)
    };
    let kept_dot_git = GitSource {
        leave_dot_git: true,
        ..GitSource::plain(&url, &repos.c2)
    };
    let archive_source = GitSource::plain(&url, &repos.c1);
    let mut archive = nix_fetchgit("cli-archive", &archive_source).entry(&archive_source);
    archive.kind = Kind::UrlUnpack;
    archive.urls = vec!["http://127.0.0.1:1/archive/c1.tar.gz".into()];
    archive.unpack = Some(Unpack {
        strip_root: true,
        extension: None,
    });
    // fetchFromGitHub's archive, no git source recorded: the archive URL names the repository.
    let forge_source = GitSource::plain(&url, &repos.c2);
    let mut forge = nix_fetchgit("cli-forge", &forge_source).entry(&forge_source);
    forge.kind = Kind::UrlUnpack;
    forge.git = None;
    forge.urls = vec![format!(
        "https://github.com/fixture/main/archive/{}.tar.gz",
        repos.c2
    )];
    forge.unpack = archive.unpack.clone();
    let mut entries = vec![
        forge,
        nix_fetchgit("cli-submodules", &with_submodules).entry(&with_submodules),
        nix_fetchgit("cli-dot-git", &kept_dot_git).entry(&kept_dot_git),
        archive,
    ];
    entries.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("manifest.json");
    let m = Manifest {
        version: srcgrab_manifest::MANIFEST_VERSION,
        provenance: Provenance {
            systems: vec!["x86_64-linux".into()],
            nix_version: "nix-instantiate (Nix) 2.8.0".into(),
            ..Provenance::default()
        },
        failures: Vec::new(),
        entries: entries.clone(),
        build: Default::default(),
    };
    std::fs::write(&manifest, m.to_json()).unwrap();
    let cache = work.path().join("cache");
    let report_path = work.path().join("report.json");
    let fetch = || {
        Command::new(env!("CARGO_BIN_EXE_srcgrab"))
            .arg("fetch")
            .arg(&manifest)
            .arg("--cache")
            .arg(&cache)
            .args(["--no-substituters", "--retries", "0", "--rewrite"])
            .arg(format!("https://github.com/fixture/={}", daemon.url("")))
            .arg("--report")
            .arg(&report_path)
            .output()
            .unwrap()
    };
    let first = fetch();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["summary"]["fetched"]["git"], 4, "{report}");
    assert!(cache.join(".srcgrab/git").is_dir(), "default mirror place");

    let second = fetch();
    assert_eq!(second.status.code(), Some(0));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["summary"]["present"], 4, "{report}");
}

/// Records the long steps a fetch reports.
#[derive(Default)]
struct Steps(std::sync::Mutex<Vec<String>>);

impl<'a> srcgrab_fetcher::report::Reporter<srcgrab_fetcher::report::FetchEvent<'a>> for Steps {
    fn report(&self, event: srcgrab_fetcher::report::FetchEvent<'a>) {
        use srcgrab_fetcher::report::FetchEvent;
        let line = match event {
            FetchEvent::StepStart { id, step, label } => {
                format!("start {id} {} {label}", step.name())
            }
            FetchEvent::StepEnd { id } => format!("end {id}"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

/// A git checkout counts no bytes and may take minutes: the fetch reports it as a step of
/// its entry, from start to end.
#[test]
fn a_git_checkout_is_reported_as_a_step_of_its_entry() {
    let repos = Repos::make();
    let daemon = Daemon::start(repos.served());
    let src = GitSource::plain(daemon.url("main.git"), &repos.c1);
    let entry = nix_fetchgit("reported", &src).entry(&src);
    let work = tempfile::tempdir().unwrap();
    let cache = std::sync::Arc::new(
        Cache::open(&work.path().join("cache"), CacheOptions::default()).unwrap(),
    );
    let steps = std::sync::Arc::new(Steps::default());
    let options = srcgrab_fetcher::fetch::FetchOptions {
        substituters: Vec::new(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(srcgrab_fetcher::fetch::fetch(
            std::slice::from_ref(&entry),
            cache,
            options,
            steps.clone(),
        ))
        .unwrap();
    assert!(report.entries[0].is_done(), "{:?}", report.entries[0]);
    assert_eq!(
        *steps.0.lock().unwrap(),
        [
            format!("start 0 git checkout {}", entry.name),
            "end 0".to_string()
        ]
    );
}
