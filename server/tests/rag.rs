//! `/v1/embeddings` and the `/v1/rag` routes over real HTTP, with a small
//! in-memory [`Retrieval`] (bag-of-words vectors, one chunk per document):
//! response shapes, the answer being generated from exactly the retrieved
//! passages, fitting the sources into the context, and clear errors.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use server::http::rag::{sources_prompt, ANSWER_INSTRUCTIONS};
use server::http::Extensions;
use server::retrieval::{
    AddOutcome, CollectionInfo, Embeddings, NewDocument, Passage, Retrieval, RetrievalError,
};
use server::runner::EngineOptions;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const DIM: usize = 64;

/// Words hashed into `DIM` buckets, L2-normalized.
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = w
            .to_lowercase()
            .bytes()
            .fold(1469598103934665603u64, |h, b| {
                (h ^ b as u64).wrapping_mul(1099511628211)
            });
        v[(h % DIM as u64) as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

#[derive(Default)]
struct MemoryRetrieval {
    collections: Mutex<BTreeMap<String, Vec<NewDocument>>>,
}

impl Retrieval for MemoryRetrieval {
    fn embedding_model(&self) -> &str {
        "test/bag-of-words"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn embed(&self, texts: &[String]) -> Result<Embeddings, RetrievalError> {
        Ok(Embeddings {
            vectors: texts.iter().map(|t| bag_of_words(t)).collect(),
            tokens: texts.iter().map(|t| t.split_whitespace().count()).sum(),
        })
    }
    fn add_documents(
        &self,
        collection: &str,
        docs: &[NewDocument],
        chunker: Option<&str>,
    ) -> Result<AddOutcome, RetrievalError> {
        if chunker.is_some_and(|c| c != "whole") {
            return Err(RetrievalError::Invalid {
                message: "only the `whole` chunker".into(),
                param: Some("chunker"),
            });
        }
        let mut all = self.collections.lock().unwrap();
        let created = !all.contains_key(collection);
        let c = all.entry(collection.to_string()).or_default();
        c.extend(docs.iter().cloned());
        Ok(AddOutcome {
            created,
            documents: docs.len(),
            chunks: docs.len(),
            chunker: "whole".into(),
            total_documents: c.len(),
            total_chunks: c.len(),
        })
    }
    fn query(
        &self,
        collection: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, RetrievalError> {
        let all = self.collections.lock().unwrap();
        let docs = all.get(collection).ok_or_else(|| {
            RetrievalError::NotFound(format!("no collection named `{collection}`"))
        })?;
        let q = bag_of_words(query);
        let mut hits: Vec<Passage> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| Passage {
                id: i as u64,
                score: bag_of_words(&d.text)
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| a * b)
                    .sum(),
                source: d.source.clone(),
                start: 0,
                end: d.text.len(),
                text: d.text.clone(),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(k);
        Ok(hits)
    }
    fn collections(&self) -> Result<Vec<CollectionInfo>, RetrievalError> {
        Ok(self
            .collections
            .lock()
            .unwrap()
            .iter()
            .map(|(name, docs)| CollectionInfo {
                name: name.clone(),
                documents: docs.len(),
                chunks: docs.len(),
                chunker: "whole".into(),
            })
            .collect())
    }
}

fn rag_server(max_model_len: usize) -> TestServer {
    TestServer::start_with_extensions(
        server_config(),
        EngineOptions {
            max_model_len,
            ..engine_options()
        },
        Extensions {
            retrieval: Some(Arc::new(MemoryRetrieval::default())),
            recommender: None,
        },
    )
}

const DOCS: [(&str, &str); 4] = [
    (
        "bread.md",
        "Bread needs flour, water, salt and yeast; knead it and let it rise.",
    ),
    (
        "tides.md",
        "Tides follow the moon: its pull raises the sea twice a day.",
    ),
    (
        "cats.md",
        "Cats purr when they are content and sleep most of the day.",
    ),
    (
        "rust.md",
        "Rust checks ownership and borrowing when it compiles a program.",
    ),
];

async fn add_docs(c: &reqwest::Client, s: &TestServer, name: &str) -> Value {
    let docs: Vec<Value> = DOCS
        .iter()
        .map(|(source, text)| json!({ "source": source, "text": text }))
        .collect();
    post_ok(
        c,
        &s.url(&format!("/v1/rag/collections/{name}/documents")),
        &json!({ "documents": docs }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_in_openai_shape_as_floats_and_base64() {
    let s = rag_server(0);
    let c = client();
    let url = s.url("/v1/embeddings");
    let texts = ["the moon pulls the sea", "flour and yeast"];
    let r = post_ok(
        &c,
        &url,
        &json!({ "model": "bag-of-words", "input": texts }),
    )
    .await;
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], "test/bag-of-words");
    assert_eq!(r["usage"]["prompt_tokens"], 8);
    assert_eq!(r["usage"]["total_tokens"], 8);
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let v: Vec<f32> = serde_json::from_value(d["embedding"].clone()).unwrap();
        assert_eq!(v, bag_of_words(texts[i]));
    }
    // base64: the same floats, little-endian.
    let r = post_ok(
        &c,
        &url,
        &json!({ "input": texts[0], "encoding_format": "base64" }),
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(v, bag_of_words(texts[0]));
    // Its own dimension is accepted.
    post_ok(&c, &url, &json!({ "input": "x", "dimensions": DIM })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_refuse_bad_input_clearly() {
    let s = rag_server(0);
    let c = client();
    let url = s.url("/v1/embeddings");
    for (body, status, param) in [
        (json!({ "input": [] }), 400, Some("input")),
        (json!({ "input": ["ok", ""] }), 400, Some("input")),
        (json!({ "input": [1, 2, 3] }), 400, Some("input")),
        (json!({ "input": 7 }), 400, Some("input")),
        (json!({}), 400, Some("input")),
        (
            json!({ "input": "x", "encoding_format": "hex" }),
            400,
            Some("encoding_format"),
        ),
        (
            json!({ "input": "x", "dimensions": 3 }),
            400,
            Some("dimensions"),
        ),
        (
            json!({ "input": "x", "model": "text-embedding-3-small" }),
            404,
            Some("model"),
        ),
    ] {
        let r = post(&c, &url, &body).await;
        assert_error(&r, status, param);
    }
    let too_many: Vec<&str> = vec!["x"; 2049];
    assert_error(
        &post(&c, &url, &json!({ "input": too_many })).await,
        400,
        Some("input"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_then_query_and_list() {
    let s = rag_server(0);
    let c = client();
    let r = add_docs(&c, &s, "kb").await;
    assert_eq!(r["object"], "rag.documents");
    assert_eq!(r["collection"], "kb");
    assert_eq!(r["created"], true);
    assert_eq!(r["documents"], 4);
    assert_eq!(add_docs(&c, &s, "kb").await["total_documents"], 8);
    let r = post_ok(
        &c,
        &s.url("/v1/rag/collections/kb/query"),
        &json!({ "query": "why does the sea rise with the moon", "k": 3 }),
    )
    .await;
    let hits = r["data"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["source"], "tides.md");
    assert!(hits[0]["text"].as_str().unwrap().starts_with("Tides"));
    assert!(hits[0]["score"].as_f64().unwrap() >= hits[2]["score"].as_f64().unwrap());
    let list: Value = read(c.get(s.url("/v1/rag/collections")).send().await.unwrap())
        .await
        .json();
    assert_eq!(list["data"][0]["name"], "kb");
    assert_eq!(list["data"][0]["documents"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_is_generated_from_the_retrieved_passages() {
    let s = rag_server(0);
    let c = client();
    add_docs(&c, &s, "kb").await;
    let question = "What does bread need to rise?";
    let r = post_ok(
        &c,
        &s.url("/v1/rag/answer"),
        &json!({ "collection": "kb", "question": question, "k": 2, "max_tokens": 12 }),
    )
    .await;
    assert_eq!(r["object"], "rag.answer");
    assert_eq!(r["model"], MODEL);
    let cites = r["citations"].as_array().unwrap();
    assert_eq!(cites.len(), 2);
    assert_eq!(cites[0]["index"], 1);
    assert_eq!(cites[0]["source"], "bread.md");
    for cite in cites {
        assert!(
            cite["cited"].is_boolean() && cite["text"].is_string(),
            "{cite}"
        );
    }
    // The same prompt through /v1/chat/completions gives the same greedy
    // answer: the model saw exactly these passages and this question.
    let passages: Vec<Passage> = cites
        .iter()
        .map(|c| Passage {
            id: c["id"].as_u64().unwrap(),
            score: c["score"].as_f64().unwrap() as f32,
            source: c["source"].as_str().unwrap().into(),
            start: 0,
            end: 0,
            text: c["text"].as_str().unwrap().into(),
        })
        .collect();
    let chat = post_ok(
        &c,
        &s.url("/v1/chat/completions"),
        &json!({
            "model": MODEL,
            "messages": [
                { "role": "system", "content": ANSWER_INSTRUCTIONS },
                { "role": "user", "content": sources_prompt(&passages, question) },
            ],
            "max_tokens": 12,
            "temperature": 0,
        }),
    )
    .await;
    assert_eq!(r["answer"], chat["choices"][0]["message"]["content"]);
    assert_eq!(r["usage"]["prompt_tokens"], chat["usage"]["prompt_tokens"]);
    assert_eq!(
        r["usage"]["completion_tokens"],
        chat["usage"]["completion_tokens"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_drops_sources_that_do_not_fit_the_context() {
    let s = rag_server(512);
    let c = client();
    let long = "word ".repeat(30);
    let docs: Vec<Value> = (0..4)
        .map(|i| json!({ "source": format!("d{i}"), "text": format!("{long} number {i}") }))
        .collect();
    post_ok(
        &c,
        &s.url("/v1/rag/collections/big/documents"),
        &json!({ "documents": docs }),
    )
    .await;
    let r = post_ok(
        &c,
        &s.url("/v1/rag/answer"),
        &json!({ "collection": "big", "question": "which number?", "k": 4, "max_tokens": 8 }),
    )
    .await;
    let n = r["citations"].as_array().unwrap().len();
    assert!((1..4).contains(&n), "{n} sources in a 512-token context");
    let used = r["usage"]["prompt_tokens"].as_u64().unwrap() + 8;
    assert!(used <= 512, "{used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_routes_refuse_bad_input_clearly() {
    let s = rag_server(0);
    let c = client();
    add_docs(&c, &s, "kb").await;
    let q = s.url("/v1/rag/collections/kb/query");
    for (url, body, status, param) in [
        (q.clone(), json!({ "query": "" }), 400, Some("query")),
        (q.clone(), json!({ "query": "x", "k": 0 }), 400, Some("k")),
        (q.clone(), json!({ "query": "x", "k": 101 }), 400, Some("k")),
        (q.clone(), json!({ "query": "x", "top": 3 }), 400, None),
        (
            s.url("/v1/rag/collections/nope/query"),
            json!({ "query": "x" }),
            404,
            Some("collection"),
        ),
        (
            s.url("/v1/rag/collections/kb/documents"),
            json!({ "documents": [] }),
            400,
            Some("documents"),
        ),
        (
            s.url("/v1/rag/collections/kb/documents"),
            json!({ "documents": [{ "text": " " }] }),
            400,
            Some("documents"),
        ),
        (
            s.url("/v1/rag/collections/kb/documents"),
            json!({ "documents": [{ "text": "a" }], "chunker": "odd" }),
            400,
            Some("chunker"),
        ),
        (
            s.url("/v1/rag/answer"),
            json!({ "collection": "kb", "question": "x", "stream": true }),
            400,
            Some("stream"),
        ),
        (
            s.url("/v1/rag/answer"),
            json!({ "collection": "kb", "question": " " }),
            400,
            Some("question"),
        ),
        (
            s.url("/v1/rag/answer"),
            json!({ "collection": "nope", "question": "x" }),
            404,
            Some("collection"),
        ),
        (
            s.url("/v1/rag/answer"),
            json!({ "collection": "kb", "question": "x", "model": "no-such-adapter" }),
            404,
            Some("model"),
        ),
        (
            s.url("/v1/rag/answer"),
            json!({ "collection": "kb", "question": "x", "temperature": -1 }),
            400,
            Some("temperature"),
        ),
    ] {
        let r = post(&c, &url, &body).await;
        let e = assert_error(&r, status, param);
        if param == Some("collection") {
            assert_eq!(e["error"]["code"], "collection_not_found");
        }
    }
    // Still serving.
    post_ok(&c, &q, &json!({ "query": "cats" })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retrieval_the_routes_say_how_to_enable_it() {
    let s = TestServer::default_server();
    let c = client();
    for (url, body) in [
        ("/v1/embeddings", json!({ "input": "x" })),
        ("/v1/rag/collections/kb/query", json!({ "query": "x" })),
        (
            "/v1/rag/answer",
            json!({ "collection": "kb", "question": "x" }),
        ),
    ] {
        let r = post(&c, &s.url(url), &body).await;
        let e = assert_error(&r, 404, None);
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--embedding-model"),
            "{e}"
        );
    }
}
