//! Serving recommendations: item vectors in an HNSW index, a user vector
//! per request, the nearest items the user has not seen.
//!
//! A known user is embedded from their id and latest training items; an
//! anonymous one from a list of movie ids alone (the model's "unknown user"
//! row, which training fed with a share of examples). The index is `rag`'s
//! HNSW over unit vectors, so the inner product is the model's own score; the
//! user's seen items are filtered out of a deeper search. [`Recommender::
//! ann_report`] measures what the index costs against exact scoring of every
//! item: recall@100 and latency.

use crate::movielens::MovieLens;
use crate::split::Split;
use crate::two_tower::TwoTower;
use crate::{RecsysError, Result};
use rag::index::hnsw::{HnswIndex, HnswParams};
use std::collections::HashSet;
use std::time::Instant;

/// One recommended movie.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recommendation {
    pub movie_id: u32,
    pub title: String,
    pub year: Option<u16>,
    pub genres: Vec<String>,
    /// Cosine between the user and item vectors.
    pub score: f32,
}

/// ANN against exact top-k over the test users.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AnnReport {
    pub queries: usize,
    pub k: usize,
    pub ef: usize,
    pub recall: f64,
    pub exact_ms_p50: f64,
    pub ann_ms_p50: f64,
    pub exact_ms_p99: f64,
    pub ann_ms_p99: f64,
}

pub struct Recommender {
    pub model: TwoTower,
    pub split: Split,
    items: Vec<(String, Option<u16>, Vec<String>)>,
    vectors: Vec<Vec<f32>>,
    index: HnswIndex,
}

fn rag_err(e: rag::RagError) -> RecsysError {
    RecsysError::Model(format!("item index: {e}"))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

impl Recommender {
    /// Builds the item index from the model's item vectors.
    pub fn new(model: TwoTower, ml: &MovieLens, split: Split, ef_search: usize) -> Result<Self> {
        if model.config.num_items != split.item_ids.len() {
            return Err(RecsysError::Input(format!(
                "the model knows {} items, the data {}: train it on this data",
                model.config.num_items,
                split.item_ids.len()
            )));
        }
        let vectors = model.item_vectors()?;
        let items_with_ids: Vec<(u64, Vec<f32>)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.clone()))
            .collect();
        let params = HnswParams {
            ef_search,
            ..HnswParams::default()
        };
        // One thread: the graph (and so every answer) is the same on every
        // load; 9,066 small vectors take well under a second.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| RecsysError::Model(e.to_string()))?;
        let index = pool
            .install(|| HnswIndex::build(model.config.dim, params, &items_with_ids))
            .map_err(rag_err)?;
        let items = split
            .item_ids
            .iter()
            .map(|&id| match ml.movie(id) {
                Some(m) => (m.title.clone(), m.year, m.genres.clone()),
                None => (format!("movie {id}"), None, vec![]),
            })
            .collect();
        Ok(Self {
            model,
            split,
            items,
            vectors,
            index,
        })
    }

    /// The user index of a MovieLens userId.
    pub fn user_index(&self, user_id: u32) -> Result<usize> {
        self.split
            .user_ids
            .binary_search(&user_id)
            .map_err(|_| RecsysError::NotFound(format!("no user {user_id} in the training data")))
    }

    /// The `k` best unseen movies for a known user.
    pub fn for_user(&self, user_id: u32, k: usize) -> Result<Vec<Recommendation>> {
        let u = self.user_index(user_id)?;
        let history = &self.split.train[u];
        let v = self.model.user_vectors(&[u as u32], &[history])?;
        self.nearest(&v[0], history, k)
    }

    /// The `k` best movies after watching `movie_ids` (oldest first), for a
    /// user the model has not seen.
    pub fn for_history(&self, movie_ids: &[u32], k: usize) -> Result<Vec<Recommendation>> {
        if movie_ids.is_empty() {
            return Err(RecsysError::Input("the history is empty".into()));
        }
        let history: Vec<u32> = movie_ids
            .iter()
            .map(|&m| {
                self.split
                    .item_index(m)
                    .ok_or_else(|| RecsysError::NotFound(format!("no movie {m} in the catalogue")))
            })
            .collect::<Result<_>>()?;
        let unknown = self.model.config.num_users as u32 - 1;
        let v = self.model.user_vectors(&[unknown], &[&history])?;
        self.nearest(&v[0], &history, k)
    }

    fn nearest(&self, user: &[f32], seen: &[u32], k: usize) -> Result<Vec<Recommendation>> {
        if k == 0 || k > 1000 {
            return Err(RecsysError::Input(format!("k must be 1 to 1000, got {k}")));
        }
        let seen: HashSet<u32> = seen.iter().copied().collect();
        let depth = (k + seen.len()).min(self.vectors.len());
        let ef = self.index.params().ef_search.max(depth);
        let hits = self
            .index
            .search_with_ef(user, depth, ef)
            .map_err(rag_err)?;
        Ok(hits
            .into_iter()
            .filter(|h| !seen.contains(&(h.id as u32)))
            .take(k)
            .map(|h| {
                let (title, year, genres) = self.items[h.id as usize].clone();
                Recommendation {
                    movie_id: self.split.item_ids[h.id as usize],
                    title,
                    year,
                    genres,
                    score: h.score,
                }
            })
            .collect())
    }

    /// Exact top-`k` (every item scored) against the index's top-`k` at
    /// `ef`, for every test user's vector: recall and per-query latency.
    pub fn ann_report(&self, k: usize, ef: usize) -> Result<AnnReport> {
        let users: Vec<(usize, u32)> = self.split.test_users().collect();
        let mut recall = 0usize;
        let (mut exact_ms, mut ann_ms) = (Vec::new(), Vec::new());
        for &(u, _) in &users {
            let v = self
                .model
                .user_vectors(&[u as u32], &[&self.split.train[u]])?;
            let q = &v[0];
            let t = Instant::now();
            let mut scored: Vec<(f32, usize)> = self
                .vectors
                .iter()
                .enumerate()
                .map(|(i, x)| (rag::index::dot(q, x), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.truncate(k);
            exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let hits = self
                .index
                .search_with_ef(q, k, ef.max(k))
                .map_err(rag_err)?;
            ann_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let truth: HashSet<usize> = scored.iter().map(|&(_, i)| i).collect();
            recall += hits
                .iter()
                .filter(|h| truth.contains(&(h.id as usize)))
                .count();
        }
        Ok(AnnReport {
            queries: users.len(),
            k,
            ef: ef.max(k),
            recall: recall as f64 / (k * users.len()).max(1) as f64,
            exact_ms_p50: percentile(exact_ms.clone(), 0.5),
            ann_ms_p50: percentile(ann_ms.clone(), 0.5),
            exact_ms_p99: percentile(exact_ms, 0.99),
            ann_ms_p99: percentile(ann_ms, 0.99),
        })
    }
}
