//! The evaluation walk: worker threads, each owning one `nix repl`, take (system, attribute
//! path) tasks from a shared queue. A derivation yields its drvPath (asking for it writes the
//! .drv files); a set to walk yields its names as new tasks; any error is a recorded failure.
//! A worker whose evaluator dies, outgrows the memory cap or runs out of time gets a fresh
//! one: a bad attribute costs only itself.
//!
//! Siblings (members of one set) are asked several per question, which shares the round trip
//! through `nix repl`. Each sibling's answer is traced as soon as it is known, so an
//! uncatchable error in a batch is the error of the first sibling without an answer (the same
//! message it gets alone) and the batch goes on after it; a sibling that throws (caught in
//! the batch) or crashes the evaluator is asked again alone, for its own message and limits.

use crate::attr_path;
use crate::eval::{
    nix_string, Answer, Death, Evaluator, EvaluatorCommand, Limits, Reply, StartError,
};
use crate::{EvalEvent, EvalReporter, Restart};
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

    /// Takes the next task and up to `most - 1` more siblings (same system and parent, not
    /// asked for by name) right behind it, leaving enough for the other workers.
    fn take_siblings(&self, most: usize, workers: usize) -> Option<Vec<Task>> {
        let first = self.take()?;
        let mut batch = vec![first];
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let share = state.pending.len() / workers.max(1);
        let parent = &batch[0].path[..batch[0].path.len().saturating_sub(1)];
        let mut more = Vec::new();
        if !batch[0].explicit && !batch[0].path.is_empty() {
            while batch.len() + more.len() < most.min(share + 1) {
                let sibling = state.pending.front().is_some_and(|t: &Task| {
                    t.system == batch[0].system
                        && !t.explicit
                        && t.path.len() == batch[0].path.len()
                        && t.path[..t.path.len() - 1] == *parent
                });
                if !sibling {
                    break;
                }
                more.extend(state.pending.pop_front());
            }
        }
        state.in_flight += more.len();
        drop(state);
        batch.extend(more);
        Some(batch)
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
    progress: &EvalReporter,
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
    progress: &EvalReporter,
    found: &(dyn Fn(&Root) + Sync),
) -> Result<(), StartError> {
    let mut worker = Worker {
        settings,
        evaluators: Evaluators {
            command: settings.command,
            limits: settings.limits,
            current: match evaluator {
                Some(e) => e,
                None => Evaluator::start(settings.command, settings.limits)?,
            },
            spare: None,
        },
        alive,
        progress,
        batch_size: 1,
    };
    progress.report(EvalEvent::WorkersAlive {
        count: alive.fetch_add(1, Ordering::SeqCst) + 1,
    });
    let restart_above = settings.limits.memory.map(|limit| limit / 5 * 4);
    while let Some(batch) = queue.take_siblings(worker.batch_size, settings.jobs) {
        let outcomes = if batch.len() == 1 {
            let outcome = worker.ask_alone(&batch[0])?;
            if matches!(outcome, Outcome::Found(_)) {
                worker.batch_size = (worker.batch_size * 2).min(MAX_BATCH);
            }
            vec![outcome]
        } else {
            worker.ask_together(&batch)?
        };
        for (task, outcome) in batch.into_iter().zip(outcomes) {
            let children = record(settings, result, progress, found, &task, outcome);
            queue.finish(children);
        }
        if let (Some(limit), Some(rss)) =
            (restart_above, worker.evaluators.current.resident_bytes())
        {
            if rss > limit {
                worker.evaluators.replace()?;
                progress.report(EvalEvent::EvaluatorRestarted {
                    why: Restart::MemoryHigh,
                });
            }
        }
    }
    progress.report(EvalEvent::WorkersAlive {
        count: alive.fetch_sub(1, Ordering::SeqCst) - 1,
    });
    Ok(())
}

/// Most sibling attributes asked in one question. Each question costs a round trip through
/// `nix repl` (which reads its input a byte at a time); a batch shares it.
const MAX_BATCH: usize = 32;

/// What one task came to.
enum Outcome {
    Found(Found),
    Failed(String),
}

/// One worker thread's evaluator and how many siblings it currently asks at once: doubled
/// after an answered batch (or a lone answer), back to one after a crash, so that where
/// attributes keep crashing evaluators each costs only itself.
struct Worker<'a> {
    settings: &'a WalkSettings<'a>,
    evaluators: Evaluators<'a>,
    alive: &'a AtomicUsize,
    progress: &'a EvalReporter,
    batch_size: usize,
}

impl Worker<'_> {
    /// Asks for one attribute; its errors, whatever they are, are its failure.
    fn ask_alone(&mut self, task: &Task) -> Result<Outcome, StartError> {
        let question = format!(
            "__sg.describe {} [{}] {} {}",
            task.system,
            nix_list(&task.path),
            task.explicit,
            self.owns(task)
        );
        Ok(
            match self.evaluators.current.ask(&question, self.settings.limits) {
                Answer::Value(value) => match read_answer(&value) {
                    Ok(found) => Outcome::Found(found),
                    Err(message) => Outcome::Failed(message),
                },
                Answer::Error(message) => Outcome::Failed(message),
                Answer::Died(Death { message, .. }) | Answer::Killed(message) => {
                    self.replace_after_crash()?;
                    Outcome::Failed(message)
                }
            },
        )
    }

    /// Asks for several siblings at once, going on after each one that fails uncatchably
    /// (abort, missing attribute, ...: its error ends the question right after the answers
    /// of the siblings before it). A sibling that throws (caught in the batch) is asked
    /// alone for its message. One that crashes the evaluator fails with Nix's last words
    /// (a stack overflow); one killed for the batch's memory or time is asked alone on a
    /// fresh evaluator, under its own limits. After either the batch size drops to one.
    fn ask_together(&mut self, tasks: &[Task]) -> Result<Vec<Outcome>, StartError> {
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut rest = tasks;
        while !rest.is_empty() {
            if rest.len() == 1 || self.batch_size == 1 {
                for task in rest {
                    outcomes.push(self.ask_alone(task)?);
                }
                break;
            }
            let reply = self.ask_batch(rest);
            // A crashed evaluator is replaced before anything else is asked.
            let crashed = reply.answer.ended_evaluator();
            if crashed {
                self.replace_after_crash()?;
                self.batch_size = 1;
            }
            let answered = reply.items.len().min(rest.len());
            for (task, item) in rest.iter().zip(reply.items) {
                outcomes.push(match read_answer(&item) {
                    Ok(found) => Outcome::Found(found),
                    Err(_) => self.ask_alone(task)?,
                });
            }
            rest = &rest[answered..];
            let Some(in_flight) = rest.first() else {
                if !crashed {
                    self.batch_size = (self.batch_size * 2).min(MAX_BATCH);
                }
                break;
            };
            outcomes.push(match reply.answer {
                Answer::Error(message)
                | Answer::Died(Death {
                    message,
                    reported: true,
                }) => Outcome::Failed(message),
                // A kill for the batch's memory or time, a death without its own last words
                // (asked alone on the fresh evaluator, under its own limits), or a complete
                // answer with items missing, which our question cannot give.
                Answer::Died(_) | Answer::Killed(_) | Answer::Value(_) => {
                    self.ask_alone(in_flight)?
                }
            });
            rest = &rest[1..];
        }
        Ok(outcomes)
    }

    /// One question about several siblings of one set.
    fn ask_batch(&mut self, tasks: &[Task]) -> Reply {
        let parent = &tasks[0].path[..tasks[0].path.len() - 1];
        let names: Vec<String> = tasks
            .iter()
            .map(|t| t.path.last().cloned().unwrap_or_default())
            .collect();
        let owned: Vec<String> = tasks.iter().map(|t| self.owns(t).to_string()).collect();
        let question = format!(
            "__sg.siblings {} [{}] [{}] [{}]",
            tasks[0].system,
            nix_list(parent),
            nix_list(&names),
            owned.join(" ")
        );
        let limits = Limits {
            time: self.settings.limits.time.map(|t| t * tasks.len() as u32),
            ..self.settings.limits
        };
        self.evaluators.current.ask_each(&question, limits)
    }

    fn owns(&self, task: &Task) -> bool {
        self.settings
            .shard
            .is_none_or(|shard| shard.owns(&attr_path::format(&task.path)))
    }

    fn replace_after_crash(&mut self) -> Result<(), StartError> {
        let alive = self.alive;
        self.progress.report(EvalEvent::WorkersAlive {
            count: alive.fetch_sub(1, Ordering::SeqCst) - 1,
        });
        self.evaluators.replace()?;
        self.progress.report(EvalEvent::WorkersAlive {
            count: alive.fetch_add(1, Ordering::SeqCst) + 1,
        });
        self.progress.report(EvalEvent::EvaluatorRestarted {
            why: Restart::Failed,
        });
        Ok(())
    }
}

/// Space-separated Nix strings, for a list literal.
fn nix_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| nix_string(n))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Records what a task came to and returns the tasks it adds (a walked set's members).
fn record(
    settings: &WalkSettings,
    result: &Mutex<WalkResult>,
    progress: &EvalReporter,
    found: &(dyn Fn(&Root) + Sync),
    task: &Task,
    outcome: Outcome,
) -> Vec<Task> {
    let system = &settings.systems[task.system];
    let attr = attr_path::format(&task.path);
    let mut children = Vec::new();
    let failure = match outcome {
        Outcome::Found(Found::Derivation(drv_path)) => {
            let root = Root {
                system: system.clone(),
                attr: attr.clone(),
                drv_path,
            };
            found(&root);
            lock(result).roots.push(root);
            None
        }
        Outcome::Found(Found::Set(_)) if task.path.len() >= MAX_DEPTH => Some(format!(
            "not walked: attribute sets nested deeper than {MAX_DEPTH} levels (a set that contains itself?)"
        )),
        Outcome::Found(Found::Set(names)) => {
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
        Outcome::Found(Found::Nothing) => None,
        Outcome::Failed(message) => Some(message),
    };
    progress.report(EvalEvent::AttrEvaluated {
        ok: failure.is_none(),
    });
    let owned = settings.shard.is_none_or(|shard| shard.owns(&attr));
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
    children
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
