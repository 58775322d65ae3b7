//! Semantic caching: reuse an LLM's answer when a new question means the
//! same as one already answered, not only when it is spelled the same.
//!
//! **The pattern.** A chat or support service sees the same questions again
//! and again, in different words: "How do I reverse a list in Python?",
//! "Reverse the elements of a list in Python". Generating an answer costs
//! a model call (hundreds of milliseconds to seconds, and money); looking
//! one up costs microseconds. A cache in front of the model pays off in
//! proportion to its hit rate, and costs trust in proportion to its wrong
//! hits: an answer to a different question served as if it were right.
//!
//! **The naive way** (an exact-match cache): the key is the question's
//! normalized text (lower case, punctuation and extra spaces dropped). A
//! hit is always right, but only a repeat or a change of case hits; every
//! paraphrase is a miss and a model call.
//!
//! **The optimal way** (a semantic cache): the key is the question's
//! all-MiniLM-L6-v2 embedding, stored in a vector index (`rag::index`, flat
//! here: the cache is small). A lookup embeds the question and takes the
//! nearest cached question; at cosine similarity >= a threshold its answer
//! is served. Paraphrases now hit, at the price of an embedding per lookup
//! (milliseconds, still far below a model call) and of wrong hits when two
//! different questions look alike ("reverse a list" / "reverse a string").
//! The threshold is the dial between the two: lower hits more and serves
//! more wrong answers.
//!
//! The experiment: `data/semantic_cache/questions.jsonl` (written for
//! sdlab): 40 intents about Python and Linux with 3-4 phrasings each, and
//! 23 near-miss questions that resemble an intent but ask something else,
//! each labelled with its intent. A seeded stream sends every question once
//! plus some verbatim repeats; a miss "calls the model" (the answer is the
//! question's intent) and caches the answer. Look at `hit_rate`,
//! `wrong_hits`, `ideal_hit_rate` (queries whose intent was answered before:
//! the most any cache could hit), `lookup_us`, and the `_t0xx` rows: hit
//! rate and wrong hits at each threshold.
//!
//! **In production** GPTCache, Redis (RedisVL's `SemanticCache`), LangChain's
//! semantic caches and API gateways (Portkey, Cloudflare AI Gateway) do this:
//! they add time-to-live, per-user or per-prompt-template scoping (never
//! serve one user's private answer to another), a second check by a
//! re-ranker or a small model before serving, and a threshold tuned on
//! labelled traffic like this file.

use anyhow::{Context, Result};
use hld::LessonReport;
use rag::embed::{Embedder, MiniLm};
use rag::index::flat::FlatIndex;
use rag::index::VectorIndex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "semantic-cache";
/// A short human title.
pub const TITLE: &str =
    "Semantic cache: exact-match keys against embedding similarity (hits and wrong hits)";

/// The labelled questions, embedded at build time (sdlab's own data).
const QUESTIONS: &str = include_str!("../../data/semantic_cache/questions.jsonl");

/// The similarity threshold of the headline run.
const THRESHOLD: f32 = 0.85;
/// The thresholds of the sweep (hundredths, for the metric names).
const SWEEP: [u32; 5] = [75, 80, 85, 90, 95];
/// Verbatim repeats added to the stream, as a share of the questions.
const REPEAT_SHARE: f64 = 0.3;

/// One labelled question.
#[derive(Debug, Clone, serde::Deserialize)]
struct Question {
    /// What it asks; two questions with one intent have one right answer.
    intent: String,
    text: String,
    /// For a near miss, the intent it resembles.
    #[serde(default)]
    near: Option<String>,
}

/// Parses the JSON-lines question file (blank lines skipped).
fn parse_questions(jsonl: &str) -> Result<Vec<Question>> {
    jsonl
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("questions.jsonl line {}: {l:?}", n + 1))
        })
        .collect()
}

/// The exact cache's key: lower case, letters and digits kept, every run
/// of anything else one space.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(w.chars().flat_map(char::to_lowercase));
    }
    out
}

/// The query stream: every question once plus `REPEAT_SHARE` of them again
/// verbatim, in a seeded order (indices into the questions).
fn stream(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let repeats = (n as f64 * REPEAT_SHARE).round() as usize;
    order.extend((0..repeats).map(|_| rng.random_range(0..n)));
    order.shuffle(&mut rng);
    order
}

/// Share of the stream whose intent was already asked earlier: the hit rate
/// of a perfect cache.
fn ideal_hit_rate(qs: &[Question], order: &[usize]) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let hits = order
        .iter()
        .filter(|&&i| !seen.insert(qs[i].intent.as_str()))
        .count();
    hits as f64 / order.len().max(1) as f64
}

/// What a replay of the stream did.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Outcome {
    queries: usize,
    hits: usize,
    /// Hits that served another intent's answer.
    wrong_hits: usize,
    /// Mean time of one lookup, microseconds.
    lookup_us: f64,
}

impl Outcome {
    fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.queries.max(1) as f64
    }

    /// Misses: each one is a model call.
    fn model_calls(&self) -> usize {
        self.queries - self.hits
    }
}

/// Exact-match cache: normalized text -> answer.
fn replay_exact(qs: &[Question], order: &[usize]) -> Outcome {
    let mut cache: HashMap<String, &str> = HashMap::new();
    let (mut hits, mut wrong, mut spent) = (0, 0, 0.0);
    for &i in order {
        let q = &qs[i];
        let t = Instant::now();
        let key = normalize(&q.text);
        let found = cache.get(&key).copied();
        spent += t.elapsed().as_secs_f64();
        match found {
            Some(answer) => {
                hits += 1;
                wrong += usize::from(answer != q.intent);
            }
            None => {
                cache.insert(key, &q.intent);
            }
        }
    }
    Outcome {
        queries: order.len(),
        hits,
        wrong_hits: wrong,
        lookup_us: spent * 1e6 / order.len().max(1) as f64,
    }
}

/// Semantic cache: question embeddings in a flat index, the answer of the
/// nearest one served at similarity >= `threshold`. `vectors[i]` is
/// question `i`'s embedding (computed once; the embedding time is measured
/// apart). The lookup time is the index search only.
fn replay_semantic(
    qs: &[Question],
    vectors: &[Vec<f32>],
    order: &[usize],
    threshold: f32,
) -> Result<Outcome> {
    let dim = vectors.first().map_or(1, Vec::len);
    let mut index = FlatIndex::new(dim)?;
    let mut answers: Vec<&str> = Vec::new();
    let (mut hits, mut wrong, mut spent) = (0, 0, 0.0);
    for &i in order {
        let q = &qs[i];
        let t = Instant::now();
        let best = index.search(&vectors[i], 1)?.into_iter().next();
        spent += t.elapsed().as_secs_f64();
        match best {
            Some(hit) if hit.score >= threshold => {
                hits += 1;
                wrong += usize::from(answers[hit.id as usize] != q.intent);
            }
            _ => {
                index.add(&[(answers.len() as u64, vectors[i].clone())])?;
                answers.push(&q.intent);
            }
        }
    }
    Ok(Outcome {
        queries: order.len(),
        hits,
        wrong_hits: wrong,
        lookup_us: spent * 1e6 / order.len().max(1) as f64,
    })
}

pub fn lesson(seed: u64) -> Result<LessonReport> {
    let qs = parse_questions(QUESTIONS)?;
    let model = MiniLm::load_default()
        .context("loading all-MiniLM-L6-v2 (run `make models`)")?
        .with_batch_size(32)?;
    let texts: Vec<&str> = qs.iter().map(|q| q.text.as_str()).collect();
    let vectors = model.embed(&texts)?;
    // What a lookup pays on top of the search: embedding one question.
    let timed = &texts[..texts.len().min(40)];
    let t = Instant::now();
    for text in timed {
        std::hint::black_box(model.embed(&[text])?);
    }
    let embed_us = t.elapsed().as_secs_f64() * 1e6 / timed.len() as f64;

    let order = stream(qs.len(), seed);
    let ideal = ideal_hit_rate(&qs, &order);
    let exact = replay_exact(&qs, &order);
    let semantic = replay_semantic(&qs, &vectors, &order, THRESHOLD)?;

    let mut report = LessonReport::new(NAME, TITLE)
        .both("queries", order.len() as f64, order.len() as f64)
        .both("hit_rate", exact.hit_rate(), semantic.hit_rate())
        .both(
            "wrong_hits",
            exact.wrong_hits as f64,
            semantic.wrong_hits as f64,
        )
        .both(
            "model_calls",
            exact.model_calls() as f64,
            semantic.model_calls() as f64,
        )
        .both("lookup_us", exact.lookup_us, embed_us + semantic.lookup_us)
        .both("ideal_hit_rate", ideal, ideal)
        .optimal("embed_us", embed_us)
        .optimal("search_us", semantic.lookup_us)
        .optimal("threshold", f64::from(THRESHOLD));
    let mut sweep = Vec::new();
    for t in SWEEP {
        let o = replay_semantic(&qs, &vectors, &order, t as f32 / 100.0)?;
        report = report
            .optimal(&format!("hit_rate_t{t:03}"), o.hit_rate())
            .optimal(&format!("wrong_hits_t{t:03}"), o.wrong_hits as f64);
        sweep.push(format!(
            "{:.2}: {:.0} % hits, {} wrong",
            t as f64 / 100.0,
            100.0 * o.hit_rate(),
            o.wrong_hits
        ));
    }
    let near = qs.iter().filter(|q| q.near.is_some()).count();
    Ok(report.notes(format!(
        "{} queries ({} labelled questions, {near} of them near misses, plus verbatim repeats; seed {seed}). \
         A perfect cache would hit {:.0} %. Exact match hits {:.0} % (repeats and changes of case only) and \
         is never wrong; the semantic cache at cosine >= {THRESHOLD} hits {:.0} % with {} wrong hits, \
         paying {:.0} us to embed each question and {:.0} us to search, against {:.1} us for a hash lookup \
         and far more for a model call. The threshold trades one for the other: {} (not strictly monotone, since what gets cached \
         depends on the threshold too). Near misses such as \
         'reverse a list' / 'reverse a string' sit close in embedding space, so no threshold gets every \
         paraphrase without some wrong answers: scope the cache, tune the threshold on labelled traffic, \
         and verify before serving where a wrong answer is costly.",
        order.len(),
        qs.len(),
        100.0 * ideal,
        100.0 * exact.hit_rate(),
        100.0 * semantic.hit_rate(),
        semantic.wrong_hits,
        embed_us,
        semantic.lookup_us,
        exact.lookup_us,
        sweep.join("; "),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(intent: &str, text: &str) -> Question {
        Question {
            intent: intent.into(),
            text: text.into(),
            near: None,
        }
    }

    #[test]
    fn the_data_file_is_well_formed() {
        let qs = parse_questions(QUESTIONS).unwrap();
        let intents: std::collections::HashSet<&str> =
            qs.iter().map(|q| q.intent.as_str()).collect();
        let near: Vec<&Question> = qs.iter().filter(|q| q.near.is_some()).collect();
        assert!(intents.len() >= 60, "{} intents", intents.len());
        assert!(near.len() >= 20);
        for n in near {
            let target = n.near.as_deref().unwrap();
            assert!(intents.contains(target), "{target} is no intent");
            assert_ne!(target, n.intent);
        }
        // One normalized text never carries two intents, so exact match
        // cannot be wrong.
        let mut by_key = HashMap::new();
        for q in &qs {
            let prev = by_key.insert(normalize(&q.text), q.intent.as_str());
            assert!(prev.is_none_or(|p| p == q.intent), "{}", q.text);
        }
    }

    #[test]
    fn normalize_drops_case_and_punctuation() {
        assert_eq!(
            normalize("  How do I reverse a List in Python?? "),
            "how do i reverse a list in python"
        );
        assert_eq!(normalize("tar.gz"), "tar gz");
        assert_eq!(normalize("?!"), "");
    }

    #[test]
    fn stream_is_seeded_and_covers_every_question() {
        let a = stream(10, 3);
        assert_eq!(a, stream(10, 3));
        assert_eq!(a.len(), 13);
        for i in 0..10 {
            assert!(a.contains(&i));
        }
    }

    #[test]
    fn exact_cache_hits_repeats_only() {
        let qs = vec![
            q("a", "Reverse a list?"),
            q("a", "reverse a LIST"),
            q("a", "flip a list"),
        ];
        let o = replay_exact(&qs, &[0, 1, 2, 2]);
        assert_eq!((o.hits, o.wrong_hits, o.queries), (2, 0, 4));
        assert_eq!(o.model_calls(), 2);
        assert_eq!(ideal_hit_rate(&qs, &[0, 1, 2, 2]), 0.75);
    }

    #[test]
    fn semantic_cache_counts_hits_and_wrong_hits_by_threshold() {
        let qs = vec![q("a", "x"), q("a", "y"), q("b", "z")];
        // y is close to x (same intent); z is close to x too (another intent).
        let vectors = vec![vec![1.0, 0.0], vec![0.96, 0.28], vec![0.8, 0.6]];
        let loose = replay_semantic(&qs, &vectors, &[0, 1, 2], 0.75).unwrap();
        assert_eq!((loose.hits, loose.wrong_hits), (2, 1));
        let strict = replay_semantic(&qs, &vectors, &[0, 1, 2], 0.9).unwrap();
        assert_eq!((strict.hits, strict.wrong_hits), (1, 0));
        let exact_only = replay_semantic(&qs, &vectors, &[0, 1, 2], 0.999).unwrap();
        assert_eq!(exact_only.hits, 0);
    }
}
