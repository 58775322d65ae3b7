//! Unique id generation across many nodes: per-node counters against
//! Snowflake ids.
//!
//! **The pattern.** A distributed system needs ids that are unique across
//! every node without a round trip to a central allocator, and ideally
//! roughly ordered by time (so "newest first" is an index scan).
//!
//! **The naive way.** Every node keeps its own auto-increment counter
//! ([`AutoIncrement`]), as a single database does. It is fast and ordered on
//! one node, but two nodes hand out the same numbers: with 4 nodes each
//! generating `n` ids, `3n` of the `4n` ids collide.
//!
//! **The optimal way.** A Snowflake id ([`Snowflake`]) packs three fields
//! into 63 bits of a `u64`:
//!
//! ```text
//!  0 | 41 bits: ms since EPOCH_MS | 10 bits: node id | 12 bits: sequence
//! ```
//!
//! The node id makes ids from different nodes disjoint by construction
//! (no coordination at generation time, only when node ids are assigned);
//! the timestamp in the high bits makes ids sort by creation time; the
//! sequence allows 4096 ids per millisecond per node. When the sequence
//! overflows, the generator waits for the next millisecond; when the clock
//! goes backwards (an NTP step), it refuses with
//! [`SnowflakeError::ClockMovedBackwards`] rather than risk reusing an id.
//! 41 bits of milliseconds last about 69 years from the custom epoch.
//!
//! **Complexity.** O(1) per id, no shared state between nodes; throughput is
//! capped at 4096 ids/ms per node by the sequence width.

use crate::LessonReport;
use std::collections::HashSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The lesson's command-line name.
pub const NAME: &str = "id-generation";
/// A short human title.
pub const TITLE: &str = "Distributed ids: per-node counters vs Snowflake";

/// The custom epoch: 2024-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
/// Width of the timestamp field.
pub const TIMESTAMP_BITS: u32 = 41;
/// Width of the node-id field.
pub const NODE_BITS: u32 = 10;
/// Width of the per-millisecond sequence field.
pub const SEQUENCE_BITS: u32 = 12;
/// The largest node id (1023).
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
/// The largest sequence number within one millisecond (4095).
pub const MAX_SEQUENCE: u16 = (1 << SEQUENCE_BITS) - 1;
const MAX_TIMESTAMP: u64 = (1 << TIMESTAMP_BITS) - 1;

/// The naive generator: one node's auto-increment counter, starting at 1.
#[derive(Debug, Clone, Default)]
pub struct AutoIncrement {
    last: u64,
}

impl AutoIncrement {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id: 1, 2, 3, ...
    pub fn next_id(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}

/// A source of wall-clock time in Unix milliseconds. Any `FnMut() -> u64`
/// is a clock, which is how tests drive a [`Snowflake`] with a fake one.
pub trait Clock {
    fn now_ms(&mut self) -> u64;
}

impl<F: FnMut() -> u64> Clock for F {
    fn now_ms(&mut self) -> u64 {
        self()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Why a Snowflake id could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnowflakeError {
    #[error("node id {0} does not fit in {NODE_BITS} bits (max {MAX_NODE})")]
    NodeOutOfRange(u16),
    #[error(
        "clock moved backwards from {last_ms} to {now_ms} ms: refusing to risk a duplicate id"
    )]
    ClockMovedBackwards { last_ms: u64, now_ms: u64 },
    #[error("clock reads {0} ms, outside the {TIMESTAMP_BITS}-bit range after the custom epoch")]
    ClockOutOfRange(u64),
}

/// The three fields of a Snowflake id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnowflakeParts {
    /// Unix milliseconds (the epoch already added back).
    pub unix_ms: u64,
    pub node: u16,
    pub sequence: u16,
}

/// Packs the fields into an id (`unix_ms` must be at or after [`EPOCH_MS`]
/// and within the 41-bit range; node and sequence are masked to their width).
pub fn compose(parts: SnowflakeParts) -> Option<u64> {
    let ts = parts.unix_ms.checked_sub(EPOCH_MS)?;
    if ts > MAX_TIMESTAMP || parts.node > MAX_NODE || parts.sequence > MAX_SEQUENCE {
        return None;
    }
    Some(
        (ts << (NODE_BITS + SEQUENCE_BITS))
            | (u64::from(parts.node) << SEQUENCE_BITS)
            | u64::from(parts.sequence),
    )
}

/// Splits an id back into its fields.
pub fn decompose(id: u64) -> SnowflakeParts {
    SnowflakeParts {
        unix_ms: (id >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS,
        node: ((id >> SEQUENCE_BITS) & u64::from(MAX_NODE)) as u16,
        sequence: (id & u64::from(MAX_SEQUENCE)) as u16,
    }
}

/// A Snowflake generator for one node.
#[derive(Debug, Clone)]
pub struct Snowflake<C: Clock = SystemClock> {
    node: u16,
    clock: C,
    /// Milliseconds since the epoch of the last id; `None` before the first.
    last_ts: Option<u64>,
    sequence: u16,
    /// How many times the generator had to wait for the next millisecond.
    waits: u64,
}

impl Snowflake<SystemClock> {
    /// A generator for `node` on the system clock.
    pub fn new(node: u16) -> Result<Self, SnowflakeError> {
        Self::with_clock(node, SystemClock)
    }
}

impl<C: Clock> Snowflake<C> {
    /// A generator for `node` (0..=1023) reading time from `clock`.
    pub fn with_clock(node: u16, clock: C) -> Result<Self, SnowflakeError> {
        if node > MAX_NODE {
            return Err(SnowflakeError::NodeOutOfRange(node));
        }
        Ok(Self {
            node,
            clock,
            last_ts: None,
            sequence: 0,
            waits: 0,
        })
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    /// How many times the sequence overflowed and the generator waited for
    /// the next millisecond.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    fn read_ts(&mut self) -> Result<u64, SnowflakeError> {
        let now = self.clock.now_ms();
        let ts = now
            .checked_sub(EPOCH_MS)
            .ok_or(SnowflakeError::ClockOutOfRange(now))?;
        if ts > MAX_TIMESTAMP {
            return Err(SnowflakeError::ClockOutOfRange(now));
        }
        Ok(ts)
    }

    /// The next id: strictly greater than every id this generator made
    /// before. Waits (spinning on the clock) for the next millisecond when
    /// 4096 ids were already made in this one; fails if the clock went
    /// backwards or is out of range.
    pub fn next_id(&mut self) -> Result<u64, SnowflakeError> {
        let mut ts = self.read_ts()?;
        match self.last_ts {
            Some(last) if ts < last => {
                return Err(SnowflakeError::ClockMovedBackwards {
                    last_ms: last + EPOCH_MS,
                    now_ms: ts + EPOCH_MS,
                });
            }
            Some(last) if ts == last => {
                if self.sequence == MAX_SEQUENCE {
                    self.waits += 1;
                    while ts <= last {
                        ts = self.read_ts()?;
                        if ts < last {
                            return Err(SnowflakeError::ClockMovedBackwards {
                                last_ms: last + EPOCH_MS,
                                now_ms: ts + EPOCH_MS,
                            });
                        }
                    }
                    self.sequence = 0;
                } else {
                    self.sequence += 1;
                }
            }
            _ => self.sequence = 0,
        }
        self.last_ts = Some(ts);
        Ok((ts << (NODE_BITS + SEQUENCE_BITS))
            | (u64::from(self.node) << SEQUENCE_BITS)
            | u64::from(self.sequence))
    }
}

/// Ids that repeat an earlier one (total minus distinct).
pub fn count_collisions(ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut seen = HashSet::new();
    let mut collisions = 0;
    for id in ids {
        if !seen.insert(id) {
            collisions += 1;
        }
    }
    collisions
}

/// Runs the experiment: `nodes` nodes each generating `per_node` ids with
/// both schemes (on the system clock), counting collisions and throughput.
pub fn lesson_with(seed: u64, nodes: u16, per_node: usize) -> LessonReport {
    let nodes = nodes.clamp(1, MAX_NODE + 1);
    // The seed picks which node ids the cluster uses (any distinct ids work).
    let first_node = (seed % u64::from(MAX_NODE + 1 - nodes + 1)) as u16;

    // Naive: per-node counters.
    let mut naive_ids = Vec::with_capacity(usize::from(nodes) * per_node);
    let start = Instant::now();
    for _ in 0..nodes {
        let mut counter = AutoIncrement::new();
        for _ in 0..per_node {
            naive_ids.push(std::hint::black_box(counter.next_id()));
        }
    }
    let naive_ms = start.elapsed().as_secs_f64() * 1e3;

    // Optimal: one Snowflake generator per node.
    let mut snow_ids = Vec::with_capacity(usize::from(nodes) * per_node);
    let mut waits = 0;
    let mut errors = 0u64;
    let start = Instant::now();
    for n in 0..nodes {
        let Ok(mut generator) = Snowflake::new(first_node + n) else {
            errors += 1;
            continue;
        };
        for _ in 0..per_node {
            match generator.next_id() {
                Ok(id) => snow_ids.push(id),
                Err(_) => errors += 1,
            }
        }
        waits += generator.waits();
    }
    let snow_ms = start.elapsed().as_secs_f64() * 1e3;

    let total = (usize::from(nodes) * per_node) as f64;
    let naive_collisions = count_collisions(naive_ids.iter().copied()) as f64;
    let snow_collisions = count_collisions(snow_ids.iter().copied()) as f64;
    let naive_rate = naive_ids.len() as f64 / naive_ms.max(1e-6);
    let snow_rate = snow_ids.len() as f64 / snow_ms.max(1e-6);

    LessonReport::new(NAME, TITLE)
        .both("nodes", f64::from(nodes), f64::from(nodes))
        .both("ids", total, total)
        .both("collisions", naive_collisions, snow_collisions)
        .both("ids_per_ms", naive_rate, snow_rate)
        .optimal("max_ids_per_ms_per_node", f64::from(MAX_SEQUENCE) + 1.0)
        .optimal("sequence_overflow_waits", waits as f64)
        .optimal("clock_errors", errors as f64)
        .notes(format!(
            "{nodes} nodes each made {per_node} ids. Per-node counters all start at 1, so every node \
             repeats the others' ids ({naive_collisions:.0} collisions); Snowflake puts the node id in \
             bits 12..22 and the millisecond in the high bits, so ids from different nodes are disjoint \
             by construction and sort by time (0 collisions), with no coordination per id. The price is \
             throughput: a counter is a single add, while Snowflake reads the clock per id and is capped \
             at 4096 ids per ms per node (it waited for the next millisecond {waits} times). Node ids \
             must still be assigned uniquely (config, ZooKeeper/etcd lease); past 1024 nodes or if you \
             need no clock dependence, use 128-bit ids (UUIDv7, ULID)."
        ))
}

/// The lesson at full size: 4 nodes x 100k ids.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 4, 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A fake clock: returns the scripted times, then keeps adding 1 ms
    /// per call after the last one.
    fn scripted(times: Vec<u64>) -> impl FnMut() -> u64 {
        let mut i = 0;
        let mut last = times.last().copied().unwrap_or(EPOCH_MS);
        move || {
            let t = if i < times.len() {
                times[i]
            } else {
                last += 1;
                last
            };
            i += 1;
            t
        }
    }

    #[test]
    fn fields_round_trip() {
        let parts = SnowflakeParts {
            unix_ms: EPOCH_MS + 123_456,
            node: 1023,
            sequence: 4095,
        };
        let id = compose(parts).unwrap();
        assert_eq!(decompose(id), parts);
        assert!(id < 1 << 63, "sign bit stays clear");
        assert_eq!(
            compose(SnowflakeParts {
                unix_ms: EPOCH_MS - 1,
                node: 0,
                sequence: 0
            }),
            None
        );
        assert_eq!(
            compose(SnowflakeParts {
                unix_ms: EPOCH_MS,
                node: 1024,
                sequence: 0
            }),
            None
        );
    }

    #[test]
    fn rejects_bad_node_and_backwards_clock() {
        assert_eq!(
            Snowflake::new(1024).unwrap_err(),
            SnowflakeError::NodeOutOfRange(1024)
        );
        let mut g = Snowflake::with_clock(3, scripted(vec![EPOCH_MS + 10, EPOCH_MS + 9])).unwrap();
        let id = g.next_id().unwrap();
        assert_eq!(decompose(id).node, 3);
        assert!(matches!(
            g.next_id(),
            Err(SnowflakeError::ClockMovedBackwards { .. })
        ));
        let mut early = Snowflake::with_clock(0, || EPOCH_MS - 5).unwrap();
        assert_eq!(
            early.next_id(),
            Err(SnowflakeError::ClockOutOfRange(EPOCH_MS - 5))
        );
    }

    #[test]
    fn sequence_overflow_waits_for_the_next_millisecond() {
        // The clock stays on one millisecond for 5000 reads, then moves on.
        let reads = Rc::new(Cell::new(0u64));
        let r = reads.clone();
        let clock = move || {
            r.set(r.get() + 1);
            if r.get() <= 5000 {
                EPOCH_MS + 7
            } else {
                EPOCH_MS + 8
            }
        };
        let mut g = Snowflake::with_clock(1, clock).unwrap();
        let ids: Vec<u64> = (0..4097).map(|_| g.next_id().unwrap()).collect();
        assert_eq!(
            decompose(ids[4095]),
            SnowflakeParts {
                unix_ms: EPOCH_MS + 7,
                node: 1,
                sequence: 4095
            }
        );
        assert_eq!(
            decompose(ids[4096]),
            SnowflakeParts {
                unix_ms: EPOCH_MS + 8,
                node: 1,
                sequence: 0
            }
        );
        assert_eq!(g.waits(), 1);
        assert!(reads.get() > 4097, "it spun on the clock while waiting");
    }

    #[test]
    fn system_clock_ids_are_unique_and_increasing() {
        let mut g = Snowflake::new(5).unwrap();
        let ids: Vec<u64> = (0..20_000).map(|_| g.next_id().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let now = SystemClock.now_ms();
        let ts = decompose(ids[0]).unix_ms;
        assert!(
            ts <= now && now - ts < 60_000,
            "timestamp {ts} near now {now}"
        );
    }

    #[test]
    fn counters_collide_snowflake_does_not() {
        let r = lesson_with(42, 4, 5_000);
        assert_eq!(r.naive["collisions"], 15_000.0);
        assert_eq!(r.optimal["collisions"], 0.0);
        assert_eq!(r.optimal["clock_errors"], 0.0);
        assert!(r.naive["ids_per_ms"] > 0.0 && r.optimal["ids_per_ms"] > 0.0);
        assert!(
            r.optimal["ids_per_ms"] <= 5.0 * 4096.0,
            "capped by the sequence width: {}",
            r.optimal["ids_per_ms"]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With a non-decreasing clock (random steps, long stalls included),
        /// each node's ids strictly increase and no two nodes share an id.
        #[test]
        fn per_node_increasing_and_disjoint(
            steps in proptest::collection::vec(0u64..3, 1..200),
            nodes in proptest::collection::btree_set(0u16..=MAX_NODE, 2..5),
            per_node in 1usize..3000,
        ) {
            let mut times = Vec::with_capacity(steps.len());
            let mut t = EPOCH_MS + 1_000;
            for s in &steps {
                t += s;
                times.push(t);
            }
            let mut all = HashSet::new();
            for &node in &nodes {
                let mut g = Snowflake::with_clock(node, scripted(times.clone())).unwrap();
                let mut prev = None;
                for _ in 0..per_node {
                    let id = g.next_id().unwrap();
                    prop_assert_eq!(decompose(id).node, node);
                    if let Some(p) = prev {
                        prop_assert!(id > p);
                    }
                    prev = Some(id);
                    prop_assert!(all.insert(id), "id {} repeated across nodes", id);
                }
            }
        }
    }
}
