//! The MovieLens loader and the leave-last-out split on the real data (the
//! dslabs R package's lazy-load database, fetched by `make models`): counts,
//! value ranges, a few known movies, and the split of `shared/BASELINES.md`
//! without leakage. Skipped when the data is missing, unless
//! `SDLAB_REQUIRE_REAL_MODELS=1`, which turns the skip into a failure.

use recsys::movielens::MovieLens;
use recsys::split::Split;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `MovieLens::default_dir()` as seen from the workspace root: tests run in
/// `recsys/`, while `SDLAB_CACHE_DIR` (unset, or `.cache` from the Makefile)
/// is relative to the root.
fn data_dir() -> PathBuf {
    let cache = std::env::var_os("SDLAB_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache"));
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(cache) // an absolute cache path replaces the root
        .join("data/dslabs")
}

/// The real data, loaded once; `None` (with a message) when it is missing.
fn movielens() -> Option<&'static MovieLens> {
    static ML: OnceLock<Option<MovieLens>> = OnceLock::new();
    ML.get_or_init(|| {
        let dir = data_dir();
        if !dir.join("Rdata.rdb").is_file() {
            if std::env::var("SDLAB_REQUIRE_REAL_MODELS").as_deref() == Ok("1") {
                panic!("{} is missing: run `make models`", dir.display());
            }
            eprintln!("skipping: {} is missing (run `make models`)", dir.display());
            return None;
        }
        Some(MovieLens::load(&dir).expect("loading MovieLens"))
    })
    .as_ref()
}

/// Unix times of 1995-01-01 and 2017-01-01 (UTC).
const START_1995: i64 = 788_918_400;
const START_1996: i64 = 820_454_400;
const START_2017: i64 = 1_483_228_800;

#[test]
fn loads_the_expected_counts_and_ranges() {
    let Some(ml) = movielens() else { return };
    assert_eq!(ml.ratings.len(), 100_004);
    assert_eq!(ml.num_users(), 671);
    assert_eq!(ml.movies.len(), 9_066);
    assert!(ml.movies.windows(2).all(|w| w[0].id < w[1].id));
    for r in &ml.ratings {
        assert!((0.5..=5.0).contains(&r.rating), "{r:?}");
        assert_eq!((r.rating * 2.0).fract(), 0.0, "{r:?}");
        assert!(ml.movie(r.movie_id).is_some(), "{r:?}");
    }
    let lo = ml.ratings.iter().map(|r| r.rating).fold(f32::MAX, f32::min);
    let hi = ml.ratings.iter().map(|r| r.rating).fold(f32::MIN, f32::max);
    assert_eq!((lo, hi), (0.5, 5.0));
    // GroupLens documents this snapshot as 1995-01-09 to 2016-10-16.
    let first = ml.ratings.iter().map(|r| r.timestamp).min().unwrap();
    let last = ml.ratings.iter().map(|r| r.timestamp).max().unwrap();
    assert!(
        (START_1995..START_2017).contains(&first) && (START_1995..START_2017).contains(&last),
        "timestamps {first}..{last} fall outside 1995..=2016"
    );
    let early = ml
        .ratings
        .iter()
        .filter(|r| r.timestamp < START_1996)
        .count();
    eprintln!("timestamps {first}..={last}; {early} ratings from 1995");
    let pairs: HashSet<(u32, u32)> = ml.ratings.iter().map(|r| (r.user_id, r.movie_id)).collect();
    assert_eq!(pairs.len(), ml.ratings.len(), "duplicate user-movie pairs");
}

#[test]
fn known_movies_look_right() {
    let Some(ml) = movielens() else { return };
    let toy = ml.movie(1).expect("movie 1");
    assert_eq!(toy.title, "Toy Story");
    assert_eq!(toy.year, Some(1995));
    assert_eq!(
        toy.genres,
        ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    );
    let matrix = ml.movie(2571).expect("movie 2571");
    assert_eq!(
        (matrix.title.as_str(), matrix.year),
        ("Matrix, The", Some(1999))
    );
    assert!(matrix.genres.iter().any(|g| g == "Sci-Fi"));
    for id in [1, 318, 356, 2571, 4993] {
        eprintln!("{:?}", ml.movie(id));
    }
    let genres = ml.all_genres();
    eprintln!("genres: {genres:?}");
    assert_eq!(genres.len(), 19);
    assert!(genres.windows(2).all(|w| w[0] < w[1]));
    assert!(!genres
        .iter()
        .any(|g| g.contains('|') || g.contains("no genres")));
    // The data frame has NA title and year on a handful of rows: 5 movies.
    let untitled: Vec<_> = ml.movies.iter().filter(|m| m.title.is_empty()).collect();
    eprintln!("movies without a title: {untitled:?}");
    assert!(untitled.len() <= 5, "{untitled:?}");
    let years = ml.movies.iter().filter_map(|m| m.year);
    assert!(years.clone().all(|y| (1900..=2016).contains(&y)));
    assert!(ml.movies.iter().filter(|m| m.year.is_some()).count() >= 9_060);
}

#[test]
fn leave_last_out_matches_the_baseline_split() {
    let Some(ml) = movielens() else { return };
    let s = Split::leave_last_out(ml, 5);
    assert_eq!(s.num_users(), 671);
    assert_eq!(s.num_items(), 9_066);
    assert_eq!(s.test_users().count(), 671);
    assert_eq!(s.num_train(), 99_333);
    assert_eq!(
        s.item_popularity()
            .iter()
            .map(|&c| c as usize)
            .sum::<usize>(),
        99_333
    );
    for (u, user) in s.user_ids.iter().enumerate() {
        let mut ev: Vec<(i64, u32)> = ml
            .ratings
            .iter()
            .filter(|r| r.user_id == *user)
            .map(|r| (r.timestamp, r.movie_id))
            .collect();
        ev.sort_unstable();
        let (last, rest) = ev.split_last().unwrap();
        let test = s.test[u].expect("every user has a test item");
        assert_eq!(s.item_ids[test as usize], last.1, "user {user}");
        assert!(
            !s.train[u].contains(&test),
            "user {user} trains on its test item"
        );
        let train: Vec<u32> = s.train[u].iter().map(|&i| s.item_ids[i as usize]).collect();
        let want: Vec<u32> = rest.iter().map(|e| e.1).collect();
        assert_eq!(train, want, "user {user}: training items in time order");
    }
}
