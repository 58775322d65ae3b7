//! [`CircuitBreakerLayer`]: the lesson's closed/open/half-open breaker in
//! front of a service.

use super::{BoxError, BoxFuture, Clock, LayerError, MonotonicClock};
use crate::circuit_breaker::{
    BreakerConfig, BreakerError, CircuitBreaker, Decision, Outcome, Permit, State,
};
use crate::sync::{lock, Arc, Mutex};
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Decides whether a finished call counts as a failure for the breaker.
/// Any `Fn(Result<&Res, &E>) -> Outcome` is one, e.g. "a 5xx response is a
/// failure" for an HTTP service, whose errors are usually `Ok` responses.
pub trait Classify<Res, E> {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;
}

impl<Res, E, F: Fn(Result<&Res, &E>) -> Outcome> Classify<Res, E> for F {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: an `Err` is a failure, any response a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrIsFailure;

impl<Res, E> Classify<Res, E> for ErrIsFailure {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Wraps a service in one shared [`CircuitBreaker`]: every clone of the
/// layer and of its services feeds and obeys the same breaker.
#[derive(Debug)]
pub struct CircuitBreakerLayer<K = ErrIsFailure, C = MonotonicClock> {
    breaker: Arc<Mutex<CircuitBreaker>>,
    clock: Arc<C>,
    classify: K,
}

impl<K: Clone, C> Clone for CircuitBreakerLayer<K, C> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            clock: self.clock.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl CircuitBreakerLayer {
    /// A breaker on the real clock that counts `Err`s as failures.
    pub fn new(cfg: BreakerConfig) -> Result<Self, BreakerError> {
        Self::with(cfg, Arc::new(MonotonicClock::new()), ErrIsFailure)
    }
}

impl<K, C> CircuitBreakerLayer<K, C> {
    /// A breaker on `clock` with a chosen failure classifier.
    pub fn with(cfg: BreakerConfig, clock: Arc<C>, classify: K) -> Result<Self, BreakerError> {
        Ok(Self {
            breaker: Arc::new(Mutex::new(CircuitBreaker::new(cfg)?)),
            clock,
            classify,
        })
    }

    /// The breaker's state now.
    pub fn state(&self) -> State
    where
        C: Clock,
    {
        lock(&self.breaker).state(self.clock.now())
    }

    /// How many times the breaker has tripped.
    pub fn trips(&self) -> u64 {
        lock(&self.breaker).trips()
    }
}

impl<S, K: Clone, C> Layer<S> for CircuitBreakerLayer<K, C> {
    type Service = Breaker<S, K, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`CircuitBreakerLayer`] makes; clones share the breaker.
#[derive(Debug)]
pub struct Breaker<S, K = ErrIsFailure, C = MonotonicClock> {
    inner: S,
    layer: CircuitBreakerLayer<K, C>,
}

impl<S: Clone, K: Clone, C> Clone for Breaker<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

/// An admitted call's permit. If the response future is dropped before it
/// finishes (a client went away, an outer timeout fired), the call is
/// recorded as a failure: otherwise a cancelled half-open probe would hold
/// its probe slot forever and the breaker would never close again.
struct PermitGuard<C: Clock> {
    breaker: Arc<Mutex<CircuitBreaker>>,
    clock: Arc<C>,
    permit: Option<Permit>,
}

impl<C: Clock> PermitGuard<C> {
    fn record(&mut self, outcome: Outcome) {
        if let Some(p) = self.permit.take() {
            lock(&self.breaker).record(self.clock.now(), p, outcome);
        }
    }
}

impl<C: Clock> Drop for PermitGuard<C> {
    fn drop(&mut self) {
        self.record(Outcome::Failure);
    }
}

impl<S, K, C, Req> Service<Req> for Breaker<S, K, C>
where
    S: Service<Req>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: Classify<S::Response, S::Error> + Clone + Send + 'static,
    C: Clock + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Admission is decided in `call`, so a rejected request costs no
        // call to the inner service; readiness is the inner service's.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = self.layer.clock.now();
        let decision = lock(&self.layer.breaker).check(now);
        let permit = match decision {
            Decision::Allow(p) => p,
            Decision::Reject { retry_after } => {
                return Box::pin(std::future::ready(Err(LayerError::CircuitOpen {
                    retry_after,
                }
                .into())));
            }
        };
        let mut guard = PermitGuard {
            breaker: self.layer.breaker.clone(),
            clock: self.layer.clock.clone(),
            permit: Some(permit),
        };
        let classify = self.layer.classify.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            guard.record(classify.classify(result.as_ref()));
            result.map_err(Into::into)
        })
    }
}
