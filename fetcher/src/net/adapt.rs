//! How many transfers one host gets at once. Over HTTP/2 requests are streams of one
//! connection, so a host that answered in HTTP/2 gets the stream budget at once. Over
//! HTTP/1.1 each transfer is a connection, and the right number depends on the link: on a
//! far link where each connection is bound by its own window, every new connection adds
//! throughput; on a thin or shared link it only adds waste. So the count starts at
//! [`START`] and, each [`WINDOW`] in which the host used all it had, grows while the host's
//! throughput rose, steps back once it stops rising, and halves on 429 or 503.
//!
//! Small requests (narinfo look-ups, HEADs) follow the same rules with a count of their
//! own ([`Traffic::Lookups`]): they hold a connection for one round trip and move almost no
//! bytes, so they start higher and double (a far link's few hundred are reached in a few
//! windows, as TCP's slow start does), and their throughput is counted in requests answered.

use std::time::{Duration, Instant};

/// Transfers an HTTP/1.1 host starts with (or the ceiling, when lower).
pub(super) const START: usize = 8;
/// Small requests an HTTP/1.1 host starts with: what one look-up pool had before it adapted.
pub(super) const LOOKUP_START: usize = 32;
/// How long throughput is measured before the count changes.
pub(super) const WINDOW: Duration = Duration::from_secs(2);
/// Throughput must rise by this factor for the growth to count as helping.
const GAIN: f64 = 1.1;
/// A growth paid for itself when throughput rose by at least this share of it.
const PAID_OFF: f64 = 0.5;

/// What a count is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Traffic {
    /// Whole files and ranges, measured in bytes.
    Transfers,
    /// Narinfo look-ups and HEADs, measured in requests answered.
    Lookups,
}

impl Traffic {
    /// What a host gets at first, before anything is learnt of its link.
    pub(super) fn starting_limit(self, ceiling: usize) -> usize {
        match self {
            Traffic::Transfers => START,
            Traffic::Lookups => LOOKUP_START,
        }
        .min(ceiling)
        .max(1)
    }

    /// The next count while throughput rises. Transfers grow by a quarter, or double once
    /// the last growth paid for itself (`paid_off`: a per-connection-bound link, such as a
    /// far one where small files wait for their first byte); look-ups always double.
    fn grown(self, limit: usize, paid_off: bool) -> usize {
        match self {
            Traffic::Transfers if !paid_off => limit + limit.div_ceil(4),
            Traffic::Transfers | Traffic::Lookups => limit * 2,
        }
    }

    /// After a growth that bought nothing: transfers step back a fifth, look-ups undo
    /// their doubling.
    fn shrunk(self, limit: usize) -> usize {
        match self {
            Traffic::Transfers => limit * 4 / 5,
            Traffic::Lookups => limit / 2,
        }
        .max(1)
    }
}

#[derive(Debug)]
pub(super) struct Concurrency {
    traffic: Traffic,
    limit: usize,
    ceiling: usize,
    http2: bool,
    window_start: Instant,
    window_bytes: u64,
    /// Whether every slot was in use at some point of the window: only then does the
    /// window say anything about more connections.
    saturated: bool,
    /// Throughput of the last saturated window, and the limit before it grew after it.
    last_rate: Option<f64>,
    grown_from: Option<usize>,
}

impl Concurrency {
    pub(super) fn new(traffic: Traffic, ceiling: usize) -> Concurrency {
        let ceiling = ceiling.max(1);
        Concurrency {
            traffic,
            limit: traffic.starting_limit(ceiling),
            ceiling,
            http2: false,
            window_start: Instant::now(),
            window_bytes: 0,
            saturated: false,
            last_rate: None,
            grown_from: None,
        }
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// The host answered in HTTP/2: its transfers are streams, `streams` at once.
    pub(super) fn speaks_http2(&mut self, streams: usize) {
        self.http2 = true;
        self.limit = streams.max(1);
    }

    /// `open` transfers are running now.
    pub(super) fn note_open(&mut self, open: usize) {
        self.saturated |= open >= self.limit;
    }

    /// The server asked for less (429, 503).
    pub(super) fn note_overloaded(&mut self) {
        if !self.http2 {
            self.limit = (self.limit / 2).max(1);
            self.grown_from = None;
            self.last_rate = None;
        }
    }

    /// `amount` more arrived at `now` (bytes, or requests answered for
    /// [`Traffic::Lookups`]); may change the limit at the end of a window.
    pub(super) fn note_progress(&mut self, amount: u64, now: Instant) {
        self.window_bytes += amount;
        let elapsed = now.duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        if !self.http2 && self.saturated {
            self.adjust(rate);
        }
        self.window_start = now;
        self.window_bytes = 0;
        self.saturated = false;
    }

    fn adjust(&mut self, rate: f64) {
        let rose = self.last_rate.is_none_or(|last| rate > last * GAIN);
        if rose {
            // Paid off: throughput rose by at least half as much as the count did.
            let paid_off = match (self.last_rate, self.grown_from) {
                (Some(last), Some(from)) => {
                    rate / last - 1.0 >= PAID_OFF * (self.limit as f64 / from as f64 - 1.0)
                }
                _ => false,
            };
            let grown = self.traffic.grown(self.limit, paid_off).min(self.ceiling);
            self.grown_from = (grown > self.limit).then_some(self.limit);
            self.limit = grown;
        } else if self.grown_from.take().is_some() {
            // The last growth bought nothing: a shared bottleneck. Step back and hold.
            self.limit = self.traffic.shrunk(self.limit);
        }
        self.last_rate = Some(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs saturated windows where throughput is `link(limit)`; returns the limits seen.
    fn run(
        traffic: Traffic,
        ceiling: usize,
        windows: usize,
        link: impl Fn(usize) -> f64,
    ) -> Vec<usize> {
        let mut concurrency = Concurrency::new(traffic, ceiling);
        let mut now = Instant::now();
        let mut limits = Vec::new();
        for _ in 0..windows {
            concurrency.note_open(concurrency.limit());
            now += WINDOW;
            let bytes = (link(concurrency.limit()) * WINDOW.as_secs_f64()) as u64;
            concurrency.note_progress(bytes, now);
            limits.push(concurrency.limit());
        }
        limits
    }

    #[test]
    fn grows_to_the_ceiling_while_each_connection_adds_throughput() {
        // 2 MB/s per connection, no shared bottleneck.
        let limits = run(Traffic::Transfers, 64, 20, |n| n as f64 * 2e6);
        assert_eq!(*limits.last().unwrap(), 64, "{limits:?}");
        assert!(limits.windows(2).all(|w| w[0] <= w[1]), "{limits:?}");
    }

    #[test]
    fn transfers_double_once_each_growth_paid_for_itself() {
        // Small files on a far link: each connection adds its 16 KB/s.
        let limits = run(Traffic::Transfers, 64, 5, |n| n as f64 * 16e3);
        assert_eq!(limits, [10, 20, 40, 64, 64]);
        // A link where more connections help, but less and less: never doubles.
        let limits = run(Traffic::Transfers, 64, 6, |n| (n as f64).sqrt() * 1e6);
        assert!(
            limits.windows(2).all(|w| w[1] <= w[0] + w[0].div_ceil(4)),
            "{limits:?}"
        );
    }

    #[test]
    fn stops_and_steps_back_on_a_shared_bottleneck() {
        // 1 MB/s in total, however many connections.
        let limits = run(Traffic::Transfers, 64, 20, |_| 1e6);
        assert!(*limits.iter().max().unwrap() <= START + 2, "{limits:?}");
        assert!(*limits.last().unwrap() <= START, "{limits:?}");
    }

    #[test]
    fn halves_on_overload_and_http2_takes_the_stream_budget() {
        let mut concurrency = Concurrency::new(Traffic::Transfers, 32);
        concurrency.note_overloaded();
        assert_eq!(concurrency.limit(), START / 2);
        concurrency.speaks_http2(100);
        concurrency.note_overloaded();
        assert_eq!(concurrency.limit(), 100);
        assert_eq!(
            Concurrency::new(Traffic::Transfers, 2).limit(),
            2,
            "the ceiling bounds the start"
        );
    }

    #[test]
    fn unsaturated_windows_change_nothing() {
        let mut concurrency = Concurrency::new(Traffic::Transfers, 64);
        let start = Instant::now();
        concurrency.note_progress(100_000_000, start + WINDOW);
        concurrency.note_progress(900_000_000, start + WINDOW * 2);
        assert_eq!(concurrency.limit(), START);
    }

    #[test]
    fn lookups_double_to_a_far_links_ceiling_and_hold_where_answers_stop_rising() {
        // 0.6 s per look-up, each connection one at a time: the rate grows with the count.
        let far = run(Traffic::Lookups, 512, 8, |n| n as f64 / 0.6);
        assert_eq!(&far[..4], &[64, 128, 256, 512], "{far:?}");
        // A server answering 2,000 a second however many ask.
        let busy = run(Traffic::Lookups, 512, 8, |n| (n as f64 / 0.001).min(2000.0));
        assert!(*busy.iter().max().unwrap() <= 64, "{busy:?}");
        assert!(*busy.last().unwrap() <= LOOKUP_START, "{busy:?}");
    }
}
