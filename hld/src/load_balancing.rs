//! Load balancing over heterogeneous servers: round robin against least
//! connections and the power of two choices.
//!
//! **The naive way**, round robin, hands request `i` to server `i mod n`.
//! Every server gets the same share whatever its speed and whatever it is
//! stuck on, so a slow server (older hardware, a noisy neighbour, a GC pause)
//! or one that drew a few long jobs builds a queue while others idle. With
//! heterogeneous servers its share can exceed its capacity: its queue then
//! grows for as long as the traffic lasts, and the tail latency with it.
//!
//! **The optimal ways** look at the load:
//! - *least connections*: send to the server with the fewest outstanding
//!   requests (in service plus queued). A slow server drains slowly, so it
//!   keeps more outstanding and gets less new work: speed is learned for
//!   free. O(n) per pick (or O(log n) with a heap), and it needs a global,
//!   fresh view of every server.
//! - *power of two choices* (Mitzenmacher, 1996; Envoy's default
//!   `LEAST_REQUEST`, NGINX `random two least_conn`): pick two servers at
//!   random and send to the less loaded. O(1) per pick, works with stale or
//!   partial views, avoids the herd that pure least-connections causes when
//!   many balancers see the same "least" server, and its maximum load is
//!   exponentially better than one random choice (`log log n` vs
//!   `log n / log log n`).
//!
//! The experiment is a discrete-event simulation on a virtual clock: Poisson
//! arrivals, a mix of fast and slow jobs, fast and slow servers, each server
//! one FIFO worker.

use crate::circuit_breaker::quantile;
use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

/// The lesson's command-line name.
pub const NAME: &str = "load-balancing";
/// A short human title.
pub const TITLE: &str = "Load balancing: round robin vs least connections vs power of two choices";

/// Chooses a server given each server's outstanding requests.
pub trait Balancer {
    /// The index of the chosen server; `None` if there are no servers.
    fn pick(&mut self, outstanding: &[usize], rng: &mut StdRng) -> Option<usize>;
}

/// Server `i mod n` for the `i`-th request.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Balancer for RoundRobin {
    fn pick(&mut self, outstanding: &[usize], _rng: &mut StdRng) -> Option<usize> {
        if outstanding.is_empty() {
            return None;
        }
        let i = self.next % outstanding.len();
        self.next = (i + 1) % outstanding.len();
        Some(i)
    }
}

/// The server with the fewest outstanding requests; ties go to the first
/// one after the previous pick (so equal servers share the work).
#[derive(Debug, Clone, Default)]
pub struct LeastConnections {
    start: usize,
}

impl Balancer for LeastConnections {
    fn pick(&mut self, outstanding: &[usize], _rng: &mut StdRng) -> Option<usize> {
        let n = outstanding.len();
        let best = (0..n)
            .map(|k| (self.start + k) % n)
            .min_by_key(|&i| outstanding[i])?;
        self.start = (best + 1) % n;
        Some(best)
    }
}

/// Two distinct servers at random, the less loaded of them.
#[derive(Debug, Clone, Default)]
pub struct PowerOfTwo;

impl Balancer for PowerOfTwo {
    fn pick(&mut self, outstanding: &[usize], rng: &mut StdRng) -> Option<usize> {
        let n = outstanding.len();
        match n {
            0 => None,
            1 => Some(0),
            _ => {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                Some(if outstanding[b] < outstanding[a] {
                    b
                } else {
                    a
                })
            }
        }
    }
}

/// One job: when it arrives and how much work it is (ms at speed 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    pub arrival_ms: f64,
    pub work_ms: f64,
}

/// The workload: Poisson arrivals at `rate_per_s`; 90 % of jobs are fast
/// (exponential, mean 5 ms of work), 10 % slow (mean 50 ms).
pub fn jobs(seed: u64, count: usize, rate_per_s: f64) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0.0;
    (0..count)
        .map(|_| {
            t += -(1.0 - rng.random::<f64>()).ln() * 1000.0 / rate_per_s.max(1e-9);
            let mean = if rng.random::<f64>() < 0.9 { 5.0 } else { 50.0 };
            Job {
                arrival_ms: t,
                work_ms: -(1.0 - rng.random::<f64>()).ln() * mean,
            }
        })
        .collect()
}

/// Runs `jobs` through servers of the given `speeds` (work done per ms),
/// each a single FIFO worker, with `balancer` choosing. Returns each job's
/// latency in ms (queueing plus service).
pub fn simulate(jobs: &[Job], speeds: &[f64], balancer: &mut dyn Balancer, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
    let mut busy_until = vec![0.0f64; speeds.len()];
    // Completion times of the jobs on each server, oldest first.
    let mut queues: Vec<VecDeque<f64>> = vec![VecDeque::new(); speeds.len()];
    let mut outstanding = vec![0usize; speeds.len()];
    let mut latencies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let now = job.arrival_ms;
        for (q, o) in queues.iter_mut().zip(outstanding.iter_mut()) {
            while q.front().is_some_and(|&c| c <= now) {
                q.pop_front();
            }
            *o = q.len();
        }
        let Some(s) = balancer.pick(&outstanding, &mut rng) else {
            break;
        };
        let speed = speeds[s].max(1e-9);
        let finish = busy_until[s].max(now) + job.work_ms / speed;
        busy_until[s] = finish;
        queues[s].push_back(finish);
        latencies.push(finish - now);
    }
    latencies
}

/// The experiment: `count` jobs over 4 fast servers (speed 1) and 4 slow
/// ones (speed 0.3) at 70 % of total capacity.
pub fn lesson_with(seed: u64, count: usize) -> LessonReport {
    let speeds = [1.0, 1.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.3];
    let capacity: f64 = speeds.iter().sum();
    let mean_work_ms = 0.9 * 5.0 + 0.1 * 50.0;
    let rate = 0.7 * capacity * 1000.0 / mean_work_ms;
    let input = jobs(seed, count, rate);
    let run = |b: &mut dyn Balancer| {
        let mut l = simulate(&input, &speeds, b, seed);
        (
            quantile(&mut l, 0.5),
            quantile(&mut l, 0.99),
            quantile(&mut l, 0.999),
        )
    };
    let rr = run(&mut RoundRobin::default());
    let lc = run(&mut LeastConnections::default());
    let p2 = run(&mut PowerOfTwo);
    LessonReport::new(NAME, TITLE)
        .both("p50_ms", rr.0, p2.0)
        .both("p99_ms", rr.1, p2.1)
        .both("p999_ms", rr.2, p2.2)
        .naive("round_robin_p50_ms", rr.0)
        .naive("round_robin_p99_ms", rr.1)
        .optimal("least_conn_p50_ms", lc.0)
        .optimal("least_conn_p99_ms", lc.1)
        .optimal("p2c_p50_ms", p2.0)
        .optimal("p2c_p99_ms", p2.1)
        .both("jobs", count as f64, count as f64)
        .notes(format!(
            "{count} jobs (90 % short, 10 % ten times longer) at {rate:.0}/s, 70 % of the capacity of 4 fast and 4 slow \
             (0.3x) servers. Round robin gives each slow server an eighth of the work, more than it can do, so its queue \
             grows all run: p99 {:.0} ms. Least connections (p99 {:.1} ms) and the power of two choices (the main \
             optimal column, p99 {:.1} ms) send less to whoever has a backlog, which learns server speed and job size \
             for free; P2C needs only two samples per pick and tolerates stale views, which is why Envoy (LEAST_REQUEST) \
             and NGINX use it. Beyond one balancer: Envoy or a service mesh with outlier detection and EWMA latency \
             (peak EWMA in Finagle/Linkerd), and L4 balancers (Maglev, Katran) in front with consistent hashing.",
            rr.1, lc.1, p2.1
        ))
}

/// The full experiment: 200,000 jobs.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 200_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_robin_cycles_and_empty_is_none() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut rr = RoundRobin::default();
        let picks: Vec<_> = (0..5).map(|_| rr.pick(&[9, 0, 0], &mut rng)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0), Some(1)]);
        assert_eq!(rr.pick(&[], &mut rng), None);
        assert_eq!(LeastConnections::default().pick(&[], &mut rng), None);
        assert_eq!(PowerOfTwo.pick(&[], &mut rng), None);
        assert_eq!(PowerOfTwo.pick(&[7], &mut rng), Some(0));
    }

    #[test]
    fn least_connections_picks_the_least_and_rotates_ties() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut lc = LeastConnections::default();
        assert_eq!(lc.pick(&[3, 1, 2], &mut rng), Some(1));
        assert_eq!(lc.pick(&[0, 0, 0], &mut rng), Some(2));
        assert_eq!(lc.pick(&[0, 0, 0], &mut rng), Some(0));
    }

    #[test]
    fn fifo_server_queues_jobs() {
        let jobs = [
            Job {
                arrival_ms: 0.0,
                work_ms: 10.0,
            },
            Job {
                arrival_ms: 1.0,
                work_ms: 10.0,
            },
        ];
        let l = simulate(&jobs, &[0.5], &mut RoundRobin::default(), 0);
        assert_eq!(l, vec![20.0, 39.0]);
    }

    #[test]
    fn load_aware_policies_beat_round_robin() {
        let r = lesson_with(42, 20_000);
        let (n, o) = (&r.naive, &r.optimal);
        assert!(o["p2c_p99_ms"] < 0.5 * n["p99_ms"], "{}", r.table());
        assert!(o["least_conn_p99_ms"] < 0.5 * n["p99_ms"], "{}", r.table());
        assert!(o["p50_ms"] < n["p50_ms"], "{}", r.table());
    }

    proptest! {
        #[test]
        fn least_connections_is_a_minimum(loads in proptest::collection::vec(0usize..20, 1..16), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let i = LeastConnections::default().pick(&loads, &mut rng).unwrap();
            prop_assert_eq!(loads[i], *loads.iter().min().unwrap());
        }

        /// Two distinct choices: P2C never picks the unique most-loaded server.
        #[test]
        fn p2c_never_picks_the_unique_maximum(loads in proptest::collection::vec(0usize..20, 2..16), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let max = *loads.iter().max().unwrap();
            let unique = loads.iter().filter(|&&l| l == max).count() == 1;
            let i = PowerOfTwo.pick(&loads, &mut rng).unwrap();
            prop_assert!(!unique || loads[i] < max);
        }
    }
}
