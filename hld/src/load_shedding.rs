//! Load shedding: when more work arrives than a server can do, reject the
//! excess early (HTTP 429 / 503) instead of queueing it.
//!
//! **The naive way** accepts everything into an unbounded queue. Under an
//! overload (arrivals above service capacity) the queue grows for as long as
//! the overload lasts, every request waits behind all the earlier ones, and
//! latency climbs without limit: most accepted work finishes after its
//! client has given up, so the server burns its capacity on answers nobody
//! reads (goodput collapses while throughput looks fine).
//!
//! **The optimal way** admits work at the door with two cheap checks:
//! a [`TokenBucket`] at about the service rate (bounds the *rate*, allowing
//! short bursts) and a concurrency limit (bounds the *work in the system*,
//! in service plus queued; by Little's law this bounds the wait). What does
//! not fit is rejected at once, so the client can retry elsewhere or later
//! with backoff, and everything accepted is served at normal latency. Both
//! checks are O(1).
//!
//! [`LoadShedder`] takes the clock as `now` (see
//! [`crate::circuit_breaker::Clock`]). In a service tower's own
//! `ConcurrencyLimitLayer` and `LoadShedLayer` do this job (see
//! [`crate::layers`]). [`ConcurrencyLimit`] is the
//! thread-safe concurrency half alone, an atomic counter with RAII permits.

use crate::circuit_breaker::quantile;
use crate::rate_limiting::{LimitError, RateLimiter, TokenBucket};
use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The lesson's command-line name.
pub const NAME: &str = "load-shedding";
/// A short human title.
pub const TITLE: &str = "Load shedding: accept everything vs token bucket + concurrency limit";

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Above the admitted rate (the token bucket is empty).
    RateLimited,
    /// Too much work already in the system.
    Overloaded,
}

/// The door's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    Reject(Reason),
}

/// A token bucket plus a concurrency limit.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    bucket: TokenBucket,
    max_in_flight: usize,
    in_flight: usize,
}

impl LoadShedder {
    /// Admit at most one request per `period` (bursts of `burst`) and at most
    /// `max_in_flight` at a time.
    pub fn new(burst: u64, period: Duration, max_in_flight: usize) -> Result<Self, LimitError> {
        if max_in_flight == 0 {
            return Err(LimitError::ZeroLimit);
        }
        Ok(Self {
            bucket: TokenBucket::new(burst, period)?,
            max_in_flight,
            in_flight: 0,
        })
    }

    /// Admit or reject a request arriving at `now`. The concurrency check
    /// comes first so a rejected request does not spend a token.
    pub fn check(&mut self, now: Duration) -> Admission {
        if self.in_flight >= self.max_in_flight {
            return Admission::Reject(Reason::Overloaded);
        }
        if !self.bucket.check(now).is_allowed() {
            return Admission::Reject(Reason::RateLimited);
        }
        self.in_flight += 1;
        Admission::Admit
    }

    /// An admitted request finished.
    pub fn done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// A thread-safe concurrency limit: `try_acquire` gives a permit while fewer
/// than `max` are held; dropping the permit releases it.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    held: AtomicUsize,
}

/// A held slot of a [`ConcurrencyLimit`].
#[derive(Debug)]
pub struct Permit<'a>(&'a ConcurrencyLimit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: AtomicUsize::new(0),
        }
    }

    /// A permit, or `None` if `max` are held (shed the request).
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h < self.max).then_some(h + 1)
            })
            .ok()
            .map(|_| Permit(self))
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// What one overload run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ShedResult {
    pub arrivals: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Accepted requests that finished after the client's deadline.
    pub late: usize,
    /// Requests answered successfully within the deadline, per second.
    pub goodput_per_s: f64,
}

/// Discrete-event simulation on a virtual clock: Poisson arrivals at
/// `arrival_rate` per second for `duration` into a server of `workers`
/// FIFO workers, each job taking an exponential time of mean `mean_service`.
/// `shedder` decides admission (None: accept everything).
pub fn simulate(
    seed: u64,
    duration: Duration,
    arrival_rate: f64,
    workers: usize,
    mean_service: Duration,
    deadline: Duration,
    mut shedder: Option<LoadShedder>,
) -> ShedResult {
    let mut rng = StdRng::seed_from_u64(seed);
    // Worker free times (min-heap) and completion times of admitted work.
    let mut free: BinaryHeap<Reverse<Duration>> = (0..workers.max(1))
        .map(|_| Reverse(Duration::ZERO))
        .collect();
    let mut completions: BinaryHeap<Reverse<Duration>> = BinaryHeap::new();
    let mut latencies = Vec::new();
    let (mut arrivals, mut rejected, mut late) = (0, 0, 0);
    let mut now = Duration::ZERO;
    loop {
        now += Duration::from_secs_f64(-(1.0 - rng.random::<f64>()).ln() / arrival_rate.max(1e-9));
        let service =
            Duration::from_secs_f64(-(1.0 - rng.random::<f64>()).ln() * mean_service.as_secs_f64());
        if now >= duration {
            break;
        }
        arrivals += 1;
        while completions.peek().is_some_and(|c| c.0 <= now) {
            completions.pop();
            if let Some(s) = shedder.as_mut() {
                s.done();
            }
        }
        if let Some(s) = shedder.as_mut() {
            if s.check(now) != Admission::Admit {
                rejected += 1;
                continue;
            }
        }
        let Some(Reverse(worker_free)) = free.pop() else {
            break;
        };
        let finish = worker_free.max(now) + service;
        free.push(Reverse(finish));
        completions.push(Reverse(finish));
        let latency = finish - now;
        late += (latency > deadline) as usize;
        latencies.push(latency.as_secs_f64() * 1000.0);
    }
    let accepted = latencies.len();
    ShedResult {
        arrivals,
        accepted,
        rejected,
        p50_ms: quantile(&mut latencies, 0.5),
        p99_ms: quantile(&mut latencies, 0.99),
        late,
        goodput_per_s: (accepted - late) as f64 / duration.as_secs_f64().max(1e-9),
    }
}

/// The experiment: 8 workers at 10 ms mean service (800/s capacity), 1,200
/// arrivals/s (1.5x overload) for `seconds`, clients giving up after 1 s.
pub fn lesson_with(seed: u64, seconds: u64) -> LessonReport {
    let duration = Duration::from_secs(seconds);
    let (workers, service, deadline, rate) =
        (8, Duration::from_millis(10), Duration::from_secs(1), 1200.0);
    let naive = simulate(seed, duration, rate, workers, service, deadline, None);
    // Admit 760/s (95 % of capacity) with bursts of 40, at most 24 in the
    // system (8 in service, 16 waiting).
    let shedder = match LoadShedder::new(40, Duration::from_secs(1) / 760, 24) {
        Ok(s) => s,
        Err(e) => return LessonReport::new(NAME, TITLE).notes(format!("bad settings: {e}")),
    };
    let opt = simulate(
        seed,
        duration,
        rate,
        workers,
        service,
        deadline,
        Some(shedder),
    );
    let mut r = LessonReport::new(NAME, TITLE);
    for (side, s) in [(false, &naive), (true, &opt)] {
        let put =
            |r: LessonReport, k: &str, v: f64| if side { r.optimal(k, v) } else { r.naive(k, v) };
        r = put(r, "p99_ms", s.p99_ms);
        r = put(r, "p50_ms", s.p50_ms);
        r = put(r, "rejected", s.rejected as f64);
        r = put(r, "accepted", s.accepted as f64);
        r = put(r, "arrivals", s.arrivals as f64);
        r = put(r, "late_after_1s", s.late as f64);
        r = put(r, "goodput_per_s", s.goodput_per_s);
    }
    r.notes(format!(
        "{rate:.0} requests/s arrive at a server that can do 800/s for {seconds}s. Accepting everything queues the excess: \
         accepted p99 reaches {:.0} ms and {} answers come after the client's 1 s deadline, so only {:.0}/s are useful. \
         The token bucket (760/s, burst 40) plus a limit of 24 requests in the system rejects {} at the door in no time, \
         keeps accepted p99 at {:.0} ms and serves {:.0} useful answers/s. Rejection is the honest answer: the client \
         can back off (with jitter) or go to another replica. At fleet scale the same idea appears as adaptive \
         concurrency (Envoy's adaptive_concurrency filter, Netflix concurrency-limits), priority-aware shedding, and \
         autoscaling to add capacity behind it.",
        naive.p99_ms,
        naive.late,
        naive.goodput_per_s,
        opt.rejected,
        opt.p99_ms,
        opt.goodput_per_s,
    ))
}

/// The full experiment: 30 s of overload, about 36,000 requests.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Barrier;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn shedder_checks_concurrency_then_rate() {
        assert!(LoadShedder::new(1, ms(10), 0).is_err());
        assert!(LoadShedder::new(0, ms(10), 1).is_err());
        let mut s = LoadShedder::new(2, ms(10), 2).unwrap();
        assert_eq!(s.check(ms(0)), Admission::Admit);
        assert_eq!(s.check(ms(0)), Admission::Admit);
        assert_eq!(s.check(ms(0)), Admission::Reject(Reason::Overloaded));
        s.done();
        s.done();
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.check(ms(5)), Admission::Reject(Reason::RateLimited));
        assert_eq!(s.check(ms(10)), Admission::Admit);
    }

    #[test]
    fn concurrency_limit_holds_under_real_threads() {
        let limit = ConcurrencyLimit::new(3);
        let peak = AtomicUsize::new(0);
        let (ok, shed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let barrier = Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..200 {
                        match limit.try_acquire() {
                            Some(_p) => {
                                peak.fetch_max(limit.held(), Ordering::AcqRel);
                                ok.fetch_add(1, Ordering::Relaxed);
                                std::thread::yield_now();
                            }
                            None => {
                                shed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Acquire) <= 3);
        assert_eq!(limit.held(), 0, "every permit released");
        assert_eq!(
            ok.load(Ordering::Relaxed) + shed.load(Ordering::Relaxed),
            1600
        );
    }

    #[test]
    fn shedding_keeps_the_tail_short_under_overload() {
        let r = lesson_with(42, 5);
        let (n, o) = (&r.naive, &r.optimal);
        assert_eq!(n["rejected"], 0.0);
        assert!(n["p99_ms"] > 500.0, "{}", r.table());
        assert!(o["p99_ms"] < 100.0, "{}", r.table());
        assert!(o["rejected"] > 0.2 * o["arrivals"], "{}", r.table());
        assert!(o["goodput_per_s"] > n["goodput_per_s"], "{}", r.table());
    }

    proptest! {
        /// The shedder never has more than max_in_flight admitted at once.
        #[test]
        fn in_flight_never_exceeds_the_limit(ops in proptest::collection::vec((0u64..5, any::<bool>()), 1..300)) {
            let mut s = LoadShedder::new(5, ms(2), 4).unwrap();
            let mut t = 0;
            let mut held = 0usize;
            for (dt, finish) in ops {
                t += dt;
                if finish && held > 0 {
                    s.done();
                    held -= 1;
                } else if s.check(ms(t)) == Admission::Admit {
                    held += 1;
                }
                prop_assert!(held <= 4);
                prop_assert_eq!(held, s.in_flight());
            }
        }
    }
}
