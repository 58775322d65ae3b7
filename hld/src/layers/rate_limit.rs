//! [`RateLimitLayer`]: the lesson's GCRA in front of a service, one limiter
//! per key, rejecting (not queueing) over the limit.

use super::{BoxError, BoxFuture, Clock, LayerError, MonotonicClock};
use crate::rate_limiting::{Decision, Gcra, LimitError, RateLimiter};
use crate::sync::{lock, Arc, Mutex};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Which limiter a request counts against: a user, an API token, an IP.
/// Any `Fn(&Req) -> K` with `K: Hash` is one; keys are stored as 64-bit
/// hashes (two keys sharing a hash would share a limiter, which at 64 bits
/// does not happen in practice).
pub trait KeyFn<Req> {
    fn key(&self, req: &Req) -> u64;
}

impl<Req, K: Hash, F: Fn(&Req) -> K> KeyFn<Req> for F {
    fn key(&self, req: &Req) -> u64 {
        // SipHash with fixed keys: the same key always lands on the same
        // limiter, across clones and calls.
        let mut h = DefaultHasher::new();
        self(req).hash(&mut h);
        h.finish()
    }
}

/// One limiter for every request (a global rate).
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl<Req> KeyFn<Req> for Global {
    fn key(&self, _: &Req) -> u64 {
        0
    }
}

/// The limiters, shared by every clone of the layer and its services.
#[derive(Debug)]
struct Limiters {
    /// A fresh limiter, cloned for each new key.
    proto: Gcra,
    map: Mutex<KeyMap>,
}

/// The limiter per key hash, and the map's size after the last sweep of
/// idle keys (the next sweep happens when it doubles, so sweeping is
/// amortized O(1) per call).
#[derive(Debug, Default)]
struct KeyMap {
    limiters: HashMap<u64, Gcra>,
    swept_at: usize,
}

impl Limiters {
    fn check(&self, key: u64, now: Duration) -> Decision {
        let mut map = lock(&self.map);
        let decision = map
            .limiters
            .entry(key)
            .or_insert_with(|| self.proto.clone())
            .check(now);
        if map.limiters.len() > 2 * map.swept_at.max(512) {
            // A limiter whose burst has fully refilled is the same as a new
            // one, so dropping it changes no decision.
            map.limiters.retain(|_, g| !g.is_idle(now));
            map.swept_at = map.limiters.len();
        }
        decision
    }
}

/// Limits requests to `burst` at once and one per `period` after that, per
/// key, with the GCRA of [`crate::rate_limiting`]. Over the limit the
/// service answers [`LayerError::RateLimited`] with the time until the next
/// request would be admitted; it never waits.
#[derive(Debug)]
pub struct RateLimitLayer<F = Global, C = MonotonicClock> {
    limiters: Arc<Limiters>,
    clock: Arc<C>,
    key: F,
}

impl<F: Clone, C> Clone for RateLimitLayer<F, C> {
    fn clone(&self) -> Self {
        Self {
            limiters: self.limiters.clone(),
            clock: self.clock.clone(),
            key: self.key.clone(),
        }
    }
}

impl RateLimitLayer {
    /// One global limit on the real clock.
    pub fn new(burst: u64, period: Duration) -> Result<Self, LimitError> {
        Self::with(burst, period, Arc::new(MonotonicClock::new()), Global)
    }
}

impl<F, C> RateLimitLayer<F, C> {
    /// A limit per `key(&request)`, on `clock`.
    pub fn with(burst: u64, period: Duration, clock: Arc<C>, key: F) -> Result<Self, LimitError> {
        Ok(Self {
            limiters: Arc::new(Limiters {
                proto: Gcra::new(burst, period)?,
                map: Mutex::new(KeyMap::default()),
            }),
            clock,
            key,
        })
    }

    /// Keys with a limiter in memory (idle ones are swept as the map grows).
    pub fn tracked_keys(&self) -> usize {
        lock(&self.limiters.map).limiters.len()
    }
}

impl<S, F: Clone, C> Layer<S> for RateLimitLayer<F, C> {
    type Service = RateLimit<S, F, C>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes; clones share the limiters.
#[derive(Debug)]
pub struct RateLimit<S, F = Global, C = MonotonicClock> {
    inner: S,
    layer: RateLimitLayer<F, C>,
}

impl<S: Clone, F: Clone, C> Clone for RateLimit<S, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, F, C, Req> Service<Req> for RateLimit<S, F, C>
where
    S: Service<Req>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    F: KeyFn<Req>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The decision is made in `call`, per request and key; readiness is
        // the inner service's.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.layer.key.key(&req);
        match self.layer.limiters.check(key, self.layer.clock.now()) {
            Decision::Allow => {
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Decision::Deny { retry_after } => {
                Box::pin(std::future::ready(Err(LayerError::RateLimited {
                    retry_after,
                }
                .into())))
            }
        }
    }
}
