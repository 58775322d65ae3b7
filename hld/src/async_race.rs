//! A race in async code: read, `.await`, write back, and the update of
//! every other task in between is lost, even on one thread.
//!
//! **The pattern.** Async tasks share state (a balance, a counter, a cache
//! entry) and update it with a read-modify-write that has an `.await` in
//! the middle: read the balance, call a fraud check or fetch a rate, then
//! write `balance + amount`.
//!
//! **The naive way** ([`Fix::None`]) locks a `std::sync::Mutex` for the
//! read, releases it, awaits, and locks it again for the write. Every
//! access is locked, so there is no *data* race and the code compiles and
//! passes clippy; but the read-modify-write is not one step. An `.await` is
//! a point where the task may be suspended and any other task may run: on
//! a single-threaded runtime, all tasks read the same balance, all await,
//! and then each writes its own `old + amount`: the last write wins and the
//! other deposits are gone (`lost_updates`). No preemption is needed; the
//! `.await` itself is the window. (The multi-threaded runtime loses them
//! too.)
//!
//! **The optimal way** makes the read-modify-write atomic with respect to
//! other tasks, in one of three ways. [`Fix::TokioMutex`]: hold a
//! `tokio::sync::Mutex` guard across the `.await`; other tasks wait for it
//! asynchronously (their worker thread stays free). [`Fix::Restructure`]:
//! do the awaiting first and then update in one step with no `.await`
//! inside (an atomic `fetch_add`, or a `std::sync::Mutex` held briefly,
//! which is fine when nothing is awaited under it). [`Fix::Actor`]: one task
//! owns the state and applies messages from a channel one by one; nobody
//! else touches it. All three lose 0.
//!
//! **Why not `std::sync::Mutex` across `.await`?** Its guard is not `Send`,
//! so `tokio::spawn` refuses the future at compile time; on a
//! single-threaded runtime (a `LocalSet`) it compiles, and then a second
//! task calling `lock()` while the first is suspended blocks the only
//! thread forever: the holder can never run to unlock. Clippy warns
//! (`await_holding_lock`). This lesson runs that case with `try_lock` and
//! counts how often it found the lock held by a suspended task
//! (`std_mutex_would_block`); with `lock()` the first of them would have
//! hung the thread for good.
//!
//! **Which fix.** Holding an async lock across an `.await` serializes the
//! awaited work too: with 1 ms of I/O under the lock, the deposits run one
//! after another (`ms_io_tokio_mutex` against `ms_io_restructure`). Prefer
//! restructuring when the update does not depend on what was awaited; hold
//! a tokio Mutex when it must (check-then-act on the value read); use an
//! actor when the state has many operations and invariants, owns a
//! resource such as a connection, or when callers should not wait on a
//! lock at all (Erlang processes, Akka, Orleans grains, tokio's "mini-redis"
//! design).

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The lesson's command-line name.
pub const NAME: &str = "async-race";
/// A short human title.
pub const TITLE: &str =
    "A race in async code: read, .await, write loses updates; a tokio Mutex, an atomic update or an actor";

/// The shared ledger: how many deposits were applied, and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    pub deposits: u64,
    pub balance: u64,
}

/// How a deposit updates the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Read under a std Mutex, await, write under it again.
    None,
    /// A `tokio::sync::Mutex` guard held across the await.
    TokioMutex,
    /// Await first, then one indivisible update (atomics).
    Restructure,
    /// A task that owns the ledger; deposits are messages.
    Actor,
}

/// The `.await` inside the update: a bare yield, or simulated I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    Yield,
    Sleep(Duration),
}

impl Io {
    async fn wait(self) {
        match self {
            Io::Yield => tokio::task::yield_now().await,
            Io::Sleep(d) => tokio::time::sleep(d).await,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Msg {
    Deposit(u64),
    Read(oneshot::Sender<Ledger>),
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceRun {
    pub expected: Ledger,
    pub fin: Ledger,
    pub lost_updates: u64,
    pub lost_amount: u64,
    pub ms: f64,
}

/// Seeded deposit amounts (1 to 100), one list per task.
pub fn seeded_amounts(seed: u64, tasks: usize, per_task: usize) -> Vec<Vec<u64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..tasks)
        .map(|_| (0..per_task).map(|_| rng.random_range(1..=100)).collect())
        .collect()
}

/// Runs every task's deposits concurrently with `fix` on a runtime with
/// `workers` threads (1: current-thread), and compares the final ledger
/// with the expected one.
pub fn run(amounts: &[Vec<u64>], fix: Fix, io: Io, workers: usize) -> RaceRun {
    let rt = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_time()
            .build()
    }
    .expect("a tokio runtime");
    let t0 = Instant::now();
    let fin = rt.block_on(run_async(amounts, fix, io));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let expected = Ledger {
        deposits: amounts.iter().map(|a| a.len() as u64).sum(),
        balance: amounts.iter().flatten().sum(),
    };
    RaceRun {
        expected,
        fin,
        lost_updates: expected.deposits.saturating_sub(fin.deposits),
        lost_amount: expected.balance.saturating_sub(fin.balance),
        ms,
    }
}

async fn run_async(amounts: &[Vec<u64>], fix: Fix, io: Io) -> Ledger {
    let mut set = tokio::task::JoinSet::new();
    match fix {
        Fix::None => {
            let ledger = Arc::new(Mutex::new(Ledger::default()));
            for list in amounts.iter().cloned() {
                let l = ledger.clone();
                set.spawn(async move {
                    for a in list {
                        let old = *lock(&l); // the guard is dropped here
                        io.wait().await; // ... other tasks run ...
                        *lock(&l) = Ledger {
                            deposits: old.deposits + 1,
                            balance: old.balance + a,
                        };
                    }
                });
            }
            set.join_all().await;
            let fin = *lock(&ledger);
            fin
        }
        Fix::TokioMutex => {
            let ledger = Arc::new(tokio::sync::Mutex::new(Ledger::default()));
            for list in amounts.iter().cloned() {
                let l = ledger.clone();
                set.spawn(async move {
                    for a in list {
                        let mut g = l.lock().await;
                        let old = *g;
                        io.wait().await; // others wait on the lock, asynchronously
                        *g = Ledger {
                            deposits: old.deposits + 1,
                            balance: old.balance + a,
                        };
                    }
                });
            }
            set.join_all().await;
            let fin = *ledger.lock().await;
            fin
        }
        Fix::Restructure => {
            let (deposits, balance) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            for list in amounts.iter().cloned() {
                let (d, b) = (deposits.clone(), balance.clone());
                set.spawn(async move {
                    for a in list {
                        io.wait().await; // await first ...
                        d.fetch_add(1, Ordering::SeqCst); // ... then update in one step
                        b.fetch_add(a, Ordering::SeqCst);
                    }
                });
            }
            set.join_all().await;
            Ledger {
                deposits: deposits.load(Ordering::SeqCst),
                balance: balance.load(Ordering::SeqCst),
            }
        }
        Fix::Actor => {
            let (tx, mut rx) = mpsc::channel::<Msg>(64);
            let owner = tokio::spawn(async move {
                let mut ledger = Ledger::default(); // only this task sees it
                while let Some(m) = rx.recv().await {
                    match m {
                        Msg::Deposit(a) => {
                            ledger.deposits += 1;
                            ledger.balance += a;
                        }
                        Msg::Read(reply) => {
                            let _ = reply.send(ledger);
                        }
                    }
                }
            });
            for list in amounts.iter().cloned() {
                let tx = tx.clone();
                set.spawn(async move {
                    for a in list {
                        io.wait().await;
                        // The channel is FIFO and the owner applies each
                        // message whole: no interleaving inside an update.
                        let _ = tx.send(Msg::Deposit(a)).await;
                    }
                });
            }
            set.join_all().await;
            let (reply, read) = oneshot::channel();
            let _ = tx.send(Msg::Read(reply)).await;
            drop(tx);
            let fin = read.await.unwrap_or_default();
            let _ = owner.await;
            fin
        }
    }
}

/// Holds a `std::sync::Mutex` guard across an `.await`, on one thread
/// (tasks spawned on a `LocalSet`, since the future is not `Send`). Uses
/// `try_lock` so that the run ends; returns the final ledger and how many
/// times a task found the lock held by a suspended task, each of which
/// would have blocked the only thread forever with `lock()`.
pub fn std_mutex_across_await(amounts: &[Vec<u64>]) -> (Ledger, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let would_block = Arc::new(AtomicU64::new(0));
    for list in amounts.iter().cloned() {
        let (l, wb) = (ledger.clone(), would_block.clone());
        local.spawn_local(deposit_holding_std_guard(l, wb, list));
    }
    rt.block_on(local);
    let fin = *lock(&ledger);
    (fin, would_block.load(Ordering::SeqCst))
}

// The anti-pattern on purpose: clippy's `await_holding_lock` flags exactly
// this, and the guard makes the future !Send (tokio::spawn would reject it).
#[allow(clippy::await_holding_lock)]
async fn deposit_holding_std_guard(
    l: Arc<Mutex<Ledger>>,
    would_block: Arc<AtomicU64>,
    list: Vec<u64>,
) {
    for a in list {
        loop {
            match l.try_lock() {
                Ok(mut g) => {
                    let old = *g;
                    tokio::task::yield_now().await; // suspended, still holding it
                    *g = Ledger {
                        deposits: old.deposits + 1,
                        balance: old.balance + a,
                    };
                    break;
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    // With `lock()` this thread would now wait forever.
                    would_block.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
                Err(std::sync::TryLockError::Poisoned(_)) => return,
            }
        }
    }
}

/// The experiment: `tasks` x `per_task` deposits with a yield inside the
/// update, each way; then a smaller run with 1 ms of I/O inside it, to show
/// what holding a lock across the await costs.
pub fn lesson_with(seed: u64, tasks: usize, per_task: usize) -> LessonReport {
    let amounts = seeded_amounts(seed, tasks, per_task);
    let naive = run(&amounts, Fix::None, Io::Yield, 1);
    let naive_mt = run(&amounts, Fix::None, Io::Yield, 2);
    let tokio_mutex = run(&amounts, Fix::TokioMutex, Io::Yield, 1);
    let restructure = run(&amounts, Fix::Restructure, Io::Yield, 1);
    let actor = run(&amounts, Fix::Actor, Io::Yield, 1);
    let (std_fin, would_block) = std_mutex_across_await(&amounts);
    let small = seeded_amounts(seed ^ 1, 20, 5);
    let io = Io::Sleep(Duration::from_millis(1));
    let naive_io = run(&small, Fix::None, io, 1);
    let mutex_io = run(&small, Fix::TokioMutex, io, 1);
    let restr_io = run(&small, Fix::Restructure, io, 1);
    let actor_io = run(&small, Fix::Actor, io, 1);
    let fixed_lost = tokio_mutex.lost_updates + restructure.lost_updates + actor.lost_updates;
    LessonReport::new(NAME, TITLE)
        .both("tasks", tasks as f64, tasks as f64)
        .both("deposits", naive.expected.deposits as f64, naive.expected.deposits as f64)
        .both("runtime_threads", 1.0, 1.0)
        .both("lost_updates", naive.lost_updates as f64, fixed_lost as f64)
        .both("lost_amount", naive.lost_amount as f64, tokio_mutex.lost_amount as f64)
        .both("ms", naive.ms, tokio_mutex.ms)
        .naive("lost_updates_multi_thread", naive_mt.lost_updates as f64)
        .naive("lost_updates_io", naive_io.lost_updates as f64)
        .naive("std_mutex_would_block", would_block as f64)
        .naive(
            "std_mutex_lost_updates",
            naive.expected.deposits.saturating_sub(std_fin.deposits) as f64,
        )
        .optimal("lost_updates_tokio_mutex", tokio_mutex.lost_updates as f64)
        .optimal("lost_updates_restructure", restructure.lost_updates as f64)
        .optimal("lost_updates_actor", actor.lost_updates as f64)
        .optimal("ms_restructure", restructure.ms)
        .optimal("ms_actor", actor.ms)
        .optimal("ms_io_tokio_mutex", mutex_io.ms)
        .optimal("ms_io_restructure", restr_io.ms)
        .optimal("ms_io_actor", actor_io.ms)
        .both("seed", seed as f64, seed as f64)
        .notes(format!(
            "{tasks} tasks made {per_task} deposits each on a single-threaded runtime, each deposit a read, an \
             .await (yield_now) and a write, every access under a std Mutex. {} of {} deposits were lost ({} of {} \
             money): every task read the same balance before any wrote; no data race, only a logical one across \
             the await (on 2 threads: {} lost; with 1 ms of I/O as the await: {} of {}). A tokio Mutex held across \
             the await, awaiting first and then one atomic update, and an actor task that owns the ledger all lost \
             0. Holding a std Mutex across the await instead also lost 0, but its try_lock found the lock held by a \
             suspended task {} times: with lock(), the first of those would have hung the only thread for good \
             (clippy: await_holding_lock). With 1 ms of I/O inside the \
             update the tokio Mutex serializes the I/O ({:.0} ms for 20 tasks x 5 deposits) where restructuring ({:.1} ms) \
             and the actor ({:.1} ms) overlap it: hold an async lock across an await only when the update needs \
             what was awaited.",
            naive.lost_updates,
            naive.expected.deposits,
            naive.lost_amount,
            naive.expected.balance,
            naive_mt.lost_updates,
            naive_io.lost_updates,
            naive_io.expected.deposits,
            would_block,
            mutex_io.ms,
            restr_io.ms,
            actor_io.ms,
        ))
}

/// The full-size experiment: 100 tasks x 100 deposits.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 100, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_task_alone_loses_nothing_even_naively() {
        let a = seeded_amounts(1, 1, 50);
        let r = run(&a, Fix::None, Io::Yield, 1);
        assert_eq!(r.lost_updates, 0);
        assert_eq!(r.fin, r.expected);
    }

    #[test]
    fn read_await_write_loses_updates_on_one_thread() {
        for seed in 0..3 {
            let a = seeded_amounts(seed, 10, 20);
            let r = run(&a, Fix::None, Io::Yield, 1);
            assert!(r.lost_updates > 0, "{r:?}");
            assert!(r.fin.deposits < r.expected.deposits);
            assert!(r.fin.balance < r.expected.balance);
        }
    }

    #[test]
    fn every_fix_loses_nothing_on_either_runtime() {
        let a = seeded_amounts(4, 12, 15);
        for fix in [Fix::TokioMutex, Fix::Restructure, Fix::Actor] {
            for workers in [1, 3] {
                let r = run(&a, fix, Io::Yield, workers);
                assert_eq!(r.fin, r.expected, "{fix:?} on {workers}");
            }
        }
        let r = run(
            &seeded_amounts(5, 5, 3),
            Fix::TokioMutex,
            Io::Sleep(Duration::from_millis(1)),
            1,
        );
        assert_eq!(r.lost_updates, 0);
    }

    #[test]
    fn std_guard_across_await_would_block_but_counts_right_with_try_lock() {
        let a = seeded_amounts(2, 6, 10);
        let (fin, would_block) = std_mutex_across_await(&a);
        assert!(would_block > 0);
        assert_eq!(fin.deposits, 60);
        assert_eq!(fin.balance, a.iter().flatten().sum::<u64>());
    }

    #[test]
    fn small_lesson_shows_the_race_and_the_fixes() {
        let r = lesson_with(7, 10, 10);
        assert!(r.naive["lost_updates"] > 0.0, "{}", r.table());
        assert_eq!(r.optimal["lost_updates"], 0.0, "{}", r.table());
        assert_eq!(r.optimal["lost_amount"], 0.0);
    }
}
