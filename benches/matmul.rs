//! The model's matmuls: sdlab's f32 and Q4_1 kernels against candle's.
//!
//! Measures `y[m, n] = x[m, k] · W[n, k]ᵀ` at the shapes of the default model,
//! SmolLM2-135M (hidden 576, intermediate 1536, 3 of 9 heads for K/V, vocab
//! 49,152), with `m` = 1 row (one sequence decoding) and 32 rows (a decode
//! batch of 32):
//!
//! | group          | k    | n      |
//! |----------------|------|--------|
//! | `q_proj`       | 576  | 576    |
//! | `kv_proj`      | 576  | 192    |
//! | `gate_up_proj` | 576  | 1536   |
//! | `down_proj`    | 1536 | 576    |
//! | `lm_head`      | 576  | 49,152 |
//!
//! Implementations: `f32_sdlab` is `kernels::linear` (batch-invariant: each
//! output element reduced in a fixed order whatever `m` is); `f32_candle` is
//! `Tensor::matmul` against `Wᵀ` on the CPU (the `gemm` crate, what
//! `candle_nn::Linear` does), the peer without the batch-invariance
//! constraint; `q4_1_sdlab` is `kernels::quant::matmul_q4_1` (weights Q4_1,
//! activations quantized to Q8_1 per row); `q4_1_candle` is candle's
//! `QMatMul` on the same weights quantized by candle; `f32_reference` is the
//! naive f64 loop of `kernels::reference::linear`, only on `kv_proj` (it is
//! slow on purpose). Before timing, each shape checks that sdlab and candle
//! agree.
//!
//! Why: at decode these products are the bulk of the step's time. At `m = 1`
//! they are memory bound (every weight read once per token), which is what
//! Q4_1 buys back (≈ 5 bits per weight instead of 32); at `m = 32` each
//! weight is reused 32 times and the kernels become compute bound. The
//! throughput is `2·m·k·n` "elements", so criterion's `Gelem/s` reads as
//! GFLOP/s.
//!
//! Run: `cargo bench --bench matmul` (add `-- lm_head` to filter, or
//! `-- --warm-up-time 1 --measurement-time 3` for a quick pass).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::quant::{matmul_q4_1, Q4_1Matrix};
use kernels::{linear, reference};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;

/// (name, k = in features, n = out features).
const SHAPES: [(&str, usize, usize); 5] = [
    ("q_proj", 576, 576),
    ("kv_proj", 576, 192),
    ("gate_up_proj", 576, 1536),
    ("down_proj", 1536, 576),
    ("lm_head", 576, 49_152),
];
const ROWS: [usize; 2] = [1, 32];
/// The only shape the naive reference runs on.
const REFERENCE_SHAPE: &str = "kv_proj";

fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn bench_matmul(c: &mut Criterion) {
    let dev = Device::Cpu;
    for (si, &(name, k, n)) in SHAPES.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0x3a7 + si as u64);
        let w = random_vec(&mut rng, n * k, 0.05);
        let wq = Q4_1Matrix::quantize(&w, n, k).unwrap();
        let w_t = Tensor::from_slice(&w, (n, k), &dev).unwrap();
        let w_candle_t = w_t.t().unwrap();
        let w_candle_q =
            QMatMul::from_qtensor(QTensor::quantize(&w_t, GgmlDType::Q4_1).unwrap()).unwrap();

        let mut group = c.benchmark_group(format!("matmul/{name}"));
        for m in ROWS {
            let x = random_vec(&mut rng, m * k, 1.0);
            let x_t = Tensor::from_slice(&x, (m, k), &dev).unwrap();
            let mut out = vec![0f32; m * n];

            // Sanity: sdlab and candle compute the same products.
            linear(&x, &w, m, k, n, &mut out).unwrap();
            let want: Vec<f32> = x_t
                .matmul(&w_candle_t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let d = max_abs_diff(&out, &want);
            assert!(d < 1e-3, "{name} m={m}: f32 sdlab vs candle differ by {d}");
            matmul_q4_1(&x, m, &wq, &mut out).unwrap();
            let want: Vec<f32> = w_candle_q
                .forward(&x_t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let d = max_abs_diff(&out, &want);
            assert!(d < 2e-2, "{name} m={m}: q4_1 sdlab vs candle differ by {d}");

            group.throughput(Throughput::Elements((2 * m * k * n) as u64));
            group.bench_function(BenchmarkId::new("f32_sdlab", m), |b| {
                b.iter(|| {
                    linear(black_box(&x), &w, m, k, n, &mut out).unwrap();
                    black_box(&out);
                })
            });
            group.bench_function(BenchmarkId::new("f32_candle", m), |b| {
                b.iter(|| black_box(&x_t).matmul(&w_candle_t).unwrap())
            });
            group.bench_function(BenchmarkId::new("q4_1_sdlab", m), |b| {
                b.iter(|| {
                    matmul_q4_1(black_box(&x), m, &wq, &mut out).unwrap();
                    black_box(&out);
                })
            });
            group.bench_function(BenchmarkId::new("q4_1_candle", m), |b| {
                b.iter(|| w_candle_q.forward(black_box(&x_t)).unwrap())
            });
            if name == REFERENCE_SHAPE {
                group.bench_function(BenchmarkId::new("f32_reference", m), |b| {
                    b.iter(|| reference::linear(black_box(&x), &w, m, k, n))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench_matmul
}
criterion_main!(benches);
