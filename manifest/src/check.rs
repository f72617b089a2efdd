//! What a cache lets an offline machine do with each attribute of a manifest made with
//! `enumerate --outputs` (`srcgrab check`): install it (its outputs and their whole runtime
//! closure are in the cache), build it (every source its build needs is in the cache, and
//! every non-fixed input is either in the cache with its closure or buildable itself), or
//! neither, and which paths are missing. Pure: the cache is handed in as what it holds.

use crate::{BuildGraph, DrvPath, Manifest, StorePath};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

/// What a cache holds: every complete store path and its References.
#[derive(Debug, Default)]
pub struct CacheContents {
    references: HashMap<StorePath, Vec<StorePath>>,
}

impl CacheContents {
    pub fn insert(&mut self, store_path: StorePath, references: Vec<StorePath>) {
        self.references.insert(store_path, references);
    }

    pub fn has(&self, store_path: &StorePath) -> bool {
        self.references.contains_key(store_path)
    }

    pub fn len(&self) -> usize {
        self.references.len()
    }

    pub fn is_empty(&self) -> bool {
        self.references.is_empty()
    }
}

/// The verdict on one attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeCheck {
    pub system: String,
    pub attr: String,
    /// Its outputs and their runtime closure are all in the cache.
    pub installable: bool,
    /// Every source its build closure needs is in the cache (inputs already there with
    /// their closure need none of theirs).
    pub buildable: bool,
    /// Paths of its outputs' runtime closure the cache lacks (sorted).
    pub missing_outputs: Vec<StorePath>,
    /// Sources (manifest entries) its build lacks (sorted).
    pub missing_sources: Vec<StorePath>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the manifest has no build graph: make it with `srcgrab enumerate --outputs`")]
    NoBuildGraph,
}

type PathSet = Rc<BTreeSet<StorePath>>;

/// Walks the graph once, remembering every derivation's and path's answer.
struct Checker<'a> {
    build: &'a BuildGraph,
    cache: &'a CacheContents,
    /// A FOD's .drv path -> its output (an attribute that is itself a source).
    fod_outputs: HashMap<&'a DrvPath, &'a StorePath>,
    missing_closure: HashMap<&'a StorePath, PathSet>,
    missing_sources: HashMap<&'a DrvPath, PathSet>,
}

impl<'a> Checker<'a> {
    /// The paths of `path`'s runtime closure (itself included) the cache lacks.
    fn missing_closure(&mut self, path: &'a StorePath) -> PathSet {
        if let Some(known) = self.missing_closure.get(path) {
            return known.clone();
        }
        let mut missing = BTreeSet::new();
        let mut stack = vec![path];
        let mut seen = BTreeSet::new();
        while let Some(next) = stack.pop() {
            if !seen.insert(next) {
                continue;
            }
            match self.cache.references.get(next) {
                Some(references) => stack.extend(references),
                None => {
                    missing.insert(next.clone());
                }
            }
        }
        let missing = Rc::new(missing);
        self.missing_closure.insert(path, missing.clone());
        missing
    }

    /// The runtime-closure paths of `drv_path`'s outputs the cache lacks.
    fn missing_outputs(&mut self, drv_path: &DrvPath) -> BTreeSet<StorePath> {
        let outputs: Vec<&'a StorePath> = match self.build.derivation(drv_path) {
            Some(drv) => drv.outputs.values().collect(),
            None => self
                .fod_outputs
                .get(drv_path)
                .copied()
                .into_iter()
                .collect(),
        };
        let mut missing = BTreeSet::new();
        for output in outputs {
            missing.extend(self.missing_closure(output).iter().cloned());
        }
        missing
    }

    /// The sources building `drv_path` offline lacks; empty when it can be built.
    fn missing_sources(&mut self, drv_path: &'a DrvPath) -> PathSet {
        if let Some(known) = self.missing_sources.get(drv_path) {
            return known.clone();
        }
        // Post-order over the inputs, so each derivation is answered once its inputs are.
        let mut stack = vec![(drv_path, false)];
        while let Some((next, inputs_done)) = stack.pop() {
            if self.missing_sources.contains_key(next) {
                continue;
            }
            let Some(drv) = self.build.derivation(next) else {
                // A FOD attribute: buildable exactly when its output (a source) is there.
                let missing = match self.fod_outputs.get(next) {
                    Some(&output) if !self.cache.has(output) => BTreeSet::from([output.clone()]),
                    _ => BTreeSet::new(),
                };
                self.missing_sources.insert(next, Rc::new(missing));
                continue;
            };
            let needed: Vec<&DrvPath> = drv
                .inputs
                .iter()
                .filter(|input| !self.missing_outputs(input).is_empty())
                .collect();
            if !inputs_done {
                stack.push((next, true));
                stack.extend(
                    needed
                        .iter()
                        .filter(|input| !self.missing_sources.contains_key(**input))
                        .map(|&input| (input, false)),
                );
                continue;
            }
            let mut missing: BTreeSet<StorePath> = drv
                .sources
                .iter()
                .filter(|source| !self.cache.has(source))
                .cloned()
                .collect();
            for input in needed {
                missing.extend(self.missing_sources[input].iter().cloned());
            }
            self.missing_sources.insert(next, Rc::new(missing));
        }
        self.missing_sources[drv_path].clone()
    }
}

/// Every attribute's verdict, in the manifest's (system, attr) order.
pub fn check(
    manifest: &Manifest,
    cache: &CacheContents,
) -> Result<Vec<AttributeCheck>, CheckError> {
    if manifest.build.attributes.is_empty() {
        return Err(CheckError::NoBuildGraph);
    }
    let fod_outputs = manifest
        .entries
        .iter()
        .flat_map(|e| e.drv_paths.values().map(|drv| (drv, &e.store_path)))
        .collect();
    let mut checker = Checker {
        build: &manifest.build,
        cache,
        fod_outputs,
        missing_closure: HashMap::new(),
        missing_sources: HashMap::new(),
    };
    Ok(manifest
        .build
        .attributes
        .iter()
        .map(|attribute| {
            let missing_outputs = checker.missing_outputs(&attribute.drv_path);
            let missing_sources = checker.missing_sources(&attribute.drv_path);
            AttributeCheck {
                system: attribute.system.clone(),
                attr: attribute.attr.clone(),
                installable: missing_outputs.is_empty(),
                buildable: missing_sources.is_empty(),
                missing_outputs: missing_outputs.into_iter().collect(),
                missing_sources: missing_sources.iter().cloned().collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, BuiltDerivation, Provenance, MANIFEST_VERSION};

    /// The store path named `name` (every test path shares one hash part).
    fn path(name: &str) -> String {
        format!("/nix/store/{}-{name}", "0".repeat(32))
    }

    fn drv_path(name: &str) -> DrvPath {
        DrvPath::parse(&path(&format!("{name}.drv"))).unwrap()
    }

    fn store_path(name: &str) -> StorePath {
        StorePath::parse(&path(name)).unwrap()
    }

    fn drv(name: &str, inputs: &[&str], sources: &[&str]) -> BuiltDerivation {
        BuiltDerivation {
            drv_path: drv_path(name),
            system: "x86_64-linux".into(),
            outputs: [("out".to_string(), store_path(&format!("{name}-out")))].into(),
            inputs: inputs.iter().map(|i| drv_path(i)).collect(),
            sources: sources.iter().map(|s| store_path(s)).collect(),
        }
    }

    /// app needs lib (built from lib-src) and app-src; tool needs only tool-src.
    fn manifest() -> Manifest {
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            provenance: Provenance::default(),
            failures: Vec::new(),
            entries: Vec::new(),
            build: BuildGraph {
                derivations: vec![
                    drv("app", &["lib"], &["app-src"]),
                    drv("lib", &[], &["lib-src"]),
                    drv("tool", &[], &["tool-src"]),
                ],
                attributes: ["app", "lib", "tool"]
                    .iter()
                    .map(|a| Attribute {
                        system: "x86_64-linux".into(),
                        attr: a.to_string(),
                        drv_path: drv_path(a),
                    })
                    .collect(),
            },
        };
        m.normalize();
        m
    }

    /// A cache of the paths named, each with the references named.
    fn cache(paths: &[(&str, &[&str])]) -> CacheContents {
        let mut cache = CacheContents::default();
        for (name, references) in paths {
            cache.insert(
                store_path(name),
                references.iter().map(|r| store_path(r)).collect(),
            );
        }
        cache
    }

    fn verdicts(checks: &[AttributeCheck]) -> Vec<(&str, bool, bool)> {
        checks
            .iter()
            .map(|c| (c.attr.as_str(), c.installable, c.buildable))
            .collect()
    }

    #[test]
    fn a_missing_source_breaks_exactly_what_builds_from_it() {
        let all_sources = cache(&[("app-src", &[]), ("lib-src", &[]), ("tool-src", &[])]);
        let checks = check(&manifest(), &all_sources).unwrap();
        assert_eq!(
            verdicts(&checks),
            [
                ("app", false, true),
                ("lib", false, true),
                ("tool", false, true)
            ]
        );

        let no_lib_src = cache(&[("app-src", &[]), ("tool-src", &[])]);
        let checks = check(&manifest(), &no_lib_src).unwrap();
        assert_eq!(
            verdicts(&checks),
            [
                ("app", false, false),
                ("lib", false, false),
                ("tool", false, true)
            ]
        );
        assert_eq!(checks[0].missing_sources, [store_path("lib-src")]);
        assert_eq!(checks[0].missing_outputs, [store_path("app-out")]);

        // lib's binary (with its closure) stands in for its source.
        let lib_binary = cache(&[
            ("app-src", &[]),
            ("tool-src", &[]),
            ("lib-out", &["dep"]),
            ("dep", &[]),
        ]);
        let checks = check(&manifest(), &lib_binary).unwrap();
        assert_eq!(
            verdicts(&checks),
            [
                ("app", false, true),
                ("lib", true, false),
                ("tool", false, true)
            ]
        );
    }

    #[test]
    fn installable_needs_the_whole_runtime_closure() {
        let broken = cache(&[("tool-out", &["gone"])]);
        let checks = check(&manifest(), &broken).unwrap();
        assert!(!checks[2].installable);
        assert_eq!(checks[2].missing_outputs, [store_path("gone")]);
        let whole = cache(&[("tool-out", &["dep"]), ("dep", &[])]);
        assert!(check(&manifest(), &whole).unwrap()[2].installable);
    }

    #[test]
    fn a_manifest_without_build_graph_is_refused() {
        let mut m = manifest();
        m.build = BuildGraph::default();
        assert!(matches!(
            check(&m, &CacheContents::default()),
            Err(CheckError::NoBuildGraph)
        ));
    }
}
