//! Paged KV-cache block pool with automatic prefix caching.
//!
//! The KV cache is cut into `num_blocks` fixed-size blocks of `block_size`
//! token slots. Each sequence owns a *block table* (logical block index ->
//! physical [`BlockId`]), so memory is handed out one block at a time instead
//! of reserving `max_model_len` slots per request (PagedAttention).
//!
//! Why prefix caching: many requests share a long prefix (a system prompt, a
//! few-shot preamble, a multi-turn history). Once a block is *full* its
//! contents depend only on the tokens up to its end, so it is identified by a
//! hash chain `h_i = hash(h_{i-1}, tokens of block i, adapter)`. A later
//! request whose leading blocks hash the same reuses those physical blocks and
//! skips their prefill. Freed blocks keep their hash ("cached-free") and stay
//! findable until allocation needs the memory and evicts them.
//!
//! Data structures (after vLLM v1's `BlockPool`), all operations O(1) per
//! block:
//! - per-block metadata: reference count and optional cached hash;
//! - the free queue: an intrusive doubly linked list threaded through the
//!   block array, holding exactly the blocks with `ref_cnt == 0`. Allocation
//!   pops the head, freeing pushes the tail, so the head is the least recently
//!   used block. A cache hit on a cached-free block unlinks it from the middle;
//! - the cache map `hash -> BlockId`. A block carries `Some(hash)` exactly when
//!   the map maps that hash to it.

use std::collections::HashMap;

/// Index of a physical KV-cache block.
pub type BlockId = u32;

/// "No block" sentinel for the intrusive list links.
const NIL: BlockId = BlockId::MAX;

/// Parent hash used for the first block of every sequence.
const ROOT_HASH: u64 = 0x5d1a_b0c4_2f3e_9a71;

/// Per-sequence block bookkeeping, owned by the scheduler's sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqBlocks {
    /// Physical block of each logical block of the sequence, in order.
    pub block_table: Vec<BlockId>,
    /// Chain hashes of the leading full blocks seen so far (`block_hashes[i]`
    /// belongs to `block_table[i]`); never longer than `block_table`.
    pub(crate) block_hashes: Vec<u64>,
}

impl SeqBlocks {
    /// Number of leading blocks whose chain hash is known (full and computed).
    pub fn num_hashed_blocks(&self) -> usize {
        self.block_hashes.len()
    }
}

/// Prefix-cache counters, in tokens (evictions in blocks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PrefixCacheStats {
    /// Prompt tokens looked up at admission.
    pub queries_tokens: u64,
    /// Of those, tokens served from cached blocks.
    pub hit_tokens: u64,
    /// Cached blocks whose hash was dropped to reuse the memory.
    pub evictions: u64,
}

impl PrefixCacheStats {
    /// `hit_tokens / queries_tokens`, 0 when nothing was queried.
    pub fn hit_rate(&self) -> f64 {
        if self.queries_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.queries_tokens as f64
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    hash: Option<u64>,
    prev: BlockId,
    next: BlockId,
}

/// The block pool: allocation, sharing and prefix caching of KV blocks.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    enable_prefix_caching: bool,
    blocks: Vec<Block>,
    free_head: BlockId,
    free_tail: BlockId,
    num_free: usize,
    /// Free blocks that still carry a hash.
    num_cached_free: usize,
    cached: HashMap<u64, BlockId>,
    stats: PrefixCacheStats,
}

/// FNV-1a 64 over a block: deterministic across processes and platforms.
fn hash_block(parent: u64, tokens: &[u32], adapter: Option<u32>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(&parent.to_le_bytes());
    match adapter {
        None => eat(&[0]),
        Some(a) => {
            eat(&[1]);
            eat(&a.to_le_bytes());
        }
    }
    for t in tokens {
        eat(&t.to_le_bytes());
    }
    h
}

impl BlockManager {
    /// A pool of `num_blocks` blocks of `block_size` tokens, all free.
    pub fn new(num_blocks: usize, block_size: usize, enable_prefix_caching: bool) -> Self {
        assert!(block_size > 0, "block_size must be positive");
        assert!(
            num_blocks < NIL as usize,
            "num_blocks must fit in a BlockId"
        );
        let blocks = (0..num_blocks)
            .map(|i| Block {
                ref_cnt: 0,
                hash: None,
                prev: if i == 0 { NIL } else { i as BlockId - 1 },
                next: if i + 1 == num_blocks {
                    NIL
                } else {
                    i as BlockId + 1
                },
            })
            .collect();
        let last = if num_blocks == 0 {
            NIL
        } else {
            num_blocks as BlockId - 1
        };
        Self {
            block_size,
            enable_prefix_caching,
            blocks,
            free_head: if num_blocks == 0 { NIL } else { 0 },
            free_tail: last,
            num_free: num_blocks,
            num_cached_free: 0,
            cached: HashMap::new(),
            stats: PrefixCacheStats::default(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn prefix_caching_enabled(&self) -> bool {
        self.enable_prefix_caching
    }

    /// Blocks with ref count 0 (never used or cached-free): what can be allocated.
    pub fn num_free_blocks(&self) -> usize {
        self.num_free
    }

    /// Blocks that have ref 0 but still hold a cached prefix (subset of free).
    pub fn num_cached_free_blocks(&self) -> usize {
        self.num_cached_free
    }

    /// Fraction of blocks in use (ref > 0).
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            0.0
        } else {
            (self.blocks.len() - self.num_free) as f64 / self.blocks.len() as f64
        }
    }

    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// At admission (seq has no blocks yet): reuse the longest run of leading
    /// full blocks of `tokens` found in the cache, taking a reference on each,
    /// and return the number of tokens they cover. At least one token is always
    /// left to compute, so the model produces logits for the last position.
    pub fn acquire_cached_prefix(
        &mut self,
        seq: &mut SeqBlocks,
        tokens: &[u32],
        adapter: Option<u32>,
    ) -> usize {
        debug_assert!(seq.block_table.is_empty(), "acquire on a seq with blocks");
        if !self.enable_prefix_caching || !seq.block_table.is_empty() || tokens.is_empty() {
            return 0;
        }
        self.stats.queries_tokens += tokens.len() as u64;
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = ROOT_HASH;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let h = hash_block(parent, chunk, adapter);
            let Some(&id) = self.cached.get(&h) else {
                break;
            };
            if self.blocks[id as usize].ref_cnt == 0 {
                self.unlink(id);
                self.num_cached_free -= 1;
            }
            self.blocks[id as usize].ref_cnt += 1;
            seq.block_table.push(id);
            seq.block_hashes.push(h);
            parent = h;
        }
        let hit = seq.block_table.len() * self.block_size;
        self.stats.hit_tokens += hit as u64;
        hit
    }

    /// Take back the stats of an [`Self::acquire_cached_prefix`] whose
    /// admission then failed (the lookup will be repeated on the next try).
    pub(crate) fn retract_prefix_query(&mut self, num_tokens: usize, hit: usize) {
        if self.enable_prefix_caching {
            let s = &mut self.stats;
            s.queries_tokens = s.queries_tokens.saturating_sub(num_tokens as u64);
            s.hit_tokens = s.hit_tokens.saturating_sub(hit as u64);
        }
    }

    /// Ensure `seq` has blocks for `num_tokens` tokens in total. New blocks
    /// come from the free-list head (evicting a cached hash if present).
    /// All-or-nothing: returns false and allocates nothing if short of blocks.
    pub fn allocate_slots(&mut self, seq: &mut SeqBlocks, num_tokens: usize) -> bool {
        let needed = self.blocks_for(num_tokens);
        let have = seq.block_table.len();
        if needed <= have {
            return true;
        }
        if needed - have > self.num_free {
            return false;
        }
        for _ in have..needed {
            let id = self.free_head;
            debug_assert_ne!(id, NIL);
            self.unlink(id);
            let block = &mut self.blocks[id as usize];
            block.ref_cnt = 1;
            if let Some(h) = block.hash.take() {
                self.cached.remove(&h);
                self.num_cached_free -= 1;
                self.stats.evictions += 1;
            }
            seq.block_table.push(id);
        }
        true
    }

    /// After `tokens[..num_computed]` of `seq` are in the KV cache: register
    /// every newly full block under its chain hash. If another block already
    /// holds the same content the existing mapping is kept (this block stays
    /// private and unhashed).
    pub fn cache_full_blocks(
        &mut self,
        seq: &mut SeqBlocks,
        tokens: &[u32],
        num_computed: usize,
        adapter: Option<u32>,
    ) {
        if !self.enable_prefix_caching {
            return;
        }
        let num_full =
            (num_computed.min(tokens.len()) / self.block_size).min(seq.block_table.len());
        for i in seq.block_hashes.len()..num_full {
            let parent = seq.block_hashes.last().copied().unwrap_or(ROOT_HASH);
            let chunk = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let h = hash_block(parent, chunk, adapter);
            seq.block_hashes.push(h);
            let id = seq.block_table[i];
            if self.blocks[id as usize].hash.is_none() && !self.cached.contains_key(&h) {
                self.blocks[id as usize].hash = Some(h);
                self.cached.insert(h, id);
            }
        }
    }

    /// Release all of `seq`'s blocks. Blocks reaching ref 0 join the free
    /// list: hashed ones at the tail (evicted last, in LRU order), unhashed
    /// ones at the head (they hold nothing worth keeping). The table is walked
    /// last block first so a prefix's tail is evicted before its head.
    pub fn free(&mut self, seq: &mut SeqBlocks) {
        for &id in seq.block_table.iter().rev() {
            let block = &mut self.blocks[id as usize];
            debug_assert!(block.ref_cnt > 0, "double free of block {id}");
            block.ref_cnt -= 1;
            if block.ref_cnt == 0 {
                if block.hash.is_some() {
                    self.num_cached_free += 1;
                    self.push_tail(id);
                } else {
                    self.push_head(id);
                }
            }
        }
        seq.block_table.clear();
        seq.block_hashes.clear();
    }

    /// Drop every cached hash. Only possible when no block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.num_free != self.blocks.len() {
            return false;
        }
        for block in &mut self.blocks {
            block.hash = None;
        }
        self.cached.clear();
        self.num_cached_free = 0;
        true
    }

    /// Full consistency check (O(num_blocks)); for tests and debugging.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let n = self.blocks.len();
        let mut in_list = vec![false; n];
        let mut count = 0;
        let mut prev = NIL;
        let mut cur = self.free_head;
        while cur != NIL {
            let i = cur as usize;
            if i >= n || in_list[i] {
                return Err(format!("free list corrupt at block {cur}"));
            }
            in_list[i] = true;
            count += 1;
            let b = &self.blocks[i];
            if b.prev != prev {
                return Err(format!("block {cur}: prev {} expected {prev}", b.prev));
            }
            if b.ref_cnt != 0 {
                return Err(format!("block {cur} is free with ref {}", b.ref_cnt));
            }
            prev = cur;
            cur = b.next;
        }
        if prev != self.free_tail {
            return Err(format!(
                "free tail {} but list ends at {prev}",
                self.free_tail
            ));
        }
        if count != self.num_free {
            return Err(format!(
                "free list has {count} blocks, counter {}",
                self.num_free
            ));
        }
        let mut cached_free = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            if (b.ref_cnt == 0) != in_list[i] {
                return Err(format!(
                    "block {i}: ref {} but in free list {}",
                    b.ref_cnt, in_list[i]
                ));
            }
            if let Some(h) = b.hash {
                if self.cached.get(&h) != Some(&(i as BlockId)) {
                    return Err(format!("block {i} carries hash {h:#x} not mapped to it"));
                }
                if b.ref_cnt == 0 {
                    cached_free += 1;
                }
            }
        }
        for (&h, &id) in &self.cached {
            if self.blocks.get(id as usize).and_then(|b| b.hash) != Some(h) {
                return Err(format!(
                    "hash {h:#x} maps to block {id} which does not carry it"
                ));
            }
        }
        if cached_free != self.num_cached_free {
            return Err(format!(
                "{cached_free} cached-free blocks, counter {}",
                self.num_cached_free
            ));
        }
        if !self.enable_prefix_caching && !self.cached.is_empty() {
            return Err("hashes cached with prefix caching disabled".into());
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn ref_cnt(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_cnt
    }

    #[cfg(test)]
    pub(crate) fn block_hash(&self, id: BlockId) -> Option<u64> {
        self.blocks[id as usize].hash
    }

    /// Remove `id` from the free list and update the free counter.
    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = {
            let b = &self.blocks[id as usize];
            (b.prev, b.next)
        };
        if prev == NIL {
            self.free_head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.free_tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let b = &mut self.blocks[id as usize];
        b.prev = NIL;
        b.next = NIL;
        self.num_free -= 1;
    }

    fn push_tail(&mut self, id: BlockId) {
        let old = self.free_tail;
        let b = &mut self.blocks[id as usize];
        b.prev = old;
        b.next = NIL;
        if old == NIL {
            self.free_head = id;
        } else {
            self.blocks[old as usize].next = id;
        }
        self.free_tail = id;
        self.num_free += 1;
    }

    fn push_head(&mut self, id: BlockId) {
        let old = self.free_head;
        let b = &mut self.blocks[id as usize];
        b.prev = NIL;
        b.next = old;
        if old == NIL {
            self.free_tail = id;
        } else {
            self.blocks[old as usize].prev = id;
        }
        self.free_head = id;
        self.num_free += 1;
    }
}

#[cfg(test)]
mod tests;
