//! Quantized matmuls (Q4_1 x Q8_1, Q8_0 x Q8_0) against the CPU kernels.
//!
//! The device quantizes activations, sums integer dot products and scales
//! them per block with single-rounding multiply-adds in the CPU's order, so
//! every output has the CPU kernel's bits.

use crate::{assert_bits, gpu_or_skip, rand_vec, rng, run_f32};
use kernels::gpu::{DType, QFormat};
use kernels::q8_0::{matmul_q8_0, Q8_0Matrix};
use kernels::quant::{matmul_q4_1, quantize_rows_q8_1, Q4_1Matrix};

const SHAPES: [(usize, usize, usize); 4] =
    [(1, 576, 192), (3, 64, 70), (5, 1536, 96), (17, 96, 129)];

/// The device's result for `format` against the CPU kernel's, on random
/// activations and weights of each shape.
fn matmul_tracks_the_cpu_kernel(format: QFormat, seed: u64) {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(seed);
    for (m, k, n) in SHAPES {
        let x: Vec<f32> = rand_vec(&mut r, m * k).iter().map(|v| v * 3.0).collect();
        let w = rand_vec(&mut r, n * k);
        let mut want = vec![0f32; m * n];
        let gw = match format {
            QFormat::Q4_1 => {
                let w = Q4_1Matrix::quantize(&w, n, k).unwrap();
                matmul_q4_1(&x, m, &w, &mut want).unwrap();
                ctx.upload_q4_1_blocks(&w).unwrap()
            }
            QFormat::Q8_0 => {
                let w = Q8_0Matrix::quantize(&w, n, k).unwrap();
                matmul_q8_0(&x, m, &w, &mut want).unwrap();
                ctx.upload_q8_0_blocks(&w).unwrap()
            }
        };
        let gx = ctx.upload_f32(&x, &[m, k]).unwrap();
        let xq = ctx.quantized_rows(m, k).unwrap();
        let out = ctx.zeros(&[m, n], DType::F32).unwrap();
        let got = run_f32(ctx, &out, |e| {
            ctx.quantize_rows(e, &gx, format, &xq).unwrap();
            ctx.qmatmul(e, &xq, &gw, &out).unwrap();
        });
        assert_bits(&format!("{format:?} {m}x{k}x{n}"), &got, &want);
    }
}

#[test]
fn q4_1_matmul_tracks_the_cpu_kernel() {
    matmul_tracks_the_cpu_kernel(QFormat::Q4_1, 31);
}

#[test]
fn q8_0_matmul_tracks_the_cpu_kernel() {
    matmul_tracks_the_cpu_kernel(QFormat::Q8_0, 32);
}

/// The activation blocks themselves: codes, `d` and `s` as the CPU's
/// `quantize_rows_q8_1` makes them (ties and zeros included).
#[test]
fn activations_quantize_as_on_the_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(33);
    let (m, k) = (4, 256);
    let mut x: Vec<f32> = rand_vec(&mut r, m * k);
    // A zero block, exact halves (ties), and a block of tiny values (f16
    // subnormal scales).
    x[..32].fill(0.0);
    for (i, v) in x[32..64].iter_mut().enumerate() {
        *v = (i as f32 - 15.5) * 127.0 / 16.0 / 16.0;
    }
    for v in &mut x[64..96] {
        *v *= 1e-6;
    }
    let gx = ctx.upload_f32(&x, &[m, k]).unwrap();
    let xq = ctx.quantized_rows(m, k).unwrap();
    let mut enc = ctx.encoder();
    ctx.quantize_rows(&mut enc, &gx, QFormat::Q4_1, &xq)
        .unwrap();
    ctx.submit(enc);
    let got = ctx.download_u32(&xq).unwrap();
    let want = quantize_rows_q8_1(&x, k);
    for (b, blk) in want.iter().enumerate() {
        let words = &got[b * 10..(b + 1) * 10];
        let codes: Vec<i8> = words[..8]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|c| c as i8)
            .collect();
        assert_eq!(codes, blk.qs, "block {b}: codes");
        let (d, s) = (f32::from_bits(words[8]), f32::from_bits(words[9]));
        assert_eq!(
            (d.to_bits(), s.to_bits()),
            (blk.d.to_bits(), blk.s.to_bits()),
            "block {b}: d, s"
        );
    }
    eprintln!(
        "q8_1 activations: {} blocks, the CPU's codes and scales",
        want.len()
    );
}
