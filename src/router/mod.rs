//! `sdlab router`: an OpenAI-compatible front over sdlab replicas, where the
//! hld patterns do real work.
//!
//! A request comes in, passes the API key and the per-key rate limit (GCRA,
//! `hld::layers::RateLimitLayer`), and, when it carries an
//! `Idempotency-Key`, the idempotency store (`hld::payments::store`): a
//! repeat with the same key and body gets the first answer, never a second
//! generation. Then the pool ([`pool`]) picks a replica by policy, health,
//! load and circuit breaker. A request that fails before producing output
//! (connection refused, a 5xx or 429, a replica that died before answering)
//! is retried on another replica after a full-jitter backoff
//! (`hld::retry_jitter`). A stream whose replica dies midway is continued on
//! another one from the exact tokens already sent ([`stream`]), so under
//! greedy decoding the client reads the text it would have read.
//!
//! The router keeps no model and no tokenizer: routing keys are the prompt's
//! opening bytes, and continuation uses the token ids the replicas return
//! (`return_token_ids`).

mod metrics;
pub mod pool;
mod proxy;
mod stream;

use anyhow::{anyhow, Result};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hld::circuit_breaker::BreakerConfig;
use hld::layers::{BoxError, LayerError, RateLimitLayer};
use hld::payments::IdempotencyStore;
pub use metrics::RouterMetrics;
use pool::{Policy, Pool};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `sdlab router` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// A replica's base URL (repeat the flag, or separate with commas).
    #[arg(
        long = "replica",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub replicas: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// How to pick a replica.
    #[arg(long, value_enum, default_value = "prefix-hash")]
    pub policy: Policy,
    /// Require `Authorization: Bearer KEY` on /v1 routes (or set SDLAB_API_KEY).
    #[arg(long, env = "SDLAB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests per second per API key (per client without one); over it:
    /// 429 with Retry-After. Off by default.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<f64>,
    /// Requests a key may send at once before the rate applies.
    #[arg(long, default_value_t = 10)]
    pub burst: u64,
    /// Seconds between health checks of every replica.
    #[arg(long, default_value_t = 1.0)]
    pub health_interval: f64,
    /// Seconds a request may spend finding a replica that answers (retries
    /// included) before the router gives up with 503.
    #[arg(long, default_value_t = 30.0)]
    pub retry_deadline: f64,
    /// Seconds a replica's breaker stays open before it is probed again.
    #[arg(long, default_value_t = 5.0)]
    pub breaker_open_s: f64,
}

/// Everything a handler needs.
pub struct RouterState {
    pub pool: Arc<Pool>,
    pub client: reqwest::Client,
    pub idempotency: IdempotencyStore<u64, proxy::Answer>,
    pub retry_deadline: Duration,
    pub api_key: Option<String>,
}

/// The router's own refusals, in OpenAI's error shape.
#[derive(Debug)]
pub enum RouterError {
    BadRequest(String),
    Unauthorized,
    RateLimited { retry_after_s: u64 },
    KeyReuse,
    KeyInFlight,
    NoReplica(String),
}

impl IntoResponse for RouterError {
    fn into_response(self) -> Response {
        let (status, kind, code, message) = match &self {
            Self::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                m.clone(),
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                Some("invalid_api_key"),
                "missing or incorrect API key; send `Authorization: Bearer <key>`".into(),
            ),
            Self::RateLimited { retry_after_s } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                format!("over the request rate limit; retry after {retry_after_s} s"),
            ),
            Self::KeyReuse => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                Some("idempotency_key_reused"),
                "this Idempotency-Key was first used with a different request body".into(),
            ),
            Self::KeyInFlight => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("idempotency_key_in_flight"),
                "a request with this Idempotency-Key is still running; retry later".into(),
            ),
            Self::NoReplica(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("no_replica_available"),
                m.clone(),
            ),
        };
        let body = serde_json::json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        });
        let mut resp = (status, Json(body)).into_response();
        let retry_after = match self {
            Self::RateLimited { retry_after_s } => Some(retry_after_s),
            Self::KeyInFlight | Self::NoReplica(_) => Some(1),
            _ => None,
        };
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Builds the pool and the app.
pub fn build(args: &RouterArgs) -> Result<(Router, Arc<RouterState>)> {
    let metrics = Arc::new(RouterMetrics::new(&args.replicas));
    let breaker = BreakerConfig {
        window: 10,
        min_calls: 3,
        failure_rate: 0.5,
        open_timeout: Duration::from_secs_f64(args.breaker_open_s.max(0.01)),
        half_open_probes: 1,
    };
    let pool = Pool::new(&args.replicas, args.policy, breaker, metrics).map_err(|e| anyhow!(e))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()?;
    let state = Arc::new(RouterState {
        pool: Arc::new(pool),
        client,
        idempotency: IdempotencyStore::new(),
        retry_deadline: Duration::from_secs_f64(args.retry_deadline.max(0.0)),
        api_key: args.api_key.clone(),
    });
    let mut v1 = Router::new()
        .route("/v1/completions", post(proxy::generate))
        .route("/v1/chat/completions", post(proxy::generate))
        .route("/v1/models", get(proxy::models))
        .route("/v1/load_lora_adapter", post(proxy::broadcast))
        .route("/v1/unload_lora_adapter", post(proxy::broadcast));
    if let Some(rate) = args.rate_limit {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(anyhow!("--rate-limit takes a positive rate, not {rate}"));
        }
        let limit = RateLimitLayer::with(
            args.burst,
            Duration::from_secs_f64(1.0 / rate),
            Arc::new(hld::circuit_breaker::MonotonicClock::new()),
            rate_key,
        )
        .map_err(|e| anyhow!("--rate-limit {rate} --burst {}: {e}", args.burst))?;
        let metrics = state.pool.metrics.clone();
        v1 = v1.layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |err: BoxError| {
                    let metrics = metrics.clone();
                    async move { refusal(&metrics, err) }
                }))
                .layer(limit),
        );
    }
    let v1 = v1.layer(middleware::from_fn_with_state(
        state.clone(),
        require_api_key,
    ));
    let app = Router::new()
        .merge(v1)
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics_page))
        .with_state(state.clone());
    Ok((app, state))
}

/// The rate-limit key: the bearer token, or one shared key without one.
fn rate_key(req: &Request) -> Vec<u8> {
    req.headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

fn refusal(metrics: &RouterMetrics, err: BoxError) -> Response {
    match err.downcast_ref::<LayerError>() {
        Some(LayerError::RateLimited { retry_after }) => {
            metrics.shed.inc();
            RouterError::RateLimited {
                retry_after_s: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            }
            .into_response()
        }
        _ => RouterError::NoReplica(err.to_string()).into_response(),
    }
}

async fn require_api_key(State(st): State<Arc<RouterState>>, req: Request, next: Next) -> Response {
    match &st.api_key {
        Some(key) if !server::http::bearer_matches(req.headers(), key) => {
            RouterError::Unauthorized.into_response()
        }
        _ => next.run(req).await,
    }
}

async fn metrics_page(State(st): State<Arc<RouterState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.pool.metrics.render(&st.pool),
    )
}

/// Runs the router until Ctrl-C or SIGTERM.
pub async fn serve(
    args: RouterArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (app, state) = build(&args)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| anyhow!("binding {}:{}: {e}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    let interval = Duration::from_secs_f64(args.health_interval.max(0.05));
    let health = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                state
                    .pool
                    .check_health(&state.client, interval.max(Duration::from_millis(500)))
                    .await;
                tokio::time::sleep(interval).await;
            }
        })
    };
    let policy = clap::ValueEnum::to_possible_value(&args.policy)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    println!(
        "sdlab router on http://{addr} over {} replicas ({policy}): {}",
        state.pool.replicas.len(),
        args.replicas.join(", ")
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    health.abort();
    served.map_err(|e| anyhow!("serving: {e}"))
}

/// `sdlab router`: serves until Ctrl-C or SIGTERM.
pub fn run(args: RouterArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(args, shutdown_signal()))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
