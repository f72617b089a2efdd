//! What the download engine is told: limits, timeouts, and URL rewrites.

use std::time::Duration;

/// A `--rewrite FROM=TO` rule: URLs starting with FROM get TO instead of that prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
}

/// Applies the first rule whose prefix matches, as given on the command line.
pub fn rewrite(rules: &[Rewrite], url: &str) -> String {
    rules
        .iter()
        .find_map(|r| {
            url.strip_prefix(&r.from)
                .map(|rest| format!("{}{rest}", r.to))
        })
        .unwrap_or_else(|| url.to_string())
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Connections transferring at once overall (whole files and ranges alike).
    pub jobs: usize,
    /// The most HTTP/1.1 connections transferring at once per host (host and port): the
    /// ceiling of the adaptive count ([`super::adapt`]).
    pub max_per_host: usize,
    /// Requests in flight at once to a host that speaks HTTP/2 (streams of one connection).
    pub streams_per_host: usize,
    /// Ranges a large file is split into (1: never split).
    pub segments: usize,
    /// Files at least this large (by the server's Content-Length) are split.
    pub segment_threshold: u64,
    /// The most small requests (narinfo look-ups, HEADs) in flight per host: the ceiling of
    /// the host's adaptive look-up count ([`super::adapt`]), apart from `jobs` and
    /// `max_per_host`, which bound transfers.
    pub max_lookups_per_host: usize,
    /// Retries of one URL after transient errors with no progress in between.
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Longest wait for the response head, or for more body bytes.
    pub stall_timeout: Duration,
    /// First delay before a retry; doubled on each retry, with jitter.
    pub backoff: Duration,
    /// Bytes per second over all transfers.
    pub rate_limit: Option<u64>,
    /// The slowest average a download of one URL may have: it must end within
    /// `stall_timeout + size / min_rate` (its size as known beforehand, else as received so
    /// far), retries and backoff included.
    pub min_rate: u64,
    /// Largest download accepted when nothing else says how large it may be.
    pub max_size: u64,
    /// Tries in a row that do not reach a host before it is marked down for the run.
    pub host_down_after: u32,
    /// How long a host marked down is skipped before one request probes it again.
    pub host_cooldown: Duration,
}

impl Default for DownloadOptions {
    fn default() -> DownloadOptions {
        DownloadOptions {
            jobs: 32,
            max_per_host: 32,
            streams_per_host: 64,
            segments: 4,
            segment_threshold: 8 * 1024 * 1024,
            max_lookups_per_host: 512,
            retries: 4,
            connect_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(60),
            backoff: Duration::from_millis(250),
            rate_limit: None,
            min_rate: 4 * 1024,
            max_size: 64 * 1024 * 1024 * 1024,
            host_down_after: 3,
            host_cooldown: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_by_first_matching_prefix() {
        let rule = |from: &str, to: &str| Rewrite {
            from: from.into(),
            to: to.into(),
        };
        let rules = [
            rule("https://ftpmirror.gnu.org/", "http://mirror.lan/gnu/"),
            rule("https://", "http://proxy/"),
        ];
        assert_eq!(
            rewrite(&rules, "https://ftpmirror.gnu.org/hello/hello-2.12.tar.gz"),
            "http://mirror.lan/gnu/hello/hello-2.12.tar.gz"
        );
        assert_eq!(
            rewrite(&rules, "https://example.org/x"),
            "http://proxy/example.org/x"
        );
        assert_eq!(
            rewrite(&rules, "ftp://example.org/x"),
            "ftp://example.org/x"
        );
    }
}
