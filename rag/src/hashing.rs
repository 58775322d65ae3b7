//! A feature-hashing embedder: lower-cased words hashed into buckets,
//! L2-normalized (scikit-learn's `HashingVectorizer`). A lexical baseline
//! with no model to load, so tests and small tools can run a whole
//! collection without the real embedding model.

use crate::embed::Embedder;
use crate::Result;

pub struct HashingEmbedder {
    dim: usize,
}

impl HashingEmbedder {
    pub fn new(dim: usize) -> Self {
        Self { dim: dim.max(1) }
    }
}

/// FNV-1a, stable across runs and platforms.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Embedder for HashingEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; self.dim];
                for w in crate::bm25::tokenize(t) {
                    let h = fnv1a(&w);
                    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                    v[(h % self.dim as u64) as usize] += sign;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                } else {
                    // No word at all: a fixed unit vector, so it still indexes.
                    v[0] = 1.0;
                }
                v
            })
            .collect())
    }
}
