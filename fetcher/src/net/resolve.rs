//! Host names looked up all at once. The first time an entry needs its URL list, the names
//! of every host on it are looked up together, and a name that does not resolve marks its
//! host down before any request goes there: a mirror list with seven dead hosts costs one
//! resolver timeout in all (in parallel), not one per dead host in turn. While a name is
//! still being looked up, the entry tries its URLs on hosts already known first (every URL
//! of an entry serves the same checked content). Names are only looked up for URLs an
//! entry is about to try, never for a whole manifest, and not at all through a proxy
//! (which resolves them itself).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use super::hosts::host_key;
use super::Downloader;

/// What is known of the names of a run's hosts, by `host:port`.
#[derive(Default)]
pub(super) struct Resolutions {
    names: Mutex<HashMap<String, Resolution>>,
    settled: Notify,
}

enum Resolution {
    Pending,
    Resolved,
    /// Not resolved: the reason, when the look-up went out and came back, and whether the
    /// host was marked down for it yet (once).
    Failed {
        reason: String,
        sent: Instant,
        failed: Instant,
        noted: bool,
    },
}

/// A failed look-up not yet marked in the host's health.
struct Unnoted {
    host: String,
    reason: String,
    sent: Instant,
    failed: Instant,
}

impl Resolutions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resolution>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a look-up of `url`'s host name unless one was made or is under way.
    fn start(self: &Arc<Self>, url: &str, timeout: Duration) {
        let Some((name, port)) = named_host(url) else {
            return;
        };
        let key = host_key(url);
        match self.lock().entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => return,
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(Resolution::Pending);
            }
        }
        let resolutions = self.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let looked_up = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)));
            let failure = match looked_up.await.map(|found| found.map(Iterator::count)) {
                Ok(Ok(addresses)) if addresses > 0 => None,
                Ok(Ok(_)) => Some("dns error: the name has no address".to_string()),
                Ok(Err(err)) => Some(format!("dns error: {err}")),
                Err(_) => Some(format!("dns error: no answer within {timeout:?}")),
            };
            let resolution = match failure {
                None => Resolution::Resolved,
                Some(reason) => Resolution::Failed {
                    reason,
                    sent,
                    failed: Instant::now(),
                    noted: false,
                },
            };
            resolutions.lock().insert(key, resolution);
            resolutions.settled.notify_waiters();
        });
    }

    /// The failed look-ups not marked yet (of `host`, or of all), now marked.
    fn take_unnoted(&self, host: Option<&str>) -> Vec<Unnoted> {
        let mut names = self.lock();
        let mut unnoted = Vec::new();
        let mut take = |key: &String, resolution: &mut Resolution| {
            if let Resolution::Failed {
                reason,
                sent,
                failed,
                noted: noted @ false,
            } = resolution
            {
                *noted = true;
                unnoted.push(Unnoted {
                    host: key.clone(),
                    reason: reason.clone(),
                    sent: *sent,
                    failed: *failed,
                });
            }
        };
        match host {
            Some(host) => {
                if let Some(resolution) = names.get_mut(host) {
                    take(&host.to_string(), resolution);
                }
            }
            None => names.iter_mut().for_each(|(key, r)| take(key, r)),
        }
        unnoted
    }
}

/// The host name and port of `url` when it names its host by name (not by address).
fn named_host(url: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let address = host.trim_start_matches('[').trim_end_matches(']');
    if address.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some((host.to_string(), url.port_or_known_default()?))
}

/// Whether a proxy is set: the proxy resolves names then, not us.
fn proxied() -> bool {
    [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

impl Downloader {
    /// `urls` in the order to try them, their hosts' names looked up all at once: a host
    /// whose name did not resolve is marked down (so its URLs fail at once), and URLs whose
    /// host's name is still being looked up go after the others; when every one is, this
    /// waits until one is known.
    pub async fn order_by_resolution(&self, urls: Vec<String>) -> Vec<String> {
        if proxied() {
            return urls;
        }
        for url in &urls {
            self.resolutions.start(url, self.options.connect_timeout);
        }
        loop {
            let settled = self.resolutions.settled.notified();
            self.note_failed_resolutions(None);
            let (mut usable, mut pending, mut unresolved) = (Vec::new(), Vec::new(), Vec::new());
            for url in &urls {
                match self.resolutions.lock().get(&host_key(url)) {
                    Some(Resolution::Pending) => pending.push(url.clone()),
                    Some(Resolution::Failed { .. }) => unresolved.push(url.clone()),
                    Some(Resolution::Resolved) | None => usable.push(url.clone()),
                }
            }
            if pending.is_empty() || !usable.is_empty() {
                // A host down by its name fails at once: last, for its report line.
                usable.extend(pending);
                usable.extend(unresolved);
                return usable;
            }
            settled.await;
        }
    }

    /// Marks down the hosts (`host`, or all) whose names failed to resolve since last asked.
    pub(super) fn note_failed_resolutions(&self, host: Option<&str>) {
        for failed in self.resolutions.take_unnoted(host) {
            self.note_host_unreached(
                &failed.host,
                &failed.reason,
                failed.sent,
                true,
                failed.failed,
            );
        }
    }
}
