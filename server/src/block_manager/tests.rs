//! Unit and property tests for the block pool.

use super::*;
use proptest::prelude::*;

fn bm(num_blocks: usize, block_size: usize) -> BlockManager {
    BlockManager::new(num_blocks, block_size, true)
}

/// Admit `tokens` as a new sequence, compute all of it, cache its full blocks.
fn run_seq(bm: &mut BlockManager, tokens: &[u32], adapter: Option<u32>) -> (SeqBlocks, usize) {
    let mut seq = SeqBlocks::default();
    let hit = bm.acquire_cached_prefix(&mut seq, tokens, adapter);
    assert!(bm.allocate_slots(&mut seq, tokens.len()));
    bm.cache_full_blocks(&mut seq, tokens, tokens.len(), adapter);
    bm.check_invariants().unwrap();
    (seq, hit)
}

#[test]
fn allocation_and_free_counts() {
    let mut bm = bm(8, 4);
    let mut a = SeqBlocks::default();
    assert!(bm.allocate_slots(&mut a, 9));
    assert_eq!(a.block_table.len(), 3);
    assert_eq!(bm.num_free_blocks(), 5);
    assert!((bm.usage() - 3.0 / 8.0).abs() < 1e-12);
    // Growing within the last block allocates nothing; crossing it allocates one.
    assert!(bm.allocate_slots(&mut a, 12));
    assert_eq!(a.block_table.len(), 3);
    assert!(bm.allocate_slots(&mut a, 13));
    assert_eq!(a.block_table.len(), 4);
    bm.check_invariants().unwrap();
    bm.free(&mut a);
    assert!(a.block_table.is_empty());
    assert_eq!(bm.num_free_blocks(), 8);
    assert_eq!(bm.num_cached_free_blocks(), 0);
    assert_eq!(bm.usage(), 0.0);
    bm.check_invariants().unwrap();
}

#[test]
fn allocate_slots_is_all_or_nothing() {
    let mut bm = bm(4, 4);
    let mut a = SeqBlocks::default();
    assert!(bm.allocate_slots(&mut a, 8));
    let mut b = SeqBlocks::default();
    assert!(!bm.allocate_slots(&mut b, 12), "needs 3 blocks, 2 free");
    assert!(b.block_table.is_empty());
    assert_eq!(bm.num_free_blocks(), 2);
    assert!(
        !bm.allocate_slots(&mut a, 17),
        "needs 3 more blocks, 2 free"
    );
    assert_eq!(a.block_table.len(), 2);
    assert!(bm.allocate_slots(&mut a, 16));
    assert_eq!(bm.num_free_blocks(), 0);
    bm.check_invariants().unwrap();
}

#[test]
fn prefix_hit_after_free_revives_cached_blocks() {
    let mut bm = bm(8, 4);
    let tokens: Vec<u32> = (0..10).collect();
    let (mut a, hit) = run_seq(&mut bm, &tokens, None);
    assert_eq!(hit, 0);
    let first_two = a.block_table[..2].to_vec();
    bm.free(&mut a);
    assert_eq!(bm.num_free_blocks(), 8);
    assert_eq!(
        bm.num_cached_free_blocks(),
        2,
        "two full blocks stay cached"
    );

    let mut b = SeqBlocks::default();
    let mut other = tokens.clone();
    other[9] = 99; // same two full blocks, different partial tail
    assert_eq!(bm.acquire_cached_prefix(&mut b, &other, None), 8);
    assert_eq!(b.block_table, first_two);
    assert_eq!(bm.num_cached_free_blocks(), 0);
    assert_eq!(bm.num_free_blocks(), 6);
    for &id in &b.block_table {
        assert_eq!(bm.ref_cnt(id), 1);
    }
    bm.check_invariants().unwrap();
    let s = bm.stats();
    assert_eq!((s.queries_tokens, s.hit_tokens), (20, 8));
    assert!((s.hit_rate() - 0.4).abs() < 1e-12);
}

#[test]
fn two_live_seqs_share_blocks() {
    let mut bm = bm(8, 4);
    let prompt: Vec<u32> = (0..9).collect();
    let (mut a, _) = run_seq(&mut bm, &prompt, None);
    let (mut b, hit) = run_seq(&mut bm, &prompt, None);
    assert_eq!(hit, 8);
    assert_eq!(a.block_table[..2], b.block_table[..2]);
    assert_ne!(
        a.block_table[2], b.block_table[2],
        "partial block is private"
    );
    assert_eq!(bm.ref_cnt(a.block_table[0]), 2);
    assert_eq!(bm.num_free_blocks(), 4);
    bm.free(&mut a);
    assert_eq!(bm.ref_cnt(b.block_table[0]), 1);
    assert_eq!(bm.num_free_blocks(), 5);
    bm.free(&mut b);
    assert_eq!(bm.num_free_blocks(), 8);
    bm.check_invariants().unwrap();
}

#[test]
fn identical_block_computed_twice_keeps_first_mapping() {
    let mut bm = bm(8, 4);
    let prompt: Vec<u32> = (0..8).collect();
    // Both admitted before either is computed: no hit, both compute block 0.
    let mut a = SeqBlocks::default();
    let mut b = SeqBlocks::default();
    assert_eq!(bm.acquire_cached_prefix(&mut a, &prompt, None), 0);
    assert_eq!(bm.acquire_cached_prefix(&mut b, &prompt, None), 0);
    assert!(bm.allocate_slots(&mut a, 8) && bm.allocate_slots(&mut b, 8));
    bm.cache_full_blocks(&mut a, &prompt, 8, None);
    bm.cache_full_blocks(&mut b, &prompt, 8, None);
    assert!(bm.block_hash(a.block_table[0]).is_some());
    assert!(
        bm.block_hash(b.block_table[0]).is_none(),
        "duplicate stays private"
    );
    assert_eq!(a.num_hashed_blocks(), 2);
    assert_eq!(b.num_hashed_blocks(), 2);
    bm.check_invariants().unwrap();
    let (_, hit) = run_seq(&mut bm, &[0, 1, 2, 3, 4, 5, 6, 7, 8], None);
    assert_eq!(hit, 8);
}

#[test]
fn eviction_is_lru_tail_blocks_first() {
    let mut bm = bm(4, 2);
    let tokens = [1, 2, 3, 4, 5, 6, 7, 8];
    let (mut a, _) = run_seq(&mut bm, &tokens, None);
    let table = a.block_table.clone();
    bm.free(&mut a);
    assert_eq!(bm.num_cached_free_blocks(), 4);
    // Allocating one block must evict the prefix's last block, not its first.
    let mut x = SeqBlocks::default();
    assert!(bm.allocate_slots(&mut x, 1));
    assert_eq!(x.block_table, vec![table[3]]);
    assert_eq!(bm.stats().evictions, 1);
    assert_eq!(bm.num_cached_free_blocks(), 3);
    bm.check_invariants().unwrap();
    // The first three blocks still hit (9 tokens so nothing forces a drop).
    let mut b = SeqBlocks::default();
    let longer = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    assert_eq!(bm.acquire_cached_prefix(&mut b, &longer, None), 6);
    assert_eq!(b.block_table, table[..3].to_vec());
    bm.check_invariants().unwrap();
}

#[test]
fn least_recently_freed_prefix_is_evicted_first() {
    let mut bm = bm(4, 2);
    let (mut old, _) = run_seq(&mut bm, &[1, 1, 1, 1], None);
    let (mut new, _) = run_seq(&mut bm, &[2, 2, 2, 2], None);
    let old_table = old.block_table.clone();
    bm.free(&mut old);
    bm.free(&mut new);
    let mut x = SeqBlocks::default();
    assert!(bm.allocate_slots(&mut x, 4));
    let mut got = x.block_table.clone();
    got.sort_unstable();
    let mut want = old_table;
    want.sort_unstable();
    assert_eq!(got, want);
    bm.free(&mut x);
    let (_, hit) = run_seq(&mut bm, &[2, 2, 2, 2, 2], None);
    assert_eq!(hit, 4, "recently freed prefix survives");
}

#[test]
fn unhashed_blocks_are_reused_before_cached_ones() {
    let mut bm = bm(4, 2);
    let (mut a, _) = run_seq(&mut bm, &[1, 2, 3], None); // one full, one partial
    let cached = a.block_table[0];
    bm.free(&mut a);
    let mut x = SeqBlocks::default();
    assert!(bm.allocate_slots(&mut x, 6));
    assert!(!x.block_table.contains(&cached));
    assert_eq!(bm.stats().evictions, 0);
}

#[test]
fn adapter_changes_the_hash() {
    let mut bm = bm(16, 4);
    let prompt: Vec<u32> = (0..9).collect();
    let (_a, _) = run_seq(&mut bm, &prompt, Some(1));
    let (_b, hit) = run_seq(&mut bm, &prompt, Some(2));
    assert_eq!(hit, 0, "no cross-adapter hit");
    let (_c, hit) = run_seq(&mut bm, &prompt, None);
    assert_eq!(hit, 0, "no hit between adapter and base");
    let (_d, hit) = run_seq(&mut bm, &prompt, Some(1));
    assert_eq!(hit, 8);
}

#[test]
fn acquire_never_covers_all_tokens() {
    let mut bm = bm(8, 4);
    let prompt: Vec<u32> = (0..8).collect();
    let (mut a, _) = run_seq(&mut bm, &prompt, None);
    bm.free(&mut a);
    let mut b = SeqBlocks::default();
    assert_eq!(bm.acquire_cached_prefix(&mut b, &prompt, None), 4);
    assert_eq!(b.block_table.len(), 1);
    bm.free(&mut b);
    let mut c = SeqBlocks::default();
    assert_eq!(bm.acquire_cached_prefix(&mut c, &prompt[..4], None), 0);
    assert!(c.block_table.is_empty());
    bm.check_invariants().unwrap();
}

#[test]
fn disabled_caching_never_hits() {
    let mut bm = BlockManager::new(8, 4, false);
    let prompt: Vec<u32> = (0..9).collect();
    let (mut a, _) = run_seq(&mut bm, &prompt, None);
    bm.free(&mut a);
    assert_eq!(bm.num_cached_free_blocks(), 0);
    let (_b, hit) = run_seq(&mut bm, &prompt, None);
    assert_eq!(hit, 0);
    assert_eq!(bm.stats(), PrefixCacheStats::default());
}

#[test]
fn reset_prefix_cache_only_when_idle() {
    let mut bm = bm(8, 4);
    let prompt: Vec<u32> = (0..9).collect();
    let (mut a, _) = run_seq(&mut bm, &prompt, None);
    assert!(!bm.reset_prefix_cache());
    bm.free(&mut a);
    assert!(bm.reset_prefix_cache());
    assert_eq!(bm.num_cached_free_blocks(), 0);
    bm.check_invariants().unwrap();
    let (_b, hit) = run_seq(&mut bm, &prompt, None);
    assert_eq!(hit, 0);
}

// ---- property test: random workload over many sequences ----

#[derive(Debug, Clone)]
enum Op {
    /// Admit a new sequence in `slot` with a random prompt.
    Add {
        slot: usize,
        prompt: Vec<u32>,
        adapter: Option<u32>,
    },
    /// Compute up to `n` more tokens of the sequence in `slot`.
    Step { slot: usize, n: usize },
    /// Allocate for `n` more tokens without computing them (a step that is then aborted).
    Allocate { slot: usize, n: usize },
    /// Append a generated token.
    Generate { slot: usize, token: u32 },
    /// Finish or abort: free the sequence's blocks.
    Free { slot: usize },
}

const SLOTS: usize = 6;

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        (
            slot.clone(),
            prop::collection::vec(0u32..3, 1..20),
            prop::option::of(0u32..2)
        )
            .prop_map(|(slot, prompt, adapter)| Op::Add {
                slot,
                prompt,
                adapter
            }),
        (slot.clone(), 1usize..10).prop_map(|(slot, n)| Op::Step { slot, n }),
        (slot.clone(), 1usize..6).prop_map(|(slot, n)| Op::Allocate { slot, n }),
        (slot.clone(), 0u32..3).prop_map(|(slot, token)| Op::Generate { slot, token }),
        slot.prop_map(|slot| Op::Free { slot }),
    ]
}

struct Live {
    tokens: Vec<u32>,
    computed: usize,
    adapter: Option<u32>,
    blocks: SeqBlocks,
}

/// Every block's ref count equals its number of holders, and shared blocks
/// are hashed and hold identical prefixes under the same adapter.
fn check_sharing(bm: &BlockManager, seqs: &[Option<Live>]) -> Result<(), TestCaseError> {
    let bs = bm.block_size();
    let mut holders: HashMap<BlockId, Vec<(usize, usize)>> = HashMap::new();
    for (s, live) in seqs.iter().enumerate() {
        if let Some(l) = live {
            for (i, &id) in l.blocks.block_table.iter().enumerate() {
                holders.entry(id).or_default().push((s, i));
            }
        }
    }
    for id in 0..bm.num_blocks() as BlockId {
        let h = holders.get(&id).map_or(0, Vec::len);
        prop_assert_eq!(bm.ref_cnt(id) as usize, h, "ref count of block {}", id);
    }
    for (id, hs) in &holders {
        if hs.len() < 2 {
            continue;
        }
        prop_assert!(bm.block_hash(*id).is_some(), "shared block {} unhashed", id);
        let (s0, i0) = hs[0];
        let a = seqs[s0].as_ref().unwrap();
        for &(s, i) in &hs[1..] {
            let b = seqs[s].as_ref().unwrap();
            prop_assert_eq!(i, i0, "block {} at different positions", id);
            let end = (i + 1) * bs;
            prop_assert!(a.tokens.len() >= end && b.tokens.len() >= end);
            prop_assert_eq!(
                &a.tokens[..end],
                &b.tokens[..end],
                "wrong sharing of {}",
                id
            );
            prop_assert_eq!(a.adapter, b.adapter);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_workload_keeps_invariants(
        num_blocks in 4usize..24,
        block_size in prop::sample::select(vec![1usize, 2, 4]),
        caching in any::<bool>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut bm = BlockManager::new(num_blocks, block_size, caching);
        let mut seqs: Vec<Option<Live>> = (0..SLOTS).map(|_| None).collect();
        for op in ops {
            match op {
                Op::Add { slot, prompt, adapter } => {
                    if seqs[slot].is_none() {
                        let mut blocks = SeqBlocks::default();
                        let hit = bm.acquire_cached_prefix(&mut blocks, &prompt, adapter);
                        prop_assert!(hit < prompt.len());
                        prop_assert_eq!(hit % block_size, 0);
                        prop_assert_eq!(blocks.block_table.len(), hit / block_size);
                        seqs[slot] = Some(Live { tokens: prompt, computed: hit, adapter, blocks });
                    }
                }
                Op::Step { slot, n } | Op::Allocate { slot, n } => {
                    if let Some(l) = seqs[slot].as_mut() {
                        let target = (l.computed + n).min(l.tokens.len());
                        let before = l.blocks.block_table.clone();
                        let free_before = bm.num_free_blocks();
                        if bm.allocate_slots(&mut l.blocks, target) {
                            prop_assert!(l.blocks.block_table.len() >= target.div_ceil(block_size));
                            if matches!(op, Op::Step { .. }) {
                                l.computed = target;
                                bm.cache_full_blocks(&mut l.blocks, &l.tokens, l.computed, l.adapter);
                            }
                        } else {
                            prop_assert_eq!(&l.blocks.block_table, &before);
                            prop_assert_eq!(bm.num_free_blocks(), free_before);
                        }
                    }
                }
                Op::Generate { slot, token } => {
                    if let Some(l) = seqs[slot].as_mut() {
                        if l.computed == l.tokens.len() {
                            l.tokens.push(token);
                        }
                    }
                }
                Op::Free { slot } => {
                    if let Some(mut l) = seqs[slot].take() {
                        bm.free(&mut l.blocks);
                    }
                }
            }
            if let Err(e) = bm.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
            check_sharing(&bm, &seqs)?;
            prop_assert!(bm.num_cached_free_blocks() <= bm.num_free_blocks());
        }
        for l in seqs.iter_mut().flatten() {
            bm.free(&mut l.blocks);
        }
        prop_assert_eq!(bm.num_free_blocks(), num_blocks, "leaked blocks");
        if let Err(e) = bm.check_invariants() {
            return Err(TestCaseError::fail(e));
        }
    }
}
