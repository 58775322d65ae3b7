//! Chaos engineering (Netflix Chaos Monkey, Latency Monkey): inject faults
//! on purpose and measure whether the client survives them.
//!
//! **The setup.** A client calls a service of three replicas through a
//! random pick. A fault injector adds, on a seeded schedule, *errors* (a
//! call fails fast), *latency* (a call takes seconds longer) and *kills*
//! (a replica is down for a while; calls to it hang). A request succeeds if
//! the client has a good answer within its 1 s deadline.
//!
//! **The naive client** has no protection: one attempt, no timeout of its
//! own. Every error is a failed request, every slow call blows the deadline,
//! and every call to a killed replica hangs until the connection gives up.
//!
//! **The protected client** combines the three pieces of this crate:
//! a per-attempt timeout (a hung call is abandoned after 150 ms), retries
//! with full-jitter backoff ([`crate::retry_jitter::Backoff`]) within the
//! deadline, and a circuit breaker per replica
//! ([`crate::circuit_breaker::CircuitBreaker`]) so a killed replica is
//! skipped instead of waited on. Retries go to another replica when one is
//! available. Each piece fixes one fault: timeouts bound the latency, retries
//! mask the errors, breakers route around the kills.
//!
//! The experiment is a discrete-event simulation on a virtual clock, the
//! same request arrivals and fault schedule for both clients.

use crate::circuit_breaker::{quantile, BreakerConfig, CircuitBreaker, Decision, Outcome, Permit};
use crate::report::LessonReport;
use crate::retry_jitter::{Backoff, Strategy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// The lesson's command-line name.
pub const NAME: &str = "chaos";
/// A short human title.
pub const TITLE: &str = "Chaos: an unprotected client vs timeouts + jittered retries + breakers";

/// The fault injector's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a call fails fast with an error.
    pub error_rate: f64,
    /// Probability that a call gets `extra_latency` added.
    pub latency_rate: f64,
    pub extra_latency: Duration,
    /// Kills per replica over the run, each lasting 5 to 15 s.
    pub kills_per_replica: usize,
    /// How long a call to a killed replica hangs before the connection fails.
    pub hang: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.10,
            latency_rate: 0.10,
            extra_latency: Duration::from_secs(2),
            kills_per_replica: 3,
            hang: Duration::from_secs(30),
        }
    }
}

/// How the client protects itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// Per-attempt timeout (None: wait as long as the call takes).
    pub attempt_timeout: Option<Duration>,
    /// Calls per request, first try included.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Strategy,
    /// A breaker per replica (None: no breakers).
    pub breaker: Option<BreakerConfig>,
}

impl ClientConfig {
    /// One attempt, no timeout, no breaker.
    pub fn unprotected() -> Self {
        Self {
            attempt_timeout: None,
            max_attempts: 1,
            backoff: Strategy::Immediate,
            breaker: None,
        }
    }

    /// 150 ms timeouts, 4 attempts with full jitter (10 ms base, 100 ms cap),
    /// a breaker per replica.
    pub fn protected() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_millis(150)),
            max_attempts: 4,
            backoff: Strategy::Full,
            breaker: Some(BreakerConfig {
                window: 10,
                min_calls: 5,
                failure_rate: 0.6,
                open_timeout: Duration::from_secs(2),
                half_open_probes: 1,
            }),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosResult {
    pub requests: usize,
    pub successes: usize,
    pub calls: usize,
    pub calls_to_killed_replicas: usize,
    /// Time to the final answer (success or failure), per request.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl ChaosResult {
    pub fn success_rate(&self) -> f64 {
        self.successes as f64 / self.requests.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Attempt {
        req: usize,
    },
    Done {
        req: usize,
        replica: usize,
        permit: Option<Permit>,
        ok: bool,
    },
}

/// Kill intervals per replica: `kills` windows of 5-15 s in `duration`.
fn kill_schedule(
    rng: &mut StdRng,
    replicas: usize,
    kills: usize,
    duration: Duration,
) -> Vec<Vec<(Duration, Duration)>> {
    (0..replicas)
        .map(|_| {
            (0..kills)
                .map(|_| {
                    let start = duration.mul_f64(rng.random::<f64>() * 0.9);
                    (
                        start,
                        start + Duration::from_millis(rng.random_range(5_000..15_000)),
                    )
                })
                .collect()
        })
        .collect()
}

/// Runs `rate_per_s` requests per second for `duration` against 3 replicas
/// under `faults`, with the client protected as `client` says.
pub fn simulate(
    seed: u64,
    duration: Duration,
    rate_per_s: f64,
    faults: Faults,
    client: ClientConfig,
    deadline: Duration,
) -> ChaosResult {
    const REPLICAS: usize = 3;
    let mut rng = StdRng::seed_from_u64(seed);
    let kills = kill_schedule(&mut rng, REPLICAS, faults.kills_per_replica, duration);
    let killed = |r: usize, t: Duration| kills[r].iter().any(|&(a, b)| t >= a && t < b);
    let mut arrivals = Vec::new();
    let mut t = Duration::ZERO;
    loop {
        t += Duration::from_secs_f64(-(1.0 - rng.random::<f64>()).ln() / rate_per_s.max(1e-9));
        if t >= duration {
            break;
        }
        arrivals.push(t);
    }
    // Per-call randomness (faults, picks, jitter) on its own stream.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A0_5EED);
    let mut breakers: Vec<Option<CircuitBreaker>> = (0..REPLICAS)
        .map(|_| client.breaker.and_then(|c| CircuitBreaker::new(c).ok()))
        .collect();
    let base = Duration::from_millis(10);
    let proto = Backoff::new(client.backoff, base, Duration::from_millis(100)).ok();
    let mut backoff: Vec<Option<Backoff>> = vec![proto; arrivals.len()];
    let mut attempts = vec![0u32; arrivals.len()];
    let mut last_replica = vec![usize::MAX; arrivals.len()];
    let mut finished: Vec<Option<Duration>> = vec![None; arrivals.len()];
    let mut events: BinaryHeap<Reverse<(Duration, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    for (req, &at) in arrivals.iter().enumerate() {
        seq += 1;
        events.push(Reverse((at, seq, Event::Attempt { req })));
    }
    let (mut successes, mut calls, mut killed_calls) = (0, 0, 0);
    while let Some(Reverse((now, _, ev))) = events.pop() {
        match ev {
            Event::Attempt { req } => {
                attempts[req] += 1;
                // A random replica whose breaker admits the call, preferring
                // one other than the last tried.
                let start = rng.random_range(0..REPLICAS);
                let mut chosen = None;
                for k in 0..REPLICAS {
                    let r = (start + k) % REPLICAS;
                    if r == last_replica[req] && k + 1 < REPLICAS {
                        continue;
                    }
                    match breakers[r].as_mut().map(|b| b.check(now)) {
                        None => chosen = Some((r, None)),
                        Some(Decision::Allow(p)) => chosen = Some((r, Some(p))),
                        Some(Decision::Reject { .. }) => continue,
                    }
                    break;
                }
                let Some((r, permit)) = chosen else {
                    // Every breaker is open: fail this attempt at once.
                    seq += 1;
                    events.push(Reverse((
                        now,
                        seq,
                        Event::Done {
                            req,
                            replica: usize::MAX,
                            permit: None,
                            ok: false,
                        },
                    )));
                    continue;
                };
                calls += 1;
                last_replica[req] = r;
                let (mut latency, mut ok) = if killed(r, now) {
                    killed_calls += 1;
                    (faults.hang, false)
                } else if rng.random::<f64>() < faults.error_rate {
                    (Duration::from_millis(5), false)
                } else {
                    let ms = 10.0 - 10.0 * (1.0 - rng.random::<f64>()).ln();
                    (Duration::from_secs_f64(ms / 1000.0), true)
                };
                if ok && rng.random::<f64>() < faults.latency_rate {
                    latency += faults.extra_latency;
                }
                if let Some(to) = client.attempt_timeout {
                    if latency > to {
                        latency = to;
                        ok = false;
                    }
                }
                seq += 1;
                events.push(Reverse((
                    now + latency,
                    seq,
                    Event::Done {
                        req,
                        replica: r,
                        permit,
                        ok,
                    },
                )));
            }
            Event::Done {
                req,
                replica,
                permit,
                ok,
            } => {
                if let (Some(Some(b)), Some(p)) = (breakers.get_mut(replica), permit) {
                    b.record(
                        now,
                        p,
                        if ok {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        },
                    );
                }
                let started = arrivals[req];
                if ok {
                    if now - started <= deadline {
                        successes += 1;
                    }
                    finished[req] = Some(now - started);
                    continue;
                }
                let delay = backoff[req]
                    .as_mut()
                    .map_or(Duration::ZERO, |b| b.next_delay(&mut rng));
                if attempts[req] < client.max_attempts && now + delay - started < deadline {
                    seq += 1;
                    events.push(Reverse((now + delay, seq, Event::Attempt { req })));
                } else {
                    finished[req] = Some(now - started);
                }
            }
        }
    }
    let mut times: Vec<f64> = finished
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ChaosResult {
        requests: arrivals.len(),
        successes,
        calls,
        calls_to_killed_replicas: killed_calls,
        p50_ms: quantile(&mut times, 0.5),
        p99_ms: quantile(&mut times, 0.99),
    }
}

/// The experiment: 50 requests/s for `seconds` under the default faults,
/// a 1 s deadline, the unprotected against the protected client.
pub fn lesson_with(seed: u64, seconds: u64) -> LessonReport {
    let (d, rate, faults, deadline) = (
        Duration::from_secs(seconds),
        50.0,
        Faults::default(),
        Duration::from_secs(1),
    );
    let naive = simulate(seed, d, rate, faults, ClientConfig::unprotected(), deadline);
    let opt = simulate(seed, d, rate, faults, ClientConfig::protected(), deadline);
    let mut r = LessonReport::new(NAME, TITLE);
    for (side, s) in [(false, &naive), (true, &opt)] {
        let put =
            |r: LessonReport, k: &str, v: f64| if side { r.optimal(k, v) } else { r.naive(k, v) };
        r = put(r, "success_rate", s.success_rate());
        r = put(r, "requests", s.requests as f64);
        r = put(r, "calls", s.calls as f64);
        r = put(
            r,
            "calls_per_request",
            s.calls as f64 / s.requests.max(1) as f64,
        );
        r = put(
            r,
            "calls_to_killed_replicas",
            s.calls_to_killed_replicas as f64,
        );
        r = put(r, "p50_ms", s.p50_ms);
        r = put(r, "p99_ms", s.p99_ms);
    }
    r.notes(format!(
        "The injector fails {:.0} % of calls, delays {:.0} % by {} s and kills each of 3 replicas {} times for 5-15 s. \
         The unprotected client succeeds {:.1} % of the time: every error, delay and call to a dead replica (which hangs \
         {} s) is a failed request. Timeouts (150 ms), up to 4 attempts with full jitter on another replica, and a \
         breaker per replica lift it to {:.1} % for {:.2} calls per request, and the breakers keep calls to dead replicas \
         at {} instead of {}. Production chaos moves to real infrastructure: Chaos Monkey or AWS Fault Injection \
         Service kill instances, Toxiproxy or Envoy fault filters inject latency and errors, and the resilience lives \
         in a service mesh (Envoy retries with budgets, outlier detection) rather than in each client.",
        faults.error_rate * 100.0,
        faults.latency_rate * 100.0,
        faults.extra_latency.as_secs(),
        faults.kills_per_replica,
        naive.success_rate() * 100.0,
        faults.hang.as_secs(),
        opt.success_rate() * 100.0,
        opt.calls as f64 / opt.requests.max(1) as f64,
        opt.calls_to_killed_replicas,
        naive.calls_to_killed_replicas,
    ))
}

/// The full experiment: 300 s of virtual time, about 15,000 requests.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_means_everything_succeeds() {
        let none = Faults {
            error_rate: 0.0,
            latency_rate: 0.0,
            kills_per_replica: 0,
            ..Faults::default()
        };
        for c in [ClientConfig::unprotected(), ClientConfig::protected()] {
            let r = simulate(
                1,
                Duration::from_secs(20),
                20.0,
                none,
                c,
                Duration::from_secs(1),
            );
            assert_eq!(r.successes, r.requests);
            assert_eq!(r.calls, r.requests, "no retries without failures");
        }
    }

    #[test]
    fn errors_alone_are_masked_by_retries() {
        let errors = Faults {
            error_rate: 0.3,
            latency_rate: 0.0,
            kills_per_replica: 0,
            ..Faults::default()
        };
        let d = Duration::from_secs(20);
        let n = simulate(
            2,
            d,
            20.0,
            errors,
            ClientConfig::unprotected(),
            Duration::from_secs(1),
        );
        let o = simulate(
            2,
            d,
            20.0,
            errors,
            ClientConfig::protected(),
            Duration::from_secs(1),
        );
        assert!((n.success_rate() - 0.7).abs() < 0.06, "{n:?}");
        // Four attempts: 1 - 0.3^4 = 99.2 %.
        assert!(o.success_rate() > 0.97, "{o:?}");
    }

    #[test]
    fn protection_survives_the_chaos() {
        let r = lesson_with(42, 300);
        let (n, o) = (&r.naive, &r.optimal);
        assert!(n["success_rate"] < 0.8, "{}", r.table());
        assert!(o["success_rate"] > 0.95, "{}", r.table());
        assert!(
            o["calls_to_killed_replicas"] < 0.5 * n["calls_to_killed_replicas"],
            "{}",
            r.table()
        );
        assert!(
            o["p99_ms"] <= 1000.0 && n["p99_ms"] > 1000.0,
            "{}",
            r.table()
        );
    }

    #[test]
    fn simulation_is_deterministic() {
        let d = Duration::from_secs(30);
        let a = simulate(
            5,
            d,
            30.0,
            Faults::default(),
            ClientConfig::protected(),
            Duration::from_secs(1),
        );
        let b = simulate(
            5,
            d,
            30.0,
            Faults::default(),
            ClientConfig::protected(),
            Duration::from_secs(1),
        );
        assert_eq!(a, b);
    }
}
