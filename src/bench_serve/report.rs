//! The numbers of a `sdlab bench serve` run: totals, throughputs and latency
//! percentiles, printed as a table and written as JSON.
//!
//! Latencies go into `hdrhistogram` histograms in microseconds (3 significant
//! digits, so percentiles are within 0.1%); means are exact. Throughputs and
//! token totals count completed requests only, over the whole run's duration.

use super::client::Outcome;
use super::dataset::Prompt;
use crate::latency::Latency;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// How many error messages the report keeps.
pub const MAX_ERRORS: usize = 10;

/// What was run, echoed into the report.
pub struct Meta {
    pub backend_url: String,
    pub endpoint: &'static str,
    pub model: String,
    pub dataset: &'static str,
    pub num_prompts: usize,
    pub request_rate: f64,
    pub max_concurrency: Option<usize>,
    pub input_len: usize,
    pub output_len: usize,
}

/// The whole run, summed up.
pub struct Summary {
    pub json: Value,
    pub completed: usize,
    pub errors: Vec<String>,
}

/// Sums up `outcomes` (one per prompt, in order) over `duration`.
pub fn summarize(
    meta: &Meta,
    prompts: &[Prompt],
    outcomes: &[Outcome],
    duration: Duration,
) -> Summary {
    let (mut ttft, mut tpot, mut itl, mut e2e) = (
        Latency::new(),
        Latency::new(),
        Latency::new(),
        Latency::new(),
    );
    let (mut completed, mut input, mut output, mut with_usage) = (0usize, 0u64, 0u64, 0usize);
    let mut errors = Vec::new();
    let mut per_request = Vec::with_capacity(outcomes.len());
    for (i, (o, p)) in outcomes.iter().zip(prompts).enumerate() {
        let prompt_tokens = o.usage_prompt_tokens.unwrap_or(p.approx_tokens);
        let out_tokens = o.output_tokens();
        per_request.push(json!({
            "prompt_tokens": prompt_tokens,
            "output_tokens": out_tokens,
            "ttft_ms": o.ttft.map(|d| d.as_secs_f64() * 1e3),
            "e2el_ms": o.e2e.as_secs_f64() * 1e3,
            "ok": o.ok(),
            "error": o.error,
        }));
        if let Some(e) = &o.error {
            if errors.len() < MAX_ERRORS {
                errors.push(format!("request {i}: {e}"));
            }
            continue;
        }
        completed += 1;
        input += prompt_tokens;
        output += out_tokens;
        with_usage += usize::from(o.usage_completion_tokens.is_some());
        e2e.add(o.e2e);
        for d in &o.itl {
            itl.add(*d);
        }
        if let Some(t) = o.ttft {
            ttft.add(t);
            if out_tokens > 1 {
                tpot.add(o.e2e.saturating_sub(t).div_f64((out_tokens - 1) as f64));
            }
        }
    }
    let failed = outcomes.len() - completed;
    let usage_source = match with_usage {
        _ if completed == 0 => "none",
        0 => "chunks",
        n if n == completed => "usage",
        _ => "mixed",
    };
    let secs = duration.as_secs_f64().max(1e-9);
    let rate = if meta.request_rate.is_finite() {
        json!(meta.request_rate)
    } else {
        json!("inf")
    };
    let json = json!({
        "backend_url": meta.backend_url,
        "endpoint": meta.endpoint,
        "model": meta.model,
        "dataset": meta.dataset,
        "num_prompts": meta.num_prompts,
        "request_rate": rate,
        "max_concurrency": meta.max_concurrency,
        "input_len": meta.input_len,
        "output_len": meta.output_len,
        "completed": completed,
        "failed": failed,
        "errors": errors,
        "duration_s": duration.as_secs_f64(),
        "request_throughput": completed as f64 / secs,
        "output_throughput": output as f64 / secs,
        "total_token_throughput": (input + output) as f64 / secs,
        "total_input_tokens": input,
        "total_output_tokens": output,
        "usage_source": usage_source,
        "ttft_ms": ttft.stats(),
        "tpot_ms": tpot.stats(),
        "itl_ms": itl.stats(),
        "e2el_ms": e2e.stats(),
        "per_request": per_request,
    });
    Summary {
        json,
        completed,
        errors,
    }
}

/// The report as a table, in the layout of `vllm bench serve`.
pub fn table(j: &Value) -> String {
    let mut s = String::new();
    let num = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
    let mut row = |label: &str, value: String| {
        let _ = writeln!(s, "{label:<40} {value}");
    };
    row(
        "Backend:",
        j["backend_url"].as_str().unwrap_or("").to_string(),
    );
    row("Model:", j["model"].as_str().unwrap_or("").to_string());
    row("Successful requests:", format!("{}", j["completed"]));
    row("Failed requests:", format!("{}", j["failed"]));
    row(
        "Maximum request concurrency:",
        j["max_concurrency"]
            .as_u64()
            .map_or("none".into(), |c| c.to_string()),
    );
    row(
        "Request rate (req/s):",
        j["request_rate"]
            .as_f64()
            .map_or("inf".into(), |r| format!("{r:.2}")),
    );
    row(
        "Benchmark duration (s):",
        format!("{:.2}", num("duration_s")),
    );
    row(
        "Total input tokens:",
        format!("{}", j["total_input_tokens"]),
    );
    row(
        "Total generated tokens:",
        format!("{}", j["total_output_tokens"]),
    );
    row(
        "Token counts from:",
        j["usage_source"].as_str().unwrap_or("").to_string(),
    );
    row(
        "Request throughput (req/s):",
        format!("{:.2}", num("request_throughput")),
    );
    row(
        "Output token throughput (tok/s):",
        format!("{:.2}", num("output_throughput")),
    );
    row(
        "Total token throughput (tok/s):",
        format!("{:.2}", num("total_token_throughput")),
    );
    let mut out = String::new();
    let _ = writeln!(out, "{:=^53}", " Serving Benchmark Result ");
    out.push_str(&s);
    let _ = writeln!(out, "{:-^53}", " Latency (ms) ");
    let _ = writeln!(
        out,
        "{:<8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "mean", "p50", "p90", "p99", "max"
    );
    for (name, key) in [
        ("TTFT", "ttft_ms"),
        ("TPOT", "tpot_ms"),
        ("ITL", "itl_ms"),
        ("E2E", "e2el_ms"),
    ] {
        let v = &j[key];
        let cell = |k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{name:<8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            cell("mean"),
            cell("p50"),
            cell("p90"),
            cell("p99"),
            cell("max")
        );
    }
    let _ = writeln!(out, "{}", "=".repeat(53));
    if let Some(errors) = j["errors"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "First errors ({} failed in all):", j["failed"]);
        for e in errors {
            let _ = writeln!(out, "  {}", e.as_str().unwrap_or(""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn summary_counts_completed_only_and_orders_percentiles() {
        let meta = Meta {
            backend_url: "http://x".into(),
            endpoint: "completions",
            model: "m".into(),
            dataset: "random",
            num_prompts: 3,
            request_rate: f64::INFINITY,
            max_concurrency: Some(2),
            input_len: 4,
            output_len: 3,
        };
        let prompt = Prompt {
            text: "a b c".into(),
            approx_tokens: 4,
        };
        let good = Outcome {
            usage_prompt_tokens: Some(6),
            usage_completion_tokens: Some(3),
            content_chunks: 3,
            ttft: Some(ms(10)),
            e2e: ms(30),
            itl: vec![ms(10), ms(10)],
            ..Default::default()
        };
        let bad = Outcome {
            error: Some("HTTP 500".into()),
            e2e: ms(1),
            ..Default::default()
        };
        let s = summarize(
            &meta,
            &[prompt.clone(), prompt.clone(), prompt],
            &[good.clone(), bad, good],
            Duration::from_secs(2),
        );
        let j = &s.json;
        assert_eq!(
            (j["completed"].as_u64(), j["failed"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(j["total_output_tokens"], 6);
        assert_eq!(j["total_input_tokens"], 12);
        assert_eq!(j["usage_source"], "usage");
        assert_eq!(j["request_rate"], "inf");
        assert_eq!(j["errors"][0], "request 1: HTTP 500");
        assert!((j["tpot_ms"]["mean"].as_f64().unwrap() - 10.0).abs() < 1e-9);
        assert!((j["output_throughput"].as_f64().unwrap() - 3.0).abs() < 1e-9);
        let t = table(j);
        assert!(
            t.contains("Failed requests:") && t.contains("request 1: HTTP 500"),
            "{t}"
        );
    }
}
