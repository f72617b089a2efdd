//! One evaluator process: a `nix repl` fed one line per question over a pipe.
//!
//! `nix repl` keeps going after any error in an expression (abort, missing attribute,
//! infinite recursion, ...) that would end `nix-instantiate`, so one bad attribute costs only
//! itself. Answers are read from stderr only: each question prints its result with
//! `builtins.trace "SRCGRAB-RESULT <json>"` and is followed by a sentinel line that traces
//! `SRCGRAB-END <n>`; whatever appears on stderr before the sentinel belongs to that
//! question, and without a RESULT line its first `error:` line is the failure. The sentinel
//! is a line of its own so that it is printed even when the question fails. A question about
//! several attributes also traces `SRCGRAB-ITEM <json>` for each as soon as it is answered,
//! so when one fails uncatchably the ones before it keep their answers (see [`Reply`]).
//! stdout (prompts, coloured values) is drained and ignored.
//!
//! `nix repl` reads its input one byte at a time (a read and two pselect calls per byte), so
//! both lines go through helpers bound once at start (`__sgq`, `__sge`) and stay short:
//! ~45 bytes per question instead of ~140 halved the time of a 20,000-question walk.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often a running question checks the evaluator's memory and time.
const POLL: Duration = Duration::from_millis(50);

/// Binds the question helpers: `__sgq EXPR` traces the JSON of EXPR, `__sge N` the sentinel.
const HELPERS: &str = "__sgq = v: builtins.trace (\"SRCGRAB-RESULT \" + builtins.toJSON v) null\n\
                       __sge = n: builtins.trace \"SRCGRAB-END ${toString n}\" null\n";

/// What a single question may use; past either limit the evaluator is killed and the
/// question fails (as a crash: the process must be replaced).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Resident bytes of the evaluator process.
    pub memory: Option<u64>,
    /// Wall time of one question: an evaluation that loops without growing would otherwise
    /// hold its worker forever.
    pub time: Option<Duration>,
}

/// How to start evaluators: the nix binary, its environment, and the first line that binds
/// the loaded expression as `__sg`.
#[derive(Debug, Clone)]
pub struct EvaluatorCommand {
    pub nix: PathBuf,
    /// Whether `nix` needs `--extra-experimental-features nix-command` (Nix >= 2.4).
    pub experimental_flag: bool,
    pub env: Vec<(String, String)>,
    /// A complete repl line binding `__sg`.
    pub load_line: String,
    /// Hard stack limit (bytes) for the evaluator. Nix raises its stack to 64 MiB when the
    /// hard limit allows; a lower one makes stack overflows (which end `nix repl`) cheaper,
    /// but also fails legitimately deep evaluations, so it is only set when asked for.
    pub stack_limit: Option<u64>,
}

/// A question's answer and the items it traced before it (all of them, or those before the
/// one that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub items: Vec<serde_json::Value>,
    pub answer: Answer,
}

/// The outcome of one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The JSON the question traced.
    Value(serde_json::Value),
    /// Nix reported an error; its first line, without the `error: ` prefix.
    Error(String),
    /// The evaluator ended by itself (a stack overflow ends Nix 2.8's); it must be restarted.
    Died(Death),
    /// The evaluator was killed past --max-memory or --eval-timeout; it must be restarted.
    Killed(String),
}

impl Answer {
    /// Whether the evaluator is gone and must be replaced.
    pub fn ended_evaluator(&self) -> bool {
        matches!(self, Answer::Died(_) | Answer::Killed(_))
    }
}

/// How an evaluator died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// How it ended and its last words.
    pub message: String,
    /// Its last words were an `error:` line printed after the last item it answered: the
    /// death of the item in flight, which would die the same way asked alone.
    pub reported: bool,
}

pub struct Evaluator {
    child: Child,
    stdin: ChildStdin,
    stderr_lines: Receiver<String>,
    questions_asked: u64,
    /// The last stderr line of the current question after its last item, to say something
    /// useful when the process dies.
    last_line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot run {nix}: {source}")]
    Spawn { nix: String, source: std::io::Error },
    #[error("the expression cannot be loaded: {0}")]
    Load(String),
}

impl Evaluator {
    /// Starts `nix repl`, loads the expression and checks that it loads, so that a broken
    /// tree is reported once rather than as a failure of every attribute.
    pub fn start(command: &EvaluatorCommand, limits: Limits) -> Result<Evaluator, StartError> {
        let mut cmd = Command::new(&command.nix);
        if command.experimental_flag {
            cmd.args(["--extra-experimental-features", "nix-command"]);
        }
        cmd.arg("repl")
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(bytes) = command.stack_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_STACK, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
            nix: command.nix.display().to_string(),
            source,
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (send, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = strip_ansi(&String::from_utf8_lossy(&line));
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut evaluator = Evaluator {
            child,
            stdin,
            stderr_lines,
            questions_asked: 0,
            last_line: String::new(),
        };
        let bind = format!("{}\n{HELPERS}", command.load_line);
        if evaluator.stdin.write_all(bind.as_bytes()).is_err() {
            return Err(StartError::Load(evaluator.death_note().message));
        }
        match evaluator.ask("__sg.check", limits) {
            Answer::Value(_) => Ok(evaluator),
            Answer::Error(message) | Answer::Killed(message) => Err(StartError::Load(message)),
            Answer::Died(death) => Err(StartError::Load(death.message)),
        }
    }

    /// Asks for `builtins.toJSON (<expression>)`; the expression must fit on one line.
    pub fn ask(&mut self, expression: &str, limits: Limits) -> Answer {
        self.ask_each(expression, limits).answer
    }

    /// [`Evaluator::ask`], also collecting the `SRCGRAB-ITEM` lines traced on the way (an
    /// unreadable one is kept as `null`).
    pub fn ask_each(&mut self, expression: &str, limits: Limits) -> Reply {
        let mut items = Vec::new();
        let answer = self.ask_collecting(expression, limits, &mut items);
        Reply { items, answer }
    }

    fn ask_collecting(
        &mut self,
        expression: &str,
        limits: Limits,
        items: &mut Vec<serde_json::Value>,
    ) -> Answer {
        self.questions_asked += 1;
        self.last_line.clear();
        let n = self.questions_asked;
        let lines = format!("__sgq ({expression})\n__sge {n}\n");
        if self
            .stdin
            .write_all(lines.as_bytes())
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return Answer::Died(self.death_note());
        }
        let sentinel = format!("trace: SRCGRAB-END {n}");
        let mut result = None;
        let mut error_lines = ErrorLines::default();
        let asked = Instant::now();
        let mut last_check = asked;
        loop {
            // Checked on a clock, not only when Nix is quiet: a chatty evaluation (traces,
            // warnings) must not escape the limits.
            if last_check.elapsed() >= POLL {
                last_check = Instant::now();
                if let Some(limit) = limits.memory {
                    if self.resident_bytes().is_some_and(|rss| rss > limit) {
                        self.kill();
                        return Answer::Killed("exceeded --max-memory".into());
                    }
                }
                if limits.time.is_some_and(|limit| asked.elapsed() > limit) {
                    self.kill();
                    return Answer::Killed("exceeded --eval-timeout".into());
                }
            }
            match self.stderr_lines.recv_timeout(POLL) {
                Ok(line) => {
                    if line == sentinel {
                        break;
                    }
                    if let Some(json) = line.strip_prefix("trace: SRCGRAB-RESULT ") {
                        result = Some(json.to_string());
                    } else if let Some(json) = line.strip_prefix("trace: SRCGRAB-ITEM ") {
                        items.push(serde_json::from_str(json).unwrap_or_default());
                        self.last_line.clear();
                        continue;
                    } else {
                        error_lines.push(&line);
                    }
                    if !line.trim().is_empty() {
                        self.last_line = line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Answer::Died(self.death_note()),
            }
        }
        match (result, error_lines.message) {
            (Some(json), _) => match serde_json::from_str(&json) {
                Ok(value) => Answer::Value(value),
                Err(e) => Answer::Error(format!("unreadable answer from nix: {e}")),
            },
            (None, Some(message)) => Answer::Error(message),
            (None, None) => Answer::Error(format!(
                "nix printed no result and no error (last line: {})",
                self.last_line
            )),
        }
    }

    /// Resident memory of the evaluator process, from /proc (None where that is unreadable).
    pub fn resident_bytes(&self) -> Option<u64> {
        resident_bytes(self.child.id())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What to say about a process that stopped answering: how it ended and its last words.
    fn death_note(&mut self) -> Death {
        let status = match self.child.wait() {
            Ok(status) => describe_exit(status),
            Err(e) => e.to_string(),
        };
        while let Ok(line) = self.stderr_lines.try_recv() {
            if !line.trim().is_empty() {
                self.last_line = line;
            }
        }
        Death {
            message: if self.last_line.is_empty() {
                format!("evaluator crashed: {status}")
            } else {
                format!("evaluator crashed: {status}: {}", self.last_line)
            },
            reported: self.last_line.trim_start().starts_with("error:"),
        }
    }
}

/// Finds the message of Nix's error report. Older Nix prints `error: <message>` first;
/// Nix >= 2.13 and Lix print a bare `error:`, the evaluation trace (`… while evaluating …`),
/// and the message last, as an indented `error: <message>` line.
#[derive(Default)]
struct ErrorLines {
    message: Option<String>,
    /// A bare `error:` was seen: the message comes in a later line.
    in_trace: bool,
}

impl ErrorLines {
    fn push(&mut self, line: &str) {
        if self.message.is_some() && !self.in_trace {
            return;
        }
        let trimmed = line.trim();
        if trimmed == "error:" && self.message.is_none() {
            self.in_trace = true;
            self.message = Some("error".into());
        } else if let Some(message) = trimmed.strip_prefix("error: ") {
            // Indented `error:` lines before a bare `error:` belong to something else.
            let from_top = line.starts_with("error: ");
            if self.in_trace || (self.message.is_none() && from_top) {
                self.message = Some(message.trim().to_string());
            }
        }
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => status.to_string(),
    }
}

/// VmRSS of a process, in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))
        .ok()?
        .read_to_string(&mut status)
        .ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Removes terminal colour sequences (`ESC [ ... letter`), which Nix prints despite NO_COLOR
/// in some versions.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A Nix string literal holding `text` exactly.
pub fn nix_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Nix path expression for an absolute path, whatever characters it holds.
pub fn nix_path(path: &Path) -> String {
    format!("(/. + {})", nix_string(&path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(lines: &[&str]) -> Option<String> {
        let mut errors = ErrorLines::default();
        for line in lines {
            errors.push(line);
        }
        errors.message
    }

    #[test]
    fn error_messages_in_old_and_new_layouts() {
        // Nix 2.8 (seen here).
        assert_eq!(
            error_of(&[
                "error: attribute 'nope' missing",
                "",
                "       at /t.nix:2:50:",
                "       error: not this"
            ])
            .as_deref(),
            Some("attribute 'nope' missing")
        );
        // Nix >= 2.13: the trace first, the message last.
        assert_eq!(
            error_of(&[
                "error:",
                "       … while evaluating the attribute 'drvPath'",
                "         at /t.nix:3:5:",
                "       error: attribute 'nope' missing",
                "       at /t.nix:2:50:",
            ])
            .as_deref(),
            Some("attribute 'nope' missing")
        );
        assert_eq!(error_of(&["trace: warning: x", "warning: y"]), None);
    }

    #[test]
    fn strips_colour_sequences() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1merror:\u{1b}[0m attribute \u{1b}[35;1m'x'\u{1b}[0m missing"),
            "error: attribute 'x' missing"
        );
    }

    #[test]
    fn nix_strings_escape_what_nix_would_interpret() {
        assert_eq!(nix_string("a\"b\\c\n${x}$y"), r#""a\"b\\c\n\${x}$y""#);
    }
}
