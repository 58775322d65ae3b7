//! Running a validated request on the engine and writing OpenAI's response:
//! one JSON body, or server-sent events in OpenAI's chunk format ending with
//! `data: [DONE]`.
//!
//! A request becomes one engine request per prompt and choice (`n`). An
//! [`Inflight`] guard aborts whatever is still running when the response is
//! dropped, so a client that disconnects frees its KV blocks at once.

use super::error::ApiError;
use super::AppState;
use crate::engine::{
    EngineEvent, EventReceiver, FinishReason, GenerateOutput, GenerateRequest, RequestId, Usage,
};
use crate::lora::AdapterLease;
use crate::sampler::{SampledToken, SamplingParams};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completion,
    Chat,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_request_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}",
        NEXT_ID.fetch_add(1, Ordering::Relaxed) ^ 0x5d1a_b000_0000_0000
    )
}

/// A request ready to run: prompts, each with its sampling parameters.
pub struct Job {
    endpoint: Endpoint,
    prompts: Vec<(Vec<u32>, SamplingParams)>,
    n: usize,
    id: String,
    model: String,
    created: u64,
    adapter: Option<AdapterLease>,
    /// Put `token_ids` and `prompt_token_ids` in each choice.
    token_ids: bool,
    /// Trailing prompt tokens that are resumed output (see
    /// [`GenerateRequest::resume_tokens`]).
    resume_tokens: usize,
}

impl Job {
    /// Checks the prompts against the vocabulary and the context length and
    /// fills in `max_tokens` (`None`: up to the context limit; `max_param`
    /// is the name the client used for it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        st: &AppState,
        id: String,
        endpoint: Endpoint,
        prompts: Vec<Vec<u32>>,
        param: &'static str,
        params: SamplingParams,
        (max_tokens, max_param): (Option<u32>, &'static str),
        n: u32,
    ) -> Result<Self, ApiError> {
        let vocab = st.engine.tokenizer().vocab_size().max(1);
        let max_len = st.engine.config().max_model_len;
        if prompts.is_empty() {
            return Err(ApiError::bad(format!("`{param}` must not be empty"), param));
        }
        let mut out = Vec::with_capacity(prompts.len());
        for p in prompts {
            if p.is_empty() {
                return Err(ApiError::bad(format!("`{param}` must not be empty"), param));
            }
            if let Some(bad) = p.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::bad(
                    format!("token id {bad} in `{param}` is outside the vocabulary of {vocab}"),
                    param,
                ));
            }
            if p.len() >= max_len {
                return Err(ApiError::bad(
                    format!(
                        "`{param}` has {} tokens; this model's context is {max_len}",
                        p.len()
                    ),
                    param,
                ));
            }
            let room = max_len - p.len();
            let max_tokens = match max_tokens {
                Some(0) => return Err(ApiError::bad(format!("`{max_param}` must be at least 1"), max_param)),
                Some(m) if m as usize > room => {
                    return Err(ApiError::bad(
                        format!("{} prompt tokens + {max_param} {m} exceed this model's context of {max_len} tokens", p.len()),
                        max_param,
                    ))
                }
                Some(m) => m as usize,
                None => room,
            };
            out.push((
                p,
                SamplingParams {
                    max_tokens,
                    ..params.clone()
                },
            ));
        }
        Ok(Self {
            endpoint,
            prompts: out,
            n: n as usize,
            id,
            model: st.config.served_model_name.clone(),
            created: st.created,
            adapter: None,
            token_ids: false,
            resume_tokens: 0,
        })
    }

    /// Runs every prompt under `adapter`; responses name the adapter.
    pub fn with_adapter(mut self, adapter: Option<AdapterLease>) -> Self {
        if let Some(a) = &adapter {
            self.model = a.name.clone();
        }
        self.adapter = adapter;
        self
    }

    /// Whether choices carry their token ids (vLLM's `return_token_ids`):
    /// what a router needs to continue a stream elsewhere, exactly.
    pub fn with_token_ids(mut self, on: bool) -> Self {
        self.token_ids = on;
        self
    }

    /// Marks the last `n` tokens of every prompt as resumed output (sdlab's
    /// `resume_tokens` extension, which `sdlab router` uses to continue a
    /// stream on another replica).
    pub fn with_resume(mut self, n: Option<u32>) -> Result<Self, ApiError> {
        let n = n.unwrap_or(0) as usize;
        if n > 0 && self.prompts.iter().any(|(p, _)| n >= p.len()) {
            return Err(ApiError::bad(
                "`resume_tokens` must be smaller than the prompt",
                "resume_tokens",
            ));
        }
        self.resume_tokens = n;
        Ok(self)
    }

    /// The prompt ids of choice `i`, when the client asked for ids.
    fn prompt_ids(&self, i: usize) -> Option<&[u32]> {
        self.token_ids
            .then(|| self.prompts[i / self.n].0.as_slice())
    }

    /// The model (or adapter) name responses carry.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }

    pub async fn run(self, st: Arc<AppState>, stream: bool, include_usage: bool) -> Response {
        let (guard, receivers, started) = match self.start(&st).await {
            Ok(running) => running,
            Err(e) => return e.into_response(),
        };
        if stream {
            self.stream(st, guard, receivers, include_usage, started)
                .into_response()
        } else {
            match self.collect(&guard, receivers).await {
                Ok((outs, usage)) => self.whole(&st, outs, usage, started),
                Err(e) => e.into_response(),
            }
        }
    }

    /// Runs the job to the end and returns every choice's output (in order)
    /// and the summed usage, for callers that build their own response.
    pub async fn outputs(
        &self,
        st: &Arc<AppState>,
    ) -> Result<(Vec<GenerateOutput>, Usage), ApiError> {
        let (guard, receivers, _) = self.start(st).await?;
        self.collect(&guard, receivers).await
    }

    /// Admits every choice to the engine (or refuses the whole job when the
    /// queue is full).
    async fn start(
        &self,
        st: &Arc<AppState>,
    ) -> Result<(Arc<Inflight>, Vec<EventReceiver>, Instant), ApiError> {
        let waiting = st.engine.stats().waiting;
        if waiting + self.choices() > st.config.max_queue {
            return Err(ApiError::QueueFull { waiting });
        }
        let started = Instant::now();
        let guard = Arc::new(Inflight {
            st: st.clone(),
            started,
            n: self.n,
            tracks: Mutex::new(Vec::with_capacity(self.choices())),
        });
        let mut receivers = Vec::with_capacity(self.choices());
        for (prompt, params) in &self.prompts {
            for j in 0..self.n {
                let params = SamplingParams {
                    seed: params.seed.map(|s| s.wrapping_add(j as u64)),
                    ..params.clone()
                };
                let (id, rx) = st
                    .engine
                    .add_request_async(GenerateRequest {
                        prompt_tokens: prompt.clone(),
                        params,
                        adapter: self.adapter.as_ref().map(AdapterLease::adapter),
                        resume_tokens: self.resume_tokens,
                    })
                    .await?;
                guard.track(id, prompt.len());
                receivers.push(rx);
            }
        }
        Ok((guard, receivers, started))
    }

    /// Waits for every choice; a model failure is an internal error.
    async fn collect(
        &self,
        guard: &Arc<Inflight>,
        receivers: Vec<EventReceiver>,
    ) -> Result<(Vec<GenerateOutput>, Usage), ApiError> {
        let outs = futures_util::future::join_all(
            receivers
                .into_iter()
                .enumerate()
                .map(|(i, rx)| collect_choice(rx, guard.clone(), i)),
        )
        .await;
        let mut usage = Usage::default();
        for (i, out) in outs.iter().enumerate() {
            if out.finish_reason == FinishReason::Error {
                return Err(ApiError::Internal(
                    out.error
                        .clone()
                        .unwrap_or_else(|| "generation failed".into()),
                ));
            }
            add_usage(&mut usage, &out.usage, i % self.n == 0);
        }
        Ok((outs, usage))
    }

    /// OpenAI's non-streaming response.
    fn whole(
        &self,
        st: &AppState,
        outs: Vec<GenerateOutput>,
        usage: Usage,
        started: Instant,
    ) -> Response {
        let tok = st.engine.tokenizer();
        let mut choices = Vec::new();
        for (i, out) in outs.into_iter().enumerate() {
            let logprobs = self.prompts[0]
                .1
                .logprobs
                .map(|_| logprobs_json(self.endpoint, tok, &out.logprobs));
            let mut choice = match self.endpoint {
                Endpoint::Completion => {
                    json!({ "index": i, "text": out.text, "logprobs": logprobs, "finish_reason": out.finish_reason.as_str() })
                }
                Endpoint::Chat => json!({
                    "index": i,
                    "message": { "role": "assistant", "content": out.text },
                    "logprobs": logprobs,
                    "finish_reason": out.finish_reason.as_str(),
                }),
            };
            if let Some(ids) = self.prompt_ids(i) {
                choice["prompt_token_ids"] = json!(ids);
                choice["token_ids"] = json!(out.token_ids);
            }
            choices.push(choice);
        }
        tracing::info!(
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "finished"
        );
        let object = if self.endpoint == Endpoint::Chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        Json(json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices, "usage": usage_json(&usage) })).into_response()
    }

    fn stream(
        self,
        st: Arc<AppState>,
        guard: Arc<Inflight>,
        receivers: Vec<EventReceiver>,
        include_usage: bool,
        started: Instant,
    ) -> impl IntoResponse {
        let n_choices = receivers.len();
        let merged = stream::select_all(receivers.into_iter().enumerate().map(|(i, rx)| {
            stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
            )
            .map(move |ev| (i, ev))
            .boxed()
        }));
        let state = StreamState {
            job: self,
            st,
            inflight: guard,
            merged: Box::pin(merged),
            seen: vec![false; n_choices],
            usage: Usage::default(),
            finished: 0,
            include_usage,
            started,
            done: false,
        };
        let events = stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            let batch = s.next_events().await;
            Some((
                stream::iter(batch.into_iter().map(Ok::<Event, std::convert::Infallible>)),
                s,
            ))
        })
        .flatten();
        Sse::new(events)
    }
}

/// The engine requests behind one HTTP request. Records each in the metrics
/// as it finishes; when dropped before all finished (the client went away or
/// the server cancelled the handler), aborts the rest, which frees their KV
/// blocks at once, and records them as aborted. Every engine request is
/// counted exactly once, and a prompt shared by `n` choices once.
struct Inflight {
    st: Arc<AppState>,
    started: Instant,
    n: usize,
    tracks: Mutex<Vec<Track>>,
}

struct Track {
    id: RequestId,
    prompt_tokens: usize,
    completion_tokens: usize,
    ttft: Option<f64>,
    done: bool,
}

impl Inflight {
    fn track(&self, id: RequestId, prompt_tokens: usize) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        tracks.push(Track {
            id,
            prompt_tokens,
            completion_tokens: 0,
            ttft: None,
            done: false,
        });
    }

    /// A token of choice `i` arrived.
    fn token(&self, i: usize) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut tracks[i];
        t.completion_tokens += 1;
        t.ttft.get_or_insert(elapsed);
    }

    fn finish(&self, i: usize, reason: FinishReason, usage: &Usage) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut tracks[i];
        if !t.done {
            t.done = true;
            self.record(i, reason, *usage, t.ttft);
        }
    }

    fn record(&self, i: usize, reason: FinishReason, mut usage: Usage, ttft: Option<f64>) {
        if !i.is_multiple_of(self.n) {
            usage.prompt_tokens = 0;
        }
        self.st.metrics.request_finished(
            reason,
            &usage,
            ttft,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let tracks = std::mem::take(self.tracks.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (i, t) in tracks.into_iter().enumerate().filter(|(_, t)| !t.done) {
            self.st.engine.abort(t.id);
            let usage = Usage {
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                total_tokens: t.prompt_tokens + t.completion_tokens,
                cached_tokens: 0,
            };
            self.record(i, FinishReason::Abort, usage, t.ttft);
        }
    }
}

async fn collect_choice(
    mut rx: EventReceiver,
    inflight: Arc<Inflight>,
    i: usize,
) -> GenerateOutput {
    let mut out = GenerateOutput::default();
    while let Some(ev) = rx.recv().await {
        match &ev {
            EngineEvent::Token { .. } => inflight.token(i),
            EngineEvent::Finished { reason, usage, .. } => inflight.finish(i, *reason, usage),
        }
        if out.push(ev) {
            break;
        }
    }
    out
}

/// Sums usage over choices; a prompt shared by `n` choices counts once.
fn add_usage(total: &mut Usage, u: &Usage, count_prompt: bool) {
    if count_prompt {
        total.prompt_tokens += u.prompt_tokens;
        total.cached_tokens += u.cached_tokens;
    }
    total.completion_tokens += u.completion_tokens;
    total.total_tokens = total.prompt_tokens + total.completion_tokens;
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

fn token_text(tok: &models::TokenizerInfo, id: u32) -> String {
    tok.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// OpenAI's logprobs object for a run of tokens.
fn logprobs_json(
    endpoint: Endpoint,
    tok: &models::TokenizerInfo,
    tokens: &[SampledToken],
) -> Value {
    match endpoint {
        Endpoint::Completion => {
            let mut offset = 0;
            let (mut texts, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
            for t in tokens {
                let text = token_text(tok, t.token_id);
                offsets.push(offset);
                offset += text.len();
                texts.push(text);
                lps.push(t.logprob);
                let top: serde_json::Map<String, Value> = t
                    .top_logprobs
                    .iter()
                    .map(|a| (token_text(tok, a.token_id), json!(a.logprob)))
                    .collect();
                tops.push(top);
            }
            json!({ "tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets })
        }
        Endpoint::Chat => {
            let entry = |id: u32, lp: Option<f32>| {
                let text = token_text(tok, id);
                json!({ "token": text, "logprob": lp, "bytes": text.as_bytes() })
            };
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(t.token_id, t.logprob);
                    e["top_logprobs"] = t
                        .top_logprobs
                        .iter()
                        .map(|a| entry(a.token_id, Some(a.logprob)))
                        .collect();
                    e
                })
                .collect();
            json!({ "content": content })
        }
    }
}

struct StreamState {
    job: Job,
    st: Arc<AppState>,
    /// Records finishes; its `Drop` aborts what is still running if the
    /// client goes away.
    inflight: Arc<Inflight>,
    merged: std::pin::Pin<Box<dyn futures_util::Stream<Item = (usize, EngineEvent)> + Send>>,
    /// Whether choice `i` has sent its first chunk.
    seen: Vec<bool>,
    usage: Usage,
    finished: usize,
    include_usage: bool,
    started: Instant,
    done: bool,
}

impl StreamState {
    fn object(&self) -> &'static str {
        match self.job.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        }
    }

    fn chunk(&self, choice: Value) -> Event {
        let object = self.object();
        let mut body = json!({ "id": self.job.id, "object": object, "created": self.job.created, "model": self.job.model, "choices": [choice] });
        if self.include_usage {
            body["usage"] = Value::Null;
        }
        Event::default().data(body.to_string())
    }

    fn choice(
        &self,
        index: usize,
        text: &str,
        logprobs: Option<Value>,
        finish: Option<&str>,
        role: bool,
    ) -> Value {
        match self.job.endpoint {
            Endpoint::Completion => {
                json!({ "index": index, "text": text, "logprobs": logprobs, "finish_reason": finish })
            }
            Endpoint::Chat => {
                let delta = match (role, text.is_empty()) {
                    (true, _) => json!({ "role": "assistant", "content": text }),
                    (false, false) => json!({ "content": text }),
                    (false, true) => json!({}),
                };
                json!({ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish })
            }
        }
    }

    /// The SSE events for the next engine event (or the closing ones).
    async fn next_events(&mut self) -> Vec<Event> {
        let Some((i, ev)) = self.merged.next().await else {
            return self.close();
        };
        let tok = self.st.engine.tokenizer();
        match ev {
            EngineEvent::Token {
                text,
                logprob,
                token_id,
            } => {
                let first = !self.seen[i];
                let role = first && self.job.endpoint == Endpoint::Chat;
                self.seen[i] = true;
                self.inflight.token(i);
                let lp = logprob.map(|l| logprobs_json(self.job.endpoint, tok, &[l]));
                if text.is_empty() && lp.is_none() && !role && !self.job.token_ids {
                    return vec![];
                }
                let mut choice = self.choice(i, &text, lp, None, role);
                if let Some(ids) = self.job.prompt_ids(i) {
                    if first {
                        choice["prompt_token_ids"] = json!(ids);
                    }
                    choice["token_ids"] = json!([token_id]);
                }
                vec![self.chunk(choice)]
            }
            EngineEvent::Finished {
                reason,
                usage,
                text,
                error,
            } => {
                self.finished += 1;
                self.inflight.finish(i, reason, &usage);
                add_usage(&mut self.usage, &usage, i % self.job.n == 0);
                let mut out = Vec::new();
                if let Some(e) = error {
                    out.push(Event::default().data(json!({ "error": { "message": e, "type": "server_error", "param": null, "code": null } }).to_string()));
                }
                let role = !self.seen[i] && self.job.endpoint == Endpoint::Chat;
                self.seen[i] = true;
                out.push(self.chunk(self.choice(i, &text, None, Some(reason.as_str()), role)));
                if self.finished == self.seen.len() {
                    out.extend(self.close());
                }
                out
            }
        }
    }

    fn close(&mut self) -> Vec<Event> {
        if self.done {
            return vec![];
        }
        self.done = true;
        tracing::info!(
            prompt_tokens = self.usage.prompt_tokens,
            completion_tokens = self.usage.completion_tokens,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "finished (stream)"
        );
        let mut out = Vec::new();
        if self.include_usage {
            let object = self.object();
            let body = json!({ "id": self.job.id, "object": object, "created": self.job.created, "model": self.job.model, "choices": [], "usage": usage_json(&self.usage) });
            out.push(Event::default().data(body.to_string()));
        }
        out.push(Event::default().data("[DONE]"));
        out
    }
}
