//! `enumerate --outputs`: the build graph of the evaluated attributes, from the .drv files
//! the closure walk read. Only derivations reachable without passing through a FOD are
//! kept: what a FOD needs to run (curl, git) does not matter once the FOD is in the cache.

use crate::closure::Graph;
use crate::walk::Root;
use srcgrab_formats::store_path::StorePathError;
use srcgrab_manifest::{Attribute, BuildGraph, BuiltDerivation, DrvPath, StorePath};
use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;

/// A path of the graph that is not a `/nix/store` path (Nix's store is elsewhere): the
/// manifest could not hold it.
#[derive(Debug, thiserror::Error)]
#[error("{named_in}: {error}")]
pub struct BadPath {
    /// The .drv whose text names the path, or the attribute whose drvPath it is.
    pub named_in: String,
    pub error: StorePathError,
}

/// The graph below `roots`, whose closures `graph` must have read.
pub fn build_graph(graph: &Graph, roots: &[Root]) -> Result<BuildGraph, BadPath> {
    // A stdenv stage is an input of thousands of derivations: each .drv path is parsed once.
    let mut drv_paths: HashMap<&str, DrvPath> = HashMap::new();
    let attributes = roots
        .iter()
        .map(|root| {
            let drv_path = parse_drv(&mut drv_paths, &root.drv_path).map_err(|error| BadPath {
                named_in: format!("attribute {}", root.attr),
                error,
            })?;
            Ok(Attribute {
                system: root.system.clone(),
                attr: root.attr.clone(),
                drv_path,
            })
        })
        .collect::<Result<_, _>>()?;
    let mut derivations = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<u32> = roots
        .iter()
        .filter_map(|root| graph.index_of(&root.drv_path))
        .collect();
    while let Some(index) = stack.pop() {
        if !seen.insert(index) {
            continue;
        }
        let (drv_path, node) = graph.node(index);
        let Some(built) = &node.built else {
            continue;
        };
        let bad = |error| BadPath {
            named_in: drv_path.to_string(),
            error,
        };
        let mut inputs = Vec::new();
        let mut sources = Vec::new();
        for &input in &node.inputs {
            let (input_path, input_node) = graph.node(input);
            match &input_node.fod {
                Some(fod) => {
                    for output in &fod.outputs {
                        sources.push(StorePath::parse(&output.path).map_err(bad)?);
                    }
                }
                None => {
                    inputs.push(parse_drv(&mut drv_paths, input_path).map_err(bad)?);
                    stack.push(input);
                }
            }
        }
        inputs.sort_unstable();
        sources.sort_unstable();
        sources.dedup();
        let outputs = built
            .outputs
            .iter()
            .map(|(name, path)| Ok((name.clone(), StorePath::parse(path).map_err(bad)?)))
            .collect::<Result<_, _>>()?;
        derivations.push(BuiltDerivation {
            drv_path: parse_drv(&mut drv_paths, drv_path).map_err(bad)?,
            system: built.system.clone(),
            outputs,
            inputs,
            sources,
        });
    }
    let mut build = BuildGraph {
        derivations,
        attributes,
    };
    build.normalize();
    build.attributes.dedup();
    Ok(build)
}

/// `path` as a [`DrvPath`], parsed the first time it is asked for.
fn parse_drv<'a>(
    parsed: &mut HashMap<&'a str, DrvPath>,
    path: &'a str,
) -> Result<DrvPath, StorePathError> {
    Ok(match parsed.entry(path) {
        Entry::Occupied(known) => known.get().clone(),
        Entry::Vacant(slot) => slot.insert(DrvPath::parse(path)?).clone(),
    })
}
