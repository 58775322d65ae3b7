//! Two-stage retrieval: a cheap first stage finds candidates, a second
//! stage reorders them, and HyDE changes what the first stage searches with.
//!
//! - [`Dense`]: passages' vectors in an exact index ([`FlatIndex`]); the
//!   first stage, the top `n` by cosine.
//! - [`mean_direction`]: the normalized mean of several vectors, HyDE's
//!   query (the question's embedding averaged with those of answers an LLM
//!   imagined for it).
//! - [`rerank_bm25`]: the second stage over the candidates only: their
//!   BM25 scores (corpus statistics) fused with the first stage's order by
//!   reciprocal rank ([`fuse_with_first_stage`]). It reorders, it never adds
//!   or drops a candidate.
//! - [`order_by_scores`]: candidates sorted by any second-stage score (a
//!   cross-encoder's, an LLM's), ties kept in first-stage order.

use crate::bm25::{reciprocal_rank_fusion, Bm25};
use crate::index::{flat::FlatIndex, VectorIndex};
use crate::{RagError, Result};

/// Exact dense retrieval over passages numbered `0..n`.
pub struct Dense {
    index: FlatIndex,
}

impl Dense {
    /// An index of `vecs` (passage `i` is `vecs[i]`), all of one dimension.
    pub fn new(vecs: Vec<Vec<f32>>) -> Result<Self> {
        let dim = vecs
            .first()
            .map(Vec::len)
            .ok_or_else(|| RagError::Input("no passages to index".into()))?;
        let mut index = FlatIndex::new(dim)?;
        let items: Vec<(u64, Vec<f32>)> = vecs
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v))
            .collect();
        index.add(&items)?;
        Ok(Self { index })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The `n` passages nearest `query`, best first (ties: lower number).
    pub fn top(&self, query: &[f32], n: usize) -> Result<Vec<usize>> {
        Ok(self
            .index
            .search(query, n)?
            .iter()
            .map(|h| h.id as usize)
            .collect())
    }
}

/// The unit vector along the mean of `vecs` (each should be unit length, so
/// each weighs the same). Empty input, mixed dimensions or a zero mean are
/// errors.
pub fn mean_direction(vecs: &[&[f32]]) -> Result<Vec<f32>> {
    let dim = vecs
        .first()
        .map(|v| v.len())
        .ok_or_else(|| RagError::Input("no vectors to average".into()))?;
    if vecs.iter().any(|v| v.len() != dim) {
        return Err(RagError::Input("vectors of different dimensions".into()));
    }
    let mut sum = vec![0f32; dim];
    for v in vecs {
        for (s, x) in sum.iter_mut().zip(v.iter()) {
            *s += x;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return Err(RagError::Input("the vectors' mean is zero".into()));
    }
    Ok(sum.into_iter().map(|x| x / norm).collect())
}

/// `candidates` sorted by `scores` (one per candidate), highest first;
/// equal scores keep their first-stage order.
pub fn order_by_scores(candidates: &[usize], scores: &[f64]) -> Vec<usize> {
    assert_eq!(candidates.len(), scores.len(), "one score per candidate");
    let mut idx: Vec<usize> = (0..candidates.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.into_iter().map(|i| candidates[i]).collect()
}

/// Reciprocal-rank fusion (constant `k`) of the first stage's order and the
/// order of `scores`, over `candidates` only: the same passages, reordered.
pub fn fuse_with_first_stage(candidates: &[usize], scores: &[f64], k: f64) -> Vec<usize> {
    let second = order_by_scores(candidates, scores);
    reciprocal_rank_fusion(&[candidates.to_vec(), second], k, candidates.len())
}

/// The second stage with BM25: each candidate's BM25 score for `query`
/// (`bm` indexes the whole corpus, so term weights come from it), fused
/// with the first-stage order by reciprocal rank (`k`, 60 in the
/// literature).
pub fn rerank_bm25(bm: &Bm25, query: &str, candidates: &[usize], k: f64) -> Vec<usize> {
    let scores = bm.scores_of(query, candidates);
    fuse_with_first_stage(candidates, &scores, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    #[test]
    fn dense_ranks_by_cosine() {
        let d = Dense::new(vec![vec![1.0, 0.0], vec![0.6, 0.8], vec![0.0, 1.0]]).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.top(&[0.0, 2.0], 2).unwrap(), [2, 1]);
        assert_eq!(d.top(&[1.0, 0.1], 5).unwrap(), [0, 1, 2]);
        assert!(Dense::new(Vec::new()).is_err());
    }

    #[test]
    fn mean_direction_is_the_unit_mean() {
        let m = mean_direction(&[&[1.0, 0.0], &[0.0, 1.0]]).unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((m[0] - h).abs() < 1e-6 && (m[1] - h).abs() < 1e-6);
        assert_eq!(mean_direction(&[&[0.0, 3.0]]).unwrap(), [0.0, 1.0]);
        assert!(mean_direction(&[]).is_err());
        assert!(mean_direction(&[&[1.0, 0.0], &[-1.0, 0.0]]).is_err());
        assert!(mean_direction(&[&[1.0], &[1.0, 0.0]]).is_err());
    }

    #[test]
    fn order_by_scores_keeps_first_stage_order_on_ties() {
        assert_eq!(
            order_by_scores(&[7, 3, 9, 1], &[0.5, 2.0, 0.5, 1.0]),
            [3, 1, 7, 9]
        );
        assert_eq!(order_by_scores(&[], &[]), Vec::<usize>::new());
    }

    /// Fusion moves a candidate both stages like above one only the first
    /// stage likes, and keeps the candidate set.
    #[test]
    fn fusion_reorders_within_the_candidates() {
        let cands = [4, 8, 2, 6];
        // The second stage puts 2 first and 4 last.
        let fused = fuse_with_first_stage(&cands, &[0.0, 1.0, 3.0, 2.0], 60.0);
        assert_eq!(sorted(fused.clone()), sorted(cands.to_vec()));
        // 8: ranks 2 and 3; 4: ranks 1 and 4; 2: ranks 3 and 1.
        assert_eq!(fused[0], 2);
        assert!(fused.iter().position(|&p| p == 8) < fused.iter().position(|&p| p == 6));
        // A second stage that agrees changes nothing.
        assert_eq!(
            fuse_with_first_stage(&cands, &[4.0, 3.0, 2.0, 1.0], 60.0),
            cands
        );
    }

    #[test]
    fn bm25_rerank_lifts_the_lexical_match() {
        let docs = [
            "the garbage collector frees memory",
            "threads share one interpreter lock",
            "a dict maps keys to values",
            "memory is freed by reference counting",
            "lists keep their items in order",
            "strings are immutable sequences",
        ];
        let bm = Bm25::new(&docs);
        // The first stage ranks 1 and 2 above the passages about memory.
        let cands = [1, 2, 0, 3];
        let out = rerank_bm25(&bm, "how is memory freed", &cands, 60.0);
        assert_eq!(sorted(out.clone()), [0, 1, 2, 3]);
        assert_eq!(out[0], 1, "the first stage's best keeps a high rank");
        let pos = |p: usize| out.iter().position(|&x| x == p).unwrap();
        assert!(pos(3) < pos(2) && pos(0) < pos(2), "{out:?}");
    }

    proptest::proptest! {
        /// Whatever the scores, the second stage returns a permutation of
        /// its candidates.
        #[test]
        fn rerank_is_a_permutation(
            scores in proptest::collection::vec(-5.0f64..5.0, 0..30),
            k in 1.0f64..100.0,
        ) {
            let cands: Vec<usize> = (0..scores.len()).map(|i| i * 3 + 1).collect();
            let fused = fuse_with_first_stage(&cands, &scores, k);
            proptest::prop_assert_eq!(sorted(fused), cands.clone());
            proptest::prop_assert_eq!(sorted(order_by_scores(&cands, &scores)), cands);
        }
    }
}
