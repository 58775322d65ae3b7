//! Collections end to end with the hashing embedder: ingest, query, delete,
//! reopen, and recovery from an ingest interrupted between its steps.

use rag::collection::{Collection, CollectionOptions};
use rag::hashing::HashingEmbedder;
use rag::store::{NewDocument, Store};
use std::path::PathBuf;
use std::sync::Arc;

fn root(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sdlab-collection-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn docs() -> Vec<(String, String)> {
    let topics = [
        (
            "cats.txt",
            "Cats purr when they are content. A cat sleeps most of the day.",
        ),
        (
            "rust.txt",
            "Rust has ownership and borrowing. The borrow checker rejects data races.",
        ),
        (
            "bread.txt",
            "Bread needs flour, water, salt and yeast. Knead the dough and let it rise.",
        ),
        (
            "tides.txt",
            "Tides follow the moon. High tide and low tide come twice a day.",
        ),
        (
            "chess.txt",
            "In chess the knight moves in an L shape. Castling protects the king.",
        ),
    ];
    topics
        .iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect()
}

fn opts(index: &str) -> CollectionOptions {
    CollectionOptions {
        chunker: "recursive:60".into(),
        index: index.into(),
        batch_docs: 2,
    }
}

#[test]
fn ingest_query_delete_and_reopen() {
    for kind in ["hnsw", "flat"] {
        let root = root(kind);
        let emb = Arc::new(HashingEmbedder::new(256));
        let mut c = Collection::open(&root, "docs", emb.clone(), &opts(kind)).unwrap();
        let stats = c.ingest(&docs(), |_| {}).unwrap();
        assert_eq!((stats.documents, stats.batches), (5, 3));
        assert_eq!(c.count_chunks(), stats.chunks);
        let hits = c.query("how does the knight move in chess", 3).unwrap();
        assert_eq!(hits[0].chunk.source, "chess.txt", "{hits:?}");
        assert!(hits[0].chunk.text.contains("knight"));
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(c.delete_source("chess.txt").unwrap() >= 1);
        let hits = c.query("how does the knight move in chess", 5).unwrap();
        assert!(hits.iter().all(|h| h.chunk.source != "chess.txt"));
        drop(c);
        // Reopen: same answers, the original chunker kept.
        let c = Collection::open(&root, "docs", emb, &CollectionOptions::default()).unwrap();
        assert_eq!(c.chunker_spec(), "recursive:60");
        assert_eq!(c.count_documents().unwrap(), 4);
        assert_eq!(
            c.query("yeast and flour", 1).unwrap()[0].chunk.source,
            "bread.txt"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// A crash after a batch reached SQLite but before its vectors were saved
/// (or before `committed.json` moved) is rolled back on open.
#[test]
fn an_interrupted_batch_is_rolled_back() {
    let root = root("crash");
    let emb = Arc::new(HashingEmbedder::new(128));
    let mut c = Collection::open(&root, "docs", emb.clone(), &opts("hnsw")).unwrap();
    c.ingest(&docs()[..4], |_| {}).unwrap();
    drop(c);
    // Batch 3 written to the store only, as if killed right after.
    let mut store = Store::open(&root.join("docs/store.sqlite")).unwrap();
    let text = "A stray document that never reached the index.";
    store
        .insert_batch(
            3,
            &[NewDocument {
                source: "stray.txt",
                text,
                chunks: &[rag::chunk::Chunk {
                    start: 0,
                    end: text.len(),
                }],
            }],
        )
        .unwrap();
    drop(store);
    let c = Collection::open(&root, "docs", emb.clone(), &opts("hnsw")).unwrap();
    assert_eq!(c.count_documents().unwrap(), 4);
    assert!(c
        .query("stray document", 5)
        .unwrap()
        .iter()
        .all(|h| h.chunk.source != "stray.txt"));
    drop(c);
    // A damaged index is refused, not silently rebuilt or half-read.
    let index = root.join("docs/index");
    let victim = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap() != "manifest.json")
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let err = Collection::open(&root, "docs", emb, &opts("hnsw"))
        .err()
        .unwrap();
    assert!(matches!(err, rag::RagError::Corrupt { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bad_names_and_specs_are_refused() {
    let root = root("bad");
    let emb = Arc::new(HashingEmbedder::new(32));
    for name in ["", "../x", ".hidden", "a/b", &"x".repeat(65)] {
        assert!(
            Collection::open(&root, name, emb.clone(), &opts("flat")).is_err(),
            "{name}"
        );
    }
    let bad = CollectionOptions {
        chunker: "nope:3".into(),
        ..opts("flat")
    };
    assert!(Collection::open(&root, "ok", emb.clone(), &bad).is_err());
    let c = Collection::open(&root, "ok2", emb, &opts("flat")).unwrap();
    assert!(c.query("   ", 3).is_err());
    let _ = std::fs::remove_dir_all(&root);
}
