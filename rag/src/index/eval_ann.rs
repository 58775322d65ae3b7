//! ANN evaluation on GloVe-50: recall@10 and single-thread queries/s of
//! HNSW over an `ef_search` sweep, against exact search, on the split the
//! peer baselines use (`shared/BASELINES.md`, "Vector search").
//!
//! Data: `glove_6B_50d_emb.npy` (float32, 400000 x 50, Fortran order) in the
//! cache (`make models`). Every row is normalized; the queries are the 1,000
//! rows listed in `fixtures/glove50_query_ids.txt`, the base is the other
//! 399,000 under their row ids. Truth is the exact top 10 by inner product,
//! computed in f64 so that it does not depend on f32 summation order (the
//! flat index, in f32, then scores about 0.999: some 10th and 11th
//! neighbours are within 1e-4). Queries/s is single-threaded (a one-thread
//! rayon pool): the median of several runs of at least `min_run_s` each,
//! cycling through the queries (an HNSW run covers every query at least
//! once). The build runs on `build_threads` threads.

use super::flat::FlatIndex;
use super::hnsw::{HnswIndex, HnswParams};
use super::{normalize_in_place, Hit, VectorIndex};
use crate::{io_err, RagError, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

const K: usize = 10;
const ROWS: usize = 400_000;
const COLS: usize = 50;

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalAnnOptions {
    /// Only `glove50`.
    pub dataset: String,
    /// The `.npy` file (default: `<cache>/data/glove/glove_6B_50d_emb.npy`).
    pub data: Option<PathBuf>,
    /// The query row ids (default: `$SDLAB_SHARED_DIR/fixtures/...`, else
    /// `../shared/fixtures/glove50_query_ids.txt`).
    pub query_ids: Option<PathBuf>,
    pub m: usize,
    pub ef_construction: usize,
    /// The `ef_search` values to sweep.
    pub ef: Vec<usize>,
    /// Use only the first `limit` base rows (0: all).
    pub limit: usize,
    pub build_threads: usize,
    /// Seconds each timing run lasts at least (HNSW runs also cover every
    /// query; 0: one pass over the queries).
    pub min_run_s: f64,
    /// Timing runs per HNSW setting (the median is reported).
    pub runs: usize,
    /// Timing runs of the flat index.
    pub flat_runs: usize,
    /// Also time `hnsw_rs`'s own search on the same graph.
    pub compare_hnsw_rs: bool,
}

impl Default for EvalAnnOptions {
    fn default() -> Self {
        EvalAnnOptions {
            dataset: "glove50".into(),
            data: None,
            query_ids: None,
            m: 16,
            ef_construction: 200,
            ef: vec![10, 20, 40, 80, 160],
            limit: 0,
            build_threads: 2,
            min_run_s: 1.5,
            runs: 5,
            flat_runs: 3,
            compare_hnsw_rs: true,
        }
    }
}

/// Recall and speed of exact search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlatResult {
    pub recall_at_10: f64,
    pub qps: f64,
}

/// Recall and speed at one `ef_search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EfResult {
    pub ef: usize,
    pub recall_at_10: f64,
    pub qps: f64,
}

/// The evaluation's outcome (the first four fields are the contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalAnnReport {
    pub dataset: String,
    /// HNSW build, seconds (`build_threads` threads).
    pub build_s: f64,
    pub flat: FlatResult,
    pub hnsw: Vec<EfResult>,
    /// The same graph searched by `hnsw_rs` itself (empty when not asked).
    pub hnsw_rs_search: Vec<EfResult>,
    pub base: usize,
    pub queries: usize,
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub build_threads: usize,
    pub truth: String,
    pub qps_method: String,
}

/// The default data file.
pub fn default_data_path() -> PathBuf {
    models::loader::cache_dir().join("data/glove/glove_6B_50d_emb.npy")
}

/// The default query id list.
pub fn default_query_ids_path() -> PathBuf {
    let rel = "fixtures/glove50_query_ids.txt";
    match std::env::var_os("SDLAB_SHARED_DIR") {
        Some(dir) => Path::new(&dir).join(rel),
        None => Path::new("../shared").join(rel),
    }
}

/// A dense f32 matrix, row-major.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Reads a 2-d little-endian float32 `.npy` file (either order).
pub fn read_npy_f32(path: &Path) -> Result<Matrix> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RagError::NotFound(format!(
                "{} is missing: run `make models` to fetch the GloVe data",
                path.display()
            )))
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    parse_npy_f32(&bytes).map_err(|detail| RagError::Corrupt {
        what: path.display().to_string(),
        detail,
    })
}

/// The value after `'key':` in a `.npy` header dict.
fn header_value<'a>(header: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let pat = format!("'{key}':");
    let at = header
        .find(&pat)
        .ok_or_else(|| format!("header has no {key:?}"))?;
    Ok(header[at + pat.len()..].trim_start())
}

/// Parses `.npy` bytes: magic, version, header dict, data.
pub fn parse_npy_f32(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or("header runs past the end of the file")?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text".to_string())?;
    let descr = header_value(header, "descr")?;
    if !descr.starts_with("'<f4'") {
        return Err(format!(
            "dtype is {}, expected little-endian float32 '<f4'",
            descr.split(',').next().unwrap_or("?")
        ));
    }
    let order = header_value(header, "fortran_order")?;
    let fortran = if order.starts_with("True") {
        true
    } else if order.starts_with("False") {
        false
    } else {
        return Err("fortran_order is neither True nor False".into());
    };
    let shape = header_value(header, "shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("shape is not a tuple")?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("shape entry {s:?}")))
        .collect::<std::result::Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!("shape has {} dimensions, expected 2", dims.len()));
    };
    let n = rows.checked_mul(cols).ok_or("shape overflows")?;
    let body = &bytes[end..];
    if Some(body.len()) != n.checked_mul(4) {
        return Err(format!(
            "{} data bytes for shape ({rows}, {cols}): expected {}",
            body.len(),
            n.saturating_mul(4)
        ));
    }
    let raw = super::persist::bytes_to_f32s(body);
    let data = if fortran {
        // Element (i, j) sits at j * rows + i.
        let mut out = vec![0f32; n];
        for (j, col) in raw.chunks_exact(rows.max(1)).enumerate().take(cols) {
            for (i, &x) in col.iter().enumerate() {
                out[i * cols + j] = x;
            }
        }
        out
    } else {
        raw
    };
    Ok(Matrix { rows, cols, data })
}

/// Reads the query row ids: one integer per line, distinct, below `rows`.
pub fn read_query_ids(path: &Path, rows: usize) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |detail: String| RagError::Corrupt {
        what: path.display().to_string(),
        detail,
    };
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let id: usize = line
            .parse()
            .map_err(|_| bad(format!("line {} is not a row id: {line:?}", n + 1)))?;
        if id >= rows {
            return Err(bad(format!("row id {id} is past the {rows} rows")));
        }
        ids.push(id);
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != ids.len() {
        return Err(bad("lists a row id twice".into()));
    }
    if ids.is_empty() {
        return Err(bad("lists no row ids".into()));
    }
    Ok(ids)
}

/// Exact top `k` ids by f64 inner product, best first.
fn exact_top(base: &[(u64, Vec<f32>)], q: &[f32], k: usize) -> Vec<u64> {
    let mut top: Vec<(f64, u64)> = Vec::with_capacity(k + 1);
    for (id, v) in base {
        let s = dot_f64(q, v);
        if top.len() < k || s > top[top.len() - 1].0 {
            let at = top.partition_point(|&(t, tid)| t > s || (t == s && tid < *id));
            top.insert(at, (s, *id));
            top.truncate(k);
        }
    }
    top.into_iter().map(|(_, id)| id).collect()
}

/// Inner product in f64 (four independent sums, so it vectorizes).
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        acc[i % 4] += f64::from(*x) * f64::from(*y);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// Mean over queries of |found ∩ truth| / |truth|. With truth lists of one
/// length (top-10 here) the hits are summed as integers and divided once,
/// so 942 hits in 100 queries print as 0.942, not 0.9419999999999966.
pub fn recall(found: &[Vec<Hit>], truth: &[Vec<u64>]) -> f64 {
    let hits: Vec<usize> = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|h| t.contains(&h.id)).count())
        .collect();
    let len = truth.first().map_or(0, Vec::len);
    if truth.iter().all(|t| t.len() == len) {
        return hits.iter().sum::<usize>() as f64 / (len * truth.len()).max(1) as f64;
    }
    let total: f64 = hits
        .iter()
        .zip(truth)
        .map(|(&h, t)| h as f64 / t.len().max(1) as f64)
        .sum();
    total / truth.len().max(1) as f64
}

/// Single-thread queries/s: median over `runs` of runs lasting at least
/// `min_s`, cycling through the queries; with `whole`, a run also covers
/// every query at least once.
fn qps(
    one: &rayon::ThreadPool,
    queries: &[Vec<f32>],
    (min_s, runs, whole): (f64, usize, bool),
    search: impl Fn(&[f32]) -> usize + Sync,
) -> f64 {
    let mut rates: Vec<f64> = one.install(|| {
        (0..runs.max(1))
            .map(|_| {
                let start = Instant::now();
                let mut done = 0usize;
                loop {
                    std::hint::black_box(search(&queries[done % queries.len()]));
                    done += 1;
                    let t = start.elapsed().as_secs_f64();
                    if t >= min_s && (!whole || done >= queries.len()) {
                        return done as f64 / t;
                    }
                }
            })
            .collect()
    });
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| RagError::Input(format!("cannot start a thread pool: {e}")))
}

/// Runs the evaluation; `progress` hears about each step.
pub fn run(opts: &EvalAnnOptions, mut progress: impl FnMut(&str)) -> Result<EvalAnnReport> {
    if !matches!(opts.dataset.as_str(), "glove50" | "glove-50") {
        return Err(RagError::Input(format!(
            "unknown dataset {:?}: the one supported is glove50 (GloVe 6B 50d, fetched by `make models`)",
            opts.dataset
        )));
    }
    if opts.ef.is_empty() || opts.ef.contains(&0) {
        return Err(RagError::Input("ef values must be at least 1".into()));
    }
    let params = HnswParams {
        m: opts.m,
        ef_construction: opts.ef_construction,
        ef_search: opts.ef[0],
    };
    params.validate()?;
    let data_path = opts.data.clone().unwrap_or_else(default_data_path);
    progress(&format!("reading {}", data_path.display()));
    let m = read_npy_f32(&data_path)?;
    if (m.rows, m.cols) != (ROWS, COLS) {
        return Err(RagError::Corrupt {
            what: data_path.display().to_string(),
            detail: format!(
                "shape ({}, {}), GloVe-50 is ({ROWS}, {COLS})",
                m.rows, m.cols
            ),
        });
    }
    let qpath = opts
        .query_ids
        .clone()
        .unwrap_or_else(default_query_ids_path);
    let qids = read_query_ids(&qpath, m.rows)?;
    let mut is_query = vec![false; m.rows];
    let mut queries = Vec::with_capacity(qids.len());
    for &i in &qids {
        is_query[i] = true;
        let mut v = m.data[i * COLS..(i + 1) * COLS].to_vec();
        normalize_in_place(&mut v, COLS)?;
        queries.push(v);
    }
    let limit = if opts.limit == 0 {
        usize::MAX
    } else {
        opts.limit
    };
    let base: Vec<(u64, Vec<f32>)> = (0..m.rows)
        .filter(|&i| !is_query[i])
        .take(limit)
        .map(|i| {
            let mut v = m.data[i * COLS..(i + 1) * COLS].to_vec();
            normalize_in_place(&mut v, COLS).map(|()| (i as u64, v))
        })
        .collect::<Result<_>>()?;
    drop(m);
    progress(&format!(
        "{} base vectors, {} queries; exact top-{K} (f64)",
        base.len(),
        queries.len()
    ));
    let many = pool(opts.build_threads)?;
    let one = pool(1)?;
    let truth: Vec<Vec<u64>> =
        many.install(|| queries.par_iter().map(|q| exact_top(&base, q, K)).collect());

    progress("flat index: recall and single-thread queries/s");
    let mut flat = FlatIndex::new(COLS)?;
    flat.add(&base)?;
    let found: Vec<Vec<Hit>> = many.install(|| {
        queries
            .par_iter()
            .map(|q| flat.search_normalized(q, K))
            .collect()
    });
    let flat_result = FlatResult {
        recall_at_10: recall(&found, &truth),
        qps: qps(
            &one,
            &queries,
            (opts.min_run_s, opts.flat_runs, opts.min_run_s <= 0.0),
            |q| flat.search_normalized(q, K).len(),
        ),
    };
    drop(flat);
    progress(&format!(
        "flat: recall@10 {:.4}, {:.0} queries/s",
        flat_result.recall_at_10, flat_result.qps
    ));

    progress(&format!(
        "building HNSW (M={}, ef_construction={}) on {} threads",
        opts.m, opts.ef_construction, opts.build_threads
    ));
    let start = Instant::now();
    let hnsw = many.install(|| HnswIndex::build(COLS, params, &base))?;
    let build_s = start.elapsed().as_secs_f64();
    progress(&format!("built in {build_s:.1} s"));

    let mut sweep = Vec::new();
    let mut native = Vec::new();
    for &ef in &opts.ef {
        let found: Vec<Vec<Hit>> = queries
            .iter()
            .map(|q| hnsw.search_normalized(q, K, ef))
            .collect();
        let r = EfResult {
            ef,
            recall_at_10: recall(&found, &truth),
            qps: qps(&one, &queries, (opts.min_run_s, opts.runs, true), |q| {
                hnsw.search_normalized(q, K, ef).len()
            }),
        };
        progress(&format!(
            "ef {ef}: recall@10 {:.4}, {:.0} queries/s",
            r.recall_at_10, r.qps
        ));
        sweep.push(r);
        if opts.compare_hnsw_rs {
            let found = queries
                .iter()
                .map(|q| hnsw.search_hnsw_rs(q, K, ef))
                .collect::<Result<Vec<_>>>()?;
            let r = EfResult {
                ef,
                recall_at_10: recall(&found, &truth),
                qps: qps(
                    &one,
                    &queries,
                    (opts.min_run_s, opts.runs.min(3), true),
                    |q| hnsw.search_hnsw_rs(q, K, ef).map_or(0, |h| h.len()),
                ),
            };
            progress(&format!(
                "ef {ef} (hnsw_rs's own search): recall@10 {:.4}, {:.0} queries/s",
                r.recall_at_10, r.qps
            ));
            native.push(r);
        }
    }
    Ok(EvalAnnReport {
        dataset: "glove50".into(),
        build_s,
        flat: flat_result,
        hnsw: sweep,
        hnsw_rs_search: native,
        base: base.len(),
        queries: queries.len(),
        dim: COLS,
        m: opts.m,
        ef_construction: opts.ef_construction,
        build_threads: opts.build_threads,
        truth: format!("exact top-{K} by inner product in f64 over normalized f32 rows"),
        qps_method: format!(
            "one thread; median of {} runs (flat: {}) of at least {} s each",
            opts.runs, opts.flat_runs, opts.min_run_s
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, body: &[f32]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend(body.iter().flat_map(|x| x.to_le_bytes()));
        out
    }

    #[test]
    fn parses_both_orders() {
        let body = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let c = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &body,
        );
        let m = parse_npy_f32(&c).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.data, body);
        let f = npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            &body,
        );
        let m = parse_npy_f32(&f).unwrap();
        assert_eq!(m.data, [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn refuses_bad_npy() {
        let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert!(parse_npy_f32(b"nope").is_err());
        assert!(parse_npy_f32(&npy(ok, &[1.0; 5])).is_err());
        let f8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
        assert!(parse_npy_f32(&npy(f8, &[1.0; 6])).is_err());
        let d3 = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }";
        assert!(parse_npy_f32(&npy(d3, &[1.0; 6])).is_err());
        let mut cut = npy(ok, &[1.0; 6]);
        cut.truncate(20);
        assert!(parse_npy_f32(&cut).is_err());
    }

    #[test]
    fn exact_top_and_recall() {
        let base: Vec<(u64, Vec<f32>)> = vec![
            (7, vec![1.0, 0.0]),
            (3, vec![0.0, 1.0]),
            (5, vec![0.6, 0.8]),
        ];
        assert_eq!(exact_top(&base, &[1.0, 0.0], 2), [7, 5]);
        let found = vec![vec![Hit { id: 7, score: 1.0 }, Hit { id: 3, score: 0.0 }]];
        assert_eq!(recall(&found, &[vec![7, 5]]), 0.5);
    }

    #[test]
    fn unknown_dataset_is_refused() {
        let opts = EvalAnnOptions {
            dataset: "sift".into(),
            ..EvalAnnOptions::default()
        };
        let err = run(&opts, |_| {}).unwrap_err().to_string();
        assert!(err.contains("glove50"), "{err}");
    }
}
