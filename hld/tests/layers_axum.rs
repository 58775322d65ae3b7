//! The `hld::layers` on a real axum server (HTTP on 127.0.0.1:0, reqwest as
//! the client): the limiter answers 429 with `Retry-After`, an open breaker
//! 503, a handler's call to a flaky dependency is retried until it
//! succeeds, and a payment with an idempotency key is replayed, not charged
//! twice. Time is a `ManualClock` and the retry sleep returns at once, so
//! nothing here waits.

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hld::circuit_breaker::BreakerConfig;
use hld::layers::{
    layer_error, status_of, AnyError, BoxError, CircuitBreakerLayer, Global, IdempotencyLayer,
    JitterRetry, LayerError, ManualClock, RateLimitLayer, Sleep,
};
use hld::retry_jitter::Strategy;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

/// Maps a layer's error to its HTTP status, with `Retry-After` (whole
/// seconds, rounded up) when the layer knows one. This is the one place a
/// server turns `LayerError` into HTTP.
async fn to_http(err: BoxError) -> Response {
    let status =
        StatusCode::from_u16(status_of(err.as_ref())).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Some(after) = layer_error(&err).and_then(LayerError::retry_after) {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.insert("retry-after", secs.into());
    }
    (status, headers, err.to_string()).into_response()
}

#[derive(serde::Deserialize, serde::Serialize, Clone, Debug, PartialEq)]
struct Charge {
    id: u32,
    amount: u32,
}

type ChargeCmd = (Option<String>, u32);

#[derive(Clone)]
struct App {
    /// Whether the `/flaky` dependency is down.
    down: Arc<AtomicBool>,
    /// Calls the flaky dependency behind `/retried` has had.
    dependency_calls: Arc<AtomicU32>,
    retry: JitterRetry<AnyError>,
    /// The payment service behind `/charge`, idempotency layer included.
    payments: BoxCloneSyncService<ChargeCmd, Charge, BoxError>,
    charges: Arc<AtomicU32>,
}

async fn flaky(State(app): State<App>) -> StatusCode {
    if app.down.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Calls a dependency that fails its first two calls, through tower's
/// `RetryLayer` with the jitter policy.
async fn retried(State(app): State<App>) -> Result<String, Response> {
    let calls = app.dependency_calls.clone();
    let dependency = service_fn(move |x: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Err(BoxError::from("dependency busy"))
            } else {
                Ok(x * 2)
            }
        }
    });
    let client = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(app.retry.clone()))
        .service(dependency);
    match client.oneshot(21).await {
        Ok(v) => Ok(v.to_string()),
        Err(e) => Err(to_http(e).await),
    }
}

#[derive(serde::Deserialize)]
struct ChargeBody {
    amount: u32,
}

async fn charge(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<ChargeBody>,
) -> Result<Json<Charge>, Response> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    match app.payments.clone().oneshot((key, body.amount)).await {
        Ok(c) => Ok(Json(c)),
        Err(e) => Err(to_http(e).await),
    }
}

async fn serve(clock: Arc<ManualClock>) -> (String, App) {
    let charges = Arc::new(AtomicU32::new(0));
    let counter = charges.clone();
    let ledger = service_fn(move |(_, amount): ChargeCmd| {
        let id = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, BoxError>(Charge { id, amount }) }
    });
    let idempotent = IdempotencyLayer::new(|c: &ChargeCmd| c.0.clone(), |c: &ChargeCmd| c.1);
    let no_wait: Sleep = Arc::new(|_| Box::pin(std::future::ready(())));
    let app = App {
        down: Arc::default(),
        dependency_calls: Arc::default(),
        retry: JitterRetry::with(
            Strategy::Decorrelated,
            Duration::from_millis(50),
            Duration::from_secs(2),
            4,
            1,
            no_wait,
            AnyError,
        )
        .unwrap(),
        payments: BoxCloneSyncService::new(idempotent.layer(ledger)),
        charges,
    };
    let limiter = RateLimitLayer::with(2, Duration::from_secs(10), clock.clone(), Global).unwrap();
    let breaker_cfg = BreakerConfig {
        window: 2,
        min_calls: 2,
        failure_rate: 1.0,
        open_timeout: Duration::from_secs(30),
        half_open_probes: 1,
    };
    let server_errors = |r: Result<&Response, &Infallible>| match r {
        Ok(resp) if resp.status().is_server_error() => hld::circuit_breaker::Outcome::Failure,
        _ => hld::circuit_breaker::Outcome::Success,
    };
    let breaker = CircuitBreakerLayer::with(breaker_cfg, clock, server_errors).unwrap();
    let router = Router::new()
        .route(
            "/limited",
            get(|| async { "ok" }).route_layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(to_http))
                    .layer(limiter),
            ),
        )
        .route(
            "/flaky",
            get(flaky).route_layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(to_http))
                    .layer(breaker),
            ),
        )
        .route("/retried", get(retried))
        .route("/charge", post(charge))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), app)
}

#[tokio::test]
async fn layers_behave_over_http() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let (base, app) = serve(clock.clone()).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    // Rate limit: a burst of 2, then 429 with Retry-After, then refilled.
    assert_eq!(get("/limited").await.unwrap().status(), 200);
    assert_eq!(get("/limited").await.unwrap().status(), 200);
    let r = get("/limited").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "10");
    clock.advance(Duration::from_secs(10));
    assert_eq!(get("/limited").await.unwrap().status(), 200);

    // Breaker: two 500s trip it; then 503 without calling the handler.
    app.down.store(true, Ordering::SeqCst);
    assert_eq!(get("/flaky").await.unwrap().status(), 500);
    assert_eq!(get("/flaky").await.unwrap().status(), 500);
    app.down.store(false, Ordering::SeqCst);
    let r = get("/flaky").await.unwrap();
    assert_eq!(
        r.status(),
        503,
        "open breaker short-circuits a healthy dependency too"
    );
    assert_eq!(r.headers()["retry-after"], "30");
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        get("/flaky").await.unwrap().status(),
        200,
        "half-open probe"
    );
    assert_eq!(get("/flaky").await.unwrap().status(), 200, "closed again");

    // Retry: the dependency fails twice, the third attempt answers.
    let r = get("/retried").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "42");
    assert_eq!(app.dependency_calls.load(Ordering::SeqCst), 3);

    // Idempotency: the replay returns the first charge; new parameters
    // under the same key are 422; no second charge.
    let pay = |key: &str, amount: u32| {
        http.post(format!("{base}/charge"))
            .header("idempotency-key", key)
            .json(&serde_json::json!({ "amount": amount }))
            .send()
    };
    let first: Charge = pay("order-1", 2000).await.unwrap().json().await.unwrap();
    let again = pay("order-1", 2000).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Charge>().await.unwrap(), first);
    assert_eq!(pay("order-1", 9999).await.unwrap().status(), 422);
    assert_eq!(app.charges.load(Ordering::SeqCst), 1);
    let other: Charge = pay("order-2", 2000).await.unwrap().json().await.unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(app.charges.load(Ordering::SeqCst), 2);
}
