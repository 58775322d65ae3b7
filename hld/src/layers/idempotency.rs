//! [`IdempotencyLayer`]: the payments lesson's idempotency-key store in
//! front of a service, so a retried or duplicated request runs once.

use super::{BoxError, BoxFuture, LayerError};
use crate::payments::{Claim, IdempotencyStore};
use crate::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Runs each idempotency key's request once and replays its response.
///
/// `key(&req)` reads the key (`None`: the request is not idempotent and
/// passes straight through); `params(&req)` is what must match for a replay
/// (the body, or a hash of it). With a key:
/// - the first request runs; an `Ok` response is stored and returned;
/// - a later request with the same key and parameters gets the stored
///   response without calling the inner service;
/// - the same key with other parameters is [`LayerError::IdempotencyKeyReuse`];
/// - a request arriving while the first with its key is still running is
///   [`LayerError::IdempotencyInFlight`] at once (Stripe's `409`: async
///   code must not block a thread waiting, and the client retries).
///
/// An `Err` from the inner service is not stored: the key is released and
/// the next attempt runs afresh (tower errors mean "no response", e.g. a
/// timeout or a refused connection; an HTTP service's real answers,
/// including 4xx/5xx, are `Ok` responses and are stored). The key is also
/// released if the response future is dropped before it finishes. Storing
/// the key in the same transaction as the side effect, and expiring keys
/// (Stripe: 24 h), are a database's job; see [`crate::payments`].
#[derive(Debug)]
pub struct IdempotencyLayer<K, P, Res, Pf> {
    store: Arc<IdempotencyStore<P, Res>>,
    key: K,
    params: Pf,
}

impl<K: Clone, P, Res, Pf: Clone> Clone for IdempotencyLayer<K, P, Res, Pf> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
            params: self.params.clone(),
        }
    }
}

impl<K, P, Res, Pf> IdempotencyLayer<K, P, Res, Pf>
where
    P: PartialEq + Clone,
    Res: Clone,
{
    /// A layer with its own, empty store.
    pub fn new(key: K, params: Pf) -> Self {
        Self::with_store(Arc::new(IdempotencyStore::new()), key, params)
    }

    /// A layer over a store shared with other layers or inspected by tests.
    pub fn with_store(store: Arc<IdempotencyStore<P, Res>>, key: K, params: Pf) -> Self {
        Self { store, key, params }
    }

    /// The store.
    pub fn store(&self) -> &Arc<IdempotencyStore<P, Res>> {
        &self.store
    }
}

impl<S, K: Clone, P, Res, Pf: Clone> Layer<S> for IdempotencyLayer<K, P, Res, Pf> {
    type Service = Idempotency<S, K, P, Res, Pf>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`IdempotencyLayer`] makes; clones share the store.
#[derive(Debug)]
pub struct Idempotency<S, K, P, Res, Pf> {
    inner: S,
    layer: IdempotencyLayer<K, P, Res, Pf>,
}

impl<S: Clone, K: Clone, P, Res, Pf: Clone> Clone for Idempotency<S, K, P, Res, Pf> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

/// Holds a [`Claim::Run`]; releases the key unless a response was stored.
struct ClaimGuard<P: PartialEq + Clone, R: Clone> {
    store: Arc<IdempotencyStore<P, R>>,
    key: Option<String>,
}

impl<P: PartialEq + Clone, R: Clone> Drop for ClaimGuard<P, R> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.store.release(&k);
        }
    }
}

impl<S, K, P, Pf, Req> Service<Req> for Idempotency<S, K, P, S::Response, Pf>
where
    S: Service<Req>,
    S::Response: Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: Fn(&Req) -> Option<String>,
    Pf: Fn(&Req) -> P,
    P: PartialEq + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(key) = (self.layer.key)(&req) else {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        };
        let params = (self.layer.params)(&req);
        let store = self.layer.store.clone();
        let (claim, _) = store.claim(&key, &params, None);
        let refuse =
            |e: LayerError| -> Self::Future { Box::pin(std::future::ready(Err(e.into()))) };
        match claim {
            Claim::Replay(res) => Box::pin(std::future::ready(Ok(res))),
            Claim::KeyReuse => refuse(LayerError::IdempotencyKeyReuse(key)),
            Claim::InFlight | Claim::TimedOut => refuse(LayerError::IdempotencyInFlight(key)),
            Claim::Run => {
                let mut guard = ClaimGuard {
                    store,
                    key: Some(key),
                };
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let result = fut.await;
                    if let Ok(res) = &result {
                        if let Some(key) = guard.key.take() {
                            guard.store.finish(&key, res.clone());
                        }
                    }
                    // On `Err` the guard still holds the key and releases it.
                    drop(guard);
                    result.map_err(Into::into)
                })
            }
        }
    }
}
