//! LoRA serving: many fine-tuned variants of one model from one batch,
//! instead of merging one adapter into the weights at a time.
//!
//! **The pattern.** A LoRA adapter fine-tunes a model by adding a low-rank
//! product `B·A` to some weight matrices (rank 8 on the query and value
//! projections here: under 2 MB in f32, against the model's 98 MB file).
//! A service with one adapter per customer or per task has many of them
//! over the same base model, and requests for all of them arrive mixed
//! together.
//!
//! **The naive way** (`merged-swap`) merges an adapter into a copy of the
//! weights (`W + B·A`, re-quantized to Q4_1 as llama.cpp's `export-lora`
//! does), serves that adapter's requests, then merges the next one. Each
//! swap costs a pass over the adapted weights, and a request for the fourth
//! adapter waits for the first three groups to be served: the batch only
//! ever holds one adapter's requests.
//!
//! **The optimal way** (`lora-mixed`, as in vLLM's multi-LoRA, S-LoRA and
//! Punica) keeps the base weights shared and untouched and adds each row's
//! own delta in the same forward pass: `y = x·W + (x·Aᵢ)·Bᵢ` where `i` is
//! the row's adapter, computed for the whole batch by one gathered kernel
//! (BGMV, `kernels::lora`). Adapters are read from disk by the server's
//! registry (`server::lora`, what `--lora-dir` and the load endpoint use)
//! and held side by side; requests for every adapter share every batch.
//! Adding an adapter is a small read, not a merge, and nobody queues behind
//! another adapter's group. The extra matmuls of rank 8 cost little.
//!
//! **The numbers.** `output_tok_s` and TTFT (`ttft_p50_ms`, `ttft_p99_ms`,
//! from the moment every request arrived), `merges` and `swap_ms` (time
//! spent merging), and `mixed_equals_alone`: 1 when every request of the
//! mixed batch got exactly the greedy tokens it gets when served alone under
//! its adapter, so sharing a batch across adapters changes no answer.
//! `same_tokens_as_alone` counts those requests on both sides (a merged,
//! re-quantized model may drift from the adapter it merged).
//!
//! **In production.** vLLM (`--enable-lora`, `--max-loras`, runtime
//! load/unload), LoRAX, TGI's multi-LoRA and S-LoRA serve thousands of
//! adapters this way, paging adapter weights in and out of GPU memory like
//! KV blocks; llama.cpp's server applies adapters per request with scales.

use crate::bench_batching::lora::merged_swap;
use crate::bench_batching::modes::{run_continuous_with, ContinuousLimits, ModeRun};
use crate::bench_batching::workload::WorkloadSpec;
use crate::lora_cmd::write_synth;
use anyhow::{Context, Result};
use hld::LessonReport;
use models::lora::parse_targets;
use models::LoadOptions;
use server::lora::{ActiveAdapter, AdapterRegistry, LoraOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "lora";
/// A short human title.
pub const TITLE: &str =
    "LoRA serving: merging one adapter at a time against a batch mixing adapters (BGMV)";

const NUM_ADAPTERS: usize = 4;
const RANK: usize = 8;
const TARGETS: &str = "q_proj,v_proj";
/// Requests, spread round-robin over the adapters, all arriving at once.
const NUM_REQUESTS: usize = 12;

/// A scratch folder removed when dropped, even on an error path.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Request `i`'s adapter: `i mod N`.
pub fn round_robin(adapters: &[Arc<ActiveAdapter>], n: usize) -> Vec<Option<Arc<ActiveAdapter>>> {
    (0..n)
        .map(|i| Some(adapters[i % adapters.len()].clone()))
        .collect()
}

/// Requests whose tokens in `run` equal `alone`'s (workload order).
pub fn same_as(run: &ModeRun, alone: &[Vec<u32>]) -> usize {
    run.outputs
        .iter()
        .zip(alone)
        .filter(|(a, b)| a == b)
        .count()
}

pub fn lesson(seed: u64) -> Result<LessonReport> {
    let loaded = models::load(models::loader::DEFAULT_MODEL, LoadOptions::default())?;
    let cfg = loaded.model.cfg.clone();
    let targets = parse_targets(TARGETS)?;

    // Random adapters written as PEFT folders (`sdlab lora synth`), then read
    // back through the server's registry as `--lora-dir` does.
    let dir = ScratchDir(
        std::env::temp_dir().join(format!("sdlab-lesson-lora-{}-{seed}", std::process::id())),
    );
    let names: Vec<String> = (0..NUM_ADAPTERS).map(|k| format!("adapter-{k}")).collect();
    for (k, name) in names.iter().enumerate() {
        let seed = seed.wrapping_mul(31).wrapping_add(k as u64);
        write_synth(
            &cfg,
            &loaded.name,
            RANK,
            None,
            &targets,
            seed,
            &dir.0.join(name),
        )
        .with_context(|| format!("writing {name} to {}", dir.0.display()))?;
    }
    let registry = AdapterRegistry::new(
        cfg.clone(),
        &loaded.name,
        LoraOptions {
            lora_dir: Some(dir.0.clone()),
            max_loras: NUM_ADAPTERS,
            ..LoraOptions::default()
        },
    )?;
    let t = Instant::now();
    let adapters: Vec<Arc<ActiveAdapter>> = names
        .iter()
        .map(|n| Ok(registry.acquire(n)?.adapter()))
        .collect::<Result<_>>()?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let adapter_kb = adapters[0].weights.bytes() as f64 / 1024.0;
    drop(dir);

    let spec = WorkloadSpec {
        num_prompts: NUM_REQUESTS,
        request_rate: f64::INFINITY,
        prompt_len: (8, 32),
        output_len: (16, 32),
        seed,
    };
    let work = spec.build(cfg.vocab_size);
    let limits = ContinuousLimits {
        num_blocks: 128,
        block_size: 16,
        max_num_seqs: 16,
        max_num_batched_tokens: 512,
        max_model_len: 512,
        device: server::runner::Device::Cpu,
    };
    let (base, tok) = (&loaded.model, &loaded.tokenizer);
    let per_req = round_robin(&adapters, work.len());
    let mixed = run_continuous_with(base.clone(), tok.clone(), &work, &per_req, &limits)?;
    let (swap, merge_s) = merged_swap(base, tok, &work, &adapters, &limits)?;
    // Each request alone, under its adapter (a batch of one).
    let alone: Vec<Vec<u32>> = work
        .iter()
        .zip(&per_req)
        .map(|(r, a)| {
            let run = run_continuous_with(
                base.clone(),
                tok.clone(),
                std::slice::from_ref(r),
                std::slice::from_ref(a),
                &limits,
            )?;
            Ok(run.outputs.into_iter().next().unwrap_or_default())
        })
        .collect::<Result<_>>()?;

    let (m, s) = (
        super::continuous_batching::measure(&mixed),
        super::continuous_batching::measure(&swap),
    );
    let (same_mixed, same_swap) = (same_as(&mixed, &alone), same_as(&swap, &alone));
    Ok(LessonReport::new(NAME, TITLE)
        .both("output_tok_s", s.output_tok_s, m.output_tok_s)
        .both("ttft_p50_ms", s.ttft_p50_ms, m.ttft_p50_ms)
        .both("ttft_p99_ms", s.ttft_p99_ms, m.ttft_p99_ms)
        .both("merges", NUM_ADAPTERS as f64, 0.0)
        .both("swap_ms", merge_s * 1e3, 0.0)
        .both(
            "max_concurrent_seqs",
            (NUM_REQUESTS.div_ceil(NUM_ADAPTERS)) as f64,
            m.max_concurrent_seqs as f64,
        )
        .both("same_tokens_as_alone", same_swap as f64, same_mixed as f64)
        .optimal(
            "mixed_equals_alone",
            if same_mixed == work.len() { 1.0 } else { 0.0 },
        )
        .notes(format!(
            "{NUM_ADAPTERS} random rank-{RANK} adapters on {TARGETS} ({adapter_kb:.0} KB each) written as PEFT \
             folders and read back by the server's registry in {load_ms:.0} ms; {NUM_REQUESTS} requests (prompts 8-32 \
             tokens, outputs 16-32) all at once, request i under adapter i mod {NUM_ADAPTERS}, on SmolLM2-135M Q4_1 \
             with greedy sampling (sized down from `sdlab bench batching --lora`). Merged-swap: {NUM_ADAPTERS} merges \
             ({:.0} ms in all), one adapter's {} requests per batch, {:.0} tok/s, TTFT p99 {:.0} ms (the last group \
             waits for the others). Mixed: one batch of {} sequences over every adapter through the BGMV kernel, \
             {:.0} tok/s, TTFT p99 {:.0} ms; {same_mixed}/{NUM_REQUESTS} requests got the tokens they get alone \
             (merged and re-quantized: {same_swap}/{NUM_REQUESTS}).",
            merge_s * 1e3,
            NUM_REQUESTS.div_ceil(NUM_ADAPTERS),
            s.output_tok_s,
            s.ttft_p99_ms,
            m.max_concurrent_seqs,
            m.output_tok_s,
            m.ttft_p99_ms,
        )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_batching::modes::KvAccount;
    use models::LoraAdapter;

    fn tiny_adapter(key: u32) -> Arc<ActiveAdapter> {
        let cfg = models::LlamaConfig::from_hf_json(
            r#"{"vocab_size": 32, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2,
                "num_key_value_heads": 1, "rms_norm_eps": 1e-5}"#,
        )
        .unwrap();
        let w = LoraAdapter::synth(&cfg, 2, &parse_targets("q_proj").unwrap(), key as u64).unwrap();
        Arc::new(ActiveAdapter::new(&format!("a{key}"), key, w))
    }

    #[test]
    fn requests_go_round_robin_over_adapters() {
        let ads: Vec<_> = (1..=3).map(tiny_adapter).collect();
        let per = round_robin(&ads, 7);
        let keys: Vec<u32> = per.iter().map(|a| a.as_ref().unwrap().key).collect();
        assert_eq!(keys, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn same_as_counts_matching_outputs() {
        let run = ModeRun {
            timings: vec![],
            outputs: vec![vec![1, 2], vec![3], vec![4, 4]],
            kv: KvAccount::default(),
            started: Instant::now(),
        };
        assert_eq!(same_as(&run, &[vec![1, 2], vec![3], vec![4, 5]]), 2);
    }

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let p = std::env::temp_dir().join(format!("sdlab-lora-scratch-{}", std::process::id()));
        std::fs::create_dir_all(p.join("x")).unwrap();
        drop(ScratchDir(p.clone()));
        assert!(!p.exists());
    }
}
