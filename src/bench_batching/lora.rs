//! The LoRA experiment (`sdlab bench batching --lora`): what serving many
//! adapters from one batch costs, against the naive way.
//!
//! The workload's requests all arrive at once and are spread round-robin
//! over N random adapters of one rank. Every row runs sdlab's continuous
//! engine with the same limits; only the adapter handling differs:
//!
//! - `base`: no adapter (the ceiling).
//! - `lora-1`: every request under one adapter, applied per row (BGMV).
//! - `lora-mixed`: request i under adapter i mod N, all in one batch.
//! - `merged-1`: one adapter merged into the weights (no per-row cost):
//!   what `lora-1` pays for keeping the base shared.
//! - `merged-swap`: the naive multi-adapter server: merge adapter k into a
//!   copy of the weights, serve its requests, then the next adapter. Merge
//!   time and the wait for earlier adapters count (TTFT from the burst).
//!
//! Merging re-quantizes quantized weights to their own format, as
//! llama.cpp's `export-lora` does.

use super::modes::{run_continuous_with, ContinuousLimits, ModeRun};
use super::workload::Request;
use super::Setup;
use crate::latency::Stats;
use anyhow::Result;
use models::lora::Target;
use models::{Llama, LoraAdapter, TokenizerInfo};
use serde::Serialize;
use server::lora::ActiveAdapter;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The adapters to serve.
pub struct LoraSpec {
    pub adapters: usize,
    /// Rounds over every row; each row reports its median.
    pub repeat: usize,
    pub rank: usize,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub struct LoraRow {
    pub mode: &'static str,
    /// Distinct adapters the requests use.
    pub adapters: usize,
    pub duration_s: f64,
    pub output_tokens: usize,
    pub output_throughput: f64,
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    /// Time spent merging adapters into weights.
    pub merge_s: f64,
    /// Lowest and highest output tokens/s over the rounds.
    pub throughput_range: (f64, f64),
}

#[derive(Debug, Serialize)]
pub struct LoraReport {
    pub rank: usize,
    pub targets: Vec<&'static str>,
    pub num_adapters: usize,
    /// Memory of one adapter's factors.
    pub adapter_mb: f64,
    pub rows: Vec<LoraRow>,
    pub ratios: serde_json::Map<String, serde_json::Value>,
}

/// Runs every row on `base` (cloned per row) over the workload as a burst.
pub(super) fn run(
    setup: &Setup,
    base: &Llama,
    tokenizer: &TokenizerInfo,
    concurrency: usize,
    spec: &LoraSpec,
) -> Result<LoraReport> {
    let burst: Vec<Request> = setup
        .work
        .iter()
        .map(|r| Request {
            arrival: Duration::ZERO,
            ..r.clone()
        })
        .collect();
    let adapters: Vec<Arc<ActiveAdapter>> = (0..spec.adapters)
        .map(|k| {
            let w = LoraAdapter::synth(&base.cfg, spec.rank, &spec.targets, 1000 + k as u64)?;
            Ok(Arc::new(ActiveAdapter::new(
                &format!("lora-{k}"),
                k as u32 + 1,
                w,
            )))
        })
        .collect::<Result<_>>()?;
    let limits = setup.continuous_limits(concurrency);
    let run = |model: Llama, work: &[Request], per_req: &[Option<Arc<ActiveAdapter>>]| {
        run_continuous_with(model, tokenizer.clone(), work, per_req, &limits)
    };
    let n = spec.adapters;
    let one: Vec<_> = burst.iter().map(|_| Some(adapters[0].clone())).collect();
    let mixed: Vec<_> = (0..burst.len())
        .map(|i| Some(adapters[i % n].clone()))
        .collect();
    let run_row = |mode: &'static str| -> Result<LoraRow> {
        Ok(match mode {
            "base" => row(mode, 0, &run(base.clone(), &burst, &[])?, 0.0),
            "lora-1" => row(mode, 1, &run(base.clone(), &burst, &one)?, 0.0),
            "lora-mixed" => row(mode, n, &run(base.clone(), &burst, &mixed)?, 0.0),
            "merged-1" => {
                let t = Instant::now();
                let mut merged = base.clone();
                merged.merge_lora(&adapters[0].weights)?;
                let merge_s = t.elapsed().as_secs_f64();
                let mut r = run(merged, &burst, &[])?;
                // The merge happened before the burst could be served.
                r.started -= Duration::from_secs_f64(merge_s);
                for t in &mut r.timings {
                    t.arrival = r.started;
                }
                row(mode, 1, &r, merge_s)
            }
            _ => {
                let (all, merge_total) = merged_swap(base, tokenizer, &burst, &adapters, &limits)?;
                row(mode, n, &all, merge_total)
            }
        })
    };
    // Rounds of every row in turn, so slow spells of a shared machine fall
    // on every row alike; each row keeps its median-throughput run.
    const MODES: [&str; 5] = ["base", "lora-1", "lora-mixed", "merged-1", "merged-swap"];
    let mut runs: Vec<Vec<LoraRow>> = MODES.iter().map(|_| Vec::new()).collect();
    for round in 0..spec.repeat {
        for (i, mode) in MODES.iter().enumerate() {
            eprintln!("lora: {mode} (round {}/{}) ...", round + 1, spec.repeat);
            let r = run_row(mode)?;
            eprintln!("  {:.1} output tok/s", r.output_throughput);
            runs[i].push(r);
        }
    }
    let rows: Vec<LoraRow> = runs
        .into_iter()
        .map(|mut rs| {
            rs.sort_by(|a, b| a.output_throughput.total_cmp(&b.output_throughput));
            let (lo, hi) = (rs[0].output_throughput, rs[rs.len() - 1].output_throughput);
            let mut median = rs.swap_remove(rs.len() / 2);
            median.throughput_range = (lo, hi);
            median
        })
        .collect();

    let find = |m: &str| {
        rows.iter()
            .find(|r| r.mode == m)
            .map(|r| r.output_throughput)
    };
    let mut ratios = serde_json::Map::new();
    for (name, a, b) in [
        (
            "lora_mixed_over_merged_swap_throughput",
            "lora-mixed",
            "merged-swap",
        ),
        ("lora_mixed_over_base_throughput", "lora-mixed", "base"),
        ("lora_1_over_base_throughput", "lora-1", "base"),
        ("lora_1_over_merged_1_throughput", "lora-1", "merged-1"),
    ] {
        if let (Some(a), Some(b)) = (find(a), find(b)) {
            ratios.insert(name.into(), (a / b).into());
        }
    }
    Ok(LoraReport {
        rank: spec.rank,
        targets: spec.targets.iter().map(|t| t.name()).collect(),
        num_adapters: n,
        adapter_mb: adapters[0].weights.bytes() as f64 / (1 << 20) as f64,
        rows,
        ratios,
    })
}

/// The naive multi-adapter server: for each adapter in turn, merge it into a
/// copy of `base` and serve its requests (request i belongs to adapter
/// i mod N) on the continuous engine. Every request counts from the start,
/// so later adapters' requests pay for the earlier merges and groups.
/// Returns the run (in workload order) and the seconds spent merging.
pub(crate) fn merged_swap(
    base: &Llama,
    tokenizer: &TokenizerInfo,
    burst: &[Request],
    adapters: &[Arc<ActiveAdapter>],
    limits: &ContinuousLimits,
) -> Result<(ModeRun, f64)> {
    let n = adapters.len();
    let started = Instant::now();
    let mut slots: Vec<Option<(super::workload::Timing, Vec<u32>)>> = vec![None; burst.len()];
    let mut merge_total = 0.0;
    for (k, adapter) in adapters.iter().enumerate() {
        let ids: Vec<usize> = (k..burst.len()).step_by(n).collect();
        if ids.is_empty() {
            continue;
        }
        let group: Vec<Request> = ids.iter().map(|&i| burst[i].clone()).collect();
        let t = Instant::now();
        let mut merged = base.clone();
        merged.merge_lora(&adapter.weights)?;
        merge_total += t.elapsed().as_secs_f64();
        let r = run_continuous_with(merged, tokenizer.clone(), &group, &[], limits)?;
        for ((&i, timing), out) in ids.iter().zip(r.timings).zip(r.outputs) {
            // Every request arrived with the burst, before the first merge.
            let timing = super::workload::Timing {
                arrival: started,
                ..timing
            };
            slots[i] = Some((timing, out));
        }
    }
    let (timings, outputs) = slots.into_iter().flatten().unzip();
    let all = ModeRun {
        timings,
        outputs,
        kv: super::modes::KvAccount::default(),
        started,
    };
    Ok((all, merge_total))
}

fn row(mode: &'static str, adapters: usize, run: &ModeRun, merge_s: f64) -> LoraRow {
    let s = run.summary();
    LoraRow {
        mode,
        adapters,
        duration_s: s.duration_s,
        output_tokens: s.output_tokens,
        output_throughput: s.output_tokens as f64 / s.duration_s,
        ttft_ms: s.ttft_ms,
        tpot_ms: s.tpot_ms,
        merge_s,
        throughput_range: (0.0, 0.0),
    }
}

pub fn print_table(r: &LoraReport) {
    println!(
        "LoRA: {} adapters of rank {} on {} ({:.2} MB each)",
        r.num_adapters,
        r.rank,
        r.targets.join(","),
        r.adapter_mb
    );
    println!(
        "{:<12} {:>8} {:>9} {:>15} {:>9} {:>9} {:>9} {:>8}",
        "mode", "adapters", "out tok/s", "(range)", "TTFT p50", "TTFT p99", "TPOT p50", "merge s"
    );
    let ms = |s: &Option<Stats>, f: fn(&Stats) -> f64| s.as_ref().map_or(0.0, f);
    for row in &r.rows {
        println!(
            "{:<12} {:>8} {:>9.1} {:>15} {:>7.0}ms {:>7.0}ms {:>7.1}ms {:>8.2}",
            row.mode,
            row.adapters,
            row.output_throughput,
            format!(
                "{:.1}-{:.1}",
                row.throughput_range.0, row.throughput_range.1
            ),
            ms(&row.ttft_ms, |s| s.p50),
            ms(&row.ttft_ms, |s| s.p99),
            ms(&row.tpot_ms, |s| s.p50),
            row.merge_s
        );
    }
    for (k, v) in &r.ratios {
        println!("{k}: {:.2}x", v.as_f64().unwrap_or(f64::NAN));
    }
}
