//! `POST /v1/recommend`: `{"user_id": U, "k"?}` or `{"history": [movie
//! ids], "k"?}` returns the `k` best movies the user has not watched, with
//! titles and scores, from the server's [`Recommender`].

use super::error::ApiError;
use super::{body_bytes, openai, AppState};
use crate::retrieval::{RecommendFor, Recommender, RetrievalError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Most items one request may ask for.
pub const MAX_K: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendRequest {
    user_id: Option<u32>,
    history: Option<Vec<u32>>,
    k: Option<usize>,
}

fn recommender(st: &AppState) -> Result<Arc<dyn Recommender>, ApiError> {
    st.recommender.clone().ok_or_else(|| ApiError::NotFound {
        message: "recommendations are not enabled on this server (train one with `sdlab recsys train`, then start `sdlab serve`; see --recsys-model)".into(),
        param: None,
    })
}

pub async fn recommend(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match recommend_inner(st, body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn recommend_inner(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let rec = recommender(&st)?;
    let req: RecommendRequest = openai::parse(&body_bytes(&st, body)?)?;
    let (who, param) = match (req.user_id, req.history) {
        (Some(u), None) => (RecommendFor::User(u), "user_id"),
        (None, Some(h)) if !h.is_empty() => (RecommendFor::History(h), "history"),
        (None, Some(_)) => return Err(ApiError::bad("`history` must not be empty", "history")),
        _ => {
            return Err(ApiError::bad(
                "give exactly one of `user_id` and `history`",
                None,
            ))
        }
    };
    let k = match req.k.unwrap_or(10) {
        k @ 1..=MAX_K => k,
        k => {
            return Err(ApiError::bad(
                format!("`k` must be between 1 and {MAX_K}, got {k}"),
                "k",
            ))
        }
    };
    let query = who.clone();
    let r = rec.clone();
    let items = tokio::task::spawn_blocking(move || r.recommend(&query, k))
        .await
        .map_err(|e| ApiError::Internal(format!("recommender task failed: {e}")))?
        .map_err(|e| match e {
            RetrievalError::NotFound(message) => ApiError::NotFound {
                message,
                param: Some(param.into()),
            },
            RetrievalError::Invalid { message, param: p } => ApiError::BadRequest {
                message,
                param: Some(p.unwrap_or(param).into()),
            },
            RetrievalError::Internal(m) => ApiError::Internal(m),
        })?;
    Ok(json!({
        "object": "list",
        "model": rec.model_name(),
        "data": items,
    }))
}
