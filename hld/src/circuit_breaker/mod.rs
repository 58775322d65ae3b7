//! Circuit breaker (Hystrix, resilience4j): stop calling a dependency that is
//! failing, give it time to recover, then probe it carefully.
//!
//! **The naive way** calls the dependency on every request. When it fails by
//! hanging, every request waits out the full client timeout: latency
//! explodes, threads and connections pile up on the caller, and the sick
//! dependency gets the full load (plus retries) exactly when it can least
//! take it.
//!
//! **The optimal way** is a three-state machine in front of the call:
//! - *Closed*: calls go through; the outcomes of the last `window` calls are
//!   kept, and once there are at least `min_calls` of them and the failure
//!   rate reaches `failure_rate`, the breaker *trips*.
//! - *Open*: every call is rejected at once (a fallback, a cached answer or a
//!   fast 503) until `open_timeout` has passed: no calls reach the dependency.
//! - *Half-open*: at most `half_open_probes` trial calls are let through.
//!   If they all succeed the breaker closes (with a fresh window); the first
//!   failure trips it open again for another `open_timeout`.
//!
//! Each [`Decision::Allow`] carries a [`Permit`] stamped with the breaker's
//! generation; [`CircuitBreaker::record`] ignores results of calls admitted
//! in an earlier state (a slow call started while closed must not count as a
//! half-open probe). `check` and `record` are O(1) amortized; memory is the
//! window, O(window).
//!
//! The clock is injected: every method takes `now` as a [`Duration`] since
//! some epoch, read from a [`Clock`] ([`MonotonicClock`] in a service,
//! [`ManualClock`] in tests and simulations), so the state machine is tested
//! deterministically. In a service
//! [`CircuitBreakerLayer`](crate::layers::CircuitBreakerLayer) wraps this
//! type as a `tower` layer (`check` in `call`, `record` when the response
//! future resolves).

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "circuit-breaker";
/// A short human title.
pub const TITLE: &str = "Circuit breaker: calling a failing dependency vs closed/open/half-open";

/// A source of "now", as a duration since the clock's own epoch.
pub trait Clock {
    fn now(&self) -> Duration;
}

/// The real clock: time since it was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A fake clock that only moves when told to (shareable across threads).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: Duration) -> Self {
        Self(AtomicU64::new(start.as_nanos() as u64))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
    pub fn set(&self, to: Duration) {
        self.0.store(to.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// Bad breaker settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BreakerError {
    #[error("window and min_calls must be positive and min_calls <= window")]
    BadWindow,
    #[error("failure rate {0} must be in (0, 1]")]
    BadRate(f64),
    #[error("half-open needs at least one probe")]
    NoProbes,
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// How many recent outcomes the failure rate is computed over.
    pub window: usize,
    /// No trip before this many outcomes are in the window.
    pub min_calls: usize,
    /// Trip when failures / calls in the window reach this.
    pub failure_rate: f64,
    /// How long to stay open before probing.
    pub open_timeout: Duration,
    /// Trial calls in half-open; all must succeed to close.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_calls: 10,
            failure_rate: 0.5,
            open_timeout: Duration::from_secs(3),
            half_open_probes: 2,
        }
    }
}

/// The breaker's state as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Rejecting everything until `until`.
    Open {
        until: Duration,
    },
    HalfOpen,
}

/// Proof that a call was admitted, to hand back to [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permit {
    generation: u64,
}

/// What to do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    /// Do not call; try again after `retry_after` (zero when waiting on
    /// half-open probes in flight).
    Reject {
        retry_after: Duration,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// How an admitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A closed/open/half-open circuit breaker over a count-based window.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    state: State,
    generation: u64,
    outcomes: VecDeque<bool>,
    failures: usize,
    probes_admitted: u32,
    probe_successes: u32,
    trips: u64,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Result<Self, BreakerError> {
        if cfg.window == 0 || cfg.min_calls == 0 || cfg.min_calls > cfg.window {
            return Err(BreakerError::BadWindow);
        }
        if !(cfg.failure_rate > 0.0 && cfg.failure_rate <= 1.0) {
            return Err(BreakerError::BadRate(cfg.failure_rate));
        }
        if cfg.half_open_probes == 0 {
            return Err(BreakerError::NoProbes);
        }
        Ok(Self {
            cfg,
            state: State::Closed,
            generation: 0,
            outcomes: VecDeque::with_capacity(cfg.window),
            failures: 0,
            probes_admitted: 0,
            probe_successes: 0,
            trips: 0,
        })
    }

    /// The state at `now` (an open breaker whose timeout has passed reports
    /// half-open, which is what the next `check` will act on).
    pub fn state(&self, now: Duration) -> State {
        match self.state {
            State::Open { until } if now >= until => State::HalfOpen,
            s => s,
        }
    }

    /// How many times the breaker has tripped open.
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// Asks whether a call may go to the dependency now.
    pub fn check(&mut self, now: Duration) -> Decision {
        if let State::Open { until } = self.state {
            if now < until {
                return Decision::Reject {
                    retry_after: until - now,
                };
            }
            self.enter(State::HalfOpen);
        }
        match self.state {
            State::HalfOpen if self.probes_admitted >= self.cfg.half_open_probes => {
                Decision::Reject {
                    retry_after: Duration::ZERO,
                }
            }
            State::HalfOpen => {
                self.probes_admitted += 1;
                Decision::Allow(Permit {
                    generation: self.generation,
                })
            }
            _ => Decision::Allow(Permit {
                generation: self.generation,
            }),
        }
    }

    /// Reports how an admitted call ended. Results of calls admitted in an
    /// earlier state are ignored.
    pub fn record(&mut self, now: Duration, permit: Permit, outcome: Outcome) {
        if permit.generation != self.generation {
            return;
        }
        match self.state {
            State::Closed => {
                let failed = outcome == Outcome::Failure;
                self.outcomes.push_back(failed);
                self.failures += failed as usize;
                if self.outcomes.len() > self.cfg.window {
                    if let Some(old) = self.outcomes.pop_front() {
                        self.failures -= old as usize;
                    }
                }
                let n = self.outcomes.len();
                if n >= self.cfg.min_calls
                    && self.failures as f64 >= self.cfg.failure_rate * n as f64
                {
                    self.trip(now);
                }
            }
            State::HalfOpen => match outcome {
                Outcome::Failure => self.trip(now),
                Outcome::Success => {
                    self.probe_successes += 1;
                    if self.probe_successes >= self.cfg.half_open_probes {
                        self.enter(State::Closed);
                    }
                }
            },
            // Cannot happen (generations change on every transition), but a
            // late result while open is ignored anyway.
            State::Open { .. } => {}
        }
    }

    fn trip(&mut self, now: Duration) {
        self.trips += 1;
        self.enter(State::Open {
            until: now + self.cfg.open_timeout,
        });
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        self.outcomes.clear();
        self.failures = 0;
        self.probes_admitted = 0;
        self.probe_successes = 0;
    }
}

/// The dependency in the simulation: healthy calls take 5 ms plus an
/// exponential tail (mean 5 ms) and fail 0.5 % of the time; during the
/// outage every call hangs until the client's timeout.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub start: Duration,
    pub end: Duration,
    pub client_timeout: Duration,
}

impl Outage {
    fn call(&self, now: Duration, rng: &mut StdRng) -> (Duration, Outcome) {
        if now >= self.start && now < self.end {
            return (self.client_timeout, Outcome::Failure);
        }
        let ms = 5.0 - 5.0 * (1.0 - rng.random::<f64>()).ln();
        let outcome = if rng.random::<f64>() < 0.005 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        (
            Duration::from_secs_f64(ms / 1000.0).min(self.client_timeout),
            outcome,
        )
    }

    fn failing(&self, now: Duration) -> bool {
        now >= self.start && now < self.end
    }
}

/// What one run of the simulation measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    pub requests: usize,
    pub calls: usize,
    pub calls_to_failing_dependency: usize,
    pub rejected_fast: usize,
    pub successes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub trips: u64,
}

/// The `q` quantile (0..=1) of `values` (sorted in place), 0 if empty.
pub(crate) fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[i]
}

/// Discrete-event simulation on a virtual clock: Poisson arrivals at
/// `rate_per_s` for `duration`, each a call to the dependency, with or
/// without a breaker. A rejected call answers at once (a fallback).
pub fn simulate(
    seed: u64,
    duration: Duration,
    rate_per_s: f64,
    outage: Outage,
    breaker: Option<BreakerConfig>,
) -> Result<SimResult, BreakerError> {
    let mut breaker = breaker.map(CircuitBreaker::new).transpose()?;
    // The input, drawn up front so both runs see the same requests: arrival
    // times and what the dependency would do for each.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut input = Vec::new();
    let mut t = Duration::ZERO;
    loop {
        let gap = -(1.0 - rng.random::<f64>()).ln() / rate_per_s.max(1e-9);
        t += Duration::from_secs_f64(gap);
        if t >= duration {
            break;
        }
        input.push((t, outage.call(t, &mut rng)));
    }
    // Pending completions: (time, seq, permit, success).
    let mut pending: BinaryHeap<Reverse<(Duration, usize, Permit, bool)>> = BinaryHeap::new();
    let mut latencies = Vec::with_capacity(input.len());
    let (mut calls, mut failing_calls, mut rejected, mut successes) = (0, 0, 0, 0);
    for (seq, &(now, (lat, outcome))) in input.iter().enumerate() {
        while let Some(Reverse((t, _, permit, ok))) = pending.peek().copied() {
            if t > now {
                break;
            }
            pending.pop();
            if let Some(b) = breaker.as_mut() {
                let outcome = if ok {
                    Outcome::Success
                } else {
                    Outcome::Failure
                };
                b.record(t, permit, outcome);
            }
        }
        let decision = match breaker.as_mut() {
            Some(b) => b.check(now),
            None => Decision::Allow(Permit { generation: 0 }),
        };
        match decision {
            Decision::Reject { .. } => {
                rejected += 1;
                latencies.push(0.0);
            }
            Decision::Allow(permit) => {
                calls += 1;
                failing_calls += outage.failing(now) as usize;
                let ok = outcome == Outcome::Success;
                successes += ok as usize;
                latencies.push(lat.as_secs_f64() * 1000.0);
                pending.push(Reverse((now + lat, seq, permit, ok)));
            }
        }
    }
    let requests = latencies.len();
    Ok(SimResult {
        requests,
        calls,
        calls_to_failing_dependency: failing_calls,
        rejected_fast: rejected,
        successes,
        p50_ms: quantile(&mut latencies, 0.50),
        p99_ms: quantile(&mut latencies, 0.99),
        trips: breaker.map_or(0, |b| b.trips()),
    })
}

/// The experiment over `seconds` of virtual time at 50 requests/s; the
/// dependency hangs (500 ms client timeout) from 25 % to 50 % of the run.
pub fn lesson_with(seed: u64, seconds: u64) -> LessonReport {
    let duration = Duration::from_secs(seconds);
    let outage = Outage {
        start: duration / 4,
        end: duration / 2,
        client_timeout: Duration::from_millis(500),
    };
    let cfg = BreakerConfig::default();
    let naive = simulate(seed, duration, 50.0, outage, None);
    let opt = simulate(seed, duration, 50.0, outage, Some(cfg));
    let (naive, opt) = match (naive, opt) {
        (Ok(n), Ok(o)) => (n, o),
        (Err(e), _) | (_, Err(e)) => {
            return LessonReport::new(NAME, TITLE).notes(format!("bad breaker settings: {e}"))
        }
    };
    let rate = |r: &SimResult| r.successes as f64 / r.requests.max(1) as f64;
    LessonReport::new(NAME, TITLE)
        .both(
            "calls_to_failing_dependency",
            naive.calls_to_failing_dependency as f64,
            opt.calls_to_failing_dependency as f64,
        )
        .both("p99_ms", naive.p99_ms, opt.p99_ms)
        .both("p50_ms", naive.p50_ms, opt.p50_ms)
        .both("requests", naive.requests as f64, opt.requests as f64)
        .both("calls", naive.calls as f64, opt.calls as f64)
        .both("rejected_fast", naive.rejected_fast as f64, opt.rejected_fast as f64)
        .both("success_rate", rate(&naive), rate(&opt))
        .optimal("trips", opt.trips as f64)
        .notes(format!(
            "For {}s of the {seconds}s run the dependency hangs until the 500 ms client timeout. Without a breaker every \
             request in that stretch calls it ({} calls) and waits the full timeout, so p99 is the timeout; the breaker \
             trips once half of the last {} calls (at least {}) failed, answers at once while open, and lets {} probe(s) through \
             every {}s, so only {} calls reach the sick dependency and p99 stays at the healthy latency. The success \
             rate is about the same (the dependency is down either way; a little lower with the breaker, which keeps \
             rejecting for up to one open timeout after recovery): the win is latency, freed threads, and a dependency \
             left alone to recover. Across many instances a service mesh (Envoy outlier detection, Istio) ejects bad \
             hosts for every caller at once, and resilience4j or Polly add time-based windows and slow-call rates.",
            (outage.end - outage.start).as_secs(),
            naive.calls_to_failing_dependency,
            cfg.window,
            cfg.min_calls,
            cfg.half_open_probes,
            cfg.open_timeout.as_secs(),
            opt.calls_to_failing_dependency,
        ))
}

/// The full experiment: 120 s of virtual time, about 6,000 requests.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 120)
}

#[cfg(test)]
mod tests;
