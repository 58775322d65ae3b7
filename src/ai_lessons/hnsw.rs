//! HNSW: approximate nearest neighbours, trading a little recall for a lot
//! of speed, measured against exact search on real word vectors.
//!
//! **The pattern.** Retrieval (RAG, recommendations, dedup) asks for the k
//! vectors most similar to a query. With millions of vectors an exact scan
//! costs `n * d` multiply-adds per query, so production systems use an
//! approximate index and check how much of the true top k it still finds
//! (recall@k) at which speed.
//!
//! **The naive way** (a flat index, sdlab's `rag::index::flat`): every query
//! scores every stored vector and keeps the best k. Recall is 1.0 by
//! definition, building costs nothing but a copy, and each query is linear
//! in the collection: double the data, halve the queries per second.
//!
//! **The optimal way** (HNSW, `rag::index::hnsw`, a hierarchical navigable
//! small-world graph): each vector is linked to about `M` near neighbours,
//! with a few long-range links on sparse upper layers. A query greedily walks
//! down from the top layer and then runs a beam search of width `ef` on the
//! bottom layer, touching a few hundred or thousand vectors instead of all
//! of them: the cost grows roughly with `log n`. The price is paid once, at
//! build time (every insert is itself a search), and in recall: a larger
//! `ef` finds more of the true neighbours and runs slower.
//!
//! The experiment: a seeded sample of GloVe-50 word vectors (the cache's
//! `glove_6B_50d_emb.npy`) as the collection and 200 other words as
//! queries; the flat index's top 10 is the ground truth. Look at
//! `recall_at_10` (HNSW's share of the true top 10), `queries_per_s` (one
//! thread), `speedup` (against the flat scan) and `build_s`, and at the
//! `_ef*` rows: the recall/speed trade-off of the beam width.
//!
//! **In production** FAISS (`IndexHNSWFlat`, and IVF/PQ to compress),
//! hnswlib, Qdrant, Weaviate, Milvus, pgvector and Elasticsearch all serve
//! HNSW graphs; they add quantized vectors, filtered search, on-disk graphs
//! and incremental deletes. At our 20k vectors the flat scan is still only
//! milliseconds, which is why small collections (and GPUs) often keep exact
//! search; the gap widens with every vector added.

use anyhow::{Context, Result};
use hld::LessonReport;
use rag::index::eval_ann::{default_data_path, read_npy_f32, recall};
use rag::index::flat::FlatIndex;
use rag::index::hnsw::{HnswIndex, HnswParams};
use rag::index::{normalize_in_place, Hit, VectorIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "hnsw";
/// A short human title.
pub const TITLE: &str = "Vector search: a flat scan against an HNSW graph (recall@10 and speed)";

/// Vectors in the collection (sized so the HNSW build stays well under 20 s
/// in a debug build on two cores).
const BASE: usize = 20_000;
/// Queries, disjoint from the collection.
const QUERIES: usize = 200;
const K: usize = 10;
/// Beam widths measured.
const EFS: [usize; 3] = [16, 64, 160];
/// The beam width of the headline numbers.
const EF: usize = 64;
/// Links per node and the build's beam width (below the evaluation
/// default of 200, to keep the build short).
const PARAMS: HnswParams = HnswParams {
    m: 16,
    ef_construction: 80,
    ef_search: EF,
};

/// The collection and the queries: unit vectors, a seeded sample of GloVe
/// rows (ids are row numbers).
struct Sample {
    base: Vec<(u64, Vec<f32>)>,
    queries: Vec<Vec<f32>>,
    dim: usize,
}

/// Reads GloVe-50 and draws `base` + `queries` distinct rows with `seed`.
fn sample(seed: u64, base: usize, queries: usize) -> Result<Sample> {
    let path = default_data_path();
    let m = read_npy_f32(&path).with_context(|| {
        format!(
            "reading GloVe-50 from {} (run `make models`)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        m.rows >= base + queries,
        "{} has {} rows, the lesson needs {}",
        path.display(),
        m.rows,
        base + queries
    );
    let mut rows: Vec<usize> = (0..m.rows).collect();
    rows.shuffle(&mut StdRng::seed_from_u64(seed));
    let row = |i: usize| -> Result<Vec<f32>> {
        let mut v = m.data[i * m.cols..(i + 1) * m.cols].to_vec();
        normalize_in_place(&mut v, m.cols)?;
        Ok(v)
    };
    let (query_rows, rest) = rows.split_at(queries);
    let queries = query_rows.iter().map(|&i| row(i)).collect::<Result<_>>()?;
    let base = rest[..base]
        .iter()
        .map(|&i| Ok((i as u64, row(i)?)))
        .collect::<Result<_>>()?;
    Ok(Sample {
        base,
        queries,
        dim: m.cols,
    })
}

/// The ids of each hit list.
fn ids(found: &[Vec<Hit>]) -> Vec<Vec<u64>> {
    found
        .iter()
        .map(|hits| hits.iter().map(|h| h.id).collect())
        .collect()
}

/// Runs every query once through `search` and returns the results and the
/// queries per second: the median of three passes, on the calling thread.
fn timed(
    queries: &[Vec<f32>],
    search: impl Fn(&[f32]) -> Result<Vec<Hit>>,
) -> Result<(Vec<Vec<Hit>>, f64)> {
    let found = queries
        .iter()
        .map(|q| search(q))
        .collect::<Result<Vec<_>>>()?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for q in queries {
            std::hint::black_box(search(q)?);
        }
        rates.push(queries.len() as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok((found, rates[1]))
}

pub fn lesson(seed: u64) -> Result<LessonReport> {
    let s = sample(seed, BASE, QUERIES)?;
    // Queries run on one thread (the flat scan would otherwise split across
    // cores); the HNSW build uses every core, as a server's would.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;

    let t = Instant::now();
    let mut flat = FlatIndex::new(s.dim)?;
    flat.add(&s.base)?;
    let flat_build_s = t.elapsed().as_secs_f64();
    let (truth, flat_qps) = one.install(|| timed(&s.queries, |q| Ok(flat.search(q, K)?)))?;
    let truth = ids(&truth);

    let t = Instant::now();
    let hnsw = HnswIndex::build(s.dim, PARAMS, &s.base)?;
    let build_s = t.elapsed().as_secs_f64();

    let mut report = LessonReport::new(NAME, TITLE)
        .naive("recall_at_10", 1.0)
        .naive("queries_per_s", flat_qps)
        .naive("build_s", flat_build_s)
        .naive("speedup", 1.0)
        .both("vectors", s.base.len() as f64, s.base.len() as f64)
        .optimal("build_s", build_s)
        .optimal("m", PARAMS.m as f64)
        .optimal("ef_construction", PARAMS.ef_construction as f64);
    let mut rows = Vec::new();
    for &ef in &EFS {
        let (found, qps) =
            one.install(|| timed(&s.queries, |q| Ok(hnsw.search_with_ef(q, K, ef)?)))?;
        let r = recall(&found, &truth);
        rows.push((ef, r, qps));
        if ef == EF {
            report = report
                .optimal("ef", ef as f64)
                .optimal("recall_at_10", r)
                .optimal("queries_per_s", qps)
                .optimal("speedup", qps / flat_qps);
        }
        report = report
            .optimal(&format!("recall_at_10_ef{ef}"), r)
            .optimal(&format!("queries_per_s_ef{ef}"), qps);
    }
    let (ef0, r0, q0) = rows
        .iter()
        .copied()
        .find(|r| r.0 == EF)
        .expect("EF is one of EFS");
    let sweep: Vec<String> = rows
        .iter()
        .map(|(ef, r, q)| format!("ef {ef}: recall {r:.3} at {q:.0}/s"))
        .collect();
    Ok(report.notes(format!(
        "{} GloVe-50 word vectors, {} query words (seed {seed}); truth is the flat index's exact top {K}. \
         The flat scan answers {flat_qps:.0} queries/s on one thread; HNSW (M={}, ef_construction={}) \
         answers {q0:.0}/s at ef {ef0}, {:.1}x faster, and still finds {:.1} % of the true top 10. \
         The beam width is the dial: {}. The bill is the build, {build_s:.1} s on all cores against \
         {:.3} s to copy the vectors into the flat index, paid once per index (and again on every \
         rebuild). Sized down for a debug build: 20k of GloVe's 400k vectors and ef_construction 80 \
         (`sdlab rag eval-ann` runs the full set); the flat scan grows linearly with the collection, \
         HNSW roughly with its log, so the speedup widens with size.",
        s.base.len(),
        s.queries.len(),
        PARAMS.m,
        PARAMS.ef_construction,
        q0 / flat_qps,
        100.0 * r0,
        sweep.join(", "),
        flat_build_s,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_the_order_of_hits() {
        let found = vec![vec![Hit { id: 4, score: 0.9 }, Hit { id: 2, score: 0.5 }]];
        assert_eq!(ids(&found), vec![vec![4, 2]]);
    }

    #[test]
    fn timed_returns_one_result_per_query() {
        let queries = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let mut flat = FlatIndex::new(2).unwrap();
        flat.add(&[(1, vec![1.0, 0.0]), (2, vec![0.0, 1.0])])
            .unwrap();
        let (found, qps) = timed(&queries, |q| Ok(flat.search(q, 1)?)).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0][0].id, 1);
        assert_eq!(found[1][0].id, 2);
        assert_eq!(found[2][0].id, 2);
        assert!(qps > 0.0);
    }

    #[test]
    fn hnsw_finds_the_exact_neighbours_of_a_small_set() {
        // On a small set of points in general position with a wide beam the
        // graph search is exact. (Points on a 1-D curve are HNSW's known hard
        // case: its pruned neighbour lists can leave a stretch unreachable.)
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(3);
        let mut point = || -> Vec<f32> {
            let mut v: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0..1.0)).collect();
            normalize_in_place(&mut v, 8).unwrap();
            v
        };
        let base: Vec<(u64, Vec<f32>)> = (0..300u64).map(|i| (i, point())).collect();
        let queries: Vec<Vec<f32>> = (0..20).map(|_| point()).collect();
        let mut flat = FlatIndex::new(8).unwrap();
        flat.add(&base).unwrap();
        let hnsw = HnswIndex::build(8, PARAMS, &base).unwrap();
        let truth: Vec<Vec<Hit>> = queries.iter().map(|q| flat.search(q, K).unwrap()).collect();
        let found: Vec<Vec<Hit>> = queries
            .iter()
            .map(|q| hnsw.search_with_ef(q, K, 200).unwrap())
            .collect();
        assert!(recall(&found, &ids(&truth)) > 0.99);
    }
}
