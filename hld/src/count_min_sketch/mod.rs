//! Count-Min sketch and a top-k tracker: "how often was this seen?" and
//! "what is trending?" over a stream too large to count exactly.
//!
//! **The naive way** is a `HashMap` from item to count, then a sort for the
//! top k. Exact, but memory grows with the number of distinct items, and in
//! a real stream (search queries, hashtags, URLs) most distinct items are in
//! the long tail and seen once or twice.
//!
//! **The optimal way** (Cormode & Muthukrishnan, 2005) is a `depth x width`
//! table of counters. Each row has its own hash; adding an item increments
//! one counter per row, and the estimate is the *minimum* of the item's
//! counters. Other items colliding into a counter can only add to it, so the
//! estimate never falls below the truth, and with `width = ceil(e / eps)` and
//! `depth = ceil(ln(1 / delta))` it exceeds the truth by more than `eps * N`
//! (`N` the total count) with probability at most `delta`. Memory is
//! `width * depth` counters whatever the number of distinct items; add and
//! estimate are `O(depth)`. The rows' hashes must be independent: with
//! double hashing (`h1 + r * h2 mod width`, fine for a Bloom filter) two
//! items that share a counter in rows 0 and 1 share one in every row, so a
//! tail item glued to a heavy hitter is overestimated whatever the depth.
//! Here each row re-mixes the item's 64-bit hash with its own constant.
//!
//! The sketch cannot list its items, so "trending" adds a top-k tracker
//! ([`TopK`]): after each add, if the item's estimate beats the smallest of
//! the `k` current leaders it replaces it. The leaders sit in an ordered set
//! keyed by `(count, item)`, used as a min-heap whose members can be updated
//! in `O(log k)`. Heavy hitters have large counts, which the sketch estimates
//! well, so they are found; the tail is never stored.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

/// The lesson's command-line name.
pub const NAME: &str = "count-min-sketch";
/// A short human title.
pub const TITLE: &str =
    "Count-Min sketch and top-k: a HashMap of counts against a d x w counter table";

/// Errors when sizing a sketch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SketchError {
    #[error("width and depth must be positive")]
    Empty,
    #[error("epsilon {0} and delta {1} must be strictly between 0 and 1")]
    BadError(f64, f64),
    #[error("cannot merge sketches of different shape or seed")]
    Incompatible,
    #[error("k must be positive")]
    NoK,
}

pub use crate::hash::hash_bytes;
use crate::hash::mix64;

/// A Count-Min sketch over byte strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMinSketch {
    width: usize,
    depth: usize,
    counters: Vec<u64>,
    total: u64,
    seed: u64,
}

impl CountMinSketch {
    /// A sketch of `depth` rows of `width` counters.
    pub fn new(width: usize, depth: usize, seed: u64) -> Result<Self, SketchError> {
        if width == 0 || depth == 0 {
            return Err(SketchError::Empty);
        }
        Ok(Self {
            width,
            depth,
            counters: vec![0; width * depth],
            total: 0,
            seed,
        })
    }

    /// A sketch whose estimates exceed the truth by more than `epsilon * N`
    /// with probability at most `delta`: `width = ceil(e / epsilon)`,
    /// `depth = ceil(ln(1 / delta))`.
    pub fn with_error(epsilon: f64, delta: f64, seed: u64) -> Result<Self, SketchError> {
        let ok = |x: f64| x > 0.0 && x < 1.0;
        if !ok(epsilon) || !ok(delta) {
            return Err(SketchError::BadError(epsilon, delta));
        }
        let width = (std::f64::consts::E / epsilon).ceil() as usize;
        let depth = (1.0 / delta).ln().ceil().max(1.0) as usize;
        Self::new(width, depth, seed)
    }

    /// The index of row `r`'s counter for an item with 64-bit hash `h`: the
    /// hash re-mixed with a per-row constant, so that rows are independent.
    fn cell(&self, r: usize, h: u64) -> usize {
        let row_hash = mix64(h ^ (r as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        r * self.width + (row_hash % self.width as u64) as usize
    }

    /// Adds `count` occurrences of `item`.
    pub fn add(&mut self, item: impl AsRef<[u8]>, count: u64) {
        let h = hash_bytes(item.as_ref(), self.seed);
        for r in 0..self.depth {
            let c = self.cell(r, h);
            self.counters[c] = self.counters[c].saturating_add(count);
        }
        self.total = self.total.saturating_add(count);
    }

    /// The estimated count of `item`: the minimum of its counters. Never
    /// below the true count.
    pub fn estimate(&self, item: impl AsRef<[u8]>) -> u64 {
        let h = hash_bytes(item.as_ref(), self.seed);
        (0..self.depth)
            .map(|r| self.counters[self.cell(r, h)])
            .min()
            .unwrap_or(0)
    }

    /// `N`, the sum of all counts added.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// `epsilon = e / width`.
    pub fn epsilon(&self) -> f64 {
        std::f64::consts::E / self.width as f64
    }

    /// `delta = e^-depth`, the chance an estimate breaks the bound.
    pub fn delta(&self) -> f64 {
        (-(self.depth as f64)).exp()
    }

    /// `epsilon * N`: the overestimate an item stays under with probability
    /// `1 - delta`.
    pub fn error_bound(&self) -> f64 {
        self.epsilon() * self.total as f64
    }

    /// Memory held by the counters.
    pub fn bytes(&self) -> usize {
        self.counters.len() * std::mem::size_of::<u64>()
    }

    /// Adds `other`'s counts: the sketch of both streams.
    pub fn merge(&mut self, other: &Self) -> Result<(), SketchError> {
        if (self.width, self.depth, self.seed) != (other.width, other.depth, other.seed) {
            return Err(SketchError::Incompatible);
        }
        for (a, b) in self.counters.iter_mut().zip(&other.counters) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
        Ok(())
    }
}

/// The `k` items with the highest estimated counts of a stream, tracked with
/// a Count-Min sketch and an updatable min-heap of `k` leaders.
#[derive(Debug, Clone)]
pub struct TopK<K> {
    k: usize,
    sketch: CountMinSketch,
    leaders: BTreeMap<K, u64>,
    by_count: BTreeSet<(u64, K)>,
}

impl<K: AsRef<[u8]> + Ord + Clone> TopK<K> {
    /// Tracks the top `k` using `sketch` for the counts.
    pub fn new(k: usize, sketch: CountMinSketch) -> Result<Self, SketchError> {
        if k == 0 {
            return Err(SketchError::NoK);
        }
        Ok(Self {
            k,
            sketch,
            leaders: BTreeMap::new(),
            by_count: BTreeSet::new(),
        })
    }

    /// Counts one occurrence of `item` and updates the leaders.
    pub fn observe(&mut self, item: &K) {
        self.sketch.add(item, 1);
        let est = self.sketch.estimate(item);
        if let Some(count) = self.leaders.get_mut(item) {
            self.by_count.remove(&(*count, item.clone()));
            *count = est;
            self.by_count.insert((est, item.clone()));
        } else if self.leaders.len() < self.k {
            self.leaders.insert(item.clone(), est);
            self.by_count.insert((est, item.clone()));
        } else if self.by_count.first().is_some_and(|(min, _)| est > *min) {
            if let Some((_, evicted)) = self.by_count.pop_first() {
                self.leaders.remove(&evicted);
            }
            self.leaders.insert(item.clone(), est);
            self.by_count.insert((est, item.clone()));
        }
    }

    /// The leaders, highest estimate first.
    pub fn top(&self) -> Vec<(K, u64)> {
        self.by_count
            .iter()
            .rev()
            .map(|(c, k)| (k.clone(), *c))
            .collect()
    }

    pub fn sketch(&self) -> &CountMinSketch {
        &self.sketch
    }

    /// Approximate memory: the sketch plus the leaders (two copies of each
    /// key, a count each, and tree-node overhead guessed at 32 bytes).
    pub fn bytes(&self) -> usize {
        let per_leader: usize = self
            .leaders
            .keys()
            .map(|k| 2 * (k.as_ref().len() + std::mem::size_of::<K>() + 8 + 32))
            .sum();
        self.sketch.bytes() + per_leader
    }
}

/// The naive counter: every distinct item with its exact count.
#[derive(Debug, Clone, Default)]
pub struct ExactCounts {
    counts: HashMap<Vec<u8>, u64, BuildHasherDefault<DefaultHasher>>,
    key_bytes: usize,
}

impl ExactCounts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, item: impl AsRef<[u8]>, count: u64) {
        let item = item.as_ref();
        if let Some(c) = self.counts.get_mut(item) {
            *c += count;
        } else {
            self.key_bytes += item.len();
            self.counts.insert(item.to_vec(), count);
        }
    }

    pub fn count(&self, item: impl AsRef<[u8]>) -> u64 {
        self.counts.get(item.as_ref()).copied().unwrap_or(0)
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// The `k` most frequent items (ties broken by item), by a full sort.
    pub fn top(&self, k: usize) -> Vec<(Vec<u8>, u64)> {
        let mut all: Vec<(Vec<u8>, u64)> =
            self.counts.iter().map(|(k, &c)| (k.clone(), c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.counts.iter().map(|(k, &c)| (k.as_slice(), c))
    }

    /// Approximate memory: key header, count and control byte per slot,
    /// plus the keys' bytes.
    pub fn bytes(&self) -> usize {
        self.counts.capacity() * (std::mem::size_of::<Vec<u8>>() + 8 + 1) + self.key_bytes
    }
}

pub use crate::workload::Zipf;

/// The experiment: `events` hashtags drawn from a Zipf(`s`) distribution over
/// `universe` tags, counted exactly and by a sketch of the given error
/// parameters; the top `k` reported by each.
pub fn lesson_with(
    seed: u64,
    events: usize,
    universe: usize,
    s: f64,
    epsilon: f64,
    delta: f64,
    k: usize,
) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let (Some(zipf), Ok(sketch)) = (
        Zipf::new(universe, s),
        CountMinSketch::with_error(epsilon, delta, seed),
    ) else {
        return report.notes("bad parameters");
    };
    let Ok(mut topk) = TopK::new(k, sketch) else {
        return report.notes("bad parameters");
    };
    let mut rng = StdRng::seed_from_u64(seed);
    // Tag names are shuffled against ranks, so alphabetical order says
    // nothing about frequency.
    let tags: Vec<Vec<u8>> = (0..universe)
        .map(|r| format!("#tag{:08x}", hash_bytes(&r.to_le_bytes(), seed) as u32).into_bytes())
        .collect();
    let stream: Vec<usize> = (0..events).map(|_| zipf.sample(&mut rng)).collect();

    let mut exact = ExactCounts::new();
    let t = std::time::Instant::now();
    for &r in &stream {
        exact.add(&tags[r], 1);
    }
    let exact_top: Vec<Vec<u8>> = exact.top(k).into_iter().map(|(t, _)| t).collect();
    let exact_ns = t.elapsed().as_secs_f64() * 1e9 / events.max(1) as f64;

    let t = std::time::Instant::now();
    for &r in &stream {
        topk.observe(&tags[r]);
    }
    let sketch_ns = t.elapsed().as_secs_f64() * 1e9 / events.max(1) as f64;
    let sketch = topk.sketch();

    let mut max_over = 0u64;
    let mut sum_over = 0u64;
    let mut over_bound = 0usize;
    let mut under = 0usize;
    let bound = sketch.error_bound();
    for (item, truth) in exact.iter() {
        let est = sketch.estimate(item);
        if est < truth {
            under += 1;
        }
        let over = est.saturating_sub(truth);
        max_over = max_over.max(over);
        sum_over += over;
        if over as f64 > bound {
            over_bound += 1;
        }
    }
    let distinct = exact.distinct().max(1) as f64;
    let found: BTreeSet<Vec<u8>> = topk.top().into_iter().map(|(t, _)| t).collect();
    let recall = exact_top.iter().filter(|t| found.contains(*t)).count() as f64
        / exact_top.len().max(1) as f64;

    report
        .both("bytes", exact.bytes() as f64, topk.bytes() as f64)
        .both("max_overestimate", 0.0, max_over as f64)
        .both("mean_overestimate", 0.0, sum_over as f64 / distinct)
        .both("topk_recall", 1.0, recall)
        .both("add_ns", exact_ns, sketch_ns)
        .both("events", events as f64, events as f64)
        .naive("distinct_items", exact.distinct() as f64)
        .optimal("error_bound", bound)
        .optimal("epsilon", sketch.epsilon())
        .optimal("delta", sketch.delta())
        .optimal("width", sketch.width() as f64)
        .optimal("depth", sketch.depth() as f64)
        .optimal("k", k as f64)
        .optimal("fraction_over_bound", over_bound as f64 / distinct)
        .optimal("underestimates", under as f64)
        .notes(format!(
            "The HashMap keeps all {} distinct tags; the sketch keeps {} x {} counters plus {k} leaders, whatever the \
             number of tags. Its estimates never fall below the truth; the worst overestimate, {max_over}, is {} the \
             eps*N = {bound:.0} bound (a per-item guarantee holding with probability 1 - delta), and the average one \
             is {:.0}. On a skewed stream the top-{k} tracker recovers {:.0} % of the true trending tags. The sketch \
             cannot list items or forget counts, so for \"trending in the last hour\" keep one sketch per time window \
             and merge or age them. Beyond this: conservative update (raise only the minimum counters), Space-Saving \
             / Misra-Gries for heavy hitters with guarantees, and windowed or decayed sketches in stream processors.",
            exact.distinct(),
            sketch.depth(),
            sketch.width(),
            if max_over as f64 <= bound { "within" } else { "above" },
            sum_over as f64 / distinct,
            100.0 * recall,
        ))
}

/// The full-size experiment: 2,000,000 events over 200,000 tags, Zipf
/// exponent 1.0, eps = 0.001, delta = 0.01, top 20.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 2_000_000, 200_000, 1.0, 0.001, 0.01, 20)
}

#[cfg(test)]
mod tests;
