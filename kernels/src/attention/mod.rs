//! Paged attention over a block-table KV cache.
//!
//! The cache of one layer is a pool of fixed-size blocks, laid out
//! `[num_blocks, block_size, num_kv_heads, head_dim]`. A sequence owns a list
//! of blocks (its *block table*), so its tokens need not be contiguous and no
//! memory is reserved for tokens it has not generated yet. A *slot* is
//! `block * block_size + offset`.
//!
//! [`paged_attention`] serves decode and chunked prefill with one code path: a
//! sequence brings `query_len` new tokens whose K/V are already written (by
//! [`write_kv`]) at the end of its `context_len` cached tokens; query `i` sits
//! at position `context_len - query_len + i` and attends causally to every
//! position up to its own. Decode is `query_len == 1`. Heads are grouped: query
//! head `h` reads KV head `h / (num_heads / num_kv_heads)`.
//!
//! Each (token, head) output is computed independently with a fixed order of
//! operations, so it does not depend on what else is in the batch: scores
//! `simd::dot(q, k) * scale`, their max, [`crate::expf::exp`]`(score - max)` summed in position
//! order, `w = e * (1 / sum)`, and each output element accumulated as
//! `o = fma(v, w, o)` in position order from 0.0 (what a loop of
//! [`simd::axpy`] does; that loop is the portable path).
//!
//! How, for speed (decode attention is memory bound and this kernel is a
//! large share of serving time), without changing any of those operations:
//! - A work item is one output row, all of its heads, so it walks each of its
//!   blocks' K (then V) rows, contiguous in the pool, once; and each K or V row
//!   serves all the query heads of its KV head (GQA) instead of being read
//!   once per query head. With fewer rows than threads (small decode
//!   batches) and called on a rayon thread, as the model calls it: one item
//!   per (row, KV head) instead.
//! - With AVX2+FMA, scores come four positions times up to three heads at a
//!   time: twelve independent [`simd::dot`] chains, reduced side by side in
//!   [`simd::fold8`]'s order. The weighted sum keeps up to three heads times
//!   32 output columns in registers over a chunk of 16 positions, instead of
//!   loading and storing the output row at every position. Rows are
//!   prefetched 16 positions ahead, since the blocks are scattered.
//! - The `expf` calls come before the sums (three heads side by side), so
//!   the serial additions neither wait on them nor spill around them.

use crate::{shape_err, simd, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// Shape of one layer's K (or V) block pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvLayout {
    /// f32 values in one layer's K (or V) pool.
    pub fn elems(&self) -> usize {
        self.num_blocks * self.block_size * self.num_kv_heads * self.head_dim
    }
    /// Offset of `(slot, kv_head)` in the pool.
    #[inline]
    pub fn offset(&self, slot: usize, kv_head: usize) -> usize {
        (slot * self.num_kv_heads + kv_head) * self.head_dim
    }
    /// Slot holding `position` of a sequence with this block table.
    #[inline]
    pub fn slot(&self, block_table: &[u32], position: usize) -> usize {
        block_table[position / self.block_size] as usize * self.block_size
            + position % self.block_size
    }
}

/// One sequence's part of a batched attention call.
#[derive(Debug, Clone, Copy)]
pub struct SeqAttention<'a> {
    /// Row of its first query in the batch's `q`/`out`.
    pub query_start: usize,
    /// New tokens this step (1 for decode).
    pub query_len: usize,
    /// Tokens in the cache after this step's writes (prefix + new).
    pub context_len: usize,
    pub block_table: &'a [u32],
}

/// Scatters K/V rows (`[tokens, num_kv_heads * head_dim]`) into their slots.
pub fn write_kv(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    layout: KvLayout,
    k: &[f32],
    v: &[f32],
    slots: &[usize],
) -> Result<()> {
    let row = layout.num_kv_heads * layout.head_dim;
    let n = slots.len();
    if k.len() != n * row || v.len() != n * row {
        return Err(shape_err(
            "write_kv",
            format!(
                "{n} slots but k/v of {} / {} values, row {row}",
                k.len(),
                v.len()
            ),
        ));
    }
    if k_cache.len() != layout.elems() || v_cache.len() != layout.elems() {
        return Err(shape_err(
            "write_kv",
            "cache size does not match its layout",
        ));
    }
    let capacity = layout.num_blocks * layout.block_size;
    for (i, &slot) in slots.iter().enumerate() {
        if slot >= capacity {
            return Err(shape_err(
                "write_kv",
                format!("slot {slot} outside {capacity} slots"),
            ));
        }
        let dst = slot * row;
        k_cache[dst..dst + row].copy_from_slice(&k[i * row..(i + 1) * row]);
        v_cache[dst..dst + row].copy_from_slice(&v[i * row..(i + 1) * row]);
    }
    Ok(())
}

/// Per-thread scratch, reused across work items and calls.
#[derive(Default)]
struct Scratch {
    /// Pool offset of each context position's row (all KV heads), in order.
    rows: Vec<usize>,
    /// `[heads, positions]`: scores, then softmax weights.
    weights: Vec<f32>,
    /// Each head's score maximum.
    maxes: Vec<f32>,
    /// Each head's running maximum over four positions at a time.
    lanes: Vec<[f32; 4]>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Batched paged attention; `q` and `out` are `[tokens, num_heads * head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    layout: KvLayout,
    num_heads: usize,
    seqs: &[SeqAttention<'_>],
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let d = layout.head_dim;
    let width = num_heads * d;
    validate(q, k_cache, v_cache, layout, num_heads, seqs, out)?;
    let group = num_heads / layout.num_kv_heads;

    // Work items: one output row each, all heads, so that the item walks
    // each block's K (then V) rows of all KV heads, contiguous in the pool.
    // With fewer rows than threads (small decode batches), one item per
    // (row, KV head) instead, so that idle threads share the work, but only
    // when called on a rayon thread (as the model calls it): from outside,
    // forking is a cold injection into the pool while the caller idles, which
    // measured slower than one thread even for a single 2048-token decode.
    // Either way every output value is computed by the same operations.
    let rows: usize = seqs.iter().map(|s| s.query_len).sum();
    let split = rows < rayon::current_num_threads() && rayon::current_thread_index().is_some();
    let kv_per_item = if split { 1 } else { layout.num_kv_heads };
    let mut items = Vec::with_capacity(rows * layout.num_kv_heads / kv_per_item);
    for (s, seq) in seqs.iter().enumerate() {
        for i in 0..seq.query_len {
            for kv0 in (0..layout.num_kv_heads).step_by(kv_per_item) {
                items.push((s, i, kv0));
            }
        }
    }
    let out_ptr = crate::linear::SendPtr(out.as_mut_ptr());
    items.par_iter().for_each(|&(s, i, kv0)| {
        let seq = &seqs[s];
        let row = seq.query_start + i;
        let position = seq.context_len - seq.query_len + i;
        let start = row * width + kv0 * group * d;
        let len = kv_per_item * group * d;
        let out_ptr = &out_ptr;
        // SAFETY: each (row, KV heads) output range is written by exactly one item.
        let og = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(start), len) };
        SCRATCH.with(|scratch| {
            attend(
                &q[start..start + len],
                k_cache,
                v_cache,
                layout,
                seq.block_table,
                kv0,
                group,
                position + 1,
                scale,
                &mut scratch.borrow_mut(),
                og,
            );
        });
    });
    Ok(())
}

/// Attention of query heads `qg` (`[heads, head_dim]`, KV heads from `kv0`
/// on, `group` query heads each) over context positions `0..n`, into `og`
/// (same shape).
#[allow(clippy::too_many_arguments)]
fn attend(
    qg: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    layout: KvLayout,
    block_table: &[u32],
    kv0: usize,
    group: usize,
    n: usize,
    scale: f32,
    scratch: &mut Scratch,
    og: &mut [f32],
) {
    let d = layout.head_dim;
    let heads = qg.len() / d;
    let Scratch {
        rows,
        weights,
        maxes,
        lanes,
    } = scratch;

    // Row offsets, walking the block table once instead of dividing per
    // position; a head's K/V row is at `row + (kv0 + h / group) * d`.
    rows.clear();
    for (b, &block) in block_table
        .iter()
        .enumerate()
        .take(n.div_ceil(layout.block_size))
    {
        let first = block as usize * layout.block_size;
        let len = layout.block_size.min(n - b * layout.block_size);
        rows.extend((first..first + len).map(|slot| layout.offset(slot, 0)));
    }
    let at = Heads {
        col0: kv0 * d,
        group,
        d,
    };

    weights.resize(heads * n, 0.0);
    maxes.clear();
    maxes.resize(heads, f32::NEG_INFINITY);
    scores(qg, k_cache, rows, at, scale, weights, maxes, lanes);
    softmax(weights, n, maxes);
    weighted_sum(v_cache, rows, at, weights, og);
}

/// Where a work item's heads read their K/V rows: head `h` (counted from the
/// item's first) reads `d` values at `row + col0 + (h / group) * d`.
#[derive(Clone, Copy)]
struct Heads {
    col0: usize,
    group: usize,
    d: usize,
}

impl Heads {
    #[inline]
    fn col(&self, h: usize) -> usize {
        self.col0 + h / self.group * self.d
    }
}

/// `weights[h][p] = simd::dot(qg[h], K[p][h]) * scale` and
/// `maxes[h] = max_p weights[h][p]` (from `-inf`, NaN skipped as `f32::max`
/// skips it).
#[allow(clippy::too_many_arguments)]
#[inline]
fn scores(
    qg: &[f32],
    k_cache: &[f32],
    rows: &[usize],
    at: Heads,
    scale: f32,
    weights: &mut [f32],
    maxes: &mut [f32],
    lanes: &mut Vec<[f32; 4]>,
) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if at.d.is_multiple_of(8) {
        debug_assert!(rows
            .iter()
            .all(|&r| r + at.col(qg.len() / at.d - 1) + at.d <= k_cache.len()));
        // SAFETY: the target features are enabled at compile time, and every
        // head's row lies in `k_cache` (validated block ids and KV heads).
        unsafe { avx2::scores_avx2(qg, k_cache, rows, at, scale, weights, maxes, lanes) };
        return;
    }
    let _ = lanes;
    scores_from(qg, k_cache, rows, 0, at, scale, weights, maxes);
}

/// Scores of positions `from..`, one position at a time: the generic path and
/// the remainder of the tiled one.
#[allow(clippy::too_many_arguments)]
fn scores_from(
    qg: &[f32],
    k_cache: &[f32],
    rows: &[usize],
    from: usize,
    at: Heads,
    scale: f32,
    weights: &mut [f32],
    maxes: &mut [f32],
) {
    let (n, d) = (rows.len(), at.d);
    for (p, &row) in rows.iter().enumerate().skip(from) {
        for (h, (qh, max)) in qg.chunks_exact(d).zip(maxes.iter_mut()).enumerate() {
            let off = row + at.col(h);
            let score = simd::dot(qh, &k_cache[off..off + d]) * scale;
            weights[h * n + p] = score;
            *max = max.max(score);
        }
    }
}

/// Softmax of each head's row of `weights` (`[heads, n]`, maxima `maxes`):
/// `e = exp(x - max)`, `sum` of the `e` in position order, `w = e * (1 / sum)`.
/// All exponentials come first and the sums after, three heads side by side,
/// so the sums' serial additions neither wait on nor spill around `expf` calls.
fn softmax(weights: &mut [f32], n: usize, maxes: &[f32]) {
    for (w, &max) in weights.chunks_exact_mut(n).zip(maxes) {
        for x in w.iter_mut() {
            *x = crate::expf::exp(*x - max);
        }
    }
    for heads in weights.chunks_mut(3 * n) {
        let mut sums = [0f32; 3];
        match heads.len() / n {
            1 => sums[..1].copy_from_slice(&row_sums::<1>(heads, n)),
            2 => sums[..2].copy_from_slice(&row_sums::<2>(heads, n)),
            _ => sums = row_sums::<3>(heads, n),
        }
        for (w, sum) in heads.chunks_exact_mut(n).zip(sums) {
            let inv = 1.0 / sum;
            for x in w.iter_mut() {
                *x *= inv;
            }
        }
    }
}

/// Sums of the `H` rows of `w` (`[H, n]`), each in position order.
#[inline(always)]
fn row_sums<const H: usize>(w: &[f32], n: usize) -> [f32; H] {
    let rows: [&[f32]; H] = std::array::from_fn(|h| &w[h * n..(h + 1) * n]);
    let mut sums = [0f32; H];
    for p in 0..n {
        for (sum, row) in sums.iter_mut().zip(&rows) {
            *sum += row[p];
        }
    }
    sums
}

/// `og[h] = sum_p weights[h][p] * V[p][h]`, each element accumulated by fused
/// multiply-adds in position order starting from 0.0.
#[inline]
fn weighted_sum(v_cache: &[f32], rows: &[usize], at: Heads, weights: &[f32], og: &mut [f32]) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        debug_assert!(rows
            .iter()
            .all(|&r| r + at.col(og.len() / at.d - 1) + at.d <= v_cache.len()));
        // SAFETY: as in `scores`.
        unsafe { avx2::weighted_sum_avx2(v_cache, rows, at, weights, og) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        weighted_sum_portable(v_cache, rows, at, weights, og)
    }
}

/// Portable path: the same per-element operations in the same order.
#[allow(dead_code)]
fn weighted_sum_portable(
    v_cache: &[f32],
    rows: &[usize],
    at: Heads,
    weights: &[f32],
    og: &mut [f32],
) {
    let (n, d) = (rows.len(), at.d);
    for (h, (o, w)) in og
        .chunks_exact_mut(d)
        .zip(weights.chunks_exact(n))
        .enumerate()
    {
        o.fill(0.0);
        for (&row, &wp) in rows.iter().zip(w) {
            let off = row + at.col(h);
            simd::axpy(o, wp, &v_cache[off..off + d]);
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2;

fn validate(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    layout: KvLayout,
    num_heads: usize,
    seqs: &[SeqAttention<'_>],
    out: &[f32],
) -> Result<()> {
    let width = num_heads * layout.head_dim;
    if layout.num_kv_heads == 0 || !num_heads.is_multiple_of(layout.num_kv_heads) {
        return Err(shape_err(
            "paged_attention",
            format!(
                "{num_heads} heads not a multiple of {} KV heads",
                layout.num_kv_heads
            ),
        ));
    }
    if !q.len().is_multiple_of(width) || out.len() != q.len() {
        return Err(shape_err(
            "paged_attention",
            "q/out are not [tokens, num_heads*head_dim]",
        ));
    }
    if k_cache.len() != layout.elems() || v_cache.len() != layout.elems() {
        return Err(shape_err(
            "paged_attention",
            "cache size does not match its layout",
        ));
    }
    let tokens = q.len() / width;
    for (s, seq) in seqs.iter().enumerate() {
        let blocks_needed = seq.context_len.div_ceil(layout.block_size);
        if seq.query_len == 0
            || seq.query_len > seq.context_len
            || seq.query_start + seq.query_len > tokens
            || seq.block_table.len() < blocks_needed
            || seq
                .block_table
                .iter()
                .any(|&b| b as usize >= layout.num_blocks)
        {
            return Err(shape_err(
                "paged_attention",
                format!("sequence {s} is inconsistent: {seq:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatching (SIMD, tiled) steps against the portable ones and the
    /// plain softmax loop, bit for bit, over head dims, GQA groups, KV head
    /// offsets and position counts that exercise every tile shape and tail.
    #[test]
    fn tiled_and_portable_paths_agree_bitwise() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for d in [64usize, 32, 80, 8, 24, 7, 33] {
            for (kvs, group) in [(1usize, 1usize), (1, 3), (3, 3), (2, 4), (1, 5), (1, 8)] {
                for n in [1usize, 3, 4, 5, 16, 17, 40, 129] {
                    // One more KV head than the item reads, which starts at the second.
                    let row_len = (kvs + 1) * d;
                    let pool_rows = n + 3;
                    let k: Vec<f32> = (0..pool_rows * row_len).map(|_| 3.0 * rand()).collect();
                    let v: Vec<f32> = (0..pool_rows * row_len).map(|_| rand()).collect();
                    let rows: Vec<usize> =
                        (0..n).map(|p| (p * 7 + 2) % pool_rows * row_len).collect();
                    let heads = kvs * group;
                    let q: Vec<f32> = (0..heads * d).map(|_| 3.0 * rand()).collect();
                    let at = Heads { col0: d, group, d };
                    let scale = 1.0 / (d as f32).sqrt();

                    let mut w = vec![0f32; heads * n];
                    let mut m = vec![f32::NEG_INFINITY; heads];
                    scores(&q, &k, &rows, at, scale, &mut w, &mut m, &mut Vec::new());
                    let mut w_ref = vec![0f32; heads * n];
                    let mut m_ref = vec![f32::NEG_INFINITY; heads];
                    scores_from(&q, &k, &rows, 0, at, scale, &mut w_ref, &mut m_ref);
                    assert_eq!(
                        bits(&w),
                        bits(&w_ref),
                        "scores d={d} kvs={kvs} g={group} n={n}"
                    );
                    assert_eq!(
                        bits(&m),
                        bits(&m_ref),
                        "maxes d={d} kvs={kvs} g={group} n={n}"
                    );

                    softmax(&mut w, n, &m);
                    for (row, &max) in w_ref.chunks_exact_mut(n).zip(&m_ref) {
                        let mut sum = 0f32;
                        for x in row.iter_mut() {
                            *x = crate::expf::exp(*x - max);
                            sum += *x;
                        }
                        let inv = 1.0 / sum;
                        for x in row.iter_mut() {
                            *x *= inv;
                        }
                    }
                    assert_eq!(
                        bits(&w),
                        bits(&w_ref),
                        "softmax d={d} kvs={kvs} g={group} n={n}"
                    );

                    let mut o = vec![f32::NAN; heads * d];
                    weighted_sum(&v, &rows, at, &w, &mut o);
                    let mut o_ref = vec![f32::NAN; heads * d];
                    weighted_sum_portable(&v, &rows, at, &w, &mut o_ref);
                    assert_eq!(
                        bits(&o),
                        bits(&o_ref),
                        "values d={d} kvs={kvs} g={group} n={n}"
                    );
                }
            }
        }
    }
}
