//! Progress display shared by the subcommands: indicatif bars on a terminal, plain
//! periodic lines otherwise (CI logs, pipes), so long runs are never silent.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether stderr is a terminal, i.e. whether to draw bars.
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar drawn on stderr, hidden when stderr is not a terminal.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if !on_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Prints a line at most every `every` when not on a terminal; a no-op on a terminal,
/// where the bars say the same.
pub struct PeriodicLog {
    every: Duration,
    last: Mutex<Instant>,
    enabled: bool,
}

impl PeriodicLog {
    pub fn new(every: Duration) -> PeriodicLog {
        PeriodicLog {
            every,
            last: Mutex::new(Instant::now()),
            enabled: !on_terminal(),
        }
    }

    pub fn maybe(&self, line: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= self.every {
            *last = Instant::now();
            tell!("srcgrab: {}", line());
        }
    }
}
