//! LRU cache: keep the hot part of a large key space in bounded memory.
//!
//! **The naive way** is an unbounded map: every value ever fetched stays.
//! Its hit ratio is the best possible (only first accesses miss), but memory
//! grows with the number of distinct keys until the process falls over.
//!
//! **The optimal way** bounds the cache at `capacity` entries and, when it is
//! full, evicts the *least recently used* one. Real workloads are skewed
//! (roughly Zipf: a few keys get most requests), so a cache holding a few
//! percent of the keys serves most requests. Both operations are `O(1)`: a
//! hash map finds the entry, and a doubly linked list ordered by recency
//! moves it to the front (on a hit) or drops the back (on eviction) by
//! relinking neighbours. The list lives in a `Vec` slab with `usize` links
//! instead of pointers, so there is no `unsafe` and no per-node allocation;
//! removing an entry moves the slab's last node into the hole and fixes its
//! two neighbours and its map entry, which keeps the slab dense.

use crate::count_min_sketch::Zipf;
use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};

/// The lesson's command-line name.
pub const NAME: &str = "lru-cache";
/// A short human title.
pub const TITLE: &str = "LRU cache: an unbounded map against a bounded hash map + linked list";

/// A map hasher with fixed keys (SipHash with zero keys), so nothing depends
/// on `RandomState`.
type Fixed = BuildHasherDefault<DefaultHasher>;

/// Errors of the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("capacity must be positive")]
    ZeroCapacity,
}

/// The "no node" link.
const NIL: usize = usize::MAX;

#[derive(Debug, Clone)]
struct Node<K, V> {
    key: K,
    value: V,
    /// Towards the most recently used end.
    prev: usize,
    /// Towards the least recently used end.
    next: usize,
}

/// A least-recently-used cache of at most `capacity` entries.
#[derive(Debug, Clone)]
pub struct LruCache<K, V> {
    capacity: usize,
    map: HashMap<K, usize, Fixed>,
    nodes: Vec<Node<K, V>>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to be evicted.
    tail: usize,
}

impl<K: Hash + Eq + Clone, V> LruCache<K, V> {
    /// An empty cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Result<Self, CacheError> {
        if capacity == 0 {
            return Err(CacheError::ZeroCapacity);
        }
        Ok(Self {
            capacity,
            map: HashMap::default(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Takes node `i` out of the recency list (its slot stays).
    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
        self.nodes[i].prev = NIL;
        self.nodes[i].next = NIL;
    }

    /// Puts the unlinked node `i` at the most recently used end.
    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h].prev = i,
        }
        self.head = i;
    }

    fn touch(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Removes node `i` from list, slab and map, and returns it. The slab's
    /// last node moves into slot `i`.
    fn remove_at(&mut self, i: usize) -> Option<(K, V)> {
        self.unlink(i);
        let last = self.nodes.len().checked_sub(1)?;
        if i != last {
            self.nodes.swap(i, last);
            // The node now at i was at `last`: repoint its neighbours and map
            // entry.
            let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
            match prev {
                NIL => self.head = i,
                p => self.nodes[p].next = i,
            }
            match next {
                NIL => self.tail = i,
                n => self.nodes[n].prev = i,
            }
            if let Some(slot) = self.map.get_mut(&self.nodes[i].key) {
                *slot = i;
            }
        }
        let node = self.nodes.pop()?;
        self.map.remove(&node.key);
        Some((node.key, node.value))
    }

    /// The value of `key`, which becomes the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let i = *self.map.get(key)?;
        self.touch(i);
        Some(&self.nodes[i].value)
    }

    /// Like [`get`](Self::get), mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.map.get(key)?;
        self.touch(i);
        Some(&mut self.nodes[i].value)
    }

    /// The value of `key` without changing its recency.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|&i| &self.nodes[i].value)
    }

    /// Inserts or replaces `key`, which becomes the most recently used.
    /// Returns what left the cache: the old `(key, value)` if `key` was
    /// present, else the least recently used entry if the cache was full,
    /// else `None`.
    pub fn put(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(&i) = self.map.get(&key) {
            self.touch(i);
            let old = std::mem::replace(&mut self.nodes[i].value, value);
            return Some((key, old));
        }
        let evicted = if self.nodes.len() >= self.capacity {
            self.remove_at(self.tail)
        } else {
            None
        };
        let i = self.nodes.len();
        self.nodes.push(Node {
            key: key.clone(),
            value,
            prev: NIL,
            next: NIL,
        });
        self.push_front(i);
        self.map.insert(key, i);
        evicted
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = *self.map.get(key)?;
        self.remove_at(i).map(|(_, v)| v)
    }

    /// Entries from most to least recently used.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let mut i = self.head;
        std::iter::from_fn(move || {
            let node = self.nodes.get(i)?;
            i = node.next;
            Some((&node.key, &node.value))
        })
    }

    /// Approximate memory held: slab slots (key, value, two links) and map
    /// slots (key, index, control byte). Heap memory owned by keys or values
    /// is not counted.
    pub fn bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<K, V>>()
            + self.map.capacity() * (std::mem::size_of::<K>() + std::mem::size_of::<usize>() + 1)
    }
}

/// The naive cache: a map that never evicts.
#[derive(Debug, Clone)]
pub struct UnboundedCache<K, V> {
    map: HashMap<K, V, Fixed>,
}

impl<K: Hash + Eq, V> Default for UnboundedCache<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
        }
    }
}

impl<K: Hash + Eq, V> UnboundedCache<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn put(&mut self, key: K, value: V) -> Option<V> {
        self.map.insert(key, value)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Approximate memory held: map slots (key, value, control byte).
    pub fn bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<K>() + std::mem::size_of::<V>() + 1)
    }
}

/// The value the lesson caches: a 128-byte rendered record.
type Record = [u8; 128];

fn load(key: u64) -> Record {
    let mut r = [0u8; 128];
    for (i, chunk) in r.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(key ^ i as u64).to_le_bytes());
    }
    r
}

/// Read-through over `requests`: hit ratio and nanoseconds per request.
fn run_lru(requests: &[u64], capacity: usize) -> Option<(f64, LruCache<u64, Record>, f64)> {
    let mut cache = LruCache::new(capacity).ok()?;
    let mut hits = 0usize;
    let t = std::time::Instant::now();
    for &k in requests {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.put(k, load(k));
        }
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / requests.len().max(1) as f64;
    Some((hits as f64 / requests.len().max(1) as f64, cache, ns))
}

/// The experiment: `requests` reads of keys drawn from a Zipf(`s`)
/// distribution over `keys` keys, through an unbounded map and through LRU
/// caches; the main one holds `capacity_fraction` of the key space.
pub fn lesson_with(
    seed: u64,
    requests: usize,
    keys: usize,
    s: f64,
    capacity_fraction: f64,
) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let Some(zipf) = Zipf::new(keys, s) else {
        return report.notes("bad parameters");
    };
    let mut rng = StdRng::seed_from_u64(seed);
    // Keys are spread over u64 so that the rank is not the key.
    let stream: Vec<u64> = (0..requests)
        .map(|_| (zipf.sample(&mut rng) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed)
        .collect();

    let mut naive = UnboundedCache::new();
    let mut naive_hits = 0usize;
    let t = std::time::Instant::now();
    for &k in &stream {
        if naive.get(&k).is_some() {
            naive_hits += 1;
        } else {
            naive.put(k, load(k));
        }
    }
    let naive_ns = t.elapsed().as_secs_f64() * 1e9 / requests.max(1) as f64;
    let naive_ratio = naive_hits as f64 / requests.max(1) as f64;

    let capacity = ((keys as f64 * capacity_fraction).round() as usize).max(1);
    let Some((ratio, cache, ns)) = run_lru(&stream, capacity) else {
        return report.notes("bad parameters");
    };
    let mut report = report
        .both("hit_ratio", naive_ratio, ratio)
        .both("bytes", naive.bytes() as f64, cache.bytes() as f64)
        .both("entries", naive.len() as f64, cache.len() as f64)
        .both("ns_per_request", naive_ns, ns)
        .both("requests", requests as f64, requests as f64)
        .naive("key_space", keys as f64)
        .optimal("capacity", capacity as f64)
        .optimal(
            "share_of_best_hit_ratio",
            ratio / naive_ratio.max(f64::MIN_POSITIVE),
        );
    // The hit-ratio curve: a tenth and ten times the main capacity.
    for (label, factor) in [
        ("hit_ratio_capacity_div_10", 0.1),
        ("hit_ratio_capacity_x10", 10.0),
    ] {
        let cap = ((capacity as f64 * factor).round() as usize).clamp(1, keys.max(1));
        if let Some((r, _, _)) = run_lru(&stream, cap) {
            report = report.optimal(label, r);
        }
    }
    let pct = |x: f64| 100.0 * x;
    report.notes(format!(
        "The unbounded map misses only on first access ({:.1} % hits) but ends up holding every key it ever saw, \
         {:.1} MB; an LRU cache of {:.0} % of the keys keeps {:.0} % of that hit ratio in {:.1} % of the memory, \
         because a Zipf workload sends most requests to a few keys. The hit ratio grows roughly with the log of \
         the capacity (see the _div_10 and _x10 rows), so size a cache from the measured curve, not a guess. Both \
         operations are O(1); a cluster of these behind consistent hashing is a memcached/Redis tier. Beyond this: \
         scan-resistant policies (2Q, ARC, W-TinyLFU as in Caffeine and moka), TTLs, and sharded locks for \
         concurrency.",
        pct(naive_ratio),
        naive.bytes() as f64 / 1e6,
        pct(capacity_fraction),
        pct(ratio / naive_ratio.max(f64::MIN_POSITIVE)),
        pct(cache.bytes() as f64 / naive.bytes().max(1) as f64),
    ))
}

/// The full-size experiment: 2,000,000 requests over 200,000 keys, Zipf
/// exponent 1.0, a cache of 2 % of the keys.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 2_000_000, 200_000, 1.0, 0.02)
}

#[cfg(test)]
mod tests;
