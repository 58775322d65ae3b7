//! Tests of the rate-limiting lesson.

use super::*;
use proptest::prelude::*;
use rand::Rng;
use std::num::NonZeroU32;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn allowed(l: &mut dyn RateLimiter, times: &[u64]) -> Vec<bool> {
    times.iter().map(|&t| l.check(ms(t)).is_allowed()).collect()
}

#[test]
fn bad_settings_are_errors() {
    assert_eq!(
        FixedWindow::new(0, ms(1)).err(),
        Some(LimitError::ZeroLimit)
    );
    assert_eq!(
        SlidingLog::new(1, ms(0)).err(),
        Some(LimitError::ZeroWindow)
    );
    assert!(SlidingWindowCounter::new(0, ms(1)).is_err());
    assert!(TokenBucket::new(1, ms(0)).is_err());
    assert!(Gcra::new(0, ms(1)).is_err());
}

#[test]
fn fixed_window_lets_twice_the_limit_through_at_a_boundary() {
    let mut f = FixedWindow::new(3, ms(1000)).unwrap();
    let t = [990, 995, 999, 999, 1000, 1001, 1002, 1003];
    assert_eq!(
        allowed(&mut f, &t),
        [true, true, true, false, true, true, true, false]
    );
    let mut s = SlidingLog::new(3, ms(1000)).unwrap();
    assert_eq!(
        allowed(&mut s, &t),
        [true, true, true, false, false, false, false, false]
    );
    // The log frees a slot exactly one window after the first request.
    assert_eq!(s.check(ms(1989)), Decision::Deny { retry_after: ms(1) });
    assert!(s.check(ms(1990)).is_allowed());
}

#[test]
fn sliding_counter_weights_the_previous_window() {
    let mut c = SlidingWindowCounter::new(10, ms(1000)).unwrap();
    for i in 0..10 {
        assert!(c.check(ms(i)).is_allowed());
    }
    assert!(!c.check(ms(500)).is_allowed());
    // At 1.5 s the estimate is 10 * 0.5 + 0 = 5: five more are allowed.
    let ok = (0..10).filter(|_| c.check(ms(1500)).is_allowed()).count();
    assert_eq!(ok, 5);
}

#[test]
fn token_bucket_bursts_then_refills() {
    let mut b = TokenBucket::new(3, ms(100)).unwrap();
    assert_eq!(allowed(&mut b, &[0, 0, 0, 0]), [true, true, true, false]);
    assert_eq!(
        b.check(ms(50)),
        Decision::Deny {
            retry_after: ms(50)
        }
    );
    assert!(b.check(ms(100)).is_allowed());
    assert_eq!(b.tokens(), 0);
    assert!(b.check(ms(10_000)).is_allowed());
    assert_eq!(b.tokens(), 2, "capped at the burst");
}

#[test]
fn gcra_matches_governor_on_the_same_request_times() {
    // governor: burst 5, one cell per 20 ms, on a fake clock.
    let quota = governor::Quota::with_period(ms(20))
        .unwrap()
        .allow_burst(NonZeroU32::new(5).unwrap());
    let clock = governor::clock::FakeRelativeClock::default();
    let theirs = governor::RateLimiter::direct_with_clock(quota, clock.clone());
    let mut mine = Gcra::new(5, ms(20)).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let mut now = Duration::ZERO;
    let mut agreed = 0;
    for _ in 0..5000 {
        let step = Duration::from_micros(rng.random_range(0..15_000));
        now += step;
        clock.advance(step);
        let a = mine.check(now).is_allowed();
        let b = theirs.check().is_ok();
        assert_eq!(a, b, "at {now:?}");
        agreed += a as u32;
    }
    assert!(
        agreed > 1000 && agreed < 4900,
        "both allowed {agreed}: a real mix"
    );
}

#[test]
fn limiters_show_their_trade_offs() {
    let r = lesson_with(42, 50, 40);
    let (n, o) = (&r.naive, &r.optimal);
    assert!(n["max_burst_allowed"] >= 1.8 * 50.0, "{}", r.table());
    assert_eq!(n["wrongly_rejected"], 0.0);
    assert_eq!(o["max_burst_allowed"], 50.0, "{}", r.table());
    assert_eq!(o["wrongly_rejected"], 0.0);
    assert!(
        o["sliding_counter_max_burst_allowed"] < 1.3 * 50.0,
        "{}",
        r.table()
    );
    assert!(
        o["gcra_max_burst_allowed"] <= 5.0 + 50.0 + 1.0,
        "{}",
        r.table()
    );
    assert_eq!(o["gcra_allowed"], o["token_bucket_allowed"]);
}

proptest! {
    /// In any interval [a, b] the bucket allows at most burst + (b - a) / period.
    #[test]
    fn token_bucket_never_exceeds_burst_plus_rate(
        burst in 1u64..8, period_ms in 1u64..50,
        gaps in proptest::collection::vec(0u64..40, 1..150),
    ) {
        let mut b = TokenBucket::new(burst, ms(period_ms)).unwrap();
        let mut t = 0;
        let mut ok = Vec::new();
        for g in gaps {
            t += g;
            if b.check(ms(t)).is_allowed() {
                ok.push(t);
            }
        }
        for i in 0..ok.len() {
            for j in i..ok.len() {
                let n = (j - i + 1) as u64;
                prop_assert!(n <= burst + (ok[j] - ok[i]) / period_ms, "{} in [{}, {}]", n, ok[i], ok[j]);
            }
        }
    }

    /// GCRA is the token bucket in one timestamp: identical decisions.
    #[test]
    fn gcra_equals_token_bucket(
        burst in 1u64..8, period_ms in 1u64..50,
        gaps in proptest::collection::vec(0u64..40, 1..200),
    ) {
        let mut b = TokenBucket::new(burst, ms(period_ms)).unwrap();
        let mut g = Gcra::new(burst, ms(period_ms)).unwrap();
        let mut t = 0;
        for gap in gaps {
            t += gap;
            prop_assert_eq!(b.check(ms(t)).is_allowed(), g.check(ms(t)).is_allowed());
        }
    }

    /// The sliding log never allows more than `limit` in any window.
    #[test]
    fn sliding_log_is_exact(limit in 1u64..10, gaps in proptest::collection::vec(0u64..300, 1..200)) {
        let mut t = 0;
        let times: Vec<Duration> = gaps.iter().map(|g| { t += g; ms(t) }).collect();
        let mut l = SlidingLog::new(limit, ms(1000)).unwrap();
        let s = score(&mut l, &times, limit, ms(1000));
        prop_assert!(s.max_burst_allowed <= limit);
        prop_assert_eq!(s.wrongly_rejected, 0);
    }
}
