//! Consistent hashing: which node owns a key, and how many keys move when the
//! cluster changes size.
//!
//! **The naive way** is `hash(key) % n`. It balances load perfectly in
//! expectation, but when `n` becomes `n + 1` almost every key changes owner: a
//! key stays put only if `h % n == h % (n + 1)`, so about `n / (n + 1)` of the
//! keys move (91 % when a node is added to 10). For a cache cluster that is a
//! near-total cache flush; for a storage cluster it is a near-total reshuffle.
//!
//! **The optimal ways** move only the keys the new node must take over, about
//! `1 / (n + 1)` of them:
//!
//! - [`HashRing`]: every node is hashed to `vnodes` points on a 64-bit ring; a
//!   key belongs to the first node point clockwise of the key's hash. Adding a
//!   node only steals the arcs just before its points. With one point per node
//!   the arcs are very uneven (the relative stddev of load is about 1); with
//!   `V` virtual nodes per node it falls to about `1 / sqrt(V)`. Lookup is a
//!   binary search, `O(log(n V))`; adding or removing a node is
//!   `O(n V log(n V))` here (the ring is rebuilt; nodes change rarely).
//! - [`jump_hash`] (Lamping & Veach, 2014): no memory at all, perfect balance,
//!   minimal movement, `O(ln n)` per lookup, but buckets are numbered
//!   `0..n`: you can only add or remove the *last* bucket.
//! - [`Maglev`] (Eisenbud et al., Google, 2016): every node fills a
//!   fixed-size prime lookup table in the order of its own permutation, so
//!   lookup is one array index, `O(1)`, and load is almost perfectly even;
//!   the price is a little more than minimal movement when nodes change.
//!
//! Every hash here is [`hash_bytes`], a seeded, hand-written 64-bit mixer, so
//! placements reproduce across runs and platforms.

use crate::report::{self, LessonReport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The lesson's command-line name.
pub const NAME: &str = "consistent-hashing";
/// A short human title.
pub const TITLE: &str =
    "Consistent hashing: hash % n against a ring with virtual nodes, jump hash and Maglev";

/// Errors of the placement structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("there must be at least one node")]
    NoNodes,
    #[error("there must be at least one virtual node per node")]
    NoVirtualNodes,
    #[error("the Maglev table size {0} must be a prime larger than the number of nodes")]
    BadTableSize(usize),
}

pub use crate::hash::hash_bytes;

/// The naive sharder: `hash(key) % n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuloSharder {
    nodes: usize,
    seed: u64,
}

impl ModuloSharder {
    /// A sharder over nodes `0..nodes`.
    pub fn new(nodes: usize, seed: u64) -> Result<Self, PlacementError> {
        if nodes == 0 {
            return Err(PlacementError::NoNodes);
        }
        Ok(Self { nodes, seed })
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The node (in `0..nodes`) that owns `key`.
    pub fn node_for(&self, key: impl AsRef<[u8]>) -> usize {
        (hash_bytes(key.as_ref(), self.seed) % self.nodes as u64) as usize
    }
}

/// A consistent-hash ring with virtual nodes.
///
/// Nodes are named; each name is hashed `vnodes` times (`"name#0"`,
/// `"name#1"`, ...) onto the ring. The ring is a sorted `Vec` of
/// `(point, node index)`; a key goes to the first point at or after its
/// hash, wrapping around at the end.
#[derive(Debug, Clone)]
pub struct HashRing {
    vnodes: usize,
    seed: u64,
    names: Vec<String>,
    ring: Vec<(u64, usize)>,
}

impl HashRing {
    /// An empty ring with `vnodes` points per node.
    pub fn new(vnodes: usize, seed: u64) -> Result<Self, PlacementError> {
        if vnodes == 0 {
            return Err(PlacementError::NoVirtualNodes);
        }
        Ok(Self {
            vnodes,
            seed,
            names: Vec::new(),
            ring: Vec::new(),
        })
    }

    /// A ring holding `names`.
    pub fn with_nodes<S: AsRef<str>>(
        vnodes: usize,
        seed: u64,
        names: &[S],
    ) -> Result<Self, PlacementError> {
        let mut ring = Self::new(vnodes, seed)?;
        for n in names {
            ring.add_node(n.as_ref());
        }
        Ok(ring)
    }

    /// Adds a node; false if it was already there.
    pub fn add_node(&mut self, name: &str) -> bool {
        if self.names.iter().any(|n| n == name) {
            return false;
        }
        self.names.push(name.to_string());
        self.rebuild();
        true
    }

    /// Removes a node; false if it was not there. Only its keys move, each to
    /// the next point clockwise.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let before = self.names.len();
        self.names.retain(|n| n != name);
        if self.names.len() == before {
            return false;
        }
        self.rebuild();
        true
    }

    fn rebuild(&mut self) {
        self.ring.clear();
        for (idx, name) in self.names.iter().enumerate() {
            for v in 0..self.vnodes {
                let point = hash_bytes(format!("{name}#{v}").as_bytes(), self.seed);
                self.ring.push((point, idx));
            }
        }
        // Ties (vanishingly rare) are broken by node name, so the ring does
        // not depend on the order nodes were added in.
        let names = &self.names;
        self.ring
            .sort_by(|a, b| a.0.cmp(&b.0).then_with(|| names[a.1].cmp(&names[b.1])));
    }

    pub fn nodes(&self) -> &[String] {
        &self.names
    }

    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// Index (into [`nodes`](Self::nodes)) of the node owning `key`; `None`
    /// on an empty ring.
    pub fn node_index_for(&self, key: impl AsRef<[u8]>) -> Option<usize> {
        let h = hash_bytes(key.as_ref(), self.seed);
        let i = self.ring.partition_point(|&(p, _)| p < h);
        let (_, node) = self.ring.get(i).or_else(|| self.ring.first())?;
        Some(*node)
    }

    /// Every node once, in the order a clockwise walk from `key` meets
    /// them: the owner first, then where its keys would spill. Consistent
    /// hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018)
    /// takes the first node in this order that is under its load cap.
    pub fn node_indices_from(&self, key: impl AsRef<[u8]>) -> Vec<usize> {
        let h = hash_bytes(key.as_ref(), self.seed);
        let start = self.ring.partition_point(|&(p, _)| p < h);
        let mut seen = vec![false; self.names.len()];
        let mut order = Vec::with_capacity(self.names.len());
        for k in 0..self.ring.len() {
            let (_, node) = self.ring[(start + k) % self.ring.len()];
            if !seen[node] {
                seen[node] = true;
                order.push(node);
                if order.len() == self.names.len() {
                    break;
                }
            }
        }
        order
    }

    /// Name of the node owning `key`; `None` on an empty ring.
    pub fn node_for(&self, key: impl AsRef<[u8]>) -> Option<&str> {
        self.node_index_for(key).map(|i| self.names[i].as_str())
    }
}

/// Jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent
/// Hash Algorithm", 2014): the bucket in `0..buckets` for a 64-bit key.
///
/// The key seeds a linear congruential generator; the loop jumps forward
/// through bucket numbers, each jump chosen so that when the bucket count
/// grows from `b` to `b + 1` exactly `1 / (b + 1)` of the keys land in the new
/// bucket. `None` when `buckets` is 0.
pub fn jump_hash(mut key: u64, buckets: u32) -> Option<u32> {
    if buckets == 0 {
        return None;
    }
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    Some(b as u32)
}

/// A Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable
/// Software Network Load Balancer", NSDI 2016).
///
/// Each node gets a permutation of the `table_size` slots from two hashes of
/// its name: `offset = h1 % M`, `skip = h2 % (M - 1) + 1`, slot
/// `j` of its preference list is `(offset + j * skip) % M` (a permutation
/// because `M` is prime). Nodes take turns claiming their next preferred free
/// slot until the table is full, so every node owns `M / n` slots, give or
/// take one. A key is looked up with one hash and one array index.
#[derive(Debug, Clone)]
pub struct Maglev {
    names: Vec<String>,
    table: Vec<usize>,
    seed: u64,
}

impl Maglev {
    /// The table size the paper uses for small clusters.
    pub const DEFAULT_TABLE_SIZE: usize = 65_537;

    /// Builds the table for `names` (at least one, all distinct is the
    /// caller's business: duplicates simply share load). `table_size` must
    /// be a prime larger than the number of nodes.
    pub fn new<S: AsRef<str>>(
        names: &[S],
        table_size: usize,
        seed: u64,
    ) -> Result<Self, PlacementError> {
        if names.is_empty() {
            return Err(PlacementError::NoNodes);
        }
        if table_size <= names.len() || !is_prime(table_size) {
            return Err(PlacementError::BadTableSize(table_size));
        }
        let m = table_size as u64;
        let names: Vec<String> = names.iter().map(|s| s.as_ref().to_string()).collect();
        let prefs: Vec<(u64, u64)> = names
            .iter()
            .map(|n| {
                let offset = hash_bytes(n.as_bytes(), seed ^ 0x6d61_676c_6576_0001) % m;
                let skip = hash_bytes(n.as_bytes(), seed ^ 0x6d61_676c_6576_0002) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; names.len()];
        let mut table = vec![usize::MAX; table_size];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in prefs.iter().enumerate() {
                // Walk node i's permutation to its next free slot. Slots are a
                // permutation, so a free one is always found while the table
                // is not full.
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while table[slot] != usize::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                table[slot] = i;
                next[i] += 1;
                filled += 1;
                if filled == table_size {
                    break 'fill;
                }
            }
        }
        Ok(Self { names, table, seed })
    }

    pub fn nodes(&self) -> &[String] {
        &self.names
    }

    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// Index (into [`nodes`](Self::nodes)) of the node owning `key`.
    pub fn node_index_for(&self, key: impl AsRef<[u8]>) -> usize {
        let h = hash_bytes(key.as_ref(), self.seed);
        self.table[(h % self.table.len() as u64) as usize]
    }

    /// Name of the node owning `key`.
    pub fn node_for(&self, key: impl AsRef<[u8]>) -> &str {
        &self.names[self.node_index_for(key)]
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Fraction of positions where the two assignments differ.
pub fn moved_fraction<T: PartialEq>(before: &[T], after: &[T]) -> f64 {
    if before.is_empty() {
        return 0.0;
    }
    let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
    moved as f64 / before.len() as f64
}

/// Standard deviation of keys per node divided by the mean (0 is perfect
/// balance). `owners` holds node indices in `0..nodes`.
pub fn load_stddev(owners: &[usize], nodes: usize) -> f64 {
    if nodes == 0 || owners.is_empty() {
        return 0.0;
    }
    let mut counts = vec![0usize; nodes];
    for &o in owners {
        if let Some(c) = counts.get_mut(o) {
            *c += 1;
        }
    }
    let mean = owners.len() as f64 / nodes as f64;
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / nodes as f64;
    var.sqrt() / mean
}

fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

/// The experiment: `keys` random keys on `nodes` nodes, then one node added.
pub fn lesson_with(seed: u64, keys: usize, nodes: usize, vnodes: usize) -> LessonReport {
    let nodes = nodes.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<[u8; 8]> = (0..keys)
        .map(|_| rng.random::<u64>().to_le_bytes())
        .collect();
    let hash_seed = seed;

    // Naive: hash % n, then hash % (n + 1).
    let (naive_before, naive_after, naive_ns) = match (
        ModuloSharder::new(nodes, hash_seed),
        ModuloSharder::new(nodes + 1, hash_seed),
    ) {
        (Ok(a), Ok(b)) => {
            let before: Vec<usize> = keys.iter().map(|k| a.node_for(k)).collect();
            let after: Vec<usize> = keys.iter().map(|k| b.node_for(k)).collect();
            let ns = lookup_ns(&keys, |k| a.node_for(k));
            (before, after, ns)
        }
        _ => (Vec::new(), Vec::new(), 0.0),
    };

    // Ring with virtual nodes. Owners are compared by name, since indices
    // are positions in the node list.
    let names = node_names(nodes);
    let names_plus = node_names(nodes + 1);
    let ring_owners = |ring: &HashRing| -> Vec<usize> {
        keys.iter()
            .map(|k| ring.node_index_for(k).unwrap_or(usize::MAX))
            .collect()
    };
    let (ring_moved, ring_stddev, ring1_stddev, ring_ns) = match (
        HashRing::with_nodes(vnodes.max(1), hash_seed, &names),
        HashRing::with_nodes(vnodes.max(1), hash_seed, &names_plus),
        HashRing::with_nodes(1, hash_seed, &names),
    ) {
        (Ok(r), Ok(r_plus), Ok(r1)) => {
            // Node i is names[i] in both rings (the new node is appended).
            let before = ring_owners(&r);
            let after = ring_owners(&r_plus);
            let ns = lookup_ns(&keys, |k| r.node_index_for(k).unwrap_or(0));
            (
                moved_fraction(&before, &after),
                load_stddev(&before, nodes),
                load_stddev(&ring_owners(&r1), nodes),
                ns,
            )
        }
        _ => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    };

    // Jump hash: buckets are numbered, the new node is bucket n.
    let key_hashes: Vec<u64> = keys.iter().map(|k| hash_bytes(k, hash_seed)).collect();
    let jump_before: Vec<u32> = key_hashes
        .iter()
        .map(|&h| jump_hash(h, nodes as u32).unwrap_or(0))
        .collect();
    let jump_after: Vec<u32> = key_hashes
        .iter()
        .map(|&h| jump_hash(h, nodes as u32 + 1).unwrap_or(0))
        .collect();
    let jump_owners: Vec<usize> = jump_before.iter().map(|&b| b as usize).collect();

    // Maglev.
    let (maglev_moved, maglev_stddev, maglev_ns) = match (
        Maglev::new(&names, Maglev::DEFAULT_TABLE_SIZE, hash_seed),
        Maglev::new(&names_plus, Maglev::DEFAULT_TABLE_SIZE, hash_seed),
    ) {
        (Ok(m), Ok(m_plus)) => {
            let before: Vec<usize> = keys.iter().map(|k| m.node_index_for(k)).collect();
            let after: Vec<usize> = keys.iter().map(|k| m_plus.node_index_for(k)).collect();
            let ns = lookup_ns(&keys, |k| m.node_index_for(k));
            (
                moved_fraction(&before, &after),
                load_stddev(&before, nodes),
                ns,
            )
        }
        _ => (f64::NAN, f64::NAN, f64::NAN),
    };

    let ideal = 1.0 / (nodes as f64 + 1.0);
    LessonReport::new(NAME, TITLE)
        .both("moved_fraction", moved_fraction(&naive_before, &naive_after), ring_moved)
        .both("load_stddev", load_stddev(&naive_before, nodes), ring_stddev)
        .both("lookup_ns", naive_ns, ring_ns)
        .both("nodes_before", nodes as f64, nodes as f64)
        .both("keys", keys.len() as f64, keys.len() as f64)
        .optimal("ideal_moved_fraction", ideal)
        .optimal("vnodes_per_node", vnodes as f64)
        .optimal("ring_1vnode_load_stddev", ring1_stddev)
        .optimal("jump_moved_fraction", moved_fraction(&jump_before, &jump_after))
        .optimal("jump_load_stddev", load_stddev(&jump_owners, nodes))
        .optimal("maglev_moved_fraction", maglev_moved)
        .optimal("maglev_load_stddev", maglev_stddev)
        .optimal("maglev_lookup_ns", maglev_ns)
        .notes(format!(
            "Adding an 11th node to 10 moves about n/(n+1) of the keys under hash % n, but only the new node's share, \
             about 1/(n+1) = {ideal:.3}, on the ring, under jump hash and (slightly more) under Maglev. hash % n balances \
             load best; a ring with one point per node is badly uneven, and virtual nodes bring the spread down to about \
             1/sqrt(vnodes), at the cost of a binary search per lookup. Jump hash needs no memory and balances perfectly \
             but can only add or remove the last bucket; Maglev looks up in O(1) with near-perfect balance and is the table inside \
             Google's Maglev L4 load balancer. Past this, look at rendezvous (highest-random-weight) hashing, bounded-load \
             consistent hashing, and how Dynamo/Cassandra assign token ranges with replication."
        ))
}

fn lookup_ns<T>(keys: &[[u8; 8]], f: impl Fn(&[u8; 8]) -> T) -> f64 {
    if keys.is_empty() {
        return 0.0;
    }
    let per_batch = keys.len().min(10_000);
    report::time_us(5, per_batch, |i| {
        std::hint::black_box(f(&keys[i % keys.len()]));
    }) * 1000.0
}

/// The full-size experiment: 200,000 keys, 10 nodes plus one, 160 virtual
/// nodes per node.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 200_000, 10, 160)
}

#[cfg(test)]
mod tests;
