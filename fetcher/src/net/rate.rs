//! The overall rate limit (`--rate-limit`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Overall rate limit: a token bucket holding at most one second of tokens; a transfer
/// that takes more than there is waits for the debt to be paid.
pub(super) struct TokenBucket {
    pub(super) rate: f64,
    pub(super) state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(super) fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    pub(super) async fn take(&self, bytes: usize) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (tokens, last) = &mut *state;
            let now = Instant::now();
            *tokens =
                (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
            *last = now;
            *tokens -= bytes as f64;
            (*tokens < 0.0).then(|| Duration::from_secs_f64(-*tokens / self.rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}
