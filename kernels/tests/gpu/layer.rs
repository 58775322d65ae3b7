//! A whole layer and the logits, chained on the device in one submit.

use crate::attention::Scenario;
use crate::{assert_close, gpu_or_skip, rand_vec, rng, run_f32};
use kernels::attention::KvLayout;
use kernels::gpu::DType;
use kernels::{reference, RopeStyle};
use rand::Rng;

/// One transformer layer plus the logits, recorded into one encoder and
/// submitted once, against the same chain of CPU references.
#[test]
fn a_whole_layer_in_one_submit() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(11);
    let (vocab, h, nh, nkv, d, inter) = (211, 96, 6, 2, 16, 150);
    let layout = KvLayout {
        num_blocks: 10,
        block_size: 4,
        num_kv_heads: nkv,
        head_dim: d,
    };
    let sc = Scenario::new(&mut r, layout, nh, vec![(0, 6), (9, 1)]);
    let seqs = sc.attention();
    let t: usize = seqs.iter().map(|s| s.query_len).sum();
    let tokens: Vec<u32> = (0..t).map(|_| r.random_range(0..vocab as u32)).collect();
    let positions: Vec<usize> = seqs
        .iter()
        .flat_map(|s| s.context_len - s.query_len..s.context_len)
        .collect();
    let (emb, norm1, norm2, norm_f) = (
        rand_vec(&mut r, vocab * h),
        rand_vec(&mut r, h),
        rand_vec(&mut r, h),
        rand_vec(&mut r, h),
    );
    let (wq, wk, wv, wo) = (
        rand_vec(&mut r, nh * d * h),
        rand_vec(&mut r, nkv * d * h),
        rand_vec(&mut r, nkv * d * h),
        rand_vec(&mut r, h * nh * d),
    );
    let (wg, wu, wd) = (
        rand_vec(&mut r, inter * h),
        rand_vec(&mut r, inter * h),
        rand_vec(&mut r, h * inter),
    );
    let mut k_cache = rand_vec(&mut r, layout.elems());
    let mut v_cache = rand_vec(&mut r, layout.elems());
    let (cos, sin) = kernels::rope_tables(10000.0, d, 64);
    let (eps, scale) = (1e-5, 1.0 / (d as f32).sqrt());

    // CPU.
    let x = reference::embedding(&emb, h, &tokens);
    let hn = reference::rms_norm(&x, &norm1, eps);
    let mut q = reference::linear(&hn, &wq, t, h, nh * d);
    let mut k = reference::linear(&hn, &wk, t, h, nkv * d);
    let v = reference::linear(&hn, &wv, t, h, nkv * d);
    kernels::rope(&mut q, &positions, nh, d, &cos, &sin, RopeStyle::Halves);
    kernels::rope(&mut k, &positions, nkv, d, &cos, &sin, RopeStyle::Halves);
    let slots: Vec<usize> = seqs
        .iter()
        .flat_map(|s| {
            (s.context_len - s.query_len..s.context_len).map(|p| layout.slot(s.block_table, p))
        })
        .collect();
    let (k_pool, v_pool) = (k_cache.clone(), v_cache.clone());
    kernels::write_kv(&mut k_cache, &mut v_cache, layout, &k, &v, &slots).unwrap();
    let attn = reference::paged_attention(&q, &k_cache, &v_cache, layout, nh, &seqs, scale);
    let o = reference::linear(&attn, &wo, t, nh * d, h);
    let x: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
    let hn = reference::rms_norm(&x, &norm2, eps);
    let g = reference::linear(&hn, &wg, t, h, inter);
    let u = reference::linear(&hn, &wu, t, h, inter);
    let down = reference::linear(&reference::silu_mul(&g, &u), &wd, t, inter, h);
    let x: Vec<f32> = x.iter().zip(&down).map(|(a, b)| a + b).collect();
    let want = reference::linear(&reference::rms_norm(&x, &norm_f, eps), &emb, t, h, vocab);

    // GPU: weights and pools up once, then one encoder for the pass.
    let up = |v: &[f32], s: &[usize]| ctx.upload_f32(v, s).unwrap();
    let z = |s: &[usize]| ctx.zeros(s, DType::F32).unwrap();
    let g_emb = up(&emb, &[vocab, h]);
    let (g_n1, g_n2, g_nf) = (up(&norm1, &[h]), up(&norm2, &[h]), up(&norm_f, &[h]));
    let (g_wq, g_wk, g_wv, g_wo) = (
        up(&wq, &[nh * d, h]),
        up(&wk, &[nkv * d, h]),
        up(&wv, &[nkv * d, h]),
        up(&wo, &[h, nh * d]),
    );
    let (g_wg, g_wu, g_wd) = (
        up(&wg, &[inter, h]),
        up(&wu, &[inter, h]),
        up(&wd, &[h, inter]),
    );
    let (g_kc, g_vc) = (
        up(&k_pool, &[layout.elems()]),
        up(&v_pool, &[layout.elems()]),
    );
    let (g_cos, g_sin) = (up(&cos, &[64, d / 2]), up(&sin, &[64, d / 2]));
    let g_tok = ctx.upload_u32(&tokens, &[t]).unwrap();
    let pos32: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
    let g_pos = ctx.upload_u32(&pos32, &[t]).unwrap();
    let batch = ctx.attention_batch(&seqs, layout).unwrap();
    let (gx, ghn, gq, gk, gv) = (
        z(&[t, h]),
        z(&[t, h]),
        z(&[t, nh * d]),
        z(&[t, nkv * d]),
        z(&[t, nkv * d]),
    );
    let (gattn, go, gg, gu, gact, gdown) = (
        z(&[t, nh * d]),
        z(&[t, h]),
        z(&[t, inter]),
        z(&[t, inter]),
        z(&[t, inter]),
        z(&[t, h]),
    );
    let glogits = z(&[t, vocab]);
    let got = run_f32(ctx, &glogits, |e| {
        ctx.embedding(e, &g_emb, &g_tok, &gx).unwrap();
        ctx.rms_norm(e, &gx, &g_n1, eps, &ghn).unwrap();
        ctx.matmul(e, &ghn, &g_wq, &gq).unwrap();
        ctx.matmul(e, &ghn, &g_wk, &gk).unwrap();
        ctx.matmul(e, &ghn, &g_wv, &gv).unwrap();
        ctx.rope(e, &gq, &g_pos, &g_cos, &g_sin, nh, RopeStyle::Halves)
            .unwrap();
        ctx.rope(e, &gk, &g_pos, &g_cos, &g_sin, nkv, RopeStyle::Halves)
            .unwrap();
        ctx.write_kv(e, &g_kc, &g_vc, layout, &gk, &gv, batch.slots())
            .unwrap();
        ctx.paged_attention(e, &gq, &g_kc, &g_vc, nh, &batch, scale, &gattn)
            .unwrap();
        ctx.matmul(e, &gattn, &g_wo, &go).unwrap();
        ctx.add(e, &gx, &go).unwrap();
        ctx.rms_norm(e, &gx, &g_n2, eps, &ghn).unwrap();
        ctx.matmul(e, &ghn, &g_wg, &gg).unwrap();
        ctx.matmul(e, &ghn, &g_wu, &gu).unwrap();
        ctx.silu_mul(e, &gg, &gu, &gact).unwrap();
        ctx.matmul(e, &gact, &g_wd, &gdown).unwrap();
        ctx.add(e, &gx, &gdown).unwrap();
        ctx.rms_norm(e, &gx, &g_nf, eps, &ghn).unwrap();
        ctx.logits(e, &ghn, &g_emb, &glogits).unwrap();
    });
    assert_close("layer logits", &got, &want, 1e-3, 1e-4);
}
