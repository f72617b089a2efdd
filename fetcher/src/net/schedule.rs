//! Connection slots shared fairly between hosts.
//!
//! One budget of connections overall and a cap per host. When a slot frees, it goes to the
//! waiting request whose host has the fewest connections open (so a host with hundreds of
//! files cannot crowd out one with a few), then to the largest download known (so big
//! files, which decide how long a run takes over a slow link, start early), then to the
//! one that asked first.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

pub struct Slots {
    max_total: usize,
    default_per_host: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    active_total: usize,
    active: HashMap<String, usize>,
    /// Hosts whose cap is not `default_per_host` (set as the link is learnt).
    limits: HashMap<String, usize>,
    waiting: Vec<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    host: String,
    priority: u64,
    grant: oneshot::Sender<()>,
}

/// A held connection slot; dropping it gives the slot to the next waiter.
pub struct Slot<'a> {
    slots: &'a Slots,
    host: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release(&self.host);
    }
}

/// A request still waiting; when dropped before its slot came (a cancelled download), it
/// leaves the queue, or hands back the slot it was given in the meantime.
struct Pending<'a> {
    slots: &'a Slots,
    ticket: u64,
    host: String,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.granted.take() else {
            return;
        };
        receiver.close();
        if receiver.try_recv().is_ok() {
            self.slots.release(&self.host);
        } else {
            let mut state = self.slots.lock();
            state.waiting.retain(|w| w.ticket != self.ticket);
        }
    }
}

impl Slots {
    pub fn new(max_total: usize, default_per_host: usize) -> Slots {
        Slots {
            max_total: max_total.max(1),
            default_per_host: default_per_host.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a connection slot to `host`; `priority` is the size of the download when
    /// known (larger goes first among hosts equally served).
    pub async fn acquire(&self, host: &str, priority: u64) -> Slot<'_> {
        let (grant, receiver) = oneshot::channel();
        let ticket = {
            let mut state = self.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push(Waiter {
                ticket,
                host: host.to_string(),
                priority,
                grant,
            });
            self.dispatch(&mut state);
            ticket
        };
        let mut pending = Pending {
            slots: self,
            ticket,
            host: host.to_string(),
            granted: Some(receiver),
        };
        let receiver = pending.granted.as_mut().expect("set above");
        // The sender lives in the queue until it grants, so this only ends with a grant.
        let _ = receiver.await;
        pending.granted = None;
        Slot {
            slots: self,
            host: host.to_string(),
        }
    }

    /// Whether a request to `host` would get a slot at once (what the tests observe).
    #[cfg(test)]
    pub fn has_free(&self, host: &str) -> bool {
        let state = self.lock();
        state.active_total < self.max_total
            && state.active.get(host).copied().unwrap_or(0) < self.limit_of(&state, host)
    }

    /// Caps `host` at `limit` slots from now on (transfers above it finish undisturbed).
    pub fn set_limit(&self, host: &str, limit: usize) {
        let mut state = self.lock();
        state.limits.insert(host.to_string(), limit.max(1));
        self.dispatch(&mut state);
    }

    fn limit_of(&self, state: &State, host: &str) -> usize {
        state
            .limits
            .get(host)
            .copied()
            .unwrap_or(self.default_per_host)
    }

    fn release(&self, host: &str) {
        let mut state = self.lock();
        state.active_total -= 1;
        if let Some(count) = state.active.get_mut(host) {
            *count -= 1;
        }
        self.dispatch(&mut state);
    }

    /// Grants free slots to the best waiters.
    fn dispatch(&self, state: &mut State) {
        while state.active_total < self.max_total {
            let best = state
                .waiting
                .iter()
                .enumerate()
                .map(|(index, w)| (index, w, state.active.get(&w.host).copied().unwrap_or(0)))
                .filter(|(_, w, open)| *open < self.limit_of(state, &w.host))
                .min_by_key(|(_, w, open)| (*open, std::cmp::Reverse(w.priority), w.ticket))
                .map(|(index, _, _)| index);
            let Some(index) = best else { return };
            let waiter = state.waiting.swap_remove(index);
            if waiter.grant.send(()).is_ok() {
                state.active_total += 1;
                *state.active.entry(waiter.host).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_least_served_host_then_the_largest_download() {
        let slots = Slots::new(2, 2);
        let first = slots.acquire("a", 0).await;
        let second = slots.acquire("a", 0).await;
        assert!(!slots.has_free("b"));
        let order = Mutex::new(Vec::new());
        let waiter = |host: &'static str, size: u64| {
            let (slots, order) = (&slots, &order);
            async move {
                let _slot = slots.acquire(host, size).await;
                order.lock().unwrap().push((host, size));
            }
        };
        let release = async {
            tokio::task::yield_now().await;
            drop(first);
            tokio::task::yield_now().await;
            drop(second);
        };
        tokio::join!(
            waiter("a", 100),
            waiter("a", 5),
            waiter("b", 1),
            waiter("b", 50),
            release
        );
        // "a" still holds a slot when the first frees, so "b" is served first; its largest.
        let order = order.into_inner().unwrap();
        assert_eq!(order[0], ("b", 50));
        assert_eq!(order.len(), 4);
        assert!(slots.has_free("a"));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_slot_back() {
        let slots = Slots::new(1, 1);
        let held = slots.acquire("a", 0).await;
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(10), slots.acquire("a", 0)).await;
        assert!(cancelled.is_err());
        drop(held);
        assert!(slots.has_free("a"));
        let _again = slots.acquire("a", 0).await;
        assert!(!slots.has_free("a"));
    }
}
