//! The OpenAI-compatible HTTP API on axum.
//!
//! Routes: `GET /health`, `GET /v1/models`, `POST /v1/completions`,
//! `POST /v1/chat/completions`, `GET /metrics`, and vLLM's
//! `POST /v1/load_lora_adapter` and `POST /v1/unload_lora_adapter`. A
//! request picks a LoRA adapter by naming it in `model`. With a
//! [`Retrieval`] (see [`AppState::with_extensions`]) also `POST
//! /v1/embeddings` and the `/v1/rag/...` routes of [`rag`]; with a
//! [`Recommender`], `POST /v1/recommend`. Handlers parse and validate,
//! turn the request into engine requests, and hand the rest to [`generate`].
//! Every error goes through [`error::ApiError`], the one place that picks a
//! status and writes OpenAI's error body.

pub mod error;
mod generate;
pub mod metrics;
pub mod metrics_compat;
pub mod openai;
pub mod rag;
mod recommend;

use crate::engine::Engine;
use crate::lora::{AdapterLease, AdapterRegistry};
use crate::retrieval::{Recommender, Retrieval};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use generate::{Endpoint, Job};
use models::ChatTemplate;
use openai::{ChatRequest, CompletionRequest, PromptInput};
use std::future::Future;
use std::sync::Arc;
use tracing::Instrument;

/// Server-level settings (the engine's own are in its config).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub served_model_name: String,
    pub api_key: Option<String>,
    /// Most requests waiting for a batch seat before new ones get 429.
    pub max_queue: usize,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Also export vLLM's metric names (`--metrics-compat vllm`).
    pub metrics_compat_vllm: bool,
}

/// What the server does besides generating, each behind a trait the binary
/// implements (the server depends on neither `rag` nor `recsys`).
#[derive(Default, Clone)]
pub struct Extensions {
    /// `/v1/embeddings` and `/v1/rag/...`.
    pub retrieval: Option<Arc<dyn Retrieval>>,
    /// `/v1/recommend`.
    pub recommender: Option<Arc<dyn Recommender>>,
}

pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: ServerConfig,
    pub loras: Arc<AdapterRegistry>,
    pub metrics: metrics::Metrics,
    /// Embeddings and collections, when the server has an embedding model.
    pub retrieval: Option<Arc<dyn Retrieval>>,
    /// Recommendations, when the server has a recommender.
    pub recommender: Option<Arc<dyn Recommender>>,
    template: Option<ChatTemplate>,
    created: u64,
}

impl AppState {
    pub fn new(
        engine: Engine,
        config: ServerConfig,
        loras: AdapterRegistry,
    ) -> Result<Arc<Self>, String> {
        Self::with_extensions(engine, config, loras, Extensions::default())
    }

    /// A server that also embeds, retrieves or recommends.
    pub fn with_extensions(
        engine: Engine,
        config: ServerConfig,
        loras: AdapterRegistry,
        extensions: Extensions,
    ) -> Result<Arc<Self>, String> {
        let tok = engine.tokenizer();
        let template = match &tok.chat_template {
            Some(src) => Some(
                ChatTemplate::new(src, tok.bos_token(), tok.eos_token())
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Arc::new(Self {
            engine: Arc::new(engine),
            config,
            loras: Arc::new(loras),
            metrics: metrics::Metrics::new(),
            retrieval: extensions.retrieval,
            recommender: extensions.recommender,
            template,
            created,
        }))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, |api| api)
}

/// The router, with `wrap_api` applied to the `/v1` routes (not to
/// `/health` or `/metrics`): the CLI stacks tower layers there, such as a
/// rate limit.
pub fn router_with(
    state: Arc<AppState>,
    wrap_api: impl FnOnce(Router<Arc<AppState>>) -> Router<Arc<AppState>>,
) -> Router {
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/load_lora_adapter", post(load_lora_adapter))
        .route("/v1/unload_lora_adapter", post(unload_lora_adapter))
        .route("/v1/embeddings", post(rag::embeddings))
        .route("/v1/rag/collections", get(rag::list_collections))
        .route(
            "/v1/rag/collections/{name}/documents",
            post(rag::add_documents),
        )
        .route("/v1/rag/collections/{name}/query", post(rag::query))
        .route("/v1/rag/answer", post(rag::answer))
        .route("/v1/recommend", post(recommend::recommend))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    let api = wrap_api(api);
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_page))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(state)
}

/// Serves until `shutdown` resolves; then stops accepting, ends the requests
/// in flight (streams get their final chunk, `finish_reason: "abort"`, and
/// `data: [DONE]`) and returns once every connection has closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, |api| api, shutdown).await
}

/// [`serve`] with `wrap_api` applied to the `/v1` routes ([`router_with`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    wrap_api: impl FnOnce(Router<Arc<AppState>>) -> Router<Arc<AppState>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let shutdown = async move {
        shutdown.await;
        engine.abort_all();
    };
    axum::serve(listener, router_with(state, wrap_api))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: no new requests; ending the ones in flight");
}

/// Whether `headers` carry `Authorization: Bearer <key>` (also used by
/// `sdlab router`).
pub fn bearer_matches(headers: &axum::http::HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(key)
}

async fn require_api_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match &st.config.api_key {
        Some(key) if !bearer_matches(req.headers(), key) => ApiError::Unauthorized.into_response(),
        _ => next.run(req).await,
    }
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound { message: "no such route; see /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/rag/..., /v1/recommend, /health, /metrics".into(), param: None }
}

async fn list_models(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let base = &st.config.served_model_name;
    let max_model_len = st.engine.config().max_model_len;
    let mut data = vec![serde_json::json!({
        "id": base,
        "object": "model",
        "created": st.created,
        "owned_by": "sdlab",
        "root": base,
        "parent": null,
        "max_model_len": max_model_len,
    })];
    for a in st.loras.list() {
        data.push(serde_json::json!({
            "id": a.name,
            "object": "model",
            "created": st.created,
            "owned_by": "sdlab",
            "root": a.path,
            "parent": base,
            "max_model_len": max_model_len,
            "lora": a,
        }));
    }
    Json(serde_json::json!({ "object": "list", "data": data }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadLoraRequest {
    lora_name: String,
    lora_path: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnloadLoraRequest {
    lora_name: String,
    #[serde(default)]
    #[allow(dead_code)]
    lora_int_id: Option<u64>,
}

/// Reads and checks the adapter on the blocking pool; the registry only
/// changes once it is known good.
async fn load_lora_adapter(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body_bytes(&st, body)?;
        let req: LoadLoraRequest = openai::parse(&body)?;
        let loras = st.loras.clone();
        tokio::task::spawn_blocking(move || loras.load(&req.lora_name, &req.lora_path))
            .await
            .map_err(|e| ApiError::Internal(format!("adapter load task failed: {e}")))?
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(info) => Json(
            serde_json::json!({ "object": "lora_adapter", "status": "loaded", "adapter": info }),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn unload_lora_adapter(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = body_bytes(&st, body)
        .and_then(|b| openai::parse::<UnloadLoraRequest>(&b))
        .and_then(|req| {
            st.loras.unload(&req.lora_name).map_err(ApiError::from)?;
            Ok(req.lora_name)
        });
    match result {
        Ok(name) => Json(
            serde_json::json!({ "object": "lora_adapter", "status": "unloaded", "name": name }),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_page(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    st.metrics.set_lora_loaded(st.loras.resident_count());
    let stats = st.engine.stats();
    let mut text = st.metrics.render(&stats);
    if st.config.metrics_compat_vllm {
        let adapters = st.loras.list();
        let (prompt_tokens, generation_tokens) = st.metrics.token_totals();
        let inputs = metrics_compat::CompatInputs {
            model_name: &st.config.served_model_name,
            adapters: &adapters,
            max_loras: st.loras.max_loras(),
            block_size: st.engine.config().block_size,
            prompt_tokens,
            generation_tokens,
            now_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        text = metrics_compat::append(text, &metrics_compat::vllm_text(&stats, &inputs));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

fn body_bytes(st: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: st.config.body_limit,
            }
        } else {
            ApiError::bad(
                format!("could not read the request body: {}", r.body_text()),
                None,
            )
        }
    })
}

/// The base model (`None`) or the adapter a request's `model` names; an
/// adapter not in memory is read from disk on the blocking pool.
async fn resolve_model(
    st: &Arc<AppState>,
    model: &Option<String>,
) -> Result<Option<AdapterLease>, ApiError> {
    let name = match model {
        Some(m) if m != &st.config.served_model_name => m.clone(),
        _ => return Ok(None),
    };
    let loras = st.loras.clone();
    let adapter = tokio::task::spawn_blocking(move || loras.acquire(&name))
        .await
        .map_err(|e| ApiError::Internal(format!("adapter load task failed: {e}")))?
        .map_err(|e| match ApiError::from(e) {
            ApiError::NotFound { message, .. } => ApiError::NotFound {
                message,
                param: Some("model".into()),
            },
            other => other,
        })?;
    st.metrics.lora_request(&adapter.name);
    Ok(Some(adapter))
}

/// A parsed, validated request, ready to run.
struct Prepared {
    job: Job,
    stream: bool,
    include_usage: bool,
}

/// Runs a request inside its tracing span (one per request, with its id),
/// whatever the endpoint; errors become responses here.
async fn respond(
    st: Arc<AppState>,
    id: String,
    endpoint: &'static str,
    prepared: impl Future<Output = Result<Prepared, ApiError>>,
) -> Response {
    let span = tracing::info_span!("request", id = %id, endpoint);
    async move {
        match prepared.await {
            Ok(p) => p.job.run(st, p.stream, p.include_usage).await,
            Err(e) => {
                tracing::info!(status = e.status().as_u16(), "rejected");
                e.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = generate::next_request_id("cmpl");
    respond(
        st.clone(),
        id.clone(),
        "completions",
        prepare_completion(st, id, body),
    )
    .await
}

async fn prepare_completion(
    st: Arc<AppState>,
    id: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<Prepared, ApiError> {
    let body = body_bytes(&st, body)?;
    let req: CompletionRequest = openai::parse(&body)?;
    let adapter = resolve_model(&st, &req.model).await?;
    if req.echo.unwrap_or(false) {
        return Err(ApiError::bad("`echo` is not supported", "echo"));
    }
    let prompts: Vec<Vec<u32>> = match &req.prompt {
        PromptInput::Text(t) => tokenize(&st, vec![t.clone()], "prompt").await?,
        PromptInput::Texts(ts) => tokenize(&st, ts.clone(), "prompt").await?,
        PromptInput::Tokens(ids) => vec![ids.clone()],
        PromptInput::TokenBatches(b) => b.clone(),
    };
    let (params, n) = req.knobs().sampling()?;
    let job = Job::new(
        &st,
        id,
        Endpoint::Completion,
        prompts,
        "prompt",
        params,
        (req.max_tokens.or(Some(16)), "max_tokens"),
        n,
    )?
    .with_adapter(adapter)
    .with_token_ids(req.return_token_ids.unwrap_or(false))
    .with_resume(req.resume_tokens)?;
    Ok(Prepared {
        job,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    })
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = generate::next_request_id("chatcmpl");
    respond(st.clone(), id.clone(), "chat", prepare_chat(st, id, body)).await
}

async fn prepare_chat(
    st: Arc<AppState>,
    id: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<Prepared, ApiError> {
    let body = body_bytes(&st, body)?;
    let req: ChatRequest = openai::parse(&body)?;
    let adapter = resolve_model(&st, &req.model).await?;
    let Some(template) = &st.template else {
        return Err(ApiError::bad(
            "this model has no chat template; use /v1/completions",
            "messages",
        ));
    };
    let text = template
        .render(&req.messages()?, true)
        .map_err(|e| ApiError::bad(e.to_string(), "messages"))?;
    let prompts = tokenize(&st, vec![text], "messages").await?;
    let knobs = req.knobs()?;
    let (params, n) = knobs.sampling()?;
    let max_param = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let job = Job::new(
        &st,
        id,
        Endpoint::Chat,
        prompts,
        "messages",
        params,
        (knobs.max_tokens, max_param),
        n,
    )?
    .with_adapter(adapter)
    .with_token_ids(req.return_token_ids.unwrap_or(false));
    Ok(Prepared {
        job,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// Tokenizes on the blocking pool: a megabyte of text takes a noticeable
/// fraction of a second, which must not stall the async workers.
async fn tokenize(
    st: &Arc<AppState>,
    texts: Vec<String>,
    param: &'static str,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let tok = st.engine.tokenizer().clone();
    tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| tok.encode(t))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenizer task failed: {e}")))?
    .map_err(|e| ApiError::bad(e.to_string(), param))
}
