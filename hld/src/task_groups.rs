//! Task groups (structured concurrency): detached `tokio::spawn` against a
//! `JoinSet` that owns its tasks.
//!
//! **The pattern.** A request fans out into several concurrent subtasks
//! (fetch from three services, score ten shards) and must return one answer
//! or one error. Structured concurrency says: subtasks live inside a scope,
//! the scope does not end until every one of them has finished or been
//! cancelled, and every error reaches the code that opened the scope.
//!
//! **The naive way** ([`Strategy::Detached`]) spawns each subtask with
//! `tokio::spawn`, keeps the `JoinHandle`s in a `Vec`, and awaits them in
//! order with `?`. Three things go wrong when one subtask fails. The caller
//! only notices the failure when it reaches that handle in the list, after
//! waiting for all the ones before it (`detect_ms`). It then returns early,
//! dropping the remaining handles, and dropping a tokio `JoinHandle`
//! *detaches* the task, it does not stop it: the siblings keep running
//! after the request is over (`leaked_tasks`), burning CPU, connections and
//! memory for an answer nobody will read (`work_after_failure`,
//! `wasted_work_ms`). And a second failure in a detached task ends up in a
//! handle nobody awaits: it is silently lost (`errors_lost`).
//!
//! **The optimal way** ([`Strategy::JoinSet`]) puts the subtasks in a
//! `tokio::task::JoinSet`, a task group. `join_next` hands back results in
//! the order they *complete*, so the first error is seen at once; the
//! caller then calls `abort_all` and keeps draining `join_next` until the
//! set is empty, so every error that raced in is seen and nothing is still
//! running when the scope returns (a dropped `JoinSet` also aborts its
//! tasks, so even an early `return` cannot leak them). Results: 0 leaked
//! tasks, 0 lost errors, almost no work after the failure.
//!
//! Numbers to look at: `leaked_tasks` (still running when the caller
//! returned), `errors_raised` against `errors_seen` (`errors_lost`), and
//! `work_after_failure`. The same idea is Python's `asyncio.TaskGroup` and
//! trio's nurseries, Kotlin's `coroutineScope`, Go's `errgroup` with a
//! cancelled context, and `std::thread::scope` for threads. (`futures`'
//! `try_join_all` over un-spawned futures also cancels, by dropping them.)

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "task-groups";
/// A short human title.
pub const TITLE: &str =
    "Task groups: detached tokio::spawn handles against a JoinSet that cancels and collects";

/// How the caller runs its subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `tokio::spawn` each, await the handles in order with `?`.
    Detached,
    /// A `JoinSet`: results as they complete, `abort_all` on the first
    /// error, drain until empty.
    JoinSet,
}

/// One subtask: `steps` steps of `step` each; if `fail_at` is set, it
/// fails after that many steps instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub steps: u32,
    pub fail_at: Option<u32>,
}

/// Counters the subtasks share with the experiment.
#[derive(Debug, Default)]
pub struct Shared {
    /// Subtasks running now (a guard decrements on finish, error or abort).
    pub running: AtomicUsize,
    pub steps_done: AtomicU64,
    /// Steps done after the first failure happened.
    pub steps_after_failure: AtomicU64,
    pub failed: AtomicBool,
    /// When the first subtask failed.
    pub failed_at: std::sync::Mutex<Option<Instant>>,
    pub errors_raised: AtomicU64,
}

/// Decrements `running` when the subtask ends in any way, including being
/// dropped by `abort`.
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A subtask's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub job: usize,
}

async fn subtask(
    id: usize,
    job: Job,
    step: Duration,
    shared: Arc<Shared>,
) -> Result<u64, JobError> {
    shared.running.fetch_add(1, Ordering::SeqCst);
    let _guard = RunningGuard(shared.clone());
    let mut acc = id as u64;
    for s in 0..job.steps {
        if job.fail_at == Some(s) {
            shared
                .failed_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(Instant::now);
            shared.failed.store(true, Ordering::SeqCst);
            shared.errors_raised.fetch_add(1, Ordering::SeqCst);
            return Err(JobError { job: id });
        }
        // The "work": an I/O wait, then a little bookkeeping.
        tokio::time::sleep(step).await;
        shared.steps_done.fetch_add(1, Ordering::SeqCst);
        if shared.failed.load(Ordering::SeqCst) {
            shared.steps_after_failure.fetch_add(1, Ordering::SeqCst);
        }
        acc = acc.wrapping_mul(31).wrapping_add(s as u64);
    }
    Ok(acc)
}

/// The naive caller: detached spawns, handles awaited in order.
async fn detached(
    jobs: &[Job],
    step: Duration,
    shared: &Arc<Shared>,
) -> (Result<u64, JobError>, u64) {
    let handles: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| tokio::spawn(subtask(i, *j, step, shared.clone())))
        .collect();
    let mut sum = 0u64;
    for h in handles {
        match h.await {
            Ok(Ok(v)) => sum = sum.wrapping_add(v),
            // `?`-style early return: the handles not yet awaited are
            // dropped here, which detaches (does not cancel) their tasks.
            Ok(Err(e)) => return (Err(e), 1),
            Err(_) => return (Err(JobError { job: usize::MAX }), 1),
        }
    }
    (Ok(sum), 0)
}

/// The structured caller: a JoinSet; cancel siblings on the first error,
/// drain to the end.
async fn joinset(
    jobs: &[Job],
    step: Duration,
    shared: &Arc<Shared>,
) -> (Result<u64, JobError>, u64) {
    let mut set = tokio::task::JoinSet::new();
    for (i, j) in jobs.iter().enumerate() {
        set.spawn(subtask(i, *j, step, shared.clone()));
    }
    let mut sum = 0u64;
    let mut first_err: Option<JobError> = None;
    let mut errors_seen = 0;
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok(v)) => sum = sum.wrapping_add(v),
            Ok(Err(e)) => {
                errors_seen += 1;
                if first_err.is_none() {
                    set.abort_all();
                    first_err = Some(e);
                }
            }
            // A cancelled sibling: expected after abort_all.
            Err(e) if e.is_cancelled() => {}
            Err(_) => {
                errors_seen += 1;
                first_err.get_or_insert(JobError { job: usize::MAX });
            }
        }
    }
    (first_err.map_or(Ok(sum), Err), errors_seen)
}

/// What one request measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRun {
    pub result: Result<u64, JobError>,
    /// Subtasks still running when the caller returned.
    pub leaked_tasks: usize,
    pub errors_raised: u64,
    pub errors_seen: u64,
    pub errors_lost: u64,
    /// Time from the first failure to the caller returning.
    pub detect_ms: f64,
    pub caller_ms: f64,
    pub steps_done: u64,
    pub work_after_failure: u64,
}

/// Runs one request with `strategy` on a fresh 2-worker runtime, then
/// waits for any leaked subtasks to end so that their work and their
/// errors are counted too.
pub fn run_group(jobs: &[Job], step: Duration, strategy: Strategy) -> GroupRun {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let shared = Arc::new(Shared::default());
    rt.block_on(async {
        let t0 = Instant::now();
        let (result, errors_seen) = match strategy {
            Strategy::Detached => detached(jobs, step, &shared).await,
            Strategy::JoinSet => joinset(jobs, step, &shared).await,
        };
        let returned = Instant::now();
        let leaked_tasks = shared.running.load(Ordering::SeqCst);
        // The caller has returned; let the leaked tasks run out.
        while shared.running.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let failed_at = *shared.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        let errors_raised = shared.errors_raised.load(Ordering::SeqCst);
        GroupRun {
            result,
            leaked_tasks,
            errors_raised,
            errors_seen,
            errors_lost: errors_raised.saturating_sub(errors_seen),
            detect_ms: failed_at.map_or(0.0, |f| {
                returned.saturating_duration_since(f).as_secs_f64() * 1e3
            }),
            caller_ms: returned.duration_since(t0).as_secs_f64() * 1e3,
            steps_done: shared.steps_done.load(Ordering::SeqCst),
            work_after_failure: shared.steps_after_failure.load(Ordering::SeqCst),
        }
    })
}

/// `n` subtasks of seeded length (`min_steps` to `3 x min_steps`, job 0 the
/// shortest, a quick lookup); job 1 fails after 2 steps and the last job
/// after 4 (two failures, the second while the first is being handled).
pub fn seeded_jobs(seed: u64, n: usize, min_steps: u32) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    let min_steps = min_steps.max(5);
    let mut jobs: Vec<Job> = (0..n)
        .map(|_| Job {
            steps: rng.random_range(min_steps..=3 * min_steps),
            fail_at: None,
        })
        .collect();
    if let Some(j) = jobs.first_mut() {
        j.steps = min_steps;
    }
    if n >= 3 {
        jobs[1].fail_at = Some(2);
        jobs[n - 1].fail_at = Some(4);
    }
    jobs
}

/// The experiment: one fan-out request run both ways.
pub fn lesson_with(seed: u64, n: usize, min_steps: u32, step: Duration) -> LessonReport {
    let jobs = seeded_jobs(seed, n, min_steps);
    let naive = run_group(&jobs, step, Strategy::Detached);
    let optimal = run_group(&jobs, step, Strategy::JoinSet);
    let step_ms = step.as_secs_f64() * 1e3;
    let side = |g: &GroupRun| {
        [
            ("leaked_tasks", g.leaked_tasks as f64),
            ("errors_raised", g.errors_raised as f64),
            ("errors_seen", g.errors_seen as f64),
            ("errors_lost", g.errors_lost as f64),
            ("detect_ms", g.detect_ms),
            ("caller_ms", g.caller_ms),
            ("steps_done", g.steps_done as f64),
            ("work_after_failure", g.work_after_failure as f64),
            ("wasted_work_ms", g.work_after_failure as f64 * step_ms),
            ("returned_error", if g.result.is_err() { 1.0 } else { 0.0 }),
        ]
    };
    let mut r = LessonReport::new(NAME, TITLE)
        .both("subtasks", n as f64, n as f64)
        .both("step_ms", step_ms, step_ms);
    for ((k, a), (_, b)) in side(&naive).into_iter().zip(side(&optimal)) {
        r = r.both(k, a, b);
    }
    r.notes(format!(
        "One request fanned out into {n} subtasks of {step_ms:.0} ms steps; subtask 1 failed early and the last \
         one a little later. Awaiting detached JoinHandles in order, the caller saw the failure {:.0} ms after it \
         happened, returned, and left {} subtasks running: they did {} more steps ({:.0} ms of work) for a \
         request that had already failed, and the second error ({} lost of {}) went into a handle nobody awaited. \
         The JoinSet saw the error as it completed ({:.1} ms), aborted the siblings and drained the set: {} \
         leaked, {} errors lost, {} steps after the failure. Dropping a JoinHandle detaches; dropping a JoinSet \
         aborts. Python's asyncio.TaskGroup, trio nurseries, Go's errgroup and Kotlin's coroutineScope give the \
         same guarantee: no task outlives its scope and no error goes unseen.",
        naive.detect_ms,
        naive.leaked_tasks,
        naive.work_after_failure,
        naive.work_after_failure as f64 * step_ms,
        naive.errors_lost,
        naive.errors_raised,
        optimal.detect_ms,
        optimal.leaked_tasks,
        optimal.errors_lost,
        optimal.work_after_failure,
    ))
}

/// The full-size experiment: 12 subtasks of 10 to 30 steps of 5 ms.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 12, 10, Duration::from_millis(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(2);

    #[test]
    fn without_failures_both_collect_the_same_sum_and_leak_nothing() {
        let jobs: Vec<Job> = (0..6)
            .map(|i| Job {
                steps: 3 + i,
                fail_at: None,
            })
            .collect();
        let a = run_group(&jobs, STEP, Strategy::Detached);
        let b = run_group(&jobs, STEP, Strategy::JoinSet);
        assert!(a.result.is_ok());
        assert_eq!(a.result, b.result);
        for g in [&a, &b] {
            assert_eq!((g.leaked_tasks, g.errors_raised, g.errors_lost), (0, 0, 0));
            assert_eq!(g.steps_done, (3..9).sum::<u32>() as u64);
        }
    }

    #[test]
    fn joinset_cancels_siblings_and_sees_every_error() {
        let jobs = seeded_jobs(5, 8, 10);
        let g = run_group(&jobs, STEP, Strategy::JoinSet);
        assert_eq!(g.result, Err(JobError { job: 1 }));
        assert_eq!(g.leaked_tasks, 0);
        assert_eq!(g.errors_lost, 0);
        assert_eq!(g.errors_seen, g.errors_raised);
        // The siblings were aborted long before finishing their >= 10 steps.
        assert!(g.steps_done < 8 * 10, "{g:?}");
    }

    #[test]
    fn detached_handles_leak_tasks_and_lose_the_second_error() {
        // Job 0 takes 10 steps, jobs 2 to 4 take 40: when the caller gets
        // to job 1's error they are far from done.
        let mut jobs = seeded_jobs(5, 6, 10);
        for j in &mut jobs[2..5] {
            j.steps = 40;
        }
        let g = run_group(&jobs, STEP, Strategy::Detached);
        assert_eq!(g.result, Err(JobError { job: 1 }));
        assert_eq!((g.errors_raised, g.errors_seen, g.errors_lost), (2, 1, 1));
        assert!(g.work_after_failure > 0, "{g:?}");
        assert!(g.leaked_tasks >= 1, "{g:?}");
        // The detached tasks ran to the end after the caller returned.
        let full: u64 = jobs
            .iter()
            .map(|j| j.fail_at.unwrap_or(j.steps) as u64)
            .sum();
        assert_eq!(g.steps_done, full);
    }

    #[test]
    fn jobs_are_seeded_with_two_failures() {
        let a = seeded_jobs(1, 10, 10);
        assert_eq!(a, seeded_jobs(1, 10, 10));
        assert_eq!(a.iter().filter(|j| j.fail_at.is_some()).count(), 2);
        assert!(a.iter().all(|j| (10..=30).contains(&j.steps)));
    }

    #[test]
    fn small_lesson_shows_the_effect() {
        let r = lesson_with(2, 6, 8, STEP);
        assert_eq!(r.optimal["leaked_tasks"], 0.0, "{}", r.table());
        assert_eq!(r.optimal["errors_lost"], 0.0, "{}", r.table());
        assert_eq!(r.naive["errors_lost"], 1.0, "{}", r.table());
    }
}
