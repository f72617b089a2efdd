//! The time bound of a download: `stall_timeout + size / min_rate` from its first byte, so
//! a body that trickles in (or a server that cuts every answer) ends with a clear failure,
//! while a large file that keeps coming at a sane rate is never cut. Time waiting for a
//! connection slot does not count; before the first byte, the stall timeout bounds each try.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DownloadOptions;

/// Farther than any download may take, for sizes whose time would overflow a clock.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(super) struct Deadline<'a> {
    /// When the first byte came.
    started: Mutex<Option<Instant>>,
    grace: Duration,
    min_rate: u64,
    /// The size known beforehand (a narinfo's FileSize).
    size: Option<u64>,
    /// The length a server announced (0: none).
    announced: Arc<AtomicU64>,
    /// Bytes the entry received (all its downloads), and how many before this one began.
    tally: &'a AtomicU64,
    tally_at_start: u64,
}

impl Deadline<'_> {
    pub(super) fn new<'a>(
        options: &DownloadOptions,
        size: Option<u64>,
        announced: &Arc<AtomicU64>,
        tally: &'a AtomicU64,
    ) -> Deadline<'a> {
        Deadline {
            started: Mutex::new(None),
            grace: options.stall_timeout,
            min_rate: options.min_rate.max(1),
            size,
            announced: announced.clone(),
            tally,
            tally_at_start: tally.load(Ordering::Relaxed),
        }
    }

    fn received(&self) -> u64 {
        self.tally
            .load(Ordering::Relaxed)
            .saturating_sub(self.tally_at_start)
    }

    /// When the first byte came, noting now when bytes came since the last look.
    fn started(&self) -> Option<Instant> {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_none() && self.received() > 0 {
            *started = Some(Instant::now());
        }
        *started
    }

    /// When the download must be done; before the first byte, a look again after the
    /// grace time.
    fn end(&self) -> Instant {
        let Some(started) = self.started() else {
            return Instant::now() + self.grace;
        };
        let announced = self.announced.load(Ordering::Relaxed);
        let bytes = self.size.unwrap_or(announced).max(self.received());
        let allowed = self.grace + Duration::from_secs_f64(bytes as f64 / self.min_rate as f64);
        started
            .checked_add(allowed.min(NEVER))
            .unwrap_or(started + NEVER)
    }

    /// Runs one try; `None` when the deadline passed first.
    pub(super) async fn run<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        loop {
            let end = self.end();
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep_until(end.into()) => {
                    // Bytes that came meanwhile move the end for a download of unknown size.
                    if self.end() <= Instant::now() {
                        return None;
                    }
                }
            }
        }
    }

    /// Whether a pause of `pause` still leaves time before the deadline.
    pub(super) fn allows(&self, pause: Duration) -> bool {
        Instant::now() + pause < self.end()
    }

    pub(super) fn exceeded(&self) -> String {
        format!(
            "not done {:.1} s after its first byte, with {} bytes received: slower than the minimum rate ({} bytes/s after {:?})",
            self.started().map_or(0.0, |at| at.elapsed().as_secs_f64()),
            self.received(),
            self.min_rate,
            self.grace
        )
    }
}
