//! Streams, and carrying one on when its replica dies.
//!
//! The router asks every replica for token ids (`return_token_ids`) and for
//! usage, whatever the client asked, and relays the stream chunk by chunk
//! (dropping what the client did not ask for). It keeps the prompt's ids
//! and every generated id. If the upstream stream breaks before `[DONE]`,
//! the router sends `/v1/completions` to another replica with the prompt
//! ids plus the generated ids as the prompt and the remaining token budget,
//! and relays that stream as the rest of this one (turned back into chat
//! chunks for a chat request). Token ids, not text, so nothing is
//! re-tokenized: under greedy decoding the replica computes exactly the
//! state the dead one had. `resume_tokens` (sdlab's extension) tells it
//! which prompt ids are output already streamed: it replays them through
//! its detokenizer, stop matcher and penalty counts without emitting, so
//! text the dead replica held back (an open UTF-8 character, a partial stop
//! string) comes out now and the client reads the same text. Usage at the
//! end counts the original prompt and every generated token.
//!
//! Limits: `n` > 1 streams are not continued (the client gets an error
//! event); a seeded sampled stream stays valid but is not the same draw;
//! logprobs are not carried into the continuation; a replica that is not
//! sdlab would ignore `resume_tokens`.

use super::pool::{Pick, Replica};
use super::proxy::{connect, routing_key, Answer};
use super::{RouterError, RouterState};
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Fields of the client's request the continuation keeps.
const CARRIED: [&str; 11] = [
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "ignore_eos",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
];

/// Context length assumed when a replica has not reported its own.
const FALLBACK_MAX_MODEL_LEN: u64 = 2048;

/// Opens the upstream stream (retrying as the non-streaming path does) and
/// relays it from a task; errors before the first byte are answered as such.
pub async fn start(
    st: Arc<RouterState>,
    path: String,
    req: Value,
    idem: Option<String>,
) -> Response {
    let mut upstream = req.clone();
    upstream["return_token_ids"] = json!(true);
    upstream["stream_options"] = json!({"include_usage": true});
    let key = routing_key(&req);
    let (resp, pick) = match connect(&st, &path, &key, &[], |_| Some(upstream.clone())).await {
        Ok(ok) => ok,
        Err(e) => {
            if let Some(k) = &idem {
                st.idempotency.release(k);
            }
            return match e {
                Ok(answer) => answer.into_response(),
                Err(e) => e.into_response(),
            };
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let relay = Relay {
        chat: path.ends_with("/chat/completions"),
        client_ids: req["return_token_ids"].as_bool().unwrap_or(false),
        client_usage: req["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        single: req["n"].as_u64().unwrap_or(1) == 1,
        st,
        req,
        key,
        idem,
        prompt_ids: None,
        generated: Vec::new(),
        tokens_before: 0,
        identity: None,
        finished: false,
        continuation: false,
        kept: Vec::new(),
        tx,
    };
    tokio::spawn(relay.run(resp, pick));
    super::proxy::sse_body(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    }))
}

/// How relaying one upstream stream ended.
enum Ended {
    /// `[DONE]` relayed.
    Done,
    /// The client went away.
    ClientGone,
    /// The upstream broke before `[DONE]`.
    Broken,
}

struct Relay {
    st: Arc<RouterState>,
    req: Value,
    key: Vec<u8>,
    idem: Option<String>,
    chat: bool,
    client_ids: bool,
    client_usage: bool,
    single: bool,
    prompt_ids: Option<Vec<Value>>,
    generated: Vec<Value>,
    /// Completion tokens counted by replicas that failed (for usage).
    tokens_before: u64,
    /// The first upstream's id, created and model, kept on every chunk.
    identity: Option<(Value, Value, Value)>,
    finished: bool,
    /// Relaying a continuation (a `/v1/completions` stream).
    continuation: bool,
    /// Everything sent, for an idempotent replay.
    kept: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
}

impl Relay {
    async fn run(mut self, mut resp: reqwest::Response, mut pick: Pick) {
        loop {
            match self.relay(resp).await {
                Ended::Done => {
                    pick.done(true);
                    self.store(true);
                    return;
                }
                Ended::ClientGone => {
                    pick.done(true);
                    self.store(false);
                    return;
                }
                Ended::Broken => {}
            }
            let failed = pick.index;
            tracing::warn!(replica = %pick.replica().url, "stream broke; failing over");
            pick.mark_down();
            pick.done(false);
            if self.finished {
                // Only the closing chunks were lost.
                let ok = self.close().await;
                self.store(ok);
                return;
            }
            if !self.single {
                self.fail("the replica failed mid-stream; n > 1 streams are not continued")
                    .await;
                return;
            }
            self.st.pool.metrics.failovers.inc();
            let generated = self.generated.len() as u64;
            let restart = self.prompt_ids.is_none();
            let path = if restart && self.chat {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            };
            let st = self.st.clone();
            let next = connect(&st, path, &self.key, &[failed], |r| self.next_body(r)).await;
            match next {
                Ok((r, p)) => {
                    if !restart {
                        self.continuation = true;
                        self.tokens_before = generated;
                    }
                    resp = r;
                    pick = p;
                }
                Err(Err(RouterError::BadRequest(_))) => {
                    // The budget was spent: end as the replica would have.
                    self.finished = true;
                    let ok = self.finish_length().await;
                    self.store(ok);
                    return;
                }
                Err(_) => {
                    self.fail("the replica failed mid-stream and no other could continue it")
                        .await;
                    return;
                }
            }
        }
    }

    /// The body for the next attempt: the original request again when no
    /// token was seen, else a completion from the exact ids so far.
    fn next_body(&self, replica: &Replica) -> Option<Value> {
        let Some(prompt) = &self.prompt_ids else {
            let mut b = self.req.clone();
            b["return_token_ids"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
            return Some(b);
        };
        let ids: Vec<Value> = prompt.iter().chain(&self.generated).cloned().collect();
        let done = self.generated.len() as u64;
        let limit = self.req["max_tokens"]
            .as_u64()
            .or(self.req["max_completion_tokens"].as_u64());
        let remaining = match (limit, self.chat) {
            (Some(m), _) => m.saturating_sub(done),
            (None, false) => 16u64.saturating_sub(done),
            (None, true) => {
                let ctx = match replica.max_model_len() {
                    0 => FALLBACK_MAX_MODEL_LEN,
                    n => n as u64,
                };
                ctx.saturating_sub(ids.len() as u64)
            }
        };
        if remaining == 0 {
            return None;
        }
        let mut b = json!({
            "prompt": ids,
            "resume_tokens": self.generated.len(),
            "max_tokens": remaining,
            "stream": true,
            "return_token_ids": true,
            "stream_options": {"include_usage": true},
        });
        for k in CARRIED {
            if let Some(v) = self.req.get(k) {
                b[k] = v.clone();
            }
        }
        Some(b)
    }

    /// Relays one upstream stream.
    async fn relay(&mut self, resp: reqwest::Response) -> Ended {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                return Ended::Broken;
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                for line in text.lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    match self.on_data(data.trim()).await {
                        Some(e) => return e,
                        None => continue,
                    }
                }
            }
        }
        Ended::Broken
    }

    /// Handles one `data:` payload; `Some` ends the relay.
    async fn on_data(&mut self, data: &str) -> Option<Ended> {
        if data == "[DONE]" {
            return Some(if self.send("[DONE]".into()).await {
                Ended::Done
            } else {
                Ended::ClientGone
            });
        }
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            return None;
        };
        if v.get("error").is_some() {
            return (!self.send(data.to_string()).await).then_some(Ended::ClientGone);
        }
        match &self.identity {
            None => {
                self.identity = Some((v["id"].clone(), v["created"].clone(), v["model"].clone()))
            }
            Some((id, created, model)) => {
                v["id"] = id.clone();
                v["created"] = created.clone();
                v["model"] = model.clone();
            }
        }
        let usage_chunk = v["choices"].as_array().is_some_and(|c| c.is_empty());
        if usage_chunk {
            if !self.client_usage {
                return None;
            }
            let completion =
                self.tokens_before + v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            v["usage"] = self.usage(completion);
        } else {
            let choice = &mut v["choices"][0];
            if !self.continuation && self.prompt_ids.is_none() {
                if let Some(p) = choice["prompt_token_ids"].as_array() {
                    self.prompt_ids = Some(p.clone());
                }
            }
            if let Some(ids) = choice["token_ids"].as_array() {
                self.generated.extend(ids.iter().cloned());
            }
            if !choice["finish_reason"].is_null() {
                self.finished = true;
            }
            if self.continuation && self.chat {
                let text = choice["text"].as_str().unwrap_or("").to_string();
                let delta = if text.is_empty() {
                    json!({})
                } else {
                    json!({ "content": text })
                };
                let mut chat = json!({
                    "index": choice["index"].clone(),
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": choice["finish_reason"].clone(),
                });
                if self.client_ids {
                    chat["token_ids"] = choice["token_ids"].clone();
                }
                *choice = chat;
                v["object"] = json!("chat.completion.chunk");
            }
            let choice = &mut v["choices"][0];
            if !self.client_ids || self.continuation {
                if let Some(o) = choice.as_object_mut() {
                    o.remove("prompt_token_ids");
                }
            }
            if !self.client_ids {
                if let Some(o) = choice.as_object_mut() {
                    o.remove("token_ids");
                }
            }
            if !self.client_usage {
                if let Some(o) = v.as_object_mut() {
                    o.remove("usage");
                }
            }
            // A chunk left with nothing to say (an id-only token) is dropped.
            let c = &v["choices"][0];
            let empty = c["text"].as_str().is_some_and(str::is_empty)
                || c["delta"].as_object().is_some_and(|d| d.is_empty());
            if empty && c["finish_reason"].is_null() && c.get("token_ids").is_none() {
                return None;
            }
        }
        (!self.send(v.to_string()).await).then_some(Ended::ClientGone)
    }

    fn usage(&self, completion: u64) -> Value {
        let prompt = self.prompt_ids.as_ref().map_or(0, |p| p.len() as u64);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }

    /// Sends one SSE event; false if the client is gone.
    async fn send(&mut self, data: String) -> bool {
        let event = format!("data: {data}\n\n");
        if self.idem.is_some() {
            self.kept.extend_from_slice(event.as_bytes());
        }
        self.tx.send(Ok(Bytes::from(event))).await.is_ok()
    }

    /// Ends a stream whose finish chunk arrived but not its tail.
    async fn close(&mut self) -> bool {
        if self.client_usage {
            let body = json!({
                "id": self.identity.as_ref().map(|i| i.0.clone()),
                "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
                "choices": [],
                "usage": self.usage(self.generated.len() as u64),
            });
            if !self.send(body.to_string()).await {
                return false;
            }
        }
        self.send("[DONE]".into()).await
    }

    /// Ends a stream whose token budget ran out exactly at the failure.
    async fn finish_length(&mut self) -> bool {
        let choice = if self.chat {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "length"})
        };
        let body = json!({
            "id": self.identity.as_ref().map(|i| i.0.clone()),
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "choices": [choice],
        });
        self.send(body.to_string()).await && self.close().await
    }

    async fn fail(&mut self, message: &str) {
        let body = json!({"error": {"message": message, "type": "server_error", "param": null, "code": "upstream_failed"}});
        let _ = self.send(body.to_string()).await && self.send("[DONE]".into()).await;
        self.store(false);
    }

    /// Keeps the whole stream for replays under its Idempotency-Key, or
    /// releases the key when the stream did not complete.
    fn store(&mut self, complete: bool) {
        let Some(k) = self.idem.take() else {
            return;
        };
        if complete {
            self.st.idempotency.finish(
                &k,
                Answer {
                    status: axum::http::StatusCode::OK,
                    content_type: Some(header::HeaderValue::from_static("text/event-stream")),
                    body: Bytes::from(std::mem::take(&mut self.kept)),
                },
            );
        } else {
            self.st.idempotency.release(&k);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
