//! Nix's rule for splitting a name into package and version (`builtins.parseDrvName`) and
//! for ordering versions (`builtins.compareVersions`), so a manifest diff or an ingested
//! file pairs `openssl-3.0.13` with `openssl-3.0.14` as Nix itself would.

use std::cmp::Ordering;

/// Extensions stripped before splitting a name, longest first where one ends another.
const ARCHIVE_EXTENSIONS: &[&str] = &[
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
    ".tar.lz",
    ".tar.lzma",
    ".tar.Z",
    ".tgz",
    ".tbz2",
    ".tbz",
    ".txz",
    ".tzst",
    ".tar",
    ".zip",
    ".gz",
    ".bz2",
    ".xz",
    ".zst",
    ".lz",
    ".7z",
    ".jar",
    ".gem",
    ".whl",
    ".crate",
    ".deb",
    ".rpm",
    ".patch",
    ".diff",
];

/// `name` without a trailing archive extension (`hello-2.12.tar.gz` → `hello-2.12`).
pub fn strip_archive_extension(name: &str) -> &str {
    ARCHIVE_EXTENSIONS
        .iter()
        .find_map(|ext| name.strip_suffix(ext).filter(|rest| !rest.is_empty()))
        .unwrap_or(name)
}

/// Splits a name as `builtins.parseDrvName` does: the version starts after the first `-`
/// that is followed by something other than a letter (Nix 2.8: `foo-_bar` → `foo`, `_bar`).
pub fn parse_drv_name(name: &str) -> (&str, &str) {
    let bytes = name.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && i + 1 < bytes.len() && !bytes[i + 1].is_ascii_alphabetic() {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

/// Compares versions as `builtins.compareVersions`: components are runs of digits or runs
/// of other characters, split at `.` and `-`; numbers compare numerically, `pre` sorts
/// before anything, a missing component before a number, a word before a number.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut rest_a, mut rest_b) = (a, b);
    while !rest_a.is_empty() || !rest_b.is_empty() {
        let (ca, ra) = next_version_component(rest_a);
        let (cb, rb) = next_version_component(rest_b);
        (rest_a, rest_b) = (ra, rb);
        if component_less(ca, cb) {
            return Ordering::Less;
        }
        if component_less(cb, ca) {
            return Ordering::Greater;
        }
    }
    Ordering::Equal
}

fn next_version_component(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(['.', '-']);
    let digits = s.as_bytes().first().is_some_and(u8::is_ascii_digit);
    let end = s
        .find(|c: char| {
            if digits {
                !c.is_ascii_digit()
            } else {
                c.is_ascii_digit() || c == '.' || c == '-'
            }
        })
        .unwrap_or(s.len());
    s.split_at(end)
}

fn component_less(a: &str, b: &str) -> bool {
    let number = |s: &str| {
        s.as_bytes()
            .first()
            .is_some_and(u8::is_ascii_digit)
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x < y,
        (_, Some(_)) if a.is_empty() => true,
        _ if a == "pre" && b != "pre" => true,
        _ if b == "pre" => false,
        (_, Some(_)) => true,
        (Some(_), _) => false,
        _ => a < b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_like_parse_drv_name() {
        // Expected values printed by `builtins.parseDrvName` on Nix 2.8.
        assert_eq!(parse_drv_name("openssl-3.0.13"), ("openssl", "3.0.13"));
        assert_eq!(parse_drv_name("xorg-server-1.2"), ("xorg-server", "1.2"));
        assert_eq!(parse_drv_name("foo-_bar"), ("foo", "_bar"));
        assert_eq!(parse_drv_name("foo--1"), ("foo", "-1"));
        assert_eq!(parse_drv_name("foo-bar-x1"), ("foo-bar-x1", ""));
        assert_eq!(parse_drv_name("source"), ("source", ""));
        assert_eq!(
            strip_archive_extension("openssl-3.0.13.tar.gz"),
            "openssl-3.0.13"
        );
        assert_eq!(strip_archive_extension("x.patch"), "x");
    }

    #[test]
    fn compares_versions_like_nix() {
        // Expected values printed by `builtins.compareVersions` on Nix 2.8.
        let cases = [
            ("1.0", "1.0.1", Ordering::Less),
            ("1.0pre1", "1.0", Ordering::Less),
            ("1.0a", "1.0", Ordering::Greater),
            ("2.0", "10.0", Ordering::Less),
            ("1.0", "1.0", Ordering::Equal),
            ("1.0-rc1", "1.0", Ordering::Greater),
            ("1.0", "1.0.a", Ordering::Less),
            ("1.0.a", "1.0.1", Ordering::Less),
            ("", "1", Ordering::Less),
            ("2.0", "2.0pre", Ordering::Greater),
            ("1.0b", "1.0a", Ordering::Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        }
    }
}
