//! The request path: idempotency, choosing a replica, retries with full
//! jitter, and the non-streaming forward. Streams go on in [`super::stream`].

use super::pool::{Pick, Replica};
use super::{RouterError, RouterState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hld::payments::Claim;
use hld::retry_jitter::{Backoff, Strategy};
use serde_json::Value;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prompt bytes that make the routing key (about 64 tokens: four KV blocks).
const KEY_BYTES: usize = 256;

/// The routing key: the model (or adapter) name and the prompt's opening
/// bytes, so requests sharing a prefix share a key.
pub fn routing_key(body: &Value) -> Vec<u8> {
    let mut key = body["model"].as_str().unwrap_or("").as_bytes().to_vec();
    key.push(0);
    let prompt = match (&body["prompt"], &body["messages"]) {
        (Value::String(s), _) => s.clone(),
        (Value::Null, Value::Null) => String::new(),
        (Value::Null, m) => m.to_string(),
        (p, _) => p.to_string(),
    };
    let mut end = prompt.len().min(KEY_BYTES);
    while !prompt.is_char_boundary(end) {
        end -= 1;
    }
    key.extend_from_slice(&prompt.as_bytes()[..end]);
    key
}

/// An upstream answer that the router passes on (and keeps for idempotent
/// replays).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl Answer {
    pub fn into_response(self) -> Response {
        let mut resp = (self.status, self.body).into_response();
        if let Some(ct) = self.content_type {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        resp
    }
}

/// Whether a replica's status means "try another one".
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Waits with full jitter before the next try, or says the deadline passed.
pub async fn back_off(backoff: &mut Backoff, deadline: Instant) -> bool {
    let delay = backoff.next_delay(&mut rand::rng());
    if Instant::now() + delay >= deadline {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}

pub fn new_backoff() -> Backoff {
    Backoff::new(
        Strategy::Full,
        Duration::from_millis(20),
        Duration::from_millis(1000),
    )
    .expect("valid backoff bounds")
}

/// `/v1/completions` and `/v1/chat/completions`.
pub async fn generate(
    State(st): State<Arc<RouterState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return RouterError::BadRequest("the body must be a JSON object".into()).into_response()
        }
        Err(e) => {
            return RouterError::BadRequest(format!("the body is not valid JSON: {e}"))
                .into_response()
        }
    };
    let path = uri.path().to_string();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{path} {k}"));
    let fingerprint = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    };
    if let Some(k) = &key {
        match st.idempotency.claim(k, &fingerprint, None).0 {
            Claim::Run => {}
            Claim::Replay(stored) => {
                st.pool.metrics.replays.inc();
                let mut resp = stored.into_response();
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return resp;
            }
            Claim::KeyReuse => return RouterError::KeyReuse.into_response(),
            Claim::InFlight | Claim::TimedOut => return RouterError::KeyInFlight.into_response(),
        }
    }
    if req["stream"].as_bool().unwrap_or(false) {
        return super::stream::start(st, path, req, key).await;
    }
    let result = forward(&st, &path, &req).await;
    if let Some(k) = &key {
        match &result {
            Ok(a) if a.status.is_success() => st.idempotency.finish(k, a.clone()),
            _ => st.idempotency.release(k),
        }
    }
    match result {
        Ok(a) => a.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Sends the body `make(replica)` builds (None: nothing left to generate)
/// to replicas not in `avoid` until one answers 2xx: each failure (refused,
/// 5xx, 429) moves to a replica not yet tried, after a full-jitter pause;
/// when all were tried the round starts again, until the retry deadline.
/// `Err(Ok(answer))` is an answer to pass on (non-retryable, or the last
/// one at the deadline), `Err(Err(_))` no answer at all.
pub async fn connect(
    st: &Arc<RouterState>,
    path: &str,
    key: &[u8],
    avoid: &[usize],
    make: impl Fn(&Replica) -> Option<Value>,
) -> Result<(reqwest::Response, Pick), Result<Answer, RouterError>> {
    let deadline = Instant::now() + st.retry_deadline;
    let mut backoff = new_backoff();
    let mut tried = avoid.to_vec();
    let mut attempts = 0;
    let mut last: Option<Answer> = None;
    loop {
        let Some(pick) = st.pool.pick(key, &tried) else {
            tried.clear();
            if !back_off(&mut backoff, deadline).await {
                st.pool.metrics.shed.inc();
                return Err(match last {
                    Some(answer) => Ok(answer),
                    None => Err(RouterError::NoReplica(
                        "no replica answered before the retry deadline".into(),
                    )),
                });
            }
            continue;
        };
        if attempts > 0 {
            st.pool.metrics.retries.inc();
        }
        attempts += 1;
        tried.push(pick.index);
        let Some(body) = make(pick.replica()) else {
            pick.done(true);
            return Err(Err(RouterError::BadRequest(
                "nothing left to generate".into(),
            )));
        };
        let url = format!("{}{path}", pick.replica().url);
        match st.client.post(&url).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => return Ok((resp, pick)),
            Ok(resp) => {
                let status = resp.status();
                let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
                let bytes = resp.bytes().await.unwrap_or_default();
                pick.done(!status.is_server_error());
                let answer = Answer {
                    status,
                    content_type,
                    body: bytes,
                };
                if !retryable(status) {
                    return Err(Ok(answer));
                }
                last = Some(answer);
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "replica unreachable; trying another");
                pick.mark_down();
                pick.done(false);
            }
        }
    }
}

/// The non-streaming forward: [`connect`], then the whole body. A replica
/// that dies while sending its answer is marked down and the request goes
/// to another one (the client has seen nothing yet).
pub async fn forward(
    st: &Arc<RouterState>,
    path: &str,
    body: &Value,
) -> Result<Answer, RouterError> {
    let key = routing_key(body);
    let mut avoid = Vec::new();
    for _ in 0..=2 * st.pool.replicas.len() {
        let (resp, pick) = match connect(st, path, &key, &avoid, |_| Some(body.clone())).await {
            Ok(ok) => ok,
            Err(Ok(answer)) => return Ok(answer),
            Err(Err(e)) => return Err(e),
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        match resp.bytes().await {
            Ok(body) => {
                pick.done(true);
                return Ok(Answer {
                    status,
                    content_type,
                    body,
                });
            }
            Err(e) => {
                tracing::warn!(replica = %pick.replica().url, error = %e, "replica failed mid-answer; trying another");
                pick.mark_down();
                avoid = vec![pick.index];
                pick.done(false);
                st.pool.metrics.retries.inc();
            }
        }
    }
    Err(RouterError::NoReplica(
        "replicas kept failing mid-answer".into(),
    ))
}

/// `GET /v1/models`, from any replica that answers.
pub async fn models(State(st): State<Arc<RouterState>>) -> Response {
    let deadline = Instant::now() + st.retry_deadline;
    let mut backoff = new_backoff();
    let mut tried = Vec::new();
    loop {
        if let Some(pick) = st.pool.pick(b"", &tried) {
            tried.push(pick.index);
            let url = format!("{}/v1/models", pick.replica().url);
            if let Ok(resp) = st.client.get(&url).send().await {
                let status = resp.status();
                let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
                if let Ok(body) = resp.bytes().await {
                    pick.done(!status.is_server_error());
                    if !retryable(status) {
                        return Answer {
                            status,
                            content_type: ct,
                            body,
                        }
                        .into_response();
                    }
                    continue;
                }
            }
            pick.mark_down();
            pick.done(false);
            continue;
        }
        tried.clear();
        if !back_off(&mut backoff, deadline).await {
            return RouterError::NoReplica("no replica answered /v1/models".into()).into_response();
        }
    }
}

/// Adapter loads and unloads go to every replica (an adapter on one
/// replica only would fail the requests routed elsewhere). The first
/// replica's answer is returned, unless some replica refused: then its
/// error, naming the replica.
pub async fn broadcast(State(st): State<Arc<RouterState>>, uri: Uri, body: Bytes) -> Response {
    let calls = st.pool.replicas.iter().map(|r| {
        let url = format!("{}{}", r.url, uri.path());
        let req = st
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        async move {
            let resp = req.send().await.map_err(|e| format!("{}: {e}", r.url))?;
            let status = resp.status();
            let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
            let body = resp.bytes().await.map_err(|e| format!("{}: {e}", r.url))?;
            Ok::<_, String>(Answer {
                status,
                content_type: ct,
                body,
            })
        }
    });
    let mut answers = futures_util::future::join_all(calls).await;
    if let Some(pos) = answers
        .iter()
        .position(|a| a.as_ref().is_ok_and(|a| !a.status.is_success()))
    {
        return answers
            .swap_remove(pos)
            .map(Answer::into_response)
            .unwrap_or_else(|e| RouterError::NoReplica(e).into_response());
    }
    match answers.into_iter().find_map(Result::ok) {
        Some(a) => a.into_response(),
        None => RouterError::NoReplica("no replica answered".into()).into_response(),
    }
}

/// A body for a response built from raw bytes (used by the stream).
pub fn sse_body(
    stream: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routing_key_is_model_and_prompt_prefix() {
        let long = "x".repeat(1000);
        let a = routing_key(&json!({"model": "m", "prompt": format!("{long}a")}));
        let b = routing_key(&json!({"model": "m", "prompt": format!("{long}b")}));
        assert_eq!(a, b, "only the opening bytes count");
        let c = routing_key(&json!({"model": "lora", "prompt": format!("{long}a")}));
        assert_ne!(a, c, "the adapter is part of the key");
        let chat =
            routing_key(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        assert!(chat.len() > 2);
        // Multi-byte text is cut on a character boundary.
        let k = routing_key(&json!({"prompt": "é".repeat(200)}));
        assert!(k.len() <= KEY_BYTES + 1);
    }
}
