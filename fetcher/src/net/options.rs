//! What the download engine is told: limits, timeouts, and URL rewrites.

use std::str::FromStr;
use std::time::Duration;

/// A `--rewrite FROM=TO` rule: URLs starting with FROM get TO instead of that prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
}

impl FromStr for Rewrite {
    type Err = String;
    fn from_str(text: &str) -> Result<Rewrite, String> {
        match text.split_once('=') {
            Some((from, to)) if !from.is_empty() => Ok(Rewrite {
                from: from.to_string(),
                to: to.to_string(),
            }),
            _ => Err(format!("'{text}' is not a rewrite rule FROM=TO")),
        }
    }
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

/// Parses a rate such as `2MiB/s`, `500k`, `10MB/s` or `1000000` into bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    parse_bytes(text.trim().trim_end_matches("/s"))
        .ok_or_else(|| format!("'{text}' is not a rate (e.g. 2MiB/s, 500KB/s, 100000)"))
}

/// Parses a size such as `8MiB`, `500k` or `1000000` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text).ok_or_else(|| format!("'{text}' is not a size (e.g. 8MiB, 500KB, 100000)"))
}

/// A positive number of bytes with an optional unit (k, KiB, M, MiB, G, GiB).
fn parse_bytes(text: &str) -> Option<u64> {
    let body = text.trim();
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (number * multiplier) as u64;
    (bytes > 0).then_some(bytes)
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
    /// Small requests (narinfo) in flight; these are not bound by `jobs` or `max_per_host`.
    pub queries: usize,
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
            queries: 32,
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
        let rules: Vec<Rewrite> = [
            "https://ftpmirror.gnu.org/=http://mirror.lan/gnu/",
            "https://=http://proxy/",
        ]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
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
        assert!("no-equals-sign".parse::<Rewrite>().is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("2MiB/s"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_rate("500KB/s"), Ok(500_000));
        assert_eq!(parse_rate("1.5k"), Ok(1500));
        assert_eq!(parse_rate("100000"), Ok(100_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3 parsecs").is_err());
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert!(parse_size("8MiB/s").is_err());
    }
}
