//! `sdlab serve --rate-limit R`: hld's GCRA limiter, as a tower layer, in
//! front of the `/v1` routes (`/health` and `/metrics` stay open). A request
//! over the limit gets OpenAI's 429 body (`rate_limit_exceeded`) with
//! `Retry-After` at once, never a queue.

use anyhow::{anyhow, bail, Result};
use axum::error_handling::HandleErrorLayer;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hld::layers::{BoxError, LayerError, RateLimitLayer};
use server::http::error::ApiError;
use server::http::AppState;
use std::sync::Arc;
use std::time::Duration;

type Api = Router<Arc<AppState>>;

/// What to wrap the `/v1` routes in: nothing without a rate, else a global
/// GCRA limit of `rate` requests per second with bursts of `burst`.
pub fn rate_limit(rate: Option<f64>, burst: u64) -> Result<impl FnOnce(Api) -> Api> {
    let layer = match rate {
        None => None,
        Some(r) if !(r.is_finite() && r > 0.0) => {
            bail!("--rate-limit takes a positive number of requests per second, not {r}")
        }
        Some(r) => Some(
            RateLimitLayer::new(burst, Duration::from_secs_f64(1.0 / r))
                .map_err(|e| anyhow!("--rate-limit {r} --rate-limit-burst {burst}: {e}"))?,
        ),
    };
    Ok(move |api: Api| match layer {
        None => api,
        Some(limit) => api.layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(refusal))
                .layer(limit),
        ),
    })
}

/// The limiter's refusal as the server's error response.
async fn refusal(err: BoxError) -> Response {
    match err.downcast_ref::<LayerError>() {
        Some(LayerError::RateLimited { retry_after }) => ApiError::RateLimited {
            retry_after_s: retry_after.as_secs_f64().ceil().max(1.0) as u64,
        }
        .into_response(),
        _ => ApiError::Internal(err.to_string()).into_response(),
    }
}
