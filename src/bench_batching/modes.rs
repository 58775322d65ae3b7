//! The three ways of serving the same workload.
//!
//! - `sequential`: one request at a time, start to finish.
//! - `static`: the classic batch server. When it is idle it takes up to B
//!   waiting requests, prefills them together and decodes them together
//!   until the slowest finishes; newcomers wait for the whole batch. Each
//!   sequence owns a contiguous KV region of `max_model_len` slots, so B is
//!   at most `KV budget / max_model_len`. (Generous to it: finished rows drop
//!   out of the decode step instead of computing padding.)
//! - `continuous`: sdlab's engine: paged KV blocks handed out as sequences
//!   grow, and the batch re-formed at every step (iteration-level batching).
//!
//! `sequential` is `static` with B = 1: the same code, so the comparison is
//! only about batching. All modes run the same model, sampler (greedy over
//! the full vocabulary) and workload.

use super::workload::{Request, Timing};
use crate::latency::{Latency, Stats};
use anyhow::{bail, Context, Result};
use models::gpu::GpuLlama;
use models::{KvCache, Llama, SeqChunk, TokenizerInfo};
use server::engine::{Engine, EngineConfig, EngineEvent, GenerateRequest};
use server::lora::ActiveAdapter;
use server::runner::Device;
use server::sampler::{Sampler, SamplingParams};
use std::sync::Arc;
use std::time::Instant;

/// Memory-side results of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvAccount {
    /// Most KV token slots held at once.
    pub peak_slots: usize,
    /// Token slots handed to sequences, summed over sequences.
    pub allocated_slots: usize,
    /// Of those, slots a sequence wrote a key/value into.
    pub written_slots: usize,
    /// Most sequences in one batch.
    pub max_concurrent_seqs: usize,
}

/// Timings (in workload order) and the KV accounting of one mode's run.
pub struct ModeRun {
    pub timings: Vec<Timing>,
    /// The generated token ids of each request, in workload order.
    pub outputs: Vec<Vec<u32>>,
    pub kv: KvAccount,
    pub started: Instant,
}

/// What every report of a run starts from: wall time from the run's start
/// to the last finish, output tokens, and TTFT / TPOT percentiles.
pub struct RunSummary {
    pub duration_s: f64,
    pub output_tokens: usize,
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
}

impl ModeRun {
    pub fn summary(&self) -> RunSummary {
        let end = self
            .timings
            .iter()
            .map(|t| t.finish)
            .max()
            .unwrap_or(self.started);
        RunSummary {
            duration_s: (end - self.started).as_secs_f64().max(1e-9),
            output_tokens: self.timings.iter().map(|t| t.output_tokens).sum(),
            ttft_ms: self
                .timings
                .iter()
                .map(|t| t.ttft())
                .collect::<Latency>()
                .stats(),
            tpot_ms: self
                .timings
                .iter()
                .filter_map(|t| t.tpot())
                .collect::<Latency>()
                .stats(),
        }
    }
}

/// KV slots a finished sequence wrote: its prompt and every generated token
/// but the last (which is sampled, never fed back).
fn written(r: &Request) -> usize {
    r.prompt.len() + r.output_len - 1
}

fn greedy(output_len: usize) -> SamplingParams {
    SamplingParams {
        max_tokens: output_len,
        ignore_eos: true,
        ..SamplingParams::greedy(output_len)
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// The decoder `static` steps by hand, with its KV pools, on the CPU or
/// the GPU.
enum Stepper<'a> {
    Cpu(&'a Llama, KvCache),
    Gpu(Box<GpuLlama>),
}

impl<'a> Stepper<'a> {
    fn new(model: &'a Llama, blocks: usize, block_size: usize, device: Device) -> Result<Self> {
        Ok(match device.resolve().map_err(anyhow::Error::msg)? {
            Some(ctx) => Self::Gpu(Box::new(GpuLlama::new(ctx, model, blocks, block_size)?)),
            None => Self::Cpu(model, KvCache::new(&model.cfg, blocks, block_size)),
        })
    }

    fn vocab_size(&self) -> usize {
        match self {
            Self::Cpu(m, _) => m.cfg.vocab_size,
            Self::Gpu(g) => g.cfg().vocab_size,
        }
    }

    fn forward(
        &mut self,
        tokens: &[u32],
        chunks: &[SeqChunk<'_>],
        rows: &[usize],
    ) -> models::Result<Vec<f32>> {
        match self {
            Self::Cpu(m, cache) => m.forward(tokens, chunks, rows, cache),
            Self::Gpu(g) => g.forward(tokens, chunks, rows),
        }
    }
}

/// `static` (and, with `batch_limit` 1, `sequential`) on the calling thread.
pub fn run_static(
    model: &Llama,
    work: &[Request],
    batch_limit: usize,
    max_model_len: usize,
    block_size: usize,
    device: Device,
) -> Result<ModeRun> {
    if batch_limit == 0 {
        bail!("the KV budget holds no sequence of --max-model-len {max_model_len} tokens");
    }
    if let Some(r) = work.iter().find(|r| written(r) + 1 > max_model_len) {
        bail!(
            "a request needs {} tokens, more than --max-model-len {max_model_len}",
            written(r) + 1
        );
    }
    // One contiguous region of `max_model_len` slots per batch row.
    let blocks_per_seq = max_model_len.div_ceil(block_size);
    let mut model = Stepper::new(model, blocks_per_seq * batch_limit, block_size, device)?;
    let regions: Vec<Vec<u32>> = (0..batch_limit)
        .map(|i| ((i * blocks_per_seq) as u32..((i + 1) * blocks_per_seq) as u32).collect())
        .collect();
    let vocab = model.vocab_size();
    let started = Instant::now();
    let mut timings: Vec<Option<Timing>> = vec![None; work.len()];
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); work.len()];
    let mut kv = KvAccount {
        peak_slots: 0,
        allocated_slots: 0,
        written_slots: 0,
        max_concurrent_seqs: 0,
    };
    let mut next = 0;
    while next < work.len() {
        // Idle: wait for the next arrival, then take what has arrived.
        sleep_until(started + work[next].arrival);
        let now = Instant::now();
        let mut batch: Vec<usize> = Vec::new();
        while next < work.len() && batch.len() < batch_limit && started + work[next].arrival <= now
        {
            batch.push(next);
            next += 1;
        }
        kv.max_concurrent_seqs = kv.max_concurrent_seqs.max(batch.len());
        kv.peak_slots = kv.peak_slots.max(batch.len() * blocks_per_seq * block_size);
        for &i in &batch {
            kv.allocated_slots += blocks_per_seq * block_size;
            kv.written_slots += written(&work[i]);
        }

        // Prefill every prompt of the batch in one forward pass.
        let mut samplers: Vec<Sampler> = batch
            .iter()
            .map(|&i| Sampler::new(greedy(work[i].output_len), &work[i].prompt))
            .collect();
        let mut tokens = Vec::new();
        let mut rows = Vec::new();
        let mut chunks = Vec::new();
        for (slot, &i) in batch.iter().enumerate() {
            tokens.extend_from_slice(&work[i].prompt);
            rows.push(tokens.len() - 1);
            chunks.push(SeqChunk {
                block_table: &regions[slot],
                start: 0,
                len: work[i].prompt.len(),
                adapter: None,
            });
        }
        let logits = model.forward(&tokens, &chunks, &rows)?;
        let first = Instant::now();
        let mut last: Vec<u32> = Vec::with_capacity(batch.len());
        let mut produced = vec![1usize; batch.len()];
        for (slot, row) in logits.chunks_exact(vocab).enumerate() {
            let t = samplers[slot].sample(row).token_id;
            outputs[batch[slot]].push(t);
            last.push(t);
        }
        // Decode until the slowest member is done.
        loop {
            let live: Vec<usize> = (0..batch.len())
                .filter(|&s| produced[s] < work[batch[s]].output_len)
                .collect();
            if live.is_empty() {
                break;
            }
            let toks: Vec<u32> = live.iter().map(|&s| last[s]).collect();
            let chunks: Vec<SeqChunk> = live
                .iter()
                .map(|&s| SeqChunk {
                    block_table: &regions[s],
                    start: work[batch[s]].prompt.len() + produced[s] - 1,
                    len: 1,
                    adapter: None,
                })
                .collect();
            let rows: Vec<usize> = (0..live.len()).collect();
            let logits = model.forward(&toks, &chunks, &rows)?;
            let now = Instant::now();
            for (&s, row) in live.iter().zip(logits.chunks_exact(vocab)) {
                last[s] = samplers[s].sample(row).token_id;
                outputs[batch[s]].push(last[s]);
                produced[s] += 1;
                if produced[s] == work[batch[s]].output_len {
                    let i = batch[s];
                    timings[i] = Some(Timing {
                        arrival: started + work[i].arrival,
                        first_token: first,
                        finish: now,
                        output_tokens: produced[s],
                    });
                }
            }
        }
        // One-token requests finished at their first token.
        for (s, &i) in batch.iter().enumerate() {
            if timings[i].is_none() {
                timings[i] = Some(Timing {
                    arrival: started + work[i].arrival,
                    first_token: first,
                    finish: first,
                    output_tokens: produced[s],
                });
            }
        }
    }
    Ok(ModeRun {
        timings: timings
            .into_iter()
            .map(|t| t.expect("every request ran"))
            .collect(),
        outputs,
        kv,
        started,
    })
}

/// Limits of the `continuous` run.
pub struct ContinuousLimits {
    pub num_blocks: usize,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    /// Where the engine's model runs.
    pub device: Device,
}

/// `continuous`: the workload replayed into sdlab's engine at its arrival
/// times; one thread per request timestamps the events as they stream out.
pub fn run_continuous(
    model: Llama,
    tokenizer: TokenizerInfo,
    work: &[Request],
    limits: &ContinuousLimits,
) -> Result<ModeRun> {
    run_continuous_with(model, tokenizer, work, &[], limits)
}

/// [`run_continuous`] with request `i` under LoRA adapter `adapters[i]`
/// (none where the slice is shorter).
pub fn run_continuous_with(
    model: Llama,
    tokenizer: TokenizerInfo,
    work: &[Request],
    adapters: &[Option<Arc<ActiveAdapter>>],
    limits: &ContinuousLimits,
) -> Result<ModeRun> {
    let runner =
        server::runner::build_runner(model, limits.num_blocks, limits.block_size, limits.device)
            .map_err(anyhow::Error::msg)?;
    let engine = Engine::start(
        runner,
        tokenizer,
        EngineConfig {
            num_blocks: limits.num_blocks,
            block_size: limits.block_size,
            max_num_seqs: limits.max_num_seqs,
            max_num_batched_tokens: limits.max_num_batched_tokens,
            max_model_len: limits.max_model_len,
            // Random prompts share no prefix; keep the comparison about batching.
            enable_prefix_caching: false,
            speculative: None,
        },
    );
    let started = Instant::now();
    let mut collectors = Vec::with_capacity(work.len());
    for (i, r) in work.iter().enumerate() {
        let arrival = started + r.arrival;
        sleep_until(arrival);
        let (_, mut rx) = engine
            .add_request(GenerateRequest {
                prompt_tokens: r.prompt.clone(),
                params: greedy(r.output_len),
                adapter: adapters.get(i).cloned().flatten(),
                resume_tokens: 0,
            })
            .context("the engine refused a request")?;
        let want = r.output_len;
        collectors.push(std::thread::spawn(move || -> Result<(Timing, Vec<u32>)> {
            let mut first = None;
            let mut ids = Vec::with_capacity(want);
            while let Some(ev) = rx.blocking_recv() {
                match ev {
                    EngineEvent::Token { token_id, .. } => {
                        first.get_or_insert_with(Instant::now);
                        ids.push(token_id);
                    }
                    EngineEvent::Finished { usage, error, .. } => {
                        let finish = Instant::now();
                        if let Some(e) = error {
                            bail!("request failed: {e}");
                        }
                        if ids.len() != want || usage.completion_tokens != want {
                            bail!(
                                "asked for {want} tokens, streamed {}, usage says {}",
                                ids.len(),
                                usage.completion_tokens
                            );
                        }
                        let timing = Timing {
                            arrival,
                            first_token: first.unwrap_or(finish),
                            finish,
                            output_tokens: ids.len(),
                        };
                        return Ok((timing, ids));
                    }
                }
            }
            bail!("the engine stopped before the request finished")
        }));
    }
    let (timings, outputs) = collectors
        .into_iter()
        .map(|h| h.join().expect("collector thread"))
        .collect::<Result<(Vec<_>, Vec<_>)>>()?;
    let stats = engine.stats();
    let bs = limits.block_size;
    let (allocated, written_total) = work.iter().fold((0, 0), |(a, w), r| {
        // The block manager hands out whole blocks as a sequence grows.
        (a + written(r).div_ceil(bs) * bs, w + written(r))
    });
    Ok(ModeRun {
        timings,
        outputs,
        kv: KvAccount {
            peak_slots: stats.peak_used_blocks * bs,
            allocated_slots: allocated,
            written_slots: written_total,
            max_concurrent_seqs: stats.peak_running,
        },
        started,
    })
}
