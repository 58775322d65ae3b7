//! The narrow interface between the engine and a model.
//!
//! The engine only needs "run these chunks, give me these logits" and the
//! vocabulary size; [`LlamaRunner`] provides it for sdlab's decoder and its
//! KV cache. Tests can plug in anything else that implements [`ModelRunner`].

use crate::lora::ActiveAdapter;
use models::{KvCache, Llama, SeqChunk};
use std::sync::Arc;

/// One sequence's chunk in a step.
#[derive(Debug, Clone)]
pub struct BatchSeq {
    pub tokens: Vec<u32>,
    pub start: usize,
    pub block_table: Vec<u32>,
    /// Return logits for the chunk's last `logit_rows` tokens (1 for a
    /// plain decode or a prompt's last chunk, `1 + draft` when verifying a
    /// speculative draft, 0 mid-prompt).
    pub logit_rows: usize,
    /// The LoRA adapter this sequence runs under.
    pub adapter: Option<Arc<ActiveAdapter>>,
}

pub trait ModelRunner: Send {
    fn vocab_size(&self) -> usize;
    /// Logits `[sum of logit_rows, vocab]`, in batch order.
    fn forward(&mut self, batch: &[BatchSeq]) -> Result<Vec<f32>, String>;
}

/// sdlab's Llama decoder plus the KV block pool it reads and writes.
pub struct LlamaRunner {
    pub model: Llama,
    pub cache: KvCache,
}

impl ModelRunner for LlamaRunner {
    fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    fn forward(&mut self, batch: &[BatchSeq]) -> Result<Vec<f32>, String> {
        let mut tokens = Vec::new();
        let mut rows = Vec::new();
        let mut chunks = Vec::with_capacity(batch.len());
        for s in batch {
            tokens.extend_from_slice(&s.tokens);
            rows.extend(tokens.len() - s.logit_rows.min(s.tokens.len())..tokens.len());
            chunks.push(SeqChunk {
                block_table: &s.block_table,
                start: s.start,
                len: s.tokens.len(),
                adapter: s.adapter.as_deref().map(|a| &a.weights),
            });
        }
        self.model
            .forward(&tokens, &chunks, &rows, &mut self.cache)
            .map_err(|e| e.to_string())
    }
}

/// Chaos monkey's latency: a runner that sleeps before every step.
pub struct SlowRunner<R> {
    pub inner: R,
    pub delay: std::time::Duration,
}

impl<R: ModelRunner> ModelRunner for SlowRunner<R> {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn forward(&mut self, batch: &[BatchSeq]) -> Result<Vec<f32>, String> {
        std::thread::sleep(self.delay);
        self.inner.forward(batch)
    }
}

/// Engine limits as the CLI takes them; turned into an [`EngineConfig`] once
/// the model (and so the KV bytes per token) is known.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub kv_cache_mb: usize,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    /// 0: the model's own maximum.
    pub max_model_len: usize,
    pub enable_prefix_caching: bool,
    /// Prompt-lookup speculative decoding; `None` is off.
    pub speculative: Option<crate::spec_decode::NgramConfig>,
    /// Chaos: sleep this long before every model step (0: off), so load
    /// and failover tests can kill a replica mid-stream.
    pub chaos_step_delay: std::time::Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            kv_cache_mb: 512,
            block_size: 16,
            max_num_seqs: 32,
            max_num_batched_tokens: 512,
            max_model_len: 0,
            enable_prefix_caching: true,
            speculative: None,
            chaos_step_delay: std::time::Duration::ZERO,
        }
    }
}

/// Starts an engine over a loaded model with a KV cache of `kv_cache_mb`.
pub fn start_llama_engine(
    loaded: models::LoadedModel,
    opts: &EngineOptions,
) -> Result<crate::engine::Engine, String> {
    let cfg = &loaded.model.cfg;
    if opts.block_size == 0 || opts.max_num_seqs == 0 || opts.max_num_batched_tokens == 0 {
        return Err(
            "--block-size, --max-num-seqs and --max-num-batched-tokens must be positive".into(),
        );
    }
    if let Some(spec) = &opts.speculative {
        spec.validate()?;
    }
    let num_blocks = KvCache::blocks_for_mb(cfg, opts.kv_cache_mb, opts.block_size);
    if num_blocks == 0 {
        return Err(format!(
            "--kv-cache-mb {} holds no block of {} tokens ({} bytes per token)",
            opts.kv_cache_mb,
            opts.block_size,
            cfg.kv_bytes_per_token()
        ));
    }
    let max_model_len = match opts.max_model_len {
        0 => cfg.max_position_embeddings,
        n if n > cfg.max_position_embeddings => {
            return Err(format!(
                "--max-model-len {n} exceeds the model's {} positions",
                cfg.max_position_embeddings
            ));
        }
        n => n,
    };
    let config = crate::engine::EngineConfig {
        num_blocks,
        block_size: opts.block_size,
        max_num_seqs: opts.max_num_seqs,
        max_num_batched_tokens: opts.max_num_batched_tokens,
        max_model_len,
        enable_prefix_caching: opts.enable_prefix_caching,
        speculative: opts.speculative,
    };
    let cache = KvCache::new(cfg, num_blocks, opts.block_size);
    let runner = LlamaRunner {
        model: loaded.model,
        cache,
    };
    let runner: Box<dyn ModelRunner> = if opts.chaos_step_delay.is_zero() {
        Box::new(runner)
    } else {
        Box::new(SlowRunner {
            inner: runner,
            delay: opts.chaos_step_delay,
        })
    };
    Ok(crate::engine::Engine::start(
        runner,
        loaded.tokenizer,
        config,
    ))
}
