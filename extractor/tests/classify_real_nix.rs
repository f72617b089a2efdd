//! Classification and mirror expansion on .drv files written by the real Nix from the
//! fixture's nixpkgs-shaped fetchers.

use srcgrab_extractor::classify::classify;
use srcgrab_formats::aterm::{self, Derivation};
use srcgrab_manifest::{Entry, Hash, HashAlgo, HashMode, Kind, StorePathName, Unpack};
use std::process::Command;

fn drv_of(attr: &str) -> Derivation {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/pkgs");
    let out = Command::new("nix-instantiate")
        .args([fixture, "-A", attr, "--argstr", "system", "x86_64-linux"])
        .output()
        .expect("nix-instantiate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    aterm::parse(&std::fs::read(path).unwrap()).unwrap()
}

/// Classifies with the FOD's own mirrors-list input, as `srcgrab enumerate` does.
fn fetch_of(attr: &str) -> Entry {
    let drv = drv_of(attr);
    let mirrors = drv
        .input_drvs
        .keys()
        .find(|p| p.ends_with("-mirrors-list.drv"))
        .map(|p| aterm::parse(&std::fs::read(p).unwrap()).unwrap().env);
    let hash = Hash::parse_digest(HashAlgo::Sha256, &"00".repeat(32)).unwrap();
    let mut entry = Entry::new(
        &StorePathName::new("x").unwrap(),
        HashMode::Recursive,
        &hash,
        Kind::Other,
    );
    classify(&drv, mirrors.as_ref(), &mut entry);
    entry
}

#[test]
fn fetchurl_with_mirrors_expands_in_site_order() {
    let fetch = fetch_of("hello.src");
    assert_eq!(fetch.kind, Kind::Url);
    assert_eq!(
        fetch.urls,
        [
            "http://fixture-a.invalid/mirror/hello/hello-1.0.tar.gz",
            "http://fixture-b.invalid/mirror/hello/hello-1.0.tar.gz"
        ]
    );
    assert_eq!(
        fetch.original_urls,
        ["mirror://fixture/hello/hello-1.0.tar.gz"]
    );
    assert!(!fetch.executable && !fetch.post_fetch);
}

#[test]
fn each_fetcher_gets_its_kind() {
    let tool = fetch_of("tool.src");
    assert_eq!((tool.kind, tool.executable), (Kind::Url, true));
    assert!(fetch_of("checked.src").post_fetch);

    let libfoo = fetch_of("libfoo.src");
    assert_eq!(libfoo.kind, Kind::UrlUnpack);
    assert_eq!(
        libfoo.unpack,
        Some(Unpack {
            strip_root: true,
            extension: None
        })
    );
    assert!(
        !libfoo.post_fetch,
        "fetchzip's own unpacking is not a postFetch"
    );
    let snapshot = fetch_of("snapshot.src");
    assert_eq!(
        snapshot.unpack,
        Some(Unpack {
            strip_root: true,
            extension: Some("tar.gz".into())
        })
    );
    assert_eq!(
        fetch_of("assets.src").unpack.map(|u| u.strip_root),
        Some(false)
    );

    let demo = fetch_of("demo.src");
    assert_eq!(demo.kind, Kind::Git);
    let git = demo.git.unwrap();
    assert_eq!(git.url, "http://fixture-a.invalid/git/demo.git");
    assert_eq!(git.rev, "822dfc54fc7ba20adb4bc8cadcc4fa7930aef36a");
    assert!(git.fetch_submodules && !git.leave_dot_git && !git.deep_clone && !git.fetch_lfs);
    assert!(git.sparse_checkout.is_empty());

    let bootstrap = fetch_of("bootstrapTools");
    assert_eq!(bootstrap.kind, Kind::Builtin);
    assert_eq!(
        bootstrap.urls,
        ["http://fixture-a.invalid/bootstrap/bootstrap-tools.sh"]
    );

    let vendor = fetch_of("hello-vendored.vendor");
    assert_eq!(vendor.kind, Kind::Other);
    assert!(vendor.urls.is_empty());
}
