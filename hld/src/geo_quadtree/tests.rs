use super::geohash::{decode, encode, encode_bits};
use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rstar::primitives::GeomWithData;
use rstar::RTree;

fn square(half: f64) -> Rect {
    Rect::new(-half, -half, half, half).unwrap()
}

fn random_points(seed: u64, n: usize, half: f64) -> Vec<Point> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| Point::new(rng.random_range(-half..half), rng.random_range(-half..half)))
        .collect()
}

#[test]
fn rect_distance_and_validation() {
    let r = Rect::new(0.0, 0.0, 10.0, 10.0).unwrap();
    assert_eq!(r.min_dist2(&Point::new(5.0, 5.0)), 0.0);
    assert_eq!(r.min_dist2(&Point::new(13.0, 5.0)), 9.0);
    assert_eq!(r.min_dist2(&Point::new(-3.0, 14.0)), 25.0);
    assert!(Rect::new(1.0, 0.0, 0.0, 1.0).is_none());
    assert!(Rect::new(f64::NAN, 0.0, 1.0, 1.0).is_none());
}

#[test]
fn quadtree_small_queries() {
    let mut t = QuadTree::new(square(100.0), 2);
    let pts = [
        (0.0, 0.0),
        (10.0, 0.0),
        (0.0, 20.0),
        (-50.0, -50.0),
        (99.0, 99.0),
    ];
    for (i, &(x, y)) in pts.iter().enumerate() {
        t.insert(i as u32, Point::new(x, y)).unwrap();
    }
    assert_eq!(t.len(), 5);
    assert!(t.node_count() > 1, "capacity 2 must split");
    assert_eq!(
        t.insert(9, Point::new(101.0, 0.0)),
        Err(InsertError::OutOfBounds)
    );
    assert_eq!(
        t.insert(9, Point::new(f64::NAN, 0.0)),
        Err(InsertError::NotFinite)
    );
    let mut r = t.within_radius(Point::new(0.0, 0.0), 10.0);
    r.sort();
    assert_eq!(r, vec![0, 1]);
    assert!(t.within_radius(Point::new(0.0, 0.0), -1.0).is_empty());
    let nn = t.nearest(Point::new(1.0, 1.0), 3);
    assert_eq!(nn.iter().map(|n| n.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!((nn[0].1 - 2f64.sqrt()).abs() < 1e-12);
    assert_eq!(t.nearest(Point::new(0.0, 0.0), 10).len(), 5);
    assert!(t.nearest(Point::new(0.0, 0.0), 0).is_empty());
}

#[test]
fn duplicates_do_not_split_forever() {
    let mut t = QuadTree::new(square(10.0), 4);
    for i in 0..1000 {
        t.insert(i, Point::new(1.0, 1.0)).unwrap();
    }
    assert!(t.depth() <= 24);
    assert_eq!(t.within_radius(Point::new(1.0, 1.0), 0.0).len(), 1000);
    // Ties at equal distance are broken by id.
    let nn = t.nearest(Point::new(0.0, 0.0), 3);
    assert_eq!(nn.iter().map(|n| n.0).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn geohash_known_codes() {
    // The classic examples (Wikipedia, geohash.org).
    assert_eq!(encode(LatLon::new(42.605, -5.603), 5).unwrap(), "ezs42");
    assert_eq!(
        encode(LatLon::new(57.64911, 10.40744), 11).unwrap(),
        "u4pruydqqvj"
    );
    let (sw, ne) = decode("ezs42").unwrap();
    assert!(sw.lat <= 42.605 && 42.605 <= ne.lat && sw.lon <= -5.603 && -5.603 <= ne.lon);
    assert!((ne.lat - sw.lat - 180.0 / 4096.0).abs() < 1e-12);
    assert!(decode("").is_none() && decode("ab!").is_none() && decode("a").is_none());
    assert!(encode(LatLon::new(91.0, 0.0), 5).is_none());
    assert!(encode(LatLon::new(0.0, 0.0), 13).is_none());
    // Nearby points share a prefix; a shorter code is a prefix of a longer.
    let p = LatLon::new(37.7749, -122.4194);
    let long = encode(p, 9).unwrap();
    assert!(long.starts_with(&encode(p, 6).unwrap()));
    assert_eq!(
        encode_bits(p, 30).unwrap() >> 5,
        encode_bits(p, 25).unwrap()
    );
    let q = LatLon::new(37.7750, -122.4195);
    assert_eq!(encode(q, 6), encode(p, 6));
}

#[test]
fn projection_round_trips() {
    let proj = Projection::new(CITY);
    let p = LatLon::new(37.80, -122.40);
    let back = proj.to_latlon(proj.to_point(p));
    assert!((back.lat - p.lat).abs() < 1e-12 && (back.lon - p.lon).abs() < 1e-12);
    // One degree of latitude is about 111 km.
    let d = proj.to_point(LatLon::new(CITY.lat + 1.0, CITY.lon)).y;
    assert!((d - 110_574.0).abs() < 1.0);
}

#[test]
fn geohash_index_matches_scan_and_widens() {
    let proj = Projection::new(CITY);
    let city = synthetic_city(4, 3000, 5000.0);
    let pts: Vec<Point> = city.iter().map(|&c| proj.to_point(c)).collect();
    let mut gh = GeohashIndex::new(proj, 7);
    for (i, &c) in city.iter().enumerate() {
        gh.insert(i as u32, c).unwrap();
    }
    assert_eq!(
        gh.insert(0, LatLon::new(f64::NAN, 0.0)),
        Err(InsertError::NotFinite)
    );
    assert_eq!(
        gh.insert(0, LatLon::new(0.0, 200.0)),
        Err(InsertError::OutOfBounds)
    );
    let far = proj.to_latlon(Point::new(30_000.0, 30_000.0));
    for c in [city[0], city[17], CITY, far] {
        let p = proj.to_point(c);
        let mut got = gh.within_radius(c, 400.0);
        got.sort();
        assert_eq!(got, scan_within_radius(&pts, p, 400.0));
        // `far` is outside the city: the search widens until it finds k.
        assert_eq!(gh.nearest(c, 7), scan_nearest(&pts, p, 7));
    }
    assert_eq!(gh.nearest(CITY, 5000).len(), 3000);
}

#[test]
fn quadtree_agrees_with_rstar() {
    let pts = random_points(11, 5000, 1000.0);
    let qt = QuadTree::build(square(1000.0), 8, &pts);
    let rt: RTree<GeomWithData<[f64; 2], u32>> = RTree::bulk_load(
        pts.iter()
            .enumerate()
            .map(|(i, p)| GeomWithData::new([p.x, p.y], i as u32))
            .collect(),
    );
    for c in random_points(12, 50, 1100.0) {
        let mut want: Vec<u32> = rt
            .nearest_neighbor_iter([c.x, c.y])
            .take(10)
            .map(|g| g.data)
            .collect();
        let mut got: Vec<u32> = qt.nearest(c, 10).into_iter().map(|n| n.0).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        let mut want: Vec<u32> = rt
            .locate_within_distance([c.x, c.y], 80.0 * 80.0)
            .map(|g| g.data)
            .collect();
        want.sort();
        assert_eq!(sorted(qt.within_radius(c, 80.0)), want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn quadtree_range_equals_scan(
        raw in proptest::collection::vec((-100.0f64..100.0, -100.0f64..100.0), 0..300),
        cx in -120.0f64..120.0,
        cy in -120.0f64..120.0,
        r in 0.0f64..80.0,
        cap in 1usize..10,
        k in 0usize..20,
    ) {
        let pts: Vec<Point> = raw.iter().map(|&(x, y)| Point::new(x, y)).collect();
        let qt = QuadTree::build(square(100.0), cap, &pts);
        let c = Point::new(cx, cy);
        prop_assert_eq!(sorted(qt.within_radius(c, r)), scan_within_radius(&pts, c, r));
        prop_assert_eq!(qt.nearest(c, k), scan_nearest(&pts, c, k));
    }
}

#[test]
fn lesson_shows_the_indexes_win() {
    let r = lesson_with(5, 30_000, 60, 1000.0, 10);
    assert_eq!(r.optimal["results_match"], 1.0, "{}", r.table());
    assert_eq!(r.optimal["geohash_results_match"], 1.0, "{}", r.table());
    assert!(r.naive["drivers_in_radius"] > 1.0);
    assert!(
        r.naive["query_us"] > 3.0 * r.optimal["query_us"],
        "{}",
        r.table()
    );
    assert!(
        r.naive["knn_query_us"] > 3.0 * r.optimal["knn_query_us"],
        "{}",
        r.table()
    );
    assert!(
        r.naive["query_us"] > 2.0 * r.optimal["geohash_query_us"],
        "{}",
        r.table()
    );
}
