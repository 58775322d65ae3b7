//! The resilience lessons as `tower` layers, so a real service (the axum
//! server, the load tests' clients) can stack them.
//!
//! Each layer wraps the lesson's own state machine, shared between the
//! clones of the service behind a lock from [`crate::sync`], and reads time
//! from an injected [`Clock`] (a [`MonotonicClock`] in a service, a
//! [`ManualClock`] in tests), so the tests are deterministic:
//!
//! - [`RateLimitLayer`]: the GCRA of [`crate::rate_limiting::Gcra`], one per
//!   key (a function of the request, or one for everything). Over the limit
//!   it answers [`LayerError::RateLimited`] at once (HTTP 429 with
//!   `Retry-After`) instead of queueing, which is what a public API wants;
//!   tower's own `RateLimitLayer` queues (it holds `poll_ready` until the
//!   next window), which suits a client pacing itself, not a server.
//! - [`CircuitBreakerLayer`]: the closed/open/half-open breaker of
//!   [`crate::circuit_breaker`]. It counts the inner service's results (an
//!   `Err`, or whatever a classifier says, e.g. a 5xx response), answers
//!   [`LayerError::CircuitOpen`] (HTTP 503) while open, and lets the
//!   half-open probes through. Tower has no breaker.
//! - [`JitterRetry`]: a [`tower::retry::Policy`] for tower's own
//!   [`tower::retry::RetryLayer`], with the backoff strategies of
//!   [`crate::retry_jitter`] (full, equal, decorrelated jitter), a cap on
//!   attempts and an injected sleep, so tests do not wait. Requests must be
//!   `Clone`; retries belong on the client side of a call (a handler calling
//!   a dependency, a load generator), not around a server's router.
//! - [`IdempotencyLayer`]: the idempotency-key store of
//!   [`crate::payments`]. A request with a key runs once; later requests with
//!   the key and the same parameters get the stored response; different
//!   parameters are [`LayerError::IdempotencyKeyReuse`] (422); a duplicate
//!   arriving while the first is running is
//!   [`LayerError::IdempotencyInFlight`] (409, Stripe's answer), so the
//!   inner service never runs twice for one key.
//!
//! Where tower already does the job its layer is used, not rewritten:
//! deadlines are [`tower::timeout::TimeoutLayer`] (its `Elapsed` error is a
//! failure for the breaker when the timeout sits inside it), concurrency caps
//! are [`tower::limit::ConcurrencyLimitLayer`], and shedding when the inner
//! service is not ready is [`tower::load_shed::LoadShedLayer`] (the
//! lesson in [`crate::load_shedding`] explains why). [`status_of`] maps all
//! of these errors, tower's and ours, to an HTTP status.
//!
//! Like tower's own layers, the services return [`BoxError`]; the inner
//! error is passed through, boxed, so layers nest freely. A typical server
//! stack, outermost first: rate limit, load shed, circuit breaker, timeout,
//! idempotency, handler.

mod breaker;
mod idempotency;
mod rate_limit;
mod retry;

pub use crate::circuit_breaker::{Clock, ManualClock, MonotonicClock};
pub use breaker::{Breaker, CircuitBreakerLayer, Classify, ErrIsFailure};
pub use idempotency::{Idempotency, IdempotencyLayer};
pub use rate_limit::{Global, KeyFn, RateLimit, RateLimitLayer};
pub use retry::{AnyError, JitterRetry, Retryable, Sleep};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The error type of every layer here (the same as tower's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The boxed response future the layers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why a layer refused a request (the inner service's own errors pass
/// through unchanged, boxed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("circuit open: retry after {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    #[error("idempotency key {0:?} was first used with different parameters")]
    IdempotencyKeyReuse(String),
    #[error("a request with idempotency key {0:?} is still in flight")]
    IdempotencyInFlight(String),
}

impl LayerError {
    /// The HTTP status a server answers with: 429 Too Many Requests, 503
    /// Service Unavailable, 422 Unprocessable Content (key reuse, as the IETF
    /// Idempotency-Key draft says), 409 Conflict (in flight).
    pub fn status(&self) -> u16 {
        match self {
            LayerError::RateLimited { .. } => 429,
            LayerError::CircuitOpen { .. } => 503,
            LayerError::IdempotencyKeyReuse(_) => 422,
            LayerError::IdempotencyInFlight(_) => 409,
        }
    }

    /// When a retry is worth it (the `Retry-After` header), if known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LayerError::RateLimited { retry_after } | LayerError::CircuitOpen { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// The HTTP status for an error out of a layered service: a
/// [`LayerError`]'s own, 504 for tower's timeout, 503 for tower's load
/// shedding, 500 for anything else.
pub fn status_of(err: &(dyn std::error::Error + 'static)) -> u16 {
    if let Some(e) = err.downcast_ref::<LayerError>() {
        e.status()
    } else if err.is::<tower::timeout::error::Elapsed>() {
        504
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        503
    } else {
        500
    }
}

/// The [`LayerError`] inside a boxed error, if that is what it is.
pub fn layer_error(err: &BoxError) -> Option<&LayerError> {
    err.downcast_ref::<LayerError>()
}

#[cfg(test)]
mod tests;
