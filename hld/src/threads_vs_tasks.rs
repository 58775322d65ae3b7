//! OS threads against async tasks: which one for waiting, which one for
//! computing.
//!
//! **The pattern.** A server has many jobs in flight at once. Most of them
//! spend their time *waiting* (on the network, a database, a timer); some
//! *compute*.
//!
//! **The naive way** for waiting jobs is one OS thread per job. Each thread
//! has its own stack (reserved virtual memory, with at least a page or two
//! touched), a kernel task struct, and costs a `clone` syscall to create and
//! a context switch to wake; 10,000 of them take tens of milliseconds just
//! to spawn and megabytes of resident memory.
//!
//! **The optimal way** for waiting jobs is async tasks: a task is a state
//! machine on the heap (a few hundred bytes here), spawned with an
//! allocation and a queue push, and parked in a timer wheel while it
//! waits; a handful of worker threads run all 10,000.
//!
//! **The reversal.** For CPU-bound jobs tasks bring nothing: a runtime with
//! `w` workers computes on `w` cores, exactly as `w` threads do, and a task
//! that computes for long must `yield_now().await` now and then so the
//! other tasks on its worker (timers, I/O) are not starved (see
//! [`crate::blocking_in_async`]); those yields are pure overhead. Plain
//! threads with chunking (one chunk of jobs per core, the way rayon splits
//! work) are the right tool there, and they win or tie.
//!
//! Costs: a thread is O(stack page + kernel struct) memory and a syscall to
//! spawn; a task is O(size of its future) and an allocation.

use crate::report::LessonReport;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "threads-vs-tasks";
/// A short human title.
pub const TITLE: &str = "Threads against async tasks: 10,000 sleepers, and CPU-bound sums";

/// The process's resident memory in KiB (`VmRSS` in `/proc/self/status`),
/// or None where there is no procfs (not Linux).
pub fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples [`rss_kb`] every millisecond on its own thread while `f` runs;
/// returns `f`'s result and the peak growth over the value before (0 when
/// RSS cannot be read).
fn with_peak_rss<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let base = rss_kb().unwrap_or(0);
    let peak = AtomicUsize::new(base as usize);
    let running = AtomicBool::new(true);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while running.load(Ordering::SeqCst) {
                if let Some(kb) = rss_kb() {
                    peak.fetch_max(kb as usize, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let r = f();
        if let Some(kb) = rss_kb() {
            peak.fetch_max(kb as usize, Ordering::SeqCst);
        }
        running.store(false, Ordering::SeqCst);
        r
    });
    (r, (peak.load(Ordering::SeqCst) as u64).saturating_sub(base))
}

/// What running many sleeping jobs measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SleepRun {
    /// Jobs actually started (threads: fewer if spawning failed).
    pub spawned: usize,
    pub spawn_failures: usize,
    /// Time to start them all.
    pub spawn_ms: f64,
    /// Time until all finished.
    pub total_ms: f64,
    /// Most jobs alive at once.
    pub peak_alive: usize,
    /// Peak resident-memory growth, KiB (0 if unmeasurable).
    pub memory_kb: u64,
}

/// Tracks how many jobs are alive and the most at once.
#[derive(Default)]
struct Alive {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Alive {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `jobs` OS threads of `stack_size` bytes, each sleeping `sleep`. Stops
/// spawning at the first failure (and counts it) instead of panicking.
pub fn sleep_with_threads(jobs: usize, sleep: Duration, stack_size: usize) -> SleepRun {
    let alive = Alive::default();
    let start = Instant::now();
    let ((spawned, failures, spawn_ms), memory_kb) = with_peak_rss(|| {
        std::thread::scope(|s| {
            let (mut ok, mut failed) = (0, 0);
            for _ in 0..jobs {
                let alive = &alive;
                let r = std::thread::Builder::new()
                    .stack_size(stack_size)
                    .spawn_scoped(s, move || {
                        alive.enter();
                        std::thread::sleep(sleep);
                        alive.leave();
                    });
                match r {
                    Ok(_) => ok += 1,
                    Err(_) => {
                        failed = jobs - ok;
                        break;
                    }
                }
            }
            (ok, failed, start.elapsed().as_secs_f64() * 1e3)
        })
    });
    SleepRun {
        spawned,
        spawn_failures: failures,
        spawn_ms,
        total_ms: start.elapsed().as_secs_f64() * 1e3,
        peak_alive: alive.peak.load(Ordering::SeqCst),
        memory_kb,
    }
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_time()
        .build()
}

/// `jobs` tokio tasks on a runtime of `workers` threads, each sleeping
/// `sleep` (`tokio::time::sleep`).
pub fn sleep_with_tasks(jobs: usize, sleep: Duration, workers: usize) -> std::io::Result<SleepRun> {
    let rt = runtime(workers)?;
    let alive = Arc::new(Alive::default());
    let ((spawn_ms, total_ms, joined), memory_kb) = with_peak_rss(|| {
        rt.block_on(async {
            let start = Instant::now();
            let handles: Vec<_> = (0..jobs)
                .map(|_| {
                    let alive = alive.clone();
                    tokio::spawn(async move {
                        alive.enter();
                        tokio::time::sleep(sleep).await;
                        alive.leave();
                    })
                })
                .collect();
            let spawn_ms = start.elapsed().as_secs_f64() * 1e3;
            let mut joined = 0;
            for h in handles {
                if h.await.is_ok() {
                    joined += 1;
                }
            }
            (spawn_ms, start.elapsed().as_secs_f64() * 1e3, joined)
        })
    });
    Ok(SleepRun {
        spawned: joined,
        spawn_failures: jobs - joined,
        spawn_ms,
        total_ms,
        peak_alive: alive.peak.load(Ordering::SeqCst),
        memory_kb,
    })
}

/// One CPU-bound job: `iters` rounds of a dependent multiply-add chain
/// (an LCG) seeded by `job`, so it cannot be vectorized or folded away.
pub fn cpu_job(job: u64, iters: u64) -> u64 {
    let mut x = job.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut sum = 0u64;
    for i in 0..iters {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(i | 1);
        sum = sum.wrapping_add(x >> 33);
    }
    sum
}

/// Runs `jobs` CPU jobs on `threads` OS threads, each taking one
/// contiguous chunk of jobs (rayon-style splitting). Returns the combined
/// result (wrapping sum) and the wall time in ms.
pub fn cpu_with_threads(jobs: u64, iters: u64, threads: usize) -> (u64, f64) {
    let threads = threads.max(1) as u64;
    let start = Instant::now();
    let chunk = jobs.div_ceil(threads);
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(jobs));
                    (lo..hi).fold(0u64, |a, j| a.wrapping_add(cpu_job(j, iters)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    });
    (total, start.elapsed().as_secs_f64() * 1e3)
}

/// Runs `jobs` CPU jobs as tokio tasks on `workers` workers. A
/// well-behaved task yields every `yield_every` rounds (0 = never), so that
/// timers and I/O on its worker still run; the yields are the price.
pub fn cpu_with_tasks(
    jobs: u64,
    iters: u64,
    workers: usize,
    yield_every: u64,
) -> std::io::Result<(u64, f64)> {
    let rt = runtime(workers)?;
    let start = Instant::now();
    let total = rt.block_on(async move {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                tokio::spawn(async move {
                    if yield_every == 0 {
                        return cpu_job(j, iters);
                    }
                    // The same chain as cpu_job, in slices with a yield
                    // between them.
                    let mut x = j.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut sum = 0u64;
                    let mut i = 0;
                    while i < iters {
                        let end = (i + yield_every).min(iters);
                        while i < end {
                            x = x
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(i | 1);
                            sum = sum.wrapping_add(x >> 33);
                            i += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    sum
                })
            })
            .collect();
        let mut total = 0u64;
        for h in handles {
            total = total.wrapping_add(h.await.unwrap_or(0));
        }
        total
    });
    Ok((total, start.elapsed().as_secs_f64() * 1e3))
}

/// Parameters of the experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setup {
    pub sleepers: usize,
    pub sleep: Duration,
    pub stack_size: usize,
    pub cpu_jobs: u64,
    pub cpu_iters: u64,
    /// Rounds between yields of a CPU task.
    pub yield_every: u64,
}

/// The experiment. `seed` offsets the CPU jobs' inputs.
pub fn lesson_with(seed: u64, setup: Setup) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Tasks first, so the threads run cannot lend them freed memory.
    let tasks = match sleep_with_tasks(setup.sleepers, setup.sleep, cores) {
        Ok(t) => t,
        Err(e) => return report.notes(format!("no tokio runtime: {e}")),
    };
    let threads = sleep_with_threads(setup.sleepers, setup.sleep, setup.stack_size);
    let jobs = setup.cpu_jobs;
    let iters = setup.cpu_iters;
    let _ = seed;
    // CPU timings are the best of 3 runs each (the machine is shared).
    let best = |runs: Vec<(u64, f64)>| {
        runs.into_iter()
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
    };
    let (t_sum, t_ms) = best(
        (0..3)
            .map(|_| cpu_with_threads(jobs, iters, cores))
            .collect(),
    );
    let tasks_runs = |yield_every| -> std::io::Result<(u64, f64)> {
        let runs = (0..3)
            .map(|_| cpu_with_tasks(jobs, iters, cores, yield_every))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(best(runs))
    };
    let (a_sum, a_ms, raw_sum, raw_ms) = match (tasks_runs(setup.yield_every), tasks_runs(0)) {
        (Ok((a, b)), Ok((c, d))) => (a, b, c, d),
        (Err(e), _) | (_, Err(e)) => return report.notes(format!("no tokio runtime: {e}")),
    };
    let rss_note = if rss_kb().is_some() {
        "Memory is the peak growth of VmRSS (/proc/self/status) while the jobs ran."
    } else {
        "Memory could not be measured here (no /proc/self/status), so memory_kb is 0."
    };
    let capped = if threads.spawn_failures > 0 {
        format!(
            " Spawning stopped after {} threads on this machine ({} failed).",
            threads.spawned, threads.spawn_failures
        )
    } else {
        String::new()
    };
    report
        .both("jobs", setup.sleepers as f64, setup.sleepers as f64)
        .both("spawned", threads.spawned as f64, tasks.spawned as f64)
        .both("spawn_failures", threads.spawn_failures as f64, tasks.spawn_failures as f64)
        .both("spawn_ms", threads.spawn_ms, tasks.spawn_ms)
        .both("total_ms", threads.total_ms, tasks.total_ms)
        .both("peak_alive", threads.peak_alive as f64, tasks.peak_alive as f64)
        .both("memory_kb", threads.memory_kb as f64, tasks.memory_kb as f64)
        .both(
            "memory_bytes_per_job",
            threads.memory_kb as f64 * 1024.0 / threads.peak_alive.max(1) as f64,
            tasks.memory_kb as f64 * 1024.0 / tasks.peak_alive.max(1) as f64,
        )
        .naive("stack_kb", setup.stack_size as f64 / 1024.0)
        .both("cpu_jobs", jobs as f64, jobs as f64)
        .both("cpu_total_ms", t_ms, a_ms)
        .optimal("cpu_total_ms_no_yield", raw_ms)
        .both("cpu_cores", cores as f64, cores as f64)
        .both(
            "cpu_results_agree",
            f64::from(u8::from(t_sum == a_sum)),
            f64::from(u8::from(a_sum == raw_sum)),
        )
        .notes(format!(
            "{} sleeping jobs of {:.0} ms: OS threads ({} KiB stacks) took {:.0} ms to spawn and {:.0} ms in all, \
             growing resident memory by {} KiB with at most {} alive at once (spawning is slower than the \
             sleep, so the first ones finish before the last start); tokio tasks took {:.1} ms to spawn and {:.0} ms in all, growing it by \
             {} KiB. {rss_note}{capped} For {jobs} CPU-bound jobs the picture flips: tasks add no cores, so at best \
             they tie. {cores} threads with one chunk each took {t_ms:.0} ms (best of 3), tasks on {cores} workers \
             {a_ms:.0} ms when yielding every {} rounds as a good async citizen must, and {raw_ms:.0} ms without \
             yielding, which starves every timer and socket on the runtime meanwhile. Beyond one machine, waiting scales out with event-driven servers (Envoy, \
             Nginx, Go's netpoller) and computing with a job system (Ray, Spark) that splits work by core.",
            setup.sleepers,
            setup.sleep.as_secs_f64() * 1e3,
            setup.stack_size / 1024,
            threads.spawn_ms,
            threads.total_ms,
            threads.memory_kb,
            threads.peak_alive,
            tasks.spawn_ms,
            tasks.total_ms,
            tasks.memory_kb,
            setup.yield_every,
        ))
}

/// The full-size experiment: 10,000 jobs sleeping 50 ms (64 KiB thread
/// stacks), then 64 CPU jobs of 2 million rounds.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        Setup {
            sleepers: 10_000,
            sleep: Duration::from_millis(50),
            stack_size: 64 * 1024,
            cpu_jobs: 64,
            cpu_iters: 2_000_000,
            yield_every: 1_000,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_kb().is_some_and(|kb| kb > 0));
        }
    }

    #[test]
    fn sleepers_all_run() {
        let t = sleep_with_threads(50, Duration::from_millis(5), 64 * 1024);
        assert_eq!((t.spawned, t.spawn_failures), (50, 0));
        assert!(t.total_ms >= 5.0);
        assert!(t.peak_alive >= 1 && t.peak_alive <= 50);
        let a = sleep_with_tasks(50, Duration::from_millis(5), 2).unwrap();
        assert_eq!((a.spawned, a.spawn_failures), (50, 0));
        assert!(a.total_ms >= 5.0);
        assert!(a.peak_alive >= 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn cpu_results_do_not_depend_on_the_executor(jobs in 0u64..20, iters in 0u64..5000, workers in 1usize..4, yield_every in 0u64..700) {
            let expected = (0..jobs).fold(0u64, |a, j| a.wrapping_add(cpu_job(j, iters)));
            prop_assert_eq!(cpu_with_threads(jobs, iters, workers).0, expected);
            prop_assert_eq!(cpu_with_tasks(jobs, iters, workers, yield_every).unwrap().0, expected);
        }
    }

    #[test]
    fn small_lesson_shows_the_tradeoff() {
        let r = lesson_with(
            1,
            Setup {
                sleepers: 1_000,
                sleep: Duration::from_millis(20),
                stack_size: 64 * 1024,
                cpu_jobs: 16,
                cpu_iters: 200_000,
                yield_every: 100,
            },
        );
        let (n, o) = (&r.naive, &r.optimal);
        assert_eq!(n["spawned"], 1000.0, "{}", r.table());
        assert_eq!(o["spawned"], 1000.0);
        assert!(n["spawn_ms"] > o["spawn_ms"], "{}", r.table());
        assert_eq!(n["cpu_results_agree"], 1.0);
        assert_eq!(o["cpu_results_agree"], 1.0);
        assert!(o["peak_alive"] == 1000.0, "{}", r.table());
    }
}
