//! Paged attention: hand out KV-cache memory in small blocks as sequences
//! grow, instead of one region sized for the longest possible sequence.
//!
//! **The pattern.** Every token a model has seen leaves a key and a value
//! per layer in the KV cache (46 KB per token for SmolLM2-135M in f32). The
//! cache, not the weights, decides how many requests a server holds at
//! once, and so its batch size and throughput. Nobody knows how long a
//! request will get until it stops.
//!
//! **The naive way** (contiguous, what `sdlab bench batching`'s `static`
//! mode and a llama-server slot do) gives each sequence one region of
//! `max_model_len` (2048) slots at admission. The few hundred tokens a
//! request really writes sit at its start; the rest is reserved and never
//! touched. With a budget of 16 384 tokens only 8 sequences fit, whatever
//! their real lengths, and most of the memory they hold is empty.
//!
//! **The optimal way** (vLLM's PagedAttention, sdlab's
//! `server::block_manager`) cuts the cache into blocks of 16 slots. A
//! sequence gets blocks for its prompt at admission and one more each time
//! it crosses a block boundary; a block table maps its logical blocks to
//! physical ones anywhere in the pool, and a finished sequence returns its
//! blocks to a free list. The only waste is the unfilled tail of each
//! sequence's last block (half a block on average), so the same memory holds
//! several times as many sequences. When the pool runs dry mid-decode the
//! scheduler preempts the newest sequence (frees its blocks, recomputes it
//! later), the price of not reserving ahead. The attention kernel
//! (`kernels::attention`) reads K/V through the block table, so scattered
//! blocks cost it almost nothing: the lesson times it on the same K/V laid
//! out contiguously and scattered, and checks it against the plain f64
//! reference.
//!
//! **The numbers.** `kv_waste_ratio` is allocated slots never written over
//! allocated (per finished sequence); `max_concurrent_seqs` the most
//! sequences running at once in the same KV budget; `steps` the batched
//! model steps to serve the whole workload (fewer with bigger batches: that
//! is the throughput); `peak_kv_mb` the KV memory held to serve the workload
//! 8 sequences at a time (the contiguous side's limit); `preemptions` what
//! the paged side paid. `attention_us` is one decode step of attention for 8
//! sequences of 512 tokens at the model's head shape, `max_abs_diff` its
//! distance from the reference.
//!
//! **In production.** vLLM introduced PagedAttention (and adds copy-on-write
//! block sharing for beam search and prefix caching on top, as sdlab's block
//! manager also does); TGI, SGLang (RadixAttention) and TensorRT-LLM use
//! paged KV caches; llama.cpp's server keeps a unified cache that slots share
//! instead of per-slot regions for the same reason.

use crate::bench_batching::modes::KvAccount;
use crate::bench_batching::workload::{Request, WorkloadSpec};
use anyhow::{bail, Result};
use hld::report::time_us;
use hld::LessonReport;
use kernels::{KvLayout, SeqAttention};
use models::LoadOptions;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use server::block_manager::{BlockManager, SeqBlocks};
use std::collections::VecDeque;

/// The lesson's command-line name.
pub const NAME: &str = "paged-attention";
/// A short human title.
pub const TITLE: &str =
    "Paged attention: KV blocks handed out as sequences grow, against max-length regions";

/// KV budget every side gets, in token slots.
const KV_BUDGET_TOKENS: usize = 16_384;
/// The longest sequence the server accepts: a contiguous region's size.
const MAX_MODEL_LEN: usize = 2048;
/// Slots per KV block (sdlab's default).
const BLOCK_SIZE: usize = 16;
/// Requests in the workload.
const NUM_REQUESTS: usize = 96;
/// The contiguous side's limit, used as a cap on both sides for `peak_kv_mb`.
const SAME_BATCH: usize = KV_BUDGET_TOKENS / MAX_MODEL_LEN;

/// How KV memory is handed to sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One region of `max_model_len` slots per sequence, held until it ends.
    Contiguous,
    /// Blocks from sdlab's block manager, allocated as the sequence grows.
    Paged,
}

/// What serving a workload under one layout held, wasted and took.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimResult {
    pub kv: KvAccount,
    /// Batched model steps (one prefill or decode token per running sequence).
    pub steps: usize,
    /// Sequences evicted mid-decode for lack of blocks (paged only).
    pub preemptions: usize,
}

/// A running sequence: its request, tokens in the cache, tokens produced.
struct Running {
    req: usize,
    len: usize,
    produced: usize,
    blocks: SeqBlocks,
    region: usize,
}

/// Serves `work` (all arriving at once, first come first served) with the
/// KV memory of `budget_tokens` slots, at most `max_seqs` at a time, and
/// counts the memory. Each step every running sequence feeds one token (a
/// newly admitted one its whole prompt); a sequence writes `prompt + output
/// - 1` slots, the last token being sampled and never fed back.
pub fn simulate(
    work: &[Request],
    layout: Layout,
    budget_tokens: usize,
    max_model_len: usize,
    max_seqs: usize,
) -> Result<SimResult> {
    if let Some(r) = work
        .iter()
        .find(|r| r.prompt.len() + r.output_len > max_model_len)
    {
        bail!(
            "a request of {} tokens is longer than max_model_len {max_model_len}",
            r.prompt.len() + r.output_len
        );
    }
    let mut bm = BlockManager::new(budget_tokens / BLOCK_SIZE, BLOCK_SIZE, false);
    // The contiguous regions not in use.
    let mut free_regions: Vec<usize> = (0..budget_tokens / max_model_len).rev().collect();
    if layout == Layout::Contiguous && free_regions.is_empty() {
        bail!("a budget of {budget_tokens} tokens holds no region of {max_model_len}");
    }
    let mut waiting: VecDeque<usize> = (0..work.len()).collect();
    let mut running: Vec<Running> = Vec::new();
    let mut out = SimResult::default();
    while !waiting.is_empty() || !running.is_empty() {
        // Decode: each running sequence writes its last token. A paged one
        // may need a new block; if none is free, the newest sequence is
        // preempted (its blocks freed, its request back at the queue's head).
        let mut i = 0;
        while i < running.len() {
            let need = running[i].len + 1;
            if layout == Layout::Paged && !bm.allocate_slots(&mut running[i].blocks, need) {
                let mut victim = running.pop().expect("a running sequence");
                bm.free(&mut victim.blocks);
                waiting.push_front(victim.req);
                out.preemptions += 1;
                continue;
            }
            running[i].len = need;
            running[i].produced += 1;
            i += 1;
        }
        // Admit: prefill waiting prompts while there is room.
        while running.len() < max_seqs {
            let Some(&req) = waiting.front() else { break };
            let prompt = work[req].prompt.len();
            let mut seq = Running {
                req,
                len: prompt,
                produced: 1,
                blocks: SeqBlocks::default(),
                region: 0,
            };
            let admitted = match layout {
                Layout::Contiguous => match free_regions.pop() {
                    Some(r) => {
                        seq.region = r;
                        true
                    }
                    None => false,
                },
                Layout::Paged => bm.allocate_slots(&mut seq.blocks, prompt),
            };
            if !admitted {
                break;
            }
            waiting.pop_front();
            running.push(seq);
        }
        if running.is_empty() {
            bail!("a prompt does not fit the KV budget of {budget_tokens} tokens");
        }
        out.steps += 1;
        out.kv.max_concurrent_seqs = out.kv.max_concurrent_seqs.max(running.len());
        let held = match layout {
            Layout::Contiguous => running.len() * max_model_len,
            Layout::Paged => (bm.num_blocks() - bm.num_free_blocks()) * BLOCK_SIZE,
        };
        out.kv.peak_slots = out.kv.peak_slots.max(held);
        // Finish: account the memory each finished sequence was given.
        let mut k = 0;
        while k < running.len() {
            let r = &work[running[k].req];
            if running[k].produced < r.output_len {
                k += 1;
                continue;
            }
            let mut done = running.remove(k);
            out.kv.written_slots += done.len;
            out.kv.allocated_slots += match layout {
                Layout::Contiguous => {
                    free_regions.push(done.region);
                    max_model_len
                }
                Layout::Paged => {
                    let slots = done.blocks.block_table.len() * BLOCK_SIZE;
                    bm.free(&mut done.blocks);
                    slots
                }
            };
        }
    }
    Ok(out)
}

/// Allocated slots never written, over all allocated.
pub fn waste_ratio(kv: &KvAccount) -> f64 {
    1.0 - kv.written_slots as f64 / kv.allocated_slots.max(1) as f64
}

/// One decode step of attention, the same K/V laid out two ways.
pub struct AttentionRun {
    /// The kernel over each sequence's blocks in one contiguous run.
    pub contiguous_us: f64,
    /// The kernel over blocks scattered at random through the pool.
    pub paged_us: f64,
    /// Each layout's largest distance from the f64 reference.
    pub contiguous_diff: f32,
    pub paged_diff: f32,
}

/// `seqs` decode queries over `context` cached tokens each, `heads` query
/// heads on `kv_heads` KV heads of `head_dim`.
pub fn attention(
    seqs: usize,
    context: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    seed: u64,
) -> Result<AttentionRun> {
    let mut rng = StdRng::seed_from_u64(seed);
    let per_seq = context.div_ceil(BLOCK_SIZE);
    let layout = KvLayout {
        num_blocks: seqs * per_seq,
        block_size: BLOCK_SIZE,
        num_kv_heads: kv_heads,
        head_dim,
    };
    let contiguous: Vec<Vec<u32>> = (0..seqs)
        .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
        .collect();
    let mut shuffled: Vec<u32> = (0..layout.num_blocks as u32).collect();
    shuffled.shuffle(&mut rng);
    let scattered: Vec<Vec<u32>> = shuffled.chunks(per_seq).map(|c| c.to_vec()).collect();

    let row = kv_heads * head_dim;
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let (k, v) = (random(seqs * context * row), random(seqs * context * row));
    let q = random(seqs * heads * head_dim);
    // The same rows into both pools, each at its layout's slots.
    let fill = |tables: &[Vec<u32>]| -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut kc, mut vc) = (vec![0f32; layout.elems()], vec![0f32; layout.elems()]);
        let slots: Vec<usize> = tables
            .iter()
            .flat_map(|t| (0..context).map(|p| layout.slot(t, p)))
            .collect();
        kernels::write_kv(&mut kc, &mut vc, layout, &k, &v, &slots)?;
        Ok((kc, vc))
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    let run = |tables: &[Vec<u32>]| -> Result<(f64, f32)> {
        let (kc, vc) = fill(tables)?;
        let seq = decode_calls(tables, context);
        let mut out = vec![0f32; q.len()];
        kernels::paged_attention(&q, &kc, &vc, layout, heads, &seq, scale, &mut out)?;
        let want = kernels::reference::paged_attention(&q, &kc, &vc, layout, heads, &seq, scale);
        let diff = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let us = time_us(7, 20, |_| {
            kernels::paged_attention(&q, &kc, &vc, layout, heads, &seq, scale, &mut out)
                .expect("shapes were checked by the first call");
        });
        Ok((us, diff))
    };
    let (contiguous_us, contiguous_diff) = run(&contiguous)?;
    let (paged_us, paged_diff) = run(&scattered)?;
    Ok(AttentionRun {
        contiguous_us,
        paged_us,
        contiguous_diff,
        paged_diff,
    })
}

/// One decode query per block table, each over `context` cached tokens.
fn decode_calls(tables: &[Vec<u32>], context: usize) -> Vec<SeqAttention<'_>> {
    tables
        .iter()
        .enumerate()
        .map(|(s, t)| SeqAttention {
            query_start: s,
            query_len: 1,
            context_len: context,
            block_table: t,
        })
        .collect()
}

pub fn lesson(seed: u64) -> Result<LessonReport> {
    // The real model's shape: bytes of KV per token, attention heads.
    let loaded = models::load(models::loader::DEFAULT_MODEL, LoadOptions::default())?;
    let cfg = loaded.model.cfg.clone();
    drop(loaded);
    let spec = WorkloadSpec {
        num_prompts: NUM_REQUESTS,
        request_rate: f64::INFINITY,
        prompt_len: (16, 1024),
        output_len: (16, 512),
        seed,
    };
    let work = spec.build(cfg.vocab_size);
    let sim = |layout, max_seqs| simulate(&work, layout, KV_BUDGET_TOKENS, MAX_MODEL_LEN, max_seqs);
    let (naive, optimal) = (
        sim(Layout::Contiguous, usize::MAX)?,
        sim(Layout::Paged, usize::MAX)?,
    );
    let (naive_same, optimal_same) = (
        sim(Layout::Contiguous, SAME_BATCH)?,
        sim(Layout::Paged, SAME_BATCH)?,
    );
    let mb = |slots: usize| (slots * cfg.kv_bytes_per_token()) as f64 / (1 << 20) as f64;
    let att = attention(8, 512, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, seed)?;
    let mean_len = work
        .iter()
        .map(|r| r.prompt.len() + r.output_len - 1)
        .sum::<usize>() as f64
        / work.len() as f64;
    Ok(LessonReport::new(NAME, TITLE)
        .both("kv_waste_ratio", waste_ratio(&naive.kv), waste_ratio(&optimal.kv))
        .both(
            "max_concurrent_seqs",
            naive.kv.max_concurrent_seqs as f64,
            optimal.kv.max_concurrent_seqs as f64,
        )
        .both("steps", naive.steps as f64, optimal.steps as f64)
        .both(
            "peak_kv_mb",
            mb(naive_same.kv.peak_slots),
            mb(optimal_same.kv.peak_slots),
        )
        .both("preemptions", naive.preemptions as f64, optimal.preemptions as f64)
        .both("attention_us", att.contiguous_us, att.paged_us)
        .both(
            "max_abs_diff",
            att.contiguous_diff as f64,
            att.paged_diff as f64,
        )
        .notes(format!(
            "{NUM_REQUESTS} requests (prompts 16-1024 tokens, outputs 16-512, {mean_len:.0} KV slots each on average) \
             served in a KV budget of {KV_BUDGET_TOKENS} tokens ({:.0} MB for SmolLM2-135M at {} bytes a token). \
             Contiguous regions of {MAX_MODEL_LEN} slots fit {} sequences and leave {:.0} % of what they hold \
             unwritten; sdlab's block manager (blocks of {BLOCK_SIZE}) wastes {:.1} % (the tails of last blocks), runs \
             up to {} sequences at once and serves the workload in {:.1}x fewer batched steps, at the cost of {} \
             preemptions when the pool ran dry. Served {SAME_BATCH} at a time on both sides, the contiguous regions \
             held {:.0} MB at peak, the blocks {:.0} MB. The memory side is the real allocator driven by lengths, not \
             the model (sized down from a real server's minutes of traffic). Attention: one decode step for 8 \
             sequences of 512 tokens at the model's heads ({} query, {} KV, dim {}): {:.0} us over contiguous blocks, \
             {:.0} us over the same K/V scattered through the pool, both within {:.1e} of the f64 reference.",
            mb(KV_BUDGET_TOKENS),
            cfg.kv_bytes_per_token(),
            naive.kv.max_concurrent_seqs,
            100.0 * waste_ratio(&naive.kv),
            100.0 * waste_ratio(&optimal.kv),
            optimal.kv.max_concurrent_seqs,
            naive.steps as f64 / optimal.steps.max(1) as f64,
            optimal.preemptions,
            mb(naive_same.kv.peak_slots),
            mb(optimal_same.kv.peak_slots),
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            att.contiguous_us,
            att.paged_us,
            att.contiguous_diff.max(att.paged_diff),
        )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(prompt: usize, output: usize) -> Request {
        Request {
            arrival: Duration::ZERO,
            prompt: vec![1; prompt],
            output_len: output,
        }
    }

    #[test]
    fn contiguous_holds_max_len_per_sequence() {
        let work = vec![req(10, 7), req(30, 3), req(5, 1)];
        let r = simulate(&work, Layout::Contiguous, 256, 64, usize::MAX).unwrap();
        assert_eq!(r.kv.max_concurrent_seqs, 3);
        assert_eq!(r.kv.allocated_slots, 3 * 64);
        assert_eq!(r.kv.written_slots, 16 + 32 + 5);
        assert_eq!(r.kv.peak_slots, 3 * 64);
        // The longest request: its prefill step and 6 decode steps.
        assert_eq!(r.steps, 7);
        // Two regions: the third request waits for the first to finish.
        let r = simulate(&work, Layout::Contiguous, 128, 64, usize::MAX).unwrap();
        assert_eq!(r.kv.max_concurrent_seqs, 2);
        assert_eq!(r.preemptions, 0);
    }

    #[test]
    fn paged_wastes_only_last_block_tails() {
        let work = vec![req(10, 7), req(30, 3), req(5, 1)];
        let r = simulate(&work, Layout::Paged, 256, 64, usize::MAX).unwrap();
        // 16, 32 and 5 slots written: 1, 2 and 1 blocks of 16.
        assert_eq!(r.kv.written_slots, 53);
        assert_eq!(r.kv.allocated_slots, 64);
        assert_eq!(r.kv.max_concurrent_seqs, 3);
        assert!(waste_ratio(&r.kv) < 0.2);
    }

    #[test]
    fn a_full_pool_preempts_and_still_serves_everything() {
        // 4 blocks of 16: both prompts fit, but not both grown to 40 tokens.
        let work = vec![req(16, 24), req(16, 24)];
        let r = simulate(&work, Layout::Paged, 64, 64, usize::MAX).unwrap();
        assert!(r.preemptions > 0);
        assert_eq!(r.kv.written_slots, 2 * 39);
        assert!(r.kv.peak_slots <= 64);
    }

    #[test]
    fn too_long_requests_and_tiny_budgets_are_errors() {
        assert!(simulate(&[req(60, 10)], Layout::Paged, 256, 64, 4).is_err());
        assert!(simulate(&[req(6, 1)], Layout::Contiguous, 32, 64, 4).is_err());
        assert!(simulate(&[req(40, 1)], Layout::Paged, 32, 64, 4).is_err());
    }

    #[test]
    fn paged_kernel_matches_the_reference_on_scattered_blocks() {
        let a = attention(3, 40, 4, 2, 16, 1).unwrap();
        assert!(a.paged_diff < 1e-5 && a.contiguous_diff < 1e-5);
        assert!(a.paged_us > 0.0 && a.contiguous_us > 0.0);
    }
}
