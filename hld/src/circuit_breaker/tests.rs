//! Tests of the circuit-breaker lesson.

use super::*;
use proptest::prelude::*;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn cfg() -> BreakerConfig {
    BreakerConfig {
        window: 4,
        min_calls: 4,
        failure_rate: 0.5,
        open_timeout: ms(1000),
        half_open_probes: 2,
    }
}

fn call(b: &mut CircuitBreaker, now: Duration, outcome: Outcome) -> bool {
    match b.check(now) {
        Decision::Allow(p) => {
            b.record(now, p, outcome);
            true
        }
        Decision::Reject { .. } => false,
    }
}

#[test]
fn bad_settings_are_errors() {
    let bad = |f: fn(&mut BreakerConfig)| {
        let mut c = cfg();
        f(&mut c);
        CircuitBreaker::new(c).err()
    };
    assert_eq!(bad(|c| c.window = 0), Some(BreakerError::BadWindow));
    assert_eq!(bad(|c| c.min_calls = 5), Some(BreakerError::BadWindow));
    assert_eq!(
        bad(|c| c.failure_rate = 0.0),
        Some(BreakerError::BadRate(0.0))
    );
    assert_eq!(
        bad(|c| c.half_open_probes = 0),
        Some(BreakerError::NoProbes)
    );
    assert!(CircuitBreaker::new(cfg()).is_ok());
}

#[test]
fn closed_open_half_open_closed() {
    let clock = ManualClock::new(Duration::ZERO);
    let mut b = CircuitBreaker::new(cfg()).unwrap();
    // 3 successes and 1 failure: 25 %, stays closed.
    for o in [
        Outcome::Success,
        Outcome::Success,
        Outcome::Success,
        Outcome::Failure,
    ] {
        assert!(call(&mut b, clock.now(), o));
    }
    assert_eq!(b.state(clock.now()), State::Closed);
    // One more failure: window is S S F F = 50 %, trips.
    assert!(call(&mut b, clock.now(), Outcome::Failure));
    assert_eq!(b.state(clock.now()), State::Open { until: ms(1000) });
    clock.advance(ms(999));
    assert_eq!(
        b.check(clock.now()),
        Decision::Reject { retry_after: ms(1) }
    );
    clock.advance(ms(1));
    assert_eq!(b.state(clock.now()), State::HalfOpen);
    let p1 = b.check(clock.now());
    let p2 = b.check(clock.now());
    assert!(p1.is_allowed() && p2.is_allowed());
    assert!(!b.check(clock.now()).is_allowed(), "only 2 probes");
    for p in [p1, p2] {
        if let Decision::Allow(p) = p {
            b.record(clock.now(), p, Outcome::Success);
        }
    }
    assert_eq!(b.state(clock.now()), State::Closed);
    assert_eq!(b.trips(), 1);
}

#[test]
fn a_failed_probe_reopens_and_stale_results_are_ignored() {
    let mut b = CircuitBreaker::new(cfg()).unwrap();
    let stale = match b.check(ms(0)) {
        Decision::Allow(p) => p,
        Decision::Reject { .. } => panic!("closed breaker rejected"),
    };
    for _ in 0..4 {
        call(&mut b, ms(0), Outcome::Failure);
    }
    assert!(matches!(b.state(ms(10)), State::Open { .. }));
    // The slow call started while closed ends now: ignored.
    b.record(ms(1500), stale, Outcome::Success);
    assert!(call(&mut b, ms(1500), Outcome::Failure));
    assert_eq!(b.state(ms(1500)), State::Open { until: ms(2500) });
    assert_eq!(b.trips(), 2);
}

#[test]
fn the_breaker_spares_the_failing_dependency_and_the_tail() {
    let r = lesson_with(42, 120);
    let (n, o) = (&r.naive, &r.optimal);
    assert!(n["calls_to_failing_dependency"] > 1000.0, "{}", r.table());
    assert!(
        o["calls_to_failing_dependency"] < 0.1 * n["calls_to_failing_dependency"],
        "{}",
        r.table()
    );
    assert!(n["p99_ms"] >= 499.0 && o["p99_ms"] < 100.0, "{}", r.table());
    assert!(o["trips"] >= 1.0);
}

#[test]
fn simulation_is_deterministic_per_seed() {
    let o = Outage {
        start: ms(1000),
        end: ms(2000),
        client_timeout: ms(1000),
    };
    let a = simulate(7, ms(4000), 50.0, o, Some(cfg())).unwrap();
    let b = simulate(7, ms(4000), 50.0, o, Some(cfg())).unwrap();
    assert_eq!(a, b);
}

proptest! {
    /// Whatever the sequence of calls, outcomes and delays, no call is
    /// admitted while the breaker is open and its timeout has not passed,
    /// and half-open never admits more than `half_open_probes` calls.
    #[test]
    fn never_calls_while_open(
        steps in proptest::collection::vec((0u64..400, any::<bool>(), 0u64..1500), 1..300)
    ) {
        let c = cfg();
        let mut b = CircuitBreaker::new(c).unwrap();
        let mut pending: Vec<(Duration, Permit, Outcome)> = Vec::new();
        let mut now = Duration::ZERO;
        let mut probes_this_half_open = 0u32;
        let (mut prev_after, mut prev_trips) = (State::Closed, 0);
        for (dt, ok, lat) in steps {
            now += ms(dt);
            pending.sort_by_key(|p| Reverse(p.0));
            while pending.last().is_some_and(|p| p.0 <= now) {
                if let Some((t, p, o)) = pending.pop() {
                    b.record(t, p, o);
                }
            }
            let before = b.state(now);
            let d = b.check(now);
            match before {
                State::Open { until } => prop_assert!(now >= until || !d.is_allowed()),
                State::HalfOpen => {}
                State::Closed => prop_assert!(d.is_allowed()),
            }
            // A new half-open period starts when the previous step did not
            // end half-open, or the breaker tripped since.
            if prev_after != State::HalfOpen || b.trips() != prev_trips {
                probes_this_half_open = 0;
            }
            if let Decision::Allow(p) = d {
                if matches!(b.state(now), State::HalfOpen) {
                    probes_this_half_open += 1;
                    prop_assert!(probes_this_half_open <= c.half_open_probes);
                }
                let o = if ok { Outcome::Success } else { Outcome::Failure };
                pending.push((now + ms(lat), p, o));
            }
            prev_after = b.state(now);
            prev_trips = b.trips();
        }
    }
}
