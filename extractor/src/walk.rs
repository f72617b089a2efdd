//! The evaluation walk: worker threads, each owning one `nix repl`, take (system, attribute
//! path) tasks from a shared queue. A derivation yields its drvPath (asking for it writes the
//! .drv files); a set to walk yields its names as new tasks; any error is a recorded failure.
//! A worker whose evaluator dies, outgrows the memory cap or runs out of time gets a fresh
//! one: a bad attribute costs only itself.

use crate::attr_path;
use crate::eval::{nix_string, Answer, Evaluator, EvaluatorCommand, Limits, StartError};
use crate::{Progress, Restart};
use srcgrab_manifest::{Failure, Shard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

/// An evaluated derivation attribute: where the closure walk starts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Root {
    pub system: String,
    pub attr: String,
    pub drv_path: String,
}

#[derive(Debug, Default)]
pub struct WalkResult {
    pub roots: Vec<Root>,
    pub failures: Vec<Failure>,
}

pub struct WalkSettings<'a> {
    pub command: &'a EvaluatorCommand,
    pub systems: &'a [String],
    /// Paths to start from (walked as explicitly asked for); `[[]]` is the whole set.
    pub start: &'a [Vec<String>],
    pub jobs: usize,
    /// Evaluate only the derivations (and record only the failures) of the attribute paths
    /// this part owns; sets are walked by every part.
    pub shard: Option<Shard>,
    /// Kill an evaluator past these (the task in flight fails); also replace it between
    /// tasks above 80% of the memory limit.
    pub limits: Limits,
}

/// Sets nested deeper than this are not walked: a set that contains itself (like a whole
/// nixpkgs' `pkgs.pkgs`, under --file's walk-everything rule) would never end.
pub const MAX_DEPTH: usize = 12;

#[derive(Debug, Clone)]
struct Task {
    system: usize,
    path: Vec<String>,
    explicit: bool,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Task>,
    in_flight: usize,
    stopped: bool,
}

/// Tasks to do; the walk is over when nothing is pending and nothing is in flight (a task
/// in flight may still add children).
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

impl Queue {
    fn take(&self) -> Option<Task> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.stopped {
                return None;
            }
            if let Some(task) = state.pending.pop_front() {
                state.in_flight += 1;
                return Some(task);
            }
            if state.in_flight == 0 {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self, children: Vec<Task>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.extend(children);
        state.in_flight -= 1;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.changed.notify_all();
    }
}

/// Runs the walk to the end, telling `found` of each root as soon as it is evaluated. Only an
/// evaluator that cannot be started (nix missing, the expression not loading) is an error;
/// everything an attribute does is data.
pub fn walk(
    settings: &WalkSettings,
    progress: &dyn Progress,
    found: &(dyn Fn(&Root) + Sync),
) -> Result<WalkResult, StartError> {
    let first = Evaluator::start(settings.command, settings.limits)?;
    let queue = Queue {
        state: Mutex::new(QueueState {
            pending: (0..settings.systems.len())
                .flat_map(|system| {
                    settings.start.iter().map(move |path| Task {
                        system,
                        path: path.clone(),
                        explicit: true,
                    })
                })
                .collect(),
            ..QueueState::default()
        }),
        changed: Condvar::new(),
    };
    let result = Mutex::new(WalkResult::default());
    let fatal = Mutex::new(None);
    let alive = AtomicUsize::new(0);
    let mut first = Some(first);
    std::thread::scope(|scope| {
        for _ in 0..settings.jobs.max(1) {
            let evaluator = first.take();
            let (queue, result, fatal, alive) = (&queue, &result, &fatal, &alive);
            scope.spawn(move || {
                let outcome =
                    run_worker(settings, evaluator, queue, result, alive, progress, found);
                if let Err(e) = outcome {
                    fatal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    queue.stop();
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(result.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn run_worker(
    settings: &WalkSettings,
    evaluator: Option<Evaluator>,
    queue: &Queue,
    result: &Mutex<WalkResult>,
    alive: &AtomicUsize,
    progress: &dyn Progress,
    found: &(dyn Fn(&Root) + Sync),
) -> Result<(), StartError> {
    let mut evaluators = Evaluators {
        command: settings.command,
        limits: settings.limits,
        current: match evaluator {
            Some(e) => e,
            None => Evaluator::start(settings.command, settings.limits)?,
        },
        spare: None,
    };
    progress.workers_alive(alive.fetch_add(1, Ordering::SeqCst) + 1);
    let restart_above = settings.limits.memory.map(|limit| limit / 5 * 4);
    while let Some(task) = queue.take() {
        let system = &settings.systems[task.system];
        let attr = attr_path::format(&task.path);
        let owned = settings.shard.is_none_or(|shard| shard.owns(&attr));
        let question = format!(
            "__sg.describe {} [{}] {} {owned}",
            task.system,
            task.path
                .iter()
                .map(|n| nix_string(n))
                .collect::<Vec<_>>()
                .join(" "),
            task.explicit
        );
        let answer = evaluators.current.ask(&question, settings.limits);
        let mut children = Vec::new();
        let failure = match answer {
            Answer::Value(value) => match read_answer(&value) {
                Ok(Found::Derivation(drv_path)) => {
                    let root = Root {
                        system: system.clone(),
                        attr: attr.clone(),
                        drv_path,
                    };
                    found(&root);
                    lock(result).roots.push(root);
                    None
                }
                Ok(Found::Set(_)) if task.path.len() >= MAX_DEPTH => Some(format!(
                    "not walked: attribute sets nested deeper than {MAX_DEPTH} levels (a set that contains itself?)"
                )),
                Ok(Found::Set(names)) => {
                    children = names
                        .into_iter()
                        .map(|name| {
                            let mut path = task.path.clone();
                            path.push(name);
                            Task {
                                system: task.system,
                                path,
                                explicit: false,
                            }
                        })
                        .collect();
                    None
                }
                Ok(Found::Nothing) => None,
                Err(message) => Some(message),
            },
            Answer::Error(message) => Some(message),
            Answer::Crashed(message) => {
                progress.workers_alive(alive.fetch_sub(1, Ordering::SeqCst) - 1);
                evaluators.replace()?;
                progress.workers_alive(alive.fetch_add(1, Ordering::SeqCst) + 1);
                progress.evaluator_restarted(Restart::Failed);
                Some(message)
            }
        };
        progress.attr_evaluated(failure.is_none());
        if let Some(error) = failure.filter(|_| owned) {
            lock(result).failures.push(Failure {
                system: system.clone(),
                attr: if attr.is_empty() {
                    "<root>".into()
                } else {
                    attr
                },
                error,
            });
        }
        queue.finish(children);
        if let (Some(limit), Some(rss)) = (restart_above, evaluators.current.resident_bytes()) {
            if rss > limit {
                evaluators.replace()?;
                progress.evaluator_restarted(Restart::MemoryHigh);
            }
        }
    }
    progress.workers_alive(alive.fetch_sub(1, Ordering::SeqCst) - 1);
    Ok(())
}

/// A worker's evaluator and, once it has been replaced a first time, a spare being started
/// in the background: the next replacement swaps in a loaded process instead of waiting for
/// one (a set whose attributes keep overflowing the stack replaces evaluators hundreds of
/// times). A walk that never replaces one runs no spare.
struct Evaluators<'a> {
    command: &'a EvaluatorCommand,
    limits: Limits,
    current: Evaluator,
    spare: Option<JoinHandle<Result<Evaluator, StartError>>>,
}

impl Evaluators<'_> {
    fn replace(&mut self) -> Result<(), StartError> {
        self.current.kill();
        self.current = match self.spare.take() {
            Some(starting) => join(starting)?,
            None => Evaluator::start(self.command, self.limits)?,
        };
        let (command, limits) = (self.command.clone(), self.limits);
        self.spare = Some(std::thread::spawn(move || {
            Evaluator::start(&command, limits)
        }));
        Ok(())
    }
}

impl Drop for Evaluators<'_> {
    /// Waits for a spare still starting, so that no evaluator outlives the walk.
    fn drop(&mut self) {
        if let Some(starting) = self.spare.take() {
            let _ = starting.join();
        }
    }
}

fn join<T>(thread: JoinHandle<T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Found {
    Derivation(String),
    Set(Vec<String>),
    Nothing,
}

fn read_answer(value: &serde_json::Value) -> Result<Found, String> {
    if let Some(drv) = value.get("drv").and_then(|d| d.as_str()) {
        return Ok(Found::Derivation(drv.to_string()));
    }
    if let Some(names) = value.get("children").and_then(|c| c.as_array()) {
        return Ok(Found::Set(
            names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
        ));
    }
    if value.get("skip").is_some() {
        return Ok(Found::Nothing);
    }
    Err(format!("unexpected answer from the evaluator: {value}"))
}
