//! The build closure walk: from every evaluated root .drv, read the .drv files it needs
//! (in parallel, frontier by frontier, each file once), and find every fixed-output
//! derivation reachable through inputDrvs, including through other FODs' own inputs.
//! Each FOD learns which systems and which attribute paths need it, as indices into sorted
//! name tables: a package set's FODs are reached from a million (FOD, attribute) pairs, too
//! many to hold as strings.

use crate::walk::Root;
use crate::{EvalEvent, EvalReporter};
use rayon::prelude::*;
use srcgrab_formats::aterm::{self, Derivation};
use std::collections::HashMap;
use std::sync::Arc;

/// The FODs of the closure, and the names their `systems` and `attrs` index.
#[derive(Debug, Clone, Default)]
pub struct Closure {
    pub fods: Vec<FoundFod>,
    /// Sorted and distinct, so that sorted indices are sorted names.
    pub system_names: Vec<String>,
    /// Sorted and distinct attribute paths of the roots.
    pub attr_names: Vec<String>,
}

/// A FOD of the closure, with everything that reaches it.
#[derive(Debug, Clone)]
pub struct FoundFod {
    pub drv_path: String,
    pub drv: Derivation,
    /// Indices into [`Closure::system_names`], sorted and distinct.
    pub systems: Vec<u32>,
    /// Indices into [`Closure::attr_names`], sorted and distinct (an attribute reaching it
    /// on several systems counts once).
    pub attrs: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: aterm::ParseError,
    },
}

pub(crate) struct Node {
    pub(crate) inputs: Vec<u32>,
    /// The parsed derivation, kept only for FODs (the rest is not needed after the walk).
    pub(crate) fod: Option<Derivation>,
    /// For a non-fixed derivation, its system and outputs (`enumerate --outputs`).
    pub(crate) built: Option<Built>,
}

/// What the build graph keeps of a non-fixed derivation.
pub(crate) struct Built {
    pub(crate) system: String,
    /// (output name, store path)
    pub(crate) outputs: Vec<(String, String)>,
}

/// The .drv files read so far and their inputs. It can be fed roots while the evaluation
/// still finds more ([`Graph::read`] only reads what it has not seen), so that reading the
/// closure overlaps with the evaluation instead of following it.
#[derive(Default)]
pub struct Graph {
    index: HashMap<String, u32>,
    paths: Vec<String>,
    /// `None` until read; every interned node is read before [`Graph::read`] returns.
    nodes: Vec<Option<Node>>,
    drvs_read: usize,
    fods_seen: usize,
}

impl Graph {
    fn intern(&mut self, path: &str) -> (u32, bool) {
        if let Some(&i) = self.index.get(path) {
            return (i, false);
        }
        let i = self.paths.len() as u32;
        self.index.insert(path.to_string(), i);
        self.paths.push(path.to_string());
        self.nodes.push(None);
        (i, true)
    }

    /// Reads the closure of these .drv files (in parallel, frontier by frontier, each file
    /// once over the graph's life).
    pub fn read<'a>(
        &mut self,
        drv_paths: impl Iterator<Item = &'a str>,
        progress: &EvalReporter,
    ) -> Result<(), ClosureError> {
        let mut frontier: Vec<u32> = drv_paths
            .filter_map(|path| match self.intern(path) {
                (i, true) => Some(i),
                (_, false) => None,
            })
            .collect();
        while !frontier.is_empty() {
            let paths = &self.paths;
            let parsed: Vec<(u32, Derivation)> = frontier
                .par_iter()
                .map(|&i| {
                    let path = &paths[i as usize];
                    let text = std::fs::read(path).map_err(|source| ClosureError::Read {
                        path: path.clone(),
                        source,
                    })?;
                    let drv = aterm::parse(&text).map_err(|source| ClosureError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                    Ok((i, drv))
                })
                .collect::<Result<_, ClosureError>>()?;
            self.drvs_read += parsed.len();
            progress.report(EvalEvent::DrvsRead {
                count: self.drvs_read,
            });
            let mut next = Vec::new();
            for (i, drv) in parsed {
                let inputs = drv
                    .input_drvs
                    .keys()
                    .map(|input| {
                        let (j, new) = self.intern(input);
                        if new {
                            next.push(j);
                        }
                        j
                    })
                    .collect();
                let (fod, built) = if drv.fixed_output().is_some() {
                    (Some(drv), None)
                } else {
                    let outputs = drv.outputs.into_iter().map(|o| (o.name, o.path)).collect();
                    let system = drv.system;
                    (None, Some(Built { system, outputs }))
                };
                self.fods_seen += fod.is_some() as usize;
                self.nodes[i as usize] = Some(Node { inputs, fod, built });
            }
            progress.report(EvalEvent::FodsFound {
                count: self.fods_seen,
            });
            frontier = next;
        }
        Ok(())
    }

    /// The .drv at `index` and its node, once read.
    pub(crate) fn node(&self, index: u32) -> (&str, &Node) {
        let node = self.nodes[index as usize]
            .as_ref()
            .expect("every interned .drv was read");
        (&self.paths[index as usize], node)
    }

    /// The index of a .drv read.
    pub(crate) fn index_of(&self, drv_path: &str) -> Option<u32> {
        self.index.get(drv_path).copied()
    }

    /// The FODs reachable from `roots` (one [`FoundFod`] per FOD .drv, not yet merged by
    /// output path), whose closures must all have been read.
    pub fn fods(self, roots: &[Root]) -> Closure {
        let Graph {
            index,
            mut paths,
            nodes,
            ..
        } = self;
        let nodes: Vec<Node> = nodes
            .into_iter()
            .map(|n| n.expect("every interned .drv was read"))
            .collect();
        let reachable = reachable_fods(&nodes);
        let system_names = sorted_distinct(roots.iter().map(|r| &r.system));
        let attr_names = sorted_distinct(roots.iter().map(|r| &r.attr));
        let id = |names: &[String], name: &String| {
            names.binary_search(name).expect("a listed name") as u32
        };
        // Roots in attribute order, so that every FOD's lists grow sorted and a repeat (the same
        // attribute on another system) is always the last element.
        let mut by_attr: Vec<(u32, u32, u32)> = roots
            .iter()
            .map(|r| {
                (
                    id(&attr_names, &r.attr),
                    id(&system_names, &r.system),
                    index[&r.drv_path],
                )
            })
            .collect();
        by_attr.sort_unstable();
        let mut systems: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
        let mut attrs: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
        for (attr, system, node) in by_attr {
            for &fod in reachable[node as usize].iter() {
                let fod = fod as usize;
                if attrs[fod].last() != Some(&attr) {
                    attrs[fod].push(attr);
                }
                if !systems[fod].contains(&system) {
                    systems[fod].push(system);
                }
            }
        }
        let mut fods = Vec::new();
        for (i, node) in nodes.into_iter().enumerate() {
            if let Some(drv) = node.fod {
                systems[i].sort_unstable();
                fods.push(FoundFod {
                    drv_path: std::mem::take(&mut paths[i]),
                    drv,
                    systems: std::mem::take(&mut systems[i]),
                    attrs: std::mem::take(&mut attrs[i]),
                });
            }
        }
        Closure {
            fods,
            system_names,
            attr_names,
        }
    }
}

fn sorted_distinct<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = names.cloned().collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// For every node, the sorted FOD nodes its closure holds (itself included). Sets are
/// shared between a node and its input when the node adds nothing, which is the common case
/// (most of a package set's FOD sets are the stdenv's), so memory stays near the graph's size.
fn reachable_fods(nodes: &[Node]) -> Vec<Arc<Vec<u32>>> {
    let empty = Arc::new(Vec::new());
    let mut memo: Vec<Option<Arc<Vec<u32>>>> = vec![None; nodes.len()];
    for start in 0..nodes.len() {
        if memo[start].is_some() {
            continue;
        }
        // Iterative post-order: a node is finished once all its inputs are.
        let mut stack: Vec<(usize, bool)> = vec![(start, false)];
        while let Some((n, inputs_done)) = stack.pop() {
            if memo[n].is_some() {
                continue;
            }
            if !inputs_done {
                stack.push((n, true));
                stack.extend(
                    nodes[n]
                        .inputs
                        .iter()
                        .filter(|&&j| memo[j as usize].is_none())
                        .map(|&j| (j as usize, false)),
                );
                continue;
            }
            let mut sets = nodes[n]
                .inputs
                .iter()
                .map(|&j| memo[j as usize].clone().expect("inputs finish first"));
            let mut merged = sets.next().unwrap_or_else(|| empty.clone());
            for set in sets {
                if Arc::ptr_eq(&merged, &set) || set.iter().all(|f| merged.binary_search(f).is_ok())
                {
                    continue;
                }
                if merged.iter().all(|f| set.binary_search(f).is_ok()) {
                    merged = set;
                    continue;
                }
                let mut union: Vec<u32> = merged.iter().chain(set.iter()).copied().collect();
                union.sort_unstable();
                union.dedup();
                merged = Arc::new(union);
            }
            if nodes[n].fod.is_some() {
                let mut with_self = (*merged).clone();
                if let Err(at) = with_self.binary_search(&(n as u32)) {
                    with_self.insert(at, n as u32);
                }
                merged = Arc::new(with_self);
            }
            memo[n] = Some(merged);
        }
    }
    memo.into_iter()
        .map(|s| s.expect("every node finished"))
        .collect()
}
