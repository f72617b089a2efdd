//! nixpkgs -> srcgrab manifest.
//!
//! [`enumerate`] evaluates a package set with the real Nix ([`walk`], a pool of `nix repl`
//! workers), reads the build closure's .drv files ([`closure`], [`srcgrab_formats::aterm`]) and describes every
//! fixed-output derivation found ([`classify`]).

pub mod attr_path;
pub mod classify;
pub mod closure;
pub mod eval;
pub mod outputs;
pub mod walk;

use srcgrab_formats::aterm;
use srcgrab_manifest::{
    DrvPath, Entry, EvalArg, EvalConfig, Failure, Hash, HashAlgo, HashMode, Kind, Manifest,
    Provenance, Shard, StorePath, MANIFEST_VERSION, MAX_LISTED_ATTRS,
};
pub use srcgrab_reporter::{Reporter, Silent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// The Nix expression each evaluator loads.
const ENUMERATE_NIX: &str = include_str!("../../nix/enumerate.nix");

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum Source {
    /// A nixpkgs tree: called with `system` and `config`; nix-env -qa's walk.
    Nixpkgs(PathBuf),
    /// Any expression file (or `<lookup/path>`): every set that is not a derivation is walked.
    File(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    /// Systems to evaluate for; empty means the evaluator's `builtins.currentSystem`.
    pub systems: Vec<String>,
    /// Attribute paths to evaluate; empty means the whole set.
    pub attrs: Vec<String>,
    pub args: BTreeMap<String, EvalArg>,
    pub config: EvalConfig,
    pub jobs: usize,
    /// Resident memory cap of each evaluator process, in bytes.
    pub max_memory: Option<u64>,
    /// Longest time one attribute may take before its evaluator is killed.
    pub eval_timeout: Option<Duration>,
    /// Hard stack limit of each evaluator, in bytes (see [`eval::EvaluatorCommand`]).
    pub eval_stack: Option<u64>,
    /// Evaluate only this part of the attribute paths (`--shard K/N`).
    pub shard: Option<Shard>,
    /// Also record the build graph: every non-fixed output and what each attribute needs.
    pub outputs: bool,
}

/// What an enumeration reports as it goes, from several threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalEvent {
    /// An attribute (or set) was evaluated, successfully or not.
    AttrEvaluated { ok: bool },
    /// Evaluator processes currently running.
    WorkersAlive { count: usize },
    /// .drv files read so far by the closure walk.
    DrvsRead { count: usize },
    /// Fixed-output .drv files found so far.
    FodsFound { count: usize },
    /// An evaluator process was replaced by a fresh one.
    EvaluatorRestarted { why: Restart },
}

/// The reporter of an enumeration.
pub type EvalReporter = dyn Reporter<EvalEvent>;

/// Why an evaluator process was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// It died, or was killed above `--max-memory` or past `--eval-timeout`, during an
    /// attribute (which failed).
    Failed,
    /// It had grown above 80% of `--max-memory`; replaced between attributes.
    MemoryHigh,
}

/// Why a run could not produce a manifest at all.
#[derive(Debug, thiserror::Error)]
pub enum EnumerateError {
    #[error("nix not found on PATH (srcgrab enumerate runs the real Nix evaluator)")]
    NixNotFound,
    #[error("cannot run {command}: {message}")]
    NixCommand { command: String, message: String },
    #[error(transparent)]
    Process(#[from] srcgrab_process::ProcessError),
    #[error("nixpkgs path {0} does not exist")]
    NixpkgsMissing(PathBuf),
    #[error("expression file {0} does not exist")]
    FileMissing(PathBuf),
    #[error("bad --attr: {0}")]
    BadAttr(String),
    #[error("bad --arg {name}: {reason}")]
    BadArg { name: String, reason: String },
    #[error(transparent)]
    Start(#[from] eval::StartError),
    /// The inner error is the source, so the chain the CLI prints names it once.
    #[error("reading the build closure")]
    Closure(#[from] closure::ClosureError),
    /// Not marked as the source: the message already holds it.
    #[error("recording the build graph: {0}")]
    BuildGraph(outputs::BadPath),
    #[error("preparing the evaluator")]
    Io(#[from] std::io::Error),
}

/// Runs a whole enumeration and returns the manifest (normalised: same input, same bytes).
pub fn enumerate(options: &Options, progress: &EvalReporter) -> Result<Manifest, EnumerateError> {
    let nix = find_on_path("nix").ok_or(EnumerateError::NixNotFound)?;
    let nix_version = srcgrab_process::run(Command::new(&nix).arg("--version"))?;
    let experimental_flag = needs_experimental_flag(&nix_version);
    let source_expr = match &options.source {
        Source::Nixpkgs(path) => {
            let path = absolute(path)?;
            if !path.exists() {
                return Err(EnumerateError::NixpkgsMissing(path));
            }
            eval::nix_path(&path)
        }
        Source::File(file) if file.starts_with('<') && file.ends_with('>') => file.clone(),
        Source::File(file) => {
            let path = absolute(Path::new(file))?;
            if !path.exists() {
                return Err(EnumerateError::FileMissing(path));
            }
            eval::nix_path(&path)
        }
    };
    let workdir = tempfile::Builder::new()
        .prefix("srcgrab-enumerate")
        .tempdir()?;
    let env = evaluator_env(&options.source, workdir.path())?;
    let systems = if options.systems.is_empty() {
        vec![current_system(&nix, &env)?]
    } else {
        options.systems.clone()
    };
    let start: Vec<Vec<String>> = if options.attrs.is_empty() {
        vec![Vec::new()]
    } else {
        options
            .attrs
            .iter()
            .map(|a| attr_path::parse(a).map_err(EnumerateError::BadAttr))
            .collect::<Result<_, _>>()?
    };

    let command = eval::EvaluatorCommand {
        nix,
        experimental_flag,
        env,
        load_line: load_line(options, &source_expr, &systems, workdir.path())?,
        stack_limit: options.eval_stack,
    };

    let settings = walk::WalkSettings {
        command: &command,
        systems: &systems,
        start: &start,
        jobs: options.jobs,
        shard: options.shard,
        limits: eval::Limits {
            memory: options.max_memory,
            time: options.eval_timeout,
        },
    };
    // The closure is read while the evaluation goes on: a root's .drv files are all in the
    // store once its drvPath is answered.
    let (roots_found, roots_to_read) = mpsc::channel::<String>();
    let (walked, graph) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_closures(roots_to_read, progress));
        let walked = walk::walk(&settings, progress, &|root| {
            // A reader that stopped has an error to report; the walk finishes regardless.
            let _ = roots_found.send(root.drv_path.clone());
        });
        drop(roots_found);
        let graph = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (walked, graph)
    });
    let walked = walked?;
    let graph = graph?;
    let build = if options.outputs {
        outputs::build_graph(&graph, &walked.roots).map_err(EnumerateError::BuildGraph)?
    } else {
        Default::default()
    };
    let closure = graph.fods(&walked.roots);
    let (entries, mut failures) = describe_fods(closure)?;
    failures.extend(walked.failures);

    let (nixpkgs, nixpkgs_rev, file) = match &options.source {
        Source::Nixpkgs(path) => (Some(path.display().to_string()), git_head(path), None),
        Source::File(file) => (None, None, Some(file.clone())),
    };
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        provenance: Provenance {
            nixpkgs,
            nixpkgs_rev,
            file,
            args: options.args.clone(),
            attrs: options.attrs.clone(),
            systems,
            nix_version: nix_version.trim().to_string(),
            config: options.config,
            shard: options.shard,
        },
        failures,
        entries,
        build,
    };
    manifest.normalize();
    Ok(manifest)
}

/// Reads the closure of every root .drv sent, in batches of whatever has arrived, until the
/// walk hangs up.
fn read_closures(
    roots: mpsc::Receiver<String>,
    progress: &EvalReporter,
) -> Result<closure::Graph, closure::ClosureError> {
    let mut graph = closure::Graph::default();
    while let Ok(first) = roots.recv() {
        let batch: Vec<String> = std::iter::once(first).chain(roots.try_iter()).collect();
        graph.read(batch.iter().map(String::as_str), progress)?;
    }
    Ok(graph)
}

/// Writes the loader and its settings into `workdir` and returns the repl line binding `__sg`.
fn load_line(
    options: &Options,
    source_expr: &str,
    systems: &[String],
    workdir: &Path,
) -> Result<String, EnumerateError> {
    let nix_file = workdir.join("enumerate.nix");
    std::fs::write(&nix_file, ENUMERATE_NIX)?;
    let settings_file = workdir.join("settings.json");
    let str_args: BTreeMap<&String, &String> = options
        .args
        .iter()
        .filter_map(|(name, arg)| match arg {
            EvalArg::Str(value) => Some((name, value)),
            EvalArg::Expr(_) => None,
        })
        .collect();
    let settings = serde_json::json!({
        "mode": match options.source { Source::Nixpkgs(_) => "nixpkgs", Source::File(_) => "file" },
        "systems": systems,
        "allowUnfree": options.config.allow_unfree,
        "allowBroken": options.config.allow_broken,
        "allowInsecure": options.config.allow_insecure,
        "strArgs": str_args,
    });
    std::fs::write(&settings_file, settings.to_string())?;
    // --arg values are Nix expressions: they are written into the line itself, so that
    // relative paths in them resolve against the current directory, as with nix-build.
    let mut expr_args = String::new();
    for (name, arg) in &options.args {
        if let EvalArg::Expr(expr) = arg {
            check_arg_expression(expr).map_err(|reason| EnumerateError::BadArg {
                name: name.clone(),
                reason,
            })?;
            expr_args.push_str(&format!("{} = ({expr}); ", eval::nix_string(name)));
        }
    }
    Ok(format!(
        "__sg = import {} {{ source = {source_expr}; exprArgs = {{ {expr_args}}}; settings = builtins.fromJSON (builtins.readFile {}); }}",
        eval::nix_path(&nix_file),
        eval::nix_path(&settings_file),
    ))
}

/// The smallest .drv path per building system among the derivations of one output.
/// (The walk read each .drv at its store path, so every one parses.)
fn drv_paths_by_system(group: &[closure::FoundFod]) -> BTreeMap<String, DrvPath> {
    let mut paths = BTreeMap::new();
    for fod in group {
        if let Ok(drv_path) = DrvPath::parse(&fod.drv_path) {
            paths.entry(fod.drv.system.clone()).or_insert(drv_path);
        }
    }
    paths
}

/// Checks that an `--arg` value is one complete Nix expression on one line, parsing it with
/// rnix before it is spliced into the evaluator's load line: a typo then gets a message with
/// its position instead of a confusing repl error, and no value can close the surrounding
/// parenthesis and add bindings of its own.
fn check_arg_expression(expr: &str) -> Result<(), String> {
    if expr.contains('\n') || expr.contains('\r') {
        return Err("a Nix expression on one line is expected".into());
    }
    match rnix::Root::parse(expr).errors().first() {
        None => Ok(()),
        Some(error) => Err(format!("not a Nix expression: {error}")),
    }
}

/// Turns the FOD .drvs into manifest entries, one per output path.
fn describe_fods(closure: closure::Closure) -> Result<(Vec<Entry>, Vec<Failure>), EnumerateError> {
    let fod_drvs: HashSet<String> = closure.fods.iter().map(|f| f.drv_path.clone()).collect();
    let mut by_output: BTreeMap<String, Vec<closure::FoundFod>> = BTreeMap::new();
    for fod in closure.fods {
        let output = fod
            .drv
            .fixed_output()
            .expect("only FODs are found")
            .path
            .clone();
        by_output.entry(output).or_default().push(fod);
    }
    let mut mirror_lists: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
    let mut entries = Vec::new();
    let mut failures = Vec::new();
    for (output_path, mut group) in by_output {
        group.sort_by(|a, b| a.drv_path.cmp(&b.drv_path));
        let systems: Vec<&String> = union(group.iter().map(|f| &f.systems))
            .into_iter()
            .map(|i| &closure.system_names[i as usize])
            .collect();
        let attrs = union(group.iter().map(|f| &f.attrs));
        let attr_name = |i: u32| closure.attr_names[i as usize].clone();
        let chosen = &group[0];
        // A FOD the manifest cannot hold is a failure of each system that needs it.
        let fail = |failures: &mut Vec<Failure>, message: String| {
            for &system in &systems {
                failures.push(Failure {
                    system: system.clone(),
                    attr: attrs.first().map(|&i| attr_name(i)).unwrap_or_default(),
                    error: format!("{}: {message}", chosen.drv_path),
                });
            }
        };
        let out = chosen.drv.fixed_output().expect("a FOD");
        let (mode, hash) = match output_hash(&out.hash_algo, &out.hash) {
            Ok(h) => h,
            Err(message) => {
                fail(&mut failures, message);
                continue;
            }
        };
        let mirrors = mirrors_of(&chosen.drv, &mut mirror_lists)?;
        let output = match StorePath::parse(&output_path) {
            Ok(path) => path,
            Err(e) => {
                fail(&mut failures, e.to_string());
                continue;
            }
        };
        let mut entry = Entry::new(output.name(), mode, &hash, Kind::Other);
        classify::classify(&chosen.drv, mirrors, &mut entry);
        if entry.kind == Kind::Other
            && classify::is_derived(&chosen.drv, |path| fod_drvs.contains(path))
        {
            entry.kind = Kind::Derived;
        }
        entry.store_path = output;
        entry.drv_paths = drv_paths_by_system(&group);
        entry.systems = systems.into_iter().cloned().collect();
        entry.attr_count = attrs.len() as u64;
        entry.attrs = attrs
            .iter()
            .take(MAX_LISTED_ATTRS)
            .map(|&i| attr_name(i))
            .collect();
        entries.push(entry);
    }
    Ok((entries, failures))
}

/// The sorted union of sorted index lists (most FODs are one .drv: nothing to merge).
fn union<'a>(mut lists: impl Iterator<Item = &'a Vec<u32>>) -> Vec<u32> {
    let mut all = lists.next().cloned().unwrap_or_default();
    let mut merged_more = false;
    for list in lists {
        all.extend_from_slice(list);
        merged_more = true;
    }
    if merged_more {
        all.sort_unstable();
        all.dedup();
    }
    all
}

/// `r:sha256` + hex -> recursive sha256 hash.
fn output_hash(algo: &str, hex: &str) -> Result<(HashMode, Hash), String> {
    let (mode, name) = match algo.strip_prefix("r:") {
        Some(name) => (HashMode::Recursive, name),
        None => (HashMode::Flat, algo),
    };
    let algo = HashAlgo::from_name(name)
        .ok_or_else(|| format!("unsupported output hash algorithm '{algo}'"))?;
    let hash = Hash::parse_digest(algo, hex).map_err(|e| e.to_string())?;
    Ok((mode, hash))
}

/// The env of the FOD's `mirrors-list` input (nixpkgs' fetchurl), read once per list.
fn mirrors_of<'a>(
    drv: &aterm::Derivation,
    cache: &'a mut HashMap<String, Option<BTreeMap<String, String>>>,
) -> Result<Option<&'a BTreeMap<String, String>>, EnumerateError> {
    let Some(list) = drv
        .input_drvs
        .keys()
        .find(|p| p.ends_with("-mirrors-list.drv"))
    else {
        return Ok(None);
    };
    if !cache.contains_key(list) {
        let text = std::fs::read(list).map_err(|source| closure::ClosureError::Read {
            path: list.clone(),
            source,
        })?;
        let parsed = aterm::parse(&text).map_err(|source| closure::ClosureError::Parse {
            path: list.clone(),
            source,
        })?;
        // Only a list whose output is this FOD's mirrorsFile is its mirror list.
        let used = parsed
            .outputs
            .iter()
            .any(|o| o.path == drv.env_str("mirrorsFile"));
        cache.insert(list.clone(), used.then_some(parsed.env));
    }
    Ok(cache[list].as_ref())
}

/// Nix 2.4 made `nix repl` experimental; 2.3 rejects the flag that enables it.
fn needs_experimental_flag(version_output: &str) -> bool {
    let version = version_output.split_whitespace().last().unwrap_or("");
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 4)
}

/// Variables of the user's environment the evaluator keeps: where the store and Nix's own
/// system configuration live (those nixpkgs-vet passes), how to reach a daemon, and PATH and
/// TMPDIR for the programs Nix runs (git for `builtins.fetchGit`). Nothing else of the user's
/// reaches it, so that their settings cannot change a manifest: no HOME (nixpkgs would read
/// ~/.config/nixpkgs/config.nix and overlays.nix, Nix ~/.config/nix/nix.conf), no
/// NIXPKGS_CONFIG or NIXPKGS_ALLOW_*, no NIX_CONFIG or NIX_USER_CONF_FILES.
const KEPT_VARIABLES: [&str; 10] = [
    "PATH",
    "TMPDIR",
    "NIX_REMOTE",
    "NIX_CONF_DIR",
    "NIX_STORE_DIR",
    "NIX_STATE_DIR",
    "NIX_LOCALSTATE_DIR",
    "NIX_LOG_DIR",
    "NIX_DATA_DIR",
    "NIX_SSL_CERT_FILE",
];

/// The evaluator's whole environment: [`KEPT_VARIABLES`]; HOME and the repl's history in
/// `workdir` (empty); the user's cache folder, so Nix's own fetchers reuse what they have;
/// NIX_PATH naming only the tree evaluated as `<nixpkgs>` (a `--file` keeps the user's
/// NIX_PATH, since it may be a `<lookup>` path or use one, as with nix-build); no colours.
fn evaluator_env(source: &Source, workdir: &Path) -> Result<Vec<(String, String)>, EnumerateError> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| KEPT_VARIABLES.contains(&k.as_str()))
        .collect();
    let home = workdir.join("home");
    std::fs::create_dir_all(&home)?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        env.insert("XDG_CACHE_HOME".into(), cache.display().to_string());
    }
    env.insert("HOME".into(), home.display().to_string());
    env.insert("XDG_DATA_HOME".into(), workdir.display().to_string());
    match source {
        Source::Nixpkgs(path) => {
            env.insert(
                "NIX_PATH".into(),
                format!("nixpkgs={}", absolute(path)?.display()),
            );
        }
        Source::File(_) => {
            if let Ok(nix_path) = std::env::var("NIX_PATH") {
                env.insert("NIX_PATH".into(), nix_path);
            }
        }
    }
    env.insert("NO_COLOR".into(), "1".into());
    env.insert("TERM".into(), "dumb".into());
    Ok(env.into_iter().collect())
}

fn current_system(nix: &Path, env: &[(String, String)]) -> Result<String, EnumerateError> {
    let instantiate = nix.with_file_name("nix-instantiate");
    let out = srcgrab_process::run(
        Command::new(&instantiate)
            .args(["--eval", "--json", "--expr", "builtins.currentSystem"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v))),
    )?;
    serde_json::from_str(out.trim()).map_err(|e| EnumerateError::NixCommand {
        command: instantiate.display().to_string(),
        message: e.to_string(),
    })
}

/// The commit of a nixpkgs that is the top of a git checkout (not merely inside one).
fn git_head(path: &Path) -> Option<String> {
    let text = srcgrab_process::run(Command::new("git").arg("-C").arg(path).args([
        "rev-parse",
        "--show-toplevel",
        "HEAD",
    ]))
    .ok()?;
    let mut lines = text.lines();
    let (top, rev) = (lines.next()?, lines.next()?);
    let is_top = Path::new(top).canonicalize().ok()? == path.canonicalize().ok()?;
    is_top.then(|| rev.to_string())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experimental_flag_from_2_4_on() {
        assert!(!needs_experimental_flag("nix (Nix) 2.3.16"));
        assert!(needs_experimental_flag("nix (Nix) 2.8.0"));
        assert!(needs_experimental_flag("nix (Lix, like Nix) 2.91.1"));
        assert!(needs_experimental_flag("nix (Nix) 3.0pre"));
    }

    #[test]
    fn output_hashes_from_drv_form() {
        let (mode, hash) = output_hash("r:sha256", &"00".repeat(32)).unwrap();
        assert_eq!(mode, HashMode::Recursive);
        assert_eq!(hash.algo, HashAlgo::Sha256);
        assert!(output_hash("r:blake3", "00").is_err());
    }

    #[test]
    fn arg_expressions_must_be_one_complete_expression() {
        assert_eq!(check_arg_expression("./configuration.nix"), Ok(()));
        assert_eq!(check_arg_expression("{ a = 1; b = [ true ]; }"), Ok(()));
        // Would close the parenthesis around it and add a binding to the load line.
        assert!(check_arg_expression("1); x = (2")
            .unwrap_err()
            .contains("not a Nix expression"));
        assert!(check_arg_expression("{ a = ; }")
            .unwrap_err()
            .contains("not a Nix expression"));
        assert!(check_arg_expression("1\n+ 2")
            .unwrap_err()
            .contains("one line"));
    }
}
