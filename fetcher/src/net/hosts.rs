//! Per-host connection leases, host health, and what each host gave, for the per-host report.
//!
//! Host health lasts the whole run: a host that is not reached (no such name, connection
//! refused, TLS refused, connect timeout, no response at all) `host_down_after` times in a
//! row is marked down, and every request to it fails at once, so entries move to their
//! next URL without paying for it. After `host_cooldown` one request is let through as a
//! probe: an answer (any status) makes the host healthy again, a failure keeps it down for
//! another cool-down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::adapt::{Concurrency, Traffic};
use super::retry::Attempt;
use super::schedule::Slot;
use super::Downloader;
use crate::report::{FetchEvent, HostDown, HostReport};

/// What one host gave during a run, for the per-host report.
#[derive(Debug, Default)]
pub(super) struct HostTally {
    pub(super) bytes: u64,
    pub(super) requests: u64,
    pub(super) retries: u64,
    pub(super) open: u64,
    pub(super) peak_open: u64,
    /// Time with at least one transfer open, up to the last time none was.
    pub(super) busy: Duration,
    pub(super) busy_since: Option<Instant>,
    pub(super) health: Health,
    /// How many transfers the host gets at once; set with its first lease.
    concurrency: Option<Concurrency>,
    /// Small requests (narinfo look-ups, HEADs) open now, at most at once, and how many
    /// the host gets at once: counted apart from transfers, so look-ups never wait behind
    /// large files, nor take their connections.
    pub(super) lookups_open: u64,
    pub(super) peak_lookups: u64,
    lookup_concurrency: Option<Concurrency>,
}

impl HostTally {
    fn concurrency_of(&mut self, traffic: Traffic) -> &mut Option<Concurrency> {
        match traffic {
            Traffic::Transfers => &mut self.concurrency,
            Traffic::Lookups => &mut self.lookup_concurrency,
        }
    }
}

/// Whether a host is reachable, as far as this run has seen.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Tries in a row that did not reach the host.
    unreached_in_a_row: u32,
    /// Whether the host ever answered in this run.
    answered: bool,
    /// When the last failure was counted, or the host last answered: a try sent before then
    /// says nothing new when it fails (many at once to a host that is slow to answer are
    /// one failure, not many in a row; a name look-up that timed out while the host was
    /// answering must not mark it down).
    last_counted: Option<Instant>,
    down: Option<Down>,
    /// When the run first marked the host down.
    first_down: Option<Instant>,
    times_down: u64,
}

#[derive(Debug)]
struct Down {
    reason: String,
    /// When a probe may go out; while a probe is out, `None`.
    probe_at: Option<Instant>,
    /// When the probe in flight went out (a probe cancelled with its entry must not keep
    /// the host down for ever).
    probe_sent: Option<Instant>,
}

/// A connection slot held for one request, counted in its host's tally while it lives.
pub(super) struct Lease<'a> {
    pub(super) _slot: Slot<'a>,
    pub(super) downloader: &'a Downloader,
    pub(super) host: String,
    traffic: Traffic,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut hosts = self.downloader.lock_tallies();
        let tally = hosts.entry(self.host.clone()).or_default();
        if self.traffic == Traffic::Lookups {
            tally.lookups_open -= 1;
            return;
        }
        tally.open -= 1;
        if tally.open == 0 {
            if let Some(since) = tally.busy_since.take() {
                tally.busy += since.elapsed();
            }
        }
    }
}

/// `host:port` of a URL: what connection limits and the per-host report count by.
pub(super) fn host_key(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_default()
}

fn count_down(hosts: &BTreeMap<String, HostTally>) -> usize {
    hosts.values().filter(|t| t.health.down.is_some()).count()
}

impl Downloader {
    pub(super) fn lock_tallies(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostTally>> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `url`'s host may be asked now (not down, or a probe is due), without asking:
    /// checked before waiting for a connection slot.
    pub(super) fn check_up(&self, url: &str) -> Result<(), Attempt> {
        self.gate(url, false)
    }

    /// Lets a request to `url`'s host go out, unless the host is down and no probe is due;
    /// counts it.
    pub(super) fn admit(&self, url: &str) -> Result<(), Attempt> {
        self.gate(url, true)
    }

    fn gate(&self, url: &str, sending: bool) -> Result<(), Attempt> {
        let host = host_key(url);
        self.note_failed_resolutions(Some(&host));
        let mut hosts = self.lock_tallies();
        let tally = hosts.entry(host.clone()).or_default();
        let open = match &mut tally.health.down {
            None => true,
            Some(down) => {
                let now = Instant::now();
                let stale_probe = self.options.connect_timeout + self.options.stall_timeout;
                let probe_due = down.probe_at.is_some_and(|at| now >= at)
                    || down
                        .probe_sent
                        .is_some_and(|sent| now >= sent + stale_probe);
                if probe_due && sending {
                    down.probe_at = None;
                    down.probe_sent = Some(now);
                }
                probe_due
            }
        };
        if open {
            if sending {
                tally.requests += 1;
            }
            return Ok(());
        }
        let since = tally
            .health
            .first_down
            .map_or(0.0, |at| at.duration_since(self.started).as_secs_f64());
        let reason = tally.health.down.as_ref().map_or("", |d| d.reason.as_str());
        Err(Attempt::Unreachable {
            reason: format!("host {host} is down (since {since:.1} s into the run: {reason})"),
            permanent: true,
        })
    }

    /// Whether `url`'s host answered a request in this run (and is not down now).
    pub(super) fn has_answered(&self, url: &str) -> bool {
        let hosts = self.lock_tallies();
        hosts
            .get(&host_key(url))
            .is_some_and(|t| t.health.answered && t.health.down.is_none())
    }

    /// `url`'s host answered (whatever the status).
    pub(super) fn note_reached(&self, url: &str) {
        let mut hosts = self.lock_tallies();
        let health = &mut hosts.entry(host_key(url)).or_default().health;
        health.unreached_in_a_row = 0;
        health.last_counted = Some(Instant::now());
        health.answered = true;
        if health.down.take().is_some() {
            self.progress.report(FetchEvent::HostsDown {
                count: count_down(&hosts),
            });
        }
    }

    /// `url`'s host was not reached by a request sent at `sent`: down after
    /// `host_down_after` such failures in a row, each sent after the one before was
    /// counted (`at_once`: after this one, as for a name that does not resolve), or again
    /// for a cool-down when this was its probe.
    pub(super) fn note_unreached(&self, url: &str, reason: &str, sent: Instant, at_once: bool) {
        self.note_host_unreached(&host_key(url), reason, sent, at_once, Instant::now());
    }

    /// [`Downloader::note_unreached`] of `host`, the failure known at `failed`.
    pub(super) fn note_host_unreached(
        &self,
        host: &str,
        reason: &str,
        sent: Instant,
        at_once: bool,
        failed: Instant,
    ) {
        let mut hosts = self.lock_tallies();
        let health = &mut hosts.entry(host.to_string()).or_default().health;
        if health.last_counted.is_some_and(|counted| sent < counted) {
            return;
        }
        health.last_counted = Some(failed);
        health.unreached_in_a_row += 1;
        let probe_at = Some(failed + self.options.host_cooldown);
        if let Some(down) = &mut health.down {
            // A probe that failed: down for another cool-down.
            if down.probe_sent.take().is_some() {
                down.probe_at = probe_at;
            }
        } else if at_once || health.unreached_in_a_row >= self.options.host_down_after.max(1) {
            health.first_down.get_or_insert(failed);
            health.times_down += 1;
            health.down = Some(Down {
                reason: reason.to_string(),
                probe_at,
                probe_sent: None,
            });
            self.progress.report(FetchEvent::HostsDown {
                count: count_down(&hosts),
            });
        }
    }

    /// Waits for a connection slot to `url`'s host; `priority` is the download's size when known.
    pub(super) async fn lease(&self, url: &str, priority: u64) -> Lease<'_> {
        let host = host_key(url);
        let slot = self.slots.acquire(&host, priority).await;
        let mut hosts = self.lock_tallies();
        let tally = hosts.entry(host.clone()).or_default();
        tally.open += 1;
        let open = tally.open as usize;
        self.concurrency(tally, Traffic::Transfers).note_open(open);
        tally.peak_open = tally.peak_open.max(tally.open);
        tally.busy_since.get_or_insert_with(Instant::now);
        Lease {
            _slot: slot,
            downloader: self,
            host,
            traffic: Traffic::Transfers,
        }
    }

    /// Waits for a slot for a small request (a narinfo look-up, a HEAD) to `url`'s host,
    /// under the host's look-up count.
    pub(super) async fn lookup_lease(&self, url: &str) -> Lease<'_> {
        let host = host_key(url);
        let slot = self.lookup_slots.acquire(&host, 0).await;
        let mut hosts = self.lock_tallies();
        let tally = hosts.entry(host.clone()).or_default();
        tally.lookups_open += 1;
        let open = tally.lookups_open as usize;
        self.concurrency(tally, Traffic::Lookups).note_open(open);
        tally.peak_lookups = tally.peak_lookups.max(tally.lookups_open);
        Lease {
            _slot: slot,
            downloader: self,
            host,
            traffic: Traffic::Lookups,
        }
    }

    /// `tally`'s count for `traffic`, made on first use with its ceiling.
    fn concurrency<'t>(&self, tally: &'t mut HostTally, traffic: Traffic) -> &'t mut Concurrency {
        let ceiling = match traffic {
            Traffic::Transfers => self.options.max_per_host,
            Traffic::Lookups => self.options.max_lookups_per_host,
        };
        tally
            .concurrency_of(traffic)
            .get_or_insert_with(|| Concurrency::new(traffic, ceiling))
    }

    pub(super) fn note_bytes(&self, url: &str, bytes: u64) {
        let host = host_key(url);
        self.adapt(&host, |tally| {
            tally.bytes += bytes;
            if let Some(concurrency) = &mut tally.concurrency {
                concurrency.note_progress(bytes, Instant::now());
            }
        });
    }

    /// A small request to `url`'s host was answered: the look-up count's measure.
    pub(super) fn note_lookup_answered(&self, url: &str) {
        self.adapt(&host_key(url), |tally| {
            if let Some(concurrency) = &mut tally.lookup_concurrency {
                concurrency.note_progress(1, Instant::now());
            }
        });
    }

    /// A response from `url`'s host: HTTP/2 gives it the stream budget, 429 and 503 fewer
    /// connections (for transfers and look-ups alike: the server is overloaded).
    pub(super) fn note_response(&self, url: &str, response: &reqwest::Response) {
        let http2 = response.version() == reqwest::Version::HTTP_2;
        let overloaded = matches!(response.status().as_u16(), 429 | 503);
        if !http2 && !overloaded {
            return;
        }
        self.adapt(&host_key(url), |tally| {
            for traffic in [Traffic::Transfers, Traffic::Lookups] {
                // Look-ups take their ceiling as streams at once: they cost the connection
                // almost nothing, and the server's SETTINGS_MAX_CONCURRENT_STREAMS bounds
                // what is open on it (the client queues the rest).
                let streams = match traffic {
                    Traffic::Transfers => self.options.streams_per_host,
                    Traffic::Lookups => self.options.max_lookups_per_host,
                };
                let concurrency = self.concurrency(tally, traffic);
                if http2 {
                    concurrency.speaks_http2(streams);
                }
                if overloaded {
                    concurrency.note_overloaded();
                }
            }
        });
    }

    /// Changes `host`'s tally and passes new limits on to the slots.
    fn adapt(&self, host: &str, change: impl FnOnce(&mut HostTally)) {
        let mut hosts = self.lock_tallies();
        let tally = hosts.entry(host.to_string()).or_default();
        let limits = |tally: &HostTally| {
            [&tally.concurrency, &tally.lookup_concurrency]
                .map(|c| c.as_ref().map(Concurrency::limit))
        };
        let before = limits(tally);
        change(tally);
        let after = limits(tally);
        for ((slots, before), after) in [&self.slots, &self.lookup_slots]
            .into_iter()
            .zip(before)
            .zip(after)
        {
            if let Some(limit) = after.filter(|_| after != before) {
                slots.set_limit(host, limit);
            }
        }
    }

    pub(super) fn note_retry(&self, url: &str) {
        self.lock_tallies()
            .entry(host_key(url))
            .or_default()
            .retries += 1;
    }

    /// What every host gave so far, by host.
    pub fn host_reports(&self) -> Vec<HostReport> {
        self.note_failed_resolutions(None);
        self.lock_tallies()
            .iter()
            .filter(|(_, t)| t.requests > 0 || t.health.times_down > 0)
            .map(|(host, t)| {
                let down = t.health.first_down.map(|first| HostDown {
                    since_seconds: first.duration_since(self.started).as_secs_f64(),
                    times: t.health.times_down,
                    still_down: t.health.down.is_some(),
                });
                let busy = t.busy + t.busy_since.map_or(Duration::ZERO, |s| s.elapsed());
                HostReport {
                    host: host.clone(),
                    bytes: t.bytes,
                    bytes_per_second: (t.bytes as f64 / busy.as_secs_f64().max(1e-3)) as u64,
                    busy_seconds: busy.as_secs_f64(),
                    requests: t.requests,
                    retries: t.retries,
                    peak_connections: t.peak_open,
                    peak_lookups: t.peak_lookups,
                    down,
                }
            })
            .collect()
    }

    pub(super) fn count_bytes(&self, url: &str, id: u64, bytes: u64, tally: &AtomicU64) {
        tally.fetch_add(bytes, Ordering::Relaxed);
        self.note_bytes(url, bytes);
        self.progress
            .report(FetchEvent::DownloadBytes { id, bytes });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::DownloadOptions;
    use crate::report::Silent;
    use std::sync::Arc;

    fn is_up(downloader: &Downloader, url: &str) -> bool {
        downloader.admit(url).is_ok()
    }

    #[test]
    fn a_host_is_down_after_failures_in_a_row_and_probed_once_after_the_cool_down() {
        let dir = tempfile::tempdir().unwrap();
        let options = DownloadOptions {
            host_down_after: 3,
            host_cooldown: Duration::from_millis(200),
            ..DownloadOptions::default()
        };
        let downloader = Downloader::new(options, dir.path(), Arc::new(Silent)).unwrap();
        let (url, other) = ("http://far.example:8080/a", "http://far.example:8080/b");
        downloader.note_unreached(url, "refused", Instant::now(), false);
        downloader.note_unreached(url, "refused", Instant::now(), false);
        downloader.note_reached(url);
        downloader.note_unreached(url, "refused", Instant::now(), false);
        downloader.note_unreached(url, "refused", Instant::now(), false);
        assert!(
            is_up(&downloader, other),
            "an answer in between resets the count"
        );
        downloader.note_unreached(url, "refused", Instant::now(), false);
        assert!(
            !is_up(&downloader, other),
            "down after three in a row, for every URL"
        );
        assert!(downloader.check_up(url).is_err());
        assert!(
            is_up(&downloader, "http://far.example:8081/a"),
            "another port"
        );

        std::thread::sleep(Duration::from_millis(250));
        assert!(downloader.check_up(url).is_ok(), "a probe is due");
        assert!(is_up(&downloader, url), "the probe goes out");
        assert!(!is_up(&downloader, url), "one probe at a time");
        downloader.note_unreached(url, "still refused", Instant::now(), false);
        assert!(
            !is_up(&downloader, url),
            "a failed probe: another cool-down"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(is_up(&downloader, url));
        downloader.note_reached(url);
        assert!(
            is_up(&downloader, url) && is_up(&downloader, url),
            "back up"
        );

        let reports = downloader.host_reports();
        let far = reports
            .iter()
            .find(|h| h.host == "far.example:8080")
            .unwrap();
        let down = far.down.as_ref().unwrap();
        assert_eq!((down.times, down.still_down), (1, false));
        assert_eq!(far.requests, 5, "only requests let through are counted");
    }

    #[test]
    fn a_failure_of_a_try_sent_before_the_host_answered_does_not_mark_it_down() {
        let dir = tempfile::tempdir().unwrap();
        let downloader =
            Downloader::new(DownloadOptions::default(), dir.path(), Arc::new(Silent)).unwrap();
        let url = "http://slow-dns.example/a";
        // A name look-up goes out, the host answers a request meanwhile, then the look-up
        // times out: it is stale, and the host stays up.
        let lookup_sent = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        downloader.note_reached(url);
        downloader.note_unreached(url, "dns error: no answer", lookup_sent, true);
        assert!(is_up(&downloader, url));
        downloader.note_unreached(url, "dns error: no answer", Instant::now(), true);
        assert!(
            !is_up(&downloader, url),
            "a failure sent after the answer counts"
        );
    }
}
