//! Okapi BM25: the lexical baseline every vector retriever is measured
//! against, and half of hybrid retrieval.
//!
//! Tokens are lower-cased runs of alphanumeric characters and `_` (Python's
//! `\w+`), as `rank_bm25` is usually fed. Scores follow `rank_bm25`'s
//! `BM25Okapi`: `idf · tf · (k1 + 1) / (tf + k1 · (1 - b + b · len / avg))`
//! with `idf = ln((N - n + 0.5) / (n + 0.5))`, floored at `epsilon · mean idf`
//! so that very common terms never score negative.

use std::collections::HashMap;

/// Lower-cased `\w+` tokens.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

pub struct Bm25 {
    k1: f64,
    b: f64,
    /// Per document: term -> frequency.
    docs: Vec<HashMap<String, u32>>,
    lens: Vec<usize>,
    avg_len: f64,
    idf: HashMap<String, f64>,
}

impl Bm25 {
    /// `rank_bm25`'s defaults: k1 1.5, b 0.75, epsilon 0.25.
    pub fn new<S: AsRef<str>>(docs: &[S]) -> Self {
        Self::with_params(docs, 1.5, 0.75, 0.25)
    }

    pub fn with_params<S: AsRef<str>>(docs: &[S], k1: f64, b: f64, epsilon: f64) -> Self {
        let mut tfs = Vec::with_capacity(docs.len());
        let mut lens = Vec::with_capacity(docs.len());
        let mut df: HashMap<String, u32> = HashMap::new();
        for d in docs {
            let toks = tokenize(d.as_ref());
            lens.push(toks.len());
            let mut tf: HashMap<String, u32> = HashMap::new();
            for t in toks {
                *tf.entry(t).or_default() += 1;
            }
            for t in tf.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            tfs.push(tf);
        }
        let n = docs.len() as f64;
        let avg_len = lens.iter().sum::<usize>() as f64 / n.max(1.0);
        let mut idf: HashMap<String, f64> = df
            .into_iter()
            .map(|(t, f)| (t, ((n - f as f64 + 0.5) / (f as f64 + 0.5)).ln()))
            .collect();
        let mean = idf.values().sum::<f64>() / idf.len().max(1) as f64;
        let floor = epsilon * mean;
        for v in idf.values_mut() {
            if *v < 0.0 {
                *v = floor;
            }
        }
        Self {
            k1,
            b,
            docs: tfs,
            lens,
            avg_len,
            idf,
        }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The score of every document for `query`.
    pub fn scores(&self, query: &str) -> Vec<f64> {
        let q = tokenize(query);
        (0..self.docs.len()).map(|d| self.score(&q, d)).collect()
    }

    /// The scores of documents `docs` (indices) for `query`, in that order:
    /// what a second stage needs for its candidates alone.
    pub fn scores_of(&self, query: &str, docs: &[usize]) -> Vec<f64> {
        let q = tokenize(query);
        docs.iter().map(|&d| self.score(&q, d)).collect()
    }

    /// Document `d`'s score for the query tokens `q`.
    fn score(&self, q: &[String], d: usize) -> f64 {
        let (tf, len) = (&self.docs[d], self.lens[d]);
        let norm = self.k1 * (1.0 - self.b + self.b * len as f64 / self.avg_len.max(1e-9));
        q.iter()
            .map(|t| {
                let f = *tf.get(t).unwrap_or(&0) as f64;
                self.idf.get(t).copied().unwrap_or(0.0) * f * (self.k1 + 1.0) / (f + norm)
            })
            .sum()
    }

    /// The `k` best documents, best first (ties by index).
    pub fn top_k(&self, query: &str, k: usize) -> Vec<(usize, f64)> {
        let mut s: Vec<(usize, f64)> = self.scores(query).into_iter().enumerate().collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        s.truncate(k);
        s
    }
}

/// Reciprocal-rank fusion of ranked lists of document indices:
/// `score(d) = Σ 1 / (k + rank(d))`, rank from 1 (Cormack et al. 2009; k = 60).
pub fn reciprocal_rank_fusion(lists: &[Vec<usize>], k: f64, top: usize) -> Vec<usize> {
    let mut score: HashMap<usize, f64> = HashMap::new();
    for list in lists {
        for (r, &d) in list.iter().enumerate() {
            *score.entry(d).or_default() += 1.0 / (k + r as f64 + 1.0);
        }
    }
    let mut s: Vec<(usize, f64)> = score.into_iter().collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.into_iter().take(top).map(|(d, _)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_like_python_word_regex() {
        assert_eq!(
            tokenize("How do I use __init__.py? It's 3x!"),
            ["how", "do", "i", "use", "__init__", "py", "it", "s", "3x"]
        );
    }

    /// Hand-computed against rank_bm25's formula on a three-document corpus.
    #[test]
    fn scores_follow_okapi() {
        let docs = ["the cat sat", "the dog sat down", "a bird"];
        let bm = Bm25::new(&docs);
        // idf(cat) = ln((3 - 1 + 0.5) / 1.5) = ln(5/3); avg len 3.
        let idf = (2.5f64 / 1.5).ln();
        let want = idf * 1.0 * 2.5 / (1.0 + 1.5 * (1.0 - 0.75 + 0.75 * 3.0 / 3.0));
        let s = bm.scores("cat");
        assert!((s[0] - want).abs() < 1e-12, "{} vs {want}", s[0]);
        assert_eq!(s[1], 0.0);
        assert_eq!(bm.top_k("dog down", 1)[0].0, 1);
        assert_eq!(bm.scores_of("cat dog", &[2, 0]), {
            let all = bm.scores("cat dog");
            vec![all[2], all[0]]
        });
        // "the" and "sat" appear in 2 of 3 documents: idf would be negative,
        // so it is floored at epsilon times the mean idf, and stays >= 0.
        assert!(bm.scores("the").iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn rrf_rewards_agreement() {
        let fused = reciprocal_rank_fusion(&[vec![1, 2, 3], vec![3, 1, 4]], 60.0, 3);
        assert_eq!(fused, [1, 3, 2]);
    }
}
