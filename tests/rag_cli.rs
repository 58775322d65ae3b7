//! `sdlab rag ingest` and `query` end to end, and `kill -9` during an
//! ingest: the collection still opens, holding exactly the committed batches.

mod common;
use common::{sdlab, tmp};
use std::process::Command;
use std::time::{Duration, Instant};

fn write_docs(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let topics = [
        "cats purr and sleep",
        "rust ownership and borrowing",
        "bread flour and yeast",
        "tides and the moon",
    ];
    for i in 0..n {
        let t = topics[i % topics.len()];
        let body: String = (0..40)
            .map(|j| format!("Document {i} sentence {j} is about {t}. "))
            .collect();
        std::fs::write(dir.join(format!("doc{i:04}.txt")), body).unwrap();
    }
}

#[test]
fn ingest_then_query_with_the_hashing_embedder() {
    let (docs, root) = (tmp("rag-docs"), tmp("rag-root"));
    write_docs(&docs, 8);
    let r = root.to_str().unwrap();
    let out = sdlab(&[
        "rag",
        "ingest",
        docs.to_str().unwrap(),
        "--collection",
        "c1",
        "--root",
        r,
        "--model",
        "hashing",
        "--chunker",
        "recursive:300",
        "--batch-docs",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 documents"));
    let out = sdlab(&[
        "rag",
        "query",
        "yeast and flour for bread",
        "--collection",
        "c1",
        "--root",
        r,
        "--model",
        "hashing",
        "-k",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 3);
    assert!(
        hits[0]["text"].as_str().unwrap().contains("bread"),
        "{hits}"
    );
    for (args, says) in [
        (
            vec![
                "rag",
                "query",
                "x",
                "--collection",
                "nope",
                "--root",
                r,
                "--model",
                "hashing",
            ],
            "no collection",
        ),
        (
            vec![
                "rag",
                "ingest",
                "/no/such/path",
                "--collection",
                "c1",
                "--root",
                r,
                "--model",
                "hashing",
            ],
            "does not exist",
        ),
        (
            vec![
                "rag",
                "ingest",
                docs.to_str().unwrap(),
                "--collection",
                "../x",
                "--root",
                r,
                "--model",
                "hashing",
            ],
            "collection name",
        ),
    ] {
        let out = sdlab(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kill_9_during_ingest_leaves_the_committed_batches() {
    let (docs, root) = (tmp("rag-kill-docs"), tmp("rag-kill-root"));
    write_docs(&docs, 600);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdlab"))
        .args([
            "rag",
            "ingest",
            docs.to_str().unwrap(),
            "--collection",
            "k",
            "--root",
            root.to_str().unwrap(),
            "--model",
            "hashing",
            "--chunker",
            "recursive:200",
            "--batch-docs",
            "20",
            "--index",
            "hnsw",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let committed = root.join("k/committed.json");
    let started = Instant::now();
    loop {
        let batch = std::fs::read_to_string(&committed)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["batch"].as_u64())
            .unwrap_or(0);
        if batch >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no batch committed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the ingest finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let emb = std::sync::Arc::new(rag::hashing::HashingEmbedder::new(256));
    let c = rag::collection::Collection::open(&root, "k", emb, &Default::default())
        .expect("the collection opens after kill -9");
    let text = std::fs::read_to_string(&committed).unwrap();
    let batch = serde_json::from_str::<serde_json::Value>(&text).unwrap()["batch"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(
        c.count_documents().unwrap(),
        batch * 20,
        "exactly the committed batches"
    );
    assert!(c.count_chunks() > 0);
    assert!(!c.query("bread flour", 3).unwrap().is_empty());
}

/// The FAQ evaluation end to end with the model-free embedder: the report's
/// shape, and BM25 on the reference windows within reach of `rank_bm25`'s
/// hit@5 of 0.686 (`../shared/BASELINES.md`), which does not depend on the
/// embedder. Needs the Python docs (`make models`).
#[test]
fn faq_eval_reports_every_chunker_and_bm25_near_the_reference() {
    let docs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/data/python3.11-doc/faq");
    if !docs.is_dir() {
        assert!(
            std::env::var("SDLAB_REQUIRE_REAL_MODELS").map_or(true, |v| v != "1"),
            "{} is missing: run `make models`",
            docs.display()
        );
        eprintln!(
            "skipping: {} is missing (run `make models`)",
            docs.display()
        );
        return;
    }
    let json = tmp("faq-eval.json");
    let out = sdlab(&[
        "rag",
        "eval",
        "--dataset",
        "python-faq",
        "--model",
        "hashing",
        "--chunkers",
        "recursive:1000,fixed:800:100",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("175 questions") && stdout.contains("recursive-1000"),
        "{stdout}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["questions"], 175);
    let chunkers = r["chunkers"].as_array().unwrap();
    assert_eq!(
        chunkers.len(),
        3,
        "the reference windows and the two asked for"
    );
    for c in chunkers.iter().cloned().chain([r.clone()]) {
        for s in [&c, &c["bm25"], &c["hybrid"]] {
            let Some(h5) = s["hit_at_5"].as_f64() else {
                continue;
            };
            let (h1, mrr) = (
                s["hit_at_1"].as_f64().unwrap(),
                s["mrr_at_10"].as_f64().unwrap(),
            );
            assert!(
                (0.0..=1.0).contains(&h5) && h1 <= h5 && h1 <= mrr && mrr <= 1.0,
                "{s}"
            );
        }
    }
    let bm25 = r["bm25"]["hit_at_5"].as_f64().unwrap();
    assert!(
        (bm25 - 0.686).abs() < 0.03,
        "BM25 hit@5 {bm25} against rank_bm25's 0.686"
    );
    let _ = std::fs::remove_file(json);
}
