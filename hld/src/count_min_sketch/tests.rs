use super::*;
use proptest::prelude::*;
use rand::Rng;

#[test]
fn sizing_follows_the_formulas() {
    let s = CountMinSketch::with_error(0.001, 0.01, 0).unwrap();
    assert_eq!((s.width(), s.depth()), (2719, 5));
    assert_eq!(s.bytes(), 2719 * 5 * 8);
    assert!(s.epsilon() <= 0.001 && s.delta() <= 0.01);
    assert!(CountMinSketch::with_error(0.0, 0.1, 0).is_err());
    assert!(CountMinSketch::with_error(0.1, 1.0, 0).is_err());
    assert_eq!(CountMinSketch::new(0, 3, 0), Err(SketchError::Empty));
    assert!(TopK::<String>::new(0, s).is_err());
    assert!(Zipf::new(0, 1.0).is_none());
    assert!(Zipf::new(10, f64::NAN).is_none());
}

#[test]
fn counts_exactly_without_collisions() {
    let mut s = CountMinSketch::new(1 << 16, 4, 1).unwrap();
    s.add("a", 5);
    s.add("b", 2);
    s.add("a", 1);
    assert_eq!(s.estimate("a"), 6);
    assert_eq!(s.estimate("b"), 2);
    assert_eq!(s.estimate("c"), 0);
    assert_eq!(s.total(), 8);
    assert!((s.error_bound() - 8.0 * std::f64::consts::E / 65536.0).abs() < 1e-12);
}

#[test]
fn merge_adds_counts() {
    let mut a = CountMinSketch::new(100, 3, 2).unwrap();
    let mut b = a.clone();
    a.add("x", 3);
    b.add("x", 4);
    b.add("y", 1);
    a.merge(&b).unwrap();
    assert!(a.estimate("x") >= 7 && a.estimate("y") >= 1);
    assert_eq!(a.total(), 8);
    assert_eq!(
        a.merge(&CountMinSketch::new(100, 3, 3).unwrap()),
        Err(SketchError::Incompatible)
    );
}

#[test]
fn topk_finds_the_heavy_hitters() {
    let sketch = CountMinSketch::new(256, 4, 5).unwrap();
    let mut top = TopK::new(3, sketch).unwrap();
    let mut exact = ExactCounts::new();
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..20_000 {
        // Items 0, 1, 2 are heavy; 3..1000 are a uniform tail.
        let x: u32 = if rng.random_range(0..10) < 6 {
            rng.random_range(0..3)
        } else {
            rng.random_range(3..1000)
        };
        let item = format!("i{x}");
        top.observe(&item);
        exact.add(&item, 1);
    }
    let got: BTreeSet<String> = top.top().into_iter().map(|(i, _)| i).collect();
    let want: BTreeSet<String> = ["i0", "i1", "i2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
    let counts: Vec<u64> = top.top().iter().map(|(_, c)| *c).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]));
    let exact_top: BTreeSet<Vec<u8>> = exact.top(3).into_iter().map(|(i, _)| i).collect();
    assert_eq!(
        exact_top,
        want.iter().map(|s| s.clone().into_bytes()).collect()
    );
}

#[test]
fn zipf_is_skewed() {
    let z = Zipf::new(1000, 1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut counts = vec![0usize; 1000];
    for _ in 0..100_000 {
        counts[z.sample(&mut rng)] += 1;
    }
    // Rank 0 is about twice rank 1 and about ten times rank 9.
    let r01 = counts[0] as f64 / counts[1] as f64;
    let r09 = counts[0] as f64 / counts[9] as f64;
    assert!((1.8..2.2).contains(&r01), "{r01}");
    assert!((8.5..11.5).contains(&r09), "{r09}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn never_underestimates(
        stream in proptest::collection::vec((0u16..300, 1u64..5), 1..500),
        width in 1usize..64,
        depth in 1usize..6,
        seed in any::<u64>(),
    ) {
        let mut s = CountMinSketch::new(width, depth, seed).unwrap();
        let mut exact = ExactCounts::new();
        for (item, c) in &stream {
            s.add(item.to_le_bytes(), *c);
            exact.add(item.to_le_bytes(), *c);
        }
        for (item, truth) in exact.iter() {
            prop_assert!(s.estimate(item) >= truth);
        }
        prop_assert_eq!(s.total(), stream.iter().map(|(_, c)| c).sum::<u64>());
    }
}

#[test]
fn lesson_shows_the_effect() {
    let r = lesson_with(7, 200_000, 50_000, 1.0, 0.002, 0.01, 10);
    let (n, o) = (&r.naive, &r.optimal);
    assert_eq!(o["underestimates"], 0.0, "{}", r.table());
    assert!(o["max_overestimate"] <= o["error_bound"], "{}", r.table());
    assert!(o["topk_recall"] >= 0.9, "{}", r.table());
    assert!(o["bytes"] * 5.0 < n["bytes"], "{}", r.table());
}
