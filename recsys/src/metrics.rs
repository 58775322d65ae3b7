//! Full-ranking evaluation of a recommender on the leave-last-out split.
//!
//! What: every model scores all items for each test user; the user's
//! training items are excluded; items rank by (score descending, movieId
//! ascending), and the held-out item's rank gives HR@K (is it in the top K?)
//! and NDCG@10 (1 / log2(rank + 1) when it is in the top 10). With one
//! held-out item per user, Recall@K equals HR@K.
//!
//! Why full ranking: sampled metrics (rank against 100 random negatives)
//! are cheaper but can reorder models (Krichene & Rendle, 2020); with 9,066
//! items a full ranking is a few milliseconds per user anyway.

use crate::split::Split;
use rayon::prelude::*;

/// HR@10, NDCG@10 and HR@100 over the test users.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Metrics {
    pub users: usize,
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub hr_at_100: f64,
}

/// 1-based rank of item `target` under `scores`, skipping the `excluded`
/// items (a mask over items); ties go to the lower item index, which is the
/// lower movieId. NaN scores rank last.
pub fn rank_of(scores: &[f32], target: usize, excluded: &[bool]) -> usize {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let t = key(scores[target]);
    1 + scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| {
            j != target && !excluded[j] && (key(s) > t || (key(s) == t && j < target))
        })
        .count()
}

/// Metrics from the ranks of the held-out items.
pub fn from_ranks(ranks: &[usize]) -> Metrics {
    let n = ranks.len().max(1) as f64;
    let hr = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
    let ndcg = ranks
        .iter()
        .filter(|&&r| r <= 10)
        .map(|&r| 1.0 / ((r + 1) as f64).log2())
        .sum::<f64>()
        / n;
    Metrics {
        users: ranks.len(),
        hr_at_10: hr(10),
        ndcg_at_10: ndcg,
        hr_at_100: hr(100),
    }
}

/// The held-out item's rank for every test user; `score(user)` returns one
/// score per item. Users are scored in parallel.
pub fn ranks(split: &Split, score: impl Fn(usize) -> Vec<f32> + Sync) -> Vec<usize> {
    let users: Vec<(usize, u32)> = split.test_users().collect();
    users
        .par_iter()
        .map(|&(u, target)| {
            let scores = score(u);
            let mut excluded = vec![false; scores.len()];
            for &i in &split.train[u] {
                excluded[i as usize] = true;
            }
            rank_of(&scores, target as usize, &excluded)
        })
        .collect()
}

/// [`ranks`], summarized.
pub fn evaluate(split: &Split, score: impl Fn(usize) -> Vec<f32> + Sync) -> Metrics {
    from_ranks(&ranks(split, score))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_better_items_and_breaks_ties_by_index() {
        let s = [0.5, 0.9, 0.5, 0.1, 0.5];
        let none = [false; 5];
        assert_eq!(rank_of(&s, 1, &none), 1);
        assert_eq!(
            rank_of(&s, 0, &none),
            2,
            "tie with 2 and 4: lower index first"
        );
        assert_eq!(rank_of(&s, 2, &none), 3);
        assert_eq!(rank_of(&s, 4, &none), 4);
        assert_eq!(rank_of(&s, 3, &none), 5);
        // Excluding the best item moves everyone up.
        let ex = [false, true, false, false, false];
        assert_eq!(rank_of(&s, 0, &ex), 1);
        assert_eq!(rank_of(&s, 3, &ex), 4);
        // NaN ranks last.
        assert_eq!(rank_of(&[f32::NAN, 0.0], 0, &[false; 2]), 2);
    }

    #[test]
    fn metrics_from_hand_made_ranks() {
        let m = from_ranks(&[1, 3, 10, 11, 100, 101]);
        assert_eq!(m.users, 6);
        assert!((m.hr_at_10 - 3.0 / 6.0).abs() < 1e-12);
        assert!((m.hr_at_100 - 5.0 / 6.0).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 4f64.log2() + 1.0 / 11f64.log2()) / 6.0;
        assert!((m.ndcg_at_10 - ndcg).abs() < 1e-12);
        assert_eq!(from_ranks(&[1]).ndcg_at_10, 1.0);
    }
}
