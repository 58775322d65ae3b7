//! The narrow interface between the engine and a model.
//!
//! The engine only needs "run these chunks, give me these logits" and the
//! vocabulary size; [`LlamaRunner`] provides it for sdlab's decoder and its
//! KV cache, [`GpuRunner`] for the same decoder on the GPU
//! ([`models::gpu::GpuLlama`]). Tests can plug in anything else that
//! implements [`ModelRunner`].

use crate::lora::ActiveAdapter;
use models::gpu::{GpuContext, GpuLlama};
use models::{KvCache, Llama, SeqChunk};
use std::str::FromStr;
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
    /// Where the model runs, for logs.
    fn device(&self) -> String {
        "CPU".into()
    }
}

/// sdlab's Llama decoder plus the KV block pool it reads and writes.
pub struct LlamaRunner {
    pub model: Llama,
    pub cache: KvCache,
}

/// A step's batch flattened as the decoders take it: all tokens, the rows
/// that need logits, one chunk per sequence.
fn flatten(batch: &[BatchSeq]) -> (Vec<u32>, Vec<usize>, Vec<SeqChunk<'_>>) {
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
    (tokens, rows, chunks)
}

impl ModelRunner for LlamaRunner {
    fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    fn forward(&mut self, batch: &[BatchSeq]) -> Result<Vec<f32>, String> {
        let (tokens, rows, chunks) = flatten(batch);
        self.model
            .forward(&tokens, &chunks, &rows, &mut self.cache)
            .map_err(|e| e.to_string())
    }
}

/// The decoder on the GPU: weights and KV pools live on the device; per
/// step the ids, positions and block tables go up and the logits rows come
/// down. LoRA adapters run there too (BGMV, their factors kept on the
/// device).
pub struct GpuRunner {
    pub model: GpuLlama,
}

impl GpuRunner {
    /// Uploads `model` to `ctx`'s device with a KV pool of `num_blocks`
    /// blocks of `block_size` tokens.
    pub fn new(
        ctx: Arc<GpuContext>,
        model: &Llama,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self, String> {
        let model = GpuLlama::new(ctx, model, num_blocks, block_size)
            .map_err(|e| format!("uploading the model to the GPU: {e}"))?;
        tracing::info!(
            "{:.1} MiB of weights on the GPU",
            model.weight_bytes() as f64 / (1 << 20) as f64
        );
        Ok(Self { model })
    }
}

impl ModelRunner for GpuRunner {
    fn vocab_size(&self) -> usize {
        self.model.cfg().vocab_size
    }

    fn forward(&mut self, batch: &[BatchSeq]) -> Result<Vec<f32>, String> {
        let (tokens, rows, chunks) = flatten(batch);
        self.model
            .forward(&tokens, &chunks, &rows)
            .map_err(|e| e.to_string())
    }

    fn device(&self) -> String {
        format!("GPU: {}", self.model.context().adapter())
    }
}

/// Where the model runs (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// sdlab's CPU kernels.
    #[default]
    Cpu,
    /// The WGSL kernels on the Vulkan adapter `kernels::gpu` picks (a
    /// software one such as lavapipe included); an error when there is none.
    Gpu,
    /// The GPU when the adapter picked is hardware (not a software
    /// rasterizer, `DeviceType::Cpu`), else the CPU.
    Auto,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown device `{other}` (cpu, gpu, auto)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Auto => "auto",
        })
    }
}

impl Device {
    /// `Auto` decided without opening a device: `Gpu` when the adapter
    /// `kernels::gpu` would pick is hardware, else `Cpu`. The others as
    /// they are.
    pub fn pick(self) -> Device {
        match self {
            Self::Auto => match GpuContext::probe() {
                Ok(a) if !a.software => Self::Gpu,
                _ => Self::Cpu,
            },
            d => d,
        }
    }

    /// The GPU context to run on, or `None` for the CPU. `Gpu` fails when
    /// no adapter opens; `Auto` falls back to the CPU (with a warning when
    /// a hardware adapter was found but did not open).
    pub fn resolve(self) -> Result<Option<Arc<GpuContext>>, String> {
        match self.pick() {
            Self::Gpu => match GpuContext::new_shared() {
                Ok(ctx) => Ok(Some(ctx)),
                Err(e) if self == Self::Auto => {
                    tracing::warn!("--device auto: the GPU did not open ({e}); running on the CPU");
                    Ok(None)
                }
                Err(e) => Err(format!("--device gpu: {e}")),
            },
            _ => Ok(None),
        }
    }
}

/// The runner for `model` on `device`, with a KV pool of `num_blocks`
/// blocks of `block_size` tokens ([`ModelRunner::device`] says where it
/// landed).
pub fn build_runner(
    model: Llama,
    num_blocks: usize,
    block_size: usize,
    device: Device,
) -> Result<Box<dyn ModelRunner>, String> {
    Ok(match device.resolve()? {
        // The host copy of the weights is dropped once uploaded.
        Some(ctx) => Box::new(GpuRunner::new(ctx, &model, num_blocks, block_size)?),
        None => {
            let cache = KvCache::new(&model.cfg, num_blocks, block_size);
            Box::new(LlamaRunner { model, cache })
        }
    })
}

impl<R: ModelRunner + ?Sized> ModelRunner for Box<R> {
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }

    fn forward(&mut self, batch: &[BatchSeq]) -> Result<Vec<f32>, String> {
        (**self).forward(batch)
    }

    fn device(&self) -> String {
        (**self).device()
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

    fn device(&self) -> String {
        self.inner.device()
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
    /// Where the model runs.
    pub device: Device,
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
            device: Device::Cpu,
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
    let runner = build_runner(loaded.model, num_blocks, opts.block_size, opts.device)?;
    tracing::info!("model runs on the {}", runner.device());
    let runner: Box<dyn ModelRunner> = if opts.chaos_step_delay.is_zero() {
        runner
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
