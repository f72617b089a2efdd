//! Per-host connection leases and what each host gave, for the per-host report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::schedule::Slot;
use super::Downloader;
use crate::report::HostReport;

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
}

/// A connection slot held for one request, counted in its host's tally while it lives.
pub(super) struct Lease<'a> {
    pub(super) _slot: Slot<'a>,
    pub(super) downloader: &'a Downloader,
    pub(super) host: String,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut hosts = self.downloader.lock_tallies();
        let tally = hosts.entry(self.host.clone()).or_default();
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

impl Downloader {
    pub(super) fn lock_tallies(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostTally>> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a connection slot to `url`'s host; `priority` is the download's size when known.
    pub(super) async fn lease(&self, url: &str, priority: u64) -> Lease<'_> {
        let host = host_key(url);
        let slot = self.slots.acquire(&host, priority).await;
        let mut hosts = self.lock_tallies();
        let tally = hosts.entry(host.clone()).or_default();
        tally.requests += 1;
        tally.open += 1;
        tally.peak_open = tally.peak_open.max(tally.open);
        tally.busy_since.get_or_insert_with(Instant::now);
        Lease {
            _slot: slot,
            downloader: self,
            host,
        }
    }

    pub(super) fn note_bytes(&self, url: &str, bytes: u64) {
        self.lock_tallies().entry(host_key(url)).or_default().bytes += bytes;
    }

    pub(super) fn note_retry(&self, url: &str) {
        self.lock_tallies()
            .entry(host_key(url))
            .or_default()
            .retries += 1;
    }

    /// What every host gave so far, by host.
    pub fn host_reports(&self) -> Vec<HostReport> {
        self.lock_tallies()
            .iter()
            .filter(|(_, t)| t.requests > 0)
            .map(|(host, t)| {
                let busy = t.busy + t.busy_since.map_or(Duration::ZERO, |s| s.elapsed());
                HostReport {
                    host: host.clone(),
                    bytes: t.bytes,
                    bytes_per_second: (t.bytes as f64 / busy.as_secs_f64().max(1e-3)) as u64,
                    busy_seconds: busy.as_secs_f64(),
                    requests: t.requests,
                    retries: t.retries,
                    peak_connections: t.peak_open,
                }
            })
            .collect()
    }

    pub(super) fn count_bytes(&self, url: &str, id: u64, bytes: u64, tally: &AtomicU64) {
        tally.fetch_add(bytes, Ordering::Relaxed);
        self.note_bytes(url, bytes);
        self.progress.download_bytes(id, bytes);
    }
}
