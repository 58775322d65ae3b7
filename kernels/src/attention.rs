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
//! operations, so it does not depend on what else is in the batch.

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

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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

    // Work items: (sequence, query index) pairs, one output row each.
    let mut items = Vec::with_capacity(q.len() / width);
    for (s, seq) in seqs.iter().enumerate() {
        for i in 0..seq.query_len {
            items.push((s, i));
        }
    }
    let out_ptr = crate::linear::SendPtr(out.as_mut_ptr());
    items.par_iter().for_each(|&(s, i)| {
        let seq = &seqs[s];
        let row = seq.query_start + i;
        let position = seq.context_len - seq.query_len + i;
        let out_ptr = &out_ptr;
        SCORES.with(|scores| {
            let mut scores = scores.borrow_mut();
            scores.resize(position + 1, 0.0);
            for h in 0..num_heads {
                let kvh = h / group;
                let qh = &q[row * width + h * d..row * width + (h + 1) * d];
                let mut max = f32::NEG_INFINITY;
                for (p, score) in scores.iter_mut().enumerate() {
                    let off = layout.offset(layout.slot(seq.block_table, p), kvh);
                    *score = simd::dot(qh, &k_cache[off..off + d]) * scale;
                    max = max.max(*score);
                }
                let mut sum = 0f32;
                for score in scores.iter_mut() {
                    *score = (*score - max).exp();
                    sum += *score;
                }
                let inv = 1.0 / sum;
                // SAFETY: each (row, head) output range is written by exactly one item.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.0.add(row * width + h * d), d)
                };
                o.fill(0.0);
                for (p, score) in scores.iter().enumerate() {
                    let off = layout.offset(layout.slot(seq.block_table, p), kvh);
                    simd::axpy(o, score * inv, &v_cache[off..off + d]);
                }
            }
        });
    });
    Ok(())
}

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
