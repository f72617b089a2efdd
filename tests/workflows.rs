//! The CI workflows watch files the repository has: a `paths:` filter naming a missing file
//! never fires, and the job it guards silently never runs.

use std::path::Path;

/// The entries of every `paths:` filter in a workflow, inline (`paths: [a, b]`) or as a list.
fn watched_paths(workflow: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut lines = workflow.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("paths:") else {
            continue;
        };
        let rest = rest.trim();
        if let Some(inline) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            paths.extend(inline.split(',').map(|p| unquote(p.trim())));
            continue;
        }
        while let Some(item) = lines.peek().and_then(|l| l.trim().strip_prefix("- ")) {
            paths.push(unquote(item.trim()));
            lines.next();
        }
    }
    paths
}

fn unquote(text: &str) -> String {
    text.trim_matches(|c| c == '"' || c == '\'').to_string()
}

#[test]
fn every_watched_path_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut watched = 0;
    for entry in std::fs::read_dir(root.join(".github/workflows")).unwrap() {
        let path = entry.unwrap().path();
        let workflow = std::fs::read_to_string(&path).unwrap();
        for watched_path in watched_paths(&workflow) {
            watched += 1;
            // A glob watches whatever matches it; only plain paths can be checked.
            if !watched_path.contains('*') {
                assert!(
                    root.join(&watched_path).exists(),
                    "{} watches {watched_path}, which the repository does not have",
                    path.display()
                );
            }
        }
    }
    assert!(watched > 0, "no paths: filter was read");
}

#[test]
fn the_pinned_nixpkgs_revision_is_one_commit_hash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rev = std::fs::read_to_string(root.join("nixpkgs-rev")).unwrap();
    let rev = rev.strip_suffix('\n').unwrap_or(&rev);
    assert!(
        rev.len() == 40
            && rev
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "nixpkgs-rev: {rev:?}"
    );
}

#[test]
fn both_forms_of_a_paths_filter_are_read() {
    let workflow = "on:\n  pull_request:\n    paths: [a, \"b/c\"]\n  push:\n    paths:\n      - 'd'\n      - e/**\n    branches: [main]\n";
    assert_eq!(watched_paths(workflow), ["a", "b/c", "d", "e/**"]);
}
