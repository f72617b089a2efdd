//! Which fetcher made a FOD, read from its derivation env the way nixpkgs' fetchers write it,
//! and the URLs to download with `mirror://` expanded as nixpkgs' fetchurl builder.sh does.

use srcgrab_formats::aterm::Derivation;
use srcgrab_manifest::{GitSource, Kind, Unpack};
use std::collections::BTreeMap;

/// How to obtain one FOD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub kind: Kind,
    pub urls: Vec<String>,
    /// The URLs as written, when mirror expansion changed them.
    pub original_urls: Vec<String>,
    pub executable: bool,
    pub post_fetch: bool,
    pub unpack: Option<Unpack>,
    pub git: Option<GitSource>,
}

/// mirror:// sites: name -> base URLs in order.
pub type Mirrors = BTreeMap<String, Vec<String>>;

/// Classifies a FOD. `mirrors` is the env of its `mirrors-list` input (nixpkgs' fetchurl),
/// when it has one.
pub fn classify(drv: &Derivation, mirrors: Option<&BTreeMap<String, String>>) -> Fetch {
    let env = |key: &str| drv.env_str(key);
    let flag = |key: &str| env(key) == "1";
    let mut fetch = Fetch {
        kind: Kind::Other,
        urls: Vec::new(),
        original_urls: Vec::new(),
        executable: false,
        post_fetch: false,
        unpack: None,
        git: None,
    };
    // Nix's builtin:fetchurl writes `url` (and `urls` in newer versions); the VCS fetchers `url`.
    let url_or_urls = || {
        let urls = split_words(env("urls"));
        if urls.is_empty() {
            split_words(env("url"))
        } else {
            urls
        }
    };

    if drv.builder == "builtin:fetchurl" {
        fetch.kind = Kind::Builtin;
        fetch.urls = url_or_urls();
        fetch.executable = flag("executable");
        // `unpack` means the download is a NAR to unpack: the bytes are not the output.
        fetch.post_fetch = flag("unpack");
        return fetch;
    }
    let has = |key: &str| drv.env.contains_key(key);
    if has("rev") && (has("fetchSubmodules") || has("leaveDotGit") || has("deepClone")) {
        fetch.kind = Kind::Git;
        fetch.post_fetch = !env("postFetch").trim().is_empty();
        fetch.git = Some(GitSource {
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
        return fetch;
    }
    if has("rev") && has("subrepoClause") {
        fetch.kind = Kind::Hg;
        fetch.urls = url_or_urls();
        return fetch;
    }
    if has("rev") && (has("ignoreExternals") || has("ignoreKeywords")) {
        fetch.kind = Kind::Svn;
        fetch.urls = url_or_urls();
        return fetch;
    }
    // nixpkgs' fetchurl (and fetchzip on top of it) always writes `urls`; a lone `url`
    // belongs to some other fetcher (bzr, darcs, fossil, ...) that only Nix can run.
    let written_urls = split_words(env("urls"));
    if written_urls.is_empty() || has("rev") {
        return fetch;
    }
    let recursive = env("outputHashMode") == "recursive";
    let post_fetch = env("postFetch");
    let unpacks = recursive && !flag("executable") && is_fetchzip(post_fetch);
    let (urls, expanded) = match mirrors {
        Some(sites) => expand_mirrors(&written_urls, sites),
        None => (written_urls.clone(), false),
    };
    fetch.urls = urls;
    if expanded {
        fetch.original_urls = written_urls;
    }
    if unpacks {
        fetch.kind = Kind::UrlUnpack;
        fetch.unpack = Some(Unpack {
            strip_root: if has("stripRoot") {
                flag("stripRoot")
            } else {
                post_fetch.contains("$unpackDir/$fn")
            },
            extension: Some(env("extension").to_string()).filter(|e| !e.is_empty()),
        });
        fetch.post_fetch = has_own_post_fetch(post_fetch);
    } else if recursive
        && !flag("executable")
        && (flag("downloadToTemp") || !post_fetch.trim().is_empty())
    {
        // A recursive hash of a download that a postFetch turns into something else: only
        // the fetcher's own builder knows what it makes.
        fetch.post_fetch = true;
    } else {
        fetch.kind = Kind::Url;
        fetch.executable = flag("executable");
        fetch.post_fetch = !post_fetch.trim().is_empty();
    }
    fetch
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
        let fetch = classify(&d, None);
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
    fn custom_builders_and_unknown_vcs_fetchers_are_other() {
        let vendor = drv(
            "/bin/sh",
            &[("outputHashMode", "recursive"), ("src", "/nix/store/x")],
        );
        assert_eq!(classify(&vendor, None).kind, Kind::Other);
        let bzr = drv(
            "/bin/sh",
            &[
                ("url", "https://x/trunk"),
                ("rev", "42"),
                ("outputHashMode", "recursive"),
            ],
        );
        assert_eq!(classify(&bzr, None).kind, Kind::Other);
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
        let fetch = classify(&hg, None);
        assert_eq!(
            (fetch.kind, fetch.urls),
            (Kind::Hg, vec!["https://hg.x/r".to_string()])
        );
        let svn = drv(
            "/bin/sh",
            &[("url", "svn://s/x"), ("rev", "7"), ("ignoreExternals", "")],
        );
        assert_eq!(classify(&svn, None).kind, Kind::Svn);
    }
}
