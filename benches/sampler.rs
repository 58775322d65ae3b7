//! Token sampling over one row of logits of SmolLM2's 49,152-token vocab.
//!
//! Measures `server::sampler::Sampler::sample` per call under the settings
//! requests use: greedy (argmax), plain temperature 0.8, and temperature 0.8
//! with top-k 50, top-p 0.9, min-p 0.05 each alone and all together, plus
//! temperature 0.8 with repetition/presence/frequency penalties (which copy the
//! row) and with `logprobs: 5`. Logits are Gaussian (σ = 3, seeded), peaked
//! enough that top-p keeps a small nucleus, like a language model's.
//!
//! Why: the sampler runs once per sequence per decode step on the CPU, after
//! the LM head, so at batch 32 it is 32 passes over 49k logits per step.
//! Greedy and min-p are linear scans; top-k is a selection; top-p sorts the
//! whole vocab (or just the top-k when both are set), the one that could show
//! up next to a ~1 ms model step. Each sampler lives for a 64-token "request"
//! (a fresh seeded one every 64 calls, created outside the timing), so penalty
//! state stays the size of a real request's. Throughput: one sampled token per
//! element.
//!
//! Run: `cargo bench --bench sampler` (or
//! `-- --warm-up-time 1 --measurement-time 3` for a quick pass).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, SeedableRng};
use server::sampler::{Sampler, SamplingParams};
use std::hint::black_box;
use std::time::{Duration, Instant};

const VOCAB: usize = 49_152;
/// Calls per sampler before a fresh one replaces it.
const TOKENS_PER_REQUEST: u64 = 64;

/// Gaussian logits with σ = 3 (Box–Muller over a seeded RNG).
fn logits(seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..VOCAB)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            3.0 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

fn variants() -> Vec<(&'static str, SamplingParams)> {
    let base = SamplingParams {
        temperature: 0.8,
        seed: Some(42),
        ..SamplingParams::default()
    };
    vec![
        ("greedy", SamplingParams::greedy(16)),
        ("temperature_0.8", base.clone()),
        (
            "top_k_50",
            SamplingParams {
                top_k: 50,
                ..base.clone()
            },
        ),
        (
            "top_p_0.9",
            SamplingParams {
                top_p: 0.9,
                ..base.clone()
            },
        ),
        (
            "min_p_0.05",
            SamplingParams {
                min_p: 0.05,
                ..base.clone()
            },
        ),
        (
            "top_k_top_p_min_p",
            SamplingParams {
                top_k: 50,
                top_p: 0.9,
                min_p: 0.05,
                ..base.clone()
            },
        ),
        (
            "penalties",
            SamplingParams {
                repetition_penalty: 1.1,
                presence_penalty: 0.5,
                frequency_penalty: 0.5,
                ..base.clone()
            },
        ),
        (
            "logprobs_5",
            SamplingParams {
                logprobs: Some(5),
                ..base
            },
        ),
    ]
}

fn bench_sampler(c: &mut Criterion) {
    let logits = logits(7);
    // A 256-token prompt, for the repetition penalty.
    let prompt: Vec<u32> = (0..256u32).map(|i| i * 191 % VOCAB as u32).collect();
    let mut group = c.benchmark_group("sampler/vocab_49152");
    group.throughput(Throughput::Elements(1));
    for (name, params) in variants() {
        params.validate().unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(TOKENS_PER_REQUEST);
                    let mut sampler = Sampler::new(params.clone(), &prompt);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(sampler.sample(black_box(&logits)));
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sampler);
criterion_main!(benches);
