//! Git test fixtures shared by the git and builder tests: deterministic repositories, a
//! `git daemon` on 127.0.0.1, and fixed-output derivations realised by the real Nix.

#![allow(dead_code)] // each test binary uses its own subset

use srcgrab_formats::hash::Hash;
use srcgrab_manifest::{ContentAddress, Entry, GitSource, HashMode, Kind, StorePathName};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs git with a fixed identity and dates, so commit ids are the same on every run.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "protocol.file.allow")
        .env("GIT_CONFIG_VALUE_0", "always")
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.invalid")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.invalid")
        .env("GIT_AUTHOR_DATE", "2021-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2021-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn make_executable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Bare repositories `main.git` (with submodule `vendor/sub` -> `sub.git`, which has the
/// submodule `nested` -> `nested.git`, both by relative URL) under `served()`.
pub struct Repos {
    root: tempfile::TempDir,
    /// README, an executable, a symlink, a 3 MiB file, src/ and docs/; annotated tag v1.0.
    pub c1: String,
    /// + submodule, a CRLF attribute; lightweight tag v2.0.
    pub c2: String,
    /// + more sources and docs; branch main.
    pub c3: String,
}

impl Repos {
    pub fn make() -> Repos {
        let root = tempfile::tempdir().unwrap();
        // The Nix build users read file:// repositories too.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let srv = root.path().join("srv");
        let work = root.path().join("work");
        std::fs::create_dir_all(&srv).unwrap();
        let bare = |name: &str| {
            let served = srv.join(format!("{name}.git"));
            git_in(
                root.path(),
                &[
                    "clone",
                    "--quiet",
                    "--bare",
                    work.join(name).to_str().unwrap(),
                    served.to_str().unwrap(),
                ],
            );
            // Lets a static file server serve it too ("dumb" HTTP protocol).
            git_in(&served, &["update-server-info"]);
        };
        let init = |name: &str| {
            let dir = work.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            git_in(&dir, &["init", "--quiet", "--initial-branch=main"]);
            dir
        };
        let add_submodule = |dir: &Path, name: &str, path: &str| {
            let served = srv.join(format!("{name}.git"));
            git_in(
                dir,
                &[
                    "submodule",
                    "--quiet",
                    "add",
                    served.to_str().unwrap(),
                    path,
                ],
            );
            let key = format!("submodule.{path}.url");
            git_in(
                dir,
                &[
                    "config",
                    "-f",
                    ".gitmodules",
                    &key,
                    &format!("../{name}.git"),
                ],
            );
            git_in(dir, &["add", ".gitmodules"]);
        };

        let nested = init("nested");
        write(&nested.join("nested.txt"), b"nested\n");
        git_in(&nested, &["add", "-A"]);
        git_in(&nested, &["commit", "--quiet", "-m", "nested"]);
        bare("nested");

        let sub = init("sub");
        write(&sub.join("sub.txt"), b"sub\n");
        write(&sub.join("bin/run.sh"), b"#!/bin/sh\necho sub\n");
        make_executable(&sub.join("bin/run.sh"));
        add_submodule(&sub, "nested", "nested");
        git_in(&sub, &["add", "-A"]);
        git_in(&sub, &["commit", "--quiet", "-m", "sub"]);
        bare("sub");

        let main = init("main");
        write(&main.join("README"), b"main 1\n");
        write(&main.join("script.sh"), b"#!/bin/sh\necho main\n");
        make_executable(&main.join("script.sh"));
        std::os::unix::fs::symlink("README", main.join("link")).unwrap();
        write(&main.join("big.bin"), &pseudo_random(3 << 20));
        write(&main.join("src/a.c"), b"int a;\n");
        write(&main.join("src/lib/b.c"), b"int b;\n");
        write(&main.join("docs/guide.md"), b"# Guide\n");
        git_in(&main, &["add", "-A"]);
        git_in(&main, &["commit", "--quiet", "-m", "one"]);
        let c1 = git_in(&main, &["rev-parse", "HEAD"]);
        git_in(&main, &["tag", "-a", "v1.0", "-m", "v1.0"]);
        git_in(&main, &["branch", "old"]);

        write(&main.join(".gitattributes"), b"*.crlf text eol=crlf\n");
        write(&main.join("notes.crlf"), b"line one\nline two\n");
        write(&main.join("README"), b"main 2\n");
        add_submodule(&main, "sub", "vendor/sub");
        git_in(&main, &["add", "-A"]);
        git_in(&main, &["commit", "--quiet", "-m", "two"]);
        let c2 = git_in(&main, &["rev-parse", "HEAD"]);
        git_in(&main, &["tag", "v2.0"]);

        write(&main.join("docs/guide.md"), b"# Guide, revised\n");
        write(&main.join("src/lib/c.c"), b"int c;\n");
        git_in(&main, &["add", "-A"]);
        git_in(&main, &["commit", "--quiet", "-m", "three"]);
        let c3 = git_in(&main, &["rev-parse", "HEAD"]);
        bare("main");

        Repos { root, c1, c2, c3 }
    }

    pub fn served(&self) -> PathBuf {
        self.root.path().join("srv")
    }

    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}/{name}", self.served().display())
    }
}

/// Deterministic incompressible bytes (xorshift), so packs and deltas have real work to do.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `git daemon` serving a directory on 127.0.0.1; stopped on drop.
pub struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    pub fn start(base: PathBuf) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The daemon binary itself, not `git daemon`: the `git` wrapper would be the child
        // killed on drop while the daemon it started lived on after the tests.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        let child = Command::new(PathBuf::from(exec_path.trim()).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(&base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fixed-output derivation instantiated in the store, with the hash Nix itself computed.
pub struct Fod {
    pub drv: String,
    pub name: String,
    pub hash: Hash,
}

impl Fod {
    /// A manifest entry for this derivation's output.
    pub fn entry(&self, src: &GitSource) -> Entry {
        Entry {
            git: Some(src.clone()),
            drv_paths: [(
                srcgrab_fetcher::builder::host_system(),
                self.drv.parse().unwrap(),
            )]
            .into(),
            systems: vec!["x86_64-linux".into()],
            attrs: vec![self.name.clone()],
            attr_count: 1,
            ..Entry::new(
                &StorePathName::new(&self.name).unwrap(),
                HashMode::Recursive,
                &self.hash,
                Kind::Git,
            )
        }
    }

    pub fn store_path(&self) -> String {
        let ca = ContentAddress {
            mode: HashMode::Recursive,
            hash: self.hash.clone(),
        };
        ca.store_path(&StorePathName::new(&self.name).unwrap())
            .to_path_string()
    }

    /// Removes the output from the store when it is there.
    pub fn delete_output(&self) {
        delete_store_path(&self.store_path());
    }
}

pub fn delete_store_path(path: &str) {
    let valid = Command::new("nix-store")
        .args(["--check-validity", path])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if valid {
        let out = Command::new("nix-store")
            .args(["--delete", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn nix_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("\"{escaped}\"")
}

/// Instantiates a Nix expression (the body of a `derivation { ... }`) and returns the .drv.
pub fn instantiate(attrs: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fod.nix");
    std::fs::write(&file, format!("derivation {{\n{attrs}\n}}\n")).unwrap();
    let out = Command::new("nix-instantiate").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `nix-store --realise DRV` with only the given substituters (none when empty).
pub fn realise(drv: &str, substituters: &str) -> Result<String, String> {
    let out = Command::new("nix-store")
        .args(["--option", "substituters", substituters])
        .args(["--realise", drv])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Realises a FOD whose hash is a dummy and returns the hash Nix reports it got.
pub fn hash_nix_reports(attrs_without_hash: &str) -> Hash {
    let dummy = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let drv = instantiate(&format!(
        "{attrs_without_hash}\n  outputHash = {};",
        nix_string(dummy)
    ));
    let err = realise(&drv, "").expect_err("a dummy hash cannot match");
    let got = err
        .split("got:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no hash in Nix's answer: {err}"));
    Hash::parse(got, None).unwrap()
}

/// The directory of the `git` srcgrab runs (the first on PATH): the fixture builds use the same
/// one, since a kept `.git` (packs, index files) depends on git's version.
fn git_dir() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("git").is_file())
        .expect("git on PATH")
}

/// A fixed-output derivation that fetches `src` with the fixture fetchgit builder.
pub fn nix_fetchgit(name: &str, src: &GitSource) -> Fod {
    let builder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/git/fetchgit-builder.sh");
    let flag = |on: bool| if on { "true" } else { "false" };
    let attrs = format!(
        r#"  name = {name};
  system = builtins.currentSystem;
  builder = "/bin/bash";
  args = [ {builder} ];
  PATH = {path};
  url = {url};
  rev = {rev};
  branchName = {branch};
  fetchSubmodules = {submodules};
  leaveDotGit = {leave};
  deepClone = {deep};
  sparseCheckout = {sparse};
  nonConeMode = {non_cone};
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";"#,
        name = nix_string(name),
        builder = builder.display(),
        path = nix_string(&format!("{}:/usr/bin:/bin", git_dir().display())),
        url = nix_string(&src.url),
        rev = nix_string(&src.rev),
        branch = nix_string(src.branch_name.as_deref().unwrap_or("")),
        submodules = flag(src.fetch_submodules),
        leave = flag(src.leave_dot_git),
        deep = flag(src.deep_clone),
        sparse = nix_string(&src.sparse_checkout.join("\n")),
        non_cone = flag(src.non_cone_mode),
    );
    let hash = hash_nix_reports(&attrs);
    let drv = instantiate(&format!(
        "{attrs}\n  outputHash = {};",
        nix_string(&hash.to_sri())
    ));
    Fod {
        drv,
        name: name.to_string(),
        hash,
    }
}
