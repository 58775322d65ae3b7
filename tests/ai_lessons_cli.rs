//! `sdlab lesson` end to end for the AI lessons that drive the retrieval and
//! recommender subsystems: each runs at full size on the real data and
//! models in `.cache`, prints the JSON shape, and shows its effect.
//! Without the cached data or model a test skips (or fails under
//! `SDLAB_REQUIRE_REAL_MODELS=1`).

mod common;
use common::sdlab;
use serde_json::Value;
use std::time::{Duration, Instant};

fn json(args: &[&str]) -> Value {
    let out = sdlab(args);
    assert!(
        out.status.success(),
        "sdlab {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn metric(r: &Value, side: &str, name: &str) -> f64 {
    r[side][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{} lacks {side}.{name}: {r}", r["lesson"]))
}

/// Whether `.cache/<rel>` exists; without it the test skips with a message,
/// or fails when `SDLAB_REQUIRE_REAL_MODELS=1` (as `make test` sets).
fn cached(rel: &str) -> bool {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache")
        .join(rel);
    if p.exists() {
        return true;
    }
    if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run `make models`", p.display());
    }
    eprintln!("skipping: {} is missing (run `make models`)", p.display());
    false
}

/// Runs a lesson with `seed` and checks the report's shape.
fn run(name: &str, seed: u64) -> Value {
    let t = Instant::now();
    let r = json(&["lesson", name, "--json", "--seed", &seed.to_string()]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(60), "{name} took {took:?}");
    assert_eq!(r["lesson"], name);
    assert!(r["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        r["notes"].as_str().is_some_and(|n| n.len() > 40),
        "{name}: notes"
    );
    for side in ["naive", "optimal"] {
        let m = r[side].as_object().unwrap();
        assert!(!m.is_empty(), "{name}: {side} is empty");
        assert!(
            m.values().all(|v| v.as_f64().is_some_and(f64::is_finite)),
            "{name}: {r}"
        );
    }
    r
}

#[test]
fn hnsw_keeps_recall_and_beats_the_flat_scan() {
    if !cached("data/glove/glove_6B_50d_emb.npy") {
        return;
    }
    let r = run("hnsw", 7);
    assert_eq!(metric(&r, "naive", "recall_at_10"), 1.0, "{r}");
    assert!(metric(&r, "optimal", "recall_at_10") > 0.9, "{r}");
    assert!(
        metric(&r, "optimal", "queries_per_s") > metric(&r, "naive", "queries_per_s"),
        "{r}"
    );
}

#[test]
fn semantic_cache_hits_paraphrases_that_exact_match_misses() {
    if !common::minilm_present() {
        return;
    }
    for seed in [7, 8] {
        let r = run("semantic-cache", seed);
        assert!(
            metric(&r, "optimal", "hit_rate") > metric(&r, "naive", "hit_rate"),
            "{r}"
        );
        assert_eq!(metric(&r, "naive", "wrong_hits"), 0.0, "{r}");
        assert!(
            metric(&r, "optimal", "hit_rate") <= metric(&r, "optimal", "ideal_hit_rate"),
            "{r}"
        );
    }
}

#[test]
fn structure_aware_chunks_find_answers_at_least_as_often() {
    if !common::minilm_present() || !cached("data/python3.11-doc/faq") {
        return;
    }
    let r = run("rag-chunking", 7);
    assert!(
        metric(&r, "optimal", "hit_at_5") >= metric(&r, "naive", "hit_at_5"),
        "{r}"
    );
    assert!(metric(&r, "optimal", "chunks") > 0.0, "{r}");
}

#[test]
fn two_tower_beats_popularity() {
    if !cached("data/dslabs/Rdata.rdb") {
        return;
    }
    for seed in [7, 8] {
        let r = run("two-tower", seed);
        assert!(
            metric(&r, "optimal", "hr_at_10") > metric(&r, "naive", "hr_at_10"),
            "{r}"
        );
    }
}
