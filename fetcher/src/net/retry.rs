//! What is retried and what is not: how one try of a URL ended, and the backoff between tries.

use reqwest::StatusCode;
use std::time::Duration;

use super::Downloader;
use crate::Error;

/// Longest backoff between two tries of one URL.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one try of a URL ended with, when it did not end well.
pub(super) enum Attempt {
    /// Try again later (connection, timeout, 429, 5xx, cut body); `progressed` when some
    /// bytes were kept, so the retry budget starts over.
    Transient { reason: String, progressed: bool },
    /// The server said no; move to the next URL.
    Refused(String),
    /// Our side failed (disk).
    Local(Error),
}

pub(super) fn transient(reason: impl Into<String>) -> Attempt {
    Attempt::Transient {
        reason: reason.into(),
        progressed: false,
    }
}

pub(super) fn classify(err: reqwest::Error) -> Attempt {
    let text = error_chain(&err);
    if err.is_builder() || err.is_redirect() {
        Attempt::Refused(text)
    } else {
        transient(text)
    }
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

pub(super) fn status_attempt(status: StatusCode) -> Attempt {
    let text = format!("HTTP {status}");
    match status.as_u16() {
        408 | 429 | 500..=599 => transient(text),
        _ => Attempt::Refused(text),
    }
}

impl Downloader {
    pub(super) fn backoff(&self, failures: u32) -> Duration {
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
            let reason = match try_once().await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Transient { reason, .. }) => reason,
                Err(Attempt::Refused(reason)) => {
                    return Err(Error::Download {
                        url: url.to_string(),
                        reason,
                    })
                }
                Err(Attempt::Local(err)) => return Err(err),
            };
            failures += 1;
            if failures > self.options.retries {
                return Err(Error::Download {
                    url: url.to_string(),
                    reason: format!("{reason} (gave up after {failures} tries)"),
                });
            }
            tokio::time::sleep(self.backoff(failures)).await;
        }
    }
}
