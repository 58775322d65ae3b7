//! `sdlab rag eval-ann` end to end on a GloVe-50 subset: the JSON report's
//! shape, and that HNSW finds nearly all true neighbours at the largest ef.
//! Needs the real data (`make models`): skipped when it is missing, unless
//! `SDLAB_REQUIRE_REAL_MODELS=1`, which turns the skip into a failure.

mod common;

use common::{sdlab, tmp};
use std::path::PathBuf;

fn glove_npy() -> PathBuf {
    let cache = std::env::var_os("SDLAB_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache"));
    cache.join("data/glove/glove_6B_50d_emb.npy")
}

#[test]
fn eval_ann_on_a_glove_subset_writes_a_report() {
    let npy = glove_npy();
    if !npy.is_file() {
        if std::env::var("SDLAB_REQUIRE_REAL_MODELS").as_deref() == Ok("1") {
            panic!("{} is missing (run `make models`)", npy.display());
        }
        eprintln!("skipping: {} is missing (run `make models`)", npy.display());
        return;
    }
    let json = tmp("eval-ann.json");
    let out = sdlab(&[
        "rag",
        "eval-ann",
        "--limit",
        "20000",
        "--ef",
        "10,40,160",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("recall@10"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(report["dataset"], "glove50");
    assert_eq!(report["base"], 20000);
    assert_eq!(report["queries"], 1000);
    assert!(report["build_s"].as_f64().unwrap() > 0.0);
    let flat_recall = report["flat"]["recall_at_10"].as_f64().unwrap();
    assert!(flat_recall >= 0.99, "flat recall {flat_recall}");
    assert!(report["flat"]["qps"].as_f64().unwrap() > 0.0);
    let hnsw = report["hnsw"].as_array().unwrap();
    let efs: Vec<u64> = hnsw.iter().map(|p| p["ef"].as_u64().unwrap()).collect();
    assert_eq!(efs, [10, 40, 160]);
    for p in hnsw {
        let r = p["recall_at_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r));
        assert!(p["qps"].as_f64().unwrap() > 0.0);
    }
    let best = hnsw[2]["recall_at_10"].as_f64().unwrap();
    assert!(best >= 0.97, "recall@10 at ef 160: {best}");
    assert!(best >= hnsw[0]["recall_at_10"].as_f64().unwrap());
}

#[test]
fn eval_ann_refuses_an_unknown_dataset() {
    let out = sdlab(&["rag", "eval-ann", "--dataset", "sift1m"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("glove50") && stderr.contains("make models"),
        "{stderr}"
    );
}
