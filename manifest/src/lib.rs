//! The srcgrab manifest: every fixed-output derivation (FOD) a package set needs, as
//! written by `srcgrab enumerate` and read by `srcgrab fetch`, `diff` and friends.
//!
//! The JSON form is documented in `docs/manifest.md`. It is stable: entries are sorted by
//! store path, lists are sorted, and nothing time-dependent is stored, so the same input
//! gives byte-identical output and manifests diff well under version control.
//! The Nix primitives it is made of (hashes, store paths) live in `srcgrab-formats`; this
//! crate does no I/O.

pub mod build_graph;
pub mod check;
pub mod diff;
pub mod shard;

use serde::{Deserialize, Serialize};
pub use srcgrab_formats::store_path::DrvPath;
use std::collections::BTreeMap;

pub use build_graph::{Attribute, BuildGraph, BuiltDerivation};
pub use shard::Shard;
pub use srcgrab_formats::{ContentAddress, Hash, HashAlgo, HashMode, StorePath, StorePathName};

/// Version of the manifest format this crate writes. Version 2 added the `derived` kind
/// and `build` (`enumerate --outputs`); a version 1 manifest is read as it is (its kinds
/// are a subset, and it has no build graph).
pub const MANIFEST_VERSION: u32 = 2;

/// Oldest manifest version this crate still reads.
pub const OLDEST_READ_VERSION: u32 = 1;

/// How many attribute paths an entry lists before only counting them.
pub const MAX_LISTED_ATTRS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub provenance: Provenance,
    /// Attributes whose evaluation failed, sorted by (system, attr).
    pub failures: Vec<Failure>,
    /// One entry per fixed output path, sorted by `store_path`.
    pub entries: Vec<Entry>,
    /// The build graph (`enumerate --outputs`); empty otherwise.
    #[serde(default, skip_serializing_if = "BuildGraph::is_empty")]
    pub build: BuildGraph,
}

/// Where a manifest came from, so a reader can tell two manifests apart and reproduce them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provenance {
    /// The nixpkgs tree evaluated (`--nixpkgs`), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nixpkgs: Option<String>,
    /// `git rev-parse HEAD` of that tree when it is a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nixpkgs_rev: Option<String>,
    /// The expression file evaluated (`--file`), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `--arg`/`--argstr` given to the file; values as written on the command line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, EvalArg>,
    /// Attribute paths asked for (`--attr`); empty means the whole set.
    #[serde(default)]
    pub attrs: Vec<String>,
    pub systems: Vec<String>,
    /// `nix --version` of the evaluator used.
    pub nix_version: String,
    pub config: EvalConfig,
    /// The part of the attribute paths evaluated (`--shard K/N`); absent for a whole run
    /// and in the manifest `srcgrab merge` makes of all parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum EvalArg {
    /// `--arg NAME EXPR`: a Nix expression.
    Expr(String),
    /// `--argstr NAME VALUE`: a string.
    Str(String),
}

/// The nixpkgs `config` flags the evaluation ran with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalConfig {
    pub allow_unfree: bool,
    pub allow_broken: bool,
    pub allow_insecure: bool,
}

/// An attribute that could not be evaluated; recorded as data, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failure {
    pub system: String,
    pub attr: String,
    /// First line of Nix's error message (or what killed the evaluator).
    pub error: String,
}

/// What kind of fetcher produced a FOD, which decides how `srcgrab fetch` obtains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A file downloaded as is (nixpkgs' fetchurl).
    Url,
    /// A download unpacked into a tree (fetchzip, fetchFromGitHub's archive fetch).
    UrlUnpack,
    /// A git checkout (fetchgit and the forges' fetchers when they use git).
    Git,
    Hg,
    Svn,
    /// Nix's own `builtin:fetchurl` (the bootstrap tools).
    Builtin,
    /// Made by Nix's builder from other entries of the manifest plus the build toolchain,
    /// without the network (a texlive container unpacking a fetched tarball): rebuildable
    /// offline with `--builder nix`.
    Derived,
    /// Anything else: vendor hashes, custom fetchers; made by Nix's builder with the
    /// network, so it must come from a substituter or be built before going offline.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Url,
        Kind::UrlUnpack,
        Kind::Git,
        Kind::Hg,
        Kind::Svn,
        Kind::Builtin,
        Kind::Derived,
        Kind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Url => "url",
            Kind::UrlUnpack => "url-unpack",
            Kind::Git => "git",
            Kind::Hg => "hg",
            Kind::Svn => "svn",
            Kind::Builtin => "builtin",
            Kind::Derived => "derived",
            Kind::Other => "other",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `Entry.hash` in JSON: `{"algo", "mode", "sri"}`. The SRI is parsed here, once, so the
/// rest of srcgrab holds a [`ContentAddress`]: one that does not parse, or is of another
/// algorithm than `algo`, is refused with the manifest's line and column.
mod declared_hash {
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
    use srcgrab_formats::hash::HashError;
    use srcgrab_formats::{ContentAddress, Hash, HashAlgo, HashMode};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Json {
        algo: HashAlgo,
        mode: HashMode,
        /// `algo-base64`.
        sri: String,
    }

    pub fn serialize<S: Serializer>(ca: &ContentAddress, s: S) -> Result<S::Ok, S::Error> {
        Json {
            algo: ca.hash.algo,
            mode: ca.mode,
            sri: ca.hash.to_sri(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContentAddress, D::Error> {
        let json = Json::deserialize(d)?;
        let hash = Hash::parse(&json.sri, None).map_err(D::Error::custom)?;
        if hash.algo != json.algo {
            return Err(D::Error::custom(HashError::BadEncoding(
                json.sri, json.algo,
            )));
        }
        Ok(ContentAddress {
            mode: json.mode,
            hash,
        })
    }
}

/// How the unpacked tree of a `url-unpack` entry is formed (fetchzip's arguments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Unpack {
    /// Strip the single top-level directory (fetchzip's `stripRoot`, default true).
    pub strip_root: bool,
    /// fetchzip's `extension`, when the URL does not say what the archive is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// A git source, with nixpkgs fetchgit's flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSource {
    pub url: String,
    /// A commit hash, or a ref when the package gave no commit.
    pub rev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_name: Option<String>,
    pub fetch_submodules: bool,
    pub leave_dot_git: bool,
    pub deep_clone: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse_checkout: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_cone_mode: bool,
    pub fetch_lfs: bool,
}

impl GitSource {
    /// A plain checkout of `rev` from `url`: no submodules, no kept `.git`, shallow, no
    /// sparse checkout, no LFS (what a forge archive's source is; fetchgit itself defaults to
    /// fetching submodules).
    pub fn plain(url: impl Into<String>, rev: impl Into<String>) -> GitSource {
        GitSource {
            url: url.into(),
            rev: rev.into(),
            branch_name: None,
            fetch_submodules: false,
            leave_dot_git: false,
            deep_clone: false,
            sparse_checkout: Vec::new(),
            non_cone_mode: false,
            fetch_lfs: false,
        }
    }
}

/// One fixed output to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    pub store_path: StorePath,
    /// The store path's name part (e.g. `hello-2.12.tar.gz`).
    pub name: String,
    /// The declared hash and its mode (fetchurl's `outputHash` and `outputHashMode`).
    #[serde(with = "declared_hash")]
    pub hash: ContentAddress,
    pub kind: Kind,
    /// Download URLs in the order to try them, `mirror://` expanded from the evaluated
    /// nixpkgs' own mirror list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The URLs as the package wrote them, before mirror expansion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub original_urls: Vec<String>,
    /// The downloaded file is made executable (fetchurl's `executable`); the hash is then recursive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// The fetcher runs a `postFetch` step; the downloaded bytes alone may not match the hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post_fetch: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack: Option<Unpack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// The derivations producing this output, by the system that builds them (the .drv's
    /// own `system`): fetchers are built by each system's stdenv, so a source needed on two
    /// systems has two derivations, and only the host's can be realised on the host.
    pub drv_paths: BTreeMap<String, DrvPath>,
    /// Systems whose evaluation needs this output, sorted.
    pub systems: Vec<String>,
    /// The first attribute paths (sorted, at most [`MAX_LISTED_ATTRS`]) whose build closure
    /// holds this output, on any of `systems`.
    pub attrs: Vec<String>,
    /// How many attribute paths pull it in, in all.
    pub attr_count: u64,
}

impl Entry {
    /// An entry for the fixed output `name` whose `hash` in `mode` determines its store path,
    /// with nothing else known yet (no URL, derivation, system or attribute).
    pub fn new(name: &StorePathName, mode: HashMode, hash: &Hash, kind: Kind) -> Entry {
        let ca = ContentAddress {
            mode,
            hash: hash.clone(),
        };
        Entry {
            store_path: ca.store_path(name),
            name: name.to_string(),
            hash: ca,
            kind,
            urls: Vec::new(),
            original_urls: Vec::new(),
            executable: false,
            post_fetch: false,
            unpack: None,
            git: None,
            drv_paths: BTreeMap::new(),
            systems: Vec::new(),
            attrs: Vec::new(),
            attr_count: 0,
        }
    }

    /// The derivation to realise on a `host` system: the one built by that system, else the
    /// first (Nix then says which system it needs).
    pub fn drv_path_for(&self, host: &str) -> Option<&DrvPath> {
        self.drv_paths
            .get(host)
            .or_else(|| self.drv_paths.values().next())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not marked as the source: the message already holds it, and a chain printed with
    /// its sources would say it twice.
    #[error("not a srcgrab manifest: {0}")]
    Json(serde_json::Error),
    #[error(
        "manifest version {found} is not supported (this srcgrab reads versions {OLDEST_READ_VERSION} to {MANIFEST_VERSION})"
    )]
    Version { found: u64 },
    #[error("manifest entry {store_path}: {reason}")]
    BadEntry {
        store_path: StorePath,
        reason: String,
    },
    #[error("manifest entries are not sorted by store path, or repeat one, at {0}")]
    Unsorted(StorePath),
    #[error("manifest derivations are not sorted by drv path, or repeat one, at {0}")]
    UnsortedDerivations(DrvPath),
}

impl From<serde_json::Error> for ManifestError {
    fn from(err: serde_json::Error) -> ManifestError {
        ManifestError::Json(err)
    }
}

impl Manifest {
    /// Parses and checks a manifest: its version first (so an old or new format gets a clear
    /// message rather than a field error), then every entry's store path against its hash.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<serde_json::Value>,
        }
        let v: VersionOnly = serde_json::from_str(text)?;
        match v.version.as_ref().and_then(|v| v.as_u64()) {
            Some(n) if (OLDEST_READ_VERSION as u64..=MANIFEST_VERSION as u64).contains(&n) => {}
            Some(n) => return Err(ManifestError::Version { found: n }),
            None if v.version.is_some() => {
                let found = v
                    .version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Err(ManifestError::Json(serde::de::Error::custom(format!(
                    "\"version\" must be a whole number, not {found}"
                ))));
            }
            None => {
                return Err(ManifestError::Json(serde::de::Error::custom(
                    "no \"version\" field",
                )))
            }
        }
        let m: Manifest = serde_json::from_str(text)?;
        m.validate()?;
        Ok(m)
    }

    /// Stable JSON: pretty, entries in store-path order, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }

    /// Checks what serde cannot: sorted unique entries, and that each store path is the one
    /// its name, hash and mode produce (so a typo cannot send a wrong file into a cache).
    pub fn validate(&self) -> Result<(), ManifestError> {
        for pair in self.entries.windows(2) {
            if pair[0].store_path >= pair[1].store_path {
                return Err(ManifestError::Unsorted(pair[1].store_path.clone()));
            }
        }
        for pair in self.build.derivations.windows(2) {
            if pair[0].drv_path >= pair[1].drv_path {
                return Err(ManifestError::UnsortedDerivations(pair[1].drv_path.clone()));
            }
        }
        for e in &self.entries {
            let bad = |reason: String| ManifestError::BadEntry {
                store_path: e.store_path.clone(),
                reason,
            };
            let path = &e.store_path;
            if path.name().as_str() != e.name {
                return Err(bad(format!(
                    "name '{}' differs from the store path's",
                    e.name
                )));
            }
            let expected = e.hash.store_path(path.name());
            if expected != *path {
                return Err(bad(format!(
                    "hash {} ({:?}) gives {}, not this path",
                    e.hash.hash.to_sri(),
                    e.hash.mode,
                    expected.to_path_string()
                )));
            }
            if e.drv_paths.is_empty() {
                return Err(bad("no derivation in drvPaths".into()));
            }
            if e.kind == Kind::Git && e.git.is_none() {
                return Err(bad("kind git without a git source".into()));
            }
        }
        Ok(())
    }

    /// Sorts entries and failures into their canonical order.
    pub fn normalize(&mut self) {
        self.entries.sort_by(|a, b| a.store_path.cmp(&b.store_path));
        self.failures.sort();
        self.build.normalize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_entry() -> Entry {
        let hash = Hash::parse(
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            None,
        )
        .unwrap();
        Entry {
            store_path: "/nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty"
                .parse()
                .unwrap(),
            name: "empty".into(),
            hash: ContentAddress {
                mode: HashMode::Flat,
                hash,
            },
            kind: Kind::Url,
            urls: vec!["https://example.org/empty".into()],
            original_urls: vec!["mirror://example/empty".into()],
            executable: false,
            post_fetch: false,
            unpack: None,
            git: None,
            drv_paths: [(
                "x86_64-linux".to_string(),
                "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-empty.drv"
                    .parse()
                    .unwrap(),
            )]
            .into(),
            systems: vec!["x86_64-linux".into()],
            attrs: vec!["hello".into()],
            attr_count: 1,
        }
    }

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            provenance: Provenance {
                systems: vec!["x86_64-linux".into()],
                nix_version: "nix-instantiate (Nix) 2.8.0".into(),
                ..Provenance::default()
            },
            failures: vec![],
            entries: vec![sample_entry()],
            build: Default::default(),
        }
    }

    /// hello, built from the sample entry and a stdenv.
    fn sample_build() -> BuildGraph {
        let hello: DrvPath = "/nix/store/11111111111111111111111111111111-hello.drv"
            .parse()
            .unwrap();
        let stdenv: DrvPath = "/nix/store/22222222222222222222222222222222-stdenv.drv"
            .parse()
            .unwrap();
        let built = |drv_path: &DrvPath, out: &str| BuiltDerivation {
            drv_path: drv_path.clone(),
            system: "x86_64-linux".into(),
            outputs: [("out".to_string(), out.parse().unwrap())].into(),
            inputs: Vec::new(),
            sources: Vec::new(),
        };
        let mut hello_drv = built(&hello, "/nix/store/33333333333333333333333333333333-hello");
        hello_drv.inputs = vec![stdenv.clone()];
        hello_drv.sources = vec![sample_entry().store_path];
        BuildGraph {
            derivations: vec![
                hello_drv,
                built(
                    &stdenv,
                    "/nix/store/44444444444444444444444444444444-stdenv",
                ),
            ],
            attributes: vec![Attribute {
                system: "x86_64-linux".into(),
                attr: "hello".into(),
                drv_path: hello,
            }],
        }
    }

    #[test]
    fn json_round_trips_byte_identically() {
        for build in [BuildGraph::default(), sample_build()] {
            let m = Manifest { build, ..sample() };
            let text = m.to_json();
            let back = Manifest::from_json(&text).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.to_json(), text);
        }
        // Typed paths are written as the strings they are read from.
        assert_eq!(
            serde_json::to_string(&sample_build()).unwrap(),
            concat!(
                r#"{"derivations":[{"#,
                r#""drvPath":"/nix/store/11111111111111111111111111111111-hello.drv","#,
                r#""system":"x86_64-linux","#,
                r#""outputs":{"out":"/nix/store/33333333333333333333333333333333-hello"},"#,
                r#""inputs":["/nix/store/22222222222222222222222222222222-stdenv.drv"],"#,
                r#""sources":["/nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty"]},{"#,
                r#""drvPath":"/nix/store/22222222222222222222222222222222-stdenv.drv","#,
                r#""system":"x86_64-linux","#,
                r#""outputs":{"out":"/nix/store/44444444444444444444444444444444-stdenv"},"#,
                r#""inputs":[],"sources":[]}],"#,
                r#""attributes":[{"system":"x86_64-linux","attr":"hello","#,
                r#""drvPath":"/nix/store/11111111111111111111111111111111-hello.drv"}]}"#,
            )
        );
    }

    /// Build graph paths are checked as the JSON is read, with the place of the bad one.
    #[test]
    fn rejects_a_build_graph_path_that_is_not_a_store_path() {
        let text = Manifest {
            build: sample_build(),
            ..sample()
        }
        .to_json();
        for (pointer, bad) in [
            ("/build/derivations/0/drvPath", "/nix/store/short.drv"),
            (
                "/build/derivations/0/outputs/out",
                "/tmp/33333333333333333333333333333333-hello",
            ),
            (
                "/build/derivations/0/inputs/0",
                "/nix/store/22222222222222222222222222222222-stdenv",
            ),
            ("/build/derivations/0/sources/0", "/nix/store/short"),
            ("/build/attributes/0/drvPath", "hello.drv"),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            *v.pointer_mut(pointer).unwrap() = bad.into();
            let bad_text = serde_json::to_string_pretty(&v).unwrap();
            let err = Manifest::from_json(&bad_text).unwrap_err();
            let ManifestError::Json(json) = &err else {
                panic!("{pointer}: {err}");
            };
            assert!(json.line() > 1, "{pointer}: {err}");
            assert!(err.to_string().contains(bad), "{pointer}: {err}");
        }
    }

    #[test]
    fn rejects_wrong_version_with_a_clear_message() {
        let text = sample()
            .to_json()
            .replace("\"version\": 2", "\"version\": 7");
        let err = Manifest::from_json(&text).unwrap_err();
        assert!(matches!(err, ManifestError::Version { found: 7 }), "{err}");
        assert!(err.to_string().contains("version 7"));
    }

    #[test]
    fn reads_a_version_1_manifest_as_it_is() {
        let text = sample()
            .to_json()
            .replace("\"version\": 2", "\"version\": 1");
        let m = Manifest::from_json(&text).unwrap();
        assert_eq!((m.version, m.entries), (1, sample().entries));
        assert!(m.build.is_empty());
    }

    #[test]
    fn rejects_a_store_path_its_hash_does_not_make() {
        let mut m = sample();
        m.entries[0].hash.mode = HashMode::Recursive;
        let err = Manifest::from_json(&m.to_json()).unwrap_err();
        assert!(matches!(err, ManifestError::BadEntry { .. }), "{err}");
    }

    #[test]
    fn a_declared_hash_is_parsed_once_when_the_manifest_is_read() {
        let text = sample().to_json();
        let sri = sample().entries[0].hash.hash.to_sri();
        assert!(text.contains(&sri), "{text}");
        for (bad, says) in [
            (text.replace(&sri, "sha256-not base64"), "sha256-not base64"),
            (
                text.replace("\"algo\": \"sha256\"", "\"algo\": \"sha512\""),
                "sha512",
            ),
        ] {
            let err = Manifest::from_json(&bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("line "), "{err}");
        }
    }

    #[test]
    fn new_entry_computes_its_store_path() {
        let e = sample_entry();
        let name = StorePathName::new(&e.name).unwrap();
        let made = Entry::new(&name, e.hash.mode, &e.hash.hash, e.kind);
        assert_eq!(made.store_path, e.store_path);
        assert_eq!(made.hash, e.hash);
    }

    #[test]
    fn picks_the_host_systems_derivation_else_the_first() {
        let mut e = sample_entry();
        let other = "/nix/store/00000000000000000000000000000000-a.drv";
        e.drv_paths
            .insert("aarch64-linux".into(), other.parse().unwrap());
        let drv_for = |e: &Entry, system: &str| e.drv_path_for(system).map(|d| d.to_string());
        assert_eq!(
            drv_for(&e, "x86_64-linux").as_deref(),
            Some("/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-empty.drv")
        );
        assert_eq!(drv_for(&e, "riscv64-linux").as_deref(), Some(other));
        e.drv_paths.clear();
        assert_eq!(e.drv_path_for("x86_64-linux"), None);
        let mut m = sample();
        m.entries[0].drv_paths.clear();
        assert!(matches!(
            Manifest::from_json(&m.to_json()),
            Err(ManifestError::BadEntry { .. })
        ));
    }

    #[test]
    fn rejects_malformed_json_and_unknown_fields() {
        assert!(matches!(
            Manifest::from_json("{"),
            Err(ManifestError::Json(_))
        ));
        let text = sample()
            .to_json()
            .replace("\"kind\": \"url\"", "\"kind\": \"url\", \"extra\": 1");
        assert!(matches!(
            Manifest::from_json(&text),
            Err(ManifestError::Json(_))
        ));
    }
}
