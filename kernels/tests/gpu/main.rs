//! Every WGSL kernel against its CPU reference: same random inputs, sizes
//! that are not multiples of any tile or workgroup, and a tolerance stated
//! per kernel.
//!
//! Tolerances (|gpu - ref| <= atol + rtol·|ref|, inputs in [-1, 1]):
//! - embedding gather, residual add, K/V scatter: exact.
//! - RoPE: atol 1e-6 (same f32 tables; only FMA contraction may differ).
//! - RMSNorm: rtol 1e-5, atol 1e-6 (f32 sum of squares vs f64).
//! - SiLU-mul: rtol 1e-5, atol 1e-6 (the shader's `exp` vs f64).
//! - matmul, logits, dequantized matmul: rtol 1e-4, atol 1e-4 (f32 in tile
//!   order vs f64, k up to 1000).
//! - paged attention: rtol 1e-4, atol 2e-5 (online softmax in f32 vs
//!   two-pass f64).
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
use kernels::gpu::{wgpu, DType, GpuContext, GpuError, GpuTensor};
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
