//! Continuous batching: re-form the batch at every decode step, instead of
//! serving requests one at a time or in fixed batches.
//!
//! **The pattern.** Decoding one token of one sequence reads every weight of
//! the model; decoding one token of sixteen sequences reads them once too. A
//! small model on a CPU (or any model on a GPU) is bound by that reading, so
//! a batch of B costs little more than one sequence and gives B tokens.
//! Requests arrive at random times and want different numbers of tokens;
//! the question is how to keep the batch full.
//!
//! **The naive way** (`sequential`) serves one request from prompt to last
//! token, then the next: every step produces one token and later arrivals
//! queue behind the whole of every earlier request. The middle column
//! (`static`, the `_static` metrics) is the classic batch server: when idle
//! it takes the requests that have arrived (up to what fits the KV budget
//! when each reserves a `max_model_len` region) and decodes them together
//! until the *slowest* finishes; a request arriving meanwhile waits for the
//! whole batch, and finished rows leave holes.
//!
//! **The optimal way** (`continuous`, sdlab's engine: `server::engine` and
//! its scheduler, after Orca's iteration-level scheduling and vLLM) decides
//! the batch at every step: a finished sequence leaves at once and a new
//! request joins at the next step (its prompt prefilled alongside the others'
//! decode tokens, chunked to a token budget), with paged KV blocks so that
//! memory follows the real lengths. The batch stays as full as the traffic
//! allows, so throughput rises and nobody waits for a stranger's long
//! answer.
//!
//! **The numbers.** `output_tok_s` (generated tokens over the wall time from
//! the first arrival to the last finish), `requests_per_s`, and time to
//! first token (`ttft_p50_ms`, `ttft_p99_ms`) measured from each request's
//! *intended* arrival, so queueing counts. All three modes run the real
//! SmolLM2-135M (Q4_1) with greedy sampling over the same seeded workload
//! (the modules of `sdlab bench batching`, at a small size);
//! `same_tokens_as_sequential` counts requests whose tokens equal those they
//! got alone: batching must not change answers.
//!
//! **In production.** vLLM, TGI, SGLang, TensorRT-LLM (in-flight batching)
//! and llama.cpp's server (slots with a shared batch) all batch at the
//! iteration level; they add chunked prefill, preemption and priority on
//! top, and speculative decoding fills the batch further.

use crate::bench_batching::modes::{self, ContinuousLimits, ModeRun};
use crate::bench_batching::workload::WorkloadSpec;
use anyhow::{bail, Result};
use hld::LessonReport;
use models::LoadOptions;
use server::runner::Device;

/// The lesson's command-line name.
pub const NAME: &str = "continuous-batching";
/// A short human title.
pub const TITLE: &str =
    "Continuous batching: one request at a time and static batches against iteration-level batching";

/// Requests in the workload.
const NUM_REQUESTS: usize = 14;
/// Poisson arrivals per second: the requests arrive within about a second.
const REQUEST_RATE: f64 = 12.0;
/// KV budget of every mode, in tokens.
const KV_BUDGET_TOKENS: usize = 2048;
/// The longest sequence accepted: `static`'s region per sequence.
const MAX_MODEL_LEN: usize = 512;
const BLOCK_SIZE: usize = 16;
/// The engine's sequence limit (the workload's size: the KV budget decides).
const MAX_NUM_SEQS: usize = 16;

/// The report's numbers of one mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub output_tok_s: f64,
    pub requests_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub max_concurrent_seqs: usize,
}

/// Throughput and TTFT of one mode's run.
pub fn measure(run: &ModeRun) -> Measured {
    let s = run.summary();
    let ttft = |f: fn(&crate::latency::Stats) -> f64| s.ttft_ms.as_ref().map_or(0.0, f);
    Measured {
        output_tok_s: s.output_tokens as f64 / s.duration_s,
        requests_per_s: run.timings.len() as f64 / s.duration_s,
        ttft_p50_ms: ttft(|t| t.p50),
        ttft_p99_ms: ttft(|t| t.p99),
        max_concurrent_seqs: run.kv.max_concurrent_seqs,
    }
}

/// Requests of `b` whose tokens equal those of `a` (same workload order).
pub fn same_outputs(a: &ModeRun, b: &ModeRun) -> usize {
    a.outputs
        .iter()
        .zip(&b.outputs)
        .filter(|(x, y)| x == y)
        .count()
}

fn put(r: LessonReport, naive: bool, suffix: &str, m: &Measured) -> LessonReport {
    let add = |r: LessonReport, k: &str, v: f64| {
        let k = format!("{k}{suffix}");
        if naive {
            r.naive(&k, v)
        } else {
            r.optimal(&k, v)
        }
    };
    let r = add(r, "output_tok_s", m.output_tok_s);
    let r = add(r, "requests_per_s", m.requests_per_s);
    let r = add(r, "ttft_p50_ms", m.ttft_p50_ms);
    let r = add(r, "ttft_p99_ms", m.ttft_p99_ms);
    add(r, "max_concurrent_seqs", m.max_concurrent_seqs as f64)
}

pub fn lesson(seed: u64) -> Result<LessonReport> {
    let loaded = models::load(models::loader::DEFAULT_MODEL, LoadOptions::default())?;
    let spec = WorkloadSpec {
        num_prompts: NUM_REQUESTS,
        request_rate: REQUEST_RATE,
        prompt_len: (8, 48),
        output_len: (16, 48),
        seed,
    };
    let work = spec.build(loaded.model.cfg.vocab_size);
    let static_b = KV_BUDGET_TOKENS / MAX_MODEL_LEN;
    let sequential = modes::run_static(
        &loaded.model,
        &work,
        1,
        MAX_MODEL_LEN,
        BLOCK_SIZE,
        Device::Cpu,
    )?;
    let static_run = modes::run_static(
        &loaded.model,
        &work,
        static_b,
        MAX_MODEL_LEN,
        BLOCK_SIZE,
        Device::Cpu,
    )?;
    let continuous = modes::run_continuous(
        loaded.model,
        loaded.tokenizer,
        &work,
        &ContinuousLimits {
            num_blocks: KV_BUDGET_TOKENS / BLOCK_SIZE,
            block_size: BLOCK_SIZE,
            max_num_seqs: MAX_NUM_SEQS,
            max_num_batched_tokens: 512,
            max_model_len: MAX_MODEL_LEN,
            device: Device::Cpu,
        },
    )?;
    let want: usize = work.iter().map(|r| r.output_len).sum();
    for (name, run) in [
        ("sequential", &sequential),
        ("static", &static_run),
        ("continuous", &continuous),
    ] {
        let got: usize = run.timings.iter().map(|t| t.output_tokens).sum();
        if got != want {
            bail!("{name} produced {got} tokens, the workload asked for {want}");
        }
    }
    let (seq, stat, cont) = (
        measure(&sequential),
        measure(&static_run),
        measure(&continuous),
    );
    let report = LessonReport::new(NAME, TITLE);
    let report = put(report, true, "", &seq);
    let report = put(report, true, "_static", &stat);
    let report = put(report, false, "", &cont);
    Ok(report
        .both("requests", NUM_REQUESTS as f64, NUM_REQUESTS as f64)
        .naive(
            "same_tokens_as_sequential_static",
            same_outputs(&sequential, &static_run) as f64,
        )
        .optimal(
            "same_tokens_as_sequential",
            same_outputs(&sequential, &continuous) as f64,
        )
        .notes(format!(
            "{NUM_REQUESTS} requests (prompts 8-48 tokens, outputs 16-48, {want} output tokens in all) arriving \
             at {REQUEST_RATE}/s on SmolLM2-135M Q4_1, greedy, KV budget {KV_BUDGET_TOKENS} tokens for every mode \
             (sized down from `sdlab bench batching`'s 32 requests of up to 448 tokens). Sequential: {:.0} tok/s, \
             TTFT p99 {:.0} ms (late arrivals wait for every earlier request). Static batches of up to {static_b} \
             ({MAX_MODEL_LEN}-token regions): {:.0} tok/s, TTFT p99 {:.0} ms. Continuous (paged blocks, the batch \
             re-formed every step, up to {} sequences at once): {:.0} tok/s ({:.1}x sequential), TTFT p99 {:.0} ms, \
             and {}/{NUM_REQUESTS} requests got exactly the tokens they got alone. On a 2-core CPU the batch \
             pays more per step than on a GPU, so the gain is smaller than a GPU server's.",
            seq.output_tok_s,
            seq.ttft_p99_ms,
            stat.output_tok_s,
            stat.ttft_p99_ms,
            cont.max_concurrent_seqs,
            cont.output_tok_s,
            cont.output_tok_s / seq.output_tok_s.max(1e-9),
            cont.ttft_p99_ms,
            same_outputs(&sequential, &continuous),
        )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_batching::modes::KvAccount;
    use crate::bench_batching::workload::Timing;
    use std::time::{Duration, Instant};

    fn run(ttfts_ms: &[u64], outputs: Vec<Vec<u32>>) -> ModeRun {
        let started = Instant::now();
        let timings = ttfts_ms
            .iter()
            .map(|&t| Timing {
                arrival: started,
                first_token: started + Duration::from_millis(t),
                finish: started + Duration::from_millis(1000),
                output_tokens: 10,
            })
            .collect();
        ModeRun {
            timings,
            outputs,
            kv: KvAccount {
                max_concurrent_seqs: 2,
                ..KvAccount::default()
            },
            started,
        }
    }

    #[test]
    fn measure_reads_throughput_and_ttft_from_the_timings() {
        let m = measure(&run(&[100, 300], vec![]));
        // 20 tokens and 2 requests over one second.
        assert!((m.output_tok_s - 20.0).abs() < 0.5, "{m:?}");
        assert!((m.requests_per_s - 2.0).abs() < 0.05, "{m:?}");
        assert!(m.ttft_p50_ms >= 99.0 && m.ttft_p99_ms >= 299.0, "{m:?}");
        assert_eq!(m.max_concurrent_seqs, 2);
    }

    #[test]
    fn same_outputs_counts_equal_requests() {
        let a = run(&[1, 1, 1], vec![vec![1, 2], vec![3], vec![4]]);
        let b = run(&[1, 1, 1], vec![vec![1, 2], vec![5], vec![4]]);
        assert_eq!(same_outputs(&a, &b), 2);
    }

    #[test]
    fn put_suffixes_the_static_column() {
        let m = measure(&run(&[100], vec![]));
        let r = put(LessonReport::new("x", "y"), true, "_static", &m);
        assert!(r.naive.contains_key("output_tok_s_static"));
        assert!(r.optimal.is_empty());
    }
}
