//! Approximate search on an HNSW graph (Malkov & Yashunin), built by
//! `hnsw_rs` and searched through a frozen copy of the graph ([`super::graph`]).
//!
//! - Build: `hnsw_rs` with [`UnitDot`] (`1 - <a, b>` on unit vectors, which
//!   is what `hnsw_rs`'s own `DistDot` computes, minus its assertion that
//!   panics when rounding pushes a dot product past 1.000002), 16 layers,
//!   batches inserted in parallel on rayon's current pool.
//! - Search: after every change the graph is copied into flat arrays
//!   (a few hundred ms for 400k nodes, so add in batches); searches run on
//!   that copy, several times faster than `hnsw_rs`'s own search on the same
//!   graph ([`HnswIndex::search_hnsw_rs`] keeps the latter for comparison).
//!   Removed ids stay graph nodes that the search walks through but never
//!   returns, so `k` live results come back while `k` live vectors exist.
//! - Persistence: vectors, ids, tombstones and the frozen graph, so loading
//!   needs no rebuild and answers exactly as before saving. The cost: a
//!   loaded index has no `hnsw_rs` builder, so the first `add` after a load
//!   rebuilds one from the stored vectors (dropping tombstones), as long as
//!   a fresh build: about 13 minutes for GloVe's 400k 50-d vectors with
//!   ef_construction 200 on 2 threads (6 with 100), against 88-107 s for
//!   hnswlib; small collections rebuild in well under a second. (The alternative, reloading
//!   `hnsw_rs`'s own dump, ties the graph's lifetime to its loader and would
//!   still need the copy for fast search.)

use super::graph::{Graph, Points};
use super::persist;
use super::store::{expect_kind, Store};
use super::{dot, normalized, sort_hits, Hit, VectorIndex};
use crate::{RagError, Result};
use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The manifest kind of an HNSW index.
pub const KIND: &str = "hnsw";

/// Layers `hnsw_rs` may use (its maximum; its dump format needs it too).
const MAX_LAYERS: usize = 16;

/// Batches smaller than this are inserted one by one (deterministic, and
/// thread start-up would cost more than it saves).
const PARALLEL_MIN: usize = 256;

/// Graph settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers; layer 0 gets `2 * m`.
    pub m: usize,
    /// Beam width while inserting: higher builds slower and better.
    pub ef_construction: usize,
    /// Beam width of [`VectorIndex::search`] (at least `k` is used).
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 100,
        }
    }
}

impl HnswParams {
    /// Checks the ranges `hnsw_rs` supports (it exits the process above
    /// 256 links and truncates the count to a byte).
    pub fn validate(&self) -> Result<()> {
        if !(2..=128).contains(&self.m) {
            return Err(RagError::Input(format!(
                "HNSW m must be in 2..=128, got {}",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(RagError::Input(
                "HNSW ef_construction and ef_search must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// `hnsw_rs` distance for unit vectors: `1 - <a, b>`, clamped at 0 (rounding
/// can make the dot product of near-duplicates exceed 1 slightly).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

type Builder = Hnsw<'static, f32, UnitDot>;

/// Approximate nearest-neighbour search over normalized vectors.
pub struct HnswIndex {
    params: HnswParams,
    store: Store,
    /// The `hnsw_rs` graph new vectors go into; `None` after a load until
    /// the first add.
    builder: Option<Builder>,
    /// What searches run on.
    graph: Graph,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("params", &self.params)
            .field("dim", &self.store.dim())
            .field("live", &self.store.live())
            .field("tombstones", &self.store.tombstones())
            .field("has_builder", &self.builder.is_some())
            .finish()
    }
}

impl HnswIndex {
    /// An empty index for vectors of `dim` components.
    pub fn new(dim: usize, params: HnswParams) -> Result<Self> {
        params.validate()?;
        Ok(HnswIndex {
            params,
            store: Store::new(dim)?,
            builder: None,
            graph: Graph::empty(params.m, 0),
        })
    }

    /// An index holding `items`, inserted in parallel on rayon's current
    /// pool (run it inside `ThreadPool::install` to choose the threads).
    pub fn build(dim: usize, params: HnswParams, items: &[(u64, Vec<f32>)]) -> Result<Self> {
        let mut index = HnswIndex::new(dim, params)?;
        index.add(items)?;
        Ok(index)
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Sets the beam width [`VectorIndex::search`] uses.
    pub fn set_ef_search(&mut self, ef: usize) -> Result<()> {
        let params = HnswParams {
            ef_search: ef,
            ..self.params
        };
        params.validate()?;
        self.params = params;
        Ok(())
    }

    /// Removed vectors still stored (and still graph nodes).
    pub fn tombstones(&self) -> usize {
        self.store.tombstones()
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.store.contains(id)
    }

    /// Rebuilds the graph from the live vectors only.
    pub fn compact(&mut self) {
        self.store = self.store.compacted();
        let builder = new_builder(self.params, self.store.slots());
        insert(&builder, &self.store, 0);
        self.graph = Graph::from_hnsw(&builder, self.params.m, self.store.slots());
        self.builder = Some(builder);
    }

    /// Like [`VectorIndex::search`] with beam width `ef` instead of the
    /// index's `ef_search`.
    pub fn search_with_ef(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        let q = normalized(query, self.store.dim())?;
        Ok(self.search_normalized(&q, k, ef))
    }

    /// [`HnswIndex::search_with_ef`] for a query already of unit length.
    pub(crate) fn search_normalized(&self, q: &[f32], k: usize, ef: usize) -> Vec<Hit> {
        let pts = Points {
            data: self.store.data(),
            dim: self.store.dim(),
            deleted: self.store.deleted(),
        };
        let mut hits: Vec<Hit> = self
            .graph
            .search(&pts, q, k, ef)
            .into_iter()
            .map(|(score, slot)| Hit {
                id: self.store.id(slot as usize),
                score,
            })
            .collect();
        sort_hits(&mut hits);
        hits
    }

    /// The same query through `hnsw_rs`'s own search on the same graph (for
    /// comparison; slower). Not available on a loaded index until it is
    /// changed, since only the frozen copy is saved.
    pub fn search_hnsw_rs(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        let builder = self.builder.as_ref().ok_or_else(|| {
            RagError::Input(
                "this index was loaded from disk: hnsw_rs's own graph is rebuilt only by add or compact"
                    .into(),
            )
        })?;
        let q = normalized(query, self.store.dim())?;
        let live = |slot: &usize| self.store.is_live(*slot);
        let filter: Option<&dyn hnsw_rs::filter::FilterT> = if self.store.tombstones() > 0 {
            Some(&live)
        } else {
            None
        };
        let mut hits: Vec<Hit> = builder
            .search_filter(&q, k, ef.max(k), filter)
            .into_iter()
            .filter(|n| n.d_id < self.store.slots() && self.store.is_live(n.d_id))
            .map(|n| Hit {
                id: self.store.id(n.d_id),
                score: 1.0 - n.distance,
            })
            .collect();
        sort_hits(&mut hits);
        Ok(hits)
    }

    /// Opens an index [`VectorIndex::save`] wrote, verifying every file.
    /// Searches answer exactly as before the save.
    pub fn load(dir: &Path) -> Result<Self> {
        let m = persist::read_manifest(dir)?;
        expect_kind(dir, &m, KIND)?;
        let params: HnswParams =
            serde_json::from_value(m.params.clone()).map_err(|e| RagError::Corrupt {
                what: format!("index in {}", dir.display()),
                detail: format!("manifest.json has no valid HNSW params: {e}"),
            })?;
        params.validate().map_err(|e| RagError::Corrupt {
            what: format!("index in {}", dir.display()),
            detail: format!("manifest.json: {e}"),
        })?;
        let store = Store::read(dir, &m)?;
        let bytes = persist::read_file(dir, &m, "graph")?;
        let graph = Graph::from_bytes(dir, &bytes, store.slots(), params.m)?;
        Ok(HnswIndex {
            params,
            store,
            builder: None,
            graph,
        })
    }
}

fn new_builder(params: HnswParams, capacity: usize) -> Builder {
    Hnsw::new(
        params.m,
        capacity.max(1),
        MAX_LAYERS,
        params.ef_construction,
        UnitDot,
    )
}

/// Inserts the store's slots `first..` into `builder`, with the slot as
/// `hnsw_rs`'s data id.
fn insert(builder: &Builder, store: &Store, first: usize) {
    let batch: Vec<(&[f32], usize)> = (first..store.slots())
        .map(|s| (store.vector(s), s))
        .collect();
    if batch.len() < PARALLEL_MIN || rayon::current_num_threads() == 1 {
        for item in batch {
            builder.insert_slice(item);
        }
    } else {
        builder.parallel_insert_slice(&batch);
    }
}

impl VectorIndex for HnswIndex {
    fn dim(&self) -> usize {
        self.store.dim()
    }

    fn len(&self) -> usize {
        self.store.live()
    }

    fn add(&mut self, items: &[(u64, Vec<f32>)]) -> Result<()> {
        let data = self.store.prepare(items)?;
        if items.is_empty() {
            return Ok(());
        }
        if self.builder.is_none() {
            // After a load: rebuild hnsw_rs's graph, without the tombstones.
            self.store = self.store.compacted();
            let builder = new_builder(self.params, self.store.slots() + items.len());
            insert(&builder, &self.store, 0);
            self.builder = Some(builder);
        }
        let first = self.store.append(items, data);
        if let Some(builder) = &self.builder {
            insert(builder, &self.store, first);
            self.graph = Graph::from_hnsw(builder, self.params.m, self.store.slots());
        }
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<bool> {
        Ok(self.store.remove(id))
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.search_with_ef(query, k, self.params.ef_search)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let m = self
            .store
            .manifest(KIND, serde_json::to_value(self.params)?);
        let mut files = self.store.files();
        files.push(("graph", self.graph.to_bytes()));
        persist::write_index(dir, m, files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize, dim: usize) -> Vec<(u64, Vec<f32>)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
        (0..n)
            .map(|i| {
                let v = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                (i as u64 * 3, v)
            })
            .collect()
    }

    #[test]
    fn small_index_finds_itself() {
        let data = items(300, 8);
        let idx = HnswIndex::build(8, HnswParams::default(), &data).unwrap();
        assert_eq!(idx.len(), 300);
        for (id, v) in data.iter().take(50) {
            let hits = idx.search(v, 1).unwrap();
            assert_eq!(hits[0].id, *id);
            assert!((hits[0].score - 1.0).abs() < 1e-5);
        }
        let native = idx.search_hnsw_rs(&data[7].1, 1, 50).unwrap();
        assert_eq!(native[0].id, data[7].0);
    }

    #[test]
    fn empty_and_invalid() {
        let idx = HnswIndex::new(4, HnswParams::default()).unwrap();
        assert!(idx.search(&[1.0, 0.0, 0.0, 0.0], 3).unwrap().is_empty());
        assert!(idx.search(&[1.0, 0.0], 3).is_err());
        let bad = HnswParams {
            m: 1,
            ..HnswParams::default()
        };
        assert!(HnswIndex::new(4, bad).is_err());
        let bad = HnswParams {
            m: 300,
            ..HnswParams::default()
        };
        assert!(HnswIndex::new(4, bad).is_err());
    }

    #[test]
    fn removed_ids_are_never_returned() {
        let data = items(400, 6);
        let mut idx = HnswIndex::build(6, HnswParams::default(), &data).unwrap();
        for (id, _) in data.iter().step_by(2) {
            assert!(idx.remove(*id).unwrap());
        }
        let hits = idx.search(&data[0].1, 20).unwrap();
        assert_eq!(hits.len(), 20);
        assert!(hits.iter().all(|h| (h.id / 3) % 2 == 1));
        idx.compact();
        assert_eq!(idx.tombstones(), 0);
        assert_eq!(idx.len(), 200);
        let hits = idx.search(&data[1].1, 1).unwrap();
        assert_eq!(hits[0].id, data[1].0);
    }
}
