//! `enumerate --outputs`: the build graph of the evaluated attributes, from the .drv files
//! the closure walk read. Only derivations reachable without passing through a FOD are
//! kept: what a FOD needs to run (curl, git) does not matter once the FOD is in the cache.

use crate::closure::Graph;
use crate::walk::Root;
use srcgrab_manifest::{Attribute, BuildGraph, BuiltDerivation};

/// The graph below `roots`, whose closures `graph` must have read.
pub fn build_graph(graph: &Graph, roots: &[Root]) -> BuildGraph {
    let mut derivations = Vec::new();
    let mut seen = std::collections::HashSet::new();
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
        let mut inputs = Vec::new();
        let mut sources = Vec::new();
        for &input in &node.inputs {
            let (input_path, input_node) = graph.node(input);
            match &input_node.fod {
                Some(fod) => sources.extend(fod.outputs.iter().map(|o| o.path.clone())),
                None => {
                    inputs.push(input_path.to_string());
                    stack.push(input);
                }
            }
        }
        inputs.sort_unstable();
        sources.sort_unstable();
        sources.dedup();
        derivations.push(BuiltDerivation {
            drv_path: drv_path.to_string(),
            system: built.system.clone(),
            outputs: built.outputs.iter().cloned().collect(),
            inputs,
            sources,
        });
    }
    let mut build = BuildGraph {
        derivations,
        attributes: roots
            .iter()
            .map(|root| Attribute {
                system: root.system.clone(),
                attr: root.attr.clone(),
                drv_path: root.drv_path.clone(),
            })
            .collect(),
    };
    build.normalize();
    build.attributes.dedup();
    build
}
