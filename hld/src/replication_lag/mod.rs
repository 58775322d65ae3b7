//! Replication lag and read-your-writes: why a user who just saved a form can
//! see the old value, and the session token that prevents it.
//!
//! A leader appends every write to its log under a growing *log sequence
//! number* (LSN) and ships the log to asynchronous replicas; each replica
//! applies the entries in order, some milliseconds later (network, disk, a
//! busy apply thread: the lag varies per replica and per entry). Reads are
//! spread over the replicas to offload the leader.
//!
//! **The naive way** sends every read to any replica. A client that writes
//! and then reads its own key a few milliseconds later often hits a replica
//! that has not applied the write yet and sees its own update vanish: a
//! *stale read*, a read-your-writes violation.
//!
//! **The optimal way** is a session token: the client remembers the LSN of
//! its last write ([`Session`]). A replica serves the read only if it has
//! applied at least that LSN; otherwise the read goes to the leader
//! ([`Fallback::Leader`]) or waits until the replica catches up
//! ([`Fallback::WaitForReplica`]). Either way a stale read is impossible, and
//! the price is the leader reads (or the waiting) for recently written
//! sessions only. Checking the token is `O(1)`; applying the log is `O(1)`
//! amortized per entry.
//!
//! Everything runs on a virtual clock (microseconds passed in as `now`) with
//! seeded lags, so a run reproduces exactly from its seed and the state
//! machine is tested deterministically.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// The lesson's command-line name.
pub const NAME: &str = "replication-lag";
/// A short human title.
pub const TITLE: &str =
    "Replication lag: reading from any async replica vs read-your-writes tokens";

/// A log sequence number: 1 for the first write, 0 for "nothing".
pub type Lsn = u64;
/// Virtual time in microseconds.
pub type Micros = u64;

/// A stored value and the LSN of the write that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    pub value: u64,
    pub lsn: Lsn,
}

/// One write in the leader's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    pub lsn: Lsn,
    pub key: u64,
    pub value: u64,
}

/// The leader: takes every write, appends it to the log, serves fresh reads.
#[derive(Debug, Clone, Default)]
pub struct Leader {
    log: Vec<LogEntry>,
    data: HashMap<u64, Versioned>,
}

impl Leader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies and logs a write; returns its entry (with its new LSN).
    pub fn write(&mut self, key: u64, value: u64) -> LogEntry {
        let lsn = self.last_lsn() + 1;
        let entry = LogEntry { lsn, key, value };
        self.log.push(entry);
        self.data.insert(key, Versioned { value, lsn });
        entry
    }

    pub fn read(&self, key: u64) -> Option<Versioned> {
        self.data.get(&key).copied()
    }

    pub fn last_lsn(&self) -> Lsn {
        self.log.last().map_or(0, |e| e.lsn)
    }

    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }
}

/// An asynchronous replica: receives log entries with an apply time and
/// applies them in LSN order once the clock reaches it.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    applied: Lsn,
    data: HashMap<u64, Versioned>,
    inbox: VecDeque<(Micros, LogEntry)>,
    last_apply_at: Micros,
}

/// A log entry arrived out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replica expected LSN {expected}, got {got}")]
pub struct GapError {
    pub expected: Lsn,
    pub got: Lsn,
}

impl Replica {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `entry`, to be applied `lag` after `now`, but never before the
    /// entries ahead of it (replicas apply the log in order).
    pub fn ship(&mut self, entry: LogEntry, now: Micros, lag: Micros) -> Result<(), GapError> {
        let expected = self
            .inbox
            .back()
            .map_or(self.applied, |(_, e)| e.lsn)
            .saturating_add(1);
        if entry.lsn != expected {
            return Err(GapError {
                expected,
                got: entry.lsn,
            });
        }
        let at = now.saturating_add(lag).max(self.last_apply_at);
        self.last_apply_at = at;
        self.inbox.push_back((at, entry));
        Ok(())
    }

    /// Applies every queued entry due by `now`.
    pub fn catch_up(&mut self, now: Micros) {
        while let Some(&(at, e)) = self.inbox.front() {
            if at > now {
                break;
            }
            self.inbox.pop_front();
            self.data.insert(
                e.key,
                Versioned {
                    value: e.value,
                    lsn: e.lsn,
                },
            );
            self.applied = e.lsn;
        }
    }

    /// The last LSN applied (call [`catch_up`](Self::catch_up) first).
    pub fn applied_lsn(&self) -> Lsn {
        self.applied
    }

    /// When this replica will have applied `lsn`: `Some(now)`-or-earlier if
    /// it already has, `None` if that entry was never shipped to it.
    pub fn ready_at(&self, lsn: Lsn) -> Option<Micros> {
        if lsn <= self.applied {
            return Some(0);
        }
        self.inbox
            .iter()
            .find(|(_, e)| e.lsn >= lsn)
            .map(|&(at, _)| at)
    }

    /// Reads `key` as of `now`.
    pub fn read(&mut self, key: u64, now: Micros) -> Option<Versioned> {
        self.catch_up(now);
        self.data.get(&key).copied()
    }
}

/// What a client remembers between requests: its read-your-writes token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Session {
    /// LSN of this session's last write (0 before any).
    pub last_write_lsn: Lsn,
}

/// Where a read goes when the chosen replica is behind the session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Read from the leader instead.
    Leader,
    /// Wait on the virtual clock until the replica has applied the token.
    /// (The simulation applies the replica's log up to that moment at once,
    /// so later-processed but earlier-timed reads on it may look fresher.)
    WaitForReplica,
}

/// How reads are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPolicy {
    /// The naive way: the chosen replica answers whatever it has.
    AnyReplica,
    /// The chosen replica answers only if it has applied the session's last
    /// write; otherwise the fallback.
    ReadYourWrites(Fallback),
}

/// Who answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Leader,
    Replica(usize),
}

/// A read's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub value: Option<Versioned>,
    pub served_by: Server,
    /// Virtual time spent waiting for the replica (0 unless
    /// [`Fallback::WaitForReplica`]).
    pub waited: Micros,
}

/// A leader and its asynchronous replicas.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub leader: Leader,
    pub replicas: Vec<Replica>,
}

/// Errors of the cluster API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("a cluster needs at least one replica")]
    NoReplicas,
    #[error("there is no replica {0}")]
    NoSuchReplica(usize),
    #[error(transparent)]
    Gap(#[from] GapError),
}

impl Cluster {
    pub fn new(replicas: usize) -> Result<Self, ClusterError> {
        if replicas == 0 {
            return Err(ClusterError::NoReplicas);
        }
        Ok(Self {
            leader: Leader::new(),
            replicas: vec![Replica::new(); replicas],
        })
    }

    /// Writes on the leader, ships the entry to replica `i` with `lags[i]`,
    /// and advances the session token.
    pub fn write(
        &mut self,
        session: &mut Session,
        key: u64,
        value: u64,
        now: Micros,
        lags: &[Micros],
    ) -> Result<Lsn, ClusterError> {
        if lags.len() != self.replicas.len() {
            return Err(ClusterError::NoSuchReplica(
                lags.len().min(self.replicas.len()),
            ));
        }
        let entry = self.leader.write(key, value);
        for (r, &lag) in self.replicas.iter_mut().zip(lags) {
            r.ship(entry, now, lag)?;
        }
        session.last_write_lsn = entry.lsn;
        Ok(entry.lsn)
    }

    /// Reads `key` at `now`, routed to replica `replica` under `policy`.
    pub fn read(
        &mut self,
        session: &Session,
        key: u64,
        now: Micros,
        replica: usize,
        policy: ReadPolicy,
    ) -> Result<ReadOutcome, ClusterError> {
        let r = self
            .replicas
            .get_mut(replica)
            .ok_or(ClusterError::NoSuchReplica(replica))?;
        r.catch_up(now);
        let fresh_enough = r.applied_lsn() >= session.last_write_lsn;
        let replica_read = |r: &mut Replica, at: Micros, waited| ReadOutcome {
            value: r.read(key, at),
            served_by: Server::Replica(replica),
            waited,
        };
        Ok(match policy {
            ReadPolicy::AnyReplica => replica_read(r, now, 0),
            ReadPolicy::ReadYourWrites(_) if fresh_enough => replica_read(r, now, 0),
            ReadPolicy::ReadYourWrites(Fallback::WaitForReplica) => {
                match r.ready_at(session.last_write_lsn) {
                    Some(at) => replica_read(r, at.max(now), at.saturating_sub(now)),
                    None => ReadOutcome {
                        value: self.leader.read(key),
                        served_by: Server::Leader,
                        waited: 0,
                    },
                }
            }
            ReadPolicy::ReadYourWrites(Fallback::Leader) => ReadOutcome {
                value: self.leader.read(key),
                served_by: Server::Leader,
                waited: 0,
            },
        })
    }
}

/// Settings of the simulated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub clients: usize,
    /// Mean replication lag of each replica, in microseconds (per-entry lags
    /// are exponential around it).
    pub mean_lags: Vec<Micros>,
    /// A client reads its key back uniformly within this long after writing.
    pub max_think: Micros,
    /// Then idles uniformly up to this long before its next write.
    pub max_idle: Micros,
    /// Length of the run on the virtual clock.
    pub duration: Micros,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            clients: 50,
            mean_lags: vec![1_000, 5_000, 20_000],
            max_think: 100_000,
            max_idle: 100_000,
            duration: 60_000_000,
        }
    }
}

/// What a simulated run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SimResult {
    pub writes: u64,
    pub reads: u64,
    /// Reads that did not see the client's own latest write to that key.
    pub stale_reads: u64,
    pub leader_reads: u64,
    pub total_wait: Micros,
}

/// Runs `cfg` under `policy`: each client writes its own keys and reads each
/// write back after a think time, from a random replica; reads and writes are
/// processed in virtual-time order.
pub fn simulate(seed: u64, cfg: &SimConfig, policy: ReadPolicy) -> Result<SimResult, ClusterError> {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Op {
        Write,
        Read(u64),
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::new(cfg.mean_lags.len())?;
    let mut sessions = vec![Session::default(); cfg.clients];
    let mut own: HashMap<u64, Lsn> = HashMap::new();
    let mut queue: BinaryHeap<Reverse<(Micros, usize, Op)>> = (0..cfg.clients)
        .map(|c| Reverse((rng.random_range(0..cfg.max_idle.max(1)), c, Op::Write)))
        .collect();
    let mut res = SimResult::default();
    let mut lags = vec![0; cfg.mean_lags.len()];
    while let Some(Reverse((now, c, op))) = queue.pop() {
        if now > cfg.duration {
            break;
        }
        match op {
            Op::Write => {
                let key = (c as u64) * 4 + rng.random_range(0..4);
                for (l, &mean) in lags.iter_mut().zip(&cfg.mean_lags) {
                    let u: f64 = rng.random_range(f64::EPSILON..1.0);
                    *l = (-u.ln() * mean as f64) as Micros;
                }
                res.writes += 1;
                let lsn = cluster.write(&mut sessions[c], key, res.writes, now, &lags)?;
                own.insert(key, lsn);
                let think = rng.random_range(0..cfg.max_think.max(1));
                queue.push(Reverse((now + think, c, Op::Read(key))));
            }
            Op::Read(key) => {
                let replica = rng.random_range(0..cluster.replicas.len());
                let out = cluster.read(&sessions[c], key, now, replica, policy)?;
                res.reads += 1;
                let want = own.get(&key).copied().unwrap_or(0);
                if out.value.map_or(0, |v| v.lsn) < want {
                    res.stale_reads += 1;
                }
                if out.served_by == Server::Leader {
                    res.leader_reads += 1;
                }
                res.total_wait += out.waited;
                let idle = rng.random_range(0..cfg.max_idle.max(1));
                queue.push(Reverse((now + out.waited + idle, c, Op::Write)));
            }
        }
    }
    Ok(res)
}

/// The experiment on `cfg`: naive (any replica) against read-your-writes
/// with leader fallback, plus the wait-for-replica variant.
pub fn lesson_with(seed: u64, cfg: &SimConfig) -> LessonReport {
    let runs = (
        simulate(seed, cfg, ReadPolicy::AnyReplica),
        simulate(seed, cfg, ReadPolicy::ReadYourWrites(Fallback::Leader)),
        simulate(
            seed,
            cfg,
            ReadPolicy::ReadYourWrites(Fallback::WaitForReplica),
        ),
    );
    let (naive, opt, wait) = match runs {
        (Ok(n), Ok(o), Ok(w)) => (n, o, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return LessonReport::new(NAME, TITLE).notes(format!("bad simulation settings: {e}"))
        }
    };
    let share = |x: u64, r: &SimResult| x as f64 / r.reads.max(1) as f64;
    let lags_ms: Vec<String> = cfg
        .mean_lags
        .iter()
        .map(|l| format!("{}", *l as f64 / 1000.0))
        .collect();
    LessonReport::new(NAME, TITLE)
        .both("stale_reads", naive.stale_reads as f64, opt.stale_reads as f64)
        .both(
            "stale_read_share",
            share(naive.stale_reads, &naive),
            share(opt.stale_reads, &opt),
        )
        .both("leader_reads", naive.leader_reads as f64, opt.leader_reads as f64)
        .both(
            "leader_read_share",
            share(naive.leader_reads, &naive),
            share(opt.leader_reads, &opt),
        )
        .both("reads", naive.reads as f64, opt.reads as f64)
        .both("writes", naive.writes as f64, opt.writes as f64)
        .optimal("wait_variant_stale_reads", wait.stale_reads as f64)
        .optimal(
            "wait_variant_mean_wait_ms",
            wait.total_wait as f64 / 1000.0 / wait.reads.max(1) as f64,
        )
        .notes(format!(
            "Simulated on a virtual clock with seeded exponential lags (replica means {} ms): {} clients each write \
             a key and read it back within {} ms from a random async replica. Reading any replica misses the client's \
             own write {} times out of {} reads; with a read-your-writes token (the LSN of the session's last write) \
             a replica that has not applied it hands the read to the leader, so stale reads are exactly {} and the \
             price is {:.1}% of reads on the leader, exactly the reads that would have been stale (or, waiting for the \
             replica instead, {:.2} ms per read on average; here every read follows its own write, the worst case). \
             Postgres exposes the LSN (pg_current_wal_lsn / pg_last_wal_replay_lsn) and MySQL GTIDs \
             (WAIT_FOR_EXECUTED_GTID_SET) for exactly this; proxies such as ProxySQL and Vitess route on them, and \
             MongoDB causal-consistency sessions and Aurora do it built in.",
            lags_ms.join("/"),
            cfg.clients,
            cfg.max_think / 1000,
            naive.stale_reads,
            naive.reads,
            opt.stale_reads,
            100.0 * share(opt.leader_reads, &opt),
            wait.total_wait as f64 / 1000.0 / wait.reads.max(1) as f64,
        ))
}

/// The lesson at full size: 50 clients, 3 replicas, 60 virtual seconds.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, &SimConfig::default())
}

#[cfg(test)]
mod tests;
