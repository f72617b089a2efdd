//! What is retried and what is not: how one try of a URL ended, and the backoff between tries.
//!
//! Permanent: the URL will not give the file however often it is asked (404, 410, 403,
//! 401 and other 4xx, a bad redirect), or its host cannot be reached in a way time does not
//! mend (the name does not exist, the certificate is not trusted). Transient: timeouts,
//! resets, refused connections, 408, 429, 5xx and cut bodies, retried with exponential
//! backoff and jitter, or after the server's `Retry-After` on 429 and 503. Connect-level
//! failures also count towards marking the host down for the whole run ([`super::hosts`]).

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use std::time::Duration;

use super::Downloader;
use crate::net::Error;

/// Longest backoff between two tries of one URL.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured; a server asking for more is asked again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// What one try of a URL ended with, when it did not end well.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Try again later (timeout, reset, 408, 429, 5xx, cut body): after `wait` when the
    /// server said (`Retry-After`), else after the backoff. `progressed`: the try kept bytes.
    Transient {
        reason: String,
        progressed: bool,
        wait: Option<Duration>,
    },
    /// This URL will not give it (404, 410, 403, 401, a bad redirect); move to the next URL.
    Refused(String),
    /// The host was not reached (name, connection refused, TLS, connect timeout, no answer
    /// at all), which counts towards marking it down; `permanent` when trying again cannot
    /// help (no such name, an untrusted certificate, a host marked down).
    Unreachable { reason: String, permanent: bool },
    /// Our side failed (disk).
    Local(Error),
}

impl Attempt {
    /// Whether asking the same URL again may give something else.
    pub(super) fn is_retried(&self) -> bool {
        match self {
            Attempt::Transient { .. } => true,
            Attempt::Unreachable { permanent, .. } => !permanent,
            Attempt::Refused(_) | Attempt::Local(_) => false,
        }
    }
}

pub(super) fn transient(reason: impl Into<String>) -> Attempt {
    Attempt::Transient {
        reason: reason.into(),
        progressed: false,
        wait: None,
    }
}

/// A request that failed before any response came.
pub(super) fn classify(err: &reqwest::Error) -> Attempt {
    let reason = error_chain(err);
    if err.is_builder() || err.is_redirect() {
        return Attempt::Refused(reason);
    }
    let untrusted = is_certificate_error(&reason);
    if err.is_connect() || untrusted {
        let permanent = untrusted || is_resolution_failure(&reason);
        return Attempt::Unreachable { reason, permanent };
    }
    transient(reason)
}

/// A name that did not resolve ("no such name", or a resolver that cannot be asked): the
/// answer holds for every request to the host, so the URL is not asked again and the host
/// is marked down at once, to be probed after the cool-down (hyper's connector says
/// "dns error"; the cause reaches us only as the text of getaddrinfo's error).
pub(super) fn is_resolution_failure(reason: &str) -> bool {
    reason.contains("dns error")
}

/// rustls refusing the server's certificate (unknown issuer, expired, wrong name), which
/// reaches us wrapped in an `io::Error` of the TLS stream.
fn is_certificate_error(reason: &str) -> bool {
    reason.contains("invalid peer certificate")
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A response whose status is not a success.
pub(super) fn status_attempt(status: StatusCode, headers: &HeaderMap) -> Attempt {
    let mut reason = format!("HTTP {status}");
    // A redirect reaches us only when it was not followed: say where it pointed, and why.
    if status.is_redirection() {
        reason.push_str(&match headers.get(LOCATION).map(|l| l.to_str()) {
            // A 300 or 304, or a Location of another scheme: only the last is refused by us.
            Some(Ok(to)) => match reqwest::Url::parse(to).map(|url| url.scheme().to_string()) {
                Ok(scheme) if scheme != "http" && scheme != "https" => {
                    format!(": redirect to {to} not followed (only http and https URLs are)")
                }
                _ => format!(": redirect to {to} not followed"),
            },
            Some(Err(_)) => ": redirect to a Location that is not text".into(),
            None => ": redirect without a Location".into(),
        });
    }
    match status.as_u16() {
        408 | 500..=599 | 429 => Attempt::Transient {
            reason,
            progressed: false,
            wait: matches!(status.as_u16(), 429 | 503)
                .then(|| retry_after(headers))
                .flatten(),
        },
        _ => Attempt::Refused(reason),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is left to the backoff), at most
/// [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

impl Downloader {
    /// The wait before try `failures + 1`: exponential from `--backoff`, with jitter, or
    /// what the server asked for.
    pub(super) fn backoff(&self, failures: u32, asked: Option<Duration>) -> Duration {
        if let Some(asked) = asked {
            return asked;
        }
        let exponential = self
            .options
            .backoff
            .saturating_mul(1 << failures.min(16).saturating_sub(1));
        exponential
            .min(MAX_BACKOFF)
            .mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    /// Runs a small request until it answers, retrying transient failures with backoff.
    pub(super) async fn with_retries<T, Request, Pending>(
        &self,
        url: &str,
        mut try_once: Request,
    ) -> Result<T, Error>
    where
        Request: FnMut() -> Pending,
        Pending: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut failures = 0;
        loop {
            let attempt = match try_once().await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Local(err)) => return Err(err),
                Err(attempt) => attempt,
            };
            let retried = attempt.is_retried();
            let (reason, wait) = match attempt {
                Attempt::Transient { reason, wait, .. } => (reason, wait),
                Attempt::Refused(reason) | Attempt::Unreachable { reason, .. } => (reason, None),
                Attempt::Local(err) => return Err(err),
            };
            if !retried {
                return Err(Error::Download {
                    url: url.to_string(),
                    reason,
                });
            }
            failures += 1;
            if failures > self.options.retries {
                return Err(Error::Download {
                    url: url.to_string(),
                    reason: format!("{reason} (gave up after {failures} tries)"),
                });
            }
            tokio::time::sleep(self.backoff(failures, wait)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<&str>) -> Attempt {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, value.parse().unwrap());
        }
        status_attempt(StatusCode::from_u16(code).unwrap(), &headers)
    }

    #[test]
    fn lists_what_is_retried_and_what_is_permanent() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code, None).is_retried(), "HTTP {code} is retried");
        }
        for code in [400, 401, 403, 404, 410, 416, 451] {
            assert!(!status(code, None).is_retried(), "HTTP {code} is permanent");
        }
        assert!(is_resolution_failure(
            "error sending request: client error (Connect): dns error: failed to lookup address information: Temporary failure in name resolution"
        ));
        assert!(is_certificate_error(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        ));
        let unreachable = |permanent| Attempt::Unreachable {
            reason: String::new(),
            permanent,
        };
        assert!(unreachable(false).is_retried(), "refused, connect timeout");
        assert!(!unreachable(true).is_retried(), "no such name, certificate");
    }

    #[test]
    fn a_redirect_not_followed_says_where_it_pointed() {
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, "file:///etc/passwd".parse().unwrap());
        let attempt = status_attempt(StatusCode::FOUND, &headers);
        let Attempt::Refused(reason) = attempt else {
            panic!("{attempt:?} is not permanent");
        };
        assert_eq!(
            reason,
            "HTTP 302 Found: redirect to file:///etc/passwd not followed (only http and https URLs are)"
        );
        headers.insert(LOCATION, "https://mirror.example/a".parse().unwrap());
        let attempt = status_attempt(StatusCode::MULTIPLE_CHOICES, &headers);
        let Attempt::Refused(reason) = attempt else {
            panic!("{attempt:?} is not permanent");
        };
        assert_eq!(
            reason, "HTTP 300 Multiple Choices: redirect to https://mirror.example/a not followed",
            "an http(s) Location is not blamed on its scheme"
        );
    }

    #[test]
    fn honours_retry_after_on_429_and_503_only() {
        let wait = |attempt| match attempt {
            Attempt::Transient { wait, .. } => wait,
            other => panic!("{other:?} is not transient"),
        };
        assert_eq!(wait(status(429, Some("3"))), Some(Duration::from_secs(3)));
        assert_eq!(wait(status(503, Some("7"))), Some(Duration::from_secs(7)));
        assert_eq!(wait(status(500, Some("7"))), None);
        assert_eq!(wait(status(429, Some("soon"))), None);
        assert_eq!(wait(status(429, Some("86400"))), Some(MAX_RETRY_AFTER));
    }
}
