//! Exact search: the query against every stored vector.
//!
//! The naive baseline, kept honest: vectors in one contiguous slot-major
//! array (streamed once per query, so the scan runs at memory bandwidth), a
//! dot product the compiler vectorizes, a bounded heap for the top `k`, and
//! large scans split across rayon's threads (in a one-thread pool the scan
//! is a plain loop). Its answers are the definition of "correct" that HNSW's
//! recall is measured against.

use super::persist;
use super::store::{expect_kind, Store};
use super::{dot, normalized, sort_hits, Hit, VectorIndex};
use crate::Result;
use rayon::prelude::*;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::path::Path;

/// The manifest kind of a flat index.
pub const KIND: &str = "flat";

/// Slots per parallel work item.
const BLOCK: usize = 4096;

/// A candidate ordered by quality: higher score, then smaller id, is greater.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ranked {
    pub score: f32,
    pub id: u64,
}

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.id.cmp(&self.id))
    }
}

/// The `k` best candidates seen so far.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, r: Ranked) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(r));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if r > worst.0 {
                *worst = Reverse(r);
            }
        }
    }

    pub fn merge(mut self, other: TopK) -> TopK {
        for Reverse(r) in other.heap {
            self.push(r);
        }
        self
    }

    pub fn into_hits(self) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .heap
            .into_iter()
            .map(|Reverse(r)| Hit {
                id: r.id,
                score: r.score,
            })
            .collect();
        sort_hits(&mut hits);
        hits
    }
}

/// Exact nearest-neighbour search over normalized vectors.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    store: Store,
}

impl FlatIndex {
    /// An empty index for vectors of `dim` components (`dim` >= 1).
    pub fn new(dim: usize) -> Result<Self> {
        Ok(FlatIndex {
            store: Store::new(dim)?,
        })
    }

    /// Removed vectors still stored.
    pub fn tombstones(&self) -> usize {
        self.store.tombstones()
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.store.contains(id)
    }

    /// Drops removed vectors from storage.
    pub fn compact(&mut self) {
        self.store = self.store.compacted();
    }

    /// Opens an index [`VectorIndex::save`] wrote, verifying every file.
    pub fn load(dir: &Path) -> Result<Self> {
        let m = persist::read_manifest(dir)?;
        expect_kind(dir, &m, KIND)?;
        Ok(FlatIndex {
            store: Store::read(dir, &m)?,
        })
    }

    /// The best `k` for an already normalized query.
    pub(crate) fn search_normalized(&self, q: &[f32], k: usize) -> Vec<Hit> {
        let s = &self.store;
        let k = k.min(s.live());
        if k == 0 {
            return Vec::new();
        }
        let scan = |range: std::ops::Range<usize>| {
            let mut top = TopK::new(k);
            let data = &s.data()[range.start * s.dim()..range.end * s.dim()];
            let deleted = &s.deleted()[range.clone()];
            for (i, v) in data.chunks_exact(s.dim()).enumerate() {
                if !deleted[i] {
                    top.push(Ranked {
                        score: dot(q, v),
                        id: s.id(range.start + i),
                    });
                }
            }
            top
        };
        let n = s.slots();
        if n <= BLOCK || rayon::current_num_threads() == 1 {
            return scan(0..n).into_hits();
        }
        (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| scan(b * BLOCK..((b + 1) * BLOCK).min(n)))
            .reduce(|| TopK::new(k), TopK::merge)
            .into_hits()
    }
}

impl VectorIndex for FlatIndex {
    fn dim(&self) -> usize {
        self.store.dim()
    }

    fn len(&self) -> usize {
        self.store.live()
    }

    fn add(&mut self, items: &[(u64, Vec<f32>)]) -> Result<()> {
        let data = self.store.prepare(items)?;
        self.store.append(items, data);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<bool> {
        Ok(self.store.remove(id))
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let q = normalized(query, self.store.dim())?;
        Ok(self.search_normalized(&q, k))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let m = self.store.manifest(KIND, serde_json::Value::Null);
        persist::write_index(dir, m, self.store.files())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exact_neighbours_and_respects_tombstones() {
        let mut f = FlatIndex::new(2).unwrap();
        f.add(&[
            (1, vec![1.0, 0.0]),
            (2, vec![0.0, 1.0]),
            (3, vec![1.0, 1.0]),
        ])
        .unwrap();
        let hits = f.search(&[2.0, 0.1], 3).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3, 2]);
        assert!((hits[0].score - 0.99875).abs() < 1e-4);
        assert!(f.remove(1).unwrap());
        assert!(!f.remove(1).unwrap());
        assert_eq!(f.len(), 2);
        assert_eq!(f.search(&[1.0, 0.0], 5).unwrap().len(), 2);
        // A removed id may come back under a new vector.
        f.add(&[(1, vec![0.0, -1.0])]).unwrap();
        assert_eq!(f.search(&[0.0, -1.0], 1).unwrap()[0].id, 1);
        f.compact();
        assert_eq!(f.tombstones(), 0);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn refuses_bad_batches_whole() {
        let mut f = FlatIndex::new(2).unwrap();
        f.add(&[(1, vec![1.0, 0.0])]).unwrap();
        assert!(f.add(&[(2, vec![1.0, 0.0]), (1, vec![0.0, 1.0])]).is_err());
        assert!(f.add(&[(3, vec![1.0, 0.0]), (3, vec![0.0, 1.0])]).is_err());
        assert!(f.add(&[(4, vec![1.0, 0.0]), (5, vec![0.0, 0.0])]).is_err());
        assert_eq!(f.len(), 1);
        assert!(f.search(&[1.0], 1).is_err());
        assert!(f.search(&[0.0, 0.0], 1).is_err());
        assert!(f.search(&[1.0, 0.0], 0).unwrap().is_empty());
        assert!(FlatIndex::new(0).is_err());
    }

    #[test]
    fn topk_keeps_best_and_breaks_ties_by_id() {
        let mut t = TopK::new(2);
        for (id, score) in [(5, 0.5), (3, 0.9), (4, 0.5), (1, 0.1)] {
            t.push(Ranked { score, id });
        }
        let hits = t.into_hits();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [3, 4]);
    }
}
