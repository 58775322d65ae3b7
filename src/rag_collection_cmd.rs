//! `sdlab rag ingest | query | eval`: collections on disk, and the FAQ
//! retrieval evaluation.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rag::collection::{Collection, CollectionOptions};
use rag::embed::{Embedder, MiniLm};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where collections live: `--root`, or `<cache>/rag`.
pub fn root(given: &Option<PathBuf>) -> PathBuf {
    given
        .clone()
        .unwrap_or_else(|| models::loader::cache_dir().join("rag"))
}

/// `--model hashing` is the model-free lexical embedder (256-d feature
/// hashing); anything else is a sentence-transformers folder.
pub fn embedder(model: &Option<PathBuf>) -> Result<Arc<dyn Embedder>> {
    if model.as_deref() == Some(Path::new("hashing")) {
        return Ok(Arc::new(rag::hashing::HashingEmbedder::new(256)));
    }
    let m = match model {
        Some(p) => MiniLm::load(p)?,
        None => MiniLm::load_default()?,
    };
    Ok(Arc::new(m))
}

#[derive(Args)]
pub struct IngestArgs {
    /// Files or folders (folders are walked for .txt, .md and .rst files).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long)]
    pub collection: String,
    /// Chunker of a new collection: fixed:CHARS:OVERLAP, tokens:N:OVERLAP,
    /// recursive:CHARS, structured:CHARS, semantic:PERCENTILE.
    #[arg(long, default_value = "structured:1000")]
    pub chunker: String,
    /// Index of a new collection: hnsw or flat.
    #[arg(long, default_value = "hnsw")]
    pub index: String,
    /// Documents per committed batch.
    #[arg(long, default_value_t = 32)]
    pub batch_docs: usize,
    /// Folder holding the collections (default: .cache/rag).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The embedding model folder (default: all-MiniLM-L6-v2 in the cache),
    /// or `hashing` for the model-free feature-hashing embedder.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Args)]
pub struct QueryArgs {
    pub text: String,
    #[arg(long)]
    pub collection: String,
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long, default_value = "python-faq")]
    pub dataset: String,
    /// Chunkers to compare (the reference 200-word windows always run).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fixed:1000:200,tokens:256:32,recursive:1000,structured:1000,semantic:90"
    )]
    pub chunkers: Vec<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn is_text_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    [".txt", ".md", ".rst", ".markdown"]
        .iter()
        .any(|e| name.ends_with(e))
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            walk(&e, out)?;
        }
    } else if path.is_file() {
        if is_text_file(path) || out.is_empty() {
            out.push(path.to_path_buf());
        }
    } else {
        bail!("{} does not exist", path.display());
    }
    Ok(())
}

pub fn ingest(a: IngestArgs) -> Result<()> {
    let mut files = Vec::new();
    for p in &a.paths {
        let before = files.len();
        if p.is_file() {
            files.push(p.clone());
        } else {
            walk(p, &mut files)?;
        }
        if files.len() == before {
            eprintln!("note: no .txt, .md or .rst file under {}", p.display());
        }
    }
    if files.is_empty() {
        bail!("nothing to ingest");
    }
    let mut docs = Vec::with_capacity(files.len());
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        match String::from_utf8(bytes) {
            Ok(text) if !text.trim().is_empty() => docs.push((f.display().to_string(), text)),
            Ok(_) => eprintln!("skipping {}: empty", f.display()),
            Err(_) => eprintln!("skipping {}: not UTF-8 text", f.display()),
        }
    }
    let opts = CollectionOptions {
        chunker: a.chunker.clone(),
        index: a.index.clone(),
        batch_docs: a.batch_docs,
    };
    let mut c = Collection::open(&root(&a.root), &a.collection, embedder(&a.model)?, &opts)?;
    let bar = ProgressBar::new(docs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "ingest [{bar:30}] {pos}/{len} documents, {elapsed} (eta {eta})",
        )
        .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let stats = c.ingest(&docs, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    println!(
        "{}: {} documents, {} chunks in {} batches ({:.1} s); the collection now holds {} documents, {} chunks (chunker {})",
        a.collection,
        stats.documents,
        stats.chunks,
        stats.batches,
        started.elapsed().as_secs_f64(),
        c.count_documents()?,
        c.count_chunks(),
        c.chunker_spec()
    );
    Ok(())
}

pub fn query(a: QueryArgs) -> Result<()> {
    let dir = root(&a.root).join(&a.collection);
    if !dir.join("store.sqlite").is_file() {
        bail!(
            "no collection {} under {} (create it with `sdlab rag ingest`)",
            a.collection,
            root(&a.root).display()
        );
    }
    let c = Collection::open(
        &root(&a.root),
        &a.collection,
        embedder(&a.model)?,
        &CollectionOptions::default(),
    )?;
    let hits = c.query(&a.text, a.k)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    for (i, h) in hits.iter().enumerate() {
        let snippet: String = h
            .chunk
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let snippet: String = snippet.chars().take(200).collect();
        println!(
            "{}. {:.3}  {} [{}..{}]\n   {snippet}",
            i + 1,
            h.score,
            h.chunk.source,
            h.chunk.start,
            h.chunk.end
        );
    }
    Ok(())
}

/// The chunkers `specs` name ([`rag::chunk::from_spec`]), given the
/// embedder (semantic chunking) and the model folder whose tokenizer token
/// chunking counts with.
pub fn chunkers(
    specs: &[String],
    emb: &Arc<dyn Embedder>,
    model_dir: &Path,
) -> Result<Vec<Box<dyn rag::chunk::Chunker>>> {
    let tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).ok();
    Ok(specs
        .iter()
        .map(|spec| rag::chunk::from_spec(spec, Some(emb.clone()), tokenizer.as_ref()))
        .collect::<rag::Result<Vec<_>>>()?)
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if a.dataset != "python-faq" {
        bail!("unknown dataset {:?} (python-faq)", a.dataset);
    }
    let doc_root = models::loader::cache_dir().join("data/python3.11-doc");
    let (docs, questions) = rag::faq::load(&doc_root)?;
    let emb = embedder(&a.model)?;
    let model_dir = a.model.clone().unwrap_or_else(models::bert::default_path);
    let chunkers = chunkers(&a.chunkers, &emb, &model_dir)?;
    let started = std::time::Instant::now();
    let report = rag::faq_eval::run(&docs, &questions, &chunkers, emb.as_ref(), |m| {
        eprintln!("{m}")
    })?;
    println!("{} questions; {}", report.questions, report.matching_rule);
    println!(
        "{:<18} {:>8} {:>7} {:>7} {:>7}   {:>7} {:>7}   {:>7} {:>7}",
        "chunker", "passages", "hit@1", "hit@5", "MRR@10", "BM25@5", "MRR", "hybr@5", "MRR"
    );
    for r in &report.chunkers {
        println!(
            "{:<18} {:>8} {:>7.3} {:>7.3} {:>7.3}   {:>7.3} {:>7.3}   {:>7.3} {:>7.3}",
            r.chunker,
            r.passages,
            r.vector.hit_at_1,
            r.vector.hit_at_5,
            r.vector.mrr_at_10,
            r.bm25.hit_at_5,
            r.bm25.mrr_at_10,
            r.hybrid.hit_at_5,
            r.hybrid.mrr_at_10
        );
    }
    println!(
        "BM25 on the reference windows: hit@1 {:.3}, hit@5 {:.3}, MRR@10 {:.3}; hybrid: hit@1 {:.3}, hit@5 {:.3}, MRR@10 {:.3} ({:.0} s)",
        report.bm25.hit_at_1,
        report.bm25.hit_at_5,
        report.bm25.mrr_at_10,
        report.hybrid.hit_at_1,
        report.hybrid.hit_at_5,
        report.hybrid.mrr_at_10,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
