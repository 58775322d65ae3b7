//! The layers on `tower::service_fn` services, driven with `ServiceExt`,
//! on a [`ManualClock`] and a recording sleep: nothing here waits on time
//! except the one test of tower's own timeout (1 ms).

use super::*;
use crate::circuit_breaker::{BreakerConfig, Outcome, State};
use crate::retry_jitter::Strategy;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// A service answering its request back, counting calls.
fn echo<T: Send + 'static>(
    calls: Arc<AtomicU32>,
) -> impl Service<T, Response = T, Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |req: T| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(req) }
    })
}

fn err_of<T: std::fmt::Debug>(r: Result<T, BoxError>) -> LayerError {
    let e = r.expect_err("expected an error");
    layer_error(&e).cloned().expect("expected a LayerError")
}

#[tokio::test]
async fn rate_limit_rejects_over_the_burst_and_refills() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RateLimitLayer::with(3, ms(1000), clock.clone(), Global).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(echo(calls.clone()));
    for i in 0..3 {
        assert_eq!(svc.clone().oneshot(i).await.unwrap(), i);
    }
    let e = err_of(svc.clone().oneshot(3).await);
    assert_eq!(
        e,
        LayerError::RateLimited {
            retry_after: ms(1000)
        }
    );
    assert_eq!(e.status(), 429);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "a rejected request never reaches the service"
    );
    clock.advance(ms(400));
    assert_eq!(
        err_of(svc.clone().oneshot(4).await).retry_after(),
        Some(ms(600))
    );
    clock.advance(ms(600));
    assert_eq!(svc.clone().oneshot(5).await.unwrap(), 5);
    assert!(svc.oneshot(6).await.is_err());
}

#[tokio::test]
async fn rate_limit_is_per_key_and_shared_by_clones() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let calls = Arc::new(AtomicU32::new(0));
    let by_user = |req: &(&'static str, u32)| req.0;
    let layer = RateLimitLayer::with(2, ms(1000), clock, by_user).unwrap();
    let mut a = ServiceBuilder::new()
        .layer(layer.clone())
        .service(echo(calls.clone()));
    let mut b = a.clone();
    assert!(a.ready().await.unwrap().call(("alice", 1)).await.is_ok());
    assert!(b.ready().await.unwrap().call(("alice", 2)).await.is_ok());
    // Alice's burst is used up, through either clone.
    assert!(a.ready().await.unwrap().call(("alice", 3)).await.is_err());
    assert!(b.ready().await.unwrap().call(("alice", 4)).await.is_err());
    // Bob has his own limiter.
    assert!(b.ready().await.unwrap().call(("bob", 5)).await.is_ok());
    assert_eq!(layer.tracked_keys(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_keys_are_swept_so_memory_stays_bounded() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let layer = RateLimitLayer::with(1, ms(1), clock.clone(), |k: &u32| *k).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(echo(Arc::default()));
    for k in 0..5000u32 {
        // Every key is new and the previous ones have refilled.
        assert!(svc.clone().oneshot(k).await.is_ok());
        clock.advance(ms(10));
    }
    assert!(layer.tracked_keys() <= 1025, "{}", layer.tracked_keys());
}

fn breaker_cfg() -> BreakerConfig {
    BreakerConfig {
        window: 4,
        min_calls: 4,
        failure_rate: 0.5,
        open_timeout: ms(1000),
        half_open_probes: 1,
    }
}

/// Succeeds on `true`, fails on `false`, counting calls.
fn flaky(
    calls: Arc<AtomicU32>,
) -> impl Service<bool, Response = (), Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |ok: bool| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if ok {
                Ok(())
            } else {
                Err(BoxError::from("dependency failed"))
            }
        }
    })
}

#[tokio::test]
async fn breaker_opens_short_circuits_probes_and_closes() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let calls = Arc::new(AtomicU32::new(0));
    let layer = CircuitBreakerLayer::with(breaker_cfg(), clock.clone(), ErrIsFailure).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(flaky(calls.clone()));
    for ok in [true, true, false, false] {
        let r = svc.clone().oneshot(ok).await;
        assert_eq!(r.is_ok(), ok);
    }
    assert_eq!(layer.state(), State::Open { until: ms(1000) });
    let e = err_of(svc.clone().oneshot(true).await);
    assert_eq!(
        e,
        LayerError::CircuitOpen {
            retry_after: ms(1000)
        }
    );
    assert_eq!(e.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "no call while open");
    clock.advance(ms(1000));
    assert_eq!(layer.state(), State::HalfOpen);
    // One probe is let through and succeeds: closed again.
    svc.clone().oneshot(true).await.unwrap();
    assert_eq!(layer.state(), State::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(layer.trips(), 1);
}

#[tokio::test]
async fn only_the_probe_reaches_a_half_open_dependency() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let calls = Arc::new(AtomicU32::new(0));
    let layer = CircuitBreakerLayer::with(breaker_cfg(), clock.clone(), ErrIsFailure).unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(flaky(calls.clone()));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(false).await;
    }
    clock.advance(ms(1000));
    // The probe is admitted in `call`; while it runs a second call is refused.
    let probe = svc.ready().await.unwrap().call(false);
    let second = svc.ready().await.unwrap().call(true).await;
    assert_eq!(
        err_of(second),
        LayerError::CircuitOpen {
            retry_after: Duration::ZERO
        }
    );
    assert!(probe.await.is_err());
    // The failed probe reopens the breaker.
    assert_eq!(layer.state(), State::Open { until: ms(2000) });
    assert_eq!(layer.trips(), 2);
}

#[tokio::test]
async fn a_cancelled_probe_counts_as_a_failure_instead_of_wedging_half_open() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let layer = CircuitBreakerLayer::with(breaker_cfg(), clock.clone(), ErrIsFailure).unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(flaky(Arc::default()));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(false).await;
    }
    clock.advance(ms(1000));
    drop(svc.ready().await.unwrap().call(true));
    assert_eq!(layer.state(), State::Open { until: ms(2000) });
    clock.advance(ms(1000));
    assert!(svc.oneshot(true).await.is_ok());
    assert_eq!(layer.state(), State::Closed);
}

#[tokio::test]
async fn a_classifier_counts_5xx_responses_and_tower_timeouts_trip_it() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let five_xx = |r: Result<&u16, &BoxError>| match r {
        Ok(s) if *s < 500 => Outcome::Success,
        _ => Outcome::Failure,
    };
    let layer = CircuitBreakerLayer::with(breaker_cfg(), clock.clone(), five_xx).unwrap();
    let status = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|s: u16| async move { Ok::<_, BoxError>(s) }));
    for s in [200, 500, 502, 200] {
        assert_eq!(status.clone().oneshot(s).await.unwrap(), s);
    }
    assert!(matches!(layer.state(), State::Open { .. }));

    // tower's TimeoutLayer inside the breaker: a hanging dependency's
    // `Elapsed` errors are failures, mapped to 504 by `status_of`.
    let layer = CircuitBreakerLayer::with(breaker_cfg(), clock, ErrIsFailure).unwrap();
    let hanging = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(tower::timeout::TimeoutLayer::new(ms(1)))
        .service(service_fn(|()| {
            std::future::pending::<Result<(), BoxError>>()
        }));
    for _ in 0..4 {
        let e = hanging.clone().oneshot(()).await.unwrap_err();
        assert_eq!(status_of(e.as_ref()), 504);
    }
    let e = hanging.oneshot(()).await.unwrap_err();
    assert_eq!(status_of(e.as_ref()), 503);
}

/// A sleep that records the delays and returns at once.
fn recording_sleep() -> (Sleep, Arc<Mutex<Vec<Duration>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let sleep: Sleep = Arc::new(move |d| {
        l.lock().unwrap().push(d);
        Box::pin(std::future::ready(()))
    });
    (sleep, log)
}

/// Fails the first `fail` calls, then echoes.
fn fails_first(
    fail: u32,
    calls: Arc<AtomicU32>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |x: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < fail {
                Err(BoxError::from("busy"))
            } else {
                Ok(x)
            }
        }
    })
}

#[tokio::test]
async fn retry_policy_backs_off_with_jitter_until_success() {
    for strategy in [Strategy::Full, Strategy::Equal, Strategy::Decorrelated] {
        let (sleep, log) = recording_sleep();
        let calls = Arc::new(AtomicU32::new(0));
        let policy = JitterRetry::with(strategy, ms(10), ms(1000), 5, 7, sleep, AnyError).unwrap();
        let svc = ServiceBuilder::new()
            .layer(tower::retry::RetryLayer::new(policy))
            .service(fails_first(3, calls.clone()));
        assert_eq!(svc.oneshot(42).await.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let delays = log.lock().unwrap().clone();
        assert_eq!(delays.len(), 3, "{strategy:?}");
        for (i, d) in delays.iter().enumerate() {
            let ceiling = ms(10 << i);
            match strategy {
                Strategy::Full => assert!(*d <= ceiling, "{strategy:?} {delays:?}"),
                Strategy::Equal => {
                    assert!(
                        *d >= ceiling / 2 && *d <= ceiling,
                        "{strategy:?} {delays:?}"
                    )
                }
                _ => assert!(*d >= ms(10) && *d <= ms(1000), "{strategy:?} {delays:?}"),
            }
        }
    }
}

#[tokio::test]
async fn retry_gives_up_after_max_attempts_and_skips_non_retryable() {
    let (sleep, log) = recording_sleep();
    let calls = Arc::new(AtomicU32::new(0));
    let policy = JitterRetry::with(
        Strategy::Full,
        ms(10),
        ms(100),
        3,
        1,
        sleep.clone(),
        AnyError,
    )
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service(fails_first(u32::MAX, calls.clone()));
    assert!(svc.oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(log.lock().unwrap().len(), 2);

    let never = |_: &Result<u32, BoxError>| false;
    let policy = JitterRetry::with(Strategy::Full, ms(10), ms(100), 3, 1, sleep, never).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service(fails_first(u32::MAX, calls.clone()));
    assert!(svc.oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn each_request_gets_its_own_jitter() {
    let (sleep, log) = recording_sleep();
    let policy =
        JitterRetry::with(Strategy::Full, ms(10), ms(1000), 2, 9, sleep, AnyError).unwrap();
    let svc = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service(fails_first(u32::MAX, Arc::default()));
    for i in 0..4 {
        assert!(svc.clone().oneshot(i).await.is_err());
    }
    let mut delays = log.lock().unwrap().clone();
    assert_eq!(delays.len(), 4);
    delays.dedup();
    assert_eq!(
        delays.len(),
        4,
        "four requests, four different first delays"
    );
}

type Charge = (u64, u32);
type ChargeCmd = (Option<&'static str>, u32);
type ChargeLayer =
    IdempotencyLayer<fn(&ChargeCmd) -> Option<String>, u32, Charge, fn(&ChargeCmd) -> u32>;

/// An idempotency layer for (key, amount) "charge" requests.
fn charge_layer() -> ChargeLayer {
    IdempotencyLayer::new(|r| r.0.map(String::from), |r| r.1)
}

/// Charges: returns a fresh charge id per call, or fails for amount 0.
fn ledger(
    calls: Arc<AtomicU32>,
) -> impl Service<(Option<&'static str>, u32), Response = Charge, Error = BoxError, Future = impl Send>
       + Clone {
    service_fn(move |(_, amount): (Option<&'static str>, u32)| {
        let id = calls.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        async move {
            if amount == 0 {
                Err(BoxError::from("network error"))
            } else {
                Ok((id, amount))
            }
        }
    })
}

#[tokio::test]
async fn idempotency_replays_the_first_response() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = ServiceBuilder::new()
        .layer(charge_layer())
        .service(ledger(calls.clone()));
    let first = svc.clone().oneshot((Some("k1"), 500)).await.unwrap();
    assert_eq!(svc.clone().oneshot((Some("k1"), 500)).await.unwrap(), first);
    let e = err_of(svc.clone().oneshot((Some("k1"), 501)).await);
    assert_eq!(e, LayerError::IdempotencyKeyReuse("k1".into()));
    assert_eq!(e.status(), 422);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // No key: not idempotent, runs every time.
    let a = svc.clone().oneshot((None, 500)).await.unwrap();
    let b = svc.oneshot((None, 500)).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_duplicate_in_flight_is_a_conflict_not_a_second_run() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = charge_layer();
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ledger(calls.clone()));
    // The key is claimed in `call`, before the first response future runs.
    let first = svc.ready().await.unwrap().call((Some("k"), 700));
    let dup = svc.ready().await.unwrap().call((Some("k"), 700)).await;
    let e = err_of(dup);
    assert_eq!(e, LayerError::IdempotencyInFlight("k".into()));
    assert_eq!(e.status(), 409);
    let first = first.await.unwrap();
    assert_eq!(svc.oneshot((Some("k"), 700)).await.unwrap(), first);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.store().len(), 1);
}

#[tokio::test]
async fn errors_and_cancellations_release_the_key() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = charge_layer();
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ledger(calls.clone()));
    // A transport error is not stored: the retry runs again.
    assert!(svc.clone().oneshot((Some("e"), 0)).await.is_err());
    assert!(svc.clone().oneshot((Some("e"), 0)).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A dropped response future gives the key back.
    drop(svc.ready().await.unwrap().call((Some("c"), 5)));
    assert!(layer.store().is_empty());
    assert_eq!(svc.oneshot((Some("c"), 5)).await.unwrap().1, 5);
}
