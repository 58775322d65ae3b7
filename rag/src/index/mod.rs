//! Nearest-neighbour search over normalized vectors (inner product = cosine).
//!
//! Two indexes share one contract, [`VectorIndex`]:
//!
//! - [`flat::FlatIndex`]: exact search, a scan over contiguous storage. The
//!   baseline every approximate index is measured against.
//! - [`hnsw::HnswIndex`]: approximate search on a hierarchical navigable
//!   small-world graph built by `hnsw_rs` and searched through a compact
//!   copy of that graph ([`graph`]).
//!
//! Every vector is validated (dimension, finite values) and normalized to
//! unit length on the way in, queries included, so a score is always a
//! cosine similarity. Removal is by tombstone: the vector stays stored (and,
//! in HNSW, stays a node the search walks through) but is never returned;
//! `compact` drops tombstones for good.
//!
//! Both indexes persist to a directory ([`persist`]): checksummed data files
//! and a `manifest.json`, written atomically; [`load`] reopens either kind.
//! [`eval_ann`] measures recall and speed on GloVe-50.

pub mod eval_ann;
pub mod flat;
pub(crate) mod graph;
pub mod hnsw;
pub mod persist;
pub(crate) mod store;

use crate::{RagError, Result};
use std::path::Path;

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Hit {
    pub id: u64,
    /// Cosine similarity (inner product of normalized vectors).
    pub score: f32,
}

/// A vector index: ids chosen by the caller, removal by tombstone.
pub trait VectorIndex: Send + Sync {
    fn dim(&self) -> usize;
    /// Live (not removed) vectors.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds vectors under new ids: an id that is live already, or twice in
    /// `items`, is refused (and then nothing is added). Vectors are
    /// normalized; a wrong dimension, a non-finite value or a zero vector is
    /// refused with [`RagError::Input`].
    fn add(&mut self, items: &[(u64, Vec<f32>)]) -> crate::Result<()>;
    /// Marks an id removed; returns whether it was live.
    fn remove(&mut self, id: u64) -> crate::Result<bool>;
    /// The `k` best live vectors for `query`, best first (ties: smaller id
    /// first). The query is normalized like the stored vectors.
    fn search(&self, query: &[f32], k: usize) -> crate::Result<Vec<Hit>>;
    /// Writes the index to `dir` (created if needed), replacing what an
    /// earlier save left there; reopen it with [`load`] or the index's own
    /// `load`.
    fn save(&self, dir: &Path) -> crate::Result<()>;
}

/// Reopens an index of either kind saved in `dir`.
pub fn load(dir: &Path) -> Result<Box<dyn VectorIndex>> {
    let manifest = persist::read_manifest(dir)?;
    match manifest.kind.as_str() {
        flat::KIND => Ok(Box::new(flat::FlatIndex::load(dir)?)),
        hnsw::KIND => Ok(Box::new(hnsw::HnswIndex::load(dir)?)),
        other => Err(RagError::Corrupt {
            what: format!("index in {}", dir.display()),
            detail: format!("unknown index kind {other:?} in manifest.json"),
        }),
    }
}

/// Inner product, written so the compiler vectorizes it (eight independent
/// accumulators, fixed summation order: the same inputs always give the
/// same bits).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ca, ra) = a[..n].as_chunks::<8>();
    let (cb, rb) = b[..n].as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s = madd(*x, *y, *s);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail = madd(*x, *y, tail);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `x * y + acc`: one fused instruction where the target has FMA (the
/// workspace builds for x86-64-v3), a plain multiply-add elsewhere (a
/// software `fma` call would be far slower).
#[inline(always)]
fn madd(x: f32, y: f32, acc: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        x.mul_add(y, acc)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        x * y + acc
    }
}

/// `v` scaled to unit length, after checking its dimension and values.
pub fn normalized(v: &[f32], dim: usize) -> Result<Vec<f32>> {
    let mut out = v.to_vec();
    normalize_in_place(&mut out, dim)?;
    Ok(out)
}

/// Scales `v` to unit length in place; refuses a wrong dimension, a
/// non-finite value and the zero vector (which has no direction).
pub fn normalize_in_place(v: &mut [f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(RagError::Input(format!(
            "vector has dimension {}, the index has {dim}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(RagError::Input(format!(
            "vector has a non-finite value ({}) at position {i}",
            v[i]
        )));
    }
    // f64 so that huge or tiny (but finite) values neither overflow nor
    // underflow on the way to the norm.
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Err(RagError::Input(
            "zero vector: it has no direction, so it cannot be normalized for cosine search".into(),
        ));
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(())
}

/// Orders hits best first: higher score, then smaller id.
pub(crate) fn sort_hits(hits: &mut [Hit]) {
    hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum() {
        let a: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..50).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn normalize_checks_input() {
        let v = normalized(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        assert!(matches!(normalized(&[1.0], 2), Err(RagError::Input(_))));
        assert!(matches!(
            normalized(&[0.0, 0.0], 2),
            Err(RagError::Input(_))
        ));
        assert!(matches!(
            normalized(&[f32::NAN, 1.0], 2),
            Err(RagError::Input(_))
        ));
        assert!(matches!(
            normalized(&[f32::INFINITY, 1.0], 2),
            Err(RagError::Input(_))
        ));
        let big = normalized(&[f32::MAX, f32::MAX], 2).unwrap();
        assert!((big[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let tiny = normalized(&[1e-45, 0.0], 2).unwrap();
        assert_eq!(tiny, vec![1.0, 0.0]);
    }
}
