//! Seeded synthetic text: a Zipf sampler and pronounceable pseudo-words.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use crate::workload::Zipf;

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
