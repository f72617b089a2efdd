//! `srcgrab enumerate`: evaluate a package set with the real Nix and write the manifest of
//! every fixed-output derivation its build closure holds.

use crate::cli_values::parse_size;
use crate::progress::{self, PeriodicLog};
use crate::Status;
use anyhow::Context;
use srcgrab_extractor::{EnumerateError, EvalEvent, Options, Reporter, Source};
use srcgrab_manifest::{EvalArg, EvalConfig, Kind, Manifest, Shard};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["nixpkgs", "file"])))]
pub struct Args {
    /// A nixpkgs tree; walked like `nix-env -qa` (sets marked recurseForDerivations).
    /// Also sets NIX_PATH=nixpkgs=PATH for the evaluator.
    #[arg(long, value_name = "PATH")]
    nixpkgs: Option<PathBuf>,
    /// Any expression file (or <lookup/path>) yielding derivations or sets of them; every set
    /// that is not a derivation is walked, like a Hydra jobset.
    #[arg(long, value_name = "FILE")]
    file: Option<String>,
    /// System to evaluate for (repeatable); default: the evaluator's builtins.currentSystem.
    #[arg(long = "system", value_name = "SYSTEM")]
    systems: Vec<String>,
    /// Evaluate only this attribute path (repeatable): a derivation, or a set walked in turn.
    #[arg(long = "attr", short = 'A', value_name = "ATTR")]
    attrs: Vec<String>,
    /// Pass a Nix expression (one line) as argument NAME of the package set's function.
    #[arg(long = "arg", num_args = 2, value_names = ["NAME", "EXPR"], action = clap::ArgAction::Append)]
    arg: Vec<String>,
    /// Pass a string as argument NAME of the package set's function.
    #[arg(long = "argstr", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    argstr: Vec<String>,
    /// Evaluator processes to run at once; default: the number of cores.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Memory cap of each evaluator (e.g. 4G, 512M): a process above it is killed and the
    /// attribute it was evaluating recorded as failed; above 80% it is replaced between attributes.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    max_memory: u64,
    /// Longest time one attribute may take, in seconds (0: no limit): an evaluation that
    /// loops without growing is killed and recorded as failed, and its evaluator replaced.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    eval_timeout: u64,
    /// Stack limit of each evaluator (e.g. 8M). Nix raises its stack to 64 MiB where it may;
    /// a smaller one makes stack overflows (each ends an evaluator) cheaper, but also fails
    /// evaluations that are legitimately that deep.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    eval_stack: Option<u64>,
    /// Also record the build graph: every non-fixed output of the build closure (binaries
    /// `srcgrab fetch` takes from substituters) and what each attribute needs (`srcgrab check`).
    #[arg(long)]
    outputs: bool,
    #[arg(long)]
    allow_unfree: bool,
    #[arg(long)]
    allow_broken: bool,
    #[arg(long)]
    allow_insecure: bool,
    /// Evaluate part K of N of the attribute paths (a stable split by path), e.g. on one
    /// machine of N; `srcgrab merge` joins the N manifests into the one a whole run writes.
    #[arg(long, value_name = "K/N", value_parser = |s: &str| Shard::parse(s))]
    shard: Option<Shard>,
    /// Where to write the manifest; `-` or nothing: stdout. Written atomically.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let mut eval_args = BTreeMap::new();
    for pair in args.arg.chunks(2) {
        eval_args.insert(pair[0].clone(), EvalArg::Expr(pair[1].clone()));
    }
    for pair in args.argstr.chunks(2) {
        eval_args.insert(pair[0].clone(), EvalArg::Str(pair[1].clone()));
    }
    let source = match (args.nixpkgs, args.file) {
        (Some(path), _) => Source::Nixpkgs(path),
        (None, Some(file)) => Source::File(file),
        (None, None) => unreachable!("clap requires one source"),
    };
    let options = Options {
        source,
        systems: args.systems,
        attrs: args.attrs,
        args: eval_args,
        config: EvalConfig {
            allow_unfree: args.allow_unfree,
            allow_broken: args.allow_broken,
            allow_insecure: args.allow_insecure,
        },
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        max_memory: Some(args.max_memory),
        eval_timeout: (args.eval_timeout > 0).then(|| Duration::from_secs(args.eval_timeout)),
        eval_stack: args.eval_stack,
        shard: args.shard,
        outputs: args.outputs,
    };
    let display = Display::new();
    let manifest = srcgrab_extractor::enumerate(&options, &display)
        .map_err(|e: EnumerateError| anyhow::anyhow!(e))?;
    display.bar.finish_and_clear();
    write_manifest(&manifest, args.output.as_deref())?;
    print_summary(&manifest, &display);
    Ok(if manifest.failures.is_empty() {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}

/// Writes to a temporary file beside the target, then renames it, so an interrupted run
/// never leaves half a manifest.
pub fn write_manifest(manifest: &Manifest, output: Option<&Path>) -> anyhow::Result<()> {
    let text = manifest.to_json();
    let Some(path) = output.filter(|p| p.as_os_str() != "-") else {
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(());
    };
    let file_name = path.file_name().context("the output path names no file")?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    std::fs::write(&temp, text).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn print_summary(manifest: &Manifest, display: &Display) {
    tell!(
        "srcgrab: evaluated {} attributes and sets: {} ok, {} failed",
        display.ok.load(Ordering::Relaxed) + display.failed.load(Ordering::Relaxed),
        display.ok.load(Ordering::Relaxed),
        display.failed.load(Ordering::Relaxed),
    );
    let restarts = display.restarts.load(Ordering::Relaxed);
    if restarts > 0 {
        tell!("srcgrab: evaluator processes replaced (crash or memory): {restarts}");
    }
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut by_system: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &manifest.entries {
        *by_kind.entry(entry.kind).or_default() += 1;
        for system in &entry.systems {
            *by_system.entry(system).or_default() += 1;
        }
    }
    let join = |parts: Vec<String>| {
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    };
    tell!(
        "srcgrab: {} fixed-output derivations ({}); by system: {}",
        manifest.entries.len(),
        join(by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect()),
        join(by_system.iter().map(|(s, n)| format!("{s} {n}")).collect()),
    );
    if !manifest.failures.is_empty() {
        tell!(
            "srcgrab: {} attributes failed to evaluate:",
            manifest.failures.len()
        );
        for f in manifest.failures.iter().take(20) {
            tell!("  {} {}: {}", f.system, f.attr, f.error);
        }
        if manifest.failures.len() > 20 {
            tell!(
                "  ... and {} more (see the manifest's failures)",
                manifest.failures.len() - 20
            );
        }
    }
}

/// Progress on stderr: a spinner line on a terminal, a line every 10 s otherwise.
struct Display {
    bar: indicatif::ProgressBar,
    log: PeriodicLog,
    ok: AtomicUsize,
    failed: AtomicUsize,
    workers: AtomicUsize,
    drvs: AtomicUsize,
    fods: AtomicUsize,
    restarts: AtomicUsize,
}

impl Display {
    fn new() -> Display {
        Display {
            bar: progress::bar(0, "{spinner} {elapsed_precise} {msg}"),
            log: PeriodicLog::new(Duration::from_secs(10)),
            ok: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            drvs: AtomicUsize::new(0),
            fods: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
        }
    }

    fn update(&self) {
        let line = || {
            format!(
                "attributes: {} ok, {} failed; evaluators: {}; .drv read: {}; FODs: {}",
                self.ok.load(Ordering::Relaxed),
                self.failed.load(Ordering::Relaxed),
                self.workers.load(Ordering::Relaxed),
                self.drvs.load(Ordering::Relaxed),
                self.fods.load(Ordering::Relaxed),
            )
        };
        self.bar.set_message(line());
        self.log.maybe(line);
    }
}

impl Reporter<EvalEvent> for Display {
    fn report(&self, event: EvalEvent) {
        match event {
            EvalEvent::AttrEvaluated { ok } => {
                if ok { &self.ok } else { &self.failed }.fetch_add(1, Ordering::Relaxed);
            }
            EvalEvent::WorkersAlive { count } => self.workers.store(count, Ordering::Relaxed),
            EvalEvent::DrvsRead { count } => self.drvs.store(count, Ordering::Relaxed),
            EvalEvent::FodsFound { count } => self.fods.store(count, Ordering::Relaxed),
            EvalEvent::EvaluatorRestarted { .. } => {
                self.restarts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.update();
    }
}
