//! [`JitterRetry`]: a [`tower::retry::Policy`] that backs off with the
//! lesson's jitter strategies, for tower's own [`tower::retry::RetryLayer`].

use super::BoxFuture;
use crate::retry_jitter::{Backoff, BackoffError, Strategy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::retry::Policy;

/// How the policy waits between attempts: given a delay, a future that
/// finishes after it. [`JitterRetry::new`] uses `tokio::time::sleep`; tests
/// pass one that records the delay and returns at once.
pub type Sleep = Arc<dyn Fn(Duration) -> BoxFuture<()> + Send + Sync>;

/// Retries a failed call up to `max_attempts` calls in all, waiting a
/// jittered backoff (full, equal or decorrelated, see
/// [`crate::retry_jitter`]) between attempts.
///
/// `retryable` decides which results are worth another attempt (by default
/// any `Err`); a policy for HTTP would also retry 503s and 429s and leave
/// 4xx alone. Each request gets its own backoff and its own random stream
/// (seeded from the policy's seed and a shared request count), so
/// concurrent callers do not retry in lock-step, which is the point of
/// jitter. A retry budget
/// (tower's `retry::budget::TpsBudget`) is the next thing to add for a
/// fleet: it caps retries to a fraction of traffic, so retries cannot
/// multiply the load of an outage.
pub struct JitterRetry<F> {
    backoff: Backoff,
    max_attempts: u32,
    attempts: u32,
    rng: StdRng,
    /// The seed, and a count of requests shared by every clone of the
    /// policy: each request's random stream is seeded from both, so clones
    /// of one service (one per connection, say) do not jitter alike.
    seed: u64,
    requests: Arc<AtomicU64>,
    sleep: Sleep,
    retryable: F,
}

impl<F: Clone> Clone for JitterRetry<F> {
    fn clone(&self) -> Self {
        Self {
            backoff: self.backoff.clone(),
            max_attempts: self.max_attempts,
            attempts: self.attempts,
            rng: self.rng.clone(),
            seed: self.seed,
            requests: self.requests.clone(),
            sleep: self.sleep.clone(),
            retryable: self.retryable.clone(),
        }
    }
}

impl<F> fmt::Debug for JitterRetry<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitterRetry")
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Which results are worth another attempt. Any
/// `Fn(&Result<Res, E>) -> bool` is one.
pub trait Retryable<Res, E> {
    fn retryable(&self, result: &Result<Res, E>) -> bool;
}

impl<Res, E, F: Fn(&Result<Res, E>) -> bool> Retryable<Res, E> for F {
    fn retryable(&self, result: &Result<Res, E>) -> bool {
        self(result)
    }
}

/// The default: retry any error, never a response.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyError;

impl<Res, E> Retryable<Res, E> for AnyError {
    fn retryable(&self, result: &Result<Res, E>) -> bool {
        result.is_err()
    }
}

impl JitterRetry<AnyError> {
    /// Retries errors with `strategy` between `base` and `cap`, sleeping on
    /// tokio's clock, seeded from the OS.
    pub fn new(
        strategy: Strategy,
        base: Duration,
        cap: Duration,
        max_attempts: u32,
    ) -> Result<Self, BackoffError> {
        let sleep: Sleep = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
        Self::with(
            strategy,
            base,
            cap,
            max_attempts,
            rand::rng().random(),
            sleep,
            AnyError,
        )
    }
}

impl<F> JitterRetry<F> {
    /// Everything chosen: the random seed (so the delays are reproducible),
    /// the sleep, and which results to retry.
    pub fn with(
        strategy: Strategy,
        base: Duration,
        cap: Duration,
        max_attempts: u32,
        seed: u64,
        sleep: Sleep,
        retryable: F,
    ) -> Result<Self, BackoffError> {
        Ok(Self {
            backoff: Backoff::new(strategy, base, cap)?,
            max_attempts: max_attempts.max(1),
            attempts: 1,
            rng: StdRng::seed_from_u64(seed),
            seed,
            requests: Arc::new(AtomicU64::new(0)),
            sleep,
            retryable,
        })
    }
}

impl<Req, Res, E, F> Policy<Req, Res, E> for JitterRetry<F>
where
    Req: Clone,
    F: Retryable<Res, E>,
{
    type Future = BoxFuture<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if self.attempts >= self.max_attempts || !self.retryable.retryable(result) {
            return None;
        }
        self.attempts += 1;
        let delay = self.backoff.next_delay(&mut self.rng);
        Some((self.sleep)(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // `Retry::call` calls this on the service's policy (always at its
        // first attempt) and then clones it for the request, so a new
        // random stream here is the request's own. The request's copy calls
        // this again between attempts and keeps its stream.
        if self.attempts == 1 {
            let n = self.requests.fetch_add(1, Ordering::Relaxed);
            self.rng = StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        Some(req.clone())
    }
}
