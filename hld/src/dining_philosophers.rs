//! Dining philosophers: deadlock from lock order, and two ways to rule it
//! out.
//!
//! **The pattern.** `n` philosophers sit at a round table with one fork
//! between each pair; eating needs both neighbouring forks. Forks are locks,
//! philosophers are threads: any code that takes two locks (two accounts in
//! a transfer, two rows, two shards) has the same problem.
//!
//! **The naive way** ([`Strategy::LeftThenRight`]): each takes the left fork,
//! then the right. If all take their left fork at the same moment, each
//! waits for a fork its neighbour holds: a cycle in the wait-for graph, a
//! deadlock, and nobody eats again. The lesson makes the unlucky schedule
//! certain: in the first round every philosopher takes its first fork and
//! waits at a `Barrier` before reaching for the second (the same schedule is
//! imposed on every strategy).
//!
//! **Detection and recovery.** Locks are taken with `try_lock` loops that
//! publish "philosopher p waits for fork f" and "fork f is held by q". A
//! watchdog thread ([`find_wait_cycle`], O(n) per check) looks for a cycle
//! p -> holder of the fork p waits for -> ...; a cycle that persists, with
//! no meal eaten, for `stall_timeout` is a deadlock. The watchdog then sets
//! an abort flag, every philosopher gives up its forks and returns, and the
//! scope joins them all: no hung thread, no leaked thread.
//!
//! **The optimal ways** make the cycle impossible. [`Strategy::OrderedForks`]
//! (resource ordering): everyone takes the lower-numbered fork first, so the
//! last philosopher reaches for fork 0 before fork n-1 and the ring can
//! never close; the rule databases and kernels use for lock hierarchies.
//! [`Strategy::Waiter`]: a semaphore admits at most `n - 1` philosophers to
//! the table, and `n - 1` people sharing `n` forks always leave one of them
//! able to eat (pigeonhole). Both eat continuously with 0 deadlocks.

use crate::report::LessonReport;
use crate::semaphore_backpressure::{Permit, Semaphore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "dining-philosophers";
/// A short human title.
pub const TITLE: &str =
    "Dining philosophers: left-then-right deadlock against ordered forks and a waiter";

/// "Nobody" in the published wait-for state.
const NONE: usize = usize::MAX;

/// How a philosopher picks up forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Left fork (`i`), then right (`i + 1 mod n`): can deadlock.
    LeftThenRight,
    /// Lower-numbered fork first: no cycle is possible.
    OrderedForks,
    /// Left then right, but only after a waiter (a semaphore of `n - 1`
    /// permits) admits the philosopher to the table.
    Waiter,
}

/// The forks philosopher `i` of `n` takes, in the order it takes them.
pub fn forks_for(strategy: Strategy, i: usize, n: usize) -> (usize, usize) {
    let (left, right) = (i % n.max(1), (i + 1) % n.max(1));
    match strategy {
        Strategy::LeftThenRight | Strategy::Waiter => (left, right),
        Strategy::OrderedForks => (left.min(right), left.max(right)),
    }
}

/// A cycle in the wait-for graph, if there is one: philosopher `p` waits
/// for the fork `waiting_for[p]`, held by `holder[fork]`. Returns the
/// philosophers on the cycle in wait order, starting from the lowest.
pub fn find_wait_cycle(holder: &[usize], waiting_for: &[usize]) -> Option<Vec<usize>> {
    let n = waiting_for.len();
    let next = |p: usize| -> Option<usize> {
        let f = *waiting_for.get(p)?;
        let q = *holder.get(f)?;
        (q < n).then_some(q)
    };
    for start in 0..n {
        // Walk at most n edges; a cycle through `start` returns to it.
        let mut p = start;
        let mut path = vec![start];
        for _ in 0..n {
            match next(p) {
                Some(q) if q == start => {
                    let lo = path.iter().enumerate().min_by_key(|(_, &x)| x)?.0;
                    path.rotate_left(lo);
                    return Some(path);
                }
                Some(q) => {
                    p = q;
                    path.push(q);
                }
                None => break,
            }
        }
    }
    None
}

/// Errors of [`dine`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DinnerError {
    #[error("a table needs at least 2 philosophers, got {0}")]
    TooFew(usize),
}

/// The dinner's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dinner {
    pub philosophers: usize,
    /// How long the dinner lasts (the "fixed time" meals are counted in).
    pub duration: Duration,
    /// A wait-for cycle with no meal for this long is a deadlock.
    pub stall_timeout: Duration,
    /// Time spent eating (holding both forks).
    pub eat: Duration,
    /// Mean time spent thinking between meals (seeded jitter, 0.5x to 1.5x).
    pub think: Duration,
}

/// What one dinner did.
#[derive(Debug, Clone, PartialEq)]
pub struct DinnerOutcome {
    /// Meals eaten by each philosopher.
    pub meals: Vec<u64>,
    /// The watchdog found a deadlock (and aborted the dinner).
    pub deadlocked: bool,
    /// When, after the start.
    pub detected_after: Option<Duration>,
    /// The philosophers on the wait-for cycle it found.
    pub cycle: Vec<usize>,
    /// Wall time until every thread was joined.
    pub elapsed: Duration,
}

impl DinnerOutcome {
    pub fn total_meals(&self) -> u64 {
        self.meals.iter().sum()
    }
}

/// Shared table state.
struct Table {
    forks: Vec<Mutex<()>>,
    holder: Vec<AtomicUsize>,
    waiting_for: Vec<AtomicUsize>,
    meals: Vec<AtomicU64>,
    abort: AtomicBool,
    end: Instant,
}

/// A held fork: clears its published holder before unlocking.
struct Held<'a> {
    _guard: MutexGuard<'a, ()>,
    holder: &'a AtomicUsize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Runs before the guard (a field) is dropped, so the fork never
        // looks free while still locked.
        self.holder.store(NONE, Ordering::SeqCst);
    }
}

impl Table {
    fn stop(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || Instant::now() >= self.end
    }

    fn try_take(&self, p: usize, f: usize) -> Option<Held<'_>> {
        let guard = match self.forks[f].try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.holder[f].store(p, Ordering::SeqCst);
        Some(Held {
            _guard: guard,
            holder: &self.holder[f],
        })
    }

    /// Takes fork `f` for `p`, polling with `try_lock` (publishing the
    /// wait) until it is free or the dinner is aborted or over.
    fn take(&self, p: usize, f: usize) -> Option<Held<'_>> {
        self.waiting_for[p].store(f, Ordering::SeqCst);
        let got = loop {
            // Stop first: after an abort, a fork freed by a neighbour that
            // gave up must not turn into a meal.
            if self.stop() {
                break None;
            }
            if let Some(h) = self.try_take(p, f) {
                break Some(h);
            }
            std::thread::sleep(Duration::from_micros(20));
        };
        self.waiting_for[p].store(NONE, Ordering::SeqCst);
        got
    }

    fn admit<'s>(&self, sem: &'s Semaphore) -> Option<Permit<'s>> {
        loop {
            if let Some(p) = sem.acquire_timeout(Duration::from_millis(1)) {
                return Some(p);
            }
            if self.stop() {
                return None;
            }
        }
    }

    fn snapshot(&self) -> (Vec<usize>, Vec<usize>) {
        let load = |v: &[AtomicUsize]| v.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        (load(&self.holder), load(&self.waiting_for))
    }

    fn total_meals(&self) -> u64 {
        self.meals.iter().map(|m| m.load(Ordering::SeqCst)).sum()
    }
}

fn pause(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

/// One philosopher's life.
fn philosopher(
    table: &Table,
    strategy: Strategy,
    p: usize,
    barrier: &Barrier,
    sem: &Semaphore,
    cfg: &Dinner,
    seed: u64,
) {
    let n = table.forks.len();
    let (first, second) = forks_for(strategy, p, n);
    let mut rng = StdRng::seed_from_u64(seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // First round: everyone reaches for the waiter and the first fork (no
    // waiting), then all meet at the barrier. Under LeftThenRight every
    // philosopher now holds its left fork: the deadlock is certain.
    let waiter = strategy == Strategy::Waiter;
    let mut permit = if waiter { sem.try_acquire() } else { None };
    let mut held_first = if !waiter || permit.is_some() {
        table.try_take(p, first)
    } else {
        None
    };
    barrier.wait();
    while !table.stop() {
        let _seat = if waiter {
            match permit.take() {
                Some(s) => Some(s),
                None => match table.admit(sem) {
                    Some(s) => Some(s),
                    None => break,
                },
            }
        } else {
            None
        };
        let a = match held_first.take() {
            Some(h) => h,
            None => match table.take(p, first) {
                Some(h) => h,
                None => break,
            },
        };
        let Some(b) = table.take(p, second) else {
            break; // `a` and the seat are released on the way out
        };
        pause(cfg.eat);
        table.meals[p].fetch_add(1, Ordering::SeqCst);
        drop(b);
        drop(a);
        drop(_seat);
        let think = cfg.think.mul_f64(rng.random_range(0.5..1.5));
        pause(think);
    }
}

/// Runs one dinner with a watchdog; returns when every thread has been
/// joined (at the latest shortly after `duration`).
pub fn dine(strategy: Strategy, cfg: Dinner, seed: u64) -> Result<DinnerOutcome, DinnerError> {
    let n = cfg.philosophers;
    if n < 2 {
        return Err(DinnerError::TooFew(n));
    }
    let start = Instant::now();
    let table = Table {
        forks: (0..n).map(|_| Mutex::new(())).collect(),
        holder: (0..n).map(|_| AtomicUsize::new(NONE)).collect(),
        waiting_for: (0..n).map(|_| AtomicUsize::new(NONE)).collect(),
        meals: (0..n).map(|_| AtomicU64::new(0)).collect(),
        abort: AtomicBool::new(false),
        end: start + cfg.duration,
    };
    let sem = Semaphore::new(n - 1);
    let barrier = Barrier::new(n);
    let done = AtomicUsize::new(0);
    let mut detected: Option<(Duration, Vec<usize>)> = None;
    std::thread::scope(|s| {
        for p in 0..n {
            let (table, barrier, sem, cfg, done) = (&table, &barrier, &sem, &cfg, &done);
            s.spawn(move || {
                philosopher(table, strategy, p, barrier, sem, cfg, seed);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // The watchdog: a cycle that stays, with no meal eaten, for
        // stall_timeout is a deadlock.
        let mut suspect: Option<(Instant, u64)> = None;
        while done.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(1));
            if detected.is_some() {
                continue;
            }
            let (holder, waiting) = table.snapshot();
            match (find_wait_cycle(&holder, &waiting), suspect) {
                (None, _) => suspect = None,
                (Some(_), None) => suspect = Some((Instant::now(), table.total_meals())),
                (Some(cycle), Some((since, meals))) => {
                    if table.total_meals() != meals {
                        suspect = None;
                    } else if since.elapsed() >= cfg.stall_timeout {
                        detected = Some((start.elapsed(), cycle));
                        // Recovery: everyone drops its forks and returns.
                        table.abort.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    let (detected_after, cycle) = match detected {
        Some((t, c)) => (Some(t), c),
        None => (None, Vec::new()),
    };
    Ok(DinnerOutcome {
        meals: table
            .meals
            .iter()
            .map(|m| m.load(Ordering::SeqCst))
            .collect(),
        deadlocked: detected_after.is_some(),
        detected_after,
        cycle,
        elapsed: start.elapsed(),
    })
}

/// Totals over several dinners with one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Trials {
    pub trials: usize,
    pub deadlocks: usize,
    pub meals: u64,
    /// The fewest meals any philosopher ate in any trial (starvation).
    pub min_meals: u64,
    /// Mean time to detect a deadlock, ms (0 if none).
    pub detect_ms: f64,
    pub elapsed_ms: f64,
}

/// Runs `trials` dinners (seeds `seed`, `seed + 1`, ...).
pub fn run_trials(
    strategy: Strategy,
    cfg: Dinner,
    trials: usize,
    seed: u64,
) -> Result<Trials, DinnerError> {
    let t = Instant::now();
    let mut out = Trials {
        trials,
        deadlocks: 0,
        meals: 0,
        min_meals: u64::MAX,
        detect_ms: 0.0,
        elapsed_ms: 0.0,
    };
    for i in 0..trials {
        let d = dine(strategy, cfg, seed.wrapping_add(i as u64))?;
        out.meals += d.total_meals();
        out.min_meals = out
            .min_meals
            .min(d.meals.iter().copied().min().unwrap_or(0));
        if let Some(at) = d.detected_after {
            out.deadlocks += 1;
            out.detect_ms += at.as_secs_f64() * 1e3;
        }
    }
    if out.deadlocks > 0 {
        out.detect_ms /= out.deadlocks as f64;
    }
    if trials == 0 {
        out.min_meals = 0;
    }
    out.elapsed_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// The experiment: `trials` dinners of each strategy.
pub fn lesson_with(seed: u64, cfg: Dinner, trials: usize) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let runs = (
        run_trials(Strategy::LeftThenRight, cfg, trials, seed),
        run_trials(Strategy::OrderedForks, cfg, trials, seed),
        run_trials(Strategy::Waiter, cfg, trials, seed),
    );
    let (naive, ordered, waiter) = match runs {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return report.notes(format!("bad parameters: {e}"))
        }
    };
    let ms = cfg.duration.as_secs_f64() * 1e3;
    report
        .both("philosophers", cfg.philosophers as f64, cfg.philosophers as f64)
        .both("trials", trials as f64, trials as f64)
        .both("dinner_ms", ms, ms)
        .both(
            "deadlocks",
            naive.deadlocks as f64,
            (ordered.deadlocks + waiter.deadlocks) as f64,
        )
        .both("meals", naive.meals as f64, ordered.meals as f64)
        .both("min_meals", naive.min_meals as f64, ordered.min_meals as f64)
        .both("elapsed_ms", naive.elapsed_ms, ordered.elapsed_ms)
        .naive("detect_ms", naive.detect_ms)
        .optimal("deadlocks_ordered", ordered.deadlocks as f64)
        .optimal("deadlocks_waiter", waiter.deadlocks as f64)
        .optimal("meals_ordered", ordered.meals as f64)
        .optimal("meals_waiter", waiter.meals as f64)
        .optimal("min_meals_waiter", waiter.min_meals as f64)
        .notes(format!(
            "With every philosopher holding its left fork before reaching right, left-then-right deadlocked in {} of \
             {trials} dinners: the watchdog found the wait-for cycle after {:.0} ms on average, aborted, and every \
             thread gave its fork back and was joined ({} meals in all). Taking the lower-numbered fork first \
             ({} meals, {} deadlocks) or a waiter admitting n-1 ({} meals, {} deadlocks) makes the cycle \
             impossible under the very same schedule. Across machines the same rules hold for distributed locks: \
             acquire in a global order (sorted keys, as in Spanner/CockroachDB lock ordering), or detect cycles and \
             abort a victim (what PostgreSQL and MySQL do), and give every lease a timeout (etcd, ZooKeeper).",
            naive.deadlocks,
            naive.detect_ms,
            naive.meals,
            ordered.meals,
            ordered.deadlocks,
            waiter.meals,
            waiter.deadlocks,
        ))
}

/// The full-size experiment: 5 philosophers, 10 dinners of 100 ms per
/// strategy, deadlock declared after a 25 ms stall.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        Dinner {
            philosophers: 5,
            duration: Duration::from_millis(100),
            stall_timeout: Duration::from_millis(25),
            eat: Duration::from_micros(200),
            think: Duration::from_micros(200),
        },
        10,
    )
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::*;

    fn small(n: usize) -> Dinner {
        Dinner {
            philosophers: n,
            duration: Duration::from_millis(60),
            stall_timeout: Duration::from_millis(15),
            eat: Duration::from_micros(100),
            think: Duration::from_micros(100),
        }
    }

    #[test]
    fn fork_orders() {
        assert_eq!(forks_for(Strategy::LeftThenRight, 4, 5), (4, 0));
        assert_eq!(forks_for(Strategy::OrderedForks, 4, 5), (0, 4));
        assert_eq!(forks_for(Strategy::OrderedForks, 1, 5), (1, 2));
        assert_eq!(forks_for(Strategy::Waiter, 4, 5), (4, 0));
    }

    #[test]
    fn cycle_detection() {
        // Everyone holds its left fork and waits for its right: a ring.
        let holder = vec![0, 1, 2];
        let waiting = vec![1, 2, 0];
        assert_eq!(find_wait_cycle(&holder, &waiting), Some(vec![0, 1, 2]));
        // Philosopher 2 waits for a free fork: no cycle.
        let holder = vec![0, 1, NONE];
        assert_eq!(find_wait_cycle(&holder, &waiting), None);
        // A chain into a 2-cycle: 2 -> 0 <-> 1.
        let holder = vec![0, 1, 2, NONE];
        let waiting = vec![1, 0, 0, NONE];
        assert_eq!(find_wait_cycle(&holder, &waiting), Some(vec![0, 1]));
        assert_eq!(find_wait_cycle(&[], &[]), None);
    }

    #[test]
    fn too_few_philosophers_is_an_error() {
        assert_eq!(
            dine(Strategy::OrderedForks, small(1), 0),
            Err(DinnerError::TooFew(1))
        );
    }

    #[test]
    fn naive_order_deadlocks_and_recovers() {
        for seed in 0..3 {
            let d = dine(Strategy::LeftThenRight, small(5), seed).unwrap();
            assert!(d.deadlocked, "{d:?}");
            assert_eq!(d.cycle, vec![0, 1, 2, 3, 4]);
            assert_eq!(d.total_meals(), 0);
        }
    }

    #[test]
    fn ordered_and_waiter_never_deadlock_and_everyone_eats() {
        for s in [Strategy::OrderedForks, Strategy::Waiter] {
            let d = dine(s, small(5), 3).unwrap();
            assert!(!d.deadlocked, "{s:?}: {d:?}");
            assert!(d.meals.iter().all(|&m| m > 0), "{s:?}: {d:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn no_strategy_but_naive_deadlocks(n in 2usize..7, seed in 0u64..1000) {
            let cfg = Dinner { duration: Duration::from_millis(30), ..small(n) };
            for s in [Strategy::OrderedForks, Strategy::Waiter] {
                let d = dine(s, cfg, seed).unwrap();
                prop_assert!(!d.deadlocked);
                prop_assert!(d.total_meals() > 0);
            }
            let d = dine(Strategy::LeftThenRight, cfg, seed).unwrap();
            prop_assert!(d.deadlocked);
            prop_assert_eq!(d.cycle.len(), n);
        }

        #[test]
        fn ordered_forks_never_form_a_ring(n in 2usize..50) {
            // Everyone holding its first fork and waiting for its second
            // (the worst case) has no cycle under ordering.
            let mut holder = vec![NONE; n];
            let mut waiting = vec![NONE; n];
            for (p, w) in waiting.iter_mut().enumerate() {
                let (a, b) = forks_for(Strategy::OrderedForks, p, n);
                if holder[a] == NONE {
                    holder[a] = p;
                    *w = b;
                } else {
                    *w = a;
                }
            }
            prop_assert_eq!(find_wait_cycle(&holder, &waiting), None);
            // ...while left-then-right does.
            let holder: Vec<usize> = (0..n).collect();
            let waiting: Vec<usize> = (0..n).map(|p| (p + 1) % n).collect();
            prop_assert_eq!(find_wait_cycle(&holder, &waiting).map(|c| c.len()), Some(n));
        }
    }

    #[test]
    fn small_lesson_shows_the_deadlock() {
        let r = lesson_with(5, small(5), 3);
        assert_eq!(r.naive["deadlocks"], 3.0, "{}", r.table());
        assert_eq!(r.optimal["deadlocks"], 0.0, "{}", r.table());
        assert!(r.optimal["meals"] > r.naive["meals"]);
        assert!(r.optimal["meals_waiter"] > 0.0);
    }
}
