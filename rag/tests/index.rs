//! The vector indexes against their contract: exact search equals brute
//! force, HNSW answers are well-formed and accurate on clustered data,
//! tombstones are never returned, compaction and persistence keep answers,
//! and damaged saves are refused.

use proptest::prelude::*;
use rag::index::flat::FlatIndex;
use rag::index::hnsw::{HnswIndex, HnswParams};
use rag::index::{dot, normalized, Hit, VectorIndex};
use rag::RagError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rag-index-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `n` points around `clusters` random centres in `dim` dimensions.
fn clustered(n: usize, clusters: usize, dim: usize, seed: u64) -> Vec<(u64, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % clusters];
            let v = c
                .iter()
                .map(|x| x + rng.random_range(-0.35..0.35))
                .collect();
            (1000 + i as u64 * 7, v)
        })
        .collect()
}

fn small_params() -> HnswParams {
    HnswParams {
        m: 8,
        ef_construction: 64,
        ef_search: 32,
    }
}

fn brute_force(items: &[(u64, Vec<f32>)], removed: &HashSet<u64>, q: &[f32], k: usize) -> Vec<Hit> {
    let dim = q.len();
    let q = normalized(q, dim).unwrap();
    let mut hits: Vec<Hit> = items
        .iter()
        .filter(|(id, _)| !removed.contains(id))
        .map(|(id, v)| Hit {
            id: *id,
            score: dot(&q, &normalized(v, dim).unwrap()),
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits.truncate(k);
    hits
}

fn vectors(max_n: usize) -> impl Strategy<Value = (usize, Vec<Vec<f32>>)> {
    (2usize..8).prop_flat_map(move |dim| {
        let v = prop::collection::vec(-1.0f32..1.0, dim).prop_filter("not near zero", |v| {
            v.iter().map(|x| x * x).sum::<f32>() > 1e-3
        });
        (Just(dim), prop::collection::vec(v, 1..max_n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn flat_equals_brute_force(
        (dim, vs) in vectors(120),
        remove in prop::collection::vec(any::<bool>(), 120),
        query in prop::collection::vec(-1.0f32..1.0, 8),
        k in 0usize..30,
    ) {
        let q = &query[..dim];
        prop_assume!(q.iter().map(|x| x * x).sum::<f32>() > 1e-3);
        let items: Vec<(u64, Vec<f32>)> =
            vs.into_iter().enumerate().map(|(i, v)| (i as u64 * 5 + 1, v)).collect();
        let mut flat = FlatIndex::new(dim).unwrap();
        flat.add(&items).unwrap();
        let mut removed = HashSet::new();
        for ((id, _), r) in items.iter().zip(&remove) {
            if *r {
                prop_assert!(flat.remove(*id).unwrap());
                removed.insert(*id);
            }
        }
        prop_assert_eq!(flat.len(), items.len() - removed.len());
        prop_assert_eq!(flat.search(q, k).unwrap(), brute_force(&items, &removed, q, k));
    }

    #[test]
    fn hnsw_answers_are_live_sorted_and_distinct(
        (dim, vs) in vectors(150),
        remove in prop::collection::vec(any::<bool>(), 150),
        query in prop::collection::vec(-1.0f32..1.0, 8),
        k in 1usize..25,
    ) {
        let q = &query[..dim];
        prop_assume!(q.iter().map(|x| x * x).sum::<f32>() > 1e-3);
        let items: Vec<(u64, Vec<f32>)> =
            vs.into_iter().enumerate().map(|(i, v)| (i as u64 * 3, v)).collect();
        let mut idx = HnswIndex::build(dim, small_params(), &items).unwrap();
        let mut live: HashSet<u64> = items.iter().map(|(id, _)| *id).collect();
        for ((id, _), r) in items.iter().zip(&remove) {
            if *r {
                prop_assert!(idx.remove(*id).unwrap());
                live.remove(id);
            }
        }
        let hits = idx.search(q, k).unwrap();
        prop_assert!(hits.len() <= k.min(live.len()));
        let ids: HashSet<u64> = hits.iter().map(|h| h.id).collect();
        prop_assert_eq!(ids.len(), hits.len(), "duplicate ids");
        prop_assert!(ids.is_subset(&live), "a removed or unknown id came back");
        prop_assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        // Scores are the cosine similarities of the stored vectors.
        let qn = normalized(q, dim).unwrap();
        for h in &hits {
            let v = &items.iter().find(|(id, _)| *id == h.id).unwrap().1;
            let want = dot(&qn, &normalized(v, dim).unwrap());
            prop_assert!((h.score - want).abs() < 1e-5);
        }
    }
}

/// Mean recall@k of `index` against exact search over `queries`.
fn recall_vs_flat(
    index: &dyn VectorIndex,
    flat: &FlatIndex,
    queries: &[Vec<f32>],
    k: usize,
) -> f64 {
    let mut total = 0.0;
    for q in queries {
        let truth: HashSet<u64> = flat.search(q, k).unwrap().iter().map(|h| h.id).collect();
        let got = index.search(q, k).unwrap();
        total += got.iter().filter(|h| truth.contains(&h.id)).count() as f64 / k as f64;
    }
    total / queries.len() as f64
}

fn queries_near(items: &[(u64, Vec<f32>)], n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let v = &items[(i * 37) % items.len()].1;
            v.iter().map(|x| x + rng.random_range(-0.2..0.2)).collect()
        })
        .collect()
}

#[test]
fn hnsw_recall_on_clustered_data() {
    let items = clustered(2000, 20, 32, 1);
    let mut flat = FlatIndex::new(32).unwrap();
    flat.add(&items).unwrap();
    let hnsw = HnswIndex::build(
        32,
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        },
        &items,
    )
    .unwrap();
    let queries = queries_near(&items, 200, 2);
    let r = recall_vs_flat(&hnsw, &flat, &queries, 10);
    assert!(r >= 0.95, "recall@10 {r}");
    // hnsw_rs's own search on the same graph agrees about as well.
    let q = &queries[0];
    let native: HashSet<u64> = hnsw
        .search_hnsw_rs(q, 10, 64)
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    let exact: HashSet<u64> = flat.search(q, 10).unwrap().iter().map(|h| h.id).collect();
    assert!(native.intersection(&exact).count() >= 8);
}

#[test]
fn tombstones_never_come_back_even_when_most_are_removed() {
    let items = clustered(1000, 10, 16, 3);
    let mut hnsw = HnswIndex::build(16, small_params(), &items).unwrap();
    let mut flat = FlatIndex::new(16).unwrap();
    flat.add(&items).unwrap();
    for (id, _) in items.iter().filter(|(id, _)| id % 10 != 3) {
        assert!(hnsw.remove(*id).unwrap());
        assert!(flat.remove(*id).unwrap());
    }
    assert_eq!(hnsw.len(), 100);
    for q in queries_near(&items, 30, 4) {
        let hits = hnsw.search(&q, 10).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.id % 10 == 3));
    }
    let r = recall_vs_flat(&hnsw, &flat, &queries_near(&items, 50, 5), 10);
    assert!(r >= 0.9, "recall@10 with 90% removed: {r}");
}

#[test]
fn compaction_keeps_live_results() {
    let items = clustered(1500, 15, 24, 6);
    let mut flat = FlatIndex::new(24).unwrap();
    flat.add(&items).unwrap();
    let mut hnsw = HnswIndex::build(24, HnswParams::default(), &items).unwrap();
    for (id, _) in items.iter().step_by(3) {
        flat.remove(*id).unwrap();
        hnsw.remove(*id).unwrap();
    }
    let queries = queries_near(&items, 100, 7);
    let before: Vec<Vec<Hit>> = queries
        .iter()
        .map(|q| flat.search(q, 10).unwrap())
        .collect();
    flat.compact();
    hnsw.compact();
    assert_eq!((flat.tombstones(), hnsw.tombstones()), (0, 0));
    assert_eq!((flat.len(), hnsw.len()), (1000, 1000));
    let after: Vec<Vec<Hit>> = queries
        .iter()
        .map(|q| flat.search(q, 10).unwrap())
        .collect();
    assert_eq!(before, after, "flat compaction changed answers");
    assert!(recall_vs_flat(&hnsw, &flat, &queries, 10) >= 0.95);
    for (id, v) in items.iter().skip(1).step_by(3).take(50) {
        assert_eq!(hnsw.search(v, 1).unwrap()[0].id, *id);
    }
    for (id, _) in items.iter().step_by(3) {
        assert!(!hnsw.contains(*id) && !flat.contains(*id));
    }
}

fn assert_same_answers(a: &dyn VectorIndex, b: &dyn VectorIndex, queries: &[Vec<f32>]) {
    assert_eq!((a.dim(), a.len()), (b.dim(), b.len()));
    for q in queries {
        assert_eq!(a.search(q, 10).unwrap(), b.search(q, 10).unwrap());
    }
}

#[test]
fn save_and_load_give_identical_answers() {
    let items = clustered(1200, 12, 20, 8);
    let queries = queries_near(&items, 100, 9);
    let mut flat = FlatIndex::new(20).unwrap();
    flat.add(&items).unwrap();
    let mut hnsw = HnswIndex::build(20, HnswParams::default(), &items).unwrap();
    for (id, _) in items.iter().step_by(5) {
        flat.remove(*id).unwrap();
        hnsw.remove(*id).unwrap();
    }
    let (fdir, hdir) = (tmp("same-flat"), tmp("same-hnsw"));
    flat.save(&fdir).unwrap();
    hnsw.save(&hdir).unwrap();
    let flat2 = FlatIndex::load(&fdir).unwrap();
    let hnsw2 = HnswIndex::load(&hdir).unwrap();
    assert_same_answers(&flat, &flat2, &queries);
    assert_same_answers(&hnsw, &hnsw2, &queries);
    assert_eq!(hnsw2.params(), hnsw.params());
    assert_eq!(hnsw2.tombstones(), hnsw.tombstones());
    // The kind-blind loader, and a second save over the first.
    assert_same_answers(&hnsw, rag::index::load(&hdir).unwrap().as_ref(), &queries);
    hnsw2.save(&hdir).unwrap();
    assert_same_answers(&hnsw, &HnswIndex::load(&hdir).unwrap(), &queries);
    let files = std::fs::read_dir(&hdir).unwrap().count();
    assert_eq!(files, 5, "old generation files left behind");
    // Loading a flat index as HNSW is refused.
    assert!(matches!(HnswIndex::load(&fdir), Err(RagError::Input(_))));
    let _ = std::fs::remove_dir_all(&fdir);
    let _ = std::fs::remove_dir_all(&hdir);
}

#[test]
fn a_loaded_hnsw_index_takes_new_vectors() {
    let items = clustered(800, 8, 12, 10);
    let (old, new) = items.split_at(600);
    let mut hnsw = HnswIndex::build(12, small_params(), old).unwrap();
    hnsw.remove(old[0].0).unwrap();
    let dir = tmp("add-after-load");
    hnsw.save(&dir).unwrap();
    let mut loaded = HnswIndex::load(&dir).unwrap();
    assert!(loaded.search_hnsw_rs(&old[1].1, 1, 10).is_err());
    loaded.add(new).unwrap();
    assert_eq!(loaded.len(), 799);
    assert_eq!(loaded.tombstones(), 0);
    for (id, v) in new.iter().take(40).chain(old.iter().skip(1).take(40)) {
        assert_eq!(loaded.search(v, 1).unwrap()[0].id, *id);
    }
    assert!(loaded.add(&new[..1]).is_err(), "a live id was added twice");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Saves both kinds, damages each save with `damage`, expects `Corrupt`.
fn refused_when(name: &str, damage: impl Fn(&Path)) {
    let items = clustered(300, 5, 8, 11);
    let mut flat = FlatIndex::new(8).unwrap();
    flat.add(&items).unwrap();
    let mut hnsw = HnswIndex::build(8, small_params(), &items).unwrap();
    flat.remove(items[3].0).unwrap();
    hnsw.remove(items[3].0).unwrap();
    let indexes: [(&str, &dyn VectorIndex); 2] = [("flat", &flat), ("hnsw", &hnsw)];
    for (kind, index) in indexes {
        let dir = tmp(&format!("{name}-{kind}"));
        index.save(&dir).unwrap();
        damage(&dir);
        match rag::index::load(&dir) {
            Err(RagError::Corrupt { detail, .. }) => eprintln!("{name} {kind}: {detail}"),
            Err(e) => panic!("{name} {kind}: expected Corrupt, got {e}"),
            Ok(_) => panic!("{name} {kind}: a damaged index was loaded"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The data file with this role in `dir`.
fn data_file(dir: &Path, role: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{role}-"))
        })
        .unwrap()
}

fn edit_manifest(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn a_flipped_byte_is_refused() {
    refused_when("flip", |dir| {
        let p = data_file(dir, "vectors");
        let mut b = std::fs::read(&p).unwrap();
        b[101] ^= 0x10;
        std::fs::write(&p, b).unwrap();
    });
}

#[test]
fn a_truncated_file_is_refused() {
    refused_when("truncate", |dir| {
        let p = data_file(dir, "ids");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 8]).unwrap();
    });
}

#[test]
fn a_missing_file_is_refused() {
    refused_when("missing", |dir| {
        std::fs::remove_file(data_file(dir, "tombstones")).unwrap()
    });
}

#[test]
fn a_wrong_count_in_the_manifest_is_refused() {
    refused_when("live-count", |dir| {
        edit_manifest(dir, |m| {
            let live = m["live"].as_u64().unwrap();
            let dead = m["tombstones"].as_u64().unwrap();
            m["live"] = (live - 1).into();
            m["tombstones"] = (dead + 1).into();
        })
    });
    refused_when("slot-count", |dir| {
        edit_manifest(dir, |m| {
            m["slots"] = (m["slots"].as_u64().unwrap() + 1).into();
            m["live"] = (m["live"].as_u64().unwrap() + 1).into();
        })
    });
    refused_when("garbage", |dir| {
        std::fs::write(dir.join("manifest.json"), "{").unwrap()
    });
}

#[test]
fn a_damaged_graph_is_refused() {
    let items = clustered(200, 4, 8, 12);
    let hnsw = HnswIndex::build(8, small_params(), &items).unwrap();
    let dir = tmp("graph");
    hnsw.save(&dir).unwrap();
    let p = data_file(&dir, "graph");
    let mut b = std::fs::read(&p).unwrap();
    b[40] ^= 1;
    std::fs::write(&p, b).unwrap();
    assert!(matches!(
        HnswIndex::load(&dir),
        Err(RagError::Corrupt { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(HnswIndex::load(&dir), Err(RagError::NotFound(_))));
}
