//! `sdlab embed` and `sdlab rag`: sentence embeddings, and retrieval over
//! collections of documents.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub struct EmbedArgs {
    /// Texts to embed (or `--stdin`: one text per line).
    pub texts: Vec<String>,
    /// Read one text per line from standard input.
    #[arg(long)]
    pub stdin: bool,
    /// The embedding model folder (default: all-MiniLM-L6-v2 in the cache).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Print a JSON list of {"text", "embedding"}.
    #[arg(long)]
    pub json: bool,
    /// Also print throughput and per-batch latency (p50, p90) to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Encoder implementation: `packed` (sdlab's, no padding) or `candle`
    /// (candle-transformers' BertModel, padded batches).
    #[arg(long, default_value = "packed")]
    pub backend: models::bert::Backend,
}

#[derive(Subcommand)]
pub enum RagCommand {
    /// Chunk, embed and index files into a collection (crash-safe, in batches).
    Ingest(crate::rag_collection_cmd::IngestArgs),
    /// The chunks of a collection nearest to a text.
    Query(crate::rag_collection_cmd::QueryArgs),
    /// Retrieval quality on the Python FAQ per chunker, against BM25 and hybrid.
    Eval(crate::rag_collection_cmd::EvalArgs),
    /// ANN quality and speed on GloVe-50: recall@10 and queries/s, HNSW against exact.
    EvalAnn(EvalAnnArgs),
}

#[derive(Args)]
pub struct EvalAnnArgs {
    #[arg(long, default_value = "glove50")]
    pub dataset: String,
    /// HNSW neighbours per node.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// ef_search values to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,20,40,80,160")]
    pub ef: Vec<usize>,
    /// Use only the first N base vectors (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let mut texts = a.texts.clone();
    if a.stdin {
        texts.extend(read_stdin_lines()?);
    }
    if texts.is_empty() {
        anyhow::bail!(
            "no texts to embed: pass them as arguments or one per line with --stdin \
             (blank stdin lines are skipped)"
        );
    }
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let dir = a.model.clone().unwrap_or_else(models::bert::default_path);
    let loaded = std::time::Instant::now();
    let model = models::bert::SentenceEmbedder::load_with(&dir, a.backend)?
        .with_batch_size(a.batch_size)?;
    let load_s = loaded.elapsed().as_secs_f64();
    let (vectors, timing) = embed_timed(&model, &texts, a.batch_size)?;
    if a.stats {
        timing.report(&texts, load_s, &model);
    }
    print_vectors(&texts, &vectors, a.json)
}

fn read_stdin_lines() -> Result<Vec<String>> {
    use std::io::BufRead;
    let mut out = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| anyhow::anyhow!("reading standard input: {e}"))?;
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// Wall time of each `embed` call (one batch each) and of all of them.
struct EmbedTiming {
    batch_ms: Vec<f64>,
    total_s: f64,
    batch_size: usize,
}

/// Embeds like sentence-transformers' `encode`: longest texts (by characters)
/// first, `batch_size` per call, order restored. Each call is timed,
/// tokenization included, so `--batch-size 1` gives per-text latency.
fn embed_timed(
    model: &models::bert::SentenceEmbedder,
    texts: &[String],
    batch_size: usize,
) -> Result<(Vec<Vec<f32>>, EmbedTiming)> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));
    let mut vectors = vec![Vec::new(); texts.len()];
    let mut batch_ms = Vec::with_capacity(texts.len().div_ceil(batch_size));
    let all = std::time::Instant::now();
    for chunk in order.chunks(batch_size) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        let t = std::time::Instant::now();
        let out = model.embed(&batch)?;
        batch_ms.push(t.elapsed().as_secs_f64() * 1e3);
        for (&i, v) in chunk.iter().zip(out) {
            vectors[i] = v;
        }
    }
    let timing = EmbedTiming {
        batch_ms,
        total_s: all.elapsed().as_secs_f64(),
        batch_size,
    };
    Ok((vectors, timing))
}

impl EmbedTiming {
    fn report(&self, texts: &[String], load_s: f64, model: &models::bert::SentenceEmbedder) {
        let mut ms = self.batch_ms.clone();
        ms.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        let lens: Vec<usize> = texts
            .iter()
            .map(|t| model.tokenize(&[t.as_str()]).map_or(0, |ids| ids[0].len()))
            .collect();
        let tokens: usize = lens.iter().sum();
        eprintln!(
            "embedded {} texts ({} tokens: mean {:.1}, max {}) in {:.2} s at batch {} on the {:?} \
             backend: {:.1} texts/s, {:.0} tokens/s; per batch p50 {:.1} ms, p90 {:.1} ms; \
             model load {:.2} s; {} threads",
            texts.len(),
            tokens,
            tokens as f64 / texts.len() as f64,
            lens.iter().max().unwrap_or(&0),
            self.total_s,
            self.batch_size,
            model.backend(),
            texts.len() as f64 / self.total_s,
            tokens as f64 / self.total_s,
            pct(0.5),
            pct(0.9),
            load_s,
            candle_core::utils::get_num_threads(),
        );
    }
}

fn print_vectors(texts: &[String], vectors: &[Vec<f32>], json: bool) -> Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        let items: Vec<serde_json::Value> = texts
            .iter()
            .zip(vectors)
            .map(|(t, v)| serde_json::json!({ "text": t, "embedding": v }))
            .collect();
        serde_json::to_writer(&mut out, &items)?;
        writeln!(out)?;
    } else {
        for (t, v) in texts.iter().zip(vectors) {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
            let shown: String = t.chars().take(60).collect();
            let more = if shown.len() < t.len() { "..." } else { "" };
            writeln!(
                out,
                "[{}, ...] dim {} norm {:.4}  {:?}{more}",
                head.join(", "),
                v.len(),
                norm,
                shown
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

pub fn run(cmd: RagCommand) -> Result<()> {
    match cmd {
        RagCommand::EvalAnn(a) => eval_ann(a),
        RagCommand::Ingest(a) => crate::rag_collection_cmd::ingest(a),
        RagCommand::Query(a) => crate::rag_collection_cmd::query(a),
        RagCommand::Eval(a) => crate::rag_collection_cmd::eval(a),
    }
}

fn eval_ann(a: EvalAnnArgs) -> Result<()> {
    use anyhow::Context;
    use rag::index::eval_ann::{run, EvalAnnOptions};
    let mut opts = EvalAnnOptions {
        dataset: a.dataset.clone(),
        m: a.m,
        ef_construction: a.ef_construction,
        ef: a.ef.clone(),
        limit: a.limit,
        ..EvalAnnOptions::default()
    };
    if a.limit > 0 {
        // A subset is a quick check, not a benchmark: time one pass over
        // the queries, three times.
        opts.min_run_s = 0.0;
        opts.runs = 3;
        opts.flat_runs = 1;
    }
    let report = run(&opts, |msg| eprintln!("[eval-ann] {msg}"))?;
    print_ann_report(&report);
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[eval-ann] wrote {}", path.display());
    }
    Ok(())
}

/// The evaluation as a table: exact search, then HNSW per `ef` (and
/// `hnsw_rs`'s own search on the same graph, when measured).
fn print_ann_report(r: &rag::index::eval_ann::EvalAnnReport) {
    println!(
        "{}: {} base vectors, {} queries, {}-d; truth: {}",
        r.dataset, r.base, r.queries, r.dim, r.truth
    );
    println!(
        "HNSW M={} ef_construction={}: built in {:.1} s on {} threads; queries/s: {}",
        r.m, r.ef_construction, r.build_s, r.build_threads, r.qps_method
    );
    println!();
    println!(
        "{:<16} {:>5} {:>10} {:>11}",
        "search", "ef", "recall@10", "queries/s"
    );
    let row = |name: &str, ef: &str, recall: f64, qps: f64| {
        println!("{name:<16} {ef:>5} {recall:>10.4} {qps:>11.0}");
    };
    row("flat (exact)", "-", r.flat.recall_at_10, r.flat.qps);
    for p in &r.hnsw {
        row("hnsw", &p.ef.to_string(), p.recall_at_10, p.qps);
    }
    for p in &r.hnsw_rs_search {
        row("hnsw_rs search", &p.ef.to_string(), p.recall_at_10, p.qps);
    }
}
