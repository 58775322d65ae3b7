//! Blocking inside async code: one `std::thread::sleep` stalls every task
//! on its worker.
//!
//! **The pattern.** An async runtime (tokio) runs many tasks on a few worker
//! threads. A task runs until it reaches an `.await` that is not ready; only
//! then can the worker run another task, fire timers or poll sockets.
//! Scheduling is cooperative.
//!
//! **The naive way** ([`Offload::Inline`]) calls blocking code directly in
//! an async task: `std::thread::sleep`, a synchronous file or database call,
//! a long CPU loop. The worker is stuck for the whole call. With as many
//! blocking jobs as workers, *every* worker is stuck: timers fire late, and
//! a ticker task that should wake every millisecond waits for tens of
//! milliseconds. Throughput suffers too, because only `workers` jobs make
//! progress at once.
//!
//! **The optimal way** ([`Offload::SpawnBlocking`]) hands the blocking call
//! to `tokio::task::spawn_blocking`, which runs it on a separate, growable
//! pool of threads made for blocking; the async task just `.await`s the
//! result. The workers stay free, the ticker keeps its 1 ms rhythm, and the
//! jobs run in parallel on the blocking pool. (For CPU-heavy work a fixed
//! pool such as rayon is better still: `spawn_blocking` threads are meant
//! to wait, not to compute.)
//!
//! The cost model: a task that blocks for `d` delays every task queued on
//! its worker by up to `d`; with `k` such jobs on `w` workers the stall is
//! about `ceil(k / w) * d`, while `spawn_blocking` keeps it near 0.

use crate::report::LessonReport;
use crate::semaphore_backpressure::quantile;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "blocking-in-async";
/// A short human title.
pub const TITLE: &str =
    "Blocking in async: std::thread::sleep on a tokio worker against spawn_blocking";

/// The blocking work one job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `std::thread::sleep` (a blocking syscall: file, DNS, sync DB client).
    Sleep(Duration),
    /// A busy loop for this long (CPU-bound work).
    Spin(Duration),
}

impl Work {
    /// Does the work, blocking the calling thread.
    pub fn run(self) {
        match self {
            Work::Sleep(d) => std::thread::sleep(d),
            Work::Spin(d) => {
                let end = Instant::now() + d;
                while Instant::now() < end {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Where the blocking work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Directly in the async task, on a runtime worker (the naive way).
    Inline,
    /// In `tokio::task::spawn_blocking`, awaited by the task.
    SpawnBlocking,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncRun {
    /// Time between two wakes of a ticker that sleeps 1 ms each round.
    pub ticker_p50_ms: f64,
    pub ticker_p99_ms: f64,
    pub ticker_max_ms: f64,
    pub ticks: usize,
    /// Wall time until every job finished.
    pub total_ms: f64,
}

/// Errors of [`run_jobs`].
#[derive(Debug, thiserror::Error)]
pub enum AsyncError {
    #[error("could not build the tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("a task panicked or was cancelled: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the runtime needs at least one worker")]
    NoWorkers,
}

/// Starts a ticker task (sleep 1 ms, record the gap, repeat) on a fresh
/// multi-thread runtime of `workers` threads, then runs `jobs` as async
/// tasks, each doing its blocking work as `offload` says. Returns when all
/// jobs are done.
pub fn run_jobs(workers: usize, jobs: &[Work], offload: Offload) -> Result<AsyncRun, AsyncError> {
    if workers == 0 {
        return Err(AsyncError::NoWorkers);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()?;
    let jobs = jobs.to_vec();
    let out = rt.block_on(async move {
        let running = Arc::new(AtomicBool::new(true));
        let ticker = {
            let running = running.clone();
            tokio::spawn(async move {
                let mut gaps = Vec::new();
                let mut last = Instant::now();
                while running.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let now = Instant::now();
                    gaps.push((now - last).as_secs_f64() * 1e3);
                    last = now;
                }
                gaps
            })
        };
        // Let the ticker settle into its rhythm first.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let start = Instant::now();
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|w| {
                tokio::spawn(async move {
                    match offload {
                        Offload::Inline => w.run(),
                        Offload::SpawnBlocking => {
                            tokio::task::spawn_blocking(move || w.run()).await?
                        }
                    }
                    Ok::<(), tokio::task::JoinError>(())
                })
            })
            .collect();
        for h in handles {
            h.await??;
        }
        let total = start.elapsed();
        running.store(false, Ordering::SeqCst);
        let gaps = ticker.await?;
        Ok::<_, AsyncError>((gaps, total))
    });
    // Dropping the runtime waits for nothing: every task is done.
    rt.shutdown_timeout(Duration::from_secs(1));
    let (mut gaps, total) = out?;
    gaps.sort_by(f64::total_cmp);
    Ok(AsyncRun {
        ticker_p50_ms: quantile(&gaps, 0.5),
        ticker_p99_ms: quantile(&gaps, 0.99),
        ticker_max_ms: gaps.last().copied().unwrap_or(0.0),
        ticks: gaps.len(),
        total_ms: total.as_secs_f64() * 1e3,
    })
}

/// `jobs` sleeping jobs of seeded length around `mean` (0.5x to 1.5x).
pub fn sleeping_jobs(seed: u64, jobs: usize, mean: Duration) -> Vec<Work> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..jobs)
        .map(|_| Work::Sleep(mean.mul_f64(rng.random_range(0.5..1.5))))
        .collect()
}

/// The experiment: the same jobs inline and through spawn_blocking.
pub fn lesson_with(seed: u64, workers: usize, jobs: usize, mean: Duration) -> LessonReport {
    let work = sleeping_jobs(seed, jobs, mean);
    let serial_ms: f64 = work
        .iter()
        .map(|w| match w {
            Work::Sleep(d) | Work::Spin(d) => d.as_secs_f64() * 1e3,
        })
        .sum();
    let report = LessonReport::new(NAME, TITLE);
    let (naive, optimal) = match (
        run_jobs(workers, &work, Offload::Inline),
        run_jobs(workers, &work, Offload::SpawnBlocking),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return report.notes(format!("the run failed: {e}")),
    };
    report
        .both("workers", workers as f64, workers as f64)
        .both("jobs", jobs as f64, jobs as f64)
        .both("job_ms_sum", serial_ms, serial_ms)
        .both("ticker_p50_ms", naive.ticker_p50_ms, optimal.ticker_p50_ms)
        .both("ticker_p99_ms", naive.ticker_p99_ms, optimal.ticker_p99_ms)
        .both("ticker_max_ms", naive.ticker_max_ms, optimal.ticker_max_ms)
        .both("ticks", naive.ticks as f64, optimal.ticks as f64)
        .both("total_ms", naive.total_ms, optimal.total_ms)
        .notes(format!(
            "{jobs} jobs that each block for about {:.0} ms ran on a tokio runtime with {workers} workers, next to a \
             task that sleeps 1 ms per round. Blocking inline stuck the workers: the ticker's worst gap was {:.0} ms \
             (p99 {:.0} ms) instead of 1 to 2 ms (tokio's timer ticks in whole milliseconds), and the jobs took {:.0} ms because only {workers} could block at \
             once. Through spawn_blocking the ticker kept p99 {:.1} ms and the jobs overlapped on the blocking pool \
             ({:.0} ms). Rule: nothing that can take more than ~100 us between .awaits runs on a worker; use async \
             clients, spawn_blocking for blocking calls, rayon for CPU work. Across machines, the same isolation is \
             bulkheading: separate pools (or services, behind Envoy with per-cluster limits) for slow dependencies.",
            mean.as_secs_f64() * 1e3,
            naive.ticker_max_ms,
            naive.ticker_p99_ms,
            naive.total_ms,
            optimal.ticker_p99_ms,
            optimal.total_ms,
        ))
}

/// The full-size experiment: 8 jobs of about 50 ms on 2 workers.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 2, 8, Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_workers_is_an_error() {
        assert!(matches!(
            run_jobs(0, &[], Offload::Inline),
            Err(AsyncError::NoWorkers)
        ));
    }

    #[test]
    fn work_takes_its_time() {
        for w in [
            Work::Sleep(Duration::from_millis(5)),
            Work::Spin(Duration::from_millis(5)),
        ] {
            let t = Instant::now();
            w.run();
            assert!(t.elapsed() >= Duration::from_millis(5));
        }
    }

    #[test]
    fn no_jobs_finishes_at_once() {
        let r = run_jobs(2, &[], Offload::Inline).unwrap();
        assert!(r.ticks >= 1);
    }

    #[test]
    fn cpu_loop_inline_also_stalls_the_ticker() {
        let jobs = vec![Work::Spin(Duration::from_millis(30)); 2];
        let r = run_jobs(1, &jobs, Offload::Inline).unwrap();
        // One worker, two 30 ms loops back to back: the ticker waits for
        // at least one of them.
        assert!(r.ticker_max_ms >= 25.0, "{r:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn sleeping_jobs_are_seeded_and_in_range(seed: u64, n in 0usize..50) {
            let mean = Duration::from_millis(10);
            let a = sleeping_jobs(seed, n, mean);
            prop_assert_eq!(&a, &sleeping_jobs(seed, n, mean));
            prop_assert_eq!(a.len(), n);
            for w in a {
                let Work::Sleep(d) = w else { panic!("not a sleep") };
                prop_assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(15));
            }
        }
    }

    #[test]
    fn small_lesson_shows_the_stall() {
        let r = lesson_with(3, 2, 4, Duration::from_millis(30));
        // Both workers block for at least one job (>= 15 ms) inline.
        assert!(r.naive["ticker_max_ms"] >= 14.0, "{}", r.table());
        assert!(r.naive["total_ms"] > r.optimal["total_ms"], "{}", r.table());
    }
}
