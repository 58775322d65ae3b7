//! A compact, read-only copy of an HNSW graph, and the search over it.
//!
//! Why a copy: `hnsw_rs` builds good graphs (in parallel), but its search
//! walks `Arc`-linked nodes behind read locks, allocates per candidate and
//! tracks visited nodes in a SipHash map, which costs several times the
//! distance computations themselves on 50-d data. Here the graph is frozen
//! into flat arrays indexed by slot: layer 0 as fixed-stride rows
//! `[count, n1, n2, ...]` (2·M wide), the few upper-layer nodes in a map, and
//! the visited set is a per-thread array of epoch marks. The search is the
//! textbook one (greedy descent through the upper layers, then a best-first
//! beam of width `ef` on layer 0), as in hnswlib: removed nodes are walked
//! through but never returned.
//!
//! The frozen graph is also what gets saved: loading it gives back exactly
//! the graph that was searched before, so answers are identical.

use super::persist;
use crate::{RagError, Result};
use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// Highest layer number `hnsw_rs` uses (16 layers, 0..=15).
pub(crate) const MAX_LEVEL: u8 = 15;
const MAGIC: u32 = 0x5344_4847; // "SDHG"
const NONE: u32 = u32::MAX;
/// The most layer-0 links a node may have (2·M for M <= 128).
const MAX_LINKS0: usize = 256;

/// A slot with its score against the query; ordered by score.
#[derive(Debug, Clone, Copy)]
struct Cand {
    score: f32,
    slot: u32,
}
impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.slot.cmp(&self.slot))
    }
}

/// Visited marks: a slot is visited when its mark equals the current epoch,
/// so starting a search costs nothing.
#[derive(Default)]
struct Visited {
    /// `u16` as in hnswlib: half the cache footprint of `u32`, and a reset
    /// every 65,535 searches costs little.
    marks: Vec<u16>,
    epoch: u16,
}

impl Visited {
    fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `slot`; returns whether it was unvisited.
    #[inline]
    fn insert(&mut self, slot: u32) -> bool {
        let m = &mut self.marks[slot as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

/// The vectors a search scores against (slot-major, normalized) and the
/// tombstones.
pub(crate) struct Points<'a> {
    pub data: &'a [f32],
    pub dim: usize,
    pub deleted: &'a [bool],
}

impl Points<'_> {
    #[inline]
    fn score(&self, q: &[f32], slot: u32) -> f32 {
        let s = slot as usize * self.dim;
        super::dot(q, &self.data[s..s + self.dim])
    }

    /// Hints the CPU to start loading the vector of `slot`.
    #[inline]
    fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let start = slot as usize * self.dim;
            if let Some(v) = self.data.get(start..start + self.dim) {
                let bytes = std::mem::size_of_val(v);
                let base = v.as_ptr().cast::<i8>();
                for off in (0..bytes)
                    .step_by(64)
                    .chain(std::iter::once(bytes.saturating_sub(1)))
                {
                    // SAFETY: a prefetch is only a hint, it never faults; the
                    // address is inside `v` anyway.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off)) };
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }
}

/// The frozen graph over slots `0..levels.len()`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Graph {
    /// Neighbours per node on layers 1 and up (M).
    m: usize,
    /// Neighbours per node on layer 0 (2·M).
    m0: usize,
    /// `n` rows of `m0 + 1`: the count, then the neighbours.
    links0: Vec<u32>,
    /// Each node's top layer.
    levels: Vec<u8>,
    /// Nodes above layer 0: their lists for layers `1..=level`.
    upper: HashMap<u32, Vec<Vec<u32>>>,
    entry: Option<u32>,
}

impl Graph {
    /// A graph of `n` unlinked nodes (and no entry point).
    pub fn empty(m: usize, n: usize) -> Graph {
        let m0 = 2 * m;
        Graph {
            m,
            m0,
            links0: vec![0; n * (m0 + 1)],
            levels: vec![0; n],
            upper: HashMap::new(),
            entry: None,
        }
    }

    /// Copies the graph `hnsw` holds; its data ids must be slots `0..n`.
    pub fn from_hnsw<D: Distance<f32> + Send + Sync>(
        h: &Hnsw<'_, f32, D>,
        m: usize,
        n: usize,
    ) -> Graph {
        let mut g = Graph::empty(m, n);
        if h.get_nb_point() == 0 {
            return g;
        }
        let pi = h.get_point_indexation();
        let top = pi.get_max_level_observed().min(MAX_LEVEL);
        for level in 0..=top {
            for p in pi.get_layer_iterator(level as usize) {
                let slot = p.get_origin_id();
                if slot >= n {
                    continue;
                }
                let level = p.get_point_id().0.min(MAX_LEVEL);
                g.levels[slot] = level;
                let hood = p.get_neighborhood_id();
                let ids = |l: usize, cap: usize| -> Vec<u32> {
                    hood.get(l)
                        .map(|v| {
                            v.iter()
                                .map(|nb| nb.d_id)
                                .filter(|&d| d < n && d != slot)
                                .take(cap)
                                .map(|d| d as u32)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let row = &mut g.links0[slot * (g.m0 + 1)..(slot + 1) * (g.m0 + 1)];
                let l0 = ids(0, g.m0);
                row[0] = l0.len() as u32;
                row[1..=l0.len()].copy_from_slice(&l0);
                if level > 0 {
                    let lists = (1..=level as usize).map(|l| ids(l, m)).collect();
                    g.upper.insert(slot as u32, lists);
                }
            }
        }
        g.entry = pi
            .get_layer_iterator(top as usize)
            .next()
            .map(|p| p.get_origin_id())
            .filter(|&s| s < n)
            .map(|s| s as u32);
        g
    }

    pub fn nodes(&self) -> usize {
        self.levels.len()
    }

    #[inline]
    fn layer0(&self, slot: u32) -> &[u32] {
        let row = &self.links0[slot as usize * (self.m0 + 1)..(slot as usize + 1) * (self.m0 + 1)];
        &row[1..=row[0] as usize]
    }

    fn upper_list(&self, slot: u32, layer: u8) -> &[u32] {
        self.upper
            .get(&slot)
            .and_then(|lists| lists.get(layer as usize - 1))
            .map_or(&[], |v| v.as_slice())
    }

    /// The best (at most) `k` live slots for a normalized query, best first,
    /// with a beam of width `max(ef, k)` on layer 0.
    pub fn search(&self, pts: &Points<'_>, q: &[f32], k: usize, ef: usize) -> Vec<(f32, u32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        // Greedy descent: on each upper layer, move to a better neighbour
        // while there is one.
        let mut cur = Cand {
            score: pts.score(q, entry),
            slot: entry,
        };
        for layer in (1..=self.levels[entry as usize]).rev() {
            loop {
                let mut moved = false;
                for &nb in self.upper_list(cur.slot, layer) {
                    let s = pts.score(q, nb);
                    if s > cur.score {
                        cur = Cand { score: s, slot: nb };
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED
            .with(|v| {
                let mut visited = v.borrow_mut();
                visited.start(self.nodes());
                self.beam(pts, q, ef, cur, &mut visited)
            })
            .into_sorted_vec()
            .into_iter()
            .take(k)
            .map(|Reverse(c)| (c.score, c.slot))
            .collect()
    }

    /// Best-first search of layer 0 from `start`; returns the best `ef` live
    /// nodes as a min-heap.
    fn beam(
        &self,
        pts: &Points<'_>,
        q: &[f32],
        ef: usize,
        start: Cand,
        visited: &mut Visited,
    ) -> BinaryHeap<Reverse<Cand>> {
        let mut candidates = BinaryHeap::with_capacity(ef * 4);
        let mut results: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef + 1);
        visited.insert(start.slot);
        candidates.push(start);
        if !pts.deleted[start.slot as usize] {
            results.push(Reverse(start));
        }
        let mut bound = f32::NEG_INFINITY;
        if results.len() >= ef {
            bound = start.score;
        }
        while let Some(c) = candidates.pop() {
            if c.score < bound {
                break;
            }
            // Mark the unvisited neighbours and ask for their vectors first,
            // so the memory fetches overlap instead of queueing one by one.
            let mut fresh = [0u32; MAX_LINKS0];
            let mut count = 0;
            for &nb in self.layer0(c.slot) {
                if visited.insert(nb) && count < MAX_LINKS0 {
                    fresh[count] = nb;
                    count += 1;
                    pts.prefetch(nb);
                }
            }
            for &nb in &fresh[..count] {
                let s = pts.score(q, nb);
                if results.len() < ef || s > bound {
                    let cand = Cand { score: s, slot: nb };
                    candidates.push(cand);
                    if !pts.deleted[nb as usize] {
                        results.push(Reverse(cand));
                        if results.len() > ef {
                            results.pop();
                        }
                        if results.len() >= ef {
                            bound = results.peek().map_or(bound, |r| r.0.score);
                        }
                    }
                }
            }
        }
        results
    }

    /// The graph as bytes (little-endian `u32`s).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.nodes();
        let mut w = vec![MAGIC, n as u32, self.m as u32, self.entry.unwrap_or(NONE)];
        w.extend_from_slice(&self.links0);
        w.extend(self.levels.iter().map(|&l| u32::from(l)));
        for slot in 0..n as u32 {
            for layer in 1..=self.levels[slot as usize] {
                let list = self.upper_list(slot, layer);
                w.push(list.len() as u32);
                w.extend_from_slice(list);
            }
        }
        persist::u32s_to_bytes(&w)
    }

    /// Reads [`Graph::to_bytes`], checking every count and link.
    pub fn from_bytes(dir: &Path, bytes: &[u8], n: usize, m: usize) -> Result<Graph> {
        let bad = |detail: String| RagError::Corrupt {
            what: format!("index in {}", dir.display()),
            detail: format!("graph file: {detail}"),
        };
        if !bytes.len().is_multiple_of(4) {
            return Err(bad(format!("{} bytes is not whole u32s", bytes.len())));
        }
        let w = persist::bytes_to_u32s(bytes);
        let mut r = w.iter().copied();
        let mut next = |what: &str| {
            r.next()
                .ok_or_else(|| bad(format!("ends early, at {what}")))
        };
        if next("the header")? != MAGIC {
            return Err(bad("bad magic number".into()));
        }
        let (gn, gm) = (next("the header")? as usize, next("the header")? as usize);
        if gn != n || gm != m {
            return Err(bad(format!(
                "holds {gn} nodes of M = {gm}, the manifest says {n} nodes of M = {m}"
            )));
        }
        let entry = next("the header")?;
        let mut g = Graph::empty(m, n);
        for (i, x) in g.links0.iter_mut().enumerate() {
            *x = next("layer 0")?;
            let in_row = i % (g.m0 + 1);
            let ok = if in_row == 0 {
                *x as usize <= g.m0
            } else {
                (*x as usize) < n
            };
            if !ok {
                return Err(bad(format!("layer 0 row {} is invalid", i / (g.m0 + 1))));
            }
        }
        for l in g.levels.iter_mut() {
            let v = next("the levels")?;
            if v > u32::from(MAX_LEVEL) {
                return Err(bad(format!("a node has level {v}")));
            }
            *l = v as u8;
        }
        for slot in 0..n {
            let level = g.levels[slot];
            if level == 0 {
                continue;
            }
            let mut lists = Vec::with_capacity(level as usize);
            for _ in 1..=level {
                let count = next("an upper layer")? as usize;
                if count > m {
                    return Err(bad(format!("node {slot} has {count} upper links")));
                }
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    let nb = next("an upper layer")?;
                    if nb as usize >= n {
                        return Err(bad(format!("node {slot} links to node {nb}")));
                    }
                    list.push(nb);
                }
                lists.push(list);
            }
            g.upper.insert(slot as u32, lists);
        }
        if next("the end").is_ok() {
            return Err(bad("has bytes after the last list".into()));
        }
        let top = g.levels.iter().copied().max().unwrap_or(0);
        g.entry = match entry {
            NONE if n == 0 => None,
            e if (e as usize) < n && g.levels[e as usize] == top => Some(e),
            e => return Err(bad(format!("entry point {e} is not a top-layer node"))),
        };
        Ok(g)
    }
}
