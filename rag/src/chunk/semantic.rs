//! Semantic chunking (Greg Kamradt's method, as in LangChain's
//! `SemanticChunker`): cut where the topic changes, as measured by the
//! embedder itself.
//!
//! 1. Split the text into sentences (after `.`, `?`, `!`, possibly followed
//!    by closing quotes or brackets, then whitespace; after CJK `。！？`; and
//!    at blank lines).
//! 2. Embed every sentence on its own (LangChain embeds each sentence with
//!    one neighbour on each side, `buffer_size = 1`; this one does not).
//! 3. Compute the cosine distance `1 - cos` between each pair of neighbouring
//!    sentences, and break wherever it is *above* the `threshold_percentile`
//!    percentile of all those distances (numpy-style linear interpolation).
//!    So `95` breaks at the 5% least similar neighbour pairs: the similarity
//!    drops below the 5th percentile of similarities.
//! 4. A group still longer than `max_chars` is cut again at its largest
//!    distance, recursively; a single sentence longer than that goes through
//!    the [`RecursiveChunker`](super::RecursiveChunker).

use std::sync::Arc;

use super::recursive::RecursiveChunker;
use super::util::{check_size, trimmed, CharIndex};
use super::{Chunk, Chunker};
use crate::embed::Embedder;
use crate::RagError;

/// Sentences embedded per call to the embedder.
const BATCH: usize = 64;

/// Breaks between sentences whose embeddings are far apart.
#[derive(Clone)]
pub struct SemanticChunker {
    pub embedder: Arc<dyn Embedder>,
    /// In `0..=100`; higher means fewer breaks (LangChain's default is 95).
    pub threshold_percentile: f64,
    pub max_chars: usize,
}

impl std::fmt::Debug for SemanticChunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticChunker")
            .field("threshold_percentile", &self.threshold_percentile)
            .field("max_chars", &self.max_chars)
            .finish_non_exhaustive()
    }
}

impl SemanticChunker {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        threshold_percentile: f64,
        max_chars: usize,
    ) -> crate::Result<Self> {
        check(threshold_percentile, max_chars)?;
        Ok(SemanticChunker {
            embedder,
            threshold_percentile,
            max_chars,
        })
    }
}

fn check(p: f64, max_chars: usize) -> crate::Result<()> {
    check_size("max_chars", max_chars)?;
    if !(0.0..=100.0).contains(&p) {
        return Err(RagError::Input(format!(
            "threshold percentile must be in 0..=100, got {p}"
        )));
    }
    Ok(())
}

impl Chunker for SemanticChunker {
    fn name(&self) -> String {
        format!("semantic-p{}-{}", self.threshold_percentile, self.max_chars)
    }

    fn chunk(&self, text: &str) -> crate::Result<Vec<Chunk>> {
        check(self.threshold_percentile, self.max_chars)?;
        let sents = sentences(text);
        if sents.is_empty() {
            return Ok(Vec::new());
        }
        let mut vecs = Vec::with_capacity(sents.len());
        for batch in sents.chunks(BATCH) {
            let texts: Vec<&str> = batch.iter().map(|c| c.text(text)).collect();
            let got = self.embedder.embed(&texts)?;
            if got.len() != texts.len() {
                return Err(RagError::Input(format!(
                    "embedder returned {} vectors for {} sentences",
                    got.len(),
                    texts.len()
                )));
            }
            vecs.extend(got);
        }
        let dist: Vec<f64> = vecs
            .windows(2)
            .map(|w| 1.0 - cosine(&w[0], &w[1]))
            .collect();
        let threshold = percentile(&dist, self.threshold_percentile);
        let ctx = Ctx {
            text,
            ci: CharIndex::new(text),
            sents: &sents,
            dist: &dist,
            max: self.max_chars,
        };
        let mut out = Vec::new();
        let mut first = 0;
        for (i, d) in dist.iter().enumerate() {
            if threshold.is_some_and(|t| *d > t) {
                ctx.group(first, i + 1, &mut out)?;
                first = i + 1;
            }
        }
        ctx.group(first, sents.len(), &mut out)?;
        Ok(out)
    }
}

struct Ctx<'a> {
    text: &'a str,
    ci: CharIndex,
    sents: &'a [Chunk],
    /// `dist[i]`: distance between sentence `i` and `i + 1`.
    dist: &'a [f64],
    max: usize,
}

impl Ctx<'_> {
    /// Sentences `a..b` as one chunk, or cut at their largest distance (step 4).
    fn group(&self, a: usize, b: usize, out: &mut Vec<Chunk>) -> crate::Result<()> {
        let (s, e) = (self.sents[a].start, self.sents[b - 1].end);
        if self.ci.count(s, e) <= self.max {
            out.extend(trimmed(self.text, s, e));
            return Ok(());
        }
        if b - a == 1 {
            let rec = RecursiveChunker::new(self.max)?;
            for c in rec.chunk(&self.text[s..e])? {
                out.push(Chunk {
                    start: s + c.start,
                    end: s + c.end,
                });
            }
            return Ok(());
        }
        // The largest gap among a..b-1 (first one on ties).
        let mut cut = a;
        for i in a..b - 1 {
            if self.dist[i] > self.dist[cut] {
                cut = i;
            }
        }
        self.group(a, cut + 1, out)?;
        self.group(cut + 1, b, out)
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 || !dot.is_finite() {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// The `p`-th percentile with linear interpolation (numpy's default);
/// `None` for no values.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let last = v.len().checked_sub(1)?;
    let rank = (p.clamp(0.0, 100.0) / 100.0) * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

/// Sentence ranges (trimmed, in order, non-empty) of `text` (step 1).
pub fn sentences(text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut ws_from: Option<usize> = None;
    // The last non-space char, skipping closing quotes and brackets.
    let mut end_mark: Option<char> = None;
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            ws_from.get_or_insert(i);
        } else {
            let cut = match ws_from.take() {
                Some(w) => {
                    let gap = &text[w..i];
                    matches!(end_mark, Some('.' | '?' | '!')) || gap.matches('\n').count() >= 2
                }
                None => matches!(prev, Some('。' | '！' | '？')),
            };
            if cut && i > start {
                out.extend(trimmed(text, start, i));
                start = i;
            }
            if !matches!(c, '"' | '\'' | ')' | ']' | '”' | '’' | '»') {
                end_mark = Some(c);
            }
        }
        prev = Some(c);
    }
    out.extend(trimmed(text, start, text.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences() {
        let t = "One. Two? \"Three!\" Four\n\nFive 六。七";
        let s: Vec<&str> = sentences(t).iter().map(|c| c.text(t)).collect();
        assert_eq!(s, ["One.", "Two?", "\"Three!\"", "Four", "Five 六。", "七"]);
    }

    #[test]
    fn percentile_interpolates() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[0.0, 10.0], 95.0), Some(9.5));
    }
}
