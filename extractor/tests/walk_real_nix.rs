//! The evaluator pool against the real Nix: memory-driven replacement between attributes.

use srcgrab_extractor::{enumerate, Options, Progress, Restart, Source};
use std::sync::Mutex;

#[derive(Default)]
struct Restarts(Mutex<Vec<Restart>>);

impl Progress for Restarts {
    fn evaluator_restarted(&self, why: Restart) {
        self.0.lock().unwrap().push(why);
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
    };
    let restarts = Restarts::default();
    let manifest = enumerate(&options, &restarts).unwrap();
    let restarts = restarts.0.into_inner().unwrap();
    (manifest, restarts)
}

/// `a` keeps ~230 MiB alive in the evaluator (a forced list of a million strings, measured
/// at 227 MiB resident on Nix 2.8): above 80% of a 256 MiB cap but below the cap, so the
/// evaluator is replaced after `a`, and no attribute fails.
#[test]
fn an_evaluator_grown_past_80_percent_is_replaced_between_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grow.nix");
    std::fs::write(
        &file,
        r#"let big = let l = builtins.genList (x: "1-${toString x}") 1000000; in builtins.deepSeq l l;
           in { a = big; b = derivation { name = "b"; system = "x86_64-linux"; builder = "/bin/sh"; }; }"#,
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
