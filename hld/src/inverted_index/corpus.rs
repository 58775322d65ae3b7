//! Seeded synthetic text: a Zipf sampler and pronounceable pseudo-words.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeded Zipf sampler over ranks `0..n`: rank `r` (0 = most frequent) has
/// probability proportional to `1 / (r + 1)^s`. Sampling is by inverse CDF:
/// a uniform `u` in `[0, 1)` and a binary search over the precomputed
/// cumulative weights, `O(log n)` per draw.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `None` when `n == 0` or `s` is negative or not finite.
    pub fn new(n: usize, s: f64) -> Option<Self> {
        if n == 0 || !s.is_finite() || s < 0.0 {
            return None;
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for r in 0..n {
            total += 1.0 / ((r + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Some(Self { cdf })
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false (a sampler has at least one rank).
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// Probability of rank `r`.
    pub fn probability(&self, r: usize) -> f64 {
        match r {
            0 => self.cdf.first().copied().unwrap_or(0.0),
            r if r < self.cdf.len() => self.cdf[r] - self.cdf[r - 1],
            _ => 0.0,
        }
    }

    /// One rank, `0..n`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}
/// A pronounceable word for each rank: rank -> base-70 digits, each digit
/// a consonant-vowel syllable (distinct ranks give distinct words).
pub(crate) fn pseudo_word(rank: usize) -> String {
    const C: &[u8] = b"bdfghklmnprstv";
    const V: &[u8] = b"aeiou";
    let base = C.len() * V.len();
    let mut n = rank + base; // at least two syllables
    let mut syl = Vec::new();
    while n > 0 {
        let d = n % base;
        syl.push([C[d / V.len()], V[d % V.len()]]);
        n /= base;
    }
    syl.iter()
        .rev()
        .flat_map(|s| s.iter().map(|&b| b as char))
        .collect()
}

/// A seeded synthetic corpus: `n_docs` documents of 50..250 words drawn
/// from a Zipf(1.0) vocabulary of `vocab` words.
pub fn synthetic_corpus(seed: u64, n_docs: usize, vocab: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let words: Vec<String> = (0..vocab.max(1)).map(pseudo_word).collect();
    let Some(zipf) = Zipf::new(words.len(), 1.0) else {
        return Vec::new();
    };
    (0..n_docs)
        .map(|_| {
            let len = rng.random_range(50..250);
            let mut doc = String::with_capacity(len * 7);
            for i in 0..len {
                if i > 0 {
                    doc.push(' ');
                }
                doc.push_str(&words[zipf.sample(&mut rng)]);
            }
            doc
        })
        .collect()
}
