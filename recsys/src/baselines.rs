//! The baselines the two-tower model must beat, in the same harness.
//!
//! - [`Popularity`]: every user gets the items with the most training
//!   interactions. No personalization at all, and often hard to beat by much.
//! - [`MatrixFactorization`]: the naive side of the lesson. One free vector
//!   per user and per item, trained by SGD on "observed = 1, random item =
//!   0" with a logistic loss. It knows nothing about an item but its id, nor
//!   about a user but the id, so it cannot use what a user watched *last*,
//!   nor say anything about an item with few interactions.

use crate::split::Split;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Items by training count.
pub struct Popularity {
    counts: Vec<f32>,
}

impl Popularity {
    pub fn fit(split: &Split) -> Self {
        Self {
            counts: split.item_popularity().iter().map(|&c| c as f32).collect(),
        }
    }

    /// The same scores for every user.
    pub fn scores(&self) -> Vec<f32> {
        self.counts.clone()
    }
}

/// Settings of [`MatrixFactorization::fit`].
#[derive(Debug, Clone)]
pub struct MfOptions {
    pub dim: usize,
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty on the vectors touched by each step.
    pub l2: f32,
    /// Random items (label 0) per observed one.
    pub negatives: usize,
    pub seed: u64,
}

impl Default for MfOptions {
    fn default() -> Self {
        Self {
            dim: 32,
            epochs: 30,
            learning_rate: 0.05,
            l2: 0.002,
            negatives: 4,
            seed: 7,
        }
    }
}

/// `score(u, i) = p_u · q_i + b_i`.
pub struct MatrixFactorization {
    dim: usize,
    users: Vec<f32>,
    items: Vec<f32>,
    item_bias: Vec<f32>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl MatrixFactorization {
    /// SGD over (user, observed item) pairs in a seeded random order, each
    /// with `negatives` uniformly drawn items as label 0.
    pub fn fit(split: &Split, opts: &MfOptions) -> Self {
        let (nu, ni, d) = (split.train.len(), split.item_ids.len(), opts.dim);
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let scale = 0.1 / (d as f32).sqrt();
        let mut init =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-scale..scale)).collect() };
        let mut m = Self {
            dim: d,
            users: init(nu * d),
            items: init(ni * d),
            item_bias: vec![0.0; ni],
        };
        let mut pairs: Vec<(u32, u32)> = split
            .train
            .iter()
            .enumerate()
            .flat_map(|(u, items)| items.iter().map(move |&i| (u as u32, i)))
            .collect();
        for _ in 0..opts.epochs {
            for k in (1..pairs.len()).rev() {
                pairs.swap(k, rng.random_range(0..=k));
            }
            for &(u, i) in &pairs {
                m.step(u as usize, i as usize, 1.0, opts);
                for _ in 0..opts.negatives {
                    let j = rng.random_range(0..ni);
                    m.step(u as usize, j, 0.0, opts);
                }
            }
        }
        m
    }

    fn step(&mut self, u: usize, i: usize, label: f32, opts: &MfOptions) {
        let d = self.dim;
        let (pu, qi) = (u * d, i * d);
        let dot: f32 = (0..d)
            .map(|k| self.users[pu + k] * self.items[qi + k])
            .sum();
        let g = sigmoid(dot + self.item_bias[i]) - label;
        let lr = opts.learning_rate;
        for k in 0..d {
            let (p, q) = (self.users[pu + k], self.items[qi + k]);
            self.users[pu + k] -= lr * (g * q + opts.l2 * p);
            self.items[qi + k] -= lr * (g * p + opts.l2 * q);
        }
        self.item_bias[i] -= lr * g;
    }

    /// Scores of every item for user index `u`.
    pub fn scores(&self, u: usize) -> Vec<f32> {
        let d = self.dim;
        let p = &self.users[u * d..(u + 1) * d];
        self.items
            .chunks_exact(d)
            .zip(&self.item_bias)
            .map(|(q, b)| p.iter().zip(q).map(|(a, b)| a * b).sum::<f32>() + b)
            .collect()
    }
}
