use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;

/// 0 and 1 are followed by everyone; 2 follows 3 and 4; 3 follows 4.
fn small() -> Graph {
    let n = 6;
    let mut f: Vec<Vec<u32>> = (0..n).map(|_| vec![0, 1]).collect();
    f[2].extend([3, 4]);
    f[3].push(4);
    f[0].push(0); // a self-follow, ignored
    Graph::from_followees(f)
}

#[test]
fn graph_lists_both_directions() {
    let g = small();
    assert_eq!(g.followees[2], vec![0, 1, 3, 4]);
    assert_eq!(g.followees[0], vec![1]);
    assert_eq!(g.followers[0], vec![1, 2, 3, 4, 5]);
    assert_eq!(g.followers[4], vec![2, 3]);
    assert_eq!(g.edges(), 13);
}

#[test]
fn generated_graph_is_heavy_tailed() {
    let g = generate_graph(1, 3_000, 5, 300);
    let mut fan: Vec<usize> = g.followers.iter().map(Vec::len).collect();
    for (u, fs) in g.followees.iter().enumerate() {
        assert!(!fs.contains(&(u as u32)));
        assert!(fs.len() <= 300);
    }
    fan.sort_unstable();
    let median = fan[fan.len() / 2];
    let max = *fan.last().unwrap();
    assert!(max > 10 * median, "max {max}, median {median}");
    assert_eq!(g, generate_graph(1, 3_000, 5, 300), "deterministic");
}

#[test]
fn merge_newest_takes_the_k_largest_in_order() {
    let lists = vec![vec![1, 5, 9], vec![], vec![2, 3, 10, 11], vec![7]];
    assert_eq!(merge_newest(&lists, 4), vec![11, 10, 9, 7]);
    assert_eq!(
        merge_newest(&lists, 100),
        vec![11, 10, 9, 7, 5, 3, 2, 1],
        "fewer than k"
    );
    assert!(merge_newest(&[], 3).is_empty());
}

#[test]
fn timeline_stays_sorted_and_bounded() {
    let mut t = VecDeque::new();
    for id in [5, 1, 9, 3, 7, 8, 2] {
        timeline_insert(&mut t, id, 4);
    }
    assert_eq!(Vec::from(t.clone()), vec![5, 7, 8, 9]);
    timeline_insert(&mut t, 4, 4); // older than everything kept: ignored
    assert_eq!(Vec::from(t), vec![5, 7, 8, 9]);
}

#[test]
fn celebrity_posts_are_one_write_and_others_fan_out() {
    let g = small();
    // 0 and 1 have 5 followers, above the threshold of 3.
    let h = HybridStore::new(&g, 10, 3);
    assert!(h.is_celebrity(0) && h.is_celebrity(1) && !h.is_celebrity(4));
    assert_eq!(h.celebrities(), 2);
    h.post(0);
    assert_eq!(h.writes(), 1);
    h.post(4); // fans out to 2 and 3
    assert_eq!(h.writes(), 4);
    assert_eq!(h.timeline_entries(), 2);
    let p = PullStore::new(&g, 10);
    p.post(4);
    assert_eq!(p.writes(), 1);
}

#[test]
fn hybrid_feed_equals_pull_feed_for_the_same_posts() {
    let g = generate_graph(5, 1_000, 3, 200);
    let k = 20;
    let pull = PullStore::new(&g, k);
    let hybrid = HybridStore::new(&g, k, 100);
    assert!(hybrid.celebrities() > 0);
    for a in post_authors(9, 1_000, 5_000) {
        // Same order on both, so the same ids.
        assert_eq!(pull.post(a), hybrid.post(a));
    }
    for u in 0..1_000u32 {
        let want = pull.read(u);
        assert_eq!(hybrid.read(u), want, "user {u}");
        assert!(want.windows(2).all(|w| w[0] > w[1]));
        assert!(want.len() <= k);
    }
    assert!(hybrid.writes() > pull.writes());
}

#[test]
fn concurrent_run_keeps_the_hybrid_equal_to_the_pull_merge() {
    let w = Workload {
        users: 800,
        min_follows: 3,
        max_follows: 150,
        k: 15,
        celebrity_threshold: 80,
        preload_posts: 1_000,
        writers: 2,
        posts_per_writer: 500,
        readers: 2,
        reads_per_reader: 300,
    };
    let g = generate_graph(3, w.users, w.min_follows, w.max_follows);
    let h = HybridStore::new(&g, w.k, w.celebrity_threshold);
    let authors = vec![post_authors(1, w.users, 500), post_authors(2, w.users, 500)];
    let readers = vec![vec![1u32; 300], (0..300).collect()];
    let st = run_store(&h, &post_authors(4, w.users, 1_000), &authors, &readers);
    assert_eq!(st.posts, 1_000);
    assert_eq!(h.log.total(), 2_000);
    assert!(st.writes_per_post() > 1.0);
    let all: Vec<u32> = (0..w.users as u32).collect();
    assert!(hybrid_matches_pull(&h, &g, &all, w.k));
    let p = PullStore::new(&g, w.k);
    let st = run_store(&p, &[], &authors, &readers);
    assert_eq!(st.writes_per_post(), 1.0);
}

proptest! {
    #[test]
    fn merge_equals_sort(lists in proptest::collection::vec(proptest::collection::btree_set(0u64..1000, 0..20), 0..8), k in 0usize..30) {
        // Distinct ids across lists, as post ids are.
        let mut seen = std::collections::HashSet::new();
        let lists: Vec<Vec<u64>> = lists
            .into_iter()
            .map(|s| s.into_iter().filter(|x| seen.insert(*x)).collect())
            .collect();
        let mut all: Vec<u64> = lists.iter().flatten().copied().collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.truncate(k);
        prop_assert_eq!(merge_newest(&lists, k), all);
    }
}
