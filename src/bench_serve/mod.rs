//! `sdlab bench serve`: a load generator for any OpenAI-compatible server
//! (sdlab, llama.cpp's `llama-server`, vLLM), modelled on `vllm bench serve`.
//!
//! It sends `--num-prompts` greedy, streamed requests to `/v1/completions` (or
//! `/v1/chat/completions`), times every text chunk as it arrives, and reports
//! request and token throughput with TTFT, TPOT, ITL and end-to-end latency
//! percentiles, as a table and optionally as JSON (`--json`), so that the same
//! numbers can be taken from sdlab and from the servers it is measured against.
//!
//! # Arrivals and what latency is measured from
//!
//! - `--request-rate inf` (the default) releases every request at once; with
//!   `--max-concurrency C` at most C are in flight, and a new one starts as
//!   soon as one finishes (a closed loop).
//! - A finite rate R is an open loop: the gaps between requests are drawn from
//!   an exponential distribution of mean 1/R (a Poisson process) with the
//!   seeded RNG, so request i is *intended* to go at `start + gap_1 + ... + gap_i`.
//!
//! Every latency is measured from the request's intended send time, not from
//! when the client got round to sending it, so that a client that falls
//! behind (a slow loop, or requests queued behind `--max-concurrency` under a
//! finite rate) does not hide the wait: it is part of what a user would see,
//! and leaving it out is "coordinated omission". In a closed loop (infinite
//! rate with `--max-concurrency`) there is no arrival schedule, so the
//! intended send time is the moment a concurrency slot frees, as in vLLM;
//! with neither a rate nor a cap it is the start of the run.
//!
//! Token counts come from the stream's final `usage` chunk (requested with
//! `stream_options.include_usage`); a server that sends none is counted by
//! text chunks instead, and the report says which (`usage_source`).

mod client;
mod dataset;
mod report;

use anyhow::{bail, Context, Result};
use clap::Args;
use client::Endpoint;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where prompts come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    /// Random common English words.
    Random,
    /// Consecutive paragraphs of Pride and Prejudice.
    Austen,
    /// `--num-prefixes` shared prefixes of `--prefix-len` tokens, each
    /// prompt one of them plus `--input-len` tokens of its own (vLLM's
    /// prefix-repetition workload): what prefix caching and prefix-aware
    /// routing are for.
    SharedPrefix,
}

impl Dataset {
    fn name(self) -> &'static str {
        match self {
            Dataset::Random => "random",
            Dataset::Austen => "austen",
            Dataset::SharedPrefix => "shared-prefix",
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8000 (a trailing /v1 is dropped).
    #[arg(long)]
    pub url: String,
    /// Model name to request [default: the first id from GET {url}/v1/models].
    #[arg(long)]
    pub model: Option<String>,
    /// Which endpoint to load.
    #[arg(long, value_enum, default_value_t = Endpoint::Completions)]
    pub endpoint: Endpoint,
    /// Number of requests to send.
    #[arg(long, default_value_t = 64)]
    pub num_prompts: usize,
    /// Requests per second, as a Poisson process; `inf` sends all at once.
    #[arg(long, default_value = "inf", value_parser = parse_rate)]
    pub request_rate: f64,
    /// Most requests in flight at once [default: no limit].
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Prompt source.
    #[arg(long, value_enum, default_value_t = Dataset::Random)]
    pub dataset: Dataset,
    /// Text file for `--dataset austen` [default: $SDLAB_SHARED_DIR/fixtures/austen-pp.txt,
    /// else ../shared/fixtures/austen-pp.txt].
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// Prompt length in tokens, approximately (sized in words at 0.75 words per token).
    #[arg(long, default_value_t = 256)]
    pub input_len: usize,
    /// `--dataset shared-prefix`: tokens in each shared prefix (before the
    /// prompt's own --input-len).
    #[arg(long, default_value_t = 256)]
    pub prefix_len: usize,
    /// `--dataset shared-prefix`: how many different prefixes.
    #[arg(long, default_value_t = 8)]
    pub num_prefixes: usize,
    /// max_tokens of every request.
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Ask the server to ignore end-of-sequence, so every request makes --output-len tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Seed for the prompts and the arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-request timeout in seconds; a request that takes longer fails.
    #[arg(long, default_value_t = 600.0)]
    pub timeout_s: f64,
    /// Send `Authorization: Bearer KEY`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Also write the full report, with per-request numbers, to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `inf` or a positive, finite number of requests per second.
fn parse_rate(s: &str) -> std::result::Result<f64, String> {
    if matches!(s.to_ascii_lowercase().as_str(), "inf" | "infinity") {
        return Ok(f64::INFINITY);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a request rate: give requests per second above 0, or `inf`"
        )),
    }
}

/// The server's base URL (no trailing `/` or `/v1`), checked.
fn base_url(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url)
        .with_context(|| format!("--url `{url}` is not a URL (try http://127.0.0.1:8000)"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            bail!("--url `{url}`: https is not supported (this build has no TLS); use http://")
        }
        other => bail!("--url `{url}`: the scheme must be http, not `{other}`"),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("--url `{url}` has no host");
    }
    let trimmed = url.trim_end_matches('/');
    Ok(trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string())
}

fn validate(a: &BenchServeArgs) -> Result<String> {
    if a.num_prompts == 0 {
        bail!("--num-prompts must be at least 1");
    }
    if a.input_len == 0 {
        bail!("--input-len must be at least 1");
    }
    if a.output_len == 0 {
        bail!("--output-len must be at least 1");
    }
    if a.max_concurrency == Some(0) {
        bail!("--max-concurrency must be at least 1");
    }
    if !(a.timeout_s > 0.0 && Duration::try_from_secs_f64(a.timeout_s).is_ok()) {
        bail!("--timeout-s must be a number of seconds above 0");
    }
    base_url(&a.url)
}

pub fn run(a: BenchServeArgs) -> Result<()> {
    let base = validate(&a)?;
    let mut rng = StdRng::seed_from_u64(a.seed);
    let prompts = match a.dataset {
        Dataset::Random => dataset::random(a.num_prompts, a.input_len, &mut rng),
        Dataset::SharedPrefix => dataset::shared_prefix(
            a.num_prompts,
            a.num_prefixes.max(1),
            a.prefix_len,
            a.input_len,
            &mut rng,
        ),
        Dataset::Austen => dataset::austen_file(
            &dataset::austen_path(a.dataset_path.as_deref()),
            a.num_prompts,
            a.input_len,
            &mut rng,
        )?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(&a, base, prompts))
}

/// The first model id of GET {base}/v1/models.
async fn discover_model(client: &reqwest::Client, base: &str, key: Option<&str>) -> Result<String> {
    let url = format!("{base}/v1/models");
    let mut req = client.get(&url).timeout(Duration::from_secs(30));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let hint = "pass --model, or check --url";
    let resp = req
        .send()
        .await
        .with_context(|| format!("GET {url} failed; {hint}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url} answered {status}; {hint}");
    }
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("GET {url} did not answer JSON; {hint}"))?;
    match body.pointer("/data/0/id").and_then(Value::as_str) {
        Some(id) => Ok(id.to_string()),
        None => bail!("GET {url} lists no model (no data[0].id); {hint}"),
    }
}

async fn bench(a: &BenchServeArgs, base: String, prompts: Vec<dataset::Prompt>) -> Result<()> {
    // A fresh connection per request: a pooled keep-alive connection that
    // the server closed while idle (llama-server does after 5 s) would fail
    // the next request on it, counting the client's reuse as a server error.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .context("building the HTTP client")?;
    let key = a.api_key.as_deref().filter(|k| !k.is_empty());
    let model = match &a.model {
        Some(m) => m.clone(),
        None => discover_model(&client, &base, key).await?,
    };
    let rate = if a.request_rate.is_finite() {
        format!("{} req/s", a.request_rate)
    } else {
        "inf".into()
    };
    eprintln!(
        "bench serve: {} prompts ({}, ~{} tokens in, {} out) to {base}{} as `{model}`; rate {rate}, max concurrency {}",
        a.num_prompts,
        a.dataset.name(),
        a.input_len,
        a.output_len,
        a.endpoint.path(),
        a.max_concurrency.map_or("none".into(), |c| c.to_string()),
    );

    let url = Arc::new(format!("{base}{}", a.endpoint.path()));
    let key = key.map(Arc::<str>::from);
    let timeout = Duration::from_secs_f64(a.timeout_s);
    let slots = a
        .max_concurrency
        .map(|c| Arc::new(tokio::sync::Semaphore::new(c)));
    let mut arrivals = StdRng::seed_from_u64(a.seed ^ 0x9e37_79b9_7f4a_7c15);
    let bar = ProgressBar::new(prompts.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {elapsed_precise} {msg}")
            .expect("a valid progress template"),
    );
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let start = Instant::now();
    let mut next = start;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in prompts.iter().enumerate() {
        if a.request_rate.is_finite() && i > 0 {
            let u: f64 = arrivals.random();
            let gap = Duration::try_from_secs_f64(-(1.0 - u).ln() / a.request_rate).ok();
            next = gap
                .and_then(|g| next.checked_add(g))
                .context("--request-rate is too low: the arrival times overflow")?;
            tokio::time::sleep_until(next.into()).await;
        }
        let permit = match &slots {
            Some(s) => Some(s.clone().acquire_owned().await?),
            None => None,
        };
        // Open loop: the schedule; closed loop: when the slot freed.
        let intended = if a.request_rate.is_finite() || permit.is_none() {
            next
        } else {
            Instant::now()
        };
        let body = client::request_body(a.endpoint, &model, &p.text, a.output_len, a.ignore_eos);
        let (client, url, key, bar, failed) = (
            client.clone(),
            url.clone(),
            key.clone(),
            bar.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            let out = client::send(&client, &url, key.as_deref(), &body, intended, timeout).await;
            drop(permit);
            if !out.ok() {
                let n = failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                bar.set_message(format!("({n} failed)"));
            }
            bar.inc(1);
            (i, out)
        });
    }
    let mut outcomes = vec![client::Outcome::default(); prompts.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, out) = done.context("a request task panicked")?;
        outcomes[i] = out;
    }
    let duration = start.elapsed();
    bar.finish_and_clear();

    let meta = report::Meta {
        backend_url: base,
        endpoint: match a.endpoint {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat",
        },
        model,
        dataset: a.dataset.name(),
        num_prompts: a.num_prompts,
        request_rate: a.request_rate,
        max_concurrency: a.max_concurrency,
        input_len: a.input_len,
        output_len: a.output_len,
    };
    let summary = report::summarize(&meta, &prompts, &outcomes, duration);
    print!("{}", report::table(&summary.json));
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&summary.json)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if summary.completed == 0 {
        bail!(
            "every request failed; the first: {}",
            summary.errors.first().map_or("?", String::as_str)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_urls_are_checked() {
        assert_eq!(parse_rate("inf"), Ok(f64::INFINITY));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1", "abc", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(base_url("http://h:8000/v1/").unwrap(), "http://h:8000");
        assert_eq!(base_url("http://h:8000").unwrap(), "http://h:8000");
        for bad in ["h:8000", "https://h", "ftp://h", "not a url"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }
}
