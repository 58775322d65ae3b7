//! Every WGSL kernel against its CPU reference: same random inputs, sizes
//! that are not multiples of any tile or workgroup, and a tolerance stated
//! per kernel.
//!
//! Bit for bit against the CPU kernels the decoder runs (the device
//! computes the same operations in the same order, with single-rounding
//! multiply-adds and the CPU's `exp`, `shaders/numerics.wgsl`): embedding
//! gather, residual add, K/V scatter, RoPE, RMSNorm, SiLU-mul, paged
//! attention, BGMV, activation quantization and the quantized matmuls; and the
//! emulated multiply-add itself against the CPU's FMA on many triples.
//!
//! Within a tolerance (|gpu - ref| <= atol + rtol·|ref|, inputs in [-1, 1]),
//! against the f64 references in `kernels::reference`:
//! - RMSNorm: rtol 1e-5, atol 1e-6; SiLU-mul: rtol 1e-5, atol 1e-6.
//! - matmul, logits, dequantized matmul: rtol 1e-4, atol 1e-4 (f32 in tile
//!   order vs f64, k up to 1000; the f32 matmul keeps its own tile order,
//!   not the CPU's).
//! - paged attention: rtol 1e-4, atol 2e-5.
//! - BGMV: rtol 1e-4, atol 1e-5.
//! - a whole layer chained in one submit: rtol 1e-3, atol 1e-4.
//!
//! Without a Vulkan adapter the tests skip with a message, unless `CI=true`
//! or `SDLAB_REQUIRE_GPU=1`, where they fail.

mod attention;
mod dense;
mod layer;
mod quant;

use kernels::attention::{KvLayout, SeqAttention};
use kernels::gpu::{wgpu, DType, FmaMode, GpuContext, GpuError, GpuTensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// The shared context, or `None` (after a message) when there is no adapter
/// and none is required. Panics when one is required and missing.
fn gpu_or_skip() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| kernels::gpu::or_skip("the GPU kernel tests", GpuContext::new()))
        .as_ref()
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: gpu {g} vs cpu {w} (|Δ| {err:e} > {atol:e} + {rtol:e}·|cpu|)"
        );
        if err > worst.1 {
            worst = (i, err);
        }
    }
    eprintln!(
        "{what}: {} values, max |Δ| {:e} at {}",
        got.len(),
        worst.1,
        worst.0
    );
}

/// Every value has the CPU's bits (NaNs aside, none are expected).
#[track_caller]
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let differ = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g.to_bits() != w.to_bits())
        .count();
    if let Some((i, (g, w))) = got
        .iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
    {
        panic!(
            "{what}: {differ} of {} values differ from the CPU's bits; first [{i}]: gpu {g:e} vs cpu {w:e}",
            got.len()
        );
    }
    eprintln!("{what}: {} values, all the CPU's bits", got.len());
}

fn run_f32(
    ctx: &GpuContext,
    out: &GpuTensor,
    record: impl FnOnce(&mut wgpu::CommandEncoder),
) -> Vec<f32> {
    let mut enc = ctx.encoder();
    record(&mut enc);
    ctx.finish_and_read_f32(enc, out).unwrap()
}

#[test]
fn adapter_is_reported() {
    let Some(ctx) = gpu_or_skip() else { return };
    let a = ctx.adapter();
    println!("adapter: {a}");
    assert!(!a.name.is_empty());
    assert_eq!(a.backend, wgpu::Backend::Vulkan);
    assert_eq!(a.software, a.device_type == wgpu::DeviceType::Cpu);
    assert!(a.max_storage_binding >= 128 << 20);
    assert_ne!(a.fma, FmaMode::Inexact, "no exact multiply-add on {a}");
}

/// The multiply-add the kernels use (`fma_exact`: native where the device
/// rounds once, else emulated) against the CPU's FMA instruction, on random
/// triples, on products that nearly cancel the addend (where one and two
/// roundings differ most), and on zeros and exact values.
#[test]
fn multiply_add_rounds_once_as_on_the_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(99);
    let mut triples = Vec::new();
    for i in 0..60_000 {
        let mag = |r: &mut StdRng| 2f32.powi(r.random_range(-20..20));
        let a = r.random_range(-1.0f32..1.0) * mag(&mut r);
        let b = r.random_range(-1.0f32..1.0) * mag(&mut r);
        let c = match i % 3 {
            0 => r.random_range(-1.0f32..1.0) * mag(&mut r),
            // Near cancellation: -a·b rounded, nudged by a few ulps.
            1 => -f32::from_bits((a * b).to_bits().wrapping_add(r.random_range(0..4))),
            _ => -(a * b) * r.random_range(0.5f32..2.0),
        };
        triples.push([a, b, c]);
    }
    triples.extend([
        [0.0, 5.0, 1.0],
        [3.0, 0.5, -1.5],
        [1.0, 1.0, 0.0],
        [-2.0, 0.25, 0.0],
    ]);
    let got = ctx.fma_results(&triples).unwrap();
    let want: Vec<f32> = triples.iter().map(|[a, b, c]| a.mul_add(*b, *c)).collect();
    let exact: Vec<f32> = got.iter().map(|r| r[1]).collect();
    assert_bits(
        &format!("fma_exact ({:?})", ctx.adapter().fma),
        &exact,
        &want,
    );
    let native = got
        .iter()
        .zip(&want)
        .filter(|(r, w)| r[0].to_bits() == w.to_bits())
        .count();
    eprintln!("the device's own fma: {native}/{} rounded once", want.len());
}

#[test]
fn shape_errors_are_caught_before_dispatch() {
    let Some(ctx) = gpu_or_skip() else { return };
    let x = ctx.zeros(&[3, 4], DType::F32).unwrap();
    let w = ctx.zeros(&[5, 6], DType::F32).unwrap();
    let out = ctx.zeros(&[3, 5], DType::F32).unwrap();
    let mut e = ctx.encoder();
    assert!(matches!(
        ctx.matmul(&mut e, &x, &w, &out),
        Err(GpuError::Kernel(_))
    ));
    // The same tensor as input and output would be a binding conflict.
    assert!(ctx.add(&mut e, &x, &x).is_err());
    let ids = ctx.zeros(&[3], DType::F32).unwrap();
    assert!(ctx.embedding(&mut e, &w, &ids, &out).is_err());
    let layout = KvLayout {
        num_blocks: 2,
        block_size: 4,
        num_kv_heads: 1,
        head_dim: 8,
    };
    let too_short = [SeqAttention {
        query_start: 0,
        query_len: 1,
        context_len: 9,
        block_table: &[0, 1],
    }];
    assert!(ctx.attention_batch(&too_short, layout).is_err());
    ctx.submit(e);
}
