//! Paged attention and the K/V scatter on the device.
//!
//! The K and V pools of a layer are f32 [`GpuTensor`]s of
//! [`KvLayout::elems`] values, laid out exactly like the CPU pools
//! (`[num_blocks, block_size, num_kv_heads, head_dim]`), so a block table
//! means the same on both sides.
//!
//! Per step, the host describes the batch once, in a [`GpuAttentionBatch`]
//! that every layer reuses: the block tables of all sequences concatenated,
//! for each query row where its table starts and its position, and for each
//! new token the slot its K/V go to (what [`GpuContext::write_kv`] reads).

use super::ops::distinct;
use super::{DType, GpuContext, GpuTensor, Result};
use crate::attention::{KvLayout, SeqAttention};

/// Largest head dimension the attention shader holds in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;

/// One step's batch description, uploaded once and read by every layer.
#[derive(Debug)]
pub struct GpuAttentionBatch {
    tables: GpuTensor,
    rows: GpuTensor,
    slots: GpuTensor,
    num_rows: usize,
    layout: KvLayout,
}

impl GpuAttentionBatch {
    /// Query rows (tokens) in the batch.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// `[rows]` u32: the slot of each new token, in row order.
    pub fn slots(&self) -> &GpuTensor {
        &self.slots
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }
}

impl GpuContext {
    /// Checks and uploads a step's sequences. Their query rows must tile
    /// `0..rows` exactly (as the model lays out a batch); each needs
    /// `1 <= query_len <= context_len` and a block table that covers
    /// `context_len` with blocks inside the pool.
    pub fn attention_batch(
        &self,
        seqs: &[SeqAttention<'_>],
        layout: KvLayout,
    ) -> Result<GpuAttentionBatch> {
        const K: &str = "gpu attention_batch";
        let num_rows: usize = seqs.iter().map(|s| s.query_len).sum();
        let mut covered = vec![false; num_rows];
        let mut tables = Vec::new();
        let mut rows = vec![0u32; 2 * num_rows];
        let mut slots = vec![0u32; num_rows];
        for (i, s) in seqs.iter().enumerate() {
            if s.query_len == 0 || s.query_len > s.context_len {
                return Err(super::shape(
                    K,
                    format!(
                        "sequence {i}: query_len {} with context_len {}",
                        s.query_len, s.context_len
                    ),
                ));
            }
            if s.block_table.len() * layout.block_size < s.context_len {
                return Err(super::shape(
                    K,
                    format!(
                        "sequence {i}: {} blocks cannot hold {} tokens",
                        s.block_table.len(),
                        s.context_len
                    ),
                ));
            }
            if let Some(b) = s
                .block_table
                .iter()
                .find(|&&b| b as usize >= layout.num_blocks)
            {
                return Err(super::shape(
                    K,
                    format!("sequence {i}: block {b} outside {}", layout.num_blocks),
                ));
            }
            if s.query_start + s.query_len > num_rows
                || covered[s.query_start..s.query_start + s.query_len]
                    .iter()
                    .any(|&c| c)
            {
                return Err(super::shape(
                    K,
                    format!("sequence {i}: rows overlap or exceed the {num_rows} rows"),
                ));
            }
            let table_start = u32::try_from(tables.len())
                .map_err(|_| super::shape(K, "block tables exceed u32"))?;
            tables.extend_from_slice(s.block_table);
            for q in 0..s.query_len {
                let row = s.query_start + q;
                let pos = s.context_len - s.query_len + q;
                covered[row] = true;
                rows[2 * row] = table_start;
                rows[2 * row + 1] = pos as u32;
                slots[row] = layout.slot(s.block_table, pos) as u32;
            }
        }
        Ok(GpuAttentionBatch {
            tables: self.upload_u32(&tables, &[tables.len()])?,
            rows: self.upload_u32(&rows, &[num_rows, 2])?,
            slots: self.upload_u32(&slots, &[num_rows])?,
            num_rows,
            layout,
        })
    }

    /// Scatters `k, v: [tokens, num_kv_heads * head_dim]` into their
    /// `slots` (`[tokens]` u32, e.g. [`GpuAttentionBatch::slots`]) of the
    /// pools. Slots outside the pool are skipped on the device; check them
    /// on the host.
    #[allow(clippy::too_many_arguments)]
    pub fn write_kv(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        layout: KvLayout,
        k: &GpuTensor,
        v: &GpuTensor,
        slots: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu write_kv";
        let row = layout.num_kv_heads * layout.head_dim;
        slots.expect(K, "slots", DType::U32, &[None])?;
        let tokens = slots.len();
        k.expect(K, "k", DType::F32, &[Some(tokens), Some(row)])?;
        v.expect(K, "v", DType::F32, &[Some(tokens), Some(row)])?;
        k_cache.expect(K, "k_cache", DType::F32, &[Some(layout.elems())])?;
        v_cache.expect(K, "v_cache", DType::F32, &[Some(layout.elems())])?;
        distinct(K, k_cache, &[k, v, slots, v_cache])?;
        distinct(K, v_cache, &[k, v, slots])?;
        if tokens == 0 || row == 0 {
            return Ok(());
        }
        let groups = self.grid(((tokens * row) as u64).div_ceil(256))?;
        let capacity = (layout.num_blocks * layout.block_size).min(u32::MAX as usize) as u32;
        self.dispatch(
            encoder,
            &self.pipelines.write_kv,
            K,
            &[tokens as u32, row as u32, capacity],
            &[
                (1, &k.buffer),
                (2, &v.buffer),
                (3, &slots.buffer),
                (4, &k_cache.buffer),
                (5, &v_cache.buffer),
            ],
            groups,
        );
        Ok(())
    }

    /// Batched paged attention, `q, out: [rows, num_heads * head_dim]`:
    /// each row attends causally over its sequence's cached K/V (written
    /// before, by [`Self::write_kv`]), query head `h` reading KV head
    /// `h / (num_heads / num_kv_heads)`. What [`crate::paged_attention`]
    /// computes, up to f32 rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        num_heads: usize,
        batch: &GpuAttentionBatch,
        scale: f32,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu paged_attention";
        let layout = batch.layout;
        let d = layout.head_dim;
        if d == 0
            || d > MAX_HEAD_DIM
            || layout.num_kv_heads == 0
            || !num_heads.is_multiple_of(layout.num_kv_heads)
        {
            return Err(super::shape(
                K,
                format!(
                    "head_dim {d} (1..={MAX_HEAD_DIM}), {num_heads} heads over {} KV heads",
                    layout.num_kv_heads
                ),
            ));
        }
        let rows = batch.num_rows;
        q.expect(K, "q", DType::F32, &[Some(rows), Some(num_heads * d)])?;
        out.expect(K, "out", DType::F32, &[Some(rows), Some(num_heads * d)])?;
        k_cache.expect(K, "k_cache", DType::F32, &[Some(layout.elems())])?;
        v_cache.expect(K, "v_cache", DType::F32, &[Some(layout.elems())])?;
        distinct(K, out, &[q, k_cache, v_cache, &batch.tables, &batch.rows])?;
        if rows == 0 {
            return Ok(());
        }
        let groups = self.grid((rows * num_heads) as u64)?;
        self.dispatch(
            encoder,
            &self.pipelines.attention,
            K,
            &[
                rows as u32,
                num_heads as u32,
                layout.num_kv_heads as u32,
                d as u32,
                layout.block_size as u32,
                scale.to_bits(),
            ],
            &[
                (1, &q.buffer),
                (2, &k_cache.buffer),
                (3, &v_cache.buffer),
                (4, &batch.tables.buffer),
                (5, &batch.rows.buffer),
                (6, &out.buffer),
            ],
            groups,
        );
        Ok(())
    }
}
