//! Backpressure: a bounded queue (or a semaphore) between a fast producer and
//! a slow consumer.
//!
//! **The pattern.** A producer hands work to a consumer through a queue. When
//! the producer is faster than the consumer for long enough (overload), the
//! queue has to absorb the difference somewhere.
//!
//! **The naive way** is an unbounded queue ([`UnboundedQueue`], like
//! `std::sync::mpsc::channel`): `push` never waits, so under overload the
//! queue grows by (arrival rate - service rate) items every second. Memory
//! grows without limit, and every item waits behind all the others: the
//! latency from enqueue to processed grows linearly with time, until the
//! process runs out of memory or every answer comes too late to matter.
//!
//! **The optimal way** is a bounded queue ([`BoundedQueue`], like
//! `std::sync::mpsc::sync_channel(n)` or `tokio::sync::mpsc::channel(n)`):
//! `push` blocks while `n` items wait. The producer is slowed to the
//! consumer's pace (backpressure travels upstream, where it can be turned
//! into a shed request, a 429 or a slower reader of the socket), the queue
//! never holds more than `n` items, and queueing latency is at most `n`
//! service times. A [`Semaphore`] of `n` permits does the same around any
//! resource: acquire before enqueueing, release when the item is processed,
//! so at most `n` are in flight.
//!
//! Both are hand-written here with a `Mutex` and `Condvar`s: `push` and
//! `pop` are O(1) (a `VecDeque`), a waiting thread sleeps on a condition
//! variable instead of spinning.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "semaphore-backpressure";
/// A short human title.
pub const TITLE: &str = "Backpressure: an unbounded queue against a bounded queue and a semaphore";

/// Locks `m`, recovering the data if another thread panicked while holding
/// it (the queues keep no invariant a panic could break half-way).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors of the queues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is closed")]
    Closed,
    #[error("a bounded queue needs a capacity of at least 1")]
    ZeroCapacity,
}

struct QueueState<T> {
    items: VecDeque<T>,
    closed: bool,
    max_len: usize,
}

impl<T> QueueState<T> {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
            closed: false,
            max_len: 0,
        }
    }
}

/// The naive queue: `push` never waits, so it grows without limit.
pub struct UnboundedQueue<T> {
    state: Mutex<QueueState<T>>,
    not_empty: Condvar,
}

impl<T> Default for UnboundedQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> UnboundedQueue<T> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(QueueState::new()),
            not_empty: Condvar::new(),
        }
    }

    /// Appends `item` at once. Err if the queue is closed.
    pub fn push(&self, item: T) -> Result<(), QueueError> {
        let mut s = lock(&self.state);
        if s.closed {
            return Err(QueueError::Closed);
        }
        s.items.push_back(item);
        s.max_len = s.max_len.max(s.items.len());
        drop(s);
        self.not_empty.notify_one();
        Ok(())
    }

    /// The oldest item, waiting while the queue is empty; None once it is
    /// closed and drained.
    pub fn pop(&self) -> Option<T> {
        let mut s = lock(&self.state);
        loop {
            if let Some(item) = s.items.pop_front() {
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.not_empty.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more pushes; `pop` drains what is left, then returns None.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.not_empty.notify_all();
    }

    pub fn len(&self) -> usize {
        lock(&self.state).items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items it ever held at once.
    pub fn max_len(&self) -> usize {
        lock(&self.state).max_len
    }
}

/// The optimal queue: `push` waits while `capacity` items are queued.
pub struct BoundedQueue<T> {
    state: Mutex<QueueState<T>>,
    capacity: usize,
    not_empty: Condvar,
    not_full: Condvar,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Result<Self, QueueError> {
        if capacity == 0 {
            return Err(QueueError::ZeroCapacity);
        }
        Ok(Self {
            state: Mutex::new(QueueState::new()),
            capacity,
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        })
    }

    /// Appends `item`, waiting while the queue is full (this wait is the
    /// backpressure). Err if the queue is (or gets) closed.
    pub fn push(&self, item: T) -> Result<(), QueueError> {
        let mut s = lock(&self.state);
        while s.items.len() >= self.capacity && !s.closed {
            s = self.not_full.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.closed {
            return Err(QueueError::Closed);
        }
        s.items.push_back(item);
        s.max_len = s.max_len.max(s.items.len());
        drop(s);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Appends `item` if there is room; gives it back if the queue is full
    /// or closed (the "shed instead of wait" variant).
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let mut s = lock(&self.state);
        if s.closed || s.items.len() >= self.capacity {
            return Err(item);
        }
        s.items.push_back(item);
        s.max_len = s.max_len.max(s.items.len());
        drop(s);
        self.not_empty.notify_one();
        Ok(())
    }

    /// The oldest item, waiting while the queue is empty; None once it is
    /// closed and drained.
    pub fn pop(&self) -> Option<T> {
        let mut s = lock(&self.state);
        loop {
            if let Some(item) = s.items.pop_front() {
                drop(s);
                self.not_full.notify_one();
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.not_empty.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more pushes (waiting pushers get Err); `pop` drains what is left.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        lock(&self.state).items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items it ever held at once (never above the capacity).
    pub fn max_len(&self) -> usize {
        lock(&self.state).max_len
    }
}

/// A counting semaphore: at most `permits` holders at once.
pub struct Semaphore {
    permits: Mutex<usize>,
    available: Condvar,
}

/// One permit; released when dropped.
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.sem.release_one();
    }
}

impl Permit<'_> {
    /// Gives the permit up without releasing it (release it later with
    /// [`Semaphore::release_one`], e.g. from another thread).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Semaphore {
    pub fn new(permits: usize) -> Self {
        Self {
            permits: Mutex::new(permits),
            available: Condvar::new(),
        }
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut p = lock(&self.permits);
        while *p == 0 {
            p = self.available.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        *p -= 1;
        Permit { sem: self }
    }

    /// A permit if one is free now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut p = lock(&self.permits);
        if *p == 0 {
            return None;
        }
        *p -= 1;
        Some(Permit { sem: self })
    }

    /// A permit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        let deadline = Instant::now() + timeout;
        let mut p = lock(&self.permits);
        while *p == 0 {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            p = self
                .available
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *p -= 1;
        Some(Permit { sem: self })
    }

    /// Adds one permit back (what dropping a [`Permit`] does).
    pub fn release_one(&self) {
        *lock(&self.permits) += 1;
        self.available.notify_one();
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        *lock(&self.permits)
    }
}

/// How a producer and a consumer are connected in the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// [`UnboundedQueue`]: the naive way.
    Unbounded,
    /// [`BoundedQueue`] of this capacity.
    Bounded(usize),
    /// [`UnboundedQueue`] behind a [`Semaphore`] of this many permits: at
    /// most that many items queued or being processed.
    Semaphore(usize),
}

/// The shape of the overload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overload {
    /// Items the producer offers.
    pub items: usize,
    /// Mean time between two offered items (exponential gaps from the seed).
    pub arrival_gap: Duration,
    /// Time the consumer spends on one item (busy work).
    pub service_time: Duration,
    /// Payload bytes per item.
    pub payload: usize,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PipeStats {
    pub processed: usize,
    pub max_queue_len: usize,
    /// Peak queue memory: `max_queue_len` items of payload plus header.
    pub bytes: usize,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub max_latency_ms: f64,
    /// Total time the producer spent waiting for room.
    pub producer_blocked_ms: f64,
    pub total_ms: f64,
}

struct Item {
    enqueued: Instant,
    payload: Vec<u8>,
}

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// The `q`-quantile (0..=1) of sorted values, 0 if empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs one producer (offering items at seeded exponential gaps, open loop:
/// late items are sent at once) and one consumer through `pipe`.
pub fn run_pipe(pipe: Pipe, load: Overload, seed: u64) -> Result<PipeStats, QueueError> {
    // The arrival schedule, the same for every pipe with the same seed.
    let mut rng = StdRng::seed_from_u64(seed);
    let mean = load.arrival_gap.as_secs_f64();
    let mut at = 0.0f64;
    let schedule: Vec<Duration> = (0..load.items)
        .map(|_| {
            let u: f64 = rng.random_range(1e-9..1.0);
            at += -mean * u.ln();
            Duration::from_secs_f64(at)
        })
        .collect();

    let unbounded = UnboundedQueue::<Item>::new();
    let bounded = match pipe {
        Pipe::Bounded(n) => Some(BoundedQueue::<Item>::new(n)?),
        _ => None,
    };
    let sem = match pipe {
        Pipe::Semaphore(0) => return Err(QueueError::ZeroCapacity),
        Pipe::Semaphore(n) => Some(Semaphore::new(n)),
        _ => None,
    };
    let start = Instant::now();
    let (latencies, blocked) = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut lat = Vec::with_capacity(load.items);
            loop {
                let item = match &bounded {
                    Some(q) => q.pop(),
                    None => unbounded.pop(),
                };
                let Some(item) = item else { break };
                spin_for(load.service_time);
                std::hint::black_box(&item.payload);
                lat.push(item.enqueued.elapsed().as_secs_f64() * 1e3);
                if let Some(sem) = &sem {
                    sem.release_one();
                }
            }
            lat
        });
        let mut blocked = Duration::ZERO;
        for due in &schedule {
            let now = start.elapsed();
            if *due > now {
                std::thread::sleep(*due - now);
            }
            let t = Instant::now();
            if let Some(sem) = &sem {
                sem.acquire().forget();
            }
            let item = Item {
                enqueued: Instant::now(),
                payload: vec![0xAB; load.payload],
            };
            // The latency clock starts just before the push, so for the
            // bounded queue it includes the wait for one free slot.
            let sent = match &bounded {
                Some(q) => q.push(item),
                None => unbounded.push(item),
            };
            blocked += t.elapsed();
            if sent.is_err() {
                break;
            }
        }
        match &bounded {
            Some(q) => q.close(),
            None => unbounded.close(),
        }
        let lat = consumer.join().unwrap_or_default();
        (lat, blocked)
    });
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut lat = latencies;
    lat.sort_by(f64::total_cmp);
    let max_queue_len = match &bounded {
        Some(q) => q.max_len(),
        None => unbounded.max_len(),
    };
    Ok(PipeStats {
        processed: lat.len(),
        max_queue_len,
        bytes: max_queue_len * (load.payload + std::mem::size_of::<Item>()),
        p50_latency_ms: quantile(&lat, 0.5),
        p99_latency_ms: quantile(&lat, 0.99),
        max_latency_ms: lat.last().copied().unwrap_or(0.0),
        producer_blocked_ms: blocked.as_secs_f64() * 1e3,
        total_ms,
    })
}

/// The experiment: the same overload through an unbounded queue, a bounded
/// queue of `capacity` and a semaphore of `capacity` permits.
pub fn lesson_with(seed: u64, load: Overload, capacity: usize) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let runs = (
        run_pipe(Pipe::Unbounded, load, seed),
        run_pipe(Pipe::Bounded(capacity), load, seed),
        run_pipe(Pipe::Semaphore(capacity), load, seed),
    );
    let (naive, bounded, sem) = match runs {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return report.notes(format!("bad parameters: {e}"))
        }
    };
    let offered = 1.0 / load.arrival_gap.as_secs_f64().max(1e-12);
    let served = 1.0 / load.service_time.as_secs_f64().max(1e-12);
    report
        .both("max_queue_len", naive.max_queue_len as f64, bounded.max_queue_len as f64)
        .both("p99_latency_ms", naive.p99_latency_ms, bounded.p99_latency_ms)
        .both("p50_latency_ms", naive.p50_latency_ms, bounded.p50_latency_ms)
        .both("max_latency_ms", naive.max_latency_ms, bounded.max_latency_ms)
        .both("bytes", naive.bytes as f64, bounded.bytes as f64)
        .both("processed", naive.processed as f64, bounded.processed as f64)
        .both("producer_blocked_ms", naive.producer_blocked_ms, bounded.producer_blocked_ms)
        .both("total_ms", naive.total_ms, bounded.total_ms)
        .both("offered_per_s", offered, offered)
        .both("service_per_s", served, served)
        .optimal("capacity", capacity as f64)
        .optimal("max_queue_len_semaphore", sem.max_queue_len as f64)
        .optimal("p99_latency_ms_semaphore", sem.p99_latency_ms)
        .optimal("bytes_semaphore", sem.bytes as f64)
        .notes(format!(
            "The producer offers {offered:.0} items/s to a consumer that serves {served:.0}/s. The unbounded queue \
             accepts everything, so it peaks at {} items ({:.1} MB) and the p99 item waits {:.0} ms behind the \
             backlog, a number that keeps growing as long as the overload lasts. The bounded queue of {capacity} (and \
             the semaphore of {capacity} permits) never holds more than {capacity}, keeping p99 near capacity x \
             service time ({:.1} ms); the overload shows up instead as {:.0} ms the producer spent blocked, which is \
             where a server turns it into shed load or a 429. Across machines the same idea is a Kafka topic with \
             consumer lag alerts and per-partition quotas, or gRPC/HTTP2 flow-control windows and Envoy's \
             max-pending-requests circuit breaker.",
            naive.max_queue_len,
            naive.bytes as f64 / 1e6,
            naive.p99_latency_ms,
            bounded.p99_latency_ms,
            bounded.producer_blocked_ms,
        ))
}

/// The full-size experiment: 8,000 items of 1 KiB offered at 40,000/s to a
/// consumer serving 10,000/s, through queues of 64 (about 1 s per run).
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        Overload {
            items: 8_000,
            arrival_gap: Duration::from_micros(25),
            service_time: Duration::from_micros(100),
            payload: 1024,
        },
        64,
    )
}

#[cfg(test)]
mod tests;
