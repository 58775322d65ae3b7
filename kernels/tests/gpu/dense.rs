//! Embedding, RMSNorm, RoPE, matmul (f32, dequantized, logits), SiLU-mul,
//! residual add and BGMV.

use crate::{assert_bits, assert_close, gpu_or_skip, rand_vec, rng, run_f32};
use kernels::gpu::{DType, MatmulKernel};
use kernels::{reference, LoraFactors, RopeStyle};
use rand::Rng;

#[test]
fn embedding_gathers_rows_exactly() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(1);
    let (vocab, hidden) = (101, 77);
    let table = rand_vec(&mut r, vocab * hidden);
    let ids: Vec<u32> = (0..37)
        .map(|i| {
            if i % 5 == 0 {
                100
            } else {
                r.random_range(0..vocab as u32)
            }
        })
        .collect();
    let t = ctx.upload_f32(&table, &[vocab, hidden]).unwrap();
    let g_ids = ctx.upload_u32(&ids, &[ids.len()]).unwrap();
    let out = ctx.zeros(&[ids.len(), hidden], DType::F32).unwrap();
    let got = run_f32(ctx, &out, |e| ctx.embedding(e, &t, &g_ids, &out).unwrap());
    assert_eq!(got, reference::embedding(&table, hidden, &ids));
}

#[test]
fn rms_norm_matches_reference() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(2);
    // 70001 rows exceed 65535 workgroups in one dimension: the 2D grid.
    for (rows, hidden, eps) in [
        (13, 579, 1e-5),
        (4, 5, 1e-6),
        (70001, 3, 1e-5),
        (2, 576, 1e-5),
    ] {
        let x = rand_vec(&mut r, rows * hidden);
        let w = rand_vec(&mut r, hidden);
        let gx = ctx.upload_f32(&x, &[rows, hidden]).unwrap();
        let gw = ctx.upload_f32(&w, &[hidden]).unwrap();
        let out = ctx.zeros(&[rows, hidden], DType::F32).unwrap();
        let got = run_f32(ctx, &out, |e| ctx.rms_norm(e, &gx, &gw, eps, &out).unwrap());
        let want = reference::rms_norm(&x, &w, eps);
        assert_close(
            &format!("rms_norm {rows}x{hidden}"),
            &got,
            &want,
            1e-5,
            1e-6,
        );
        let cpu = kernels::rms_norm(&x, &w, eps);
        assert_bits(&format!("rms_norm {rows}x{hidden} vs CPU"), &got, &cpu);
    }
}

#[test]
fn rope_matches_reference_in_both_layouts() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(3);
    for (style, heads, head_dim, theta) in [
        (RopeStyle::Halves, 9, 64, 100000.0),
        (RopeStyle::Halves, 3, 64, 10000.0),
        (RopeStyle::Interleaved, 5, 48, 10000.0),
    ] {
        let max_pos = 513;
        let (cos, sin) = kernels::rope_tables(theta, head_dim, max_pos);
        let tokens = 11;
        let positions: Vec<usize> = (0..tokens).map(|_| r.random_range(0..max_pos)).collect();
        let x = rand_vec(&mut r, tokens * heads * head_dim);
        let gx = ctx.upload_f32(&x, &[tokens, heads * head_dim]).unwrap();
        let pos32: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let gp = ctx.upload_u32(&pos32, &[tokens]).unwrap();
        let gc = ctx.upload_f32(&cos, &[max_pos, head_dim / 2]).unwrap();
        let gs = ctx.upload_f32(&sin, &[max_pos, head_dim / 2]).unwrap();
        let got = run_f32(ctx, &gx, |e| {
            ctx.rope(e, &gx, &gp, &gc, &gs, heads, style).unwrap()
        });
        let mut want = x.clone();
        kernels::rope(&mut want, &positions, heads, head_dim, &cos, &sin, style);
        assert_bits(&format!("rope {style:?} {heads}x{head_dim}"), &got, &want);
    }
}

#[test]
fn matmul_matches_reference_on_awkward_sizes() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(4);
    for (m, k, n) in [
        (1, 1, 1),
        (3, 17, 5),
        (65, 130, 67),
        (130, 576, 193),
        (7, 1000, 300),
    ] {
        let x = rand_vec(&mut r, m * k);
        let w = rand_vec(&mut r, n * k);
        let gx = ctx.upload_f32(&x, &[m, k]).unwrap();
        let gw = ctx.upload_f32(&w, &[n, k]).unwrap();
        let out = ctx.zeros(&[m, n], DType::F32).unwrap();
        let got = run_f32(ctx, &out, |e| ctx.matmul(e, &gx, &gw, &out).unwrap());
        let want = reference::linear(&x, &w, m, k, n);
        assert_close(&format!("matmul {m}x{k}x{n}"), &got, &want, 1e-4, 1e-4);
    }
}

#[test]
fn skinny_and_tiled_matmul_give_the_same_bits() {
    // The engine picks the kernel by batch size; a sequence's logits must
    // not depend on it.
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(14);
    for (m, k, n) in [
        (1, 576, 193),
        (3, 17, 65),
        (4, 1000, 64),
        (7, 130, 300),
        (16, 64, 129),
    ] {
        let x = rand_vec(&mut r, m * k);
        let w = rand_vec(&mut r, n * k);
        let gx = ctx.upload_f32(&x, &[m, k]).unwrap();
        let gw = ctx.upload_f32(&w, &[n, k]).unwrap();
        let out = ctx.zeros(&[m, n], DType::F32).unwrap();
        let run = |kernel| {
            run_f32(ctx, &out, |e| {
                ctx.matmul_with(kernel, e, &gx, &gw, &out).unwrap()
            })
        };
        let skinny = run(MatmulKernel::Skinny);
        let tiled = run(MatmulKernel::Tiled);
        let want = reference::linear(&x, &w, m, k, n);
        assert_close(&format!("skinny {m}x{k}x{n}"), &skinny, &want, 1e-4, 1e-4);
        let differ = skinny
            .iter()
            .zip(&tiled)
            .filter(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(differ.count(), 0, "skinny vs tiled {m}x{k}x{n}");
    }
}

#[test]
fn quantized_weights_are_dequantized_at_upload() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(5);
    let (m, k, n) = (5, 96, 45);
    let x = rand_vec(&mut r, m * k);
    let w = rand_vec(&mut r, n * k);
    let q4 = kernels::quant::Q4_1Matrix::quantize(&w, n, k).unwrap();
    let q8 = kernels::q8_0::Q8_0Matrix::quantize(&w, n, k).unwrap();
    let gx = ctx.upload_f32(&x, &[m, k]).unwrap();
    for (name, gw, wd) in [
        ("q4_1", ctx.upload_q4_1(&q4).unwrap(), q4.dequantize()),
        ("q8_0", ctx.upload_q8_0(&q8).unwrap(), q8.dequantize()),
    ] {
        let out = ctx.zeros(&[m, n], DType::F32).unwrap();
        let got = run_f32(ctx, &out, |e| ctx.matmul(e, &gx, &gw, &out).unwrap());
        let want = reference::linear(&x, &wd, m, k, n);
        assert_close(&format!("matmul {name}"), &got, &want, 1e-4, 1e-4);
    }
}

#[test]
fn logits_use_the_tied_embedding() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(6);
    let (vocab, hidden, rows) = (1031, 64, 3);
    let table = rand_vec(&mut r, vocab * hidden);
    let x = rand_vec(&mut r, rows * hidden);
    let emb = ctx.upload_f32(&table, &[vocab, hidden]).unwrap();
    let gx = ctx.upload_f32(&x, &[rows, hidden]).unwrap();
    let out = ctx.zeros(&[rows, vocab], DType::F32).unwrap();
    let got = run_f32(ctx, &out, |e| ctx.logits(e, &gx, &emb, &out).unwrap());
    let want = reference::linear(&x, &table, rows, hidden, vocab);
    assert_close("logits", &got, &want, 1e-4, 1e-4);
}

#[test]
fn silu_mul_and_add_match_reference() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(7);
    let (rows, cols) = (7, 1537);
    let gate: Vec<f32> = (0..rows * cols)
        .map(|_| r.random_range(-20.0f32..20.0))
        .collect();
    let up = rand_vec(&mut r, rows * cols);
    let gg = ctx.upload_f32(&gate, &[rows, cols]).unwrap();
    let gu = ctx.upload_f32(&up, &[rows, cols]).unwrap();
    let out = ctx.zeros(&[rows, cols], DType::F32).unwrap();
    let got = run_f32(ctx, &out, |e| ctx.silu_mul(e, &gg, &gu, &out).unwrap());
    assert_close(
        "silu_mul",
        &got,
        &reference::silu_mul(&gate, &up),
        1e-5,
        1e-6,
    );
    let mut cpu = gate.clone();
    kernels::silu_mul(&mut cpu, &up);
    assert_bits("silu_mul vs CPU", &got, &cpu);

    // Residual add, in place: exact, since one f32 addition rounds alike.
    let got = run_f32(ctx, &gu, |e| ctx.add(e, &gu, &gg).unwrap());
    let want: Vec<f32> = up.iter().zip(&gate).map(|(a, b)| a + b).collect();
    assert_eq!(got, want);
}

#[test]
fn bgmv_matches_reference() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(10);
    // n past one 64-column tile of the CPU kernel, k past a multiple of 8.
    let (k, n) = (70, 150);
    let (a0, b0) = (rand_vec(&mut r, 8 * k), rand_vec(&mut r, 8 * n));
    let (a2, b2) = (rand_vec(&mut r, 3 * k), rand_vec(&mut r, 3 * n));
    let slots = [
        Some(LoraFactors {
            a: &a0,
            b_t: &b0,
            rank: 8,
            scale: 2.0,
        }),
        None,
        Some(LoraFactors {
            a: &a2,
            b_t: &b2,
            rank: 3,
            scale: 0.5,
        }),
    ];
    let row_slots = [
        Some(0),
        None,
        Some(2),
        Some(1),
        Some(0),
        Some(2),
        None,
        Some(0),
        Some(2),
    ];
    let m = row_slots.len();
    let x = rand_vec(&mut r, m * k);
    let base = rand_vec(&mut r, m * n);
    let lora = ctx.upload_lora(&slots, k, n).unwrap();
    let rs = lora.row_slots(&row_slots).unwrap();
    assert_eq!(rs[3], kernels::gpu::GpuLora::NONE);
    let grs = ctx.upload_u32(&rs, &[m]).unwrap();
    let gx = ctx.upload_f32(&x, &[m, k]).unwrap();
    let out = ctx.upload_f32(&base, &[m, n]).unwrap();
    let got = run_f32(ctx, &out, |e| ctx.bgmv(e, &gx, &grs, &lora, &out).unwrap());
    let mut want = base.clone();
    reference::bgmv(&x, k, &row_slots, &slots, n, &mut want);
    assert_close("bgmv", &got, &want, 1e-4, 1e-5);
    let mut cpu = base.clone();
    kernels::bgmv(&x, k, &row_slots, &slots, n, &mut cpu).unwrap();
    assert_bits("bgmv vs CPU", &got, &cpu);
    // Rows without an adapter are untouched.
    assert_eq!(got[n..2 * n], base[n..2 * n]);
}
