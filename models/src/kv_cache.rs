//! The paged KV cache: per layer, one pool of K blocks and one of V blocks.
//!
//! Which blocks belong to which sequence is the engine's business (its block
//! manager hands out block ids); the model only reads and writes slots
//! through block tables. Capacity is set in megabytes, like vLLM's
//! `gpu_memory_utilization` but explicit.

use crate::config::LlamaConfig;
use kernels::KvLayout;

pub struct KvCache {
    pub layout: KvLayout,
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
}

impl KvCache {
    /// The pool layout of a cache of `num_blocks` blocks of `block_size`
    /// tokens for `cfg` (shared with [`crate::gpu::GpuLlama`]'s pools).
    pub fn new_layout(cfg: &LlamaConfig, num_blocks: usize, block_size: usize) -> KvLayout {
        KvLayout {
            num_blocks,
            block_size,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        }
    }

    pub fn new(cfg: &LlamaConfig, num_blocks: usize, block_size: usize) -> Self {
        let layout = Self::new_layout(cfg, num_blocks, block_size);
        let pool = || {
            (0..cfg.num_layers)
                .map(|_| vec![0f32; layout.elems()])
                .collect()
        };
        Self {
            layout,
            k: pool(),
            v: pool(),
        }
    }

    /// How many blocks of `block_size` tokens fit in `megabytes` of cache.
    pub fn blocks_for_mb(cfg: &LlamaConfig, megabytes: usize, block_size: usize) -> usize {
        megabytes * 1024 * 1024 / (cfg.kv_bytes_per_token() * block_size)
    }

    pub fn num_blocks(&self) -> usize {
        self.layout.num_blocks
    }
    pub fn block_size(&self) -> usize {
        self.layout.block_size
    }
    /// Token capacity.
    pub fn capacity_tokens(&self) -> usize {
        self.layout.num_blocks * self.layout.block_size
    }
}
