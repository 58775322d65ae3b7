//! The engine: a step loop on its own thread that keeps many requests in
//! flight (continuous batching), and a handle to talk to it.
//!
//! Each iteration drains new commands, asks the [`Scheduler`] what to run
//! (decodes first, then prompt chunks, preempting when blocks run out), runs
//! the model once for the whole batch, samples a token for every sequence
//! whose chunk reached its end, and streams [`EngineEvent`]s to each
//! request's channel. Requests join and leave at every step. With
//! speculative decoding on, a decode's chunk also carries a prompt-lookup
//! draft and the step samples every drafted position in order, keeping the
//! draft up to the first token the sampler disagrees with
//! ([`crate::spec_decode`]). The HTTP layer (and `sdlab generate`) sit on
//! exactly this handle.

use crate::block_manager::PrefixCacheStats;
use crate::detokenizer::{IncrementalDetokenizer, StopMatcher};
use crate::lora::ActiveAdapter;
use crate::runner::{BatchSeq, ModelRunner};
use crate::sampler::{SampledToken, Sampler, SamplingError, SamplingParams};
use crate::scheduler::{Scheduler, SchedulerConfig, SeqId};
use crate::spec_decode::{self, NgramConfig};
use models::TokenizerInfo;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

pub type RequestId = SeqId;

/// An added request whose acceptance is not confirmed yet.
type PendingAdd = (
    RequestId,
    EventReceiver,
    oneshot::Receiver<Result<(), EngineError>>,
);

/// Where a request's events arrive.
pub type EventReceiver = UnboundedReceiver<EngineEvent>;

/// Limits of one engine (the CLI's `--kv-cache-mb`, `--max-num-seqs`, ...).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub num_blocks: usize,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    pub enable_prefix_caching: bool,
    /// Prompt-lookup speculative decoding (`--num-speculative-tokens`).
    pub speculative: Option<NgramConfig>,
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    /// The LoRA adapter to run under (held until the request finishes).
    pub adapter: Option<Arc<ActiveAdapter>>,
    /// The last `resume_tokens` prompt tokens are output of an earlier
    /// generation that this request resumes (a router's failover): they
    /// pass through the detokenizer, the stop matcher and the penalty
    /// counts silently, so text held back there (an open UTF-8 character, a
    /// partial stop string) comes out exactly as it would have. 0: a plain
    /// prompt.
    pub resume_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// Aborted by the caller (or the caller went away).
    Abort,
    /// The model failed on this batch.
    Error,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A generated token and the text it completed (possibly empty while a
    /// UTF-8 character or a possible stop string is still open).
    Token {
        token_id: u32,
        text: String,
        logprob: Option<SampledToken>,
    },
    /// The last event of a request; `text` is any held-back tail.
    Finished {
        reason: FinishReason,
        usage: Usage,
        text: String,
        error: Option<String>,
    },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    #[error(transparent)]
    InvalidParams(#[from] SamplingError),
    #[error("{0}")]
    Rejected(String),
    #[error("the engine has shut down")]
    Shutdown,
}

/// A snapshot of the engine, refreshed after every step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    pub num_blocks: usize,
    pub free_blocks: usize,
    pub cached_free_blocks: usize,
    pub kv_usage: f64,
    pub prefix_cache: PrefixCacheStats,
    pub preemptions: u64,
    pub steps: u64,
    pub prompt_tokens_computed: u64,
    pub generation_tokens: u64,
    pub requests_finished: u64,
    /// Most sequences scheduled in one step since the engine started.
    pub peak_running: usize,
    /// Most KV blocks held by sequences at once since the engine started.
    pub peak_used_blocks: usize,
    /// Speculative decoding: tokens drafted, and those the sampler accepted.
    pub spec_draft_tokens: u64,
    pub spec_accepted_tokens: u64,
}

/// Everything a finished request produced, for callers that do not stream.
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    pub token_ids: Vec<u32>,
    pub text: String,
    /// `Abort` until the last event says otherwise.
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub logprobs: Vec<SampledToken>,
    /// Set when the model failed on this request.
    pub error: Option<String>,
}

impl Default for GenerateOutput {
    fn default() -> Self {
        Self {
            token_ids: vec![],
            text: String::new(),
            finish_reason: FinishReason::Abort,
            usage: Usage::default(),
            logprobs: vec![],
            error: None,
        }
    }
}

impl GenerateOutput {
    /// Folds one event in; returns true on the request's last event.
    pub fn push(&mut self, ev: EngineEvent) -> bool {
        match ev {
            EngineEvent::Token {
                token_id,
                text,
                logprob,
            } => {
                self.token_ids.push(token_id);
                self.text.push_str(&text);
                self.logprobs.extend(logprob);
                false
            }
            EngineEvent::Finished {
                reason,
                usage,
                text,
                error,
            } => {
                self.text.push_str(&text);
                self.finish_reason = reason;
                self.usage = usage;
                self.error = error;
                true
            }
        }
    }
}

enum Command {
    Add {
        id: RequestId,
        req: GenerateRequest,
        events: UnboundedSender<EngineEvent>,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Abort(RequestId),
    AbortAll,
    Shutdown,
}

/// Handle to a running engine; dropping it stops the step loop.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    stats: Arc<Mutex<EngineStats>>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
    tokenizer: TokenizerInfo,
    config: EngineConfig,
    device: String,
}

impl Engine {
    pub fn start(
        runner: Box<dyn ModelRunner>,
        tokenizer: TokenizerInfo,
        config: EngineConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let device = runner.device();
        let stats = Arc::new(Mutex::new(EngineStats {
            num_blocks: config.num_blocks,
            free_blocks: config.num_blocks,
            ..Default::default()
        }));
        let scheduler = Scheduler::new(SchedulerConfig {
            max_num_seqs: config.max_num_seqs,
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_model_len: config.max_model_len,
            num_blocks: config.num_blocks,
            block_size: config.block_size,
            enable_prefix_caching: config.enable_prefix_caching,
            speculative: config.speculative,
        });
        let mut step_loop = StepLoop {
            runner,
            scheduler,
            requests: HashMap::new(),
            tokenizer: tokenizer.clone(),
            stats: stats.clone(),
            counters: EngineStats::default(),
        };
        let thread = std::thread::Builder::new()
            .name("sdlab-engine".into())
            .spawn(move || step_loop.run(rx))
            .expect("spawning the engine thread");
        Self {
            commands: tx,
            stats,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
            tokenizer,
            config,
            device,
        }
    }

    pub fn tokenizer(&self) -> &TokenizerInfo {
        &self.tokenizer
    }

    /// Where the model runs, as its runner describes it ("CPU", or "GPU:
    /// " and the adapter, its backend and type).
    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Queues a request; its events arrive on the returned receiver.
    /// Invalid parameters and requests that can never fit are rejected here.
    /// Blocking: async callers use [`Self::add_request_async`].
    pub fn add_request(
        &self,
        req: GenerateRequest,
    ) -> Result<(RequestId, EventReceiver), EngineError> {
        let (id, rx, reply) = self.send_add(req)?;
        reply.blocking_recv().map_err(|_| EngineError::Shutdown)??;
        Ok((id, rx))
    }

    /// [`Self::add_request`] for async callers.
    pub async fn add_request_async(
        &self,
        req: GenerateRequest,
    ) -> Result<(RequestId, EventReceiver), EngineError> {
        let (id, rx, reply) = self.send_add(req)?;
        reply.await.map_err(|_| EngineError::Shutdown)??;
        Ok((id, rx))
    }

    fn send_add(&self, req: GenerateRequest) -> Result<PendingAdd, EngineError> {
        req.params.validate()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = unbounded_channel();
        let (reply, reply_rx) = oneshot::channel();
        self.commands
            .send(Command::Add {
                id,
                req,
                events,
                reply,
            })
            .map_err(|_| EngineError::Shutdown)?;
        Ok((id, rx, reply_rx))
    }

    /// Stops a request; it finishes with [`FinishReason::Abort`].
    pub fn abort(&self, id: RequestId) {
        let _ = self.commands.send(Command::Abort(id));
    }

    /// Stops every request in flight (server shutdown).
    pub fn abort_all(&self) {
        let _ = self.commands.send(Command::AbortAll);
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs one request to the end (blocking).
    pub fn generate(&self, req: GenerateRequest) -> Result<GenerateOutput, EngineError> {
        let (_, mut rx) = self.add_request(req)?;
        collect(&mut rx)
    }
}

/// Drains a request's events into a [`GenerateOutput`] (blocking).
pub fn collect(rx: &mut UnboundedReceiver<EngineEvent>) -> Result<GenerateOutput, EngineError> {
    let mut out = GenerateOutput::default();
    while let Some(ev) = rx.blocking_recv() {
        if out.push(ev) {
            return match out.error.take() {
                Some(e) => Err(EngineError::Rejected(e)),
                None => Ok(out),
            };
        }
    }
    Err(EngineError::Shutdown)
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per-request state the step loop keeps beside the scheduler's sequence.
struct RequestState {
    sampler: Sampler,
    detok: IncrementalDetokenizer,
    stops: StopMatcher,
    events: UnboundedSender<EngineEvent>,
    prompt_len: usize,
    generated: usize,
    adapter: Option<Arc<ActiveAdapter>>,
}

struct StepLoop {
    runner: Box<dyn ModelRunner>,
    scheduler: Scheduler,
    requests: HashMap<RequestId, RequestState>,
    tokenizer: TokenizerInfo,
    stats: Arc<Mutex<EngineStats>>,
    counters: EngineStats,
}

impl StepLoop {
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        loop {
            if !self.scheduler.has_work() {
                match rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                if !self.handle(cmd) {
                    return;
                }
            }
            if self.scheduler.has_work() {
                self.step();
            }
            self.publish_stats();
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add {
                id,
                req,
                events,
                reply,
            } => {
                let params = req.params;
                let result = self
                    .scheduler
                    .add(
                        id,
                        req.prompt_tokens.clone(),
                        params.max_tokens,
                        req.adapter.as_ref().map(|a| a.key),
                    )
                    .map_err(|e| EngineError::Rejected(e.to_string()));
                if result.is_ok() {
                    let resume = req.resume_tokens.min(req.prompt_tokens.len() - 1);
                    let (context, resumed) =
                        req.prompt_tokens.split_at(req.prompt_tokens.len() - resume);
                    let mut detok = IncrementalDetokenizer::new(
                        self.tokenizer.tokenizer.clone(),
                        context,
                        true,
                    );
                    let mut stops = StopMatcher::new(params.stop.clone());
                    let mut sampler = Sampler::new(params, context);
                    for &t in resumed {
                        let _ = stops.push(&detok.push(t));
                        sampler.observe(t);
                    }
                    self.requests.insert(
                        id,
                        RequestState {
                            sampler,
                            detok,
                            stops,
                            events,
                            prompt_len: req.prompt_tokens.len(),
                            generated: 0,
                            adapter: req.adapter,
                        },
                    );
                }
                let _ = reply.send(result);
                true
            }
            Command::Abort(id) => {
                self.finish(id, FinishReason::Abort, None);
                true
            }
            Command::AbortAll => {
                self.abort_all();
                true
            }
            Command::Shutdown => {
                self.abort_all();
                false
            }
        }
    }

    fn abort_all(&mut self) {
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in ids {
            self.finish(id, FinishReason::Abort, None);
        }
    }

    fn step(&mut self) {
        let out = self.scheduler.schedule();
        if out.scheduled.is_empty() {
            return;
        }
        let bm = self.scheduler.block_manager();
        let used = bm.num_blocks() - bm.num_free_blocks();
        self.counters.peak_used_blocks = self.counters.peak_used_blocks.max(used);
        self.counters.peak_running = self.counters.peak_running.max(out.scheduled.len());
        let mut batch = Vec::with_capacity(out.scheduled.len());
        for s in &out.scheduled {
            let seq = self.scheduler.get(s.id).expect("scheduled sequence exists");
            let mut tokens = seq.tokens[s.start..s.start + s.num_known()].to_vec();
            tokens.extend_from_slice(&s.draft);
            batch.push(BatchSeq {
                tokens,
                start: s.start,
                block_table: seq.blocks.block_table.clone(),
                logit_rows: s.logit_rows(),
                adapter: self.requests.get(&s.id).and_then(|r| r.adapter.clone()),
            });
            if s.start < seq.prompt_len {
                self.counters.prompt_tokens_computed +=
                    (s.start + s.len).min(seq.prompt_len) as u64 - s.start as u64;
            }
        }
        let logits = match self.runner.forward(&batch) {
            Ok(l) => l,
            Err(e) => {
                for s in &out.scheduled {
                    self.finish(s.id, FinishReason::Error, Some(format!("model error: {e}")));
                }
                return;
            }
        };
        self.counters.steps += 1;
        let vocab = self.runner.vocab_size();
        let mut sampled = Vec::new();
        let mut rows = logits.chunks_exact(vocab);
        for s in out.scheduled.iter().filter(|s| s.samples) {
            let seq_rows: Vec<&[f32]> = rows.by_ref().take(s.logit_rows()).collect();
            assert_eq!(seq_rows.len(), s.logit_rows(), "logits rows per sequence");
            if let Some(state) = self.requests.get_mut(&s.id) {
                let left = state.sampler.params().max_tokens - state.generated;
                let eos = &self.tokenizer.eos_token_ids;
                let accepted = spec_decode::verify(
                    &mut state.sampler,
                    &s.draft,
                    &seq_rows,
                    left,
                    eos,
                    |tok| sampled.push((s.id, tok)),
                );
                self.counters.spec_draft_tokens += s.draft.len() as u64;
                self.counters.spec_accepted_tokens += accepted as u64;
            }
        }
        let ids: Vec<(SeqId, u32)> = sampled.iter().map(|(id, t)| (*id, t.token_id)).collect();
        self.scheduler.on_step_done(&out, &ids);
        for (id, tok) in sampled {
            self.counters.generation_tokens += 1;
            self.emit(id, tok);
        }
    }

    /// Handles one sampled token: stop conditions, text, events.
    fn emit(&mut self, id: RequestId, tok: SampledToken) {
        let eos = &self.tokenizer.eos_token_ids;
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        state.generated += 1;
        let params = state.sampler.params();
        let is_stop_token = params.is_stop_token(tok.token_id, eos);
        let at_limit = state.generated >= params.max_tokens;
        let logprob = params.logprobs.map(|_| tok.clone());
        if is_stop_token {
            self.finish(id, FinishReason::Stop, None);
            return;
        }
        let piece = state.detok.push(tok.token_id);
        let (text, matched) = state.stops.push(&piece);
        let gone = state
            .events
            .send(EngineEvent::Token {
                token_id: tok.token_id,
                text,
                logprob,
            })
            .is_err();
        if gone {
            self.finish(id, FinishReason::Abort, None);
        } else if matched.is_some() {
            self.finish(id, FinishReason::Stop, None);
        } else if at_limit {
            self.finish(id, FinishReason::Length, None);
        }
    }

    /// Removes a request everywhere (freeing its blocks) and sends its last event.
    fn finish(&mut self, id: RequestId, reason: FinishReason, error: Option<String>) {
        let seq = self.scheduler.remove(id);
        let Some(mut state) = self.requests.remove(&id) else {
            return;
        };
        // Release held-back text (an open UTF-8 tail, a partial stop-string
        // match); after a stop string matched, the matcher returns nothing.
        let tail = state.detok.finish();
        let (emit, _) = state.stops.push(&tail);
        let text = emit + &state.stops.flush();
        let cached_tokens = seq
            .map(|s| s.num_cached_tokens.min(s.prompt_len))
            .unwrap_or(0);
        let usage = Usage {
            prompt_tokens: state.prompt_len,
            completion_tokens: state.generated,
            total_tokens: state.prompt_len + state.generated,
            cached_tokens,
        };
        self.counters.requests_finished += 1;
        self.publish_stats();
        let _ = state.events.send(EngineEvent::Finished {
            reason,
            usage,
            text,
            error,
        });
    }

    fn publish_stats(&self) {
        let bm = self.scheduler.block_manager();
        let snapshot = EngineStats {
            running: self.scheduler.num_running(),
            waiting: self.scheduler.num_waiting(),
            num_blocks: bm.num_blocks(),
            free_blocks: bm.num_free_blocks(),
            cached_free_blocks: bm.num_cached_free_blocks(),
            kv_usage: bm.usage(),
            prefix_cache: bm.stats(),
            preemptions: self.scheduler.num_preemptions(),
            ..self.counters.clone()
        };
        if let Ok(mut s) = self.stats.lock() {
            *s = snapshot;
        }
    }
}
