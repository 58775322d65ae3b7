//! A lock with a lease (TTL) is not enough to protect a write: fencing
//! tokens checked by the storage.
//!
//! **The pattern.** Clients take a lock from a lock service before a
//! read-modify-write on shared storage. The service must not wait forever
//! for a crashed holder, so the lock is a *lease*: it expires after a TTL.
//!
//! **The naive way**: TTL lock, no fencing. A careful client even checks
//! that its lease is still valid right before writing. It is still unsafe:
//! a process can stop for longer than the TTL *between* that check and the
//! write (a garbage-collection pause, a page fault on swapped memory, a VM
//! migration, a long network delay of the write packet). The lease expires,
//! another client takes the lock and writes, and then the paused one wakes
//! up and writes too, over the other's update. This is Martin Kleppmann's
//! critique of Redis's Redlock ("How to do distributed locking", 2016): no
//! timing assumption on the client side can rule it out.
//!
//! **The optimal way**: every grant of the lock comes with a *fencing
//! token*, a number that grows with every grant ([`LockService`]). The
//! client passes its token with every read and write, and the storage
//! ([`FencedStore`]) remembers the largest token it has seen and rejects any
//! request with a smaller one. The paused client's token is older than the
//! one the new holder already used, so its late write is refused. The
//! safety now rests on the storage, which sees every request in order, not
//! on clocks. ZooKeeper gives a token for free (the znode's `zxid` or
//! version), etcd the lease's revision; Redlock has none.
//!
//! Time is injected ([`Clock`], [`ManualClock`]), so the lease state machine
//! is tested deterministically and the lesson replays a scripted timeline:
//! every operation here is `O(1)`.

use crate::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The lesson's command-line name.
pub const NAME: &str = "distributed-lock";
/// A short human title.
pub const TITLE: &str = "Distributed lock: TTL lease alone vs fencing tokens checked by storage";

/// "Now", in milliseconds, from wherever the caller wants.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// A clock that moves only when told (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The real monotonic clock, counting from its creation.
#[derive(Debug)]
pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// A granted lock: who holds it, its fencing token, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: u64,
    pub token: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Default)]
struct LockState {
    holder: Option<Lease>,
    last_token: u64,
}

/// A lock service with leases and monotonic fencing tokens (what etcd or
/// ZooKeeper provide as a replicated service; here one process).
#[derive(Debug)]
pub struct LockService<C: Clock> {
    clock: C,
    ttl_ms: u64,
    state: Mutex<LockState>,
}

impl<C: Clock> LockService<C> {
    /// A service whose leases last `ttl_ms` (at least 1).
    pub fn new(clock: C, ttl_ms: u64) -> Self {
        Self {
            clock,
            ttl_ms: ttl_ms.max(1),
            state: Mutex::new(LockState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Grants the lock to `owner` if it is free or the holder's lease has
    /// expired, with a token larger than every earlier one.
    pub fn try_acquire(&self, owner: u64) -> Option<Lease> {
        let now = self.clock.now_ms();
        let mut st = self.state();
        if st.holder.as_ref().is_some_and(|h| now < h.expires_at_ms) {
            return None;
        }
        st.last_token += 1;
        let lease = Lease {
            owner,
            token: st.last_token,
            expires_at_ms: now + self.ttl_ms,
        };
        st.holder = Some(lease.clone());
        Some(lease)
    }

    /// Extends `lease` by a TTL from now if it is still the live one.
    pub fn renew(&self, lease: &Lease) -> Option<Lease> {
        let now = self.clock.now_ms();
        let mut st = self.state();
        match st.holder.as_mut() {
            Some(h) if h.token == lease.token && now < h.expires_at_ms => {
                h.expires_at_ms = now + self.ttl_ms;
                Some(h.clone())
            }
            _ => None,
        }
    }

    /// Whether `lease` is still the live one (what a careful client checks
    /// before writing; not enough on its own).
    pub fn is_valid(&self, lease: &Lease) -> bool {
        let now = self.clock.now_ms();
        self.state()
            .holder
            .as_ref()
            .is_some_and(|h| h.token == lease.token && now < h.expires_at_ms)
    }

    /// Releases `lease` if it is still the holder's; true if it was.
    pub fn release(&self, lease: &Lease) -> bool {
        let mut st = self.state();
        if st.holder.as_ref().is_some_and(|h| h.token == lease.token) {
            st.holder = None;
            true
        } else {
            false
        }
    }

    /// The largest token granted so far.
    pub fn last_token(&self) -> u64 {
        self.state().last_token
    }
}

/// A request refused because a newer token was already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fencing token {token} is older than {seen}, already seen")]
pub struct StaleToken {
    pub token: u64,
    pub seen: u64,
}

/// Shared storage holding one counter.
pub trait Store: Sync {
    /// Reads the value on behalf of the holder of `token`.
    fn read(&self, token: u64) -> Result<i64, StaleToken>;
    /// Writes the value on behalf of the holder of `token`.
    fn write(&self, token: u64, value: i64) -> Result<(), StaleToken>;
    /// The stored value (for the audit).
    fn value(&self) -> i64;
}

/// Storage that ignores tokens: last writer wins.
#[derive(Debug, Default)]
pub struct NaiveStore {
    value: Mutex<i64>,
}

impl Store for NaiveStore {
    fn read(&self, _token: u64) -> Result<i64, StaleToken> {
        Ok(self.value())
    }
    fn write(&self, _token: u64, value: i64) -> Result<(), StaleToken> {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = value;
        Ok(())
    }
    fn value(&self) -> i64 {
        *self.value.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Storage that remembers the largest token seen (on reads and writes) and
/// refuses requests with a smaller one.
#[derive(Debug, Default)]
pub struct FencedStore {
    inner: Mutex<(i64, u64)>,
}

impl FencedStore {
    fn check(&self, token: u64, write: Option<i64>) -> Result<i64, StaleToken> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (value, seen) = &mut *g;
        if token < *seen {
            return Err(StaleToken { token, seen: *seen });
        }
        *seen = token;
        if let Some(v) = write {
            *value = v;
        }
        Ok(*value)
    }

    /// The largest token seen.
    pub fn max_token(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl Store for FencedStore {
    fn read(&self, token: u64) -> Result<i64, StaleToken> {
        self.check(token, None)
    }
    fn write(&self, token: u64, value: i64) -> Result<(), StaleToken> {
        self.check(token, Some(value)).map(|_| ())
    }
    fn value(&self) -> i64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// The scripted timeline.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub clients: usize,
    /// Length of the timeline, in 1 ms ticks.
    pub ticks: u64,
    pub ttl_ms: u64,
    /// Work between reading and writing, drawn from `1..=max_work_ms`
    /// (kept below the TTL: without pauses every client finishes in time).
    pub max_work_ms: u64,
    /// Probability that a holder is paused right after its lease check,
    /// for 1 to 3 TTLs.
    pub pause_probability: f64,
}

/// What happened on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockStats {
    pub acquisitions: u64,
    pub pauses: u64,
    /// Writes the storage accepted.
    pub accepted_writes: u64,
    /// Accepted writes from a holder whose lease had expired and been
    /// granted to someone else (the dangerous ones).
    pub stale_writes: u64,
    /// Writes the storage refused (old token).
    pub rejected_writes: u64,
    /// Holders that saw their lease had expired before writing, and gave up.
    pub aborted_by_check: u64,
    /// Accepted increments missing from the counter (overwritten).
    pub lost_updates: u64,
}

enum ClientState {
    Idle {
        next_try: u64,
    },
    Working {
        lease: Lease,
        read: i64,
        done_at: u64,
    },
    Paused {
        lease: Lease,
        read: i64,
        wake_at: u64,
    },
}

/// Replays the scenario: every client loops acquire, read the counter,
/// work, check the lease, (maybe pause), write counter + 1, release. The
/// seed decides work times and pauses, so both stores see the same script.
pub fn simulate(store: &dyn Store, seed: u64, sc: Scenario) -> LockStats {
    let clock = Arc::new(ManualClock::new(0));
    let svc = LockService::new(Arc::clone(&clock), sc.ttl_ms);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients: Vec<ClientState> = (0..sc.clients.max(1))
        .map(|_| ClientState::Idle { next_try: 0 })
        .collect();
    let mut st = LockStats::default();
    let max_work = sc.max_work_ms.clamp(1, sc.ttl_ms.max(2) - 1);
    for t in 0..sc.ticks {
        clock.set(t);
        let n = clients.len();
        let first = rng.random_range(0..n);
        for k in 0..n {
            let id = (first + k) % n;
            let state = std::mem::replace(&mut clients[id], ClientState::Idle { next_try: t });
            clients[id] = match state {
                ClientState::Idle { next_try } if t >= next_try => match svc.try_acquire(id as u64)
                {
                    Some(lease) => {
                        st.acquisitions += 1;
                        match store.read(lease.token) {
                            Ok(read) => ClientState::Working {
                                lease,
                                read,
                                done_at: t + rng.random_range(1..=max_work),
                            },
                            Err(_) => ClientState::Idle { next_try: t + 1 },
                        }
                    }
                    None => ClientState::Idle { next_try: t + 1 },
                },
                ClientState::Working {
                    lease,
                    read,
                    done_at,
                } if t >= done_at => {
                    if !svc.is_valid(&lease) {
                        st.aborted_by_check += 1;
                        ClientState::Idle { next_try: t + 1 }
                    } else if rng.random_bool(sc.pause_probability.clamp(0.0, 1.0)) {
                        // Stop-the-world right after the check, before the write.
                        st.pauses += 1;
                        let pause = rng.random_range(sc.ttl_ms..=3 * sc.ttl_ms);
                        ClientState::Paused {
                            lease,
                            read,
                            wake_at: t + pause,
                        }
                    } else {
                        write(store, &svc, &lease, read, &mut st);
                        ClientState::Idle { next_try: t + 1 }
                    }
                }
                ClientState::Paused {
                    lease,
                    read,
                    wake_at,
                } if t >= wake_at => {
                    write(store, &svc, &lease, read, &mut st);
                    ClientState::Idle { next_try: t + 1 }
                }
                other => other,
            };
        }
    }
    st.lost_updates = st
        .accepted_writes
        .saturating_sub(store.value().max(0) as u64);
    st
}

fn write<C: Clock>(
    store: &dyn Store,
    svc: &LockService<C>,
    lease: &Lease,
    read: i64,
    st: &mut LockStats,
) {
    match store.write(lease.token, read + 1) {
        Ok(()) => {
            st.accepted_writes += 1;
            if svc.last_token() > lease.token {
                st.stale_writes += 1;
            }
        }
        Err(_) => st.rejected_writes += 1,
    }
    svc.release(lease);
}

/// The experiment at a chosen size.
pub fn lesson_with(seed: u64, sc: Scenario) -> LessonReport {
    let naive_store = NaiveStore::default();
    let n = simulate(&naive_store, seed, sc);
    let fenced = FencedStore::default();
    let o = simulate(&fenced, seed, sc);
    LessonReport::new(NAME, TITLE)
        .both("acquisitions", n.acquisitions as f64, o.acquisitions as f64)
        .both("pauses", n.pauses as f64, o.pauses as f64)
        .both("accepted_writes", n.accepted_writes as f64, o.accepted_writes as f64)
        .both("stale_writes", n.stale_writes as f64, o.stale_writes as f64)
        .both("rejected_writes", n.rejected_writes as f64, o.rejected_writes as f64)
        .both("aborted_by_lease_check", n.aborted_by_check as f64, o.aborted_by_check as f64)
        .both("lost_updates", n.lost_updates as f64, o.lost_updates as f64)
        .both("counter", naive_store.value() as f64, fenced.value() as f64)
        .notes(format!(
            "{} clients increment a shared counter under a lock with a {} ms lease over {} ms; {} times a \
             holder stopped (a GC pause, 1 to 3 TTLs) right after checking its lease was still valid. With \
             the TTL alone the storage accepted {} writes from holders whose lease had passed to someone \
             else, losing {} increments. With fencing tokens (the lock service hands out a growing number, \
             the storage rejects anything older than the largest it has seen) there were {} stale writes: \
             {} late writes were refused. This is Kleppmann's point against Redlock: safety cannot rest on \
             timing. Use a consensus-backed lock that gives tokens (ZooKeeper's zxid/znode version, etcd's \
             lease revision with a compare-and-swap on it) and storage that checks them.",
            sc.clients, sc.ttl_ms, sc.ticks, n.pauses, n.stale_writes, n.lost_updates, o.stale_writes, o.rejected_writes
        ))
}

/// The full-size experiment: 5 clients, 30 ms leases, 200 000 ms.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        Scenario {
            clients: 5,
            ticks: 200_000,
            ttl_ms: 30,
            max_work_ms: 10,
            pause_probability: 0.05,
        },
    )
}

#[cfg(test)]
mod tests;
