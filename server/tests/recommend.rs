//! `POST /v1/recommend` over real HTTP with a fixed [`Recommender`]: the
//! response shape, both ways of naming the user, and clear errors.

mod common;

use common::*;
use serde_json::json;
use server::http::Extensions;
use server::retrieval::{RecommendFor, RecommendedItem, Recommender, RetrievalError};
use std::sync::Arc;

/// Users 1 and 2 exist; movies 1..=50 exist; a user gets the movies after
/// their id, a history the movies after its last one.
struct Fixed;

impl Recommender for Fixed {
    fn model_name(&self) -> &str {
        "fixed"
    }
    fn recommend(
        &self,
        who: &RecommendFor,
        k: usize,
    ) -> Result<Vec<RecommendedItem>, RetrievalError> {
        let after = match who {
            RecommendFor::User(u) if (1..=2).contains(u) => *u,
            RecommendFor::User(u) => return Err(RetrievalError::NotFound(format!("no user {u}"))),
            RecommendFor::History(h) => {
                if let Some(m) = h.iter().find(|&&m| m == 0 || m > 50) {
                    return Err(RetrievalError::NotFound(format!("no movie {m}")));
                }
                *h.last().unwrap()
            }
        };
        Ok((after + 1..=50)
            .take(k)
            .enumerate()
            .map(|(i, m)| RecommendedItem {
                movie_id: m,
                title: format!("Movie {m}"),
                year: Some(2000),
                genres: vec!["Drama".into()],
                score: 1.0 - i as f32 / 100.0,
            })
            .collect())
    }
}

fn server() -> TestServer {
    TestServer::start_with_extensions(
        server_config(),
        engine_options(),
        Extensions {
            retrieval: None,
            recommender: Some(Arc::new(Fixed)),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommends_for_a_user_or_a_history() {
    let s = server();
    let c = client();
    let url = s.url("/v1/recommend");
    let r = post_ok(&c, &url, &json!({ "user_id": 2, "k": 3 })).await;
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], "fixed");
    let ids: Vec<u64> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["movie_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3, 4, 5]);
    assert_eq!(r["data"][0]["title"], "Movie 3");
    assert_eq!(r["data"][0]["genres"][0], "Drama");
    let r = post_ok(&c, &url, &json!({ "history": [7, 9] })).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 10, "k defaults to 10");
    assert_eq!(r["data"][0]["movie_id"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_clear() {
    let s = server();
    let c = client();
    let url = s.url("/v1/recommend");
    for (body, status, param) in [
        (json!({ "user_id": 9 }), 404, Some("user_id")),
        (json!({ "history": [3, 999] }), 404, Some("history")),
        (json!({ "history": [] }), 400, Some("history")),
        (json!({}), 400, None),
        (json!({ "user_id": 1, "history": [3] }), 400, None),
        (json!({ "user_id": 1, "k": 0 }), 400, Some("k")),
        (json!({ "user_id": 1, "k": 101 }), 400, Some("k")),
        (json!({ "user_id": -1 }), 400, Some("user_id")),
        (json!({ "user": 1 }), 400, None),
    ] {
        let r = post(&c, &url, &body).await;
        assert_error(&r, status, param);
    }
    // Without a recommender the route says how to get one.
    let plain = TestServer::default_server();
    let r = post(&c, &plain.url("/v1/recommend"), &json!({ "user_id": 1 })).await;
    let e = assert_error(&r, 404, None);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sdlab recsys train"),
        "{e}"
    );
}
