//! Which fetcher made a FOD, read from its derivation env the way nixpkgs' fetchers write it,
//! and the URLs to download with `mirror://` expanded as nixpkgs' fetchurl builder.sh does.

use srcgrab_formats::aterm::Derivation;
use srcgrab_manifest::{Entry, GitSource, Kind, Unpack};
use std::collections::BTreeMap;

/// Fills in how to obtain one FOD: the `kind` of `entry` and the fields that go with it
/// (URLs, unpacking, git source, flags). `mirrors` is the env of its `mirrors-list` input
/// (nixpkgs' fetchurl), when it has one.
///
/// A FOD is recognised by what its builder does, not by the attributes that ride along:
/// nixpkgs' fetchurl builder (and fetchzip, fetchFromGitHub's archives, fetchCrate,
/// fetchpatch, fetchPypi on top of it) always writes `urls` and `mirrorsFile`, whatever
/// else a derived fetcher passes in `derivationArgs` (owner, repo, tag, rev, revCustom...).
pub fn classify(drv: &Derivation, mirrors: Option<&BTreeMap<String, String>>, entry: &mut Entry) {
    let env = |key: &str| drv.env_str(key);
    let flag = |key: &str| env(key) == "1";
    let has = |key: &str| drv.env.contains_key(key);
    // Nix's builtin:fetchurl writes `url` (and `urls` in newer versions); the VCS fetchers `url`.
    let url_or_urls = || {
        let urls = split_words(env("urls"));
        if urls.is_empty() {
            split_words(env("url"))
        } else {
            urls
        }
    };
    let written_urls = split_words(env("urls"));

    if drv.builder == "builtin:fetchurl" {
        entry.kind = Kind::Builtin;
        entry.urls = url_or_urls();
        entry.executable = flag("executable");
        // `unpack` means the download is a NAR to unpack: the bytes are not the output.
        entry.post_fetch = flag("unpack");
    } else if !written_urls.is_empty() && has("mirrorsFile") {
        classify_fetchurl(drv, written_urls, mirrors, entry);
    } else if has("rev") && (has("fetchSubmodules") || has("leaveDotGit") || has("deepClone")) {
        entry.kind = Kind::Git;
        entry.post_fetch = !env("postFetch").trim().is_empty();
        entry.git = Some(GitSource {
            url: env("url").to_string(),
            rev: env("rev").to_string(),
            branch_name: Some(env("branchName").to_string()).filter(|b| !b.is_empty()),
            fetch_submodules: flag("fetchSubmodules"),
            leave_dot_git: flag("leaveDotGit"),
            deep_clone: flag("deepClone"),
            sparse_checkout: split_words(env("sparseCheckout")),
            non_cone_mode: flag("nonConeMode"),
            fetch_lfs: flag("fetchLFS"),
        });
    } else if has("rev") && has("subrepoClause") {
        entry.kind = Kind::Hg;
        entry.urls = url_or_urls();
    } else if has("rev") && (has("ignoreExternals") || has("ignoreKeywords")) {
        entry.kind = Kind::Svn;
        entry.urls = url_or_urls();
    } else if !written_urls.is_empty() && !has("rev") {
        // A fetchurl-shaped derivation without nixpkgs' mirror list (older or smaller sets).
        classify_fetchurl(drv, written_urls, mirrors, entry);
    } else {
        // A lone `url` (bzr, darcs, fossil, ...), or no URL at all: only Nix can run it.
        entry.kind = Kind::Other;
    }
}

/// A download by nixpkgs' fetchurl builder: kept as is (`url`), unpacked by fetchzip's
/// postFetch (`url-unpack`), or turned into something else by its own postFetch (`other`).
fn classify_fetchurl(
    drv: &Derivation,
    written_urls: Vec<String>,
    mirrors: Option<&BTreeMap<String, String>>,
    entry: &mut Entry,
) {
    let env = |key: &str| drv.env_str(key);
    let flag = |key: &str| env(key) == "1";
    let recursive = env("outputHashMode") == "recursive";
    let post_fetch = env("postFetch");
    let unpacks = recursive && !flag("executable") && is_fetchzip(post_fetch);
    let (urls, expanded) = match mirrors {
        Some(sites) => expand_mirrors(&written_urls, sites),
        None => (written_urls.clone(), false),
    };
    entry.urls = urls;
    if expanded {
        entry.original_urls = written_urls;
    }
    if unpacks {
        entry.kind = Kind::UrlUnpack;
        entry.unpack = Some(Unpack {
            strip_root: if drv.env.contains_key("stripRoot") {
                flag("stripRoot")
            } else {
                post_fetch.contains("$unpackDir/$fn")
            },
            extension: Some(env("extension").to_string()).filter(|e| !e.is_empty()),
        });
        entry.post_fetch = has_own_post_fetch(post_fetch);
    } else if recursive
        && !flag("executable")
        && (flag("downloadToTemp") || !post_fetch.trim().is_empty())
    {
        // A recursive hash of a download that a postFetch turns into something else: only
        // the fetcher's own builder knows what it makes.
        entry.kind = Kind::Other;
        entry.post_fetch = true;
    } else {
        entry.kind = Kind::Url;
        entry.executable = flag("executable");
        entry.post_fetch = !post_fetch.trim().is_empty();
    }
}

/// Whether an FOD that no fetcher of srcgrab's makes is made without the network, i.e. is
/// `derived`: it asks for none of the network's variables (`impureEnvVars`: the proxies,
/// GOPROXY, credentials that vendor-hash and custom fetchers ask for) and it builds on
/// fetched inputs (one of its input derivations is an FOD, hence an entry of the same
/// manifest). Its other inputs are the build toolchain, whose sources are entries too.
pub fn is_derived(drv: &Derivation, is_fixed_output: impl Fn(&str) -> bool) -> bool {
    drv.env_str("impureEnvVars").trim().is_empty()
        && drv.input_drvs.keys().any(|path| is_fixed_output(path))
}

fn split_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// fetchzip's postFetch moves the download aside and unpacks it into `$unpackDir`.
fn is_fetchzip(post_fetch: &str) -> bool {
    post_fetch.contains("unpackDir=") && post_fetch.contains("$downloadedFile")
}

/// Whether a fetchzip postFetch does more than fetchzip's own unpacking: its own lines all
/// deal with the download, the unpack folder or the stripRoot check, so any other line came
/// from the package.
fn has_own_post_fetch(post_fetch: &str) -> bool {
    const OWN_MARKERS: [&str; 6] = [
        "unpackDir",
        "renamed",
        "$fn",
        "downloadedFile",
        "$out",
        "stripRoot",
    ];
    const OWN_LINES: [&str; 7] = ["fi", "exit 1", "esac", "else", "then", "done", ";;"];
    post_fetch.lines().map(str::trim).any(|line| {
        !line.is_empty()
            && !line.starts_with('#')
            && !OWN_LINES.contains(&line)
            && !OWN_MARKERS.iter().any(|m| line.contains(m))
            && !line.starts_with("echo \"error: zip file")
            && !line.starts_with("echo \"hint:")
    })
}

/// Expands `mirror://SITE/PATH` exactly as nixpkgs' fetchurl builder.sh: every base URL of
/// SITE (in its order) followed directly by PATH; a URL of an unknown site is dropped (the
/// builder only warns). Returns the URLs and whether any was a mirror URL.
pub fn expand_mirrors(urls: &[String], sites: &BTreeMap<String, String>) -> (Vec<String>, bool) {
    let mut expanded = false;
    let mut out = Vec::new();
    for url in urls {
        let Some(rest) = url.strip_prefix("mirror://") else {
            out.push(url.clone());
            continue;
        };
        expanded = true;
        let (site, file_name) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(bases) = sites.get(site) {
            out.extend(
                bases
                    .split_whitespace()
                    .map(|base| format!("{base}{file_name}")),
            );
        }
    }
    (out, expanded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use srcgrab_formats::aterm::DrvOutput;
    use srcgrab_manifest::{Hash, HashAlgo, HashMode, StorePathName};

    /// The entry classify makes of `drv`.
    fn classified(drv: &Derivation) -> Entry {
        let hash = Hash::parse_digest(HashAlgo::Sha256, &"00".repeat(32)).unwrap();
        let mut entry = Entry::new(
            &StorePathName::new("x").unwrap(),
            HashMode::Recursive,
            &hash,
            Kind::Other,
        );
        classify(drv, None, &mut entry);
        entry
    }

    fn drv(builder: &str, env: &[(&str, &str)]) -> Derivation {
        Derivation {
            outputs: vec![DrvOutput {
                name: "out".into(),
                path: "/nix/store/00000000000000000000000000000000-x".into(),
                hash_algo: "sha256".into(),
                hash: "00".into(),
            }],
            input_drvs: Default::default(),
            input_srcs: vec![],
            system: "x86_64-linux".into(),
            builder: builder.into(),
            args: vec![],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn mirror_urls_expand_like_the_fetchurl_builder() {
        let sites: BTreeMap<String, String> = [
            ("gnu", "https://a.example/gnu/ https://b.example/pub/gnu/"),
            ("bare", "https://c.example"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let urls: Vec<String> = [
            "mirror://gnu/hello/hello.tar.gz",
            "https://d.example/x",
            "mirror://nosuch/y",
            "mirror://bare",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let (out, expanded) = expand_mirrors(&urls, &sites);
        assert!(expanded);
        assert_eq!(
            out,
            [
                "https://a.example/gnu/hello/hello.tar.gz",
                "https://b.example/pub/gnu/hello/hello.tar.gz",
                "https://d.example/x",
                "https://c.example",
            ]
        );
    }

    #[test]
    fn fetchzip_without_a_package_post_fetch_is_not_flagged() {
        let own = "unpackDir=\"$TMPDIR/unpack\"\nmkdir \"$unpackDir\"\nmv \"$downloadedFile\" \"$renamed\"\nfi\nmv \"$unpackDir/$fn\" \"$out\"\n\nchmod 755 \"$out\"\n";
        assert!(!has_own_post_fetch(own));
        assert!(has_own_post_fetch(&format!("{own}rm -r tests\n")));
        let d = drv(
            "/bin/sh",
            &[
                ("urls", "http://x/a.tgz"),
                ("outputHashMode", "recursive"),
                ("postFetch", own),
            ],
        );
        let fetch = classified(&d);
        assert_eq!(fetch.kind, Kind::UrlUnpack);
        assert_eq!(
            fetch.unpack,
            Some(Unpack {
                strip_root: true,
                extension: None
            })
        );
        assert!(!fetch.post_fetch);
    }

    #[test]
    fn a_fetchurl_builder_is_a_download_whatever_rides_along() {
        // fetchFromGitHub's archive today: fetchzip's env plus owner, repo, tag, rev and
        // revCustom from derivationArgs.
        let own = "unpackDir=\"$TMPDIR/unpack\"\nmv \"$downloadedFile\" \"$renamed\"\nunpackFile \"$renamed\"\nmv \"$unpackDir/$fn\" \"$out\"\n";
        let archive = drv(
            "/bin/bash",
            &[
                ("urls", "https://github.com/o/r/archive/refs/tags/v1.tar.gz"),
                ("mirrorsFile", "/nix/store/x-mirrors-list"),
                ("outputHashMode", "recursive"),
                ("downloadToTemp", "1"),
                ("postFetch", own),
                ("extension", "tar.gz"),
                ("stripRoot", "1"),
                ("owner", "o"),
                ("repo", "r"),
                ("tag", "v1"),
                ("rev", "refs/tags/v1"),
                ("revCustom", ""),
            ],
        );
        let entry = classified(&archive);
        assert_eq!(entry.kind, Kind::UrlUnpack);
        assert_eq!(
            entry.urls,
            ["https://github.com/o/r/archive/refs/tags/v1.tar.gz"]
        );
        assert!(!entry.post_fetch && entry.git.is_none());
        // The same attributes without fetchurl's mirror list: some other fetcher.
        let mut bare = archive.clone();
        bare.env.remove("mirrorsFile");
        assert_eq!(classified(&bare).kind, Kind::Other);
    }

    #[test]
    fn custom_builders_and_unknown_vcs_fetchers_are_other() {
        let vendor = drv(
            "/bin/sh",
            &[("outputHashMode", "recursive"), ("src", "/nix/store/x")],
        );
        assert_eq!(classified(&vendor).kind, Kind::Other);
        let bzr = drv(
            "/bin/sh",
            &[
                ("url", "https://x/trunk"),
                ("rev", "42"),
                ("outputHashMode", "recursive"),
            ],
        );
        assert_eq!(classified(&bzr).kind, Kind::Other);
    }

    #[test]
    fn hg_and_svn_by_their_markers() {
        let hg = drv(
            "/bin/sh",
            &[
                ("url", "https://hg.x/r"),
                ("rev", "abc"),
                ("subrepoClause", ""),
            ],
        );
        let fetch = classified(&hg);
        assert_eq!(
            (fetch.kind, fetch.urls),
            (Kind::Hg, vec!["https://hg.x/r".to_string()])
        );
        let svn = drv(
            "/bin/sh",
            &[("url", "svn://s/x"), ("rev", "7"), ("ignoreExternals", "")],
        );
        assert_eq!(classified(&svn).kind, Kind::Svn);
    }
}
