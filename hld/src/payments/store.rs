//! The idempotency store on its own: per key, the first request's
//! parameters and (once it finished) its result, generic over both so the
//! payments lesson's [`IdempotentServer`](super::IdempotentServer) and the
//! tower [`IdempotencyLayer`](crate::layers::IdempotencyLayer) share it.
//!
//! The protocol is claim / finish: [`IdempotencyStore::claim`] answers
//! [`Claim::Run`] to exactly one caller per key (which must then call
//! [`finish`](IdempotencyStore::finish), or
//! [`release`](IdempotencyStore::release) if it produced no result), and
//! every other caller a replay, a key-reuse error, or "still in flight"
//! (after optionally waiting on a `Condvar`). The map and the condvar come
//! from [`crate::sync`], so `tests/shuttle.rs` checks "runs once" in every
//! interleaving shuttle explores.

use crate::sync::{lock, Condvar, Mutex};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Entry<P, R> {
    InFlight(P),
    Done(P, R),
}

/// What a caller of [`IdempotencyStore::claim`] must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim<R> {
    /// The key is now yours: run the request, then `finish` or `release`.
    Run,
    /// The key already finished with these parameters: here is its result.
    Replay(R),
    /// The key was first used with different parameters (a client bug).
    KeyReuse,
    /// The first request with this key is still running (and the caller
    /// asked not to wait): Stripe's and the IETF draft's `409 Conflict`.
    InFlight,
    /// The caller waited for the in-flight request and it did not finish in
    /// time.
    TimedOut,
}

/// Per-key first parameters and result, in one process's memory.
#[derive(Debug)]
pub struct IdempotencyStore<P, R> {
    keys: Mutex<HashMap<String, Entry<P, R>>>,
    done: Condvar,
}

impl<P, R> Default for IdempotencyStore<P, R> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            done: Condvar::new(),
        }
    }
}

impl<P: PartialEq + Clone, R: Clone> IdempotencyStore<P, R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims `key` for a request with `params`. With `wait: Some(d)` a
    /// request whose key is in flight blocks (up to `d`) until the first one
    /// finishes or releases; with `None` it gets [`Claim::InFlight`] at once
    /// (the only choice in async code, which must not block its thread).
    /// The second value says whether this call had to wait.
    pub fn claim(&self, key: &str, params: &P, wait: Option<Duration>) -> (Claim<R>, bool) {
        let deadline = wait.map(|d| Instant::now() + d);
        let mut waited = false;
        let mut keys = lock(&self.keys);
        loop {
            match keys.get(key) {
                None => break,
                Some(Entry::Done(first, result)) => {
                    if first != params {
                        return (Claim::KeyReuse, waited);
                    }
                    return (Claim::Replay(result.clone()), waited);
                }
                Some(Entry::InFlight(first)) => {
                    if first != params {
                        return (Claim::KeyReuse, waited);
                    }
                    let Some(deadline) = deadline else {
                        return (Claim::InFlight, waited);
                    };
                    let now = Instant::now();
                    if now >= deadline {
                        return (Claim::TimedOut, waited);
                    }
                    waited = true;
                    keys = self
                        .done
                        .wait_timeout(keys, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        // First request with this key: claim it. The caller runs it without
        // holding the map lock, so other keys proceed in parallel.
        keys.insert(key.to_string(), Entry::InFlight(params.clone()));
        (Claim::Run, waited)
    }

    /// Stores the result of the request that got [`Claim::Run`] for `key`
    /// and wakes the requests waiting for it.
    pub fn finish(&self, key: &str, result: R) {
        let mut keys = lock(&self.keys);
        if let Some(Entry::InFlight(p)) = keys.remove(key) {
            keys.insert(key.to_string(), Entry::Done(p, result));
        }
        drop(keys);
        self.done.notify_all();
    }

    /// Gives up a [`Claim::Run`] without a result (the request was
    /// cancelled or failed before doing anything worth remembering): the
    /// next request with the key runs afresh.
    pub fn release(&self, key: &str) {
        let mut keys = lock(&self.keys);
        if matches!(keys.get(key), Some(Entry::InFlight(_))) {
            keys.remove(key);
        }
        drop(keys);
        self.done.notify_all();
    }

    /// Keys held (in flight or done).
    pub fn len(&self) -> usize {
        lock(&self.keys).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
