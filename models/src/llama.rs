//! The Llama-family decoder over sdlab's paged KV cache.
//!
//! One forward pass takes a *batch of sequence chunks*: for each sequence,
//! `len` new tokens starting at position `start`, whose K/V go into the slots
//! its block table names. A decode step is a chunk of one token; a prefill is
//! a chunk of many; both mix freely in one batch (continuous batching with
//! chunked prefill). Tokens are flattened into one `[tokens, hidden]` matrix,
//! so every linear layer runs once per step for the whole batch, and only
//! attention looks at sequence boundaries.
//!
//! Every operation works row by row in a fixed order, so a token's logits do
//! not depend on the batch it was computed in.

use crate::config::LlamaConfig;
use crate::kv_cache::KvCache;
use crate::lora::{LoraAdapter, Target};
use crate::weights::Linear;
use crate::{ModelError, Result};
use kernels::{paged_attention, rms_norm, write_kv, SeqAttention};
use std::sync::Arc;

/// One decoder block's weights.
#[derive(Clone)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

/// New tokens of one sequence in a batch.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// Blocks holding positions `0..start + len`.
    pub block_table: &'a [u32],
    /// Position of the first new token (tokens before it are cached).
    pub start: usize,
    /// Number of new tokens.
    pub len: usize,
    /// The LoRA adapter applied to this sequence's rows, if any.
    pub adapter: Option<&'a LoraAdapter>,
}

#[derive(Clone)]
pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Arc<Vec<f32>>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

impl Llama {
    pub fn new(
        cfg: LlamaConfig,
        embed: Arc<Vec<f32>>,
        layers: Vec<Layer>,
        norm: Vec<f32>,
        lm_head: Linear,
    ) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        if embed.len() != cfg.vocab_size * h || norm.len() != h || layers.len() != cfg.num_layers {
            return Err(ModelError::Input("weights do not match the config".into()));
        }
        if lm_head.out_features() != cfg.vocab_size || lm_head.in_features() != h {
            return Err(ModelError::Input(
                "LM head does not match the config".into(),
            ));
        }
        let (rope_cos, rope_sin) =
            kernels::rope_tables(cfg.rope_theta, cfg.head_dim, cfg.max_position_embeddings);
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            rope_cos,
            rope_sin,
        })
    }

    /// Token embeddings, `[vocab, hidden]`.
    pub fn embed(&self) -> &[f32] {
        &self.embed
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The final RMSNorm's weights.
    pub fn final_norm(&self) -> &[f32] {
        &self.norm
    }

    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// RoPE angle tables, `cos` and `sin`, each `[max_positions, head_dim / 2]`.
    pub fn rope_tables(&self) -> (&[f32], &[f32]) {
        (&self.rope_cos, &self.rope_sin)
    }

    /// Bytes of weights read per forward pass (embeddings excluded).
    pub fn weight_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .iter()
                    .map(|x| x.weight_bytes())
                    .sum::<usize>()
            })
            .sum();
        l + self.lm_head.weight_bytes()
    }

    /// Runs the batch and returns logits `[logit_rows.len(), vocab]` for the
    /// requested rows of the flattened token matrix (usually each sequence's
    /// last token; every token for perplexity).
    pub fn forward(
        &self,
        tokens: &[u32],
        seqs: &[SeqChunk<'_>],
        logit_rows: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        // The kernels fork into rayon's pool a few hundred times per forward.
        // From a thread outside the pool, each fork is a cold injection that
        // parks the caller on a lock; from inside it, a cheap join. So the
        // whole pass runs on a pool thread.
        if rayon::current_thread_index().is_none() {
            let mut out = None;
            rayon::scope(|_| out = Some(self.forward_in_pool(tokens, seqs, logit_rows, cache)));
            return out.expect("the scope ran its body");
        }
        self.forward_in_pool(tokens, seqs, logit_rows, cache)
    }

    fn forward_in_pool(
        &self,
        tokens: &[u32],
        seqs: &[SeqChunk<'_>],
        logit_rows: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (h, t) = (cfg.hidden_size, tokens.len());
        let (nh, nkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        validate_batch(&self.cfg, tokens, seqs, logit_rows, cache.block_size())?;

        let (positions, attn_seqs) = batch_layout(seqs);
        let slots: Vec<usize> = attn_seqs
            .iter()
            .flat_map(|a| {
                let start = a.context_len - a.query_len;
                (start..a.context_len).map(|p| cache.layout.slot(a.block_table, p))
            })
            .collect();

        let lora = LoraRows::new(seqs);
        let mut x = Vec::with_capacity(t * h);
        for &tok in tokens {
            x.extend_from_slice(&self.embed[tok as usize * h..(tok as usize + 1) * h]);
        }
        let scale = 1.0 / (d as f32).sqrt();
        let mut attn = vec![0f32; t * nh * d];
        for (l, layer) in self.layers.iter().enumerate() {
            let hn = rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps);
            let [mut q, mut k, mut v] =
                Linear::forward_shared([&layer.wq, &layer.wk, &layer.wv], &hn, t)?;
            lora.apply(l, Target::Q, &hn, &mut q)?;
            lora.apply(l, Target::K, &hn, &mut k)?;
            lora.apply(l, Target::V, &hn, &mut v)?;
            let (cos, sin, style) = (&self.rope_cos, &self.rope_sin, cfg.rope_style.into());
            kernels::rope(&mut q, &positions, nh, d, cos, sin, style);
            kernels::rope(&mut k, &positions, nkv, d, cos, sin, style);
            write_kv(
                &mut cache.k[l],
                &mut cache.v[l],
                cache.layout,
                &k,
                &v,
                &slots,
            )?;
            paged_attention(
                &q,
                &cache.k[l],
                &cache.v[l],
                cache.layout,
                nh,
                &attn_seqs,
                scale,
                &mut attn,
            )?;
            let mut o = layer.wo.forward(&attn, t)?;
            lora.apply(l, Target::O, &attn, &mut o)?;
            add_assign(&mut x, &o);

            let hn = rms_norm(&x, &layer.ffn_norm, cfg.rms_norm_eps);
            let [mut gate, mut up] = Linear::forward_shared([&layer.w_gate, &layer.w_up], &hn, t)?;
            lora.apply(l, Target::Gate, &hn, &mut gate)?;
            lora.apply(l, Target::Up, &hn, &mut up)?;
            kernels::silu_mul(&mut gate, &up);
            let mut down = layer.w_down.forward(&gate, t)?;
            lora.apply(l, Target::Down, &gate, &mut down)?;
            add_assign(&mut x, &down);
        }

        let mut last = Vec::with_capacity(logit_rows.len() * h);
        for &r in logit_rows {
            last.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        let last = rms_norm(&last, &self.norm, cfg.rms_norm_eps);
        self.lm_head.forward(&last, logit_rows.len())
    }

    /// Folds an adapter into the weights (`W += scale · B A`): the naive
    /// way to serve one adapter, and the reference the batched path is
    /// tested against.
    pub fn merge_lora(&mut self, adapter: &LoraAdapter) -> Result<()> {
        if adapter.num_layers() != self.layers.len() {
            return Err(ModelError::Input(format!(
                "adapter has {} layers, the model {}",
                adapter.num_layers(),
                self.layers.len()
            )));
        }
        for (l, target, m) in adapter.modules() {
            let layer = &mut self.layers[l];
            let lin = match target {
                Target::Q => &mut layer.wq,
                Target::K => &mut layer.wk,
                Target::V => &mut layer.wv,
                Target::O => &mut layer.wo,
                Target::Gate => &mut layer.w_gate,
                Target::Up => &mut layer.w_up,
                Target::Down => &mut layer.w_down,
            };
            lin.add_delta(&m.delta())?;
        }
        Ok(())
    }
}

/// Each token's position, and each sequence's attention over the pool
/// (shared with [`crate::gpu::GpuLlama`]).
pub(crate) fn batch_layout<'a>(seqs: &[SeqChunk<'a>]) -> (Vec<usize>, Vec<SeqAttention<'a>>) {
    let mut positions = Vec::with_capacity(seqs.iter().map(|s| s.len).sum());
    let mut attn_seqs = Vec::with_capacity(seqs.len());
    for s in seqs {
        attn_seqs.push(SeqAttention {
            query_start: positions.len(),
            query_len: s.len,
            context_len: s.start + s.len,
            block_table: s.block_table,
        });
        positions.extend(s.start..s.start + s.len);
    }
    (positions, attn_seqs)
}

/// Checks a batch against a model of `cfg` and a cache of `block_size`-token
/// blocks (shared with [`crate::gpu::GpuLlama`]).
pub(crate) fn validate_batch(
    cfg: &LlamaConfig,
    tokens: &[u32],
    seqs: &[SeqChunk<'_>],
    logit_rows: &[usize],
    block_size: usize,
) -> Result<()> {
    let bad = |m: String| Err(ModelError::Input(m));
    let total: usize = seqs.iter().map(|s| s.len).sum();
    if total != tokens.len() {
        return bad(format!(
            "chunks cover {total} tokens but {} were given",
            tokens.len()
        ));
    }
    if let Some(&tok) = tokens.iter().find(|&&tok| tok as usize >= cfg.vocab_size) {
        return bad(format!(
            "token id {tok} is outside the vocabulary of {}",
            cfg.vocab_size
        ));
    }
    for s in seqs {
        let end = s.start + s.len;
        if s.len == 0 || end > cfg.max_position_embeddings {
            return bad(format!(
                "chunk {}..{end} is empty or beyond the {} positions the model supports",
                s.start, cfg.max_position_embeddings
            ));
        }
        if s.block_table.len() * block_size < end {
            return bad(format!(
                "block table of {} blocks cannot hold {end} tokens",
                s.block_table.len()
            ));
        }
    }
    if let Some(a) = seqs
        .iter()
        .filter_map(|s| s.adapter)
        .find(|a| a.num_layers() != cfg.num_layers)
    {
        return bad(format!(
            "adapter has {} layers, the model {}",
            a.num_layers(),
            cfg.num_layers
        ));
    }
    if logit_rows.iter().any(|&r| r >= tokens.len()) {
        return bad("logit row outside the batch".into());
    }
    Ok(())
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Which adapter each row of the flattened batch uses: a slot per distinct
/// adapter in the batch, and per row the slot of its sequence's adapter.
struct LoraRows<'a> {
    row_slots: Vec<Option<usize>>,
    adapters: Vec<&'a LoraAdapter>,
}

impl<'a> LoraRows<'a> {
    fn new(seqs: &[SeqChunk<'a>]) -> Self {
        let mut adapters: Vec<&'a LoraAdapter> = Vec::new();
        let mut row_slots = Vec::new();
        for s in seqs {
            let slot = s.adapter.map(|a| {
                adapters
                    .iter()
                    .position(|b| std::ptr::eq(*b, a))
                    .unwrap_or_else(|| {
                        adapters.push(a);
                        adapters.len() - 1
                    })
            });
            row_slots.extend(std::iter::repeat_n(slot, s.len));
        }
        Self {
            row_slots,
            adapters,
        }
    }

    /// Adds each row's delta for `target` of `layer` to `out` (`x: [rows, k]`).
    fn apply(&self, layer: usize, target: Target, x: &[f32], out: &mut [f32]) -> Result<()> {
        if self.adapters.is_empty() {
            return Ok(());
        }
        let slots: Vec<_> = self
            .adapters
            .iter()
            .map(|a| a.module(layer, target).map(|m| m.factors()))
            .collect();
        if slots.iter().all(Option::is_none) {
            return Ok(());
        }
        let m = self.row_slots.len();
        kernels::bgmv(x, x.len() / m, &self.row_slots, &slots, out.len() / m, out)?;
        Ok(())
    }
}
