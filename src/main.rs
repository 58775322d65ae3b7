//! `sdlab`: the command line that ties sdlab's crates together.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use models::{ChatMessage, ChatTemplate, LoadOptions, WeightFormat};
use server::engine::{Engine, GenerateRequest};
use server::runner::{start_llama_engine, Device, EngineOptions};
use server::sampler::SamplingParams;
use server::spec_decode::NgramConfig;
use std::path::PathBuf;

mod ai_lessons;
mod bench_batching;
mod bench_model;
mod bench_serve;
mod chat;
mod latency;
mod learn;
mod lesson_cmd;
mod lessons;
mod lora_cmd;
mod loss_plot;
mod rag_cmd;
mod rag_collection_cmd;
mod rag_service;
mod recsys_cmd;
mod router;
mod serve_limits;
mod up;

#[derive(Parser)]
#[command(
    name = "sdlab",
    version,
    about = "A Rust testbed for AI serving and system design: show, don't just tell."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a model over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Generate a completion for one prompt (continuous-batching engine, one request).
    Generate(GenerateArgs),
    /// Chat with a model in the terminal (streams tokens as they come).
    Chat(ChatArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Model utilities.
    #[command(subcommand)]
    Model(ModelCommand),
    /// LoRA adapters: make a random one, or train one.
    #[command(subcommand)]
    Lora(lora_cmd::LoraCommand),
    /// Sentence embeddings (all-MiniLM-L6-v2).
    Embed(rag_cmd::EmbedArgs),
    /// Retrieval: collections, queries and evaluations.
    #[command(subcommand)]
    Rag(rag_cmd::RagCommand),
    /// Recommender: the two-tower model on MovieLens (train, eval, recommend).
    #[command(subcommand)]
    Recsys(recsys_cmd::RecsysCommand),
    /// Lessons: `list`, or run one (naive against optimal, measured).
    Lesson(lesson_cmd::LessonArgs),
    /// The lesson menu: pick a module and a lesson, run it, read why, see the code.
    Learn(learn::LearnArgs),
    /// An OpenAI-compatible router over replicas: prefix-aware or load-aware
    /// routing, health checks, breakers, retries, failover mid-stream.
    Router(router::RouterArgs),
    /// Start N local replicas of `sdlab serve` and a router in front of them.
    Up(up::UpArgs),
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Perplexity over a text file, llama.cpp's `llama-perplexity` method.
    Perplexity(PerplexityArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Raw model speed: prefill and batched decode, quantized against f32 weights.
    Model(BenchModelArgs),
    /// Load-test any OpenAI-compatible server (sdlab, llama.cpp, vLLM) like `vllm bench serve`.
    Serve(bench_serve::BenchServeArgs),
    /// Naive against optimal batching in one process: sequential, static, continuous.
    Batching(bench_batching::BenchBatchingArgs),
}

#[derive(Args)]
struct BenchModelArgs {
    /// A GGUF file, a Hugging Face folder, or a known name.
    #[arg(long, default_value = models::loader::DEFAULT_MODEL)]
    model: String,
    /// Weight formats to compare (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "quantized,f32")]
    weights: Vec<WeightFormat>,
    /// Decode batch sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Decode steps per batch size.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A LoRA adapter (PEFT folder) to chat under.
    #[arg(long)]
    lora: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a small deterministic Hugging Face model folder (random weights, trained tokenizer).
    Synth(SynthArgs),
}

/// Which model and how to hold its weights.
#[derive(Args, Clone)]
struct ModelArgs {
    /// A GGUF file, a Hugging Face folder, or a known name.
    #[arg(long, default_value = models::loader::DEFAULT_MODEL)]
    model: String,
    /// Weight format: auto (GGUF stays quantized), quantized, or f32 (dequantize at load).
    #[arg(long, default_value = "auto")]
    weights: WeightFormat,
}

impl ModelArgs {
    fn load(&self) -> Result<models::LoadedModel> {
        Ok(models::load(
            &self.model,
            LoadOptions {
                weights: self.weights,
            },
        )?)
    }
}

/// Engine limits.
#[derive(Args, Clone)]
struct EngineArgs {
    /// KV cache size in MiB.
    #[arg(long, default_value_t = 512)]
    kv_cache_mb: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Most sequences in one batch.
    #[arg(long, default_value_t = 32)]
    max_num_seqs: usize,
    /// Most tokens computed per step (the chunked-prefill budget).
    #[arg(long, default_value_t = 512)]
    max_num_batched_tokens: usize,
    /// Longest prompt + completion (0: the model's own limit).
    #[arg(long, default_value_t = 0)]
    max_model_len: usize,
    /// Turn automatic prefix caching off.
    #[arg(long)]
    no_prefix_caching: bool,
    /// Speculative decoding by prompt lookup: draft up to N tokens per decode
    /// step from earlier n-grams of the text and verify them in the same
    /// pass (0: off). Outputs are unchanged; speed depends on how much the
    /// output repeats its context.
    #[arg(long, default_value_t = 0, value_name = "N")]
    num_speculative_tokens: usize,
    /// Longest n-gram looked up for a draft.
    #[arg(long, default_value_t = 3, value_name = "N")]
    prompt_lookup_max: usize,
    /// Shortest n-gram looked up for a draft.
    #[arg(long, default_value_t = 2, value_name = "N")]
    prompt_lookup_min: usize,
    /// Chaos testing: sleep this many milliseconds before every model step,
    /// so a load test can kill a replica mid-stream.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    chaos_step_delay_ms: u64,
    /// Where the model runs: `cpu`; `gpu`, the WGSL kernels on a Vulkan
    /// adapter (a software one such as lavapipe too; an error when there is
    /// none); `auto`, the GPU when the adapter is hardware, else the CPU.
    /// LoRA adapters run on either.
    #[arg(long, default_value = "cpu", value_name = "cpu|gpu|auto")]
    device: Device,
}

impl EngineArgs {
    fn options(&self) -> EngineOptions {
        EngineOptions {
            kv_cache_mb: self.kv_cache_mb,
            block_size: self.block_size,
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            max_model_len: self.max_model_len,
            enable_prefix_caching: !self.no_prefix_caching,
            speculative: (self.num_speculative_tokens > 0).then_some(NgramConfig {
                num_speculative_tokens: self.num_speculative_tokens,
                prompt_lookup_max: self.prompt_lookup_max,
                prompt_lookup_min: self.prompt_lookup_min,
            }),
            chaos_step_delay: std::time::Duration::from_millis(self.chaos_step_delay_ms),
            device: self.device,
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model name clients use (default: the --model name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Most requests waiting for a seat before new ones get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Require `Authorization: Bearer KEY` on /v1 routes (or set SDLAB_API_KEY).
    #[arg(long, env = "SDLAB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 8)]
    max_body_mb: usize,
    /// Also export another server's metric names on /metrics: `vllm`
    /// (vllm:num_requests_waiting, vllm:kv_cache_usage_perc,
    /// vllm:lora_requests_info, ...), read by KV- and LoRA-aware gateways.
    #[arg(long, value_name = "FORMAT", value_parser = ["vllm"])]
    metrics_compat: Option<String>,
    /// Most requests per second on the /v1 routes, all clients together
    /// (GCRA; over it: 429 with Retry-After). Off by default.
    #[arg(long, value_name = "PER_SECOND")]
    rate_limit: Option<f64>,
    /// Requests let through at once above the steady rate.
    #[arg(long, default_value_t = 8)]
    rate_limit_burst: u64,
    /// LoRA adapters to load at start-up, NAME=PATH (PEFT folders); a request picks one by `model`.
    #[arg(long, num_args = 1.., value_parser = parse_lora_module)]
    lora_modules: Vec<(String, PathBuf)>,
    /// Folder of adapters: its sub-folders are served under their names, and
    /// POST /v1/load_lora_adapter may load only from inside it.
    #[arg(long)]
    lora_dir: Option<PathBuf>,
    /// Most adapters resident in memory (least recently used idle ones are evicted).
    #[arg(long, default_value_t = 4)]
    max_loras: usize,
    /// Largest adapter rank accepted.
    #[arg(long, default_value_t = 64)]
    max_lora_rank: usize,
    /// Embedding model behind /v1/embeddings and /v1/rag: a
    /// sentence-transformers folder, `hashing` (model-free) or `none`
    /// [default: all-MiniLM-L6-v2 from the cache, if `make models` fetched it]
    #[arg(long)]
    embedding_model: Option<PathBuf>,
    /// Folder of RAG collections, shared with `sdlab rag` [default: .cache/rag]
    #[arg(long)]
    rag_dir: Option<PathBuf>,
    /// Chunker of collections created over HTTP (see `sdlab rag ingest --help`).
    #[arg(long, default_value = "structured:1000")]
    rag_chunker: String,
    /// Two-tower checkpoint behind /v1/recommend, or `none`
    /// [default: .cache/recsys/two-tower, if `sdlab recsys train` wrote it]
    #[arg(long)]
    recsys_model: Option<PathBuf>,
}

fn parse_lora_module(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("`{s}` is not NAME=PATH")),
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A LoRA adapter (PEFT folder) to generate under.
    #[arg(long)]
    lora: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep going past EOS.
    #[arg(long)]
    ignore_eos: bool,
    /// Print {"text", "token_ids", "finish_reason"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(long)]
    file: PathBuf,
    /// Window size in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Print {"perplexity", "windows", "tokens_scored"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SynthArgs {
    /// tiny or small.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a),
        Command::Generate(a) => generate(a),
        Command::Chat(a) => chat_cmd(a),
        Command::Bench(BenchCommand::Model(a)) => bench_model_cmd(a),
        Command::Bench(BenchCommand::Serve(a)) => bench_serve::run(a),
        Command::Bench(BenchCommand::Batching(a)) => bench_batching::run(a),
        Command::Eval(EvalCommand::Perplexity(a)) => perplexity(a),
        Command::Model(ModelCommand::Synth(a)) => synth(a),
        Command::Lora(c) => lora_cmd::run(c),
        Command::Embed(a) => rag_cmd::embed(a),
        Command::Rag(c) => rag_cmd::run(c),
        Command::Recsys(c) => recsys_cmd::run(c),
        Command::Lesson(a) => lesson_cmd::run(a),
        Command::Learn(a) => learn::run(a),
        Command::Router(a) => router::run(a),
        Command::Up(a) => up::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn chat_prompt(loaded: &models::LoadedModel, user: &str) -> Result<String> {
    let tok = &loaded.tokenizer;
    let Some(source) = &tok.chat_template else {
        bail!("{} has no chat template; drop --chat", loaded.name)
    };
    let template = ChatTemplate::new(source, tok.bos_token(), tok.eos_token())?;
    Ok(template.render(&[ChatMessage::new("user", user)], true)?)
}

/// The adapter `--lora DIR` names, read and checked against the model.
fn cli_adapter(
    loaded: &models::LoadedModel,
    dir: &Option<PathBuf>,
) -> Result<Option<std::sync::Arc<server::lora::ActiveAdapter>>> {
    let Some(dir) = dir else { return Ok(None) };
    let weights = models::LoraAdapter::load(dir, &loaded.model.cfg)?;
    let name = dir
        .file_name()
        .map_or("lora".into(), |n| n.to_string_lossy().to_string());
    Ok(Some(std::sync::Arc::new(server::lora::ActiveAdapter::new(
        &name, 1, weights,
    ))))
}

/// Starts the engine on the device `args` name (LoRA adapters run on either).
fn start_engine(loaded: models::LoadedModel, args: &EngineArgs) -> Result<Engine> {
    start_llama_engine(loaded, &args.options()).map_err(anyhow::Error::msg)
}

fn generate(a: GenerateArgs) -> Result<()> {
    let loaded = a.model.load()?;
    let text = if a.chat {
        chat_prompt(&loaded, &a.prompt)?
    } else {
        a.prompt.clone()
    };
    let prompt_tokens = loaded.tokenizer.encode(&text)?;
    let adapter = cli_adapter(&loaded, &a.lora)?;
    let engine = start_engine(loaded, &a.engine)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        ..SamplingParams::default()
    };
    let out = engine.generate(GenerateRequest {
        prompt_tokens,
        params,
        adapter,
        resume_tokens: 0,
    })?;
    let stats = engine.stats();
    if a.json {
        let v = serde_json::json!({
            "text": out.text,
            "token_ids": out.token_ids,
            "finish_reason": out.finish_reason.as_str(),
            "steps": stats.steps,
            "spec_draft_tokens": stats.spec_draft_tokens,
            "spec_accepted_tokens": stats.spec_accepted_tokens,
            "device": engine.device(),
        });
        println!("{v}");
    } else {
        println!("{}", out.text);
        let spec = if a.engine.num_speculative_tokens > 0 {
            format!(
                ", speculation: {} of {} drafted tokens accepted",
                stats.spec_accepted_tokens, stats.spec_draft_tokens
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{} prompt + {} completion tokens in {} steps, finish: {}{spec}; on {}]",
            out.usage.prompt_tokens,
            out.usage.completion_tokens,
            stats.steps,
            out.finish_reason.as_str(),
            engine.device()
        );
    }
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let loaded = a.model.load()?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let tokens = loaded.tokenizer.encode(&text)?;
    let bar = ProgressBar::new((tokens.len() / a.ctx.max(1)) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} windows, {elapsed} (eta {eta})")
            .expect("valid template"),
    );
    bar.set_message("perplexity");
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = std::time::Instant::now();
    let ppl = models::eval::perplexity(&loaded.model, &tokens, a.ctx, |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if a.json {
        let v = serde_json::json!({ "perplexity": ppl.perplexity, "windows": ppl.windows, "tokens_scored": ppl.tokens_scored });
        println!("{v}");
    } else {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}: PPL = {:.4} over {} windows of {} ({} tokens scored; {:.1} tokens/s, weights {})",
            loaded.name,
            ppl.perplexity,
            ppl.windows,
            a.ctx,
            ppl.tokens_scored,
            (ppl.windows * a.ctx) as f64 / secs,
            loaded.weights
        );
    }
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    let preset = models::synth::SynthPreset::by_name(&a.preset)?;
    models::synth::write_synthetic_model(&a.out, &preset, a.seed)?;
    println!("wrote a `{}` model to {}", a.preset, a.out.display());
    Ok(())
}

fn chat_cmd(a: ChatArgs) -> Result<()> {
    let loaded = a.model.load()?;
    let name = loaded.name.clone();
    let adapter = cli_adapter(&loaded, &a.lora)?;
    let engine = start_engine(loaded, &a.engine)?;
    let params = SamplingParams {
        temperature: a.temperature,
        seed: a.seed,
        max_tokens: a.max_tokens,
        ..SamplingParams::default()
    };
    chat::run(&engine, &name, params, adapter)
}

fn bench_model_cmd(a: BenchModelArgs) -> Result<()> {
    if a.prompt_len == 0 || a.steps == 0 || a.batch.contains(&0) {
        bail!("--prompt-len, --steps and every --batch must be positive");
    }
    let rows = bench_model::run(&a.model, &a.weights, &a.batch, a.prompt_len, a.steps)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    eprintln!("CPU kernels: {}", kernels::cpu_kernels());
    println!(
        "{:<10} {:>10} {:>16} decode tok/s by batch size",
        "weights", "weight MB", "prefill tok/s"
    );
    for r in &rows {
        let decode: Vec<String> = r
            .decode
            .iter()
            .map(|(b, t)| format!("B={b}: {t:.1}"))
            .collect();
        println!(
            "{:<10} {:>10.1} {:>16.1} {}",
            r.weights,
            r.weight_mb,
            r.prefill_tokens_per_s,
            decode.join("  ")
        );
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let wrap_api = serve_limits::rate_limit(a.rate_limit, a.rate_limit_burst)?;
    let loaded = a.model.load()?;
    let (name, weights, layers) = (
        loaded.name.clone(),
        loaded.weights,
        loaded.model.cfg.num_layers,
    );
    let served = a.served_model_name.clone().unwrap_or(name.clone());
    let loras = server::lora::AdapterRegistry::new(
        loaded.model.cfg.clone(),
        &served,
        server::lora::LoraOptions {
            modules: a.lora_modules.clone(),
            lora_dir: a.lora_dir.clone(),
            max_loras: a.max_loras,
            max_lora_rank: a.max_lora_rank,
        },
    )?;
    let adapters = loras.list();
    let engine = start_engine(loaded, &a.engine)?;
    let cfg = engine.config().clone();
    let state_device = engine.device().to_string();
    let config = server::http::ServerConfig {
        served_model_name: served.clone(),
        api_key: a.api_key.clone(),
        max_queue: a.max_queue,
        body_limit: a.max_body_mb << 20,
        metrics_compat_vllm: a.metrics_compat.as_deref() == Some("vllm"),
    };
    let extensions = server::http::Extensions {
        retrieval: rag_service::from_args(&a.embedding_model, &a.rag_dir, &a.rag_chunker)?,
        recommender: recsys_cmd::service_from_args(&a.recsys_model)?,
    };
    let state = server::http::AppState::with_extensions(engine, config, loras, extensions)
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        tracing::info!(
            "serving {name} as `{served}` ({layers} layers, {weights} weights) on the {}; KV cache {} MiB = {} blocks x {} = {} tokens; max {} seqs, {} batched tokens, context {}; {url}/v1",
            state_device,
            a.engine.kv_cache_mb,
            cfg.num_blocks,
            cfg.block_size,
            cfg.num_blocks * cfg.block_size,
            cfg.max_num_seqs,
            cfg.max_num_batched_tokens,
            cfg.max_model_len
        );
        if !adapters.is_empty() {
            let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
            tracing::info!("LoRA adapters: {} (at most {} resident)", names.join(", "), a.max_loras);
        }
        server::http::serve_with(listener, state, wrap_api, server::http::shutdown_signal()).await?;
        anyhow::Ok(())
    })
}
