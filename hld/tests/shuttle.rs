//! Shuttle tests of the pieces whose correctness depends on how concurrent
//! requests interleave: `cargo test -p hld --features shuttle --test shuttle`.
//!
//! With the feature on, `hld::sync` hands out shuttle's `Mutex` and
//! `Condvar`, so the idempotency store and the layers' shared state are
//! scheduled by shuttle, which runs each test body many times under
//! different random (or PCT) schedules, switching threads at every lock and
//! atomic operation. Each test checks an invariant that must hold in every
//! schedule:
//! - the idempotency store and layer run the work for one key exactly once;
//! - the GCRA limiter behind `RateLimitLayer` admits exactly the burst at
//!   one instant, and at most burst + 1 when the clock moves one period;
//! - a half-open `CircuitBreakerLayer` lets exactly one probe through.
//!
//! Time is a `ManualClock`; shuttle's `Condvar::wait_timeout` never times
//! out, so a waiting request always sees the first one finish.

#![cfg(feature = "shuttle")]

use hld::circuit_breaker::{BreakerConfig, State};
use hld::layers::{
    layer_error, BoxError, CircuitBreakerLayer, ErrIsFailure, Global, IdempotencyLayer, LayerError,
    ManualClock, RateLimitLayer,
};
use hld::payments::{Claim, IdempotencyStore};
use shuttle::sync::atomic::{AtomicU32, Ordering};
use shuttle::sync::Arc;
use shuttle::{future, thread};
use std::time::Duration;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// Schedules per test: random scheduling finds these bugs (a missing lock,
/// a check-then-act race) within tens of schedules; 1,000 keeps each test
/// well under a second.
const ITERATIONS: usize = 1000;

#[test]
fn store_runs_each_key_once_and_waiters_get_its_result() {
    shuttle::check_random(
        || {
            let store = Arc::new(IdempotencyStore::<u32, u32>::new());
            let work = Arc::new(AtomicU32::new(0));
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let (store, work) = (store.clone(), work.clone());
                    thread::spawn(move || {
                        match store.claim("k", &7, Some(Duration::from_secs(1))) {
                            (Claim::Run, _) => {
                                let n = work.fetch_add(1, Ordering::SeqCst) + 1;
                                thread::yield_now();
                                store.finish("k", 100 + n);
                                100 + n
                            }
                            (Claim::Replay(r), _) => r,
                            (other, _) => panic!("unexpected {other:?}"),
                        }
                    })
                })
                .collect();
            let results: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(
                work.load(Ordering::SeqCst),
                1,
                "the work ran more than once"
            );
            assert!(results.iter().all(|r| *r == 101), "{results:?}");
        },
        ITERATIONS,
    );
}

#[test]
fn store_without_waiting_answers_in_flight_or_replay_never_a_second_run() {
    shuttle::check_pct(
        || {
            let store = Arc::new(IdempotencyStore::<u32, u32>::new());
            let work = Arc::new(AtomicU32::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (store, work) = (store.clone(), work.clone());
                    thread::spawn(move || match store.claim("k", &7, None).0 {
                        Claim::Run => {
                            work.fetch_add(1, Ordering::SeqCst);
                            store.finish("k", 1);
                            Some(1)
                        }
                        Claim::Replay(r) => Some(r),
                        Claim::InFlight => None,
                        other => panic!("unexpected {other:?}"),
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(work.load(Ordering::SeqCst), 1);
            assert!(results.contains(&Some(1)));
            assert_eq!(store.len(), 1);
        },
        ITERATIONS,
        3,
    );
}

type Cmd = (Option<&'static str>, u32);

#[test]
fn idempotency_layer_calls_the_inner_service_once_per_key() {
    shuttle::check_random(
        || {
            let runs = Arc::new(AtomicU32::new(0));
            let r = runs.clone();
            let inner = service_fn(move |(_, amount): Cmd| {
                let r = r.clone();
                async move {
                    let id = r.fetch_add(1, Ordering::SeqCst) + 1;
                    future::yield_now().await;
                    Ok::<_, BoxError>((id, amount))
                }
            });
            let layer = IdempotencyLayer::new(|c: &Cmd| c.0.map(String::from), |c: &Cmd| c.1);
            let svc = ServiceBuilder::new().layer(layer).service(inner);
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let svc = svc.clone();
                    thread::spawn(move || future::block_on(svc.oneshot((Some("k"), 5))))
                })
                .collect();
            let mut ok = Vec::new();
            for h in handles {
                match h.join().unwrap() {
                    Ok(v) => ok.push(v),
                    Err(e) => assert_eq!(
                        layer_error(&e),
                        Some(&LayerError::IdempotencyInFlight("k".into()))
                    ),
                }
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "inner service ran twice");
            assert!(!ok.is_empty() && ok.iter().all(|v| *v == (1, 5)), "{ok:?}");
        },
        ITERATIONS,
    );
}

/// Requests admitted by a burst-3 GCRA when `threads` threads send 2 each
/// and, if `tick`, another thread moves the clock one period meanwhile.
fn admitted(tick: bool) -> u32 {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(100)));
    let layer = RateLimitLayer::with(3, Duration::from_secs(1), clock.clone(), Global).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    let admitted = Arc::new(AtomicU32::new(0));
    let mut handles: Vec<_> = (0..3)
        .map(|_| {
            let (svc, admitted) = (svc.clone(), admitted.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    match future::block_on(svc.clone().oneshot(())) {
                        Ok(()) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => assert!(matches!(
                            layer_error(&e),
                            Some(LayerError::RateLimited { .. })
                        )),
                    }
                }
            })
        })
        .collect();
    if tick {
        handles.push(thread::spawn(move || clock.advance(Duration::from_secs(1))));
    }
    for h in handles {
        h.join().unwrap();
    }
    admitted.load(Ordering::SeqCst)
}

#[test]
fn gcra_admits_exactly_the_burst_at_one_instant() {
    shuttle::check_random(|| assert_eq!(admitted(false), 3), ITERATIONS);
}

#[test]
fn gcra_admits_at_most_one_more_after_one_period() {
    // The clock read is not a shuttle operation, but the limiter's lock is,
    // so the tick lands between different limiter calls in different runs.
    shuttle::check_random(
        || {
            let n = admitted(true);
            assert!((3..=4).contains(&n), "{n} admitted");
        },
        ITERATIONS,
    );
}

#[test]
fn half_open_breaker_lets_exactly_one_probe_through() {
    shuttle::check_random(
        || {
            let clock = Arc::new(ManualClock::new(Duration::ZERO));
            let cfg = BreakerConfig {
                window: 2,
                min_calls: 2,
                failure_rate: 1.0,
                open_timeout: Duration::from_secs(5),
                half_open_probes: 1,
            };
            let layer = CircuitBreakerLayer::with(cfg, clock.clone(), ErrIsFailure).unwrap();
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            // The dependency is still down: every call fails, after a yield
            // so other requests can arrive while it runs.
            let svc = ServiceBuilder::new()
                .layer(layer.clone())
                .service(service_fn(move |()| {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        future::yield_now().await;
                        Err::<(), BoxError>("down".into())
                    }
                }));
            for _ in 0..2 {
                assert!(future::block_on(svc.clone().oneshot(())).is_err());
            }
            assert!(matches!(layer.state(), State::Open { .. }));
            clock.advance(Duration::from_secs(5));
            calls.store(0, Ordering::SeqCst);
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let svc = svc.clone();
                    thread::spawn(move || future::block_on(svc.oneshot(())).is_err())
                })
                .collect();
            assert!(handles.into_iter().all(|h| h.join().unwrap()));
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "more than one half-open probe"
            );
            assert_eq!(
                layer.state(),
                State::Open {
                    until: Duration::from_secs(10)
                }
            );
        },
        ITERATIONS,
    );
}
