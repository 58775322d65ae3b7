//! CAP: what a replicated register does when the network splits. During a
//! partition a system must choose between answering every request
//! (availability) and never returning an out-of-date value (consistency);
//! this lesson runs both choices on the same requests and counts.
//!
//! The register is replicated on `n` nodes (3 in the lesson); each value
//! carries a [`Version`] `(stamp, node)`, ordered lexicographically.
//!
//! - **CP mode** (majority quorum, as in Raft/Paxos-based stores): a request
//!   is served only if the node it arrives at can reach a majority
//!   (`n / 2 + 1` nodes, itself included). A write reads the highest version
//!   on that majority, writes version `stamp + 1` to all of it; a read
//!   returns the highest version on a majority (and repairs the others). Any
//!   two majorities share a node, so every read sees the latest
//!   acknowledged write; the minority side of a partition rejects
//!   everything.
//! - **AP mode** (Dynamo-style, `W = R = 1`): every node accepts reads and
//!   writes locally; a write is stamped with the node's clock and pushed to
//!   the peers it can reach; a node keeps the higher version
//!   (last-writer-wins). When the partition heals, anti-entropy copies the
//!   highest version everywhere. Every request is answered, but during the
//!   partition each side reads its own, older, history.
//!
//! Neither is the optimal one: it is a choice (and when there is no
//! partition both are available and consistent here). The lesson puts CP in
//! the `naive` column and AP in the `optimal` column only because a report
//! has two columns. Each request costs `O(n)`.
//!
//! Requests are simulated on a virtual clock with a seeded RNG, one at a
//! time (so a read's "latest acknowledged write" is well defined and the
//! consistency check is a simple comparison: a read that does not return the
//! value of the last acknowledged write is a linearizability violation).

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The lesson's command-line name.
pub const NAME: &str = "cap";
/// A short human title.
pub const TITLE: &str =
    "CAP: a partitioned 3-node register in CP mode (majority quorum) vs AP mode (last-writer-wins)";

/// Which side of CAP the register takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Majority quorum: consistent, the minority side is unavailable.
    Cp,
    /// Local accept + last-writer-wins: available, stale during partitions.
    Ap,
}

/// A value's version: compared by `stamp`, then `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub stamp: u64,
    pub node: usize,
}

/// A stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub value: u64,
    pub version: Version,
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("node {node} reaches {reachable} of the {needed} nodes a quorum needs")]
    Unavailable {
        node: usize,
        reachable: usize,
        needed: usize,
    },
    #[error("there is no node {0}")]
    NoSuchNode(usize),
    #[error("a register needs at least one node")]
    NoNodes,
    #[error("a partition must give a side to each of the {0} nodes")]
    BadPartition(usize),
}

/// A register replicated on `n` nodes, with a network that may be
/// partitioned.
#[derive(Debug, Clone)]
pub struct Register {
    mode: Mode,
    nodes: Vec<Option<Stored>>,
    /// Side of each node while partitioned; `None` when fully connected.
    sides: Option<Vec<usize>>,
}

impl Register {
    pub fn new(mode: Mode, nodes: usize) -> Result<Self, CapError> {
        if nodes == 0 {
            return Err(CapError::NoNodes);
        }
        Ok(Self {
            mode,
            nodes: vec![None; nodes],
            sides: None,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Majority size, `n / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Cuts the network: nodes talk only to nodes with the same side label.
    pub fn partition(&mut self, sides: Vec<usize>) -> Result<(), CapError> {
        if sides.len() != self.nodes.len() {
            return Err(CapError::BadPartition(self.nodes.len()));
        }
        self.sides = Some(sides);
        Ok(())
    }

    /// Reconnects every node and runs anti-entropy: each node takes the
    /// highest version (in AP mode this is where last-writer-wins decides).
    pub fn heal(&mut self) {
        self.sides = None;
        let best = self
            .nodes
            .iter()
            .flatten()
            .max_by_key(|s| s.version)
            .copied();
        for n in &mut self.nodes {
            *n = best;
        }
    }

    pub fn is_partitioned(&self) -> bool {
        self.sides.is_some()
    }

    /// The nodes `node` can reach, itself included.
    pub fn reachable(&self, node: usize) -> Vec<usize> {
        match &self.sides {
            None => (0..self.nodes.len()).collect(),
            Some(s) => (0..self.nodes.len()).filter(|&i| s[i] == s[node]).collect(),
        }
    }

    /// What node `i` stores (for inspection).
    pub fn stored(&self, i: usize) -> Option<Stored> {
        self.nodes.get(i).copied().flatten()
    }

    fn check(&self, node: usize) -> Result<Vec<usize>, CapError> {
        if node >= self.nodes.len() {
            return Err(CapError::NoSuchNode(node));
        }
        let reach = self.reachable(node);
        if self.mode == Mode::Cp && reach.len() < self.quorum() {
            return Err(CapError::Unavailable {
                node,
                reachable: reach.len(),
                needed: self.quorum(),
            });
        }
        Ok(reach)
    }

    fn highest(&self, among: &[usize]) -> Option<Stored> {
        among
            .iter()
            .filter_map(|&i| self.nodes[i])
            .max_by_key(|s| s.version)
    }

    /// Keeps `s` on each of `on` that holds an older version.
    fn store(&mut self, on: &[usize], s: Stored) {
        for &i in on {
            if self.nodes[i].is_none_or(|old| old.version < s.version) {
                self.nodes[i] = Some(s);
            }
        }
    }

    /// Writes `value` through `node` at virtual time `now`; the version it
    /// got once acknowledged.
    pub fn write(&mut self, node: usize, value: u64, now: u64) -> Result<Version, CapError> {
        let reach = self.check(node)?;
        let version = match self.mode {
            Mode::Cp => Version {
                stamp: self.highest(&reach).map_or(0, |s| s.version.stamp) + 1,
                node,
            },
            Mode::Ap => Version { stamp: now, node },
        };
        let s = Stored { value, version };
        match self.mode {
            Mode::Cp => self.store(&reach, s),
            Mode::Ap => {
                // Accept locally; best-effort push to the peers in reach.
                self.store(&[node], s);
                self.store(&reach, s);
            }
        }
        Ok(version)
    }

    /// Reads through `node`: the value it answers with (`None` if never
    /// written).
    pub fn read(&mut self, node: usize) -> Result<Option<u64>, CapError> {
        let reach = self.check(node)?;
        Ok(match self.mode {
            Mode::Cp => {
                let best = self.highest(&reach);
                if let Some(b) = best {
                    self.store(&reach, b); // read repair
                }
                best.map(|s| s.value)
            }
            Mode::Ap => self.nodes[node].map(|s| s.value),
        })
    }
}

/// Settings of the simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub nodes: usize,
    pub requests: usize,
    /// Share of requests that are writes.
    pub write_share: f64,
    /// Requests `[start, end)` (by index) run while partitioned.
    pub partition: (usize, usize),
    /// Side of each node during the partition.
    pub sides: Vec<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            requests: 30_000,
            write_share: 0.3,
            partition: (10_000, 20_000),
            sides: vec![0, 0, 1],
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SimResult {
    pub requests: u64,
    pub answered: u64,
    pub during_partition: u64,
    pub answered_during_partition: u64,
    pub reads: u64,
    /// Reads that did not return the last acknowledged write.
    pub consistency_violations: u64,
    pub violations_during_partition: u64,
    /// All nodes hold the same value at the end (after the heal).
    pub converged: bool,
}

/// Runs `cfg` in `mode`: each request goes to a random node, is a write of a
/// fresh value with probability `write_share`, else a read checked against
/// the last acknowledged write.
pub fn simulate(seed: u64, mode: Mode, cfg: &SimConfig) -> Result<SimResult, CapError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reg = Register::new(mode, cfg.nodes)?;
    let mut res = SimResult::default();
    let mut latest_acked: Option<u64> = None;
    let mut now = 0u64;
    for i in 0..cfg.requests {
        if i == cfg.partition.0 && cfg.partition.0 < cfg.partition.1 {
            reg.partition(cfg.sides.clone())?;
        }
        if i == cfg.partition.1 && reg.is_partitioned() {
            reg.heal();
        }
        now += rng.random_range(1..1_000); // strictly increasing clock
        let node = rng.random_range(0..cfg.nodes);
        let is_write = rng.random_bool(cfg.write_share.clamp(0.0, 1.0));
        let partitioned = reg.is_partitioned();
        res.requests += 1;
        res.during_partition += partitioned as u64;
        let answered = if is_write {
            let value = i as u64 + 1;
            match reg.write(node, value, now) {
                Ok(_) => {
                    latest_acked = Some(value);
                    true
                }
                Err(CapError::Unavailable { .. }) => false,
                Err(e) => return Err(e),
            }
        } else {
            match reg.read(node) {
                Ok(v) => {
                    res.reads += 1;
                    if v != latest_acked {
                        res.consistency_violations += 1;
                        res.violations_during_partition += partitioned as u64;
                    }
                    true
                }
                Err(CapError::Unavailable { .. }) => false,
                Err(e) => return Err(e),
            }
        };
        res.answered += answered as u64;
        res.answered_during_partition += (answered && partitioned) as u64;
    }
    if reg.is_partitioned() {
        reg.heal();
    }
    res.converged = (0..cfg.nodes).all(|i| reg.stored(i) == reg.stored(0));
    Ok(res)
}

/// The experiment on `cfg`: CP in the `naive` column, AP in the `optimal`
/// column (neither is optimal).
pub fn lesson_with(seed: u64, cfg: &SimConfig) -> LessonReport {
    let (cp, ap) = match (simulate(seed, Mode::Cp, cfg), simulate(seed, Mode::Ap, cfg)) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(e), _) | (_, Err(e)) => {
            return LessonReport::new(NAME, TITLE).notes(format!("bad simulation settings: {e}"))
        }
    };
    let avail =
        |r: &SimResult| r.answered_during_partition as f64 / r.during_partition.max(1) as f64;
    let overall = |r: &SimResult| r.answered as f64 / r.requests.max(1) as f64;
    let minority = cfg
        .sides
        .iter()
        .filter(|&&s| cfg.sides.iter().filter(|&&t| t == s).count() < cfg.nodes / 2 + 1)
        .count();
    LessonReport::new(NAME, TITLE)
        .both("availability", avail(&cp), avail(&ap))
        .both(
            "consistency_violations",
            cp.consistency_violations as f64,
            ap.consistency_violations as f64,
        )
        .both(
            "violations_during_partition",
            cp.violations_during_partition as f64,
            ap.violations_during_partition as f64,
        )
        .both("availability_overall", overall(&cp), overall(&ap))
        .both(
            "requests_during_partition",
            cp.during_partition as f64,
            ap.during_partition as f64,
        )
        .both("reads", cp.reads as f64, ap.reads as f64)
        .both(
            "converged_after_heal",
            cp.converged as u8 as f64,
            ap.converged as u8 as f64,
        )
        .notes(format!(
            "The 'naive' column is CP mode (majority quorum) and the 'optimal' column is AP mode \
             (local accept, last-writer-wins): neither is optimal, CAP is a choice. {} of {} requests \
             arrive during a partition that cuts {minority} of {} nodes off: CP answers {:.1}% of them \
             (the minority rejects) with {} consistency violations, AP answers {:.1}% with {} reads that \
             missed the latest acknowledged write (each side reads its own history until the heal, when \
             LWW picks one). Simulated on a virtual clock with a seeded RNG, one request at a time. Real \
             systems: etcd, ZooKeeper, Spanner and CockroachDB are CP (Raft/Paxos quorums); Cassandra, \
             Riak and DynamoDB-style stores are AP with tunable R/W quorums (R + W > N buys back \
             consistency) and vector clocks or CRDTs instead of LWW to keep concurrent writes.",
            cp.during_partition,
            cp.requests,
            cfg.nodes,
            100.0 * avail(&cp),
            cp.consistency_violations,
            100.0 * avail(&ap),
            ap.consistency_violations,
        ))
}

/// The lesson at full size: 3 nodes, 30 000 requests, the middle third
/// partitioned with node 2 alone.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, &SimConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(Register::new(Mode::Cp, 0).err(), Some(CapError::NoNodes));
        let mut r = Register::new(Mode::Ap, 3).unwrap();
        assert_eq!(r.partition(vec![0, 1]), Err(CapError::BadPartition(3)));
        assert_eq!(r.read(3), Err(CapError::NoSuchNode(3)));
        assert_eq!(r.write(7, 1, 1), Err(CapError::NoSuchNode(7)));
    }

    #[test]
    fn cp_minority_rejects_and_majority_stays_consistent() {
        let mut r = Register::new(Mode::Cp, 3).unwrap();
        assert_eq!(r.quorum(), 2);
        r.write(2, 10, 1).unwrap();
        assert_eq!(r.read(0), Ok(Some(10)));
        r.partition(vec![0, 0, 1]).unwrap();
        assert_eq!(
            r.write(2, 20, 2),
            Err(CapError::Unavailable {
                node: 2,
                reachable: 1,
                needed: 2
            })
        );
        assert!(r.read(2).is_err());
        let v = r.write(1, 30, 3).unwrap();
        assert_eq!(v, Version { stamp: 2, node: 1 });
        assert_eq!(r.read(0), Ok(Some(30)));
        assert_eq!(r.stored(2).map(|s| s.value), Some(10), "minority is behind");
        r.heal();
        assert_eq!(r.read(2), Ok(Some(30)));
    }

    #[test]
    fn cp_quorum_read_sees_writes_without_anti_entropy() {
        // Write on {0,1}, then partition so that node 2 pairs with node 1:
        // the quorum {1,2} still sees the write through node 1.
        let mut r = Register::new(Mode::Cp, 3).unwrap();
        r.partition(vec![0, 0, 1]).unwrap();
        r.write(0, 5, 1).unwrap();
        r.partition(vec![1, 0, 0]).unwrap();
        assert_eq!(r.read(2), Ok(Some(5)));
        assert!(r.read(0).is_err());
    }

    #[test]
    fn ap_accepts_everywhere_diverges_and_lww_converges() {
        let mut r = Register::new(Mode::Ap, 3).unwrap();
        r.write(0, 1, 10).unwrap();
        assert_eq!(r.read(2), Ok(Some(1)));
        r.partition(vec![0, 0, 1]).unwrap();
        r.write(2, 2, 20).unwrap();
        r.write(0, 3, 30).unwrap();
        assert_eq!(r.read(2), Ok(Some(2)), "minority sees only its own write");
        assert_eq!(r.read(1), Ok(Some(3)));
        r.write(2, 4, 40).unwrap();
        assert_eq!(r.read(0), Ok(Some(3)), "majority misses the later write");
        r.heal();
        for i in 0..3 {
            assert_eq!(r.read(i), Ok(Some(4)), "last writer (stamp 40) wins");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn cp_never_violates_and_ap_is_always_available(
            seed in any::<u64>(),
            nodes in 1usize..6,
            start in 0usize..300, len in 0usize..300,
            sides in proptest::collection::vec(0usize..3, 6),
            write_share in 0.05f64..0.95,
        ) {
            let cfg = SimConfig {
                nodes,
                requests: 600,
                write_share,
                partition: (start, start + len),
                sides: sides[..nodes].to_vec(),
            };
            let cp = simulate(seed, Mode::Cp, &cfg).unwrap();
            let ap = simulate(seed, Mode::Ap, &cfg).unwrap();
            prop_assert_eq!(cp.consistency_violations, 0);
            prop_assert_eq!(ap.answered, ap.requests);
            prop_assert!(cp.converged && ap.converged);
            // Outside a partition AP is linearizable too.
            prop_assert_eq!(ap.consistency_violations, ap.violations_during_partition);
        }
    }

    #[test]
    fn small_lesson_shows_the_trade_off() {
        let cfg = SimConfig {
            requests: 3_000,
            partition: (1_000, 2_000),
            ..SimConfig::default()
        };
        let r = lesson_with(42, &cfg);
        let t = r.table();
        // CP: the minority third is rejected, never stale.
        assert!(r.naive["availability"] < 0.8, "{t}");
        assert!(r.naive["availability"] > 0.5, "{t}");
        assert_eq!(r.naive["consistency_violations"], 0.0, "{t}");
        // AP: everything answered, stale reads during the partition.
        assert_eq!(r.optimal["availability"], 1.0, "{t}");
        assert!(r.optimal["consistency_violations"] > 50.0, "{t}");
        assert_eq!(r.naive["converged_after_heal"], 1.0);
        assert_eq!(r.optimal["converged_after_heal"], 1.0);
    }

    #[test]
    fn full_lesson_prints() {
        let r = lesson(42);
        println!("{}", r.table());
        assert_eq!(r.naive["consistency_violations"], 0.0);
        assert_eq!(r.optimal["availability"], 1.0);
    }
}
