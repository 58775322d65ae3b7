//! Batched LoRA (`kernels::bgmv`) against its naive reference, and what it
//! adds to the base projection it rides on.
//!
//! Shape: SmolLM2-135M's `q_proj` (k = n = 576), 32 rows (a decode batch of
//! 32), rank 16. Cases:
//!
//! - `base_q4_1`: the Q4_1 base projection alone, what every row pays anyway;
//! - `bgmv/1`: every row under one adapter (one SGMV segment);
//! - `bgmv/4`: rows spread over 4 adapters (four segments of 8 rows);
//! - `bgmv/32`: every row its own adapter (the BGMV worst case);
//! - `reference/4`: the naive f64 per-row loop, 4 adapters.
//!
//! The delta costs `2·r·(k + n)` flops per row against `2·k·n` for the
//! base, so at rank 16 it is about 5.6% of the base's arithmetic, but it
//! reads each adapter's factors once per segment: more adapters in the
//! batch, more bytes. Before timing, the fast kernel is checked against the
//! reference.
//!
//! Run: `cargo bench --bench lora`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kernels::quant::{matmul_q4_1, Q4_1Matrix};
use kernels::{bgmv, reference, LoraFactors};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;

const K: usize = 576;
const N: usize = 576;
const M: usize = 32;
const RANK: usize = 16;

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let x = random(&mut rng, M * K, 1.0);
    let w = Q4_1Matrix::quantize(&random(&mut rng, N * K, 0.05), N, K).unwrap();
    let owned: Vec<(Vec<f32>, Vec<f32>)> = (0..M)
        .map(|_| {
            (
                random(&mut rng, RANK * K, 0.05),
                random(&mut rng, N * RANK, 0.05),
            )
        })
        .collect();
    let slots: Vec<Option<LoraFactors>> = owned
        .iter()
        .map(|(a, b)| {
            Some(LoraFactors {
                a,
                b_t: b,
                rank: RANK,
                scale: 2.0,
            })
        })
        .collect();

    let mut g = c.benchmark_group("lora_q_proj_m32_r16");
    let mut out = vec![0f32; M * N];
    g.bench_function("base_q4_1", |bch| {
        bch.iter(|| matmul_q4_1(black_box(&x), M, &w, &mut out).unwrap())
    });
    for adapters in [1usize, 4, 32] {
        let rows: Vec<Option<usize>> = (0..M).map(|r| Some(r % adapters)).collect();
        let mut fast = vec![0f32; M * N];
        let mut naive = vec![0f32; M * N];
        bgmv(&x, K, &rows, &slots, N, &mut fast).unwrap();
        reference::bgmv(&x, K, &rows, &slots, N, &mut naive);
        let diff = fast
            .iter()
            .zip(&naive)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "bgmv and the reference differ by {diff}");
        g.bench_with_input(BenchmarkId::new("bgmv", adapters), &rows, |bch, rows| {
            bch.iter(|| bgmv(black_box(&x), K, rows, &slots, N, &mut out).unwrap())
        });
        if adapters == 4 {
            g.bench_with_input(
                BenchmarkId::new("reference", adapters),
                &rows,
                |bch, rows| {
                    bch.iter(|| reference::bgmv(black_box(&x), K, rows, &slots, N, &mut out))
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
