//! What `srcgrab fetch` shows while it runs: bars on a terminal (one per file in flight,
//! labelled with the entry's name), a periodic line otherwise.

use crate::cmd::report::human_bytes;
use crate::progress::{self, PeriodicLog};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use srcgrab_fetcher::report::{EntryReport, FetchEvent, Reporter, Step};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Progress on stderr: on a terminal, an entries bar, a bytes line and one bar per transfer
/// in flight (as uv draws them); otherwise a line every ten seconds.
pub struct Display {
    entries: ProgressBar,
    bytes: ProgressBar,
    bars: MultiProgress,
    on_terminal: bool,
    transfers: Mutex<HashMap<u64, ProgressBar>>,
    log: PeriodicLog,
    total: u64,
    done: AtomicU64,
    not_done: AtomicU64,
    downloaded: AtomicU64,
    in_flight: AtomicU64,
    hosts_down: AtomicU64,
    /// Git checkouts and Nix builds running (they count no bytes), with their bars.
    steps: Mutex<HashMap<u64, Option<ProgressBar>>>,
    recent: Mutex<RecentRate>,
}

/// Bytes and entries done over the last minute, for a throughput and an ETA that follow
/// what the link does now rather than since the start.
struct RecentRate {
    /// (when, bytes downloaded, entries done), one sample a second at most, oldest first.
    samples: std::collections::VecDeque<(std::time::Instant, u64, u64)>,
}

const RECENT_WINDOW: Duration = Duration::from_secs(60);

impl RecentRate {
    /// Adds a sample; returns bytes per second and entries per second over the window.
    fn sample(&mut self, bytes: u64, entries: u64) -> (f64, f64) {
        let now = std::time::Instant::now();
        if self
            .samples
            .back()
            .is_none_or(|(at, _, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.samples.push_back((now, bytes, entries));
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RECENT_WINDOW)
        {
            self.samples.pop_front();
        }
        let Some(&(first, first_bytes, first_entries)) = self.samples.front() else {
            return (0.0, 0.0);
        };
        let seconds = now.duration_since(first).as_secs_f64().max(1.0);
        (
            bytes.saturating_sub(first_bytes) as f64 / seconds,
            entries.saturating_sub(first_entries) as f64 / seconds,
        )
    }
}

impl Display {
    pub fn new(total: u64) -> Display {
        let on_terminal = progress::on_terminal();
        let target = if on_terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bars = MultiProgress::with_draw_target(target);
        let entries = bars.add(progress::bar(
            total,
            "{bar:30} {pos}/{len} entries [{elapsed_precise}, eta {eta}] {msg}",
        ));
        let bytes = bars.add(progress::bar(
            0,
            "{binary_bytes} downloaded at {binary_bytes_per_sec} {msg}",
        ));
        Display {
            entries,
            bytes,
            bars,
            on_terminal,
            transfers: Mutex::new(HashMap::new()),
            log: PeriodicLog::new(Duration::from_secs(10)),
            total,
            done: AtomicU64::new(0),
            not_done: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            hosts_down: AtomicU64::new(0),
            steps: Mutex::new(HashMap::new()),
            recent: Mutex::new(RecentRate {
                samples: std::collections::VecDeque::new(),
            }),
        }
    }

    /// Files in flight, hosts down, and throughput and ETA over the last minute.
    fn status(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let (bytes_per_second, entries_per_second) = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(self.downloaded.load(Ordering::Relaxed), done);
        let eta = if entries_per_second > 0.0 {
            let seconds = self.total.saturating_sub(done) as f64 / entries_per_second;
            format!("eta {}", human_duration(seconds))
        } else {
            "eta unknown".to_string()
        };
        let mut line = format!(
            "{} files in flight, {}/s and {eta} over the last minute",
            self.in_flight.load(Ordering::Relaxed),
            human_bytes(bytes_per_second as u64)
        );
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner()).len();
        if steps > 0 {
            line.push_str(&format!(", {steps} git checkouts or Nix builds running"));
        }
        let down = self.hosts_down.load(Ordering::Relaxed);
        if down > 0 {
            line.push_str(&format!(", {down} hosts down"));
        }
        line
    }

    fn refresh(&self) {
        if self.on_terminal {
            self.bytes.set_message(self.status());
        }
        self.log.maybe(|| {
            format!(
                "fetch: {}/{} entries ({} not fetched), {} downloaded, {}",
                self.done.load(Ordering::Relaxed),
                self.total,
                self.not_done.load(Ordering::Relaxed),
                human_bytes(self.downloaded.load(Ordering::Relaxed)),
                self.status()
            )
        });
    }

    pub fn finish(&self) {
        self.entries.finish_and_clear();
        self.bytes.finish_and_clear();
    }
}

impl<'a> Reporter<FetchEvent<'a>> for Display {
    fn report(&self, event: FetchEvent<'a>) {
        match event {
            FetchEvent::Start { .. } | FetchEvent::PathDone(_) => {}
            FetchEvent::DownloadStart { id, label, length } => {
                self.download_start(id, label, length)
            }
            FetchEvent::DownloadLength { id, length } => self.download_length(id, length),
            FetchEvent::DownloadRanges { id, ranges } => self.download_ranges(id, ranges),
            FetchEvent::DownloadBytes { id, bytes } => self.download_bytes(id, bytes),
            FetchEvent::DownloadEnd { id } => self.download_end(id),
            FetchEvent::StepStart { id, step, label } => self.step_start(id, step, label),
            FetchEvent::StepEnd { id } => self.step_end(id),
            FetchEvent::HostsDown { count } => self.hosts_down(count),
            FetchEvent::EntryDone(entry) => self.entry_done(entry),
        }
    }
}

impl Display {
    fn download_start(&self, id: u64, label: &str, length: Option<u64>) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.on_terminal {
            let bar = self.bars.add(progress::bar(
                length.unwrap_or(0),
                "  {bar:20} {binary_bytes:>10}/{binary_total_bytes:<10} {wide_msg}",
            ));
            bar.set_message(crate::one_line::escape(label).into_owned());
            self.transfers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, bar);
        }
        self.refresh();
    }

    fn download_length(&self, id: u64, length: u64) {
        if let Some(bar) = self.transfer(id) {
            bar.set_length(length);
        }
    }

    fn download_ranges(&self, id: u64, ranges: usize) {
        if let Some(bar) = self.transfer(id) {
            let label = bar.message();
            let name = label.split(" (").next().unwrap_or(&label).to_string();
            bar.set_message(format!("{name} ({ranges} ranges)"));
        }
    }

    fn download_bytes(&self, id: u64, bytes: u64) {
        self.downloaded.fetch_add(bytes, Ordering::Relaxed);
        self.bytes.inc(bytes);
        if let Some(bar) = self.transfer(id) {
            bar.inc(bytes);
        }
        self.refresh();
    }

    fn download_end(&self, id: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let bar = self
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(bar) = bar {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
        self.refresh();
    }

    fn hosts_down(&self, count: usize) {
        self.hosts_down.store(count as u64, Ordering::Relaxed);
        self.refresh();
    }

    /// A spinner per git checkout or Nix build on a terminal: they take minutes and count
    /// no bytes, so the bars alone would look stuck.
    fn step_start(&self, id: u64, step: Step, label: &str) {
        let bar = self.on_terminal.then(|| {
            let bar = self.bars.add(ProgressBar::new_spinner());
            bar.set_message(
                crate::one_line::escape(&format!("{} of {label}", step.name())).into_owned(),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, bar);
        self.refresh();
    }

    fn step_end(&self, id: u64) {
        let bar = self
            .steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .flatten();
        if let Some(bar) = bar {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
        self.refresh();
    }

    fn entry_done(&self, entry: &EntryReport) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !entry.is_done() {
            let n = self.not_done.fetch_add(1, Ordering::Relaxed) + 1;
            self.entries.set_message(format!("{n} not fetched"));
        }
        self.entries.inc(1);
        self.refresh();
    }

    fn transfer(&self, id: u64) -> Option<ProgressBar> {
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

fn human_duration(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    match seconds {
        0..=99 => format!("{seconds} s"),
        100..=5999 => format!("{} min", seconds / 60),
        _ => format!("{:.1} h", seconds as f64 / 3600.0),
    }
}
