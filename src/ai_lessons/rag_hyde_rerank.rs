//! RAG pipeline tuning: change what the search looks for (HyDE) and reorder
//! what it found (a second-stage rerank), and measure whether either helps.
//!
//! **The pattern.** Dense retrieval embeds the question and takes the
//! passages whose vectors are nearest. But a question and its answer are
//! different kinds of text ("Why is it called Python?" against "When he
//! began implementing Python, Guido van Rossum was also reading..."), and
//! one embedding compares them coarsely. Two common fixes sit on either
//! side of the search. HyDE (Gao et al. 2022, "Precise Zero-Shot Dense
//! Retrieval without Relevance Labels") asks an LLM to write a hypothetical
//! answer first and searches with its embedding: answer against answers.
//! Its facts may be wrong; only its vocabulary and shape have to be right.
//! Reranking keeps the cheap search for recall (the top 20 or 100) and
//! reorders those candidates with a second scorer that looks at the
//! question and each passage together.
//!
//! **The naive way** (plain dense retrieval): all-MiniLM-L6-v2 embeds the
//! question, an exact index (`rag::rerank::Dense`) returns the nearest
//! passages. One embedding per query, milliseconds.
//!
//! **The tuned ways** (`rag::rerank`). HyDE: SmolLM2-135M-Instruct writes a
//! short answer to each question (greedy, up to 48 tokens, ChatML prompt);
//! the query vector is the normalized mean of the question's and the
//! answer's embeddings (the paper averages several answers with the
//! question; one answer here). Rerank: the dense top 10 are rescored by
//! BM25 (`rag::bm25`, term weights from the whole corpus) and the BM25
//! order is fused with the dense order by reciprocal rank (k = 60): a
//! hybrid second stage that reorders the candidates and never adds or
//! drops one. And the two together. The report's optimal side is whichever
//! pipeline scores the best MRR (then hit@5), with every pipeline's numbers
//! as suffixed rows, so if neither trick helps the optimal side is plain
//! dense and the notes say so.
//!
//! What it does not run: a pointwise LLM reranker (log P("Yes") for
//! "Passage: ... Question: ... Is the passage relevant?") or a
//! cross-encoder. No cross-encoder model is in sdlab's cache, and the LLM
//! would read every candidate with the question: 10 passages of about 300
//! tokens, some 3,000 prompt tokens per query, 8 to 15 s per query at
//! SmolLM2's 200 to 400 prompt tokens/s on two cores (`sdlab bench
//! model`), several minutes for this lesson's questions. A real reranker's
//! model pays that price too, which is why production rerankers are small,
//! batched on a GPU, and see only the top few dozen.
//!
//! The data: the Python FAQ of `sdlab rag eval --dataset python-faq`
//! (`rag::faq`, question headings removed), its "General" and "Extending"
//! documents and their 40 questions (the `rag-chunking` lesson's set), cut
//! into that eval's reference passages (200-word windows every 100 words,
//! `rag::faq_eval::word_windows`): 37 of them. The whole FAQ, 252
//! windows, takes a minute and more to embed on two cores, longer than
//! this lesson may run; with 37 passages the rerank takes the top 10, a
//! quarter of the corpus (the top 20 would be half of it, a second full
//! search rather than a rerank). Scores are `rag::faq_eval::score`, the
//! eval's: hit@1, hit@5, MRR@10, a passage being relevant when it holds
//! the first 12 words of the real answer.
//!
//! Look at `mrr`, `hit_at_1`, `hit_at_5` and `ms_per_query` for each
//! pipeline (`_dense`, `_hyde`, `_hyde_answer`: the answer's vector alone,
//! `_dense_rerank`, `_hyde_rerank`), at `hyde_llm_ms_lone` (what HyDE adds
//! to one query: the LLM's answer) against `hyde_llm_ms_batched` (the same
//! work per query when 40 answers share a batch), and at the notes: which
//! questions each trick moved up or down, the best pipeline without the
//! LLM, and an example answer.
//!
//! **What it found** (2026-11-28, `docs/BENCHMARKS.md`): with SmolLM2-135M
//! HyDE does not help. Its answers have the right vocabulary only some of
//! the time ("Can I create my own functions in C?" gets a Python `def`),
//! and averaging them into the query moved more questions down than up:
//! MRR 0.65 against dense's 0.68, the answer's vector alone 0.53, for 0.8
//! to 1.1 s of LLM time per query. The BM25 rerank helps a lot for free:
//! MRR 0.68 to 0.81, hit@1 0.50 to 0.73, 0.01 ms per query. Likely
//! because these questions name rare words that their answers repeat
//! (`Py_BuildValue`, `PyErr_Print`, "newsgroup", "Monty Python"), which a
//! 384-dimension sentence vector blurs and BM25 weighs highly. So the
//! optimal side is the dense search plus the rerank, without HyDE; the
//! lesson picks it by measurement on each run, not by name.
//!
//! **In production** LlamaIndex (`HyDEQueryTransform`) and LangChain
//! (`HypotheticalDocumentEmbedder`) ship HyDE; it pays off with a capable
//! LLM on queries phrased unlike the documents, and costs an LLM call per
//! query before the search can start. Rerankers are everywhere in RAG:
//! Cohere Rerank, Voyage and Jina rerankers, bge-reranker and the MS MARCO
//! cross-encoders (sentence-transformers' `CrossEncoder`), Vespa's and
//! Elasticsearch's rescoring phases, and hybrid BM25 plus vector search
//! with reciprocal rank fusion (Elasticsearch, OpenSearch, Weaviate,
//! Qdrant, Azure AI Search, whose semantic ranker then reranks the top 50).

use super::decode_loop::{chat_tokens, greedy_batch, load_default};
use anyhow::{Context, Result};
use hld::LessonReport;
use models::WeightFormat;
use rag::bm25::Bm25;
use rag::embed::{Embedder, MiniLm};
use rag::faq::{Document, Question};
use rag::faq_eval::{score, word_windows, Scores};
use rag::rerank::{mean_direction, rerank_bm25, Dense};
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "rag-hyde-rerank";
/// A short human title.
pub const TITLE: &str =
    "RAG pipeline tuning: HyDE queries and a BM25 rerank against plain dense retrieval (Python FAQ)";

/// The FAQ documents of the experiment (of `rag::faq::FILES`).
const DOCS: [&str; 2] = ["general", "extending"];
/// Candidates the first stage hands the rerank.
const CANDIDATES: usize = 10;
/// New tokens of a hypothetical answer, at most.
const HYDE_TOKENS: usize = 48;
/// Questions whose answer is also generated alone, to time one query.
const LONE: usize = 3;
/// Reciprocal-rank fusion's constant.
const RRF_K: f64 = 60.0;

/// The HyDE instruction around a question.
fn hyde_prompt(question: &str) -> String {
    format!("Answer this question about Python in two or three sentences.\n\n{question}")
}

/// The eval's reference passages: 200-word windows every 100 words.
fn passages(docs: &[Document]) -> Vec<&str> {
    docs.iter()
        .flat_map(|d| {
            word_windows(&d.text, 200, 100)
                .into_iter()
                .map(|c| c.text(&d.text))
        })
        .collect()
}

/// Each text embedded alone (as a query arrives), and the mean ms per text.
fn embed_each(emb: &dyn Embedder, texts: &[&str]) -> Result<(Vec<Vec<f32>>, f64)> {
    let t = Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for s in texts {
        out.extend(emb.embed(&[s])?);
    }
    Ok((out, per(t, texts.len())))
}

/// Milliseconds since `t`, per one of `n`.
fn per(t: Instant, n: usize) -> f64 {
    t.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64
}

/// The 0-based rank of the first relevant passage in the top 10, if any.
fn first_hit(q: &Question, texts: &[&str], ranked: &[usize]) -> Option<usize> {
    ranked
        .iter()
        .take(10)
        .position(|&p| q.is_relevant(texts[p]))
}

/// One pipeline's result.
struct Pipeline {
    name: &'static str,
    scores: Scores,
    ms_per_query: f64,
    /// Per question: the first relevant rank, if in the top 10.
    hits: Vec<Option<usize>>,
}

/// The pipeline with the best MRR@10, then hit@5; ties go to the earlier
/// (simpler) one.
fn best(runs: &[Pipeline]) -> &Pipeline {
    let key = |p: &Pipeline| (p.scores.mrr_at_10, p.scores.hit_at_5);
    runs.iter()
        .fold(&runs[0], |b, p| if key(p) > key(b) { p } else { b })
}

/// Questions that `p` ranks better and worse than `base` does.
fn moved(base: &Pipeline, p: &Pipeline) -> (usize, usize) {
    let r = |h: &Option<usize>| h.unwrap_or(usize::MAX);
    let better = base.hits.iter().zip(&p.hits).filter(|(a, b)| r(b) < r(a));
    let worse = base.hits.iter().zip(&p.hits).filter(|(a, b)| r(b) > r(a));
    (better.count(), worse.count())
}

pub fn lesson(_seed: u64) -> Result<LessonReport> {
    let doc_root = models::loader::cache_dir().join("data/python3.11-doc");
    let (docs, questions) = rag::faq::load(&doc_root)?;
    let (docs, questions) = rag::faq::restrict(docs, questions, &DOCS);
    let n = questions.len();
    let texts = passages(&docs);
    let emb = MiniLm::load_default().context("loading all-MiniLM-L6-v2 (run `make models`)")?;
    let dense = Dense::new(emb.embed(&texts)?)?;
    let bm = Bm25::new(&texts);
    let q_texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    let (q_vecs, embed_ms) = embed_each(&emb, &q_texts)?;

    // HyDE: every question's hypothetical answer in one batch, and a few
    // alone to time what one query waits.
    let loaded = load_default(WeightFormat::Auto)?;
    let prompts = q_texts
        .iter()
        .map(|q| chat_tokens(&loaded, &hyde_prompt(q)))
        .collect::<Result<Vec<_>>>()?;
    let stop = &loaded.tokenizer.eos_token_ids;
    let t = Instant::now();
    let answer_ids = greedy_batch(&loaded.model, &prompts, HYDE_TOKENS, stop)?;
    let llm_batched_ms = per(t, n);
    let t = Instant::now();
    let mut lone_same = true;
    for (p, batched) in prompts.iter().zip(&answer_ids).take(LONE) {
        let alone = greedy_batch(&loaded.model, std::slice::from_ref(p), HYDE_TOKENS, stop)?;
        lone_same &= &alone[0] == batched;
    }
    let llm_lone_ms = per(t, LONE.min(n));
    let new_tokens: usize = answer_ids.iter().map(Vec::len).sum();
    let answers = answer_ids
        .iter()
        .map(|ids| Ok(loaded.tokenizer.decode(ids)?.trim().to_string()))
        .collect::<Result<Vec<String>>>()?;
    let a_texts: Vec<&str> = answers.iter().map(String::as_str).collect();
    let (a_vecs, answer_embed_ms) = embed_each(&emb, &a_texts)?;
    let hyde_vecs = q_vecs
        .iter()
        .zip(&a_vecs)
        .map(|(q, a)| mean_direction(&[q, a]))
        .collect::<rag::Result<Vec<_>>>()?;

    // First stage: the top CANDIDATES by cosine; second: the BM25 fusion.
    let search = |vecs: &[Vec<f32>]| -> Result<(Vec<Vec<usize>>, f64)> {
        let t = Instant::now();
        let lists = vecs
            .iter()
            .map(|v| dense.top(v, CANDIDATES))
            .collect::<rag::Result<Vec<_>>>()?;
        Ok((lists, per(t, vecs.len())))
    };
    let rerank = |lists: &[Vec<usize>]| {
        let t = Instant::now();
        let out: Vec<Vec<usize>> = lists
            .iter()
            .zip(&q_texts)
            .map(|(c, q)| rerank_bm25(&bm, q, c, RRF_K))
            .collect();
        (out, per(t, lists.len()))
    };
    let (dense_c, dense_s) = search(&q_vecs)?;
    let (hyde_c, hyde_s) = search(&hyde_vecs)?;
    let (answer_c, answer_s) = search(&a_vecs)?;
    let (dense_r, dense_rr) = rerank(&dense_c);
    let (hyde_r, hyde_rr) = rerank(&hyde_c);
    let same_set = |a: &[Vec<usize>], b: &[Vec<usize>]| {
        a.iter().zip(b).all(|(x, y)| {
            let (mut x, mut y) = (x.clone(), y.clone());
            x.sort_unstable();
            y.sort_unstable();
            x == y
        })
    };
    let kept = same_set(&dense_c, &dense_r) && same_set(&hyde_c, &hyde_r);

    let hyde_ms = embed_ms + llm_lone_ms + answer_embed_ms;
    let run = |name, lists: &[Vec<usize>], ms_per_query| Pipeline {
        name,
        scores: score(&questions, &texts, lists),
        ms_per_query,
        hits: questions
            .iter()
            .zip(lists)
            .map(|(q, l)| first_hit(q, &texts, l))
            .collect(),
    };
    let runs = [
        run("dense", &dense_c, embed_ms + dense_s),
        run("dense_rerank", &dense_r, embed_ms + dense_s + dense_rr),
        run("hyde", &hyde_c, hyde_ms + hyde_s),
        run(
            "hyde_answer",
            &answer_c,
            llm_lone_ms + answer_embed_ms + answer_s,
        ),
        run("hyde_rerank", &hyde_r, hyde_ms + hyde_s + hyde_rr),
    ];
    let naive = &runs[0];
    let opt = best(&runs);
    let mut out = LessonReport::new(NAME, TITLE)
        .both("hit_at_1", naive.scores.hit_at_1, opt.scores.hit_at_1)
        .both("hit_at_5", naive.scores.hit_at_5, opt.scores.hit_at_5)
        .both("mrr", naive.scores.mrr_at_10, opt.scores.mrr_at_10)
        .both("ms_per_query", naive.ms_per_query, opt.ms_per_query)
        .both("questions", n as f64, n as f64)
        .both("passages", texts.len() as f64, texts.len() as f64)
        .optimal("candidates", CANDIDATES as f64)
        .optimal("rerank_kept_candidates", f64::from(kept))
        .optimal("hyde_new_tokens", new_tokens as f64 / n.max(1) as f64)
        .optimal(
            "hyde_answer_chars",
            a_texts.iter().map(|a| a.chars().count()).sum::<usize>() as f64 / n.max(1) as f64,
        )
        .optimal("hyde_llm_ms_lone", llm_lone_ms)
        .optimal("hyde_llm_ms_batched", llm_batched_ms)
        .optimal("hyde_lone_equals_batched", f64::from(lone_same));
    let mut rows = Vec::new();
    for r in &runs {
        let s = r.scores;
        out = out
            .optimal(&format!("hit_at_1_{}", r.name), s.hit_at_1)
            .optimal(&format!("hit_at_5_{}", r.name), s.hit_at_5)
            .optimal(&format!("mrr_{}", r.name), s.mrr_at_10)
            .optimal(&format!("ms_per_query_{}", r.name), r.ms_per_query);
        let (up, down) = moved(naive, r);
        rows.push(format!(
            "{} hit@1 {:.3}, hit@5 {:.3}, MRR {:.3}, {:.0} ms/query{}",
            r.name,
            s.hit_at_1,
            s.hit_at_5,
            s.mrr_at_10,
            r.ms_per_query,
            if r.name == naive.name {
                String::new()
            } else {
                format!(" ({up} questions up, {down} down against dense)")
            }
        ));
    }
    let mut verdict = if opt.name == naive.name {
        "Neither HyDE nor the rerank beat plain dense retrieval here, so the optimal side is \
         dense itself."
            .to_string()
    } else {
        format!(
            "The best pipeline is {}: MRR {:.3} against dense's {:.3}, at {:.0} against {:.0} ms \
             per query.",
            opt.name,
            opt.scores.mrr_at_10,
            naive.scores.mrr_at_10,
            opt.ms_per_query,
            naive.ms_per_query
        )
    };
    // What the LLM buys: the best pipeline against the best one without it
    // (the first two).
    let cheap = best(&runs[..2]);
    if opt.name.starts_with("hyde") {
        verdict.push_str(&format!(
            " Without the LLM the best is {}: MRR {:.3}, hit@5 {:.3} at {:.0} ms, so HyDE adds \
             {:+.3} MRR and {:+.3} hit@5 for {:.0} ms per query.",
            cheap.name,
            cheap.scores.mrr_at_10,
            cheap.scores.hit_at_5,
            cheap.ms_per_query,
            opt.scores.mrr_at_10 - cheap.scores.mrr_at_10,
            opt.scores.hit_at_5 - cheap.scores.hit_at_5,
            opt.ms_per_query - cheap.ms_per_query
        ));
    }
    Ok(out.notes(format!(
        "The Python FAQ's {} documents, {n} questions (deterministic: the seed is unused), {} \
         passages (200-word windows, stride 100), MiniLM cosine, exact search, rerank of the top \
         {CANDIDATES} by BM25 fused by reciprocal rank (k {RRF_K}). {}. {verdict} HyDE's LLM \
         wrote {:.1} tokens \
         per answer: {:.0} ms for one query alone, {:.0} ms per query in a batch of {n}; the \
         BM25 rerank {:.3} ms per query. Example, \"{}\" -> \"{}\"",
        DOCS.join(" and "),
        texts.len(),
        rows.join("; "),
        new_tokens as f64 / n.max(1) as f64,
        llm_lone_ms,
        llm_batched_ms,
        dense_rr,
        questions.first().map_or("", |q| q.question.as_str()),
        answers
            .first()
            .map_or(String::new(), |a| rag::faq::normalize_ws(a)),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(name: &'static str, mrr: f64, hit_at_5: f64) -> Pipeline {
        Pipeline {
            name,
            scores: Scores {
                hit_at_1: 0.0,
                hit_at_5,
                mrr_at_10: mrr,
            },
            ms_per_query: 1.0,
            hits: Vec::new(),
        }
    }

    #[test]
    fn best_takes_mrr_then_hit_at_5_and_keeps_the_first_on_ties() {
        let runs = [
            pipeline("dense", 0.5, 0.7),
            pipeline("hyde", 0.5, 0.7),
            pipeline("rerank", 0.6, 0.6),
            pipeline("both", 0.6, 0.65),
        ];
        assert_eq!(best(&runs).name, "both");
        assert_eq!(best(&runs[..2]).name, "dense");
    }

    #[test]
    fn moved_counts_questions_ranked_better_and_worse() {
        let mut a = pipeline("a", 0.0, 0.0);
        a.hits = vec![Some(0), Some(3), None, Some(2)];
        let mut b = pipeline("b", 0.0, 0.0);
        b.hits = vec![Some(1), Some(0), Some(9), Some(2)];
        assert_eq!(moved(&a, &b), (2, 1));
    }
}
