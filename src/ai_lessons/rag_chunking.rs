//! Chunking for retrieval: where a document is cut decides what a search
//! can find.
//!
//! **The pattern.** Retrieval-augmented generation embeds passages of the
//! documents, not whole documents: an embedding model reads a few hundred
//! tokens at most (all-MiniLM-L6-v2: 256), one vector cannot stand for many
//! topics, and the LLM's prompt has room for a few passages only. How the
//! text is cut into those passages (chunking) is the first quality lever of
//! a RAG system, before the embedding model or the index.
//!
//! **The naive way** (fixed-size chunks, `rag::chunk::FixedChunker` without
//! overlap): every 500 characters, wherever that falls. Cheap and even, but
//! a cut lands in the middle of sentences and answers, so one answer is
//! spread over two passages, each of which half-matches the question, and
//! a passage mixes the end of one topic with the start of the next.
//!
//! **The optimal way** (structure-aware chunks, `rag::chunk`'s recursive and
//! reStructuredText/Markdown-aware chunkers, at most 500 characters): cut at
//! the largest boundary that fits (section, paragraph, line, sentence,
//! word), keep a heading with its text and a code block whole. Passages
//! then start where ideas start, and an answer's opening sentence stays
//! together with its context.
//!
//! The experiment runs `sdlab rag eval`'s pipeline (`rag::faq_eval`) on a
//! part of the Python FAQ (Debian's python3.11-doc, in the cache): the
//! "General" and "Extending" FAQ documents with their question titles
//! removed, and their 40 questions. Each chunker's passages are embedded
//! with MiniLM into a flat (exact) index; a question is answered at rank r
//! when the r-th passage contains the first 12 words of its real answer.
//! Look at `hit_at_5` (answer in the top 5), `mrr` (mean reciprocal rank,
//! top 10), `chunks` and `mean_chunk_chars`, and at the other strategies
//! as suffixed rows: the other structure-aware chunker and fixed windows
//! with overlap.
//!
//! **In production** LangChain's `RecursiveCharacterTextSplitter` and its
//! Markdown/HTML splitters, LlamaIndex's node parsers, the `text-splitter`
//! crate (which sdlab's structured chunker uses), Unstructured and Azure AI
//! Search's document layout skills do this; they add overlap, parent-child
//! chunks (search small passages, hand the LLM their larger parent),
//! titles and metadata prepended to each chunk, and per-format parsers for
//! PDF tables and HTML.

use crate::rag_collection_cmd::{chunkers, embedder};
use anyhow::{Context, Result};
use hld::LessonReport;
use rag::embed::Embedder;
use rag::faq_eval::{embed_questions, score_chunker, ChunkerScores};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The lesson's command-line name.
pub const NAME: &str = "rag-chunking";
/// A short human title.
pub const TITLE: &str =
    "RAG chunking: fixed-size cuts against structure-aware chunks (hit@5 on the Python FAQ)";

/// The FAQ documents of the experiment (of `rag::faq::FILES`).
const DOCS: [&str; 2] = ["general", "extending"];
/// The naive chunker.
const NAIVE: &str = "fixed:500";
/// The structure-aware chunkers; the better one is the optimal side.
const STRUCTURED: [&str; 2] = ["recursive:500", "structured:500"];
/// Other strategies, reported as suffixed rows.
const OTHERS: [&str; 1] = ["fixed:500:100"];

/// A metric-name suffix for a chunker spec: `fixed:500:100` -> `fixed_500_100`.
fn suffix(spec: &str) -> String {
    spec.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An embedder that remembers: a passage that several chunkers cut alike
/// (the recursive and structured chunkers often agree) is embedded once.
struct Memo {
    inner: Arc<dyn Embedder>,
    seen: Mutex<HashMap<String, Vec<f32>>>,
}

impl Embedder for Memo {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed(&self, texts: &[&str]) -> rag::Result<Vec<Vec<f32>>> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut new: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| !seen.contains_key(*t))
            .collect();
        new.sort_unstable();
        new.dedup();
        for (t, v) in new.iter().zip(self.inner.embed(&new)?) {
            seen.insert(t.to_string(), v);
        }
        Ok(texts.iter().map(|t| seen[*t].clone()).collect())
    }
}

/// The structure-aware row with the best hit@5, then MRR.
fn best<'a>(rows: &[&'a ChunkerScores]) -> &'a ChunkerScores {
    rows.iter()
        .copied()
        .max_by(|a, b| {
            (a.vector.hit_at_5, a.vector.mrr_at_10)
                .partial_cmp(&(b.vector.hit_at_5, b.vector.mrr_at_10))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .expect("at least one structure-aware chunker")
}

pub fn lesson(_seed: u64) -> Result<LessonReport> {
    let doc_root = models::loader::cache_dir().join("data/python3.11-doc");
    let (docs, questions) = rag::faq::load(&doc_root)?;
    let (docs, questions) = rag::faq::restrict(docs, questions, &DOCS);
    let emb = embedder(&None).context("loading all-MiniLM-L6-v2 (run `make models`)")?;
    let specs: Vec<String> = std::iter::once(NAIVE)
        .chain(STRUCTURED)
        .chain(OTHERS)
        .map(String::from)
        .collect();
    let cut = chunkers(&specs, &emb, &models::bert::default_path())?;
    let memo = Memo {
        inner: emb,
        seen: Mutex::new(HashMap::new()),
    };
    let q_vecs = embed_questions(&questions, &memo)?;
    let rows = cut
        .iter()
        .map(|c| score_chunker(&docs, &questions, &q_vecs, c.as_ref(), &memo))
        .collect::<rag::Result<Vec<_>>>()?;
    let naive = &rows[0];
    let structured: Vec<&ChunkerScores> = rows[1..=STRUCTURED.len()].iter().collect();
    let opt = best(&structured);
    let mut out = LessonReport::new(NAME, TITLE)
        .both("hit_at_5", naive.vector.hit_at_5, opt.vector.hit_at_5)
        .both("hit_at_1", naive.vector.hit_at_1, opt.vector.hit_at_1)
        .both("mrr", naive.vector.mrr_at_10, opt.vector.mrr_at_10)
        .both("chunks", naive.passages as f64, opt.passages as f64)
        .both("mean_chunk_chars", naive.mean_chars, opt.mean_chars)
        .both("questions", questions.len() as f64, questions.len() as f64);
    let mut lines = Vec::new();
    for r in &rows {
        if r.chunker != naive.chunker && r.chunker != opt.chunker {
            let s = suffix(&r.chunker);
            out = out
                .optimal(&format!("hit_at_5_{s}"), r.vector.hit_at_5)
                .optimal(&format!("mrr_{s}"), r.vector.mrr_at_10);
        }
        lines.push(format!(
            "{} {:.2} ({} chunks of {:.0} chars)",
            r.chunker, r.vector.hit_at_5, r.passages, r.mean_chars
        ));
    }
    Ok(out.notes(format!(
        "The Python FAQ's {} documents, {} questions (deterministic: the seed is unused). Fixed \
         {NAIVE} cuts every 500 characters: hit@5 {:.2}, MRR {:.2}. The best structure-aware \
         chunker, {}, cuts at paragraph, line and sentence boundaries: hit@5 {:.2}, MRR {:.2}, \
         with chunks of similar size ({:.0} against {:.0} characters). Every strategy's hit@5: {}. \
         An answer cut in two is half-found twice; a passage that starts where the answer starts \
         matches the question and contains the key. Overlap rescues some cut answers at the cost of \
         more chunks, and it moves every cut. Sized down from `sdlab rag eval` (8 documents, \
         175 questions, 1000-character chunks, token and semantic chunking, BM25 and hybrid search) to two \
         documents and 500-character chunks.",
        DOCS.join(" and "),
        questions.len(),
        naive.vector.hit_at_5,
        naive.vector.mrr_at_10,
        opt.chunker,
        opt.vector.hit_at_5,
        opt.vector.mrr_at_10,
        opt.mean_chars,
        naive.mean_chars,
        lines.join("; "),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag::faq_eval::Scores;

    fn scores(chunker: &str, hit_at_5: f64, mrr: f64) -> ChunkerScores {
        let s = Scores {
            hit_at_1: 0.0,
            hit_at_5,
            mrr_at_10: mrr,
        };
        ChunkerScores {
            chunker: chunker.into(),
            passages: 10,
            mean_chars: 400.0,
            vector: s,
            bm25: s,
            hybrid: s,
        }
    }

    #[test]
    fn best_prefers_hit_at_5_then_mrr() {
        let a = scores("a", 0.5, 0.9);
        let b = scores("b", 0.6, 0.1);
        let c = scores("c", 0.6, 0.2);
        assert_eq!(best(&[&a, &b, &c]).chunker, "c");
        assert_eq!(best(&[&a]).chunker, "a");
    }

    #[test]
    fn suffix_is_a_metric_name() {
        assert_eq!(suffix("fixed:500:100"), "fixed_500_100");
        assert_eq!(suffix("recursive-500"), "recursive_500");
    }
}
