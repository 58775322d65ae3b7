//! `sdlab serve` with retrieval, end to end: documents added over HTTP land
//! in the same collections `sdlab rag query` reads, queries and answers cite
//! them, and `/v1/embeddings` with all-MiniLM-L6-v2 gives the vectors
//! `sdlab embed` gives.

mod common;
use common::server::{http_post, Server};
use common::{minilm_present, sdlab, synth, tmp};
use serde_json::{json, Value};

fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http_post(&server.url, path, body)
        .unwrap_or_else(|| panic!("POST {path} failed:\n{}", server.log()));
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

#[test]
fn documents_over_http_are_queried_answered_and_seen_by_the_cli() {
    let (model, rag_dir) = (tmp("synth"), tmp("rag-root"));
    synth(&model, 3);
    let rag = rag_dir.to_str().unwrap();
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--embedding-model",
        "hashing",
        "--rag-dir",
        rag,
        "--rag-chunker",
        "recursive:200",
    ]);
    let docs = json!({ "documents": [
        { "source": "bread.md", "text": "Bread needs flour, water, salt and yeast. Knead the dough, then let it rise." },
        { "source": "tides.md", "text": "Tides follow the moon. Its pull raises the sea twice a day." },
        { "source": "cats.md", "text": "Cats purr when they are content. They sleep most of the day." },
    ]});
    let (status, r) = post(&server, "/v1/rag/collections/kitchen/documents", &docs);
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["created"].clone(), r["documents"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(r["chunker"], "recursive:200");

    let (status, r) = post(
        &server,
        "/v1/rag/collections/kitchen/query",
        &json!({ "query": "how much yeast and flour for the dough", "k": 2 }),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["data"][0]["source"], "bread.md", "{r}");

    let (status, r) = post(
        &server,
        "/v1/rag/answer",
        &json!({ "collection": "kitchen", "question": "What makes the sea rise?", "k": 2, "max_tokens": 8 }),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["citations"][0]["source"], "tides.md", "{r}");
    assert!(r["answer"].is_string() && r["usage"]["completion_tokens"].as_u64() > Some(0));

    // The embedder is the model-free hashing one; its name says so.
    let (status, r) = post(&server, "/v1/embeddings", &json!({ "input": ["a b", "c"] }));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["model"], "hashing-256");
    assert_eq!(r["data"][1]["embedding"].as_array().unwrap().len(), 256);

    // The CLI reads the collection the server wrote.
    let out = sdlab(&[
        "rag",
        "query",
        "the moon and the sea",
        "--collection",
        "kitchen",
        "--root",
        rag,
        "--model",
        "hashing",
        "-k",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits[0]["source"], "tides.md", "{hits}");
    drop(server);
    let _ = std::fs::remove_dir_all(&rag_dir);
}

#[test]
fn bad_embedding_flags_fail_at_start_with_a_message() {
    let model = tmp("synth-flags");
    synth(&model, 4);
    let m = model.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "serve",
                "--model",
                m,
                "--embedding-model",
                "/no/such/folder",
            ],
            "/no/such/folder",
        ),
        (
            vec![
                "serve",
                "--model",
                m,
                "--embedding-model",
                "hashing",
                "--rag-chunker",
                "odd:1",
            ],
            "--rag-chunker",
        ),
    ] {
        let out = sdlab(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn minilm_embeddings_over_http_match_the_cli() {
    if !minilm_present() {
        return;
    }
    let model = tmp("synth-minilm");
    synth(&model, 5);
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--rag-dir",
        tmp("rag-minilm").to_str().unwrap(),
    ]);
    let texts = ["How do I read a file in Python?", "Tides follow the moon."];
    let (status, r) = post(
        &server,
        "/v1/embeddings",
        &json!({ "model": "sentence-transformers/all-MiniLM-L6-v2", "input": texts }),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["model"], "all-MiniLM-L6-v2");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() >= 10, "{r}");
    let out = sdlab(&["embed", texts[0], texts[1], "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for i in 0..2 {
        let a: Vec<f64> = serde_json::from_value(r["data"][i]["embedding"].clone()).unwrap();
        let b: Vec<f64> = serde_json::from_value(cli[i]["embedding"].clone()).unwrap();
        assert_eq!(a.len(), 384);
        let cos: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.9999, "text {i}: cosine {cos}");
    }
}
