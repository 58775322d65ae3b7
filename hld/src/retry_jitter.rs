//! Retries with exponential backoff and jitter (AWS Architecture Blog,
//! "Exponential Backoff And Jitter", Marc Brooker, 2015).
//!
//! **The pattern.** A call that failed because the server was busy is worth
//! retrying, but *when* decides whether the retry helps or adds to the
//! overload. The thundering herd: 100 clients fail together, and if they
//! retry together they collide again.
//!
//! **The naive ways.** *Immediate* retries hammer the server: every
//! rejected call comes straight back, so the total number of calls is many
//! times the work. *Exponential backoff without jitter*
//! (`min(cap, base * 2^attempt)`) spaces the attempts out but keeps the
//! clients in lock-step: they all come back in the same instant, the server
//! serves a few, and the rest back off together again; as many calls as
//! immediate retries, spread over a much longer time.
//!
//! **The optimal ways** add randomness so the retries spread over the
//! backoff window (with `e = min(cap, base * 2^attempt)`):
//! - *full jitter*: `random(0, e)`;
//! - *equal jitter*: `e/2 + random(0, e/2)` (never retries too soon);
//! - *decorrelated jitter*: `min(cap, random(base, 3 * previous_sleep))`.
//!
//! Spread out, the retries mostly find free capacity, so far fewer calls are
//! made and the work finishes much sooner than with lock-step backoff.
//! Computing a delay is O(1).
//!
//! [`Backoff`] is the piece a real client uses: it hands out the next delay
//! and leaves the sleeping to the caller, so the clock is injected (a
//! simulation advances a virtual clock, a service sleeps, and
//! [`JitterRetry`](crate::layers::JitterRetry) wraps it as the `Policy` of
//! tower's `RetryLayer`).
//! [`retry`] runs an operation with a `Backoff` and an injected `sleep`.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

/// The lesson's command-line name.
pub const NAME: &str = "retry-jitter";
/// A short human title.
pub const TITLE: &str =
    "Retries: immediate and lock-step backoff vs full, equal and decorrelated jitter";

/// How long to wait before the next retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// No wait at all (naive).
    Immediate,
    /// `min(cap, base * 2^attempt)`, no jitter (naive: lock-step).
    Exponential,
    /// `random(0, e)`.
    Full,
    /// `e/2 + random(0, e/2)`.
    Equal,
    /// `min(cap, random(base, 3 * previous))`.
    Decorrelated,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Immediate,
        Strategy::Exponential,
        Strategy::Full,
        Strategy::Equal,
        Strategy::Decorrelated,
    ];

    /// The metric prefix: "immediate", "exponential", "full", ...
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Immediate => "immediate",
            Strategy::Exponential => "exponential",
            Strategy::Full => "full",
            Strategy::Equal => "equal",
            Strategy::Decorrelated => "decorrelated",
        }
    }
}

/// Bad backoff settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("base must be positive and no larger than cap")]
    BadBounds,
}

/// Hands out retry delays for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    strategy: Strategy,
    base: Duration,
    cap: Duration,
    attempt: u32,
    prev: Duration,
}

impl Backoff {
    pub fn new(strategy: Strategy, base: Duration, cap: Duration) -> Result<Self, BackoffError> {
        if base.is_zero() || base > cap {
            return Err(BackoffError::BadBounds);
        }
        Ok(Self {
            strategy,
            base,
            cap,
            attempt: 0,
            prev: base,
        })
    }

    /// Retries handed out so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Start over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.prev = self.base;
    }

    /// The un-jittered ceiling for retry number `attempt` (0-based):
    /// `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let e = self.ceiling(self.attempt);
        let nanos = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        let delay = match self.strategy {
            Strategy::Immediate => Duration::ZERO,
            Strategy::Exponential => e,
            Strategy::Full => Duration::from_nanos(rng.random_range(0..=nanos(e))),
            Strategy::Equal => {
                let half = nanos(e) / 2;
                Duration::from_nanos(nanos(e) - half + rng.random_range(0..=half))
            }
            Strategy::Decorrelated => {
                let hi = nanos(self.prev).saturating_mul(3).max(nanos(self.base));
                Duration::from_nanos(rng.random_range(nanos(self.base)..=hi)).min(self.cap)
            }
        };
        self.attempt = self.attempt.saturating_add(1);
        self.prev = delay;
        delay
    }
}

/// Runs `op` (given the attempt number, from 0) until it succeeds or
/// `max_attempts` calls were made, calling `sleep` with each backoff delay
/// in between. Returns the last result.
pub fn retry<T, E>(
    backoff: &mut Backoff,
    max_attempts: u32,
    rng: &mut impl Rng,
    mut sleep: impl FnMut(Duration),
    mut op: impl FnMut(u32) -> Result<T, E>,
) -> Result<T, E> {
    let mut attempt = 0;
    loop {
        match op(attempt) {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(e) if attempt + 1 >= max_attempts => return Err(e),
            Err(_) => {
                sleep(backoff.next_delay(rng));
                attempt += 1;
            }
        }
    }
}

/// What one contention run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContentionResult {
    /// Calls made by all clients together (first tries and retries).
    pub total_calls: u64,
    /// Virtual time when the last client succeeded.
    pub completion_ms: f64,
    /// Clients that gave up after `max_attempts` (0 in the lesson).
    pub gave_up: u64,
    /// The most retries that arrived in one slot (after the first, where
    /// every client calls at once).
    pub peak_retry_load: u64,
}

/// The contention experiment on a virtual clock of 1 ms slots: `clients`
/// each need one call to succeed, all start at t = 0, and the server serves
/// at most `capacity` calls per slot (a random `capacity` of them when more
/// arrive; the rest are rejected and back off with `strategy`).
pub fn contention(
    seed: u64,
    strategy: Strategy,
    clients: usize,
    capacity: usize,
    base: Duration,
    cap: Duration,
    max_attempts: u32,
) -> Result<ContentionResult, BackoffError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let proto = Backoff::new(strategy, base, cap)?;
    let mut backoff = vec![proto; clients];
    let mut attempts = vec![0u32; clients];
    // slot -> clients calling in that slot.
    let mut schedule: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    schedule.insert(0, (0..clients).collect());
    let (mut total, mut gave_up, mut peak, mut last) = (0u64, 0u64, 0u64, 0u64);
    while let Some((slot, mut callers)) = schedule.pop_first() {
        total += callers.len() as u64;
        if slot > 0 {
            peak = peak.max(callers.len() as u64);
        }
        callers.shuffle(&mut rng);
        let served = capacity.min(callers.len());
        if served > 0 {
            last = last.max(slot + 1);
        }
        for &c in &callers[served..] {
            attempts[c] += 1;
            if attempts[c] >= max_attempts {
                gave_up += 1;
                continue;
            }
            let delay_ms = backoff[c].next_delay(&mut rng).as_secs_f64() * 1000.0;
            let next = slot + 1 + delay_ms.round() as u64;
            schedule.entry(next).or_default().push(c);
        }
    }
    Ok(ContentionResult {
        total_calls: total,
        completion_ms: last as f64,
        gave_up,
        peak_retry_load: peak,
    })
}

/// The experiment: `clients` contending for a server of `capacity` calls
/// per 1 ms slot, base 10 ms, cap 1 s, each strategy on the same seed.
pub fn lesson_with(seed: u64, clients: usize, capacity: usize) -> LessonReport {
    let base = Duration::from_millis(10);
    let cap = Duration::from_secs(1);
    let mut report = LessonReport::new(NAME, TITLE);
    let mut results = BTreeMap::new();
    for s in Strategy::ALL {
        match contention(seed, s, clients, capacity, base, cap, 10_000) {
            Ok(r) => {
                results.insert(s.name(), r);
            }
            Err(e) => return report.notes(format!("bad backoff settings: {e}")),
        }
    }
    for (name, r) in &results {
        let naive = matches!(*name, "immediate" | "exponential");
        let put = |rep: LessonReport, metric: &str, v: f64| {
            let key = format!("{name}_{metric}");
            if naive {
                rep.naive(&key, v)
            } else {
                rep.optimal(&key, v)
            }
        };
        report = put(report, "total_calls", r.total_calls as f64);
        report = put(report, "completion_ms", r.completion_ms);
        report = put(report, "peak_retry_load", r.peak_retry_load as f64);
    }
    let get = |n: &str| results.get(n).copied();
    if let (Some(imm), Some(exp), Some(full)) = (get("immediate"), get("exponential"), get("full"))
    {
        report = report
            .both("total_calls", exp.total_calls as f64, full.total_calls as f64)
            .both("completion_ms", exp.completion_ms, full.completion_ms)
            .both("clients", clients as f64, clients as f64)
            .notes(format!(
                "{clients} clients fail together against a server that serves {capacity} calls per 1 ms slot. Immediate \
                 retries finish fastest ({:.0} ms) but make {} calls, {:.0}x the work; backoff without jitter makes as \
                 many calls ({}) because the clients stay in lock-step and collide every time, and takes {:.0} ms. Full \
                 jitter spreads each round of retries over its window, so most find a free slot: {} calls in {:.0} ms \
                 (equal and decorrelated jitter land close by). The main side shows no-jitter backoff against full \
                 jitter. Across a fleet, add retry budgets (Envoy's retry_budget, gRPC retry throttling) so retries \
                 never exceed a fraction of traffic, and idempotency keys so a retried write is safe.",
                imm.completion_ms,
                imm.total_calls,
                imm.total_calls as f64 / clients.max(1) as f64,
                exp.total_calls,
                exp.completion_ms,
                full.total_calls,
                full.completion_ms,
            ));
    }
    report
}

/// The full experiment: 100 clients, 2 calls per 1 ms slot.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 100, 2)
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn bad_bounds_are_errors() {
        assert_eq!(
            Backoff::new(Strategy::Full, Duration::ZERO, ms(10)),
            Err(BackoffError::BadBounds)
        );
        assert_eq!(
            Backoff::new(Strategy::Full, ms(20), ms(10)),
            Err(BackoffError::BadBounds)
        );
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Strategy::Exponential, ms(10), ms(100)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let d: Vec<u64> = (0..6)
            .map(|_| b.next_delay(&mut rng).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(b.attempt(), 6);
        b.reset();
        assert_eq!(b.next_delay(&mut rng), ms(10));
        assert_eq!(b.ceiling(1000), ms(100), "no overflow at huge attempts");
        let mut i = Backoff::new(Strategy::Immediate, ms(10), ms(100)).unwrap();
        assert_eq!(i.next_delay(&mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_sleeps_between_attempts_and_stops() {
        let mut b = Backoff::new(Strategy::Exponential, ms(1), ms(8)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut slept = Vec::new();
        let r: Result<u32, &str> = retry(
            &mut b,
            10,
            &mut rng,
            |d| slept.push(d),
            |a| if a < 3 { Err("busy") } else { Ok(a) },
        );
        assert_eq!(r, Ok(3));
        assert_eq!(slept, vec![ms(1), ms(2), ms(4)]);
        assert_eq!(b.attempt(), 0, "reset after success");
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            &mut b,
            4,
            &mut rng,
            |_| {},
            |_| {
                calls += 1;
                Err("down")
            },
        );
        assert_eq!((r, calls), (Err("down"), 4));
    }

    #[test]
    fn jitter_makes_fewer_calls_than_lock_step_backoff() {
        let r = lesson_with(42, 100, 2);
        let (n, o) = (&r.naive, &r.optimal);
        assert!(
            o["full_total_calls"] < n["exponential_total_calls"],
            "{}",
            r.table()
        );
        assert!(
            o["full_total_calls"] < 0.5 * n["immediate_total_calls"],
            "{}",
            r.table()
        );
        for j in ["full", "equal", "decorrelated"] {
            let calls = o[&format!("{j}_total_calls")];
            let done = o[&format!("{j}_completion_ms")];
            assert!(calls < n["exponential_total_calls"], "{j}: {}", r.table());
            assert!(done < n["exponential_completion_ms"], "{j}: {}", r.table());
        }
        assert!(
            n["immediate_completion_ms"] >= 50.0,
            "100 clients at 2/slot need 50 slots"
        );
    }

    #[test]
    fn contention_is_deterministic_and_everyone_finishes() {
        let a = contention(3, Strategy::Full, 50, 2, ms(10), ms(1000), 10_000).unwrap();
        let b = contention(3, Strategy::Full, 50, 2, ms(10), ms(1000), 10_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.gave_up, 0);
        assert!(a.total_calls >= 50);
        let g = contention(3, Strategy::Immediate, 50, 1, ms(10), ms(1000), 2).unwrap();
        assert_eq!(
            g.gave_up, 48,
            "two attempts each at 1/slot: 2 served, 48 give up"
        );
    }

    proptest! {
        #[test]
        fn delays_stay_in_their_bounds(seed: u64, base_ms in 1u64..50, mult in 1u64..100, n in 1usize..40) {
            let (base, cap) = (ms(base_ms), ms(base_ms * mult));
            let mut rng = StdRng::seed_from_u64(seed);
            for s in Strategy::ALL {
                let mut b = Backoff::new(s, base, cap).unwrap();
                for _ in 0..n {
                    let e = b.ceiling(b.attempt());
                    let d = b.next_delay(&mut rng);
                    prop_assert!(d <= cap);
                    match s {
                        Strategy::Immediate => prop_assert_eq!(d, Duration::ZERO),
                        Strategy::Exponential => prop_assert_eq!(d, e),
                        Strategy::Full => prop_assert!(d <= e),
                        Strategy::Equal => prop_assert!(d >= e / 2 && d <= e),
                        Strategy::Decorrelated => prop_assert!(d >= base),
                    }
                }
            }
        }
    }
}
