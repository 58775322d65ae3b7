//! `sdlab bench batching`: what continuous batching and paged KV buy, shown
//! on one workload in one process and one run.
//!
//! Three modes (see [`modes`]) serve the same seeded workload: prompts of
//! varied length, output lengths drawn uniformly from a range, Poisson
//! arrivals. All of them get the same KV budget (in tokens). For each mode
//! the bench reports output tokens/s, requests/s, TTFT and TPOT (mean, p50,
//! p90, p99, max; measured from each request's intended arrival), the peak
//! KV memory held,
//! the KV waste (allocated slots never written, over all allocated), and the
//! most sequences that ran at once within the budget. `--plot` adds a sweep
//! over the concurrency limit (all requests arriving at once) and draws
//! throughput and latency against it.

pub(crate) mod lora;
pub(crate) mod modes;
mod plot;
pub(crate) mod workload;

use crate::latency::Stats;
use anyhow::{bail, Result};
use clap::Args;
use models::{LoadOptions, WeightFormat};
use modes::{ContinuousLimits, ModeRun};
use serde::Serialize;
use server::runner::Device;
use std::path::PathBuf;
use workload::{Request, WorkloadSpec};

#[derive(Args, Debug)]
pub struct BenchBatchingArgs {
    /// A GGUF file, a Hugging Face folder, or a known name.
    #[arg(long, default_value = models::loader::DEFAULT_MODEL)]
    pub model: String,
    /// Weight format (auto keeps GGUF weights quantized).
    #[arg(long, default_value = "auto")]
    pub weights: WeightFormat,
    /// Requests in the workload.
    #[arg(long, default_value_t = 32)]
    pub num_prompts: usize,
    /// Poisson arrival rate in requests/s, or `inf` for all at once.
    #[arg(long, default_value = "2")]
    pub request_rate: String,
    /// Most sequences in one batch (`static`'s B, the engine's --max-num-seqs).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Prompt lengths, drawn uniformly: MIN,MAX tokens.
    #[arg(long, default_value = "32,256", value_parser = parse_range)]
    pub prompt_len: (usize, usize),
    /// Output lengths, drawn uniformly: MIN,MAX tokens (EOS ignored).
    #[arg(long, default_value = "16,192", value_parser = parse_range)]
    pub output_len: (usize, usize),
    /// KV cache budget every mode gets, in tokens.
    #[arg(long, default_value_t = 12288)]
    pub kv_budget_tokens: usize,
    /// The longest sequence the server accepts: the contiguous KV region
    /// `static` reserves per sequence (llama-server's 2k slots).
    #[arg(long, default_value_t = 2048)]
    pub max_model_len: usize,
    /// Block size of the paged KV cache (tokens).
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// The engine's per-step token budget (chunked prefill).
    #[arg(long, default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Modes to run (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sequential,static,continuous"
    )]
    pub modes: Vec<Mode>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write every number as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also sweep the concurrency limit (all requests at once) and draw
    /// throughput and latency against it (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Concurrency limits of the sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
    pub sweep: Vec<usize>,
    /// Run the LoRA experiment instead: base, one adapter, adapters mixed in
    /// one batch, against merging adapters into the weights one at a time.
    #[arg(long)]
    pub lora: bool,
    /// Adapters the LoRA experiment spreads requests over.
    #[arg(long, default_value_t = 4)]
    pub lora_adapters: usize,
    #[arg(long, default_value_t = 16)]
    pub lora_rank: usize,
    /// Projections the random adapters target.
    #[arg(long, default_value = "q_proj,k_proj,v_proj,o_proj")]
    pub lora_targets: String,
    /// Rounds of the LoRA experiment (rows interleaved; medians reported).
    #[arg(long, default_value_t = 1)]
    pub lora_repeat: usize,
    /// Where the model runs in every mode: `cpu`, `gpu` (the WGSL kernels
    /// on a Vulkan adapter, lavapipe included) or `auto` (the GPU when it
    /// is hardware); the LoRA experiment's modes too.
    #[arg(long, default_value = "cpu", value_name = "cpu|gpu|auto")]
    pub device: Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sequential,
    Static,
    Continuous,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Static => "static",
            Mode::Continuous => "continuous",
        }
    }
}

/// Everything measured for one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: Mode,
    /// The concurrency limit it ran under (after the KV budget).
    pub batch_limit: usize,
    pub duration_s: f64,
    pub requests: usize,
    pub output_tokens: usize,
    pub output_throughput: f64,
    pub request_throughput: f64,
    pub ttft_ms: Option<Stats>,
    /// `None` when every output was one token.
    pub tpot_ms: Option<Stats>,
    pub peak_kv_mb: f64,
    pub kv_waste_ratio: f64,
    pub max_concurrent_seqs: usize,
    /// Requests whose greedy tokens equal those of the first mode run
    /// (batch invariance: batching must not change what a request gets).
    pub same_tokens_as_first_mode: usize,
}

#[derive(Debug, Serialize)]
struct SweepPoint {
    mode: Mode,
    concurrency: usize,
    output_throughput: f64,
    ttft_p50_ms: f64,
    tpot_p50_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    weights: String,
    /// `cpu` or `gpu` (`auto` decided).
    device: String,
    /// The CPU kernel variants this machine ran (`kernels::cpu_kernels`).
    cpu_kernels: String,
    workload: WorkloadSpec,
    total_prompt_tokens: usize,
    total_output_tokens: usize,
    kv_budget_tokens: usize,
    kv_bytes_per_token: usize,
    max_model_len: usize,
    concurrency: usize,
    modes: Vec<ModeReport>,
    /// continuous over the others, where both ran.
    ratios: serde_json::Map<String, serde_json::Value>,
    sweep: Vec<SweepPoint>,
}

/// `MIN,MAX` with 1 <= MIN <= MAX.
fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected MIN,MAX with 1 <= MIN <= MAX, got `{s}`");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let lo: usize = lo.trim().parse().map_err(|_| bad())?;
    let hi: usize = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn parse_rate(s: &str) -> Result<f64> {
    let rate = match s {
        "inf" | "infinity" => f64::INFINITY,
        _ => s
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("--request-rate must be a number or `inf`, got `{s}`"))?,
    };
    if rate.is_nan() || rate <= 0.0 {
        bail!("--request-rate must be positive, got `{s}`");
    }
    Ok(rate)
}

/// The bench's setup, checked once.
struct Setup {
    model: String,
    weights: WeightFormat,
    work: Vec<Request>,
    spec: WorkloadSpec,
    args_kv_budget: usize,
    max_model_len: usize,
    block_size: usize,
    max_num_batched_tokens: usize,
    kv_bytes_per_token: usize,
    /// `Cpu` or `Gpu` (`Auto` decided once).
    device: Device,
}

impl Setup {
    /// One mode at one concurrency limit over `work`.
    fn run_mode(
        &self,
        mode: Mode,
        concurrency: usize,
        work: &[Request],
    ) -> Result<(ModeReport, Vec<Vec<u32>>)> {
        let loaded = models::load(
            &self.model,
            LoadOptions {
                weights: self.weights,
            },
        )?;
        let static_fit = self.args_kv_budget / self.max_model_len;
        let (limit, run) = match mode {
            Mode::Sequential => (
                1,
                modes::run_static(
                    &loaded.model,
                    work,
                    1,
                    self.max_model_len,
                    self.block_size,
                    self.device,
                )?,
            ),
            Mode::Static => {
                let b = concurrency.min(static_fit);
                let run = modes::run_static(
                    &loaded.model,
                    work,
                    b,
                    self.max_model_len,
                    self.block_size,
                    self.device,
                )?;
                (b, run)
            }
            Mode::Continuous => {
                let limits = self.continuous_limits(concurrency);
                let run = modes::run_continuous(loaded.model, loaded.tokenizer, work, &limits)?;
                (concurrency, run)
            }
        };
        Ok((self.report(mode, limit, &run), run.outputs))
    }

    /// The engine's limits under the KV budget.
    fn continuous_limits(&self, concurrency: usize) -> ContinuousLimits {
        ContinuousLimits {
            num_blocks: self.args_kv_budget / self.block_size,
            block_size: self.block_size,
            max_num_seqs: concurrency,
            max_num_batched_tokens: self.max_num_batched_tokens,
            max_model_len: self.max_model_len,
            device: self.device,
        }
    }

    fn report(&self, mode: Mode, batch_limit: usize, run: &ModeRun) -> ModeReport {
        let s = run.summary();
        let kv = run.kv;
        ModeReport {
            mode,
            batch_limit,
            duration_s: s.duration_s,
            requests: run.timings.len(),
            output_tokens: s.output_tokens,
            output_throughput: s.output_tokens as f64 / s.duration_s,
            request_throughput: run.timings.len() as f64 / s.duration_s,
            ttft_ms: s.ttft_ms,
            tpot_ms: s.tpot_ms,
            peak_kv_mb: (kv.peak_slots * self.kv_bytes_per_token) as f64 / (1 << 20) as f64,
            kv_waste_ratio: 1.0 - kv.written_slots as f64 / kv.allocated_slots.max(1) as f64,
            max_concurrent_seqs: kv.max_concurrent_seqs,
            same_tokens_as_first_mode: run.timings.len(),
        }
    }
}

pub fn run(a: BenchBatchingArgs) -> Result<()> {
    let request_rate = parse_rate(&a.request_rate)?;
    let ((pmin, pmax), (omin, omax)) = (a.prompt_len, a.output_len);
    if a.num_prompts == 0 || a.concurrency == 0 || a.block_size == 0 {
        bail!("--num-prompts, --concurrency and --block-size must be positive");
    }
    if a.sweep.contains(&0) {
        bail!("every --sweep concurrency must be positive");
    }
    if pmax + omax > a.max_model_len {
        bail!(
            "--max-model-len {} is shorter than the longest request ({pmax} + {omax} tokens)",
            a.max_model_len
        );
    }
    if a.kv_budget_tokens < a.max_model_len {
        bail!(
            "--kv-budget-tokens {} holds no sequence of --max-model-len {}: static batching needs at least one",
            a.kv_budget_tokens,
            a.max_model_len
        );
    }
    let lora_spec = if a.lora {
        if a.lora_adapters == 0 || a.lora_rank == 0 || a.lora_repeat == 0 {
            bail!("--lora-adapters, --lora-rank and --lora-repeat must be positive");
        }
        Some(lora::LoraSpec {
            adapters: a.lora_adapters,
            repeat: a.lora_repeat,
            rank: a.lora_rank,
            targets: models::lora::parse_targets(&a.lora_targets)?,
        })
    } else {
        None
    };
    let probe = models::load(&a.model, LoadOptions { weights: a.weights })?;
    let cfg = probe.model.cfg.clone();
    let (name, weights) = (probe.name.clone(), probe.weights.to_string());
    let spec = WorkloadSpec {
        num_prompts: a.num_prompts,
        request_rate,
        prompt_len: (pmin, pmax),
        output_len: (omin, omax),
        seed: a.seed,
    };
    let setup = Setup {
        model: a.model.clone(),
        weights: a.weights,
        work: spec.build(cfg.vocab_size),
        spec,
        args_kv_budget: a.kv_budget_tokens,
        max_model_len: a.max_model_len,
        block_size: a.block_size,
        max_num_batched_tokens: a.max_num_batched_tokens,
        kv_bytes_per_token: cfg.kv_bytes_per_token(),
        device: a.device.pick(),
    };
    let total_prompt_tokens: usize = setup.work.iter().map(|r| r.prompt.len()).sum();
    let total_output_tokens: usize = setup.work.iter().map(|r| r.output_len).sum();
    eprintln!(
        "{name} ({weights}) on {}: {} requests, {total_prompt_tokens} prompt + {total_output_tokens} output tokens, rate {}, concurrency {}, KV budget {} tokens",
        setup.device, a.num_prompts, a.request_rate, a.concurrency, a.kv_budget_tokens
    );
    eprintln!("CPU kernels: {}", kernels::cpu_kernels());
    if let Some(spec) = &lora_spec {
        eprintln!("(the LoRA experiment sends every request at once)");
        let report = lora::run(&setup, &probe.model, &probe.tokenizer, a.concurrency, spec)?;
        lora::print_table(&report);
        if let Some(path) = &a.json {
            let v = serde_json::json!({
                "model": name,
                "weights": weights,
                "workload": setup.spec,
                "total_prompt_tokens": total_prompt_tokens,
                "total_output_tokens": total_output_tokens,
                "concurrency": a.concurrency,
                "lora": report,
            });
            std::fs::write(path, serde_json::to_string_pretty(&v)?)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
        return Ok(());
    }
    drop(probe);

    let mut reports = Vec::new();
    let mut first_outputs: Option<Vec<Vec<u32>>> = None;
    for &mode in &a.modes {
        eprintln!("running {} ...", mode.name());
        let (mut r, outputs) = setup.run_mode(mode, a.concurrency, &setup.work)?;
        match &first_outputs {
            None => first_outputs = Some(outputs),
            Some(first) => {
                r.same_tokens_as_first_mode =
                    first.iter().zip(&outputs).filter(|(a, b)| a == b).count();
            }
        }
        if r.output_tokens != total_output_tokens {
            bail!(
                "{} produced {} tokens, the workload asked for {total_output_tokens}",
                mode.name(),
                r.output_tokens
            );
        }
        eprintln!(
            "  {:.1} output tok/s in {:.1} s",
            r.output_throughput, r.duration_s
        );
        reports.push(r);
    }
    print_table(&reports);
    let ratios = ratios(&reports);
    for (k, v) in &ratios {
        println!("{k}: {:.2}x", v.as_f64().unwrap_or(f64::NAN));
    }

    let mut sweep = Vec::new();
    if let Some(path) = &a.plot {
        let burst: Vec<Request> = setup
            .work
            .iter()
            .map(|r| Request {
                arrival: std::time::Duration::ZERO,
                ..r.clone()
            })
            .collect();
        for &c in &a.sweep {
            for &mode in &a.modes {
                if mode == Mode::Sequential && c != 1 {
                    continue;
                }
                eprintln!("sweep: {} at concurrency {c} ...", mode.name());
                let (r, _) = setup.run_mode(mode, c, &burst)?;
                sweep.push(SweepPoint {
                    mode,
                    concurrency: c,
                    output_throughput: r.output_throughput,
                    ttft_p50_ms: ms(&r.ttft_ms, |s| s.p50),
                    tpot_p50_ms: ms(&r.tpot_ms, |s| s.p50),
                });
            }
        }
        plot::draw(path, &sweep_series(&sweep), &name)?;
        eprintln!("wrote {}", path.display());
    }

    if let Some(path) = &a.json {
        let report = Report {
            model: name,
            weights,
            device: setup.device.to_string(),
            cpu_kernels: kernels::cpu_kernels(),
            workload: setup.spec.clone(),
            total_prompt_tokens,
            total_output_tokens,
            kv_budget_tokens: a.kv_budget_tokens,
            kv_bytes_per_token: setup.kv_bytes_per_token,
            max_model_len: a.max_model_len,
            concurrency: a.concurrency,
            modes: reports,
            ratios,
            sweep,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// One statistic of a latency, 0 when there was nothing to measure.
fn ms(stats: &Option<Stats>, pick: fn(&Stats) -> f64) -> f64 {
    stats.as_ref().map_or(0.0, pick)
}

fn print_table(reports: &[ModeReport]) {
    println!(
        "{:<11} {:>5} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>9}",
        "mode",
        "B",
        "out tok/s",
        "req/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "KV MB",
        "KV waste",
        "seqs",
        "same out"
    );
    for r in reports {
        println!(
            "{:<11} {:>5} {:>9.1} {:>8.2} {:>7.0}ms {:>7.0}ms {:>7.1}ms {:>7.1}ms {:>8.1} {:>7.1}% {:>6} {:>9}",
            r.mode.name(),
            r.batch_limit,
            r.output_throughput,
            r.request_throughput,
            ms(&r.ttft_ms, |s| s.p50),
            ms(&r.ttft_ms, |s| s.p99),
            ms(&r.tpot_ms, |s| s.p50),
            ms(&r.tpot_ms, |s| s.p99),
            r.peak_kv_mb,
            r.kv_waste_ratio * 100.0,
            r.max_concurrent_seqs,
            format!("{}/{}", r.same_tokens_as_first_mode, r.requests)
        );
    }
}

fn ratios(reports: &[ModeReport]) -> serde_json::Map<String, serde_json::Value> {
    let find = |m: Mode| reports.iter().find(|r| r.mode == m);
    let mut out = serde_json::Map::new();
    if let Some(c) = find(Mode::Continuous) {
        for other in [Mode::Sequential, Mode::Static] {
            if let Some(o) = find(other) {
                out.insert(
                    format!("continuous_over_{}_throughput", other.name()),
                    (c.output_throughput / o.output_throughput).into(),
                );
                out.insert(
                    format!("continuous_over_{}_max_seqs", other.name()),
                    (c.max_concurrent_seqs as f64 / o.max_concurrent_seqs.max(1) as f64).into(),
                );
            }
        }
    }
    out
}

fn sweep_series(points: &[SweepPoint]) -> Vec<plot::Series> {
    [Mode::Sequential, Mode::Static, Mode::Continuous]
        .into_iter()
        .filter_map(|m| {
            let pts: Vec<&SweepPoint> = points.iter().filter(|p| p.mode == m).collect();
            (!pts.is_empty()).then(|| plot::Series {
                label: m.name().to_string(),
                throughput: pts
                    .iter()
                    .map(|p| (p.concurrency as f64, p.output_throughput))
                    .collect(),
                tpot_ms: pts
                    .iter()
                    .map(|p| (p.concurrency as f64, p.tpot_p50_ms))
                    .collect(),
                ttft_ms: pts
                    .iter()
                    .map(|p| (p.concurrency as f64, p.ttft_p50_ms))
                    .collect(),
            })
        })
        .collect()
}
