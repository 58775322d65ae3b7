use super::*;
use crossbeam_skiplist::SkipSet;
use proptest::prelude::*;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::BTreeMap;

#[test]
fn ranks_top_and_updates() {
    let mut b = Leaderboard::new();
    b.set_score(1, 50);
    b.set_score(2, 70);
    b.set_score(3, 50);
    b.set_score(4, 10);
    assert_eq!(b.top(10), vec![(2, 70), (1, 50), (3, 50), (4, 10)]);
    assert_eq!(b.rank(2), Some(1));
    assert_eq!(b.rank(3), Some(3));
    assert_eq!(b.rank(9), None);
    assert_eq!(b.add_score(4, 100), 110);
    assert_eq!(b.rank(4), Some(1));
    assert_eq!(b.at_rank(2), Some((2, 70)));
    assert_eq!(b.at_rank(5), None);
    assert_eq!(b.at_rank(0), None);
    assert_eq!(b.range(3, 5), vec![(1, 50), (3, 50)]);
    assert_eq!(b.remove(2), Some(70));
    assert_eq!(b.remove(2), None);
    assert_eq!(b.rank(1), Some(2));
    assert_eq!(b.len(), 3);
    b.set_score(1, 50); // unchanged score: no-op
    assert!(b.list().is_consistent());
    assert_eq!(b.add_score(7, i64::MIN), i64::MIN);
    assert_eq!(b.rank(7), Some(4));
}

#[test]
fn skip_list_rejects_duplicates_and_reuses_slots() {
    let mut s = RankSkipList::new(3);
    assert!(s.insert(5, 1));
    assert!(!s.insert(5, 1));
    assert!(s.remove(5, 1));
    assert!(!s.remove(5, 1));
    assert!(s.is_empty());
    for i in 0..100 {
        s.insert(i, i as u64);
    }
    assert!(s.slots() <= 102, "slot reused");
    assert_eq!(s.rank(99, 99), Some(1));
    assert_eq!(s.at_rank(100), Some((0, 0)));
    assert!(s.is_consistent());
}

#[test]
fn bulk_build_equals_inserts() {
    let mut rng = StdRng::seed_from_u64(2);
    let keys: Vec<(i64, u64)> = (0..3000).map(|p| (rng.random_range(0..500), p)).collect();
    let bulk = RankSkipList::from_keys(keys.clone(), 1);
    let mut inc = RankSkipList::new(1);
    for &(s, p) in &keys {
        inc.insert(s, p);
    }
    assert!(bulk.is_consistent() && inc.is_consistent());
    assert_eq!(
        bulk.iter().collect::<Vec<_>>(),
        inc.iter().collect::<Vec<_>>()
    );
    for r in [1, 2, 77, 1500, 3000] {
        assert_eq!(bulk.at_rank(r), inc.at_rank(r));
    }
    assert!(bulk.height() > 3, "levels grew: {}", bulk.height());
}

#[test]
fn order_matches_btreemap_and_crossbeam_skiplist() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut b = Leaderboard::new();
    let mut latest = HashMap::new();
    for _ in 0..5000 {
        let p = rng.random_range(0..800u64);
        let s = rng.random_range(-50..50i64);
        b.add_score(p, s);
        *latest.entry(p).or_insert(0i64) += s;
    }
    let tree: BTreeMap<(Reverse<i64>, u64), ()> = latest
        .iter()
        .map(|(&p, &s)| ((Reverse(s), p), ()))
        .collect();
    let set: SkipSet<(Reverse<i64>, u64)> = SkipSet::new();
    for (&p, &s) in &latest {
        set.insert((Reverse(s), p));
    }
    let ours: Vec<(i64, u64)> = b.list().iter().collect();
    let theirs: Vec<(i64, u64)> = tree.keys().map(|&(Reverse(s), p)| (s, p)).collect();
    let cb: Vec<(i64, u64)> = set.iter().map(|e| (e.value().0 .0, e.value().1)).collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours, cb);
    // Rank = position in the ordered map.
    for (i, &(s, p)) in theirs.iter().enumerate().step_by(37) {
        assert_eq!(b.rank(p), Some(i + 1));
        assert_eq!(b.score(p), Some(s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn ranks_equal_a_sorted_vector(
        ops in proptest::collection::vec((0u64..40, -20i64..20, 0u8..10), 1..200),
    ) {
        let mut b = Leaderboard::from_scores((0..10u64).map(|p| (p, p as i64)), 9);
        let mut naive = NaiveLeaderboard::from_scores((0..10u64).map(|p| (p, p as i64)));
        for &(p, s, op) in &ops {
            match op {
                0 => {
                    b.remove(p);
                    naive.scores.remove(&p);
                }
                1..=4 => {
                    b.set_score(p, s);
                    naive.set_score(p, s);
                }
                _ => {
                    b.add_score(p, s);
                    naive.add_score(p, s);
                }
            }
        }
        prop_assert!(b.list().is_consistent());
        let sorted = naive.sorted();
        prop_assert_eq!(b.len(), sorted.len());
        for (i, &(s, p)) in sorted.iter().enumerate() {
            prop_assert_eq!(b.rank(p), Some(i + 1));
            prop_assert_eq!(b.at_rank(i + 1), Some((p, s)));
        }
        prop_assert_eq!(b.top(5), naive.top(5));
    }
}

#[test]
fn lesson_shows_the_skip_list_wins() {
    let r = lesson_with(4, 50_000, 20_000);
    assert_eq!(r.optimal["results_match"], 1.0, "{}", r.table());
    assert!(
        r.naive["rank_query_us"] > 50.0 * r.optimal["rank_query_us"],
        "{}",
        r.table()
    );
    assert!(
        r.naive["top10_us"] > 50.0 * r.optimal["top10_us"],
        "{}",
        r.table()
    );
}
