//! Rate limiting (system-design Q1): fixed window against sliding log,
//! sliding-window counter, token bucket and GCRA.
//!
//! **The contract.** "At most `limit` requests per `window`" for one key
//! (a user, an API token, an IP).
//!
//! **The naive way** is a [`FixedWindow`] counter: one counter per
//! calendar window (`now / window`), reset when the window changes. O(1)
//! time and memory, but the windows are aligned to the clock, not to the
//! requests: `limit` requests just before a boundary and `limit` just after
//! are all allowed, so **2x the limit** gets through in one window's length.
//!
//! **The optimal ways**, each a trade-off:
//! - [`SlidingLog`]: keep the timestamp of every allowed request of the last
//!   window; allow if fewer than `limit`. Exact (never more than `limit` in
//!   any window, never a wrong rejection) but O(limit) memory per key.
//! - [`SlidingWindowCounter`] (Cloudflare, Redis recipes): two counters, the
//!   current and the previous fixed window, and the estimate
//!   `previous * (1 - elapsed/window) + current`. O(1) memory; it assumes the
//!   previous window's requests were spread evenly, so it is a little off
//!   both ways (a few extra allowed, a few wrongly rejected).
//! - [`TokenBucket`]: a bucket of `burst` tokens refilled at `rate`; a
//!   request takes one. A different contract: never more than
//!   `burst + rate * t` in any interval of length `t`, so with a small burst
//!   it smooths traffic (and rejects bursts a window limit would allow).
//! - [`Gcra`] (the Generic Cell Rate Algorithm, ATM networks; `governor`,
//!   redis-cell): the same decisions as the token bucket from a single
//!   timestamp, the *theoretical arrival time* `tat`: allow at `now` if
//!   `now >= tat - tau` (with emission interval `T = 1/rate` and tolerance
//!   `tau = T * (burst - 1)`), then `tat = max(tat, now) + T`. One `u64` per
//!   key, O(1).
//!
//! Every limiter implements [`RateLimiter`]: `check(now) -> Decision`, with
//! the clock injected as `now` (a [`Duration`] since an epoch, see
//! [`crate::circuit_breaker::Clock`]). A service keeps one limiter per key
//! (a `HashMap<Key, Gcra>`); [`RateLimitLayer`](crate::layers::RateLimitLayer)
//! does that as a `tower` layer, answering an error that maps to HTTP 429
//! with `Retry-After` on [`Decision::Deny`].

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::time::Duration;

pub use crate::circuit_breaker::{Clock, ManualClock, MonotonicClock};

/// The lesson's command-line name.
pub const NAME: &str = "rate-limiting";
/// A short human title.
pub const TITLE: &str =
    "Rate limiting: fixed window vs sliding log, sliding counter, token bucket, GCRA";

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Rejected; a retry is worth it after `retry_after` (HTTP 429's
    /// `Retry-After`).
    Deny {
        retry_after: Duration,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Bad limiter settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("limit/burst must be positive")]
    ZeroLimit,
    #[error("window/period must be positive")]
    ZeroWindow,
}

/// One key's limiter. `now` must not go backwards (an earlier `now` is
/// treated as equal to the latest seen).
pub trait RateLimiter {
    fn check(&mut self, now: Duration) -> Decision;
    /// Approximate bytes of state this limiter keeps for its key.
    fn state_bytes(&self) -> usize;
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The naive limiter: a counter per calendar window.
#[derive(Debug, Clone)]
pub struct FixedWindow {
    limit: u64,
    window: u64,
    current: u64,
    count: u64,
}

impl FixedWindow {
    pub fn new(limit: u64, window: Duration) -> Result<Self, LimitError> {
        check_args(limit, window)?;
        Ok(Self {
            limit,
            window: nanos(window),
            current: 0,
            count: 0,
        })
    }
}

fn check_args(limit: u64, window: Duration) -> Result<(), LimitError> {
    if limit == 0 {
        return Err(LimitError::ZeroLimit);
    }
    if window.is_zero() {
        return Err(LimitError::ZeroWindow);
    }
    Ok(())
}

impl RateLimiter for FixedWindow {
    fn check(&mut self, now: Duration) -> Decision {
        let idx = nanos(now) / self.window;
        if idx > self.current {
            self.current = idx;
            self.count = 0;
        }
        if self.count < self.limit {
            self.count += 1;
            Decision::Allow
        } else {
            Decision::Deny {
                retry_after: Duration::from_nanos(
                    (self.current + 1) * self.window
                        - nanos(now).min((self.current + 1) * self.window),
                ),
            }
        }
    }
    fn state_bytes(&self) -> usize {
        16
    }
}

/// Exact sliding window: the timestamps of the allowed requests of the last
/// window.
#[derive(Debug, Clone)]
pub struct SlidingLog {
    limit: u64,
    window: u64,
    log: VecDeque<u64>,
}

impl SlidingLog {
    pub fn new(limit: u64, window: Duration) -> Result<Self, LimitError> {
        check_args(limit, window)?;
        Ok(Self {
            limit,
            window: nanos(window),
            log: VecDeque::new(),
        })
    }
}

impl RateLimiter for SlidingLog {
    fn check(&mut self, now: Duration) -> Decision {
        let now = nanos(now);
        // Requests at or before now - window have left the window (now - window, now].
        while self.log.front().is_some_and(|&t| t + self.window <= now) {
            self.log.pop_front();
        }
        if (self.log.len() as u64) < self.limit {
            self.log.push_back(now);
            Decision::Allow
        } else {
            let oldest = self.log.front().copied().unwrap_or(now);
            Decision::Deny {
                retry_after: Duration::from_nanos((oldest + self.window).saturating_sub(now)),
            }
        }
    }
    fn state_bytes(&self) -> usize {
        self.log.capacity() * 8 + 24
    }
}

/// The two-counter approximation of a sliding window.
#[derive(Debug, Clone)]
pub struct SlidingWindowCounter {
    limit: u64,
    window: u64,
    current: u64,
    count: u64,
    previous: u64,
}

impl SlidingWindowCounter {
    pub fn new(limit: u64, window: Duration) -> Result<Self, LimitError> {
        check_args(limit, window)?;
        Ok(Self {
            limit,
            window: nanos(window),
            current: 0,
            count: 0,
            previous: 0,
        })
    }
}

impl RateLimiter for SlidingWindowCounter {
    fn check(&mut self, now: Duration) -> Decision {
        let now = nanos(now);
        let idx = now / self.window;
        if idx > self.current {
            self.previous = if idx == self.current + 1 {
                self.count
            } else {
                0
            };
            self.current = idx;
            self.count = 0;
        }
        let elapsed = now.saturating_sub(self.current * self.window) as f64;
        let weight = 1.0 - elapsed / self.window as f64;
        let estimate = self.previous as f64 * weight + self.count as f64;
        if estimate < self.limit as f64 {
            self.count += 1;
            Decision::Allow
        } else {
            Decision::Deny {
                retry_after: Duration::from_nanos(self.window / self.limit.max(1)),
            }
        }
    }
    fn state_bytes(&self) -> usize {
        24
    }
}

/// A token bucket: `burst` tokens, one more every `period`. Tokens are kept
/// in "nanoseconds of credit" (tokens * period), so there is no rounding.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    period: u64,
    capacity: u64,
    credit: u64,
    last: u64,
}

impl TokenBucket {
    /// `burst` tokens at most, refilled one per `period` (rate = 1/period).
    pub fn new(burst: u64, period: Duration) -> Result<Self, LimitError> {
        check_args(burst, period)?;
        let p = nanos(period);
        let capacity = burst.saturating_mul(p);
        Ok(Self {
            period: p,
            capacity,
            credit: capacity,
            last: 0,
        })
    }

    /// Whole tokens available at the last check.
    pub fn tokens(&self) -> u64 {
        self.credit / self.period
    }
}

impl RateLimiter for TokenBucket {
    fn check(&mut self, now: Duration) -> Decision {
        let now = nanos(now).max(self.last);
        self.credit = self
            .credit
            .saturating_add(now - self.last)
            .min(self.capacity);
        self.last = now;
        if self.credit >= self.period {
            self.credit -= self.period;
            Decision::Allow
        } else {
            Decision::Deny {
                retry_after: Duration::from_nanos(self.period - self.credit),
            }
        }
    }
    fn state_bytes(&self) -> usize {
        16
    }
}

/// The Generic Cell Rate Algorithm: a token bucket as one timestamp.
#[derive(Debug, Clone)]
pub struct Gcra {
    /// Emission interval T.
    period: u64,
    /// Tolerance tau = T * (burst - 1).
    tau: u64,
    /// Theoretical arrival time; `None` before the first request.
    tat: Option<u64>,
}

impl Gcra {
    /// `burst` requests at once, then one per `period`.
    pub fn new(burst: u64, period: Duration) -> Result<Self, LimitError> {
        check_args(burst, period)?;
        let p = nanos(period);
        Ok(Self {
            period: p,
            tau: p.saturating_mul(burst - 1),
            tat: None,
        })
    }

    /// True when the limiter at `now` is in the same state as a new one (a
    /// full burst available), so a keyed map may drop it.
    pub fn is_idle(&self, now: Duration) -> bool {
        self.tat.is_none_or(|tat| tat <= nanos(now))
    }
}

impl RateLimiter for Gcra {
    fn check(&mut self, now: Duration) -> Decision {
        let now = nanos(now);
        let tat = self.tat.unwrap_or(now);
        let earliest = tat.saturating_sub(self.tau);
        if now < earliest {
            Decision::Deny {
                retry_after: Duration::from_nanos(earliest - now),
            }
        } else {
            self.tat = Some(tat.max(now) + self.period);
            Decision::Allow
        }
    }
    fn state_bytes(&self) -> usize {
        8
    }
}

/// What a limiter did to a stream of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitStats {
    pub allowed: u64,
    pub rejected: u64,
    /// Most allowed requests in any half-open interval of one window's length.
    pub max_burst_allowed: u64,
    /// Rejections although fewer than `limit` requests had been allowed in
    /// the window before them.
    pub wrongly_rejected: u64,
    pub state_bytes: usize,
}

/// Runs `limiter` over `times` (sorted) and scores it against the sliding
/// window `limit` per `window`.
pub fn score(
    limiter: &mut dyn RateLimiter,
    times: &[Duration],
    limit: u64,
    window: Duration,
) -> LimitStats {
    let w = nanos(window);
    let mut allowed: Vec<u64> = Vec::new();
    let (mut rejected, mut wrong, mut max_burst, mut lo) = (0, 0, 0, 0usize);
    for &t in times {
        let now = nanos(t);
        // The true count: allowed requests in (now - w, now].
        while lo < allowed.len() && allowed[lo] + w <= now {
            lo += 1;
        }
        let in_window = (allowed.len() - lo) as u64;
        if limiter.check(t).is_allowed() {
            allowed.push(now);
            max_burst = max_burst.max(in_window + 1);
        } else {
            rejected += 1;
            if in_window < limit {
                wrong += 1;
            }
        }
    }
    LimitStats {
        allowed: allowed.len() as u64,
        rejected,
        max_burst_allowed: max_burst,
        wrongly_rejected: wrong,
        state_bytes: limiter.state_bytes(),
    }
}

/// The request stream: steady Poisson traffic at `background` of the limit,
/// plus, every few windows, a burst of `limit` requests just before a window
/// boundary and another `limit` just after (the fixed window's weak spot).
pub fn workload(
    seed: u64,
    limit: u64,
    window: Duration,
    windows: u64,
    background: f64,
) -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = window.as_secs_f64();
    let end = w * windows as f64;
    let mut times = Vec::new();
    let rate = background * limit as f64 / w;
    let mut t = 0.0;
    loop {
        t += -(1.0 - rng.random::<f64>()).ln() / rate.max(1e-9);
        if t >= end {
            break;
        }
        times.push(t);
    }
    let edge = w * 0.05;
    for k in (2..windows).step_by(4) {
        let b = k as f64 * w;
        for _ in 0..limit {
            times.push(b - rng.random::<f64>() * edge);
            times.push(b + rng.random::<f64>() * edge);
        }
    }
    times.sort_by(f64::total_cmp);
    times.into_iter().map(Duration::from_secs_f64).collect()
}

/// The experiment: `limit` per 1 s window over `windows` windows, every
/// limiter on the same requests.
pub fn lesson_with(seed: u64, limit: u64, windows: u64) -> LessonReport {
    let window = Duration::from_secs(1);
    let times = workload(seed, limit, window, windows, 0.6);
    let period = window / limit.max(1) as u32;
    let burst = (limit / 10).max(1);
    let run = |l: Result<Box<dyn RateLimiter>, LimitError>| {
        l.map(|mut l| score(l.as_mut(), &times, limit, window))
    };
    let boxed = |r: Result<Box<dyn RateLimiter>, LimitError>| r;
    let fixed = run(boxed(
        FixedWindow::new(limit, window).map(|l| Box::new(l) as _),
    ));
    let log = run(boxed(
        SlidingLog::new(limit, window).map(|l| Box::new(l) as _),
    ));
    let counter = run(boxed(
        SlidingWindowCounter::new(limit, window).map(|l| Box::new(l) as _),
    ));
    let bucket = run(boxed(
        TokenBucket::new(burst, period).map(|l| Box::new(l) as _),
    ));
    let gcra = run(boxed(Gcra::new(burst, period).map(|l| Box::new(l) as _)));
    let (fixed, log, counter, bucket, gcra) = match (fixed, log, counter, bucket, gcra) {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
        _ => {
            return LessonReport::new(NAME, TITLE)
                .notes("bad limiter settings: limit must be positive")
        }
    };
    let mut r = LessonReport::new(NAME, TITLE)
        .both("limit", limit as f64, limit as f64)
        .both("requests", times.len() as f64, times.len() as f64)
        .both(
            "max_burst_allowed",
            fixed.max_burst_allowed as f64,
            log.max_burst_allowed as f64,
        )
        .both(
            "wrongly_rejected",
            fixed.wrongly_rejected as f64,
            log.wrongly_rejected as f64,
        )
        .both("allowed", fixed.allowed as f64, log.allowed as f64)
        .both(
            "state_bytes",
            fixed.state_bytes as f64,
            log.state_bytes as f64,
        );
    for (name, s) in [
        ("sliding_counter", counter),
        ("token_bucket", bucket),
        ("gcra", gcra),
    ] {
        r = r
            .optimal(
                &format!("{name}_max_burst_allowed"),
                s.max_burst_allowed as f64,
            )
            .optimal(
                &format!("{name}_wrongly_rejected"),
                s.wrongly_rejected as f64,
            )
            .optimal(&format!("{name}_allowed"), s.allowed as f64)
            .optimal(&format!("{name}_state_bytes"), s.state_bytes as f64);
    }
    r.notes(format!(
        "Limit {limit} per second. The fixed window lets {} through in one second (bursts straddle its boundaries) and \
         never rejects wrongly; the sliding log (the main optimal column) is exact: at most {} in any second and 0 wrong \
         rejections, at {} bytes of timestamps per key. The two-counter sliding window keeps 24 bytes and is close \
         ({} max, {} wrongly rejected). The token bucket and GCRA (burst {burst}, one per {:?}) enforce a different, \
         smoother contract, burst + rate*t: at most {} in a second, and they reject the bursts a window would allow \
         ({} 'wrong' by the window's measure), with 8-16 bytes per key; GCRA and the bucket decide identically. Across \
         many servers the state moves to Redis (a Lua script or redis-cell's CL.THROTTLE doing GCRA atomically) or to \
         Envoy's global rate-limit service; per-node local limits cut the round trips.",
        fixed.max_burst_allowed,
        log.max_burst_allowed,
        log.state_bytes,
        counter.max_burst_allowed,
        counter.wrongly_rejected,
        period,
        gcra.max_burst_allowed,
        gcra.wrongly_rejected,
    ))
}

/// The full experiment: 100 requests per second over 200 seconds.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 100, 200)
}

#[cfg(test)]
mod tests;
