//! Prometheus metrics, with the `prometheus-client` crate.
//!
//! Request-level numbers (latencies, tokens, finish reasons) are recorded by
//! the HTTP layer as requests finish; engine-level numbers (queue depths, KV
//! blocks, preemptions, prefix-cache hits) are read from the engine's stats
//! snapshot at scrape time, counters advanced by the difference since the
//! last scrape so they stay monotonic.

use crate::engine::{EngineStats, FinishReason, Usage};
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabel {
    pub adapter: String,
}

pub struct Metrics {
    registry: Registry,
    running: Gauge,
    waiting: Gauge,
    kv_blocks_total: Gauge,
    kv_blocks_used: Gauge,
    kv_blocks_cached_free: Gauge,
    kv_usage: Gauge<f64, AtomicU64>,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    finished: Family<ReasonLabel, Counter>,
    preemptions: Counter,
    prefix_queries: Counter,
    prefix_hits: Counter,
    spec_draft_tokens: Counter,
    spec_accepted_tokens: Counter,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    lora_loaded: Gauge,
    lora_requests: Family<AdapterLabel, Counter>,
    last: Mutex<EngineStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_blocks_total: Gauge::default(),
            kv_blocks_used: Gauge::default(),
            kv_blocks_cached_free: Gauge::default(),
            kv_usage: Gauge::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            finished: Family::default(),
            preemptions: Counter::default(),
            prefix_queries: Counter::default(),
            prefix_hits: Counter::default(),
            spec_draft_tokens: Counter::default(),
            spec_accepted_tokens: Counter::default(),
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            tpot: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            e2e: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            lora_loaded: Gauge::default(),
            lora_requests: Family::default(),
            last: Mutex::new(EngineStats::default()),
            registry: Registry::default(),
        };
        r.register(
            "sdlab_requests_running",
            "Requests in the running batch",
            m.running.clone(),
        );
        r.register(
            "sdlab_requests_waiting",
            "Requests waiting to be admitted",
            m.waiting.clone(),
        );
        r.register(
            "sdlab_kv_blocks_total",
            "KV-cache blocks in the pool",
            m.kv_blocks_total.clone(),
        );
        r.register(
            "sdlab_kv_blocks_used",
            "KV-cache blocks held by sequences",
            m.kv_blocks_used.clone(),
        );
        r.register(
            "sdlab_kv_blocks_cached_free",
            "Free KV-cache blocks that still hold a reusable prefix",
            m.kv_blocks_cached_free.clone(),
        );
        r.register(
            "sdlab_kv_cache_usage_ratio",
            "Share of KV-cache blocks held by sequences",
            m.kv_usage.clone(),
        );
        r.register(
            "sdlab_prompt_tokens",
            "Prompt tokens of finished requests",
            m.prompt_tokens.clone(),
        );
        r.register(
            "sdlab_generation_tokens",
            "Generated tokens of finished requests",
            m.generation_tokens.clone(),
        );
        r.register(
            "sdlab_requests_finished",
            "Finished requests by reason",
            m.finished.clone(),
        );
        r.register(
            "sdlab_preemptions",
            "Sequences preempted for lack of KV blocks",
            m.preemptions.clone(),
        );
        r.register(
            "sdlab_spec_decode_draft_tokens",
            "Tokens drafted by prompt lookup (speculative decoding)",
            m.spec_draft_tokens.clone(),
        );
        r.register(
            "sdlab_spec_decode_accepted_tokens",
            "Drafted tokens the sampler accepted",
            m.spec_accepted_tokens.clone(),
        );
        r.register(
            "sdlab_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_queries.clone(),
        );
        r.register(
            "sdlab_prefix_cache_hits",
            "Prompt tokens found in the prefix cache",
            m.prefix_hits.clone(),
        );
        r.register(
            "sdlab_time_to_first_token_seconds",
            "Time to first token",
            m.ttft.clone(),
        );
        r.register(
            "sdlab_time_per_output_token_seconds",
            "Time per output token after the first",
            m.tpot.clone(),
        );
        r.register(
            "sdlab_e2e_request_latency_seconds",
            "End-to-end request latency",
            m.e2e.clone(),
        );
        r.register(
            "sdlab_lora_adapters_loaded",
            "LoRA adapters resident in memory",
            m.lora_loaded.clone(),
        );
        r.register(
            "sdlab_lora_requests",
            "Requests served under each LoRA adapter",
            m.lora_requests.clone(),
        );
        Self { registry: r, ..m }
    }

    /// Counts one request for `adapter`.
    pub fn lora_request(&self, adapter: &str) {
        self.lora_requests
            .get_or_create(&AdapterLabel {
                adapter: adapter.into(),
            })
            .inc();
    }

    /// Prompt and generated tokens of finished requests so far.
    pub fn token_totals(&self) -> (u64, u64) {
        (self.prompt_tokens.get(), self.generation_tokens.get())
    }

    pub fn set_lora_loaded(&self, n: usize) {
        self.lora_loaded.set(n as i64);
    }

    /// Records one finished engine request (one choice).
    pub fn request_finished(
        &self,
        reason: FinishReason,
        usage: &Usage,
        ttft: Option<f64>,
        e2e: f64,
    ) {
        self.finished
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().into(),
            })
            .inc();
        self.prompt_tokens.inc_by(usage.prompt_tokens as u64);
        self.generation_tokens
            .inc_by(usage.completion_tokens as u64);
        self.e2e.observe(e2e);
        if let Some(t) = ttft {
            self.ttft.observe(t);
            if usage.completion_tokens > 1 {
                self.tpot
                    .observe((e2e - t) / (usage.completion_tokens - 1) as f64);
            }
        }
    }

    /// The text exposition, after refreshing engine-level values from `stats`.
    pub fn render(&self, stats: &EngineStats) -> String {
        self.running.set(stats.running as i64);
        self.waiting.set(stats.waiting as i64);
        self.kv_blocks_total.set(stats.num_blocks as i64);
        self.kv_blocks_used
            .set((stats.num_blocks - stats.free_blocks) as i64);
        self.kv_blocks_cached_free
            .set(stats.cached_free_blocks as i64);
        self.kv_usage.set(stats.kv_usage);
        if let Ok(mut last) = self.last.lock() {
            self.preemptions
                .inc_by(stats.preemptions.saturating_sub(last.preemptions));
            self.prefix_queries.inc_by(
                stats
                    .prefix_cache
                    .queries_tokens
                    .saturating_sub(last.prefix_cache.queries_tokens),
            );
            self.prefix_hits.inc_by(
                stats
                    .prefix_cache
                    .hit_tokens
                    .saturating_sub(last.prefix_cache.hit_tokens),
            );
            self.spec_draft_tokens.inc_by(
                stats
                    .spec_draft_tokens
                    .saturating_sub(last.spec_draft_tokens),
            );
            self.spec_accepted_tokens.inc_by(
                stats
                    .spec_accepted_tokens
                    .saturating_sub(last.spec_accepted_tokens),
            );
            *last = stats.clone();
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
