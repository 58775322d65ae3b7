//! Seeded workloads the lessons share: the Zipf distribution of real
//! popularity (a few hot keys, a long tail), which is what makes caches,
//! sketches and top-k lists interesting.

use rand::Rng;

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
