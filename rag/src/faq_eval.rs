//! Retrieval quality on the Python FAQ, per chunking strategy, against BM25
//! and a hybrid of both (`sdlab rag eval --dataset python-faq`).
//!
//! For each chunker: cut the eight FAQ documents ([`crate::faq`], questions
//! removed) into passages, embed them, and rank them for each of the ~175
//! questions by exact cosine ([`FlatIndex`](crate::index::flat::FlatIndex):
//! the eval measures chunking and embedding, not ANN error). A question is answered at rank r when the
//! passage at r contains the first 12 words of its answer (whitespace
//! normalized): hit@1, hit@5 and MRR@10 follow. BM25 (Okapi, k1 1.5, b 0.75,
//! lower-cased `\w+`) and the hybrid (BM25 and vectors fused by reciprocal
//! rank, k = 60) run on the reference passages: 200-word windows with a
//! 100-word stride, as in `../shared/BASELINES.md`, and also on each
//! chunker's own passages.

use crate::bm25::{reciprocal_rank_fusion, Bm25};
use crate::chunk::{Chunk, Chunker};
use crate::embed::Embedder;
use crate::faq::{Document, Question};
use crate::rerank::Dense;
use crate::Result;

/// hit@1, hit@5, MRR@10.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Scores {
    pub hit_at_1: f64,
    pub hit_at_5: f64,
    pub mrr_at_10: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChunkerScores {
    pub chunker: String,
    pub passages: usize,
    /// Mean passage length in characters.
    pub mean_chars: f64,
    #[serde(flatten)]
    pub vector: Scores,
    /// BM25 on this chunker's passages.
    pub bm25: Scores,
    /// Vectors and BM25 fused by reciprocal rank, on these passages.
    pub hybrid: Scores,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FaqReport {
    pub questions: usize,
    pub chunkers: Vec<ChunkerScores>,
    /// BM25 on the reference 200-word windows.
    pub bm25: Scores,
    /// The hybrid on the reference windows.
    pub hybrid: Scores,
    pub matching_rule: &'static str,
}

pub const MATCHING_RULE: &str = "a passage is relevant when it contains the first 12 words of the answer, whitespace-normalized; the corpus is the 8 FAQ files with adornment lines and question titles removed";

/// Windows of `size` words every `stride` words (the reference passages).
pub fn word_windows(text: &str, size: usize, stride: usize) -> Vec<Chunk> {
    let words: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    v.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            v.push((s, text.len()));
        }
        v
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let j = (i + size).min(words.len());
        out.push(Chunk {
            start: words[i].0,
            end: words[j - 1].1,
        });
        if j == words.len() {
            break;
        }
        i += stride.max(1);
    }
    out
}

/// hit@1, hit@5 and MRR@10 of ranked lists of passage indices, one list
/// per question (a question is answered at the first passage among the top
/// 10 that contains its answer key).
pub fn score(questions: &[Question], passages: &[&str], rankings: &[Vec<usize>]) -> Scores {
    let mut s = Scores::default();
    for (q, ranked) in questions.iter().zip(rankings) {
        if let Some(r) = ranked
            .iter()
            .take(10)
            .position(|&p| q.is_relevant(passages[p]))
        {
            s.hit_at_1 += (r == 0) as u8 as f64;
            s.hit_at_5 += (r < 5) as u8 as f64;
            s.mrr_at_10 += 1.0 / (r + 1) as f64;
        }
    }
    let n = questions.len().max(1) as f64;
    Scores {
        hit_at_1: s.hit_at_1 / n,
        hit_at_5: s.hit_at_5 / n,
        mrr_at_10: s.mrr_at_10 / n,
    }
}

/// Vector, BM25 and hybrid scores of one passage set.
fn evaluate(
    questions: &[Question],
    q_vecs: &[Vec<f32>],
    passages: &[&str],
    embedder: &dyn Embedder,
) -> Result<(Scores, Scores, Scores)> {
    let dense = Dense::new(embedder.embed(passages)?)?;
    let vector: Vec<Vec<usize>> = q_vecs
        .iter()
        .map(|q| dense.top(q, 10))
        .collect::<Result<_>>()?;
    let bm = Bm25::new(passages);
    let lexical: Vec<Vec<usize>> = questions
        .iter()
        .map(|q| {
            bm.top_k(&q.question, 10)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let hybrid: Vec<Vec<usize>> = vector
        .iter()
        .zip(&lexical)
        .map(|(v, l)| reciprocal_rank_fusion(&[v.clone(), l.clone()], 60.0, 10))
        .collect();
    Ok((
        score(questions, passages, &vector),
        score(questions, passages, &lexical),
        score(questions, passages, &hybrid),
    ))
}

/// Mean length of `passages` in characters (0 for none).
fn mean_chars(passages: &[&str]) -> f64 {
    let total: usize = passages.iter().map(|p| p.chars().count()).sum();
    total as f64 / passages.len().max(1) as f64
}

/// The questions' embeddings, in order.
pub fn embed_questions(questions: &[Question], embedder: &dyn Embedder) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    embedder.embed(&texts)
}

/// Every document cut by `f`, the passages in document order.
fn cut_docs<'a>(
    docs: &'a [Document],
    f: &dyn Fn(&str) -> Result<Vec<Chunk>>,
) -> Result<Vec<&'a str>> {
    let mut passages = Vec::new();
    for d in docs {
        passages.extend(f(&d.text)?.into_iter().map(|c| c.text(&d.text)));
    }
    Ok(passages)
}

/// One passage set's row: vector, BM25 and hybrid scores.
fn row(
    chunker: String,
    passages: &[&str],
    questions: &[Question],
    q_vecs: &[Vec<f32>],
    embedder: &dyn Embedder,
) -> Result<ChunkerScores> {
    let (vector, bm25, hybrid) = evaluate(questions, q_vecs, passages, embedder)?;
    Ok(ChunkerScores {
        chunker,
        passages: passages.len(),
        mean_chars: mean_chars(passages),
        vector,
        bm25,
        hybrid,
    })
}

/// One chunker's row: its passages over `docs`, ranked for each question
/// (`q_vecs` from [`embed_questions`]).
pub fn score_chunker(
    docs: &[Document],
    questions: &[Question],
    q_vecs: &[Vec<f32>],
    chunker: &dyn Chunker,
    embedder: &dyn Embedder,
) -> Result<ChunkerScores> {
    let passages = cut_docs(docs, &|t| chunker.chunk(t))?;
    row(chunker.name(), &passages, questions, q_vecs, embedder)
}

/// Runs every chunker; `progress(message)` between steps.
pub fn run(
    docs: &[Document],
    questions: &[Question],
    chunkers: &[Box<dyn Chunker>],
    embedder: &dyn Embedder,
    mut progress: impl FnMut(&str),
) -> Result<FaqReport> {
    progress(&format!("embedding {} questions", questions.len()));
    let q_vecs = embed_questions(questions, embedder)?;
    let reference = cut_docs(docs, &|t| Ok(word_windows(t, 200, 100)))?;
    progress(&format!("words:200:100: {} passages", reference.len()));
    let first = row(
        "words:200:100".into(),
        &reference,
        questions,
        &q_vecs,
        embedder,
    )?;
    let (bm25, hybrid) = (first.bm25, first.hybrid);
    let mut rows = vec![first];
    for c in chunkers {
        let r = score_chunker(docs, questions, &q_vecs, c.as_ref(), embedder)?;
        progress(&format!("{}: {} passages", r.chunker, r.passages));
        rows.push(r);
    }
    Ok(FaqReport {
        questions: questions.len(),
        chunkers: rows,
        bm25,
        hybrid,
        matching_rule: MATCHING_RULE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_windows_cover_with_overlap() {
        let text = "a b c d e f g";
        let w = word_windows(text, 3, 2);
        let t: Vec<&str> = w.iter().map(|c| c.text(text)).collect();
        assert_eq!(t, ["a b c", "c d e", "e f g"]);
        assert_eq!(word_windows("", 3, 2), vec![]);
        assert_eq!(word_windows("  one  ", 200, 100)[0].text("  one  "), "one");
    }

    #[test]
    fn mean_chars_counts_characters() {
        assert_eq!(mean_chars(&["ab", "été!"]), 3.0);
        assert_eq!(mean_chars(&[]), 0.0);
    }

    #[test]
    fn scores_count_first_relevant_rank() {
        let q = |key: &str| Question {
            question: "q".into(),
            answer: key.into(),
            key: key.into(),
        };
        let qs = [q("alpha"), q("beta"), q("gamma")];
        let passages = ["x alpha", "beta y", "z"];
        // alpha at rank 0, beta at rank 2 (third), gamma never.
        let s = score(&qs, &passages, &[vec![0, 1], vec![2, 2, 1], vec![0, 1, 2]]);
        assert!((s.hit_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.hit_at_5 - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.mrr_at_10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    }
}
