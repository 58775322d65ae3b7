//! Paged attention, decode step: sdlab's kernel against the naive reference.
//!
//! Measures one decode step of one layer (`query_len == 1` per sequence) of
//! the default model, SmolLM2-135M: 9 query heads sharing 3 KV heads (GQA),
//! head dim 64, KV blocks of 16 tokens. Context lengths 128, 512 and 2048;
//! batches of 1 and 32 sequences. Every sequence owns its own block table,
//! drawn from a shuffled (seeded) pool of block ids, so the K/V rows of one
//! sequence really are scattered over the pool as they are in serving.
//!
//! Why: decode attention is memory bound, it reads every cached K/V row of
//! every sequence once per step, and its cost grows with context length while
//! the matmuls' does not. The throughput is the unique K+V bytes each step
//! reads (criterion's `GiB/s`), to compare with memory bandwidth; divide the
//! time by the batch size for the cost per sequence. The same pool is read
//! every iteration, so small shapes run from cache: batch 1 at 2048 tokens is
//! 3 MiB of K+V (1.25x that allocated), batch 32 at 2048 is 96 MiB. `sdlab` is
//! `kernels::paged_attention` (fused, block-table walking, rayon over
//! sequences); `reference` is `kernels::reference::paged_attention` (gathers
//! each sequence's K/V into contiguous copies, f64 accumulation), the
//! correctness oracle of the property tests, not a tuned baseline. Before
//! timing, each shape checks that both agree.
//!
//! Run: `cargo bench --bench attention` (add `-- 2048` to filter, or
//! `-- --warm-up-time 1 --measurement-time 3` for a quick pass).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::{paged_attention, reference, write_kv, KvLayout, SeqAttention};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use std::hint::black_box;

const NUM_HEADS: usize = 9;
const NUM_KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const BLOCK_SIZE: usize = 16;
const CONTEXTS: [usize; 3] = [128, 512, 2048];
const BATCHES: [usize; 2] = [1, 32];

/// One layer's K/V pool filled for `batch` sequences of `context` tokens,
/// plus one decode query per sequence.
struct Setup {
    layout: KvLayout,
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
    block_tables: Vec<Vec<u32>>,
    q: Vec<f32>,
    context: usize,
}

impl Setup {
    fn new(batch: usize, context: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let blocks_per_seq = context.div_ceil(BLOCK_SIZE);
        // A quarter more blocks than needed, so the tables are not a
        // permutation of the whole pool.
        let num_blocks = batch * blocks_per_seq * 5 / 4;
        let layout = KvLayout {
            num_blocks,
            block_size: BLOCK_SIZE,
            num_kv_heads: NUM_KV_HEADS,
            head_dim: HEAD_DIM,
        };
        let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
        ids.shuffle(&mut rng);
        let block_tables: Vec<Vec<u32>> = ids
            .chunks_exact(blocks_per_seq)
            .take(batch)
            .map(<[u32]>::to_vec)
            .collect();

        let mut k_cache = vec![0f32; layout.elems()];
        let mut v_cache = vec![0f32; layout.elems()];
        let row = NUM_KV_HEADS * HEAD_DIM;
        for table in &block_tables {
            let slots: Vec<usize> = (0..context).map(|p| layout.slot(table, p)).collect();
            let k = random_vec(&mut rng, context * row);
            let v = random_vec(&mut rng, context * row);
            write_kv(&mut k_cache, &mut v_cache, layout, &k, &v, &slots).unwrap();
        }
        let q = random_vec(&mut rng, batch * NUM_HEADS * HEAD_DIM);
        Self {
            layout,
            k_cache,
            v_cache,
            block_tables,
            q,
            context,
        }
    }

    fn seqs(&self) -> Vec<SeqAttention<'_>> {
        self.block_tables
            .iter()
            .enumerate()
            .map(|(i, table)| SeqAttention {
                query_start: i,
                query_len: 1,
                context_len: self.context,
                block_table: table,
            })
            .collect()
    }

    /// Unique K and V bytes one decode step reads.
    fn kv_bytes(&self) -> u64 {
        (self.block_tables.len() * self.context * NUM_KV_HEADS * HEAD_DIM * 2 * 4) as u64
    }
}

fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn bench_decode(c: &mut Criterion) {
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    for batch in BATCHES {
        let mut group = c.benchmark_group(format!("attention_decode/batch_{batch}"));
        for context in CONTEXTS {
            let s = Setup::new(batch, context, 0x5d1a + (batch * 10_000 + context) as u64);
            let seqs = s.seqs();
            let mut out = vec![0f32; s.q.len()];
            paged_attention(
                &s.q, &s.k_cache, &s.v_cache, s.layout, NUM_HEADS, &seqs, scale, &mut out,
            )
            .unwrap();
            let want = reference::paged_attention(
                &s.q, &s.k_cache, &s.v_cache, s.layout, NUM_HEADS, &seqs, scale,
            );
            let diff = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "kernel and reference differ by {diff}");

            group.throughput(Throughput::Bytes(s.kv_bytes()));
            group.bench_with_input(BenchmarkId::new("sdlab", context), &s, |b, s| {
                b.iter(|| {
                    paged_attention(
                        black_box(&s.q),
                        &s.k_cache,
                        &s.v_cache,
                        s.layout,
                        NUM_HEADS,
                        &seqs,
                        scale,
                        &mut out,
                    )
                    .unwrap();
                    black_box(&out);
                })
            });
            group.bench_with_input(BenchmarkId::new("reference", context), &s, |b, s| {
                b.iter(|| {
                    reference::paged_attention(
                        black_box(&s.q),
                        &s.k_cache,
                        &s.v_cache,
                        s.layout,
                        NUM_HEADS,
                        &seqs,
                        scale,
                    )
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_decode
}
criterion_main!(benches);
