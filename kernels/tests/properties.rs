//! Property tests: each fast kernel against its naive reference on random
//! shapes, random block layouts and random prefix lengths.

use kernels::{linear, paged_attention, reference, write_kv, KvLayout, SeqAttention};
use proptest::prelude::*;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

/// LoRA `A`, `B`, rank and scale, owned.
type OwnedFactors = (Vec<f32>, Vec<f32>, usize, f32);

fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn linear_matches_reference(m in 1usize..20, k in 1usize..130, n in 1usize..40, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let x = random_vec(&mut rng, m * k);
        let w = random_vec(&mut rng, n * k);
        let mut out = vec![0f32; m * n];
        linear(&x, &w, m, k, n, &mut out).unwrap();
        let want = reference::linear(&x, &w, m, k, n);
        prop_assert!(max_abs_diff(&out, &want) < 1e-4, "diff {}", max_abs_diff(&out, &want));
    }

    /// A row's output is bit-identical whatever else is in the batch.
    #[test]
    fn linear_is_batch_invariant(m in 1usize..40, k in 1usize..200, n in 1usize..50, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let x = random_vec(&mut rng, m * k);
        let w = random_vec(&mut rng, n * k);
        let mut batched = vec![0f32; m * n];
        linear(&x, &w, m, k, n, &mut batched).unwrap();
        for r in 0..m {
            let mut alone = vec![0f32; n];
            linear(&x[r * k..(r + 1) * k], &w, 1, k, n, &mut alone).unwrap();
            prop_assert_eq!(&alone[..], &batched[r * n..(r + 1) * n]);
        }
    }

    #[test]
    fn q4_1_matmul_matches_reference(m in 1usize..12, kb in 1usize..8, n in 1usize..24, seed: u64) {
        let k = kb * 32;
        let mut rng = StdRng::seed_from_u64(seed);
        let w = kernels::quant::Q4_1Matrix::quantize(&random_vec(&mut rng, n * k), n, k).unwrap();
        let x = random_vec(&mut rng, m * k);
        let mut out = vec![0f32; m * n];
        kernels::quant::matmul_q4_1(&x, m, &w, &mut out).unwrap();
        let want = reference::matmul_q4_1(&x, m, &w);
        // The kernel folds the weight minimum in through Q8_1's `s`, stored in f16
        // as llama.cpp does; the reference uses d * sum(q) instead. The two differ by
        // exactly sum over blocks of m_w * (s - d * sum(q)): that, plus f32 rounding,
        // bounds each output element.
        let kb = k / 32;
        for r in 0..m {
            let mut xq = Vec::new();
            kernels::quant::quantize_row_q8_1(&x[r * k..(r + 1) * k], &mut xq);
            let s_err: Vec<f64> = xq
                .iter()
                .map(|b| (b.s as f64 - b.d as f64 * b.qs.iter().map(|&q| q as f64).sum::<f64>()).abs())
                .collect();
            for c in 0..n {
                let bound: f64 = (0..kb).map(|b| (w.blocks[c * kb + b].m as f64).abs() * s_err[b]).sum();
                let (got, exp) = (out[r * n + c], want[r * n + c]);
                let tol = 1e-4 + 1.01 * bound + 1e-5 * exp.abs() as f64;
                prop_assert!(((got - exp).abs() as f64) < tol, "row {r} col {c}: {got} vs {exp}, tol {tol}");
            }
        }
        // Batch invariance: each row alone is bit-identical.
        for r in 0..m {
            let mut alone = vec![0f32; n];
            kernels::quant::matmul_q4_1(&x[r * k..(r + 1) * k], 1, &w, &mut alone).unwrap();
            prop_assert_eq!(&alone[..], &out[r * n..(r + 1) * n]);
        }
    }

    /// Batched LoRA against the per-row f64 reference, with rows for no
    /// adapter, adapters that skip this projection and several ranks mixed;
    /// and each row alone gives the same bits as in the batch.
    #[test]
    fn bgmv_matches_reference_and_is_batch_invariant(
        k in 1usize..80,
        n in 1usize..60,
        ranks in prop::collection::vec(prop::option::of(1usize..17), 1..5),
        row_picks in prop::collection::vec(prop::option::of(0usize..8), 1..24),
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let factors: Vec<Option<OwnedFactors>> = ranks
            .iter()
            .map(|r| r.map(|r| (random_vec(&mut rng, r * k), random_vec(&mut rng, n * r), r, rng.random_range(0.1f32..4.0))))
            .collect();
        let slots: Vec<Option<kernels::LoraFactors>> = factors
            .iter()
            .map(|f| f.as_ref().map(|(a, b, rank, scale)| kernels::LoraFactors { a, b_t: b, rank: *rank, scale: *scale }))
            .collect();
        let row_slots: Vec<Option<usize>> = row_picks.iter().map(|p| p.map(|p| p % slots.len())).collect();
        let m = row_slots.len();
        let x = random_vec(&mut rng, m * k);
        let base = random_vec(&mut rng, m * n);
        let mut out = base.clone();
        kernels::bgmv(&x, k, &row_slots, &slots, n, &mut out).unwrap();
        let mut want = base.clone();
        reference::bgmv(&x, k, &row_slots, &slots, n, &mut want);
        prop_assert!(max_abs_diff(&out, &want) < 1e-4 * (k as f32).sqrt() * 4.0, "diff {}", max_abs_diff(&out, &want));
        for r in 0..m {
            let mut alone = base[r * n..(r + 1) * n].to_vec();
            kernels::bgmv(&x[r * k..(r + 1) * k], k, &row_slots[r..r + 1], &slots, n, &mut alone).unwrap();
            prop_assert_eq!(&alone[..], &out[r * n..(r + 1) * n]);
            if row_slots[r].and_then(|s| slots[s]).is_none() {
                prop_assert_eq!(&alone[..], &base[r * n..(r + 1) * n], "rows without an adapter are untouched");
            }
        }
    }

    #[test]
    fn paged_attention_matches_reference(
        num_kv_heads in 1usize..4,
        group in 1usize..4,
        head_dim in prop::sample::select(vec![4usize, 8, 16, 33, 64]),
        block_size in prop::sample::select(vec![1usize, 2, 4, 16]),
        seq_shapes in prop::collection::vec((1usize..70, 0usize..40), 1..5),
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let num_heads = num_kv_heads * group;
        // Each sequence: a cached prefix of `prefix` tokens and `new` tokens this step
        // (new == 1 is decode; more is a prefill chunk; prefix == 0 is a fresh prompt).
        let shapes: Vec<(usize, usize)> = seq_shapes.iter().map(|&(ctx, new)| {
            let new = new.clamp(1, ctx);
            (ctx, new)
        }).collect();
        let blocks_per_seq: Vec<usize> = shapes.iter().map(|(ctx, _)| ctx.div_ceil(block_size)).collect();
        let num_blocks = blocks_per_seq.iter().sum::<usize>() + 3;
        let layout = KvLayout { num_blocks, block_size, num_kv_heads, head_dim };
        // A random block layout: blocks handed out in shuffled order.
        let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
        ids.shuffle(&mut rng);
        let mut tables = Vec::new();
        let mut next = 0;
        for &b in &blocks_per_seq {
            tables.push(ids[next..next + b].to_vec());
            next += b;
        }
        let mut k_cache = random_vec(&mut rng, layout.elems());
        let mut v_cache = random_vec(&mut rng, layout.elems());
        let total_new: usize = shapes.iter().map(|s| s.1).sum();
        let kv_row = num_kv_heads * head_dim;
        let k_new = random_vec(&mut rng, total_new * kv_row);
        let v_new = random_vec(&mut rng, total_new * kv_row);
        let q = random_vec(&mut rng, total_new * num_heads * head_dim);
        let mut slots = Vec::new();
        let mut seqs = Vec::new();
        let mut start = 0;
        for (s, &(ctx, new)) in shapes.iter().enumerate() {
            for p in ctx - new..ctx {
                slots.push(layout.slot(&tables[s], p));
            }
            seqs.push(SeqAttention { query_start: start, query_len: new, context_len: ctx, block_table: &tables[s] });
            start += new;
        }
        write_kv(&mut k_cache, &mut v_cache, layout, &k_new, &v_new, &slots).unwrap();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = vec![0f32; q.len()];
        paged_attention(&q, &k_cache, &v_cache, layout, num_heads, &seqs, scale, &mut out).unwrap();
        let want = reference::paged_attention(&q, &k_cache, &v_cache, layout, num_heads, &seqs, scale);
        prop_assert!(max_abs_diff(&out, &want) < 1e-4, "diff {}", max_abs_diff(&out, &want));

        // Called on a rayon thread, as the model calls it, few rows are split
        // into one work item per KV head: bit-identical all the same.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let mut out_pool = vec![0f32; q.len()];
        pool.install(|| {
            paged_attention(&q, &k_cache, &v_cache, layout, num_heads, &seqs, scale, &mut out_pool).unwrap()
        });
        prop_assert_eq!(&out_pool, &out);

        // Batch invariance: each sequence alone gives bit-identical rows.
        for seq in &seqs {
            let w = num_heads * head_dim;
            let q1 = &q[seq.query_start * w..(seq.query_start + seq.query_len) * w];
            let alone = SeqAttention { query_start: 0, ..*seq };
            let mut out1 = vec![0f32; q1.len()];
            paged_attention(q1, &k_cache, &v_cache, layout, num_heads, &[alone], scale, &mut out1).unwrap();
            prop_assert_eq!(&out1[..], &out[seq.query_start * w..(seq.query_start + seq.query_len) * w]);
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let layout = KvLayout {
        num_blocks: 2,
        block_size: 4,
        num_kv_heads: 1,
        head_dim: 4,
    };
    let cache = vec![0f32; layout.elems()];
    let q = vec![0f32; 4];
    let mut out = vec![0f32; 4];
    let table = [5u32]; // out of range
    let seqs = [SeqAttention {
        query_start: 0,
        query_len: 1,
        context_len: 1,
        block_table: &table,
    }];
    assert!(paged_attention(&q, &cache, &cache, layout, 1, &seqs, 1.0, &mut out).is_err());
    let mut small = vec![0f32; 3];
    assert!(linear(&q, &q, 1, 4, 1, &mut small).is_err());
    let (a, b) = (vec![0f32; 8], vec![0f32; 2]);
    let f = kernels::LoraFactors {
        a: &a,
        b_t: &b,
        rank: 2,
        scale: 1.0,
    };
    let mut o = vec![0f32; 1];
    assert!(kernels::bgmv(&q, 4, &[Some(0)], &[Some(f)], 1, &mut o).is_ok());
    assert!(
        kernels::bgmv(&q, 4, &[Some(1)], &[Some(f)], 1, &mut o).is_err(),
        "slot out of range"
    );
    assert!(
        kernels::bgmv(&q, 4, &[Some(0)], &[Some(f)], 2, &mut o).is_err(),
        "out too short"
    );
    let bad = kernels::LoraFactors { rank: 3, ..f };
    assert!(
        kernels::bgmv(&q, 4, &[Some(0)], &[Some(bad)], 1, &mut o).is_err(),
        "A of the wrong rank"
    );
}
