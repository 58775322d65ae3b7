//! `--metrics-compat vllm`: the vLLM metric names that KV- and LoRA-aware
//! gateways read, appended to `/metrics`.
//!
//! The Kubernetes Gateway API Inference Extension (its endpoint picker) and
//! llm-d's scheduler pick a replica from each model server's queue depth,
//! KV-cache usage and resident LoRA adapters, scraped under vLLM's names.
//! With these lines an sdlab replica can sit behind them unchanged. The
//! values are the same engine snapshot the `sdlab_*` metrics show.

use crate::engine::EngineStats;
use crate::lora::AdapterInfo;
use std::fmt::Write;

/// What the compat lines need besides the engine snapshot.
pub struct CompatInputs<'a> {
    pub model_name: &'a str,
    pub adapters: &'a [AdapterInfo],
    pub max_loras: usize,
    pub block_size: usize,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Seconds since the epoch (vLLM puts a timestamp in `lora_requests_info`).
    pub now_s: f64,
}

/// The vLLM-named families in OpenMetrics text (no `# EOF`).
pub fn vllm_text(stats: &EngineStats, i: &CompatInputs) -> String {
    let model = escape(i.model_name);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "# HELP {name} {help}");
        for (labels, value) in lines {
            let suffix = if kind == "counter" { "_total" } else { "" };
            let _ = writeln!(out, "{name}{suffix}{{{labels}}} {value}");
        }
    };
    let m = format!("model_name=\"{model}\"");
    family(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        &[(m.clone(), stats.running.to_string())],
    );
    family(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        &[(m.clone(), stats.waiting.to_string())],
    );
    for name in ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"] {
        family(
            name,
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            &[(m.clone(), stats.kv_usage.to_string())],
        );
    }
    family(
        "vllm:num_preemptions",
        "counter",
        "Cumulative number of preemptions from the engine.",
        &[(m.clone(), stats.preemptions.to_string())],
    );
    family(
        "vllm:prompt_tokens",
        "counter",
        "Number of prefill tokens processed.",
        &[(m.clone(), i.prompt_tokens.to_string())],
    );
    family(
        "vllm:generation_tokens",
        "counter",
        "Number of generation tokens processed.",
        &[(m.clone(), i.generation_tokens.to_string())],
    );
    let running: Vec<&str> = i
        .adapters
        .iter()
        .filter(|a| a.in_flight > 0)
        .map(|a| a.name.as_str())
        .collect();
    family(
        "vllm:lora_requests_info",
        "gauge",
        "Running stats on lora requests.",
        &[(
            format!(
                "max_lora=\"{}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"\"",
                i.max_loras,
                escape(&running.join(","))
            ),
            format!("{:.3}", i.now_s),
        )],
    );
    family(
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig.",
        &[(
            format!(
                "block_size=\"{}\",num_gpu_blocks=\"{}\"",
                i.block_size, stats.num_blocks
            ),
            "1".into(),
        )],
    );
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Puts `extra` before the exposition's closing `# EOF`.
pub fn append(exposition: String, extra: &str) -> String {
    match exposition.rfind("# EOF") {
        Some(at) => format!("{}{extra}{}", &exposition[..at], &exposition[at..]),
        None => exposition + extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_labels_follow_vllm() {
        let stats = EngineStats {
            running: 3,
            waiting: 2,
            kv_usage: 0.25,
            num_blocks: 64,
            ..Default::default()
        };
        let adapters = vec![AdapterInfo {
            name: "pirate".into(),
            path: "/x".into(),
            generation: 1,
            resident: true,
            rank: Some(8),
            in_flight: 1,
        }];
        let text = vllm_text(
            &stats,
            &CompatInputs {
                model_name: "m\"x",
                adapters: &adapters,
                max_loras: 4,
                block_size: 16,
                prompt_tokens: 10,
                generation_tokens: 7,
                now_s: 5.0,
            },
        );
        assert!(text.contains("vllm:num_requests_running{model_name=\"m\\\"x\"} 3\n"));
        assert!(text.contains("vllm:num_requests_waiting{model_name=\"m\\\"x\"} 2\n"));
        assert!(text.contains("vllm:kv_cache_usage_perc{model_name=\"m\\\"x\"} 0.25\n"));
        assert!(text.contains("vllm:generation_tokens_total{model_name=\"m\\\"x\"} 7\n"));
        assert!(text.contains("running_lora_adapters=\"pirate\""));
        assert!(text.contains("# TYPE vllm:prompt_tokens counter\n"));
        let whole = append("a 1\n# EOF\n".into(), &text);
        assert!(whole.ends_with("# EOF\n") && whole.starts_with("a 1\n# TYPE"));
    }
}
