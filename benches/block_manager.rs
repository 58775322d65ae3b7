//! KV block pool: allocation, free and prefix-cache hits, plus a naive pool.
//!
//! Measures `server::block_manager::BlockManager` (16-token blocks, like the
//! engine's) under the scheduler's call patterns:
//!
//! - `decode_2048`: one sequence grows token by token to 2048 tokens
//!   (`allocate_slots` every step, a new block every 16th), then is freed.
//!   `caching_on` also calls `cache_full_blocks` every step, as the scheduler
//!   does, and gives every run a distinct prompt so the pool fills with cached
//!   blocks and, in steady state, each allocation evicts one.
//! - `prefill_512`: a 512-token prompt allocated at once, then freed;
//!   `caching_on` adds the admission lookup (a miss) and the hashing of its
//!   32 full blocks.
//! - `prefix_hit_512`: a 512-token prompt whose blocks are already cached
//!   (cached-free, from an earlier run): `acquire_cached_prefix` reuses 31
//!   blocks (496 tokens; the last token is always recomputed), then
//!   `allocate_slots` for the last block, `cache_full_blocks`, `free`.
//!
//! Then `vs_naive`: a pool of 16,384 blocks (256k tokens, what a few GB of KV
//! holds) with 50 %, 94 % or 99 % of it held by other sequences, and one more
//! sequence taking 32 blocks (grown token by token, or 512 tokens at once)
//! and freeing them. `free_list` is the BlockManager (intrusive free list,
//! O(1) per block); `naive_scan` is a `Vec<bool>` of used flags searched
//! linearly from block 0 for free blocks (one pass per `allocate` call), the
//! obvious first design. First fit packs used blocks at the front, so on a
//! mostly full pool each search walks past nearly every block.
//!
//! Why: the scheduler calls these for every running sequence on every step,
//! so they must stay negligible next to the model at any pool size. The
//! throughput is in tokens (the ones each pattern adds to the sequence).
//!
//! Run: `cargo bench --bench block_manager` (or
//! `-- --warm-up-time 1 --measurement-time 3` for a quick pass).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use server::block_manager::{BlockId, BlockManager, SeqBlocks};
use std::hint::black_box;

const BLOCK_SIZE: usize = 16;
const POOL_BLOCKS: usize = 16_384;

/// Distinct token ids for run `run` (its first token carries the run number,
/// so its chain hashes differ from every other run's).
fn prompt(run: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| if i == 0 { run } else { i * 31 % 49_152 })
        .collect()
}

fn bench_patterns(c: &mut Criterion) {
    // Decode: token-by-token growth to 2048.
    let mut group = c.benchmark_group("block_manager/decode_2048");
    group.throughput(Throughput::Elements(2048));
    for caching in [false, true] {
        let id = if caching { "caching_on" } else { "caching_off" };
        group.bench_function(id, |b| {
            let mut bm = BlockManager::new(POOL_BLOCKS, BLOCK_SIZE, caching);
            let mut seq = SeqBlocks::default();
            let mut tokens = prompt(0, 2048);
            let mut run = 0u32;
            b.iter(|| {
                run = run.wrapping_add(1);
                tokens[0] = run;
                for t in 1..=tokens.len() {
                    assert!(bm.allocate_slots(&mut seq, t));
                    if caching {
                        bm.cache_full_blocks(&mut seq, &tokens, t, None);
                    }
                }
                black_box(&seq.block_table);
                bm.free(&mut seq);
            })
        });
    }
    group.finish();

    // Prefill: 512 tokens at once.
    let mut group = c.benchmark_group("block_manager/prefill_512");
    group.throughput(Throughput::Elements(512));
    for caching in [false, true] {
        let id = if caching { "caching_on" } else { "caching_off" };
        group.bench_function(id, |b| {
            let mut bm = BlockManager::new(POOL_BLOCKS, BLOCK_SIZE, caching);
            let mut seq = SeqBlocks::default();
            let mut tokens = prompt(0, 512);
            let mut run = 0u32;
            b.iter(|| {
                run = run.wrapping_add(1);
                tokens[0] = run;
                let hit = bm.acquire_cached_prefix(&mut seq, &tokens, None);
                debug_assert_eq!(hit, 0);
                assert!(bm.allocate_slots(&mut seq, tokens.len()));
                bm.cache_full_blocks(&mut seq, &tokens, tokens.len(), None);
                black_box(&seq.block_table);
                bm.free(&mut seq);
            })
        });
    }
    group.finish();

    // Prefix-cache hit on a 512-token prompt computed before.
    let mut group = c.benchmark_group("block_manager/prefix_hit_512");
    group.throughput(Throughput::Elements(512));
    group.bench_function("caching_on", |b| {
        let mut bm = BlockManager::new(POOL_BLOCKS, BLOCK_SIZE, true);
        let tokens = prompt(0, 512);
        let mut seq = SeqBlocks::default();
        assert!(bm.allocate_slots(&mut seq, tokens.len()));
        bm.cache_full_blocks(&mut seq, &tokens, tokens.len(), None);
        bm.free(&mut seq);
        b.iter(|| {
            let hit = bm.acquire_cached_prefix(&mut seq, black_box(&tokens), None);
            assert_eq!(hit, 496);
            assert!(bm.allocate_slots(&mut seq, tokens.len()));
            bm.cache_full_blocks(&mut seq, &tokens, tokens.len(), None);
            black_box(&seq.block_table);
            bm.free(&mut seq);
        })
    });
    group.finish();
}

/// The obvious pool: a used flag per block, searched from block 0.
struct NaivePool {
    used: Vec<bool>,
    num_free: usize,
}

impl NaivePool {
    fn new(num_blocks: usize) -> Self {
        Self {
            used: vec![false; num_blocks],
            num_free: num_blocks,
        }
    }

    /// Same contract as `BlockManager::allocate_slots`: all or nothing.
    fn allocate_slots(&mut self, table: &mut Vec<BlockId>, num_tokens: usize) -> bool {
        let needed = num_tokens.div_ceil(BLOCK_SIZE);
        if needed <= table.len() {
            return true;
        }
        let mut missing = needed - table.len();
        if missing > self.num_free {
            return false;
        }
        self.num_free -= missing;
        for (id, used) in self.used.iter_mut().enumerate() {
            if !*used {
                *used = true;
                table.push(id as BlockId);
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        true
    }

    fn free(&mut self, table: &mut Vec<BlockId>) {
        for &id in table.iter() {
            self.used[id as usize] = false;
        }
        self.num_free += table.len();
        table.clear();
    }
}

fn bench_vs_naive(c: &mut Criterion) {
    const TOKENS: usize = 512;
    for (pattern, step) in [("grow_by_token", 1), ("prefill", TOKENS)] {
        let mut group = c.benchmark_group(format!(
            "block_manager/vs_naive_{POOL_BLOCKS}_blocks/{pattern}_{TOKENS}"
        ));
        group.throughput(Throughput::Elements(TOKENS as u64));
        for held_pct in [50, 94, 99] {
            let held_blocks = POOL_BLOCKS * held_pct / 100;

            let mut bm = BlockManager::new(POOL_BLOCKS, BLOCK_SIZE, false);
            let mut background = SeqBlocks::default();
            assert!(bm.allocate_slots(&mut background, held_blocks * BLOCK_SIZE));
            let mut seq = SeqBlocks::default();
            group.bench_function(BenchmarkId::new("free_list", held_pct), |b| {
                b.iter(|| {
                    for t in (step..=TOKENS).step_by(step) {
                        assert!(bm.allocate_slots(&mut seq, t));
                    }
                    black_box(&seq.block_table);
                    bm.free(&mut seq);
                })
            });

            let mut naive = NaivePool::new(POOL_BLOCKS);
            let mut background = Vec::new();
            assert!(naive.allocate_slots(&mut background, held_blocks * BLOCK_SIZE));
            let mut table = Vec::new();
            group.bench_function(BenchmarkId::new("naive_scan", held_pct), |b| {
                b.iter(|| {
                    for t in (step..=TOKENS).step_by(step) {
                        assert!(naive.allocate_slots(&mut table, t));
                    }
                    black_box(&table);
                    naive.free(&mut table);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_patterns, bench_vs_naive);
criterion_main!(benches);
