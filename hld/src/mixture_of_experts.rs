//! Mixture of experts: a router sends each token to 2 of 8 small FFNs
//! instead of through one big one.
//!
//! **The pattern.** The feed-forward (FFN) block holds most of a
//! transformer's parameters and FLOPs. A mixture-of-experts (MoE) layer
//! replaces it with `E` smaller FFNs ("experts") and a *router*: a tiny
//! linear layer whose softmax over the experts picks the top `k` for each
//! token. The token goes through those `k` only, and their outputs are
//! summed, weighted by the (renormalised) gate values. Parameters grow
//! with `E`; compute per token grows with `k`.
//!
//! **The naive way** ([`Ffn`] as a dense layer) gives one FFN the same
//! total parameter count as all the experts together (hidden width
//! `E * d_ff`). Every token pays for every parameter: `4 * d_model *
//! E * d_ff` FLOPs.
//!
//! **The optimal way** ([`Moe`]): softmax gate, top-2, renormalised
//! weights; tokens are grouped by expert, each expert runs one matmul over
//! its group, and the results are scattered back. FLOPs per token are
//! `2 * d_model * E` (router) plus `k * 4 * d_model * d_ff`, about `k/E`
//! of the dense layer's. The costs move elsewhere: *load balance* (a busy
//! expert is the straggler; `max_expert_load_ratio` is its load over the
//! mean, and the Switch Transformer auxiliary loss `E * sum_i f_i * P_i`,
//! 1.0 when balanced, is what training adds to push the router to even
//! out), and *capacity*: with a fixed buffer of
//! `capacity_factor * tokens * k / E` slots per expert (static shapes on
//! TPUs and in expert parallelism), assignments past it are dropped (the
//! token passes on the residual only); a bigger factor drops fewer and
//! wastes more padding.
//! All the weights are still in memory: MoE saves FLOPs, not bytes.
//!
//! **What is real and what is synthetic.** The matmuls, routing, top-k,
//! grouping, capacity and the FLOP counts are real code and measured
//! (single-threaded, a blocked f32 matmul written here). The weights are
//! random (seeded) and the tokens are synthetic vectors drawn around a few
//! skewed "topic" centres, so the router is untrained: the lesson compares
//! cost, not quality, and its imbalance is that of a random router on
//! clustered inputs, not of a trained model.
//!
//! In production: Switch Transformer (top-1, capacity factor, the
//! auxiliary loss), Mixtral 8x7B (8 experts, top-2, dropless: about 13B of
//! 47B parameters active per token), DeepSeek-MoE/V3 (many fine-grained
//! experts plus shared ones, bias-based balancing without an auxiliary
//! loss), served with expert parallelism across GPUs.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "mixture-of-experts";
/// A short human title.
pub const TITLE: &str = "Mixture of experts: top-2 of 8 experts against a dense FFN of equal size";

/// `out (m x n) = a (m x k) * b (k x n)`, all row-major; returns the FLOPs
/// done (`2 * m * k * n`: one multiply and one add per term). Blocked: a
/// tile of 8 rows of `a` shares each pass over a 256-wide strip of `b`, so
/// `b` is streamed from memory 8 times less often than row by row.
pub fn matmul(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, out: &mut [f32]) -> u64 {
    assert_eq!(a.len(), m * k, "a is m x k");
    assert_eq!(b.len(), k * n, "b is k x n");
    assert_eq!(out.len(), m * n, "out is m x n");
    const IB: usize = 8;
    const JB: usize = 256;
    out.fill(0.0);
    for i0 in (0..m).step_by(IB) {
        let i1 = (i0 + IB).min(m);
        for j0 in (0..n).step_by(JB) {
            let j1 = (j0 + JB).min(n);
            for kk in 0..k {
                let brow = &b[kk * n + j0..kk * n + j1];
                for i in i0..i1 {
                    let aik = a[i * k + kk];
                    let orow = &mut out[i * n + j0..i * n + j1];
                    for (o, &bv) in orow.iter_mut().zip(brow) {
                        *o += aik * bv;
                    }
                }
            }
        }
    }
    2 * (m * k * n) as u64
}

fn random_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    // Uniform with variance 1/rows, so activations keep their scale.
    let s = (3.0 / rows as f32).sqrt();
    (0..rows * cols).map(|_| rng.random_range(-s..s)).collect()
}

/// A two-layer FFN `y = relu(x W1) W2` (no biases; Mixtral's experts are
/// SwiGLU, three matrices, which changes the constants, not the lesson).
#[derive(Debug, Clone)]
pub struct Ffn {
    pub d_model: usize,
    pub d_ff: usize,
    /// `d_model x d_ff`.
    pub w1: Vec<f32>,
    /// `d_ff x d_model`.
    pub w2: Vec<f32>,
}

impl Ffn {
    pub fn random(d_model: usize, d_ff: usize, rng: &mut StdRng) -> Self {
        Self {
            d_model,
            d_ff,
            w1: random_matrix(rng, d_model, d_ff),
            w2: random_matrix(rng, d_ff, d_model),
        }
    }

    pub fn params(&self) -> usize {
        self.w1.len() + self.w2.len()
    }

    /// `tokens` rows of `x` through the FFN: (output, FLOPs).
    pub fn forward(&self, x: &[f32], tokens: usize) -> (Vec<f32>, u64) {
        let mut h = vec![0.0; tokens * self.d_ff];
        let mut flops = matmul(x, tokens, self.d_model, &self.w1, self.d_ff, &mut h);
        for v in &mut h {
            *v = v.max(0.0);
        }
        let mut y = vec![0.0; tokens * self.d_model];
        flops += matmul(&h, tokens, self.d_ff, &self.w2, self.d_model, &mut y);
        (y, flops)
    }
}

/// Softmax of one row of logits, in place.
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The indices of the `k` largest gates, largest first (ties: lower index).
pub fn top_k(gates: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..gates.len()).collect();
    idx.sort_by(|&a, &b| gates[b].total_cmp(&gates[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// What one MoE forward pass did.
#[derive(Debug, Clone)]
pub struct MoeOutput {
    /// `tokens x d_model`.
    pub y: Vec<f32>,
    pub flops: u64,
    /// Assignments routed to each expert (before capacity).
    pub loads: Vec<usize>,
    /// Assignments past an expert's capacity, dropped.
    pub dropped: usize,
    /// Switch Transformer's load-balancing loss `E * sum_i f_i * P_i`.
    pub aux_loss: f64,
}

/// The router's decisions for a batch.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Per token: `(expert, renormalised weight)`, best first.
    pub choices: Vec<Vec<(usize, f32)>>,
    /// Mean router probability of each expert over the batch.
    pub mean_p: Vec<f64>,
    /// FLOPs of the router matmul.
    pub flops: u64,
}

/// A mixture-of-experts layer: a router (`d_model x E`) and `E` experts.
#[derive(Debug, Clone)]
pub struct Moe {
    pub router: Vec<f32>,
    pub experts: Vec<Ffn>,
    pub top_k: usize,
}

impl Moe {
    pub fn random(
        d_model: usize,
        d_ff: usize,
        experts: usize,
        top_k: usize,
        rng: &mut StdRng,
    ) -> Self {
        Self {
            router: random_matrix(rng, d_model, experts),
            experts: (0..experts)
                .map(|_| Ffn::random(d_model, d_ff, rng))
                .collect(),
            top_k: top_k.clamp(1, experts),
        }
    }

    pub fn d_model(&self) -> usize {
        self.experts[0].d_model
    }

    pub fn total_params(&self) -> usize {
        self.router.len() + self.experts.iter().map(Ffn::params).sum::<usize>()
    }

    pub fn active_params_per_token(&self) -> usize {
        self.router.len() + self.top_k * self.experts[0].params()
    }

    /// The FLOPs per token when nothing is dropped: router plus `k` experts.
    pub fn flops_per_token(&self) -> u64 {
        let (d, f, e) = (self.d_model(), self.experts[0].d_ff, self.experts.len());
        (2 * d * e + self.top_k * 4 * d * f) as u64
    }

    /// Each token's chosen experts and renormalised weights, and the mean
    /// router probability of each expert.
    pub fn route(&self, x: &[f32], tokens: usize) -> Routing {
        let e = self.experts.len();
        let mut logits = vec![0.0; tokens * e];
        let flops = matmul(x, tokens, self.d_model(), &self.router, e, &mut logits);
        let mut mean_p = vec![0.0f64; e];
        let choices = logits
            .chunks_mut(e)
            .map(|g| {
                softmax(g);
                for (m, &p) in mean_p.iter_mut().zip(g.iter()) {
                    *m += p as f64 / tokens as f64;
                }
                let chosen = top_k(g, self.top_k);
                let sum: f32 = chosen.iter().map(|&i| g[i]).sum();
                chosen.into_iter().map(|i| (i, g[i] / sum)).collect()
            })
            .collect();
        Routing {
            choices,
            mean_p,
            flops,
        }
    }

    /// The layer over `tokens` rows of `x`. `capacity_factor`: None is
    /// dropless (every assignment runs); `Some(c)` gives each expert
    /// `ceil(c * tokens * k / E)` slots, first come first served in token
    /// order, and drops the rest.
    pub fn forward(&self, x: &[f32], tokens: usize, capacity_factor: Option<f64>) -> MoeOutput {
        let (d, e) = (self.d_model(), self.experts.len());
        let Routing {
            choices,
            mean_p,
            mut flops,
        } = self.route(x, tokens);
        let mut groups: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e];
        for (t, c) in choices.iter().enumerate() {
            for &(i, w) in c {
                groups[i].push((t, w));
            }
        }
        let loads: Vec<usize> = groups.iter().map(Vec::len).collect();
        let capacity = capacity_factor
            .map(|c| (c * (tokens * self.top_k) as f64 / e as f64).ceil() as usize)
            .unwrap_or(usize::MAX);
        let mut dropped = 0;
        let mut y = vec![0.0; tokens * d];
        for (expert, group) in self.experts.iter().zip(&mut groups) {
            if group.len() > capacity {
                dropped += group.len() - capacity;
                group.truncate(capacity);
            }
            if group.is_empty() {
                continue;
            }
            let mut xs = Vec::with_capacity(group.len() * d);
            for &(t, _) in group.iter() {
                xs.extend_from_slice(&x[t * d..(t + 1) * d]);
            }
            let (out, f) = expert.forward(&xs, group.len());
            flops += f;
            for (row, &(t, w)) in out.chunks(d).zip(group.iter()) {
                for (yv, &ov) in y[t * d..(t + 1) * d].iter_mut().zip(row) {
                    *yv += w * ov;
                }
            }
        }
        let assignments = (tokens * self.top_k) as f64;
        let aux_loss = e as f64
            * loads
                .iter()
                .zip(&mean_p)
                .map(|(&l, &p)| l as f64 / assignments * p)
                .sum::<f64>();
        MoeOutput {
            y,
            flops,
            loads,
            dropped,
            aux_loss,
        }
    }
}

/// Busiest expert's load over the mean load.
pub fn max_load_ratio(loads: &[usize]) -> f64 {
    let total: usize = loads.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let mean = total as f64 / loads.len() as f64;
    *loads.iter().max().unwrap_or(&0) as f64 / mean
}

/// Synthetic tokens: vectors around `topics` random centres, the centres
/// picked with Zipf-like skew (a batch is about a few things at a time).
pub fn synthetic_tokens(seed: u64, tokens: usize, d: usize, topics: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x70c5);
    let centres: Vec<Vec<f32>> = (0..topics.max(1))
        .map(|_| (0..d).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let weights: Vec<f64> = (1..=centres.len()).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut x = Vec::with_capacity(tokens * d);
    for _ in 0..tokens {
        let mut u = rng.random_range(0.0..total);
        let mut c = 0;
        while c + 1 < weights.len() && u >= weights[c] {
            u -= weights[c];
            c += 1;
        }
        x.extend(centres[c].iter().map(|&v| v + rng.random_range(-0.5..0.5)));
    }
    x
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut s: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// The experiment with the given sizes.
pub fn lesson_with(
    seed: u64,
    tokens: usize,
    d_model: usize,
    d_ff: usize,
    experts: usize,
    k: usize,
) -> LessonReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let moe = Moe::random(d_model, d_ff, experts, k, &mut rng);
    let dense = Ffn::random(d_model, d_ff * experts, &mut rng);
    let x = synthetic_tokens(seed, tokens, d_model, 6);
    let t = tokens as f64;

    let (_, dense_flops) = dense.forward(&x, tokens);
    let dense_ms = median_ms(3, || {
        std::hint::black_box(dense.forward(&x, tokens));
    });
    let out = moe.forward(&x, tokens, None);
    let moe_ms = median_ms(3, || {
        std::hint::black_box(moe.forward(&x, tokens, None));
    });
    let drops = |c: f64| moe.forward(&x, tokens, Some(c)).dropped as f64;
    let (d100, d125, d200) = (drops(1.0), drops(1.25), drops(2.0));
    let ratio = max_load_ratio(&out.loads);
    let naive_fpt = dense_flops as f64 / t;
    let moe_fpt = out.flops as f64 / t;
    LessonReport::new(NAME, TITLE)
        .both("flops_per_token", naive_fpt, moe_fpt)
        .both("ms_per_batch", dense_ms, moe_ms)
        .both(
            "active_params_per_token",
            dense.params() as f64,
            moe.active_params_per_token() as f64,
        )
        .both("total_params", dense.params() as f64, moe.total_params() as f64)
        .optimal("max_expert_load_ratio", ratio)
        .optimal("aux_load_balance_loss", out.aux_loss)
        .optimal("dropped_tokens", d125)
        .optimal("dropped_tokens_cf_1_0", d100)
        .optimal("dropped_tokens_cf_2_0", d200)
        .notes(format!(
            "{tokens} synthetic tokens (d_model {d_model}) through a dense FFN of hidden width {} against {experts} experts \
             of width {d_ff} with a top-{k} router: about the same parameters ({} vs {}), but each token runs the router \
             and {k} experts, {:.0} FLOPs against {:.0} ({:.1}x fewer; counted in the matmuls), {:.1} ms against {:.1} ms \
             per batch on one core. The price is balance: the untrained router on clustered tokens gives the busiest \
             expert {ratio:.2}x the mean load (auxiliary loss {:.2}; 1.0 is balanced), so with fixed expert buffers \
             {d100:.0} of {} assignments are dropped at capacity factor 1.0, {d125:.0} at 1.25, {d200:.0} at 2.0 \
             (dropless, as in Mixtral, drops none but the busiest expert sets the pace). Weights are random: this \
             measures cost, not quality.",
            d_ff * experts,
            dense.params(),
            moe.total_params(),
            naive_fpt,
            moe_fpt,
            naive_fpt / moe_fpt,
            dense_ms,
            moe_ms,
            out.aux_loss,
            tokens * k,
        ))
}

/// The lesson at full size: 256 tokens, d_model 256, 8 experts of width
/// 512, top-2, against a dense FFN of width 4096.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 256, 256, 512, 8, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_matmul(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn blocked_matmul_matches_the_textbook_one() {
        let mut rng = StdRng::seed_from_u64(1);
        // Sizes that do not divide the 8 x 256 tiles.
        let (m, k, n) = (11, 7, 300);
        let a = random_matrix(&mut rng, m, k);
        let b = random_matrix(&mut rng, k, n);
        let mut out = vec![1.0; m * n];
        assert_eq!(matmul(&a, m, k, &b, n, &mut out), (2 * m * k * n) as u64);
        for (x, y) in out.iter().zip(naive_matmul(&a, m, k, &b, n)) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn top_k_selects_the_k_largest() {
        let g = [0.1, 0.4, 0.05, 0.3, 0.15];
        assert_eq!(top_k(&g, 2), vec![1, 3]);
        assert_eq!(top_k(&g, 3), vec![1, 3, 4]);
        assert_eq!(
            top_k(&[0.5, 0.5, 0.0], 1),
            vec![0],
            "ties go to the lower index"
        );
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..200 {
            let g: Vec<f32> = (0..8).map(|_| rng.random_range(0.0..1.0)).collect();
            let chosen = top_k(&g, 2);
            let min_chosen = chosen.iter().map(|&i| g[i]).fold(f32::INFINITY, f32::min);
            for (i, &v) in g.iter().enumerate() {
                if !chosen.contains(&i) {
                    assert!(v <= min_chosen);
                }
            }
        }
    }

    #[test]
    fn moe_output_is_the_weighted_sum_of_the_chosen_experts() {
        // d_model 2, d_ff 1, 3 experts: expert i has w1 = [1, 0]^T (reads
        // the first coordinate) and w2 = [i+1, 0] (scales it).
        let experts = (0..3)
            .map(|i| Ffn {
                d_model: 2,
                d_ff: 1,
                w1: vec![1.0, 0.0],
                w2: vec![(i + 1) as f32, 0.0],
            })
            .collect();
        // Router logits for x = [a, b]: expert0 = b, expert1 = 0, expert2 = a.
        let moe = Moe {
            router: vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
            experts,
            top_k: 2,
        };
        let x = [2.0f32, 1.0];
        let out = moe.forward(&x, 1, None);
        // Gates softmax([1, 0, 2]): top-2 are expert 2 (e^2) and expert 0
        // (e^1), renormalised over those two. relu(2) = 2 through each.
        let (g2, g0) = (2f32.exp(), 1f32.exp());
        let (w2, w0) = (g2 / (g2 + g0), g0 / (g2 + g0));
        let want = w2 * (3.0 * 2.0) + w0 * (1.0 * 2.0);
        assert!((out.y[0] - want).abs() < 1e-5, "{} vs {want}", out.y[0]);
        assert_eq!(out.y[1], 0.0);
        assert_eq!(out.loads, vec![1, 0, 1]);
    }

    #[test]
    fn batched_moe_equals_routing_each_token_alone() {
        let mut rng = StdRng::seed_from_u64(3);
        let moe = Moe::random(16, 8, 4, 2, &mut rng);
        let x = synthetic_tokens(3, 20, 16, 3);
        let batched = moe.forward(&x, 20, None);
        for t in 0..20 {
            let xt = &x[t * 16..(t + 1) * 16];
            let choice = moe.route(xt, 1).choices;
            let mut want = vec![0.0f32; 16];
            for &(i, w) in &choice[0] {
                let (y, _) = moe.experts[i].forward(xt, 1);
                for (a, b) in want.iter_mut().zip(y) {
                    *a += w * b;
                }
            }
            for (a, b) in batched.y[t * 16..(t + 1) * 16].iter().zip(&want) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn flops_formula_matches_the_counted_flops() {
        let mut rng = StdRng::seed_from_u64(5);
        let (d, f, e, k, tokens) = (32, 16, 8, 2, 40);
        let moe = Moe::random(d, f, e, k, &mut rng);
        let dense = Ffn::random(d, f * e, &mut rng);
        let x = synthetic_tokens(5, tokens, d, 4);
        let out = moe.forward(&x, tokens, None);
        assert_eq!(out.flops, moe.flops_per_token() * tokens as u64);
        assert_eq!(out.flops, (tokens * (2 * d * e + k * 4 * d * f)) as u64);
        assert_eq!(dense.forward(&x, tokens).1, (tokens * 4 * d * f * e) as u64);
        assert_eq!(out.loads.iter().sum::<usize>(), tokens * k);
        assert_eq!(moe.total_params(), d * e + e * 2 * d * f);
        assert_eq!(moe.active_params_per_token(), d * e + k * 2 * d * f);
    }

    #[test]
    fn capacity_drops_the_overflow_and_a_bigger_factor_drops_less() {
        let mut rng = StdRng::seed_from_u64(7);
        let moe = Moe::random(16, 8, 4, 2, &mut rng);
        let x = synthetic_tokens(7, 64, 16, 2);
        let free = moe.forward(&x, 64, None);
        let cap = (1.0f64 * 64.0 * 2.0 / 4.0).ceil() as usize;
        let want: usize = free.loads.iter().map(|&l| l.saturating_sub(cap)).sum();
        assert!(want > 0, "clustered tokens overload some expert");
        assert_eq!(moe.forward(&x, 64, Some(1.0)).dropped, want);
        let drops: Vec<usize> = [1.0, 1.25, 2.0, 4.0]
            .iter()
            .map(|&c| moe.forward(&x, 64, Some(c)).dropped)
            .collect();
        assert!(drops.windows(2).all(|w| w[1] <= w[0]), "{drops:?}");
        assert_eq!(drops[3], 0, "factor E/k holds every token");
        assert_eq!(free.dropped, 0);
    }

    #[test]
    fn aux_loss_is_one_when_balanced_and_e_when_collapsed() {
        // 2 experts, top-1, d_model 2: logits = 10 * x, so x = [1, 0] picks
        // expert 0 and x = [0, 1] expert 1.
        let expert = Ffn {
            d_model: 2,
            d_ff: 1,
            w1: vec![1.0, 1.0],
            w2: vec![1.0, 1.0],
        };
        let moe = Moe {
            router: vec![10.0, 0.0, 0.0, 10.0],
            experts: vec![expert.clone(), expert],
            top_k: 1,
        };
        let balanced = moe.forward(&[1.0, 0.0, 0.0, 1.0], 2, None);
        assert_eq!(balanced.loads, vec![1, 1]);
        assert!((balanced.aux_loss - 1.0).abs() < 1e-6);
        assert!((max_load_ratio(&balanced.loads) - 1.0).abs() < 1e-12);
        let collapsed = moe.forward(&[1.0, 0.0, 1.0, 0.0], 2, None);
        assert_eq!(collapsed.loads, vec![2, 0]);
        // f = [1, 0], P_0 = softmax(10, 0)_0: loss = 2 * P_0, nearly E.
        let p0 = 1.0 / (1.0 + (-10.0f64).exp());
        assert!((collapsed.aux_loss - 2.0 * p0).abs() < 1e-5);
        assert!((max_load_ratio(&collapsed.loads) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn small_lesson_reports_fewer_flops_for_the_moe() {
        let r = lesson_with(1, 32, 32, 16, 8, 2);
        assert!(r.optimal["flops_per_token"] < r.naive["flops_per_token"] / 2.0);
        assert!(r.optimal["total_params"] >= r.naive["total_params"]);
        assert!(r.optimal["max_expert_load_ratio"] >= 1.0);
    }
}
