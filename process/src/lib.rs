//! The one way srcgrab runs external programs (git, nix-store, nix-instantiate): stdin
//! closed unless input is given, stdout captured, and a failure that names the command and
//! ends with the last lines it wrote to stderr.
//!
//! A crate of its own because both the extractor (Nix's evaluator and git) and the fetcher
//! (git, Nix's builder) run programs, and neither should depend on the other; the pure
//! formats crate does no I/O at all.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Lines of stderr kept in an error: enough to see why, short enough for a report.
const STDERR_LINES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run `{command}`: {source}")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    /// Writing its input or collecting its output failed.
    #[error("`{command}`: {source}")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
    /// It ran and exited unsuccessfully; `stderr` is the end of what it said.
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

impl ProcessError {
    /// The command line, as in the message.
    pub fn command(&self) -> &str {
        match self {
            ProcessError::Start { command, .. }
            | ProcessError::Io { command, .. }
            | ProcessError::Failed { command, .. } => command,
        }
    }
}

/// `program arg arg ...` for messages, without the environment.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of a command's stderr.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n")
}

/// Runs `cmd` to completion with stdin closed; its stdout when it succeeds.
pub fn run(cmd: &mut Command) -> Result<String, ProcessError> {
    run_with_input(cmd, None)
}

/// Runs `cmd` to completion, writing `input` (when given) to its stdin first.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>) -> Result<String, ProcessError> {
    let command = describe(cmd);
    let io_error = |source| ProcessError::Io {
        command: command.clone(),
        source,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ProcessError::Start {
        command: command.clone(),
        source,
    })?;
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin.write_all(bytes).map_err(io_error)?;
    }
    let output = child.wait_with_output().map_err(io_error)?;
    if !output.status.success() {
        return Err(ProcessError::Failed {
            command,
            stderr: tail(&output.stderr),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `cmd` exits successfully; what it prints is discarded (a yes/no question such as
/// `nix-store --check-validity`).
pub fn succeeds(cmd: &mut Command) -> Result<bool, ProcessError> {
    let command = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| ProcessError::Start { command, source })?;
    Ok(status.success())
}

/// A running command whose stdout the caller reads as a stream (`nix-store --dump`).
pub struct Streaming {
    command: String,
    child: Child,
    stdout: ChildStdout,
}

impl Streaming {
    pub fn start(cmd: &mut Command) -> Result<Streaming, ProcessError> {
        let command = describe(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ProcessError::Start {
                command: command.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(Streaming {
            command,
            child,
            stdout,
        })
    }

    pub fn stdout(&mut self) -> &mut ChildStdout {
        &mut self.stdout
    }

    /// Closes stdout (whatever is unread is dropped) and waits for the command's verdict.
    pub fn finish(self) -> Result<(), ProcessError> {
        let Streaming {
            command,
            child,
            stdout,
        } = self;
        drop(stdout);
        let output = child
            .wait_with_output()
            .map_err(|source| ProcessError::Io {
                command: command.clone(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ProcessError::Failed {
                command,
                stderr: tail(&output.stderr),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_stdout_and_feeds_stdin() {
        let out = run_with_input(
            Command::new("sh").args(["-c", "cat; echo done"]),
            Some(b"in "),
        )
        .unwrap();
        assert_eq!(out, "in done\n");
        assert_eq!(
            run(Command::new("sh").args(["-c", "echo ok"])).unwrap(),
            "ok\n"
        );
    }

    #[test]
    fn a_failure_names_the_command_and_keeps_the_end_of_stderr() {
        let err = run(Command::new("sh").args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i >&2; done; exit 3",
        ]))
        .unwrap_err();
        let ProcessError::Failed { command, stderr } = &err else {
            panic!("{err:?}")
        };
        assert!(command.starts_with("sh -c for i in"), "{command}");
        assert_eq!(stderr.lines().count(), STDERR_LINES);
        assert!(
            stderr.starts_with("line3") && stderr.ends_with("line10"),
            "{stderr}"
        );
        let err = run(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert!(matches!(err, ProcessError::Start { .. }), "{err:?}");
        assert_eq!(err.command(), "/nonexistent/program");
    }

    #[test]
    fn streams_stdout_and_reports_the_exit() {
        use std::io::Read;
        let mut child = Streaming::start(Command::new("sh").args(["-c", "echo streamed"])).unwrap();
        let mut text = String::new();
        child.stdout().read_to_string(&mut text).unwrap();
        assert_eq!(text, "streamed\n");
        child.finish().unwrap();
        let failing = Streaming::start(Command::new("sh").args(["-c", "echo no >&2; exit 1"]));
        assert!(matches!(
            failing.unwrap().finish(),
            Err(ProcessError::Failed { stderr, .. }) if stderr == "no"
        ));
        assert!(succeeds(&mut Command::new("true")).unwrap());
        assert!(!succeeds(&mut Command::new("false")).unwrap());
    }
}
