//! The K/V scatter and paged attention over shuffled block tables.

use crate::{assert_bits, assert_close, gpu_or_skip, rand_vec, rng, run_f32};
use kernels::attention::{KvLayout, SeqAttention};
use kernels::gpu::{DType, GpuContext};
use kernels::reference;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Pool layout, sequences and shuffled block tables for the attention tests.
pub(crate) struct Scenario {
    layout: KvLayout,
    num_heads: usize,
    /// (prefix already cached, new tokens this step)
    seqs: Vec<(usize, usize)>,
    tables: Vec<Vec<u32>>,
}

impl Scenario {
    pub(crate) fn new(
        r: &mut StdRng,
        layout: KvLayout,
        num_heads: usize,
        seqs: Vec<(usize, usize)>,
    ) -> Self {
        let mut blocks: Vec<u32> = (0..layout.num_blocks as u32).collect();
        blocks.shuffle(r);
        let mut next = blocks.into_iter();
        let tables = seqs
            .iter()
            .map(|&(prefix, new)| {
                let need = (prefix + new).div_ceil(layout.block_size);
                (0..need)
                    .map(|_| next.next().expect("enough blocks"))
                    .collect()
            })
            .collect();
        Self {
            layout,
            num_heads,
            seqs,
            tables,
        }
    }

    pub(crate) fn attention(&self) -> Vec<SeqAttention<'_>> {
        let mut start = 0;
        self.seqs
            .iter()
            .zip(&self.tables)
            .map(|(&(prefix, new), table)| {
                let s = SeqAttention {
                    query_start: start,
                    query_len: new,
                    context_len: prefix + new,
                    block_table: table,
                };
                start += new;
                s
            })
            .collect()
    }
}

/// Writes this step's K/V with `write_kv`, then attends, on both sides.
fn check_attention(ctx: &GpuContext, sc: &Scenario, seed: u64, what: &str) {
    let mut r = rng(seed);
    let layout = sc.layout;
    let (d, nh) = (layout.head_dim, sc.num_heads);
    let row = layout.num_kv_heads * d;
    let seqs = sc.attention();
    let rows: usize = seqs.iter().map(|s| s.query_len).sum();
    // Random pools stand for the cached prefixes (and garbage elsewhere).
    let mut k_cache = rand_vec(&mut r, layout.elems());
    let mut v_cache = rand_vec(&mut r, layout.elems());
    let q = rand_vec(&mut r, rows * nh * d);
    let k_new = rand_vec(&mut r, rows * row);
    let v_new = rand_vec(&mut r, rows * row);
    let scale = 1.0 / (d as f32).sqrt();

    let gk = ctx.upload_f32(&k_cache, &[layout.elems()]).unwrap();
    let gv = ctx.upload_f32(&v_cache, &[layout.elems()]).unwrap();
    let batch = ctx.attention_batch(&seqs, layout).unwrap();
    let gq = ctx.upload_f32(&q, &[rows, nh * d]).unwrap();
    let gkn = ctx.upload_f32(&k_new, &[rows, row]).unwrap();
    let gvn = ctx.upload_f32(&v_new, &[rows, row]).unwrap();
    let out = ctx.zeros(&[rows, nh * d], DType::F32).unwrap();
    let got = run_f32(ctx, &out, |e| {
        ctx.write_kv(e, &gk, &gv, layout, &gkn, &gvn, batch.slots())
            .unwrap();
        ctx.paged_attention(e, &gq, &gk, &gv, nh, &batch, scale, &out)
            .unwrap();
    });

    let slots: Vec<usize> = seqs
        .iter()
        .flat_map(|s| {
            (s.context_len - s.query_len..s.context_len).map(|p| layout.slot(s.block_table, p))
        })
        .collect();
    kernels::write_kv(&mut k_cache, &mut v_cache, layout, &k_new, &v_new, &slots).unwrap();
    // The scatter is a copy: the pools agree exactly.
    assert_eq!(ctx.download_f32(&gk).unwrap(), k_cache, "{what}: K pool");
    assert_eq!(ctx.download_f32(&gv).unwrap(), v_cache, "{what}: V pool");

    let want = reference::paged_attention(&q, &k_cache, &v_cache, layout, nh, &seqs, scale);
    assert_close(what, &got, &want, 1e-4, 2e-5);
    let mut fast = vec![0f32; want.len()];
    kernels::paged_attention(&q, &k_cache, &v_cache, layout, nh, &seqs, scale, &mut fast).unwrap();
    assert_bits(&format!("{what} vs CPU kernel"), &got, &fast);
}

#[test]
fn paged_attention_decode_and_chunked_prefill_with_gqa() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(8);
    // SmolLM2-135M's heads: 9 query heads over 3 KV heads of 64.
    let layout = KvLayout {
        num_blocks: 48,
        block_size: 16,
        num_kv_heads: 3,
        head_dim: 64,
    };
    // Decodes at 1, 17, 100 and 300 tokens (several 64-position chunks), a
    // prefill chunk of 23 after a 47-token prefix, a fresh prompt of 5.
    let seqs = vec![(0, 1), (16, 1), (47, 23), (99, 1), (0, 5), (299, 1)];
    let sc = Scenario::new(&mut r, layout, 9, seqs);
    check_attention(ctx, &sc, 80, "attention smollm2 heads");
}

#[test]
fn paged_attention_odd_head_dim_and_block_size() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(9);
    for (layout, nh, seqs) in [
        (
            KvLayout {
                num_blocks: 40,
                block_size: 7,
                num_kv_heads: 2,
                head_dim: 80,
            },
            4,
            vec![(10, 3), (0, 66), (130, 1)],
        ),
        (
            // Multi-query attention, the widest head the shader holds.
            KvLayout {
                num_blocks: 12,
                block_size: 32,
                num_kv_heads: 1,
                head_dim: 256,
            },
            3,
            vec![(200, 2), (1, 1)],
        ),
    ] {
        let what = format!("attention d{} bs{}", layout.head_dim, layout.block_size);
        let sc = Scenario::new(&mut r, layout, nh, seqs);
        check_attention(ctx, &sc, 90 + layout.head_dim as u64, &what);
    }
}

/// More (row, head) workgroups than one grid dimension holds (65535): the
/// attention shader's 2D item index.
#[test]
fn paged_attention_beyond_one_grid_dimension() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut r = rng(12);
    let rows = 33_000;
    let layout = KvLayout {
        num_blocks: rows,
        block_size: 2,
        num_kv_heads: 1,
        head_dim: 8,
    };
    // Two query heads per row: 66 000 workgroups. Decodes at 1 or 2 tokens.
    let seqs = (0..rows).map(|i| (i % 2, 1)).collect();
    let sc = Scenario::new(&mut r, layout, 2, seqs);
    check_attention(ctx, &sc, 120, "attention 2D grid");
}
