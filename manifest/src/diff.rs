//! Differences between two manifests (see `srcgrab diff`).
//!
//! Entries are matched by store path first (a store path names its content, so equal paths
//! are the same source). What is left on each side is then paired by *package*: the name
//! without its version, as Nix's `builtins.parseDrvName` splits it, after archive extensions
//! are stripped, so `openssl-3.0.13.tar.gz` → `openssl-3.0.14.tar.gz` reads as one update
//! rather than a removal and an addition. Names that carry no version (fetchFromGitHub's
//! `source`) are told apart by where they come from (git URL, or URL without its last
//! segment) instead, so two unrelated `source` entries are never paired.

use crate::{Entry, Failure, Kind, Manifest};
use serde::Serialize;
use srcgrab_formats::name::{compare_versions, parse_drv_name, strip_archive_extension};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

/// What identifies "the same package" across two manifests, and its version on one side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PackageKey {
    package: String,
    /// Where an unversioned name comes from (`None` for versioned names); `Some("")` when
    /// nothing says, which allows pairing only a lone entry on each side.
    origin: Option<String>,
}

fn package_of(entry: &Entry) -> (PackageKey, String) {
    let (package, version) = parse_drv_name(strip_archive_extension(&entry.name));
    if !version.is_empty() {
        let key = PackageKey {
            package: package.to_string(),
            origin: None,
        };
        return (key, version.to_string());
    }
    let (origin, version) = match (&entry.git, entry.urls.first()) {
        (Some(git), _) => (
            git.url
                .trim_end_matches('/')
                .trim_end_matches(".git")
                .to_string(),
            git.rev.clone(),
        ),
        (None, Some(url)) => match url.rsplit_once('/') {
            Some((dir, last)) => (dir.to_string(), strip_archive_extension(last).to_string()),
            None => (url.clone(), String::new()),
        },
        (None, None) => (String::new(), String::new()),
    };
    let key = PackageKey {
        package: package.to_string(),
        origin: Some(origin),
    };
    (key, version)
}

/// A package whose source changed: a new version, or the same name with a new hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    pub package: String,
    pub old_version: String,
    pub new_version: String,
    pub old: &'a Entry,
    pub new: &'a Entry,
}

/// A part of an entry that can change while its store path (its content) stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataField {
    Systems,
    Attrs,
    Urls,
    /// Kind, git/unpack options, executable, postFetch: how the source is fetched.
    Fetcher,
}

impl MetadataField {
    pub fn name(self) -> &'static str {
        match self {
            MetadataField::Systems => "systems",
            MetadataField::Attrs => "attrs",
            MetadataField::Urls => "urls",
            MetadataField::Fetcher => "fetcher",
        }
    }
}

/// Same store path, different metadata. The `drvPaths` are left out on purpose: they change
/// with every stdenv change and say nothing about the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataChange<'a> {
    pub old: &'a Entry,
    pub new: &'a Entry,
    pub fields: Vec<MetadataField>,
}

/// Everything that differs between two manifests, each list in a deterministic order
/// (store path of the new side, or of the old side for removals).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ManifestDiff<'a> {
    pub added: Vec<&'a Entry>,
    pub removed: Vec<&'a Entry>,
    pub updated: Vec<Update<'a>>,
    pub metadata_changed: Vec<MetadataChange<'a>>,
    pub unchanged: usize,
    pub failures_added: Vec<&'a Failure>,
    pub failures_removed: Vec<&'a Failure>,
}

impl ManifestDiff<'_> {
    /// Whether anything at all differs (what `--fail-on-change` asks).
    pub fn has_changes(&self) -> bool {
        !(self.added.is_empty()
            && self.removed.is_empty()
            && self.updated.is_empty()
            && self.metadata_changed.is_empty()
            && self.failures_added.is_empty()
            && self.failures_removed.is_empty())
    }
}

/// Entries in store-path order: validated manifests already are, so this only checks.
fn sorted_entries(m: &Manifest) -> Vec<&Entry> {
    let mut v: Vec<&Entry> = m.entries.iter().collect();
    if !v.windows(2).all(|w| w[0].store_path <= w[1].store_path) {
        v.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    }
    v
}

fn changed_fields(old: &Entry, new: &Entry) -> Vec<MetadataField> {
    let mut fields = Vec::new();
    if old.systems != new.systems {
        fields.push(MetadataField::Systems);
    }
    if old.attrs != new.attrs || old.attr_count != new.attr_count {
        fields.push(MetadataField::Attrs);
    }
    if old.urls != new.urls || old.original_urls != new.original_urls {
        fields.push(MetadataField::Urls);
    }
    if old.kind != new.kind
        || old.git != new.git
        || old.unpack != new.unpack
        || old.executable != new.executable
        || old.post_fetch != new.post_fetch
    {
        fields.push(MetadataField::Fetcher);
    }
    fields
}

/// Compares two manifests. Linear in their size apart from the pairing of unmatched
/// entries, which hashes each once.
pub fn diff<'a>(old: &'a Manifest, new: &'a Manifest) -> ManifestDiff<'a> {
    let mut d = ManifestDiff::default();
    let (olds, news) = (sorted_entries(old), sorted_entries(new));
    let (mut only_old, mut only_new) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < olds.len() || j < news.len() {
        let order = match (olds.get(i), news.get(j)) {
            (Some(o), Some(n)) => o.store_path.cmp(&n.store_path),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                only_old.push(olds[i]);
                i += 1;
            }
            Ordering::Greater => {
                only_new.push(news[j]);
                j += 1;
            }
            Ordering::Equal => {
                let fields = changed_fields(olds[i], news[j]);
                if fields.is_empty() {
                    d.unchanged += 1;
                } else {
                    d.metadata_changed.push(MetadataChange {
                        old: olds[i],
                        new: news[j],
                        fields,
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    pair_packages(&mut d, only_old, only_new);
    let (fo, fn_) = (&old.failures, &new.failures);
    d.failures_added = fn_.iter().filter(|f| !fo.contains(f)).collect();
    d.failures_removed = fo.iter().filter(|f| !fn_.contains(f)).collect();
    d
}

/// Pairs entries present on one side only into updates, by package. Within one package,
/// a same-named entry pairs with its namesake (a re-hashed source); the rest pair highest
/// version with highest version, so `{1.0, 2.0}` → `{2.1}` is `2.0 → 2.1` plus `1.0` removed.
/// An unversioned name without an origin pairs only when it is alone on both sides.
fn pair_packages<'a>(d: &mut ManifestDiff<'a>, only_old: Vec<&'a Entry>, only_new: Vec<&'a Entry>) {
    type Side<'a> = Vec<(&'a Entry, String)>;
    let mut groups: HashMap<PackageKey, (Side<'a>, Side<'a>)> = HashMap::new();
    for e in only_old {
        let (key, version) = package_of(e);
        groups.entry(key).or_default().0.push((e, version));
    }
    for e in only_new {
        let (key, version) = package_of(e);
        groups.entry(key).or_default().1.push((e, version));
    }
    for (key, (mut olds, mut news)) in groups {
        let ambiguous = key.origin.as_deref() == Some("") && (olds.len() > 1 || news.len() > 1);
        if ambiguous {
            d.removed.extend(olds.into_iter().map(|(e, _)| e));
            d.added.extend(news.into_iter().map(|(e, _)| e));
            continue;
        }
        let mut update = |(old, old_version): (&'a Entry, String),
                          (new, new_version): (&'a Entry, String)| {
            d.updated.push(Update {
                package: key.package.clone(),
                old_version,
                new_version,
                old,
                new,
            })
        };
        olds.retain(
            |(o, ov)| match news.iter().position(|(n, _)| n.name == o.name) {
                Some(at) => {
                    update((*o, ov.clone()), news.remove(at));
                    false
                }
                None => true,
            },
        );
        let by_version = |a: &(&Entry, String), b: &(&Entry, String)| {
            compare_versions(&b.1, &a.1).then_with(|| b.0.store_path.cmp(&a.0.store_path))
        };
        olds.sort_by(by_version);
        news.sort_by(by_version);
        let mut olds = olds.into_iter();
        let mut news = news.into_iter();
        loop {
            match (olds.next(), news.next()) {
                (Some(o), Some(n)) => update(o, n),
                (Some((o, _)), None) => d.removed.push(o),
                (None, Some((n, _))) => d.added.push(n),
                (None, None) => break,
            }
        }
    }
    d.added.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    d.removed.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    d.updated.sort_by(|a, b| {
        (a.package.as_str(), &a.new.store_path).cmp(&(b.package.as_str(), &b.new.store_path))
    });
}

/// How many entries, and how many bytes where the size is known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
    /// Entries counted whose size was not known (their bytes are not in `bytes`).
    pub unknown_sizes: u64,
}

impl Tally {
    fn add(&mut self, size: Option<u64>) {
        self.count += 1;
        match size {
            Some(s) => self.bytes += s,
            None => self.unknown_sizes += 1,
        }
    }
}

/// Tallies of one slice of the diff (all of it, one kind, one system).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeTallies {
    pub added: Tally,
    pub removed: Tally,
    /// Sized by the new entry: what fetching the update costs.
    pub updated: Tally,
    pub metadata_changed: Tally,
}

/// Counts and bytes per kind of change, overall, per fetcher kind and per system.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffSummary {
    pub total: ChangeTallies,
    pub by_kind: BTreeMap<Kind, ChangeTallies>,
    pub by_system: BTreeMap<String, ChangeTallies>,
}

impl ManifestDiff<'_> {
    /// Sums the diff; `size` gives an entry's size in bytes when known (e.g. a cache's
    /// narinfo). An entry counts once in `total` and `by_kind`, and once per system it has.
    pub fn summarize(&self, size: &dyn Fn(&Entry) -> Option<u64>) -> DiffSummary {
        let mut s = DiffSummary::default();
        let mut count = |e: &Entry, pick: fn(&mut ChangeTallies) -> &mut Tally| {
            let bytes = size(e);
            pick(&mut s.total).add(bytes);
            pick(s.by_kind.entry(e.kind).or_default()).add(bytes);
            for system in &e.systems {
                pick(s.by_system.entry(system.clone()).or_default()).add(bytes);
            }
        };
        for e in &self.added {
            count(e, |t| &mut t.added);
        }
        for e in &self.removed {
            count(e, |t| &mut t.removed);
        }
        for u in &self.updated {
            count(u.new, |t| &mut t.updated);
        }
        for m in &self.metadata_changed {
            count(m.new, |t| &mut t.metadata_changed);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hash, HashMode, Provenance, StorePathName, MANIFEST_VERSION};

    fn entry(name: &str, seed: &str, urls: &[&str]) -> Entry {
        let hash = Hash {
            algo: crate::HashAlgo::Sha256,
            bytes: crate::HashAlgo::Sha256.digest(seed.as_bytes()),
        };
        Entry {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            drv_paths: [(
                "x86_64-linux".into(),
                "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv"
                    .parse()
                    .unwrap(),
            )]
            .into(),
            systems: vec!["x86_64-linux".into()],
            attrs: vec![name.into()],
            attr_count: 1,
            ..Entry::new(
                &StorePathName::new(name).unwrap(),
                HashMode::Flat,
                &hash,
                Kind::Url,
            )
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            provenance: Provenance::default(),
            failures: vec![],
            entries,
            build: Default::default(),
        };
        m.normalize();
        m
    }

    #[test]
    fn a_new_version_is_an_update_not_a_removal_and_an_addition() {
        let old = manifest(vec![
            entry("openssl-3.0.13.tar.gz", "a", &[]),
            entry("zlib-1.3.tar.gz", "z", &[]),
            entry("gone-1.0.tar.gz", "g", &[]),
        ]);
        let new = manifest(vec![
            entry("openssl-3.0.14.tar.gz", "b", &[]),
            entry("zlib-1.3.tar.gz", "z", &[]),
            entry("fresh-0.1.tar.gz", "f", &[]),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.updated.len(), 1);
        let u = &d.updated[0];
        assert_eq!(
            (
                u.package.as_str(),
                u.old_version.as_str(),
                u.new_version.as_str()
            ),
            ("openssl", "3.0.13", "3.0.14")
        );
        assert_eq!(
            d.added.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["fresh-0.1.tar.gz"]
        );
        assert_eq!(
            d.removed
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["gone-1.0.tar.gz"]
        );
        assert!(d.has_changes());
        assert!(!diff(&new, &new).has_changes());
    }

    #[test]
    fn several_versions_pair_highest_with_highest() {
        let old = manifest(vec![
            entry("py-3.11.1.tar.xz", "1", &[]),
            entry("py-3.12.1.tar.xz", "2", &[]),
        ]);
        let new = manifest(vec![entry("py-3.12.2.tar.xz", "3", &[])]);
        let d = diff(&old, &new);
        assert_eq!(d.updated.len(), 1);
        assert_eq!(
            (
                d.updated[0].old_version.as_str(),
                d.updated[0].new_version.as_str()
            ),
            ("3.12.1", "3.12.2")
        );
        assert_eq!(d.removed[0].name, "py-3.11.1.tar.xz");
    }

    #[test]
    fn unversioned_sources_pair_only_by_origin() {
        let old = manifest(vec![
            entry(
                "source",
                "a",
                &["https://github.com/o/one/archive/v1.tar.gz"],
            ),
            entry(
                "source",
                "b",
                &["https://github.com/o/two/archive/v1.tar.gz"],
            ),
        ]);
        let new = manifest(vec![
            entry(
                "source",
                "c",
                &["https://github.com/o/one/archive/v2.tar.gz"],
            ),
            entry(
                "source",
                "d",
                &["https://github.com/o/three/archive/v1.tar.gz"],
            ),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.updated.len(), 1);
        assert_eq!(
            (
                d.updated[0].old_version.as_str(),
                d.updated[0].new_version.as_str()
            ),
            ("v1", "v2")
        );
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.removed.len(), 1);
        assert!(d.removed[0].urls[0].contains("/two/"));
    }

    #[test]
    fn same_path_with_new_systems_is_a_metadata_change_and_sizes_sum() {
        let old = manifest(vec![entry("a-1.tar.gz", "a", &["https://x/a-1.tar.gz"])]);
        let mut changed = old.entries[0].clone();
        changed.systems.push("aarch64-linux".into());
        changed.drv_paths = [(
            "x86_64-linux".into(),
            "/nix/store/00000000000000000000000000000000-other.drv"
                .parse()
                .unwrap(),
        )]
        .into();
        let new = manifest(vec![changed, entry("b-1.tar.gz", "b", &[])]);
        let d = diff(&old, &new);
        assert_eq!(d.metadata_changed.len(), 1);
        assert_eq!(d.metadata_changed[0].fields, [MetadataField::Systems]);
        let s = d.summarize(&|e| (e.name == "b-1.tar.gz").then_some(100));
        assert_eq!(
            s.total.added,
            Tally {
                count: 1,
                bytes: 100,
                unknown_sizes: 0
            }
        );
        assert_eq!(
            s.total.metadata_changed,
            Tally {
                count: 1,
                bytes: 0,
                unknown_sizes: 1
            }
        );
        assert_eq!(s.by_system["aarch64-linux"].metadata_changed.count, 1);
        assert_eq!(s.by_kind[&Kind::Url].added.count, 1);
    }

    #[test]
    fn same_name_with_a_new_hash_is_an_update() {
        let old = manifest(vec![entry("x-1.0.tar.gz", "old", &[])]);
        let new = manifest(vec![entry("x-1.0.tar.gz", "new", &[])]);
        let d = diff(&old, &new);
        assert_eq!(d.updated.len(), 1);
        assert_eq!(d.updated[0].old_version, d.updated[0].new_version);
    }
}
