//! The evaluator pool against the real Nix: memory-driven replacement between attributes.

use srcgrab_extractor::{enumerate, EvalEvent, Options, Reporter, Restart, Source};
use std::sync::Mutex;

#[derive(Default)]
struct Restarts(Mutex<Vec<Restart>>);

impl Reporter<EvalEvent> for Restarts {
    fn report(&self, event: EvalEvent) {
        if let EvalEvent::EvaluatorRestarted { why } = event {
            self.0.lock().unwrap().push(why);
        }
    }
}

fn run(file: &std::path::Path, max_memory: u64) -> (srcgrab_manifest::Manifest, Vec<Restart>) {
    let options = Options {
        source: Source::File(file.display().to_string()),
        systems: vec!["x86_64-linux".into()],
        attrs: vec![],
        args: Default::default(),
        config: Default::default(),
        jobs: 1,
        max_memory: Some(max_memory),
        eval_timeout: None,
        eval_stack: None,
        shard: None,
        outputs: false,
    };
    let restarts = Restarts::default();
    let manifest = enumerate(&options, &restarts).unwrap();
    let restarts = restarts.0.into_inner().unwrap();
    (manifest, restarts)
}

/// `a` keeps 19 strings of 10 MiB alive in the evaluator (226 MiB resident on Nix 2.8): above
/// 80% of a 256 MiB cap but below the cap, so the evaluator is replaced after `a`, and no
/// attribute fails. Large strings read from a file make the figure steady: a list of a
/// million small strings measured 165 or 211 MiB, depending on when the collector ran.
#[test]
fn an_evaluator_grown_past_80_percent_is_replaced_between_attributes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ten-mib"), vec![b'x'; 10 << 20]).unwrap();
    let file = dir.path().join("grow.nix");
    std::fs::write(
        &file,
        r#"{ a = let l = builtins.genList (i: builtins.readFile ./ten-mib) 19; in builtins.deepSeq l l;
             b = derivation { name = "b"; system = "x86_64-linux"; builder = "/bin/sh"; }; }"#,
    )
    .unwrap();
    let (manifest, restarts) = run(&file, 256 << 20);
    assert_eq!(manifest.failures, vec![]);
    assert_eq!(restarts, vec![Restart::MemoryHigh]);

    // With room to spare, nothing is replaced.
    let (manifest, restarts) = run(&file, 4 << 30);
    assert_eq!(manifest.failures, vec![]);
    assert_eq!(restarts, vec![]);
}

/// Under --file's rule every set is walked; a set containing itself must still end, with the
/// cut-off recorded rather than silent.
#[test]
fn a_set_that_contains_itself_is_walked_to_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cycle.nix");
    std::fs::write(
        &file,
        r#"let set = { d = derivation { name = "d"; system = "x86_64-linux"; builder = "/bin/sh"; }; self = set; }; in set"#,
    )
    .unwrap();
    let (manifest, _) = run(&file, 4 << 30);
    assert_eq!(manifest.failures.len(), 1, "{:?}", manifest.failures);
    let failure = &manifest.failures[0];
    let depth = srcgrab_extractor::walk::MAX_DEPTH;
    assert_eq!(failure.attr, vec!["self"; depth].join("."));
    assert!(
        failure.error.contains("nested deeper than"),
        "{}",
        failure.error
    );
}

/// Attribute names that need quoting reach Nix intact, and come back quoted.
#[test]
fn odd_attribute_names_round_trip_through_the_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odd.nix");
    std::fs::write(
        &file,
        r#"let d = name: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh";
             src = derivation { name = "${name}-src"; system = "x86_64-linux"; builder = "/bin/sh";
               outputHash = builtins.hashString "sha256" name; outputHashAlgo = "sha256"; }; };
           in { "a.b" = d "dotted"; "q\"uote" = { "$" = d "dollar"; "\${x}" = d "interp"; }; }"#,
    )
    .unwrap();
    let (manifest, _) = run(&file, 4 << 30);
    assert_eq!(manifest.failures, vec![]);
    let mut attrs: Vec<(String, Vec<String>)> = manifest
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.attrs.clone()))
        .collect();
    attrs.sort();
    assert_eq!(
        attrs,
        [
            (
                "dollar-src".to_string(),
                vec![r#""q\"uote"."$""#.to_string()]
            ),
            ("dotted-src".to_string(), vec![r#""a.b""#.to_string()]),
            (
                "interp-src".to_string(),
                vec![r#""q\"uote"."${x}""#.to_string()]
            ),
        ]
    );
}

/// Siblings are asked in batches; an uncatchable error in the middle of one (abort), a throw
/// (caught in the batch) and a stack overflow (which ends Nix 2.8's evaluator, and is an
/// error in current Nix) each fail only their own attribute, with their own message, and
/// every sibling after them is still evaluated.
#[test]
fn failures_inside_a_batch_of_siblings_cost_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.nix");
    let attrs: Vec<String> = (0..60)
        .map(|i| {
            let name = format!("a{i:02}");
            let value = if i % 3 == 1 {
                format!(r#"abort "boom-{name}""#)
            } else if i % 7 == 2 {
                format!(r#"throw "thrown-{name}""#)
            } else if i == 45 {
                "let depth = n: 1 + depth (n + 1); in depth 0".to_string()
            } else {
                format!(r#"d "{name}""#)
            };
            format!("{name} = {value};")
        })
        .collect();
    std::fs::write(
        &file,
        format!(
            r#"let d = name: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh";
                 src = derivation {{ name = "${{name}}-src"; system = "x86_64-linux"; builder = "/bin/sh";
                   outputHash = builtins.hashString "sha256" name; outputHashAlgo = "sha256"; }}; }};
               in {{ {} }}"#,
            attrs.join("\n")
        ),
    )
    .unwrap();
    let (manifest, restarts) = run(&file, 4 << 30);
    // The overflow ends one evaluator, once: its death in the batch is its failure.
    assert_eq!(restarts, vec![Restart::Failed]);
    let failures: Vec<(String, String)> = manifest
        .failures
        .iter()
        .map(|f| (f.attr.clone(), f.error.clone()))
        .collect();
    let mut expected_failing = Vec::new();
    let mut healthy = Vec::new();
    for i in 0..60 {
        let name = format!("a{i:02}");
        if i % 3 == 1 {
            expected_failing.push((name.clone(), format!("boom-{name}")));
        } else if i % 7 == 2 {
            expected_failing.push((name.clone(), format!("thrown-{name}")));
        } else if i == 45 {
            expected_failing.push((name.clone(), "stack overflow".to_string()));
        } else {
            healthy.push(format!("{name}-src"));
        }
    }
    assert_eq!(failures.len(), expected_failing.len(), "{failures:?}");
    for ((attr, error), (want_attr, want_in_error)) in failures.iter().zip(&expected_failing) {
        assert_eq!(attr, want_attr);
        assert!(error.contains(want_in_error.as_str()), "{attr}: {error}");
    }
    let mut found: Vec<String> = manifest.entries.iter().map(|e| e.name.clone()).collect();
    found.sort();
    assert_eq!(found, healthy);
}
