//! The synchronous core against the real Nix: NAR bytes against `nix-store --dump`, narinfo
//! against `nix copy`, and caches and hashed mirrors that `nix-store --realise` substitutes
//! from while the derivation's builder (`/bin/false`) could never build them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use srcgrab_fetcher::store::{tree, unpack, Error};
use srcgrab_fetcher::store::{Cache, CacheOptions, Compression, Layout};
use srcgrab_formats::hash::{Hash, HashAlgo, HashMode};
use srcgrab_formats::narinfo::NarInfo;
use srcgrab_formats::signature::SecretKey;
use srcgrab_formats::StorePathName;
use srcgrab_manifest::{Entry, Kind, Unpack};

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The hash real Nix computes: flat over the bytes, or recursive over the NAR.
fn nix_hash(path: &Path, algo: HashAlgo, mode: HashMode) -> Hash {
    let mut args = vec!["--type", algo.name(), "--base32"];
    if mode == HashMode::Flat {
        args.push("--flat");
    }
    args.push(path_str(path));
    Hash::parse_digest(algo, &run("nix-hash", &args)).unwrap()
}

fn entry(name: &str, mode: HashMode, hash: &Hash, executable: bool) -> Entry {
    Entry {
        executable,
        ..Entry::new(&StorePathName::new(name).unwrap(), mode, hash, Kind::Url)
    }
}

/// Bytes no earlier run has used, so their store path cannot already be valid.
fn unique_bytes(len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
    if len >= 16 {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_le_bytes();
        bytes[..16].copy_from_slice(&stamp);
    }
    bytes
}

/// A fixed-output derivation whose builder always fails: only substitution can realise it.
fn unbuildable_drv(dir: &Path, entry: &Entry) -> String {
    let mode = match entry.hash.mode {
        HashMode::Flat => "flat",
        HashMode::Recursive => "recursive",
    };
    let hash = entry.hash.hash.clone();
    let expr = format!(
        "derivation {{ name = \"{}\"; system = builtins.currentSystem; builder = \"/bin/false\"; \
         outputHashMode = \"{mode}\"; outputHashAlgo = \"{}\"; outputHash = \"{}\"; }}",
        entry.name,
        hash.algo,
        hash.to_nix32()
    );
    let file = dir.join(format!("{}.nix", entry.name));
    fs::write(&file, expr).unwrap();
    run("nix-instantiate", &[path_str(&file)])
}

/// Realises `entry` from the binary cache at `cache` alone and returns its store path.
fn realise_from_cache(cache: &Path, entry: &Entry, extra: &[&str]) -> Result<String, String> {
    let scratch = tempfile::tempdir().unwrap();
    let drv = unbuildable_drv(scratch.path(), entry);
    assert!(
        !Path::new(&entry.store_path.to_path_string()).exists(),
        "{} already valid",
        entry.store_path
    );
    let substituter = format!("file://{}", path_str(cache));
    let mut args = vec![
        "--realise",
        &drv,
        "--option",
        "substituters",
        &substituter,
        "--option",
        "builders",
        "",
    ];
    args.extend_from_slice(extra);
    let output = Command::new("nix-store").args(&args).output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap().trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn hash_part(store_path: &str) -> &str {
    &store_path["/nix/store/".len().."/nix/store/".len() + 32]
}

fn open(root: &Path, compression: Compression) -> Cache {
    Cache::open(
        root,
        CacheOptions {
            compression,
            ..CacheOptions::default()
        },
    )
    .unwrap()
}

/// A tree with every node type, odd names, empty things and sizes around the 8-byte padding.
fn odd_tree(root: &Path) {
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    for size in [0usize, 1, 7, 8, 9, 15, 16, 17, 65_537] {
        fs::write(root.join(format!("size-{size}")), unique_bytes(size)).unwrap();
    }
    fs::write(root.join("nested/deeper/deepest/leaf"), b"leaf\n").unwrap();
    fs::write(root.join("-dash ünïcødé\ttab"), b"odd").unwrap();
    fs::write(root.join("B-upper"), b"sorts before lower case").unwrap();
    fs::write(root.join("a.b"), b"dot").unwrap();
    let script = root.join("nested/run.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("deeper/deepest/leaf", root.join("nested/rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("nested", root.join("dir-link")).unwrap();
}

#[test]
fn nar_is_byte_identical_to_nix_store_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    odd_tree(&tree);
    let mut ours = Vec::new();
    let size = tree::dump_path(&tree, &mut ours).unwrap();
    let theirs = Command::new("nix-store")
        .args(["--dump", path_str(&tree)])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(size, ours.len() as u64);
    assert!(ours == theirs, "NAR differs from nix-store --dump");

    for name in ["size-0", "size-9", "nested/run.sh", "abs-link"] {
        let path = tree.join(name);
        let mut single = Vec::new();
        tree::dump_path(&path, &mut single).unwrap();
        let theirs = Command::new("nix-store")
            .args(["--dump", path_str(&path)])
            .output()
            .unwrap()
            .stdout;
        assert!(single == theirs, "NAR of {name} differs");
    }

    // write_file_nar wraps bytes as the NAR of a single file would be.
    let script = tree.join("nested/run.sh");
    let contents = fs::read(&script).unwrap();
    let mut wrapped = Vec::new();
    srcgrab_formats::nar::write_file_nar(
        &mut contents.as_slice(),
        contents.len() as u64,
        true,
        &mut wrapped,
    )
    .unwrap();
    let mut dumped = Vec::new();
    tree::dump_path(&script, &mut dumped).unwrap();
    assert_eq!(wrapped, dumped);
}

#[test]
fn nar_hash_matches_nix_hash_and_restore_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    odd_tree(&tree);
    let mut hasher = HashAlgo::Sha256.hasher();
    tree::dump_path(&tree, &mut hasher).unwrap();
    assert_eq!(
        hasher.finalize(),
        nix_hash(&tree, HashAlgo::Sha256, HashMode::Recursive)
    );

    let mut bytes = Vec::new();
    tree::dump_path(&tree, &mut bytes).unwrap();
    let copy = tmp.path().join("copy");
    tree::restore(bytes.as_slice(), &copy).unwrap();
    assert_eq!(
        nix_hash(&copy, HashAlgo::Sha256, HashMode::Recursive),
        nix_hash(&tree, HashAlgo::Sha256, HashMode::Recursive)
    );
}

#[test]
fn parses_the_narinfo_nix_copy_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("copied.txt");
    fs::write(&file, unique_bytes(1000)).unwrap();
    let store_path = run("nix-store", &["--add-fixed", "sha256", path_str(&file)]);
    let cache = tmp.path().join("cache");
    let to = format!("file://{}", path_str(&cache));
    run(
        "nix",
        &[
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--to",
            &to,
            &store_path,
        ],
    );
    let hash_part = hash_part(&store_path);
    let text = fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).unwrap();
    let info = NarInfo::parse(&text).unwrap();
    assert_eq!(info.store_path.to_path_string(), store_path);
    assert_eq!(info.compression, Compression::Xz);
    assert_eq!(
        info.nar_hash,
        nix_hash(
            Path::new(&store_path),
            HashAlgo::Sha256,
            HashMode::Recursive
        )
    );
    assert_eq!(
        info.ca.as_ref().map(|ca| ca.to_string()).as_deref(),
        Some(
            format!(
                "fixed:sha256:{}",
                nix_hash(&file, HashAlgo::Sha256, HashMode::Flat).to_nix32()
            )
            .as_str()
        )
    );
    assert_eq!(
        fs::metadata(cache.join(&info.url)).unwrap().len(),
        info.file_size.unwrap()
    );
    assert_eq!(NarInfo::parse(&info.render()).unwrap(), info);
}

#[test]
fn nix_substitutes_flat_executable_and_tree_entries_in_every_compression() {
    for compression in [
        Compression::Zstd,
        Compression::Xz,
        Compression::Bzip2,
        Compression::None,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(&tmp.path().join("cache"), compression);

        let flat_file = tmp.path().join("flat");
        // Over 4 MiB, so the bytes are hashed on a helper thread.
        fs::write(&flat_file, unique_bytes(5 << 20)).unwrap();
        let flat_hash = nix_hash(&flat_file, HashAlgo::Sha256, HashMode::Flat);
        let flat = entry("flat.tar.gz", HashMode::Flat, &flat_hash, false);
        cache.publish_file(&flat, &flat_file).unwrap();

        let exe_file = tmp.path().join("exe");
        fs::write(&exe_file, unique_bytes(5000)).unwrap();
        fs::set_permissions(&exe_file, fs::Permissions::from_mode(0o755)).unwrap();
        let exe_hash = nix_hash(&exe_file, HashAlgo::Sha256, HashMode::Recursive);
        let exe = entry("tool", HashMode::Recursive, &exe_hash, true);
        // Downloads arrive non-executable; the entry says what the store path holds.
        fs::set_permissions(&exe_file, fs::Permissions::from_mode(0o644)).unwrap();
        cache.publish_file(&exe, &exe_file).unwrap();

        let tree = tmp.path().join("tree");
        odd_tree(&tree);
        let tree_hash = nix_hash(&tree, HashAlgo::Sha512, HashMode::Recursive);
        let tree_entry = entry("source", HashMode::Recursive, &tree_hash, false);
        cache.publish_tree(&tree_entry, &tree).unwrap();

        for (published, original) in [(&flat, &flat_file), (&exe, &exe_file), (&tree_entry, &tree)]
        {
            let out = realise_from_cache(cache.root(), published, &[])
                .unwrap_or_else(|e| panic!("{compression:?} {}: {e}", published.name));
            assert_eq!(out, published.store_path.to_path_string());
            let mode = published.hash.mode;
            let algo = published.hash.hash.algo;
            let expected = published.hash.hash.clone();
            assert_eq!(nix_hash(Path::new(&out), algo, mode), expected);
            if published.executable {
                let perms = fs::metadata(&out).unwrap().permissions().mode();
                assert_eq!(perms & 0o111, 0o111, "{out} not executable");
            } else if mode == HashMode::Flat {
                assert_eq!(fs::read(&out).unwrap(), fs::read(original).unwrap());
            }
            let hash_part = hash_part(&out);
            cache.verify_narinfo(hash_part).unwrap();
        }
    }
}

#[test]
fn signed_narinfo_without_ca_is_accepted_only_with_the_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("secret");
    let public_file = tmp.path().join("public");
    run(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "srcgrab-test-1",
            path_str(&secret_file),
            path_str(&public_file),
        ],
    );
    let key = SecretKey::parse(&fs::read_to_string(&secret_file).unwrap()).unwrap();
    let public = fs::read_to_string(&public_file).unwrap();
    assert_eq!(key.public_key().to_string(), public.trim());

    let root = tmp.path().join("cache");
    let cache = Cache::open(
        &root,
        CacheOptions {
            signing_key: Some(key),
            ..CacheOptions::default()
        },
    )
    .unwrap();
    let file = tmp.path().join("signed");
    fs::write(&file, unique_bytes(4000)).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let signed = entry("signed", HashMode::Flat, &hash, false);
    cache.publish_file(&signed, &file).unwrap();

    // Without CA, Nix has only the signature to go by.
    let hash_part = signed.store_path.hash_part();
    let narinfo = root.join(format!("{hash_part}.narinfo"));
    let text = fs::read_to_string(&narinfo).unwrap();
    assert!(text.contains("\nSig: srcgrab-test-1:"), "{text}");
    let without_ca: String = text
        .lines()
        .filter(|l| !l.starts_with("CA:"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&narinfo, without_ca).unwrap();

    let other_key = "other-1:72GsXfidZW3bU1RKMuYGHsrUl99P8eylPLFR3OYsyTw=";
    let refused = realise_from_cache(
        &root,
        &signed,
        &["--option", "trusted-public-keys", other_key],
    );
    assert!(refused.is_err(), "accepted without a trusted key");
    let accepted = realise_from_cache(
        &root,
        &signed,
        &["--option", "trusted-public-keys", public.trim()],
    );
    assert_eq!(accepted.unwrap(), signed.store_path.to_path_string());
}

/// The lock a live cache holds on its scratch directory (`.tmp/run-XXXX.lock`).
fn is_scratch_lock(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name.starts_with("run-") && name.ends_with(".lock")
}

#[test]
fn hash_mismatch_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = open(&root, Compression::Zstd);
    let file = tmp.path().join("file");
    fs::write(&file, b"actual bytes").unwrap();
    let claimed = Hash {
        algo: HashAlgo::Sha256,
        bytes: HashAlgo::Sha256.digest(b"other bytes"),
    };
    let wrong = entry("file", HashMode::Flat, &claimed, false);
    let err = cache.publish_file(&wrong, &file).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");

    let mut nar_stream = Vec::new();
    tree::dump_path(&file, &mut nar_stream).unwrap();
    let err = cache
        .publish_nar(&wrong, &mut nar_stream.as_slice())
        .unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");

    let tree_claim = entry("tree", HashMode::Recursive, &claimed, false);
    let err = cache.publish_tree(&tree_claim, tmp.path()).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");

    let leftovers: Vec<PathBuf> = walk(&root)
        .into_iter()
        .filter(|p| p.is_file() || p.is_symlink())
        .filter(|p| p.file_name().unwrap() != "nix-cache-info")
        .filter(|p| !is_scratch_lock(p))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn a_right_hash_under_the_wrong_store_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(&tmp.path().join("cache"), Compression::Zstd);
    let file = tmp.path().join("file");
    fs::write(&file, b"content").unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let mut renamed = entry("file", HashMode::Flat, &hash, false);
    renamed.store_path = entry("other-name", HashMode::Flat, &hash, false).store_path;
    let err = cache.publish_file(&renamed, &file).unwrap_err();
    assert!(matches!(err, Error::StorePathMismatch { .. }), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

#[test]
fn publish_nar_takes_nix_store_dump_output_and_fills_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = open(&root, Compression::Zstd);
    let file = tmp.path().join("upstream");
    let bytes = unique_bytes(5 << 20);
    fs::write(&file, &bytes).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha1, HashMode::Flat);
    let flat = entry("upstream.tar", HashMode::Flat, &hash, false);
    let mut dump = Command::new("nix-store")
        .args(["--dump", path_str(&file)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let published = cache
        .publish_nar(&flat, dump.stdout.as_mut().unwrap())
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert_eq!(
        published.nar_hash,
        nix_hash(&file, HashAlgo::Sha256, HashMode::Recursive)
    );
    assert_eq!(
        published.nar_size,
        srcgrab_formats::nar::file_nar_size(bytes.len() as u64, false)
    );
    let sha256 = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    assert_eq!(
        fs::read(root.join("sha256").join(sha256.to_hex())).unwrap(),
        bytes
    );
    // The declared sha1 is reachable in hex, nix32 and SRI form.
    for key in [
        format!("sha1/{}", hash.to_hex()),
        format!("sha1/{}", hash.to_nix32()),
        hash.to_sri(),
    ] {
        assert_eq!(fs::read(root.join(&key)).unwrap(), bytes, "{key}");
    }
    assert!(cache.is_present(&flat).unwrap());
    let hash_part = flat.store_path.hash_part();
    assert!(cache.verify_narinfo(hash_part).unwrap().mirror_checked);
    // A flat sha1 output (CA fixed:sha1:...) substitutes too.
    let out = realise_from_cache(&root, &flat, &[]).unwrap();
    assert_eq!(fs::read(out).unwrap(), bytes);
}

#[test]
fn verify_reports_a_nar_that_does_not_match_its_narhash() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = open(&root, Compression::None);
    let file = tmp.path().join("victim");
    fs::write(&file, unique_bytes(1000)).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let victim = entry("victim", HashMode::Flat, &hash, false);
    cache.publish_file(&victim, &file).unwrap();
    let hash_part = victim.store_path.hash_part();
    cache.verify_narinfo(hash_part).unwrap();

    let info =
        NarInfo::parse(&fs::read_to_string(root.join(format!("{hash_part}.narinfo"))).unwrap())
            .unwrap();
    let nar_file = root.join(&info.url);
    let mut bytes = fs::read(&nar_file).unwrap();
    let last_content_byte = bytes.len() - 16 - 1;
    bytes[last_content_byte] ^= 1;
    fs::write(&nar_file, bytes).unwrap();
    match cache.verify_narinfo(hash_part) {
        Err(Error::HashMismatch { what, .. }) => assert!(what.contains("NarHash"), "{what}"),
        other => panic!("expected a NarHash mismatch, got {other:?}"),
    }
    // The cheap presence check notices too: the NAR file was written to since its seal, so
    // the entry counts as absent and the next fetch publishes it again.
    assert!(!cache.is_present(&victim).unwrap());
    cache.publish_file(&victim, &file).unwrap();
    assert!(cache.is_present(&victim).unwrap());
    cache.verify_narinfo(hash_part).unwrap();
}

#[test]
fn builtin_fetchurl_downloads_from_the_hashed_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = Cache::open(
        &root,
        CacheOptions {
            layout: Layout {
                cache: false,
                mirror: true,
            },
            ..CacheOptions::default()
        },
    )
    .unwrap();
    for algo in [HashAlgo::Sha256, HashAlgo::Sha512, HashAlgo::Sha1] {
        let file = tmp.path().join(format!("mirrored-{algo}"));
        fs::write(&file, unique_bytes(20_000)).unwrap();
        let hash = nix_hash(&file, algo, HashMode::Flat);
        let name = format!("mirrored-{algo}.tar.gz");
        let mirrored = entry(&name, HashMode::Flat, &hash, false);
        cache.publish_file(&mirrored, &file).unwrap();
        assert!(cache.is_present(&mirrored).unwrap());
        assert!(!root
            .join(format!(
                "{}.narinfo",
                hash_part(&mirrored.store_path.to_path_string())
            ))
            .exists());
        // Leave only `<algo>/<hex>`, to show that is the key Nix 2.8 asks for (the URL,
        // a closed port on loopback, would fail).
        fs::remove_file(root.join(algo.name()).join(hash.to_nix32())).unwrap();
        fs::remove_file(root.join(hash.to_sri())).unwrap();

        let expr = tmp.path().join(format!("{name}.nix"));
        fs::write(
            &expr,
            format!(
                "import <nix/fetchurl.nix> {{ url = \"http://127.0.0.1:1/{name}\"; {algo} = \"{}\"; }}",
                hash.to_nix32()
            ),
        )
        .unwrap();
        let drv = run("nix-instantiate", &[path_str(&expr)]);
        let mirror = format!("file://{}/", path_str(&root));
        let out = run(
            "nix-store",
            &[
                "--realise",
                &drv,
                "--option",
                "substituters",
                "",
                "--option",
                "hashed-mirrors",
                &mirror,
            ],
        );
        assert_eq!(out, mirrored.store_path.to_path_string());
        assert_eq!(fs::read(&out).unwrap(), fs::read(&file).unwrap());
    }
}

#[test]
fn nixpkgs_style_sri_mirror_urls_resolve_even_with_a_slash_in_base64() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = open(&root, Compression::Zstd);
    let (file, hash) = loop {
        let file = tmp.path().join("slashed");
        fs::write(&file, unique_bytes(100)).unwrap();
        let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
        if hash.to_base64().contains('/') {
            break (file, hash);
        }
    };
    let slashed = entry("slashed", HashMode::Flat, &hash, false);
    cache.publish_file(&slashed, &file).unwrap();
    // nixpkgs' fetchurl asks for "$mirror/$outputHashAlgo/$outputHash" with an empty algo.
    let url = format!("file://{}//{}", path_str(&root), hash.to_sri());
    let fetched = tmp.path().join("fetched");
    run(
        "curl",
        &["--fail", "--silent", "--output", path_str(&fetched), &url],
    );
    assert_eq!(fs::read(fetched).unwrap(), fs::read(&file).unwrap());
    let url = format!("file://{}/sha256/{}", path_str(&root), hash.to_nix32());
    run(
        "curl",
        &["--fail", "--silent", "--output", "/dev/null", &url],
    );
}

#[test]
fn concurrent_publishes_of_one_entry_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(&tmp.path().join("cache"), Compression::Zstd);
    let file = tmp.path().join("shared");
    fs::write(&file, unique_bytes(200_000)).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let shared = entry("shared", HashMode::Flat, &hash, false);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| cache.publish_file(&shared, &file).unwrap());
        }
    });
    let hash_part = shared.store_path.hash_part();
    assert!(cache.verify_narinfo(hash_part).unwrap().mirror_checked);
    assert_eq!(fs::read_dir(cache.temp_dir()).unwrap().count(), 0);
}

/// A tmpfs too small for the file, unmounted when dropped.
struct TinyFilesystem(PathBuf);

impl Drop for TinyFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("tiny");
    fs::create_dir(&mount).unwrap();
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=512k", "tmpfs", path_str(&mount)],
    );
    let _guard = TinyFilesystem(mount.clone());
    let cache = open(&mount, Compression::None);
    let file = tmp.path().join("big");
    fs::write(&file, unique_bytes(2 << 20)).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let big = entry("big", HashMode::Flat, &hash, false);
    let err = cache.publish_file(&big, &file).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(fs::read_dir(cache.temp_dir()).unwrap().count(), 0);
    assert!(!cache.is_present(&big).unwrap());
    assert_eq!(fs::read_dir(mount.join("nar")).unwrap().count(), 0);
}

/// What fetchzip's postFetch produces, by running the same tools: GNU tar or unzip in an
/// empty directory, then the single top-level entry (or the directory itself).
fn fetchzip_reference(archive: &Path, zip: bool, strip_root: bool, out: &Path) {
    let unpack_dir = PathBuf::from(format!("{}.unpack", path_str(out)));
    fs::create_dir(&unpack_dir).unwrap();
    let status = if zip {
        Command::new("unzip")
            .args(["-qq", path_str(archive)])
            .current_dir(&unpack_dir)
            .status()
    } else {
        Command::new("tar")
            .args([
                "xf",
                path_str(archive),
                "--mode=+w",
                "--warning=no-timestamp",
            ])
            .current_dir(&unpack_dir)
            .status()
    };
    assert!(status.unwrap().success(), "reference unpack of {archive:?}");
    if strip_root {
        let mut entries: Vec<_> = fs::read_dir(&unpack_dir).unwrap().collect();
        assert_eq!(entries.len(), 1);
        fs::rename(entries.pop().unwrap().unwrap().path(), out).unwrap();
    } else {
        fs::rename(&unpack_dir, out).unwrap();
    }
}

fn unpack_options(strip_root: bool) -> Unpack {
    Unpack {
        strip_root,
        extension: None,
    }
}

#[test]
fn unpack_matches_gnu_tar_and_unzip_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let top = src.join("pkg-1.0");
    odd_tree(&top);
    // A hard link, and a name too long for a plain ustar header.
    fs::hard_link(top.join("a.b"), top.join("nested/hard-link")).unwrap();
    let long = top.join(format!("nested/deeper/{}", "long-name-".repeat(15)));
    fs::write(&long, b"long").unwrap();
    // A file with a hole, for GNU tar's sparse entries (-S).
    let sparse = top.join("sparse");
    fs::write(&sparse, b"start").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&sparse)
        .unwrap()
        .set_len(3 << 20)
        .unwrap();
    let mut end = fs::OpenOptions::new().append(true).open(&sparse).unwrap();
    std::io::Write::write_all(&mut end, b"end").unwrap();
    let expected = nix_hash(&top, HashAlgo::Sha256, HashMode::Recursive);

    let archives: &[(&str, &[&str])] = &[
        ("pkg.tar.gz", &["czf"]),
        ("pkg.tar.xz", &["cJf"]),
        ("pkg.tar.bz2", &["cjf"]),
        ("pkg.tar.zst", &["--zstd", "-cf"]),
        ("pkg.tar", &["--format=pax", "-cf"]),
        ("pkg-sparse.tar.gz", &["--sparse", "-czf"]),
        ("pkg.tar.lzma", &["--lzma", "-cf"]),
        // Misnamed on purpose: GNU tar goes by the magic bytes, and so must we.
        ("pkg.tar.bz2-really-gzip.tar.gz", &["cjf"]),
    ];
    for (name, flags) in archives {
        let archive = tmp.path().join(name);
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([path_str(&archive), "-C", path_str(&src), "pkg-1.0"]);
        run("tar", &args);
        let dest = tmp.path().join(format!("ours-{name}"));
        let url = format!("https://example.org/download/{name}");
        unpack::unpack(&archive, &url, &unpack_options(true), &dest)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            nix_hash(&dest, HashAlgo::Sha256, HashMode::Recursive),
            expected,
            "{name}"
        );
        let reference = tmp.path().join(format!("reference-{name}"));
        fetchzip_reference(&archive, false, true, &reference);
        assert_eq!(
            nix_hash(&reference, HashAlgo::Sha256, HashMode::Recursive),
            expected
        );
        assert_eq!(
            fs::read_link(dest.join("abs-link")).unwrap(),
            Path::new("/nonexistent/absolute")
        );
    }

    let zip = tmp.path().join("pkg.zip");
    Command::new("zip")
        .args(["-qry", path_str(&zip), "pkg-1.0"])
        .current_dir(&src)
        .status()
        .unwrap();
    let dest = tmp.path().join("ours-zip");
    // No extension in the URL: fetchzip's `extension` says what it is.
    let options = Unpack {
        strip_root: true,
        extension: Some("zip".into()),
    };
    unpack::unpack(&zip, "https://example.org/get?id=1", &options, &dest).unwrap();
    let reference = tmp.path().join("reference-zip");
    fetchzip_reference(&zip, true, true, &reference);
    assert_eq!(
        nix_hash(&dest, HashAlgo::Sha256, HashMode::Recursive),
        nix_hash(&reference, HashAlgo::Sha256, HashMode::Recursive)
    );

    let flat = tmp.path().join("ours-unstripped");
    unpack::unpack(&zip, "x/pkg.zip", &unpack_options(false), &flat).unwrap();
    assert!(flat.join("pkg-1.0/nested/run.sh").is_file());
}

#[test]
fn git_archive_tarball_unpacks_and_nix_substitutes_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    odd_tree(&repo);
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "snapshot"]);
    // Like a forge's archive download: a pax global header with the commit, one top directory.
    let archive = tmp.path().join("repo-main.tar.gz");
    git(&[
        "archive",
        "--format=tar.gz",
        "--prefix=repo-main/",
        "-o",
        path_str(&archive),
        "HEAD",
    ]);

    let reference = tmp.path().join("reference");
    fetchzip_reference(&archive, false, true, &reference);
    let hash = nix_hash(&reference, HashAlgo::Sha256, HashMode::Recursive);
    let dest = tmp.path().join("ours");
    unpack::unpack(
        &archive,
        "https://example.org/owner/repo/archive/main.tar.gz",
        &unpack_options(true),
        &dest,
    )
    .unwrap();
    let source = entry("source", HashMode::Recursive, &hash, false);
    let cache = open(&tmp.path().join("cache"), Compression::Zstd);
    cache.publish_tree(&source, &dest).unwrap();
    let out = realise_from_cache(cache.root(), &source, &[]).unwrap();
    assert_eq!(out, source.store_path.to_path_string());
    assert_eq!(
        nix_hash(Path::new(&out), HashAlgo::Sha256, HashMode::Recursive),
        hash
    );
}

#[test]
fn strip_root_needs_exactly_one_top_level_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("b"), b"b").unwrap();
    let two = tmp.path().join("two.tar.gz");
    run(
        "tar",
        &["czf", path_str(&two), "-C", path_str(&src), "a", "b"],
    );
    let err = unpack::unpack(
        &two,
        "two.tar.gz",
        &unpack_options(true),
        &tmp.path().join("x"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unpack { .. }), "{err}");
    assert!(
        err.to_string().contains("single file or directory"),
        "{err}"
    );

    // A lone file becomes the only entry of the output directory, as fetchzip's `mkdir $out`.
    let one = tmp.path().join("one.tar");
    run("tar", &["cf", path_str(&one), "-C", path_str(&src), "b"]);
    let dest = tmp.path().join("single");
    unpack::unpack(&one, "one.tar", &unpack_options(true), &dest).unwrap();
    assert_eq!(fs::read(dest.join("b")).unwrap(), b"b");

    let junk = tmp.path().join("junk.bin");
    fs::write(&junk, b"not an archive at all").unwrap();
    let err = unpack::unpack(
        &junk,
        "junk.bin",
        &unpack_options(true),
        &tmp.path().join("j"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("do not know how to unpack"),
        "{err}"
    );
}

/// A tar entry with exactly the given raw name, type and link target (the `tar` crate's
/// builder refuses hostile names, so the header is written by hand).
fn raw_tar_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Name, type and link target of a hand-made tar entry.
type TarEntrySpec<'a> = (&'a str, tar::EntryType, &'a str);
/// Name of a zip entry, and its target when it is a symlink.
type ZipEntrySpec<'a> = (&'a str, Option<&'a str>);

#[test]
fn hostile_archives_are_refused_without_writing_outside() {
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_str = path_str(&outside).to_string();
    let escape_link = format!("{outside_str}/");
    let cases: Vec<(&str, Vec<TarEntrySpec>)> = vec![
        ("dotdot", vec![("top/../../outside/evil", Regular, "")]),
        (
            "absolute",
            vec![
                (outside_str.as_str(), Directory, ""),
                ("/tmp/srcgrab-evil", Regular, ""),
            ],
        ),
        (
            "through absolute symlink",
            vec![
                ("top/link", Symlink, escape_link.as_str()),
                ("top/link/evil", Regular, ""),
            ],
        ),
        (
            "through relative symlink",
            vec![("top/up", Symlink, "../.."), ("top/up/evil", Regular, "")],
        ),
        (
            "hard link outside",
            vec![("top/hard", Link, "../../etc/passwd")],
        ),
        (
            "hard link absolute",
            vec![("top/hard", Link, "/etc/passwd")],
        ),
        ("character device", vec![("top/tty", Char, "")]),
        ("block device", vec![("top/disk", Block, "")]),
        ("fifo", vec![("top/pipe", Fifo, "")]),
    ];
    for (what, entries) in cases {
        let mut bytes = Vec::new();
        for (name, kind, link) in entries {
            raw_tar_entry(
                &mut bytes,
                name,
                kind,
                link,
                if kind == Regular { b"evil" } else { b"" },
            );
        }
        bytes.resize(bytes.len() + 1024, 0);
        let archive = tmp.path().join("hostile.tar");
        fs::write(&archive, &bytes).unwrap();
        let dest = tmp.path().join("dest");
        let err =
            unpack::unpack(&archive, "hostile.tar", &unpack_options(false), &dest).unwrap_err();
        assert!(matches!(err, Error::UnsafeArchive { .. }), "{what}: {err}");
        assert!(!dest.exists(), "{what}: left a destination");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{what}: wrote outside"
        );
        assert!(!Path::new("/tmp/srcgrab-evil").exists());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            2,
            "{what}: left staging files"
        );
    }

    // The same in a zip: a name with '..', and a file written through a symlink.
    let zip_cases: [(&str, &[ZipEntrySpec]); 2] = [
        ("zip dotdot", &[("top/../../evil", None)]),
        (
            "zip through symlink",
            &[("top/link", Some("/tmp")), ("top/link/srcgrab-evil", None)],
        ),
    ];
    for (what, entries) in zip_cases {
        let archive = tmp.path().join("hostile.zip");
        let mut writer = zip::ZipWriter::new(fs::File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        for (name, symlink_target) in entries {
            match symlink_target {
                Some(target) => writer.add_symlink(*name, *target, options).unwrap(),
                None => {
                    writer.start_file(*name, options).unwrap();
                    std::io::Write::write_all(&mut writer, b"evil").unwrap();
                }
            }
        }
        writer.finish().unwrap();
        let dest = tmp.path().join("dest");
        let err =
            unpack::unpack(&archive, "hostile.zip", &unpack_options(false), &dest).unwrap_err();
        assert!(matches!(err, Error::UnsafeArchive { .. }), "{what}: {err}");
        assert!(!Path::new("/tmp/srcgrab-evil").exists(), "{what}");
        assert!(!dest.exists(), "{what}: left a destination");
    }
}

#[test]
fn verify_reports_a_tampered_mirror_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = open(&root, Compression::Zstd);
    let file = tmp.path().join("mirrored");
    fs::write(&file, unique_bytes(3000)).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let mirrored = entry("mirrored", HashMode::Flat, &hash, false);
    cache.publish_file(&mirrored, &file).unwrap();
    let hash_part = mirrored.store_path.hash_part();
    assert!(cache.verify_narinfo(hash_part).unwrap().mirror_checked);

    let mirror_file = root.join("sha256").join(hash.to_hex());
    let mut bytes = fs::read(&mirror_file).unwrap();
    bytes[0] ^= 1;
    fs::remove_file(&mirror_file).unwrap();
    fs::write(&mirror_file, bytes).unwrap();
    match cache.verify_narinfo(hash_part) {
        Err(Error::HashMismatch { what, .. }) => assert!(what.contains("sha256/"), "{what}"),
        other => panic!("expected a mirror mismatch, got {other:?}"),
    }
    fs::remove_file(&mirror_file).unwrap();
    assert!(matches!(
        cache.verify_narinfo(hash_part),
        Err(Error::Io { .. })
    ));
}

/// A narinfo whose URL names a sealed file of the cache that is no NAR file (here the
/// entry's own mirror file) does not make its entry present: a fetch publishes it again.
#[test]
fn a_narinfo_pointing_outside_nar_does_not_count_as_present() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = open(&root, Compression::None);
    let file = tmp.path().join("pointed");
    fs::write(&file, unique_bytes(3000)).unwrap();
    let hash = nix_hash(&file, HashAlgo::Sha256, HashMode::Flat);
    let pointed = entry("pointed", HashMode::Flat, &hash, false);
    cache.publish_file(&pointed, &file).unwrap();
    assert!(cache.is_present(&pointed).unwrap());
    let narinfo = root.join(format!("{}.narinfo", pointed.store_path.hash_part()));
    let text = fs::read_to_string(&narinfo).unwrap();
    let url = text.lines().find(|l| l.starts_with("URL: ")).unwrap();
    let mirror_file = format!("URL: sha256/{}", hash.to_hex());
    fs::write(&narinfo, text.replace(url, &mirror_file)).unwrap();
    assert!(!cache.is_present(&pointed).unwrap());
}
