//! Scaling out: one big server against N small nodes behind a round-robin
//! balancer, measured against Amdahl's law.
//!
//! **The pattern.** When one server is saturated you can buy a faster one
//! (vertical scaling) or add more servers behind a load balancer
//! (horizontal scaling). Horizontal scaling has no hardware ceiling, but any
//! work that must happen one request at a time (a global lock, a single
//! primary database row, a leader) caps it.
//!
//! **The model.** Every request needs `W` of work. A fraction `s` of it is
//! the *serialized section*: it runs under the exclusive side of one lock
//! shared by the whole cluster. The rest runs on the request's node under
//! the shared side of that lock (it reads the state the serialized section
//! writes). The lock grants in FIFO order, so a waiting writer holds back
//! later readers, as database lock managers and fair read-write locks do.
//! The serialized section therefore stops the whole cluster while it runs,
//! which is exactly Amdahl's assumption, and throughput follows
//! `X(N) = X(1) / (s + (1 - s) / N)`. [`LockModel::Mutex`] is the gentler
//! variant where only the serialized section locks: its throughput follows
//! the bottleneck bound `min(N / W, 1 / (s W))` instead.
//!
//! **The simulation.** The host has 2 cores, so real threads could not show
//! 16 nodes. [`simulate`] is a discrete-event simulation on a virtual clock
//! (integer nanoseconds): requests are handed to nodes round-robin, service
//! times come from a seeded generator, and the lock is an explicit FIFO
//! queue. The result depends only on the inputs, never on the host.
//!
//! **Complexity.** O(R log N) events for R requests on N nodes.

use crate::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// The lesson's command-line name.
pub const NAME: &str = "scaling";
/// A short human title.
pub const TITLE: &str = "Scaling: one big server vs N nodes (Amdahl's law)";

/// How the serialized section excludes other work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockModel {
    /// Parallel work holds the lock shared, the serialized section holds it
    /// exclusively, grants in FIFO order (Amdahl's model).
    StopTheWorld,
    /// Only the serialized section takes the lock (a plain mutex).
    Mutex,
}

/// One simulated cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cluster {
    pub nodes: usize,
    /// Work per request on one node, in virtual microseconds.
    pub work_us: f64,
    /// Share of each request's work inside the serialized section (0..=1).
    pub serial_fraction: f64,
    /// Each service time is scaled by a uniform factor in `1 ± jitter`
    /// (0 = deterministic, must stay below 1).
    pub jitter: f64,
    /// Speed of each node's CPU (1 = baseline; a vertical upgrade raises it).
    pub speed: f64,
    pub lock: LockModel,
}

impl Cluster {
    /// `nodes` baseline nodes, 1 ms requests, the given serial fraction, no
    /// jitter, stop-the-world lock.
    pub fn new(nodes: usize, serial_fraction: f64) -> Self {
        Self {
            nodes,
            work_us: 1000.0,
            serial_fraction,
            jitter: 0.0,
            speed: 1.0,
            lock: LockModel::StopTheWorld,
        }
    }
}

/// Bad simulation parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalingError {
    #[error("invalid cluster: {0}")]
    Invalid(&'static str),
}

/// What one simulation measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimResult {
    pub completed: usize,
    /// Virtual time from the first request to the last completion, seconds.
    pub makespan_s: f64,
    /// Requests per virtual second.
    pub throughput: f64,
    /// Share of node-time spent waiting for the lock.
    pub lock_wait_fraction: f64,
}

/// Amdahl's speedup on `n` processors with serial fraction `s`.
pub fn amdahl_speedup(s: f64, n: usize) -> f64 {
    1.0 / (s + (1.0 - s) / n.max(1) as f64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    ParallelDone,
    SerialDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Exclusive,
}

struct Sim {
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, usize, Phase)>>,
    queue: VecDeque<(usize, Mode, u64)>,
    readers: usize,
    writer: bool,
    waited_ns: u64,
    /// (parallel, serial) durations of each node's current request.
    current: Vec<(u64, u64)>,
}

impl Sim {
    fn schedule(&mut self, at: u64, node: usize, phase: Phase) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, node, phase)));
    }

    /// Grants the lock to waiters at the head of the FIFO queue.
    fn grant(&mut self) {
        while let Some(&(node, mode, since)) = self.queue.front() {
            let ok = match mode {
                Mode::Shared => !self.writer,
                Mode::Exclusive => !self.writer && self.readers == 0,
            };
            if !ok {
                break;
            }
            self.queue.pop_front();
            self.waited_ns += self.now - since;
            let (p, c) = self.current[node];
            match mode {
                Mode::Shared => {
                    self.readers += 1;
                    self.schedule(self.now + p, node, Phase::ParallelDone);
                }
                Mode::Exclusive => {
                    self.writer = true;
                    self.schedule(self.now + c, node, Phase::SerialDone);
                    break;
                }
            }
        }
    }
}

/// Simulates `requests` requests handed round-robin to the cluster's nodes,
/// all queued at time 0 (a saturating load), and returns the throughput.
pub fn simulate(cluster: &Cluster, requests: usize, seed: u64) -> Result<SimResult, ScalingError> {
    let c = cluster;
    if c.nodes == 0 {
        return Err(ScalingError::Invalid("need at least one node"));
    }
    if !(0.0..=1.0).contains(&c.serial_fraction) {
        return Err(ScalingError::Invalid("serial_fraction must be in 0..=1"));
    }
    if !(0.0..1.0).contains(&c.jitter) {
        return Err(ScalingError::Invalid("jitter must be in 0..1"));
    }
    if !(c.work_us.is_finite() && c.work_us > 0.0 && c.speed.is_finite() && c.speed > 0.0) {
        return Err(ScalingError::Invalid("work_us and speed must be positive"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let work_ns = c.work_us * 1000.0 / c.speed;
    let mut draw = |share: f64| -> u64 {
        let f = if c.jitter > 0.0 {
            rng.random_range(1.0 - c.jitter..1.0 + c.jitter)
        } else {
            1.0
        };
        (work_ns * share * f).round() as u64
    };
    // Round-robin balancer: request i goes to node i % N.
    let mut backlog: Vec<VecDeque<(u64, u64)>> = vec![VecDeque::new(); c.nodes];
    for i in 0..requests {
        let p = draw(1.0 - c.serial_fraction);
        let s = draw(c.serial_fraction);
        backlog[i % c.nodes].push_back((p, s));
    }
    let mut sim = Sim {
        now: 0,
        seq: 0,
        events: BinaryHeap::new(),
        queue: VecDeque::new(),
        readers: 0,
        writer: false,
        waited_ns: 0,
        current: vec![(0, 0); c.nodes],
    };
    // Starts the node's next request: the parallel part, under the shared
    // lock (stop-the-world) or with no lock (mutex).
    let start_next = |sim: &mut Sim, node: usize, backlog: &mut Vec<VecDeque<(u64, u64)>>| {
        if let Some(req) = backlog[node].pop_front() {
            sim.current[node] = req;
            match c.lock {
                LockModel::StopTheWorld => sim.queue.push_back((node, Mode::Shared, sim.now)),
                LockModel::Mutex => sim.schedule(sim.now + req.0, node, Phase::ParallelDone),
            }
        }
    };
    for node in 0..c.nodes {
        start_next(&mut sim, node, &mut backlog);
    }
    sim.grant();
    let mut completed = 0;
    while let Some(Reverse((at, _, node, phase))) = sim.events.pop() {
        sim.now = at;
        match phase {
            Phase::ParallelDone => {
                if c.lock == LockModel::StopTheWorld {
                    sim.readers -= 1;
                }
                if sim.current[node].1 == 0 {
                    // No serialized work: nothing to lock, the request is done.
                    completed += 1;
                    start_next(&mut sim, node, &mut backlog);
                } else {
                    sim.queue.push_back((node, Mode::Exclusive, sim.now));
                }
            }
            Phase::SerialDone => {
                sim.writer = false;
                completed += 1;
                start_next(&mut sim, node, &mut backlog);
            }
        }
        sim.grant();
    }
    let makespan_s = sim.now as f64 / 1e9;
    Ok(SimResult {
        completed,
        makespan_s,
        throughput: if makespan_s > 0.0 {
            completed as f64 / makespan_s
        } else {
            0.0
        },
        lock_wait_fraction: if sim.now > 0 {
            sim.waited_ns as f64 / (sim.now as f64 * c.nodes as f64)
        } else {
            0.0
        },
    })
}

/// The node counts the lesson simulates.
pub const NODE_COUNTS: [usize; 5] = [1, 2, 4, 8, 16];

/// Runs the experiment: one server, then 1..16 nodes, serial fraction
/// `serial_fraction`, `requests` requests per run, 5% service-time jitter.
pub fn lesson_with(seed: u64, serial_fraction: f64, requests: usize) -> LessonReport {
    let base = Cluster {
        jitter: 0.05,
        ..Cluster::new(1, serial_fraction)
    };
    let single = match simulate(&base, requests, seed) {
        Ok(r) => r,
        Err(e) => return LessonReport::new(NAME, TITLE).notes(format!("bad parameters: {e}")),
    };
    let mut report = LessonReport::new(NAME, TITLE)
        .naive("throughput", single.throughput)
        .naive("nodes", 1.0)
        .both("serial_fraction", serial_fraction, serial_fraction);
    let mut max_err: f64 = 0.0;
    let mut top = single;
    for &n in &NODE_COUNTS {
        let Ok(r) = simulate(&Cluster { nodes: n, ..base }, requests, seed) else {
            continue;
        };
        let amdahl = single.throughput * amdahl_speedup(serial_fraction, n);
        max_err = max_err.max((r.throughput / amdahl - 1.0).abs());
        report = report
            .optimal(&format!("throughput_{n}"), r.throughput)
            .optimal(&format!("amdahl_{n}"), amdahl);
        top = r;
    }
    let nmax = NODE_COUNTS[NODE_COUNTS.len() - 1];
    let mutex = simulate(
        &Cluster {
            nodes: nmax,
            lock: LockModel::Mutex,
            ..base
        },
        requests,
        seed,
    )
    .ok();
    let mutex_x = mutex.map_or(0.0, |m| m.throughput);
    report
        .optimal("throughput", top.throughput)
        .optimal("nodes", nmax as f64)
        .optimal("speedup", top.throughput / single.throughput)
        .optimal("amdahl_limit_speedup", 1.0 / serial_fraction.max(1e-12))
        .optimal("amdahl_max_error", max_err)
        .optimal("lock_wait_fraction", top.lock_wait_fraction)
        .optimal(&format!("throughput_{nmax}_mutex_only"), mutex_x)
        .notes(format!(
            "A discrete-event simulation on a virtual clock (the host has 2 cores, so real threads could \
             not show 16 nodes): 1 ms requests handed round-robin, {:.0}% of each request inside a \
             cluster-wide serialized section. {nmax} nodes give {:.2}x the single server, against Amdahl's \
             {:.2}x (largest deviation {:.1}%, from waiting on the slowest of the parallel parts), and \
             never more than 1/s = {:.0}x however many nodes are added: the nodes spend {:.0}% of their time \
             waiting on the lock. If only the serialized section locks (a mutex), nodes overlap it with \
             other nodes' parallel work and reach {:.2}x, bounded by min(N, 1/s). The one big server scales \
             linearly with its CPU speed but hits a hardware and price ceiling; past that, shrink s \
             (partition the shared state, shard the lock, make the section asynchronous).",
            serial_fraction * 100.0,
            top.throughput / single.throughput,
            amdahl_speedup(serial_fraction, nmax),
            max_err * 100.0,
            1.0 / serial_fraction.max(1e-12),
            top.lock_wait_fraction * 100.0,
            mutex_x / single.throughput,
        ))
}

/// The lesson at full size: s = 5%, 20k requests per run.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 0.05, 20_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_clusters() {
        assert!(simulate(&Cluster::new(0, 0.1), 10, 0).is_err());
        assert!(simulate(&Cluster::new(2, 1.5), 10, 0).is_err());
        assert!(simulate(
            &Cluster {
                jitter: 1.0,
                ..Cluster::new(2, 0.1)
            },
            10,
            0
        )
        .is_err());
        assert!(simulate(
            &Cluster {
                speed: 0.0,
                ..Cluster::new(2, 0.1)
            },
            10,
            0
        )
        .is_err());
    }

    #[test]
    fn one_node_and_vertical_scaling() {
        // One node does one request per W: 1000 req/s for 1 ms requests.
        let r = simulate(&Cluster::new(1, 0.2), 500, 1).unwrap();
        assert_eq!(r.completed, 500);
        assert!((r.throughput - 1000.0).abs() < 1e-6, "{}", r.throughput);
        assert_eq!(r.lock_wait_fraction, 0.0);
        // A 3x faster single server is 3x the throughput.
        let fast = simulate(
            &Cluster {
                speed: 3.0,
                ..Cluster::new(1, 0.2)
            },
            500,
            1,
        )
        .unwrap();
        assert!((fast.throughput / r.throughput - 3.0).abs() < 1e-4);
    }

    #[test]
    fn deterministic_simulation_matches_amdahl_exactly() {
        for &s in &[0.0, 0.05, 0.2, 0.5, 1.0] {
            for &n in &NODE_COUNTS {
                // Requests a multiple of n, so the last round is full.
                let r = simulate(&Cluster::new(n, s), 1600, 0).unwrap();
                let want = 1000.0 * amdahl_speedup(s, n);
                assert!(
                    (r.throughput / want - 1.0).abs() < 1e-3,
                    "s={s} n={n}: {} vs {want}",
                    r.throughput
                );
            }
        }
    }

    #[test]
    fn jittered_simulation_is_within_a_few_percent_of_amdahl() {
        for &n in &NODE_COUNTS {
            let c = Cluster {
                jitter: 0.05,
                ..Cluster::new(n, 0.05)
            };
            let x1 = simulate(&Cluster { nodes: 1, ..c }, 8000, 3)
                .unwrap()
                .throughput;
            let r = simulate(&c, 8000, 3).unwrap();
            let want = x1 * amdahl_speedup(0.05, n);
            assert!(
                (r.throughput / want - 1.0).abs() < 0.04,
                "n={n}: {} vs {want}",
                r.throughput
            );
        }
    }

    #[test]
    fn mutex_only_follows_the_bottleneck_bound() {
        // s = 0.1: the lock saturates at 10 nodes; below that, nodes overlap.
        let four = simulate(
            &Cluster {
                lock: LockModel::Mutex,
                ..Cluster::new(4, 0.1)
            },
            4000,
            0,
        )
        .unwrap();
        assert!(
            (four.throughput / 4000.0 - 1.0).abs() < 0.01,
            "{}",
            four.throughput
        );
        let many = simulate(
            &Cluster {
                lock: LockModel::Mutex,
                ..Cluster::new(16, 0.1)
            },
            4000,
            0,
        )
        .unwrap();
        assert!(
            (many.throughput / 10_000.0 - 1.0).abs() < 0.01,
            "{}",
            many.throughput
        );
        assert!(
            many.throughput > 1000.0 * amdahl_speedup(0.1, 16),
            "Amdahl is the pessimistic bound"
        );
    }

    #[test]
    fn lesson_shows_amdahl() {
        let r = lesson_with(42, 0.05, 3200);
        assert!((r.naive["throughput"] / 1000.0 - 1.0).abs() < 0.05);
        let speedup = r.optimal["speedup"];
        assert!(speedup > 8.0 && speedup < 10.0, "{speedup}");
        assert!(r.optimal["amdahl_max_error"] < 0.05);
        assert!(r.optimal["throughput_2"] < r.optimal["throughput_4"]);
        assert!(r.optimal["throughput_16_mutex_only"] > r.optimal["throughput_16"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Throughput never beats either Amdahl bound component: N nodes'
        /// worth of work, or one serialized section at a time; and every
        /// request completes.
        #[test]
        fn bounded_and_complete(
            n in 1usize..20, s in 0.0f64..1.0, jitter in 0.0f64..0.5,
            requests in 1usize..400, seed in any::<u64>(), mutex in any::<bool>(),
        ) {
            let lock = if mutex { LockModel::Mutex } else { LockModel::StopTheWorld };
            let c = Cluster { jitter, lock, ..Cluster::new(n, s) };
            let r = simulate(&c, requests, seed).unwrap();
            prop_assert_eq!(r.completed, requests);
            let slack = 1.0 / (1.0 - jitter);
            prop_assert!(r.throughput <= 1000.0 * n as f64 * slack * 1.0001);
            if s > 0.0 {
                prop_assert!(r.throughput <= 1000.0 / s * slack * 1.0001);
            }
        }
    }
}
