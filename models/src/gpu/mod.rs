//! The decoder on the GPU: [`Llama::forward`]'s batch of sequence chunks,
//! run by the WGSL kernels of [`kernels::gpu`].
//!
//! What lives on the device, uploaded once by [`GpuLlama::new`]: every
//! weight (Q4_1 and Q8_0 in their blocks, the rest as f32; see
//! `weights.rs`), the RoPE tables, and a K and a V block pool per layer
//! with the same layout and number of blocks as a [`KvCache`], so the
//! engine's block tables mean the same thing on either device.
//!
//! What crosses the bus per step: up, the token ids, their positions, the
//! block tables with each row's table offset and KV slot, the logits rows'
//! indices (and, as every kernel call does, a few bytes of sizes in a
//! uniform buffer per dispatch); down, only the requested logits rows. The
//! whole pass (embedding, every layer, the final norm and the LM head) is
//! recorded into one command encoder and submitted once.
//!
//! Activations stay `[tokens, width]` f32 tensors on the device. The
//! scratch tensors for a batch of `t` tokens and `r` logits rows are kept
//! and reused while the next step has the same shape (decode steps usually
//! do); a new shape allocates new ones, which the device zero-fills itself.
//!
//! LoRA: sequences under adapters run in the same step as the others; after
//! each projection one BGMV dispatch adds every row's own adapter delta
//! (the adapters' factors stay on the device, see `adapters.rs`). A step
//! with adapters also sends the row → adapter slot map up.
//!
//! Numerics: every kernel but the f32 matmul performs the CPU decoder's
//! operations in the CPU's order: the sums of squares, attention's dot
//! products, softmax and weighted sum, activation quantization and the
//! quantized matmuls, with multiply-adds rounded once (emulated where the
//! device's `fma` rounds twice) and the CPU's own `exp`
//! ([`kernels::expf`]). So on quantized weights (a GGUF model's default)
//! the logits are the CPU's bits, and greedy tokens equal the CPU's for as
//! long as one decodes; on lavapipe this is tested, on a real GPU it holds
//! unless its compiler or division departs from IEEE rounding (the
//! multiply-add probe in [`GpuContext`] checks one of those). The f32
//! matmul keeps its tile order, so on f32 weights logits agree within
//! rounding (1e-5 on SmolLM2) and greedy tokens matched on every prompt
//! tried. Every kernel computes each row independently of the others, so a
//! sequence's logits do not depend on the batch it runs in.

mod adapters;
mod weights;

pub use adapters::MAX_RESIDENT;

use crate::kv_cache::KvCache;
use crate::llama::{batch_layout, validate_batch, Llama, SeqChunk};
use crate::lora::Target;
use crate::{LlamaConfig, ModelError, Result};
use adapters::GpuAdapters;
use kernels::attention::KvLayout;
/// The device layer, re-exported so callers of this module need no direct
/// dependency on `kernels`.
pub use kernels::gpu::{or_skip, AdapterSummary, GpuContext};
use kernels::gpu::{DType, GpuError, GpuTensor};
use std::sync::Arc;
use weights::{project, GpuWeight};

impl From<GpuError> for ModelError {
    fn from(e: GpuError) -> Self {
        ModelError::Gpu(e.to_string())
    }
}

struct GpuLayer {
    attn_norm: GpuTensor,
    wq: GpuWeight,
    wk: GpuWeight,
    wv: GpuWeight,
    wo: GpuWeight,
    ffn_norm: GpuTensor,
    w_gate: GpuWeight,
    w_up: GpuWeight,
    w_down: GpuWeight,
}

/// Activations for one batch shape: `t` tokens, `r` logits rows.
struct Scratch {
    t: usize,
    r: usize,
    x: GpuTensor,
    hn: GpuTensor,
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    attn: GpuTensor,
    o: GpuTensor,
    gate: GpuTensor,
    up: GpuTensor,
    act: GpuTensor,
    last: GpuTensor,
    last_n: GpuTensor,
    logits: GpuTensor,
    /// Quantized activations, by row count and width (for quantized
    /// weights only).
    xq: Vec<((usize, usize), GpuTensor)>,
}

impl Scratch {
    fn xq(&self, rows: usize, k: usize) -> Option<&GpuTensor> {
        self.xq
            .iter()
            .find(|(s, _)| *s == (rows, k))
            .map(|(_, t)| t)
    }
}

/// A [`Llama`]'s weights and KV pools on the device, and its forward pass.
pub struct GpuLlama {
    ctx: Arc<GpuContext>,
    cfg: LlamaConfig,
    embed: GpuTensor,
    /// `None`: the LM head is the embedding (tied, same f32 values).
    lm_head: Option<GpuWeight>,
    /// Whether any projection runs the quantized kernels.
    quantized: bool,
    layers: Vec<GpuLayer>,
    norm: GpuTensor,
    rope_cos: GpuTensor,
    rope_sin: GpuTensor,
    rope_style: kernels::RopeStyle,
    layout: KvLayout,
    k_pools: Vec<GpuTensor>,
    v_pools: Vec<GpuTensor>,
    scratch: Option<Scratch>,
    adapters: GpuAdapters,
}

impl GpuLlama {
    /// Uploads `model`'s weights and allocates KV pools of `num_blocks`
    /// blocks of `block_size` tokens (the layout of [`KvCache::new`]).
    pub fn new(
        ctx: Arc<GpuContext>,
        model: &Llama,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self> {
        let cfg = model.cfg.clone();
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        if !d.is_multiple_of(2) || d > kernels::gpu::MAX_HEAD_DIM {
            return Err(ModelError::Gpu(format!(
                "head_dim {d}: the GPU attention kernel takes even sizes up to {}",
                kernels::gpu::MAX_HEAD_DIM
            )));
        }
        let linear = |l| GpuWeight::upload(&ctx, l);
        let vector = |v: &[f32]| -> Result<GpuTensor> { Ok(ctx.upload_f32(v, &[v.len()])?) };
        let embed = ctx.upload_f32(model.embed(), &[cfg.vocab_size, h])?;
        // An f32 head equal to the embedding (tied) shares its tensor; a
        // quantized one (SmolLM2's Q8_0) keeps its blocks, as on the CPU.
        let head = model.lm_head();
        let lm_head = if matches!(head, crate::weights::Linear::Dense { .. })
            && head.out_features() == cfg.vocab_size
            && head.in_features() == h
            && head.to_dense()? == model.embed()
        {
            None
        } else {
            Some(linear(head)?)
        };
        let layers = model
            .layers()
            .iter()
            .map(|l| {
                Ok(GpuLayer {
                    attn_norm: vector(&l.attn_norm)?,
                    wq: linear(&l.wq)?,
                    wk: linear(&l.wk)?,
                    wv: linear(&l.wv)?,
                    wo: linear(&l.wo)?,
                    ffn_norm: vector(&l.ffn_norm)?,
                    w_gate: linear(&l.w_gate)?,
                    w_up: linear(&l.w_up)?,
                    w_down: linear(&l.w_down)?,
                })
            })
            .collect::<Result<Vec<GpuLayer>>>()?;
        let quantized = lm_head.as_ref().is_some_and(GpuWeight::is_quantized)
            || layers.iter().any(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .iter()
                    .any(|w| w.is_quantized())
            });
        let (cos, sin) = model.rope_tables();
        let table = [cfg.max_position_embeddings, d / 2];
        let layout = KvCache::new_layout(&cfg, num_blocks, block_size);
        let pool = || -> Result<Vec<GpuTensor>> {
            (0..cfg.num_layers)
                .map(|_| Ok(ctx.zeros(&[layout.elems()], DType::F32)?))
                .collect()
        };
        Ok(Self {
            norm: vector(model.final_norm())?,
            rope_cos: ctx.upload_f32(cos, &table)?,
            rope_sin: ctx.upload_f32(sin, &table)?,
            rope_style: cfg.rope_style.into(),
            k_pools: pool()?,
            v_pools: pool()?,
            layout,
            embed,
            lm_head,
            quantized,
            layers,
            cfg,
            ctx,
            scratch: None,
            adapters: GpuAdapters::default(),
        })
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn cfg(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The KV pools' layout (blocks, block size, KV heads, head size).
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Adapters whose factors are on the device now, and how many times
    /// the stacks were uploaded (once per change of the residents).
    pub fn lora_residency(&self) -> (usize, u64) {
        (self.adapters.resident(), self.adapters.uploads())
    }

    /// Bytes of weights on the device (embedding, projections, head, norms
    /// and RoPE tables; not the KV pools or scratch).
    pub fn weight_bytes(&self) -> u64 {
        let projections: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .map(GpuWeight::bytes)
            .sum();
        let vectors: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.attn_norm, &l.ffn_norm])
            .chain([&self.norm, &self.rope_cos, &self.rope_sin, &self.embed])
            .map(GpuTensor::bytes)
            .sum();
        projections + vectors + self.lm_head.as_ref().map_or(0, GpuWeight::bytes)
    }

    /// Whether the LM head shares the embedding's device tensor.
    pub fn lm_head_is_tied(&self) -> bool {
        self.lm_head.is_none()
    }

    /// What [`Llama::forward`] computes, on the device: runs the batch,
    /// writes its K/V into the pools, and returns logits
    /// `[logit_rows.len(), vocab]` for the requested rows of the flattened
    /// token matrix. The batch is checked as the CPU decoder checks it,
    /// and a block outside the pools is refused, before anything is recorded.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        seqs: &[SeqChunk<'_>],
        logit_rows: &[usize],
    ) -> Result<Vec<f32>> {
        validate_batch(&self.cfg, tokens, seqs, logit_rows, self.layout.block_size)?;
        let (t, r) = (tokens.len(), logit_rows.len());
        let vocab = self.cfg.vocab_size;
        if t == 0 {
            return Ok(Vec::new());
        }
        let ctx = Arc::clone(&self.ctx);
        let (positions, attn_seqs) = batch_layout(seqs);
        let positions: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        // Up the bus: ids, positions, tables/rows/slots, logits row indices.
        let batch = ctx.attention_batch(&attn_seqs, self.layout)?;
        let ids = ctx.upload_u32(tokens, &[t])?;
        let pos = ctx.upload_u32(&positions, &[t])?;
        let rows: Vec<u32> = logit_rows.iter().map(|&i| i as u32).collect();
        let rows = ctx.upload_u32(&rows, &[r])?;
        let lora_rows = self.adapters.prepare(&ctx, &self.cfg, seqs)?;
        self.ensure_scratch(t, r)?;
        let s = self.scratch.as_ref().expect("just ensured");

        let cfg = &self.cfg;
        let (nh, nkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let h = cfg.hidden_size;
        let (eps, scale) = (cfg.rms_norm_eps, 1.0 / (d as f32).sqrt());
        let adapters = &self.adapters;
        // `out += delta` of each row's adapter for `target`, if any.
        let lora = |e: &mut _, l: usize, target: Target, x: &GpuTensor, out: &GpuTensor| match (
            &lora_rows,
            adapters.stack(l, target),
        ) {
            (Some(rows), Some(stack)) => ctx.bgmv(e, x, rows, stack, out),
            _ => Ok(()),
        };
        let mut enc = ctx.encoder();
        let e = &mut enc;
        ctx.embedding(e, &self.embed, &ids, &s.x)?;
        for (l, w) in self.layers.iter().enumerate() {
            let (kc, vc) = (&self.k_pools[l], &self.v_pools[l]);
            ctx.rms_norm(e, &s.x, &w.attn_norm, eps, &s.hn)?;
            let qkv = [(&w.wq, &s.q), (&w.wk, &s.k), (&w.wv, &s.v)];
            project(&ctx, e, &s.hn, s.xq(t, h), &qkv)?;
            lora(e, l, Target::Q, &s.hn, &s.q)?;
            lora(e, l, Target::K, &s.hn, &s.k)?;
            lora(e, l, Target::V, &s.hn, &s.v)?;
            let style = self.rope_style;
            ctx.rope(e, &s.q, &pos, &self.rope_cos, &self.rope_sin, nh, style)?;
            ctx.rope(e, &s.k, &pos, &self.rope_cos, &self.rope_sin, nkv, style)?;
            ctx.write_kv(e, kc, vc, self.layout, &s.k, &s.v, batch.slots())?;
            ctx.paged_attention(e, &s.q, kc, vc, nh, &batch, scale, &s.attn)?;
            project(&ctx, e, &s.attn, s.xq(t, nh * d), &[(&w.wo, &s.o)])?;
            lora(e, l, Target::O, &s.attn, &s.o)?;
            ctx.add(e, &s.x, &s.o)?;
            ctx.rms_norm(e, &s.x, &w.ffn_norm, eps, &s.hn)?;
            let gate_up = [(&w.w_gate, &s.gate), (&w.w_up, &s.up)];
            project(&ctx, e, &s.hn, s.xq(t, h), &gate_up)?;
            lora(e, l, Target::Gate, &s.hn, &s.gate)?;
            lora(e, l, Target::Up, &s.hn, &s.up)?;
            ctx.silu_mul(e, &s.gate, &s.up, &s.act)?;
            let f = cfg.intermediate_size;
            project(&ctx, e, &s.act, s.xq(t, f), &[(&w.w_down, &s.o)])?;
            lora(e, l, Target::Down, &s.act, &s.o)?;
            ctx.add(e, &s.x, &s.o)?;
        }
        if r == 0 {
            // A mid-prompt chunk: its K/V are written, no logits are read.
            ctx.submit(enc);
            return Ok(Vec::new());
        }
        // Only the requested rows go through the final norm and the head:
        // the embedding kernel is a row gather, `last[i] = x[rows[i]]`.
        ctx.embedding(e, &s.x, &rows, &s.last)?;
        ctx.rms_norm(e, &s.last, &self.norm, eps, &s.last_n)?;
        match &self.lm_head {
            Some(head) => project(&ctx, e, &s.last_n, s.xq(r, h), &[(head, &s.logits)])?,
            None => ctx.matmul(e, &s.last_n, &self.embed, &s.logits)?,
        }
        // Down the bus: the logits rows only.
        let logits = ctx.finish_and_read_f32(enc, &s.logits)?;
        debug_assert_eq!(logits.len(), r * vocab);
        Ok(logits)
    }

    /// Keeps the scratch of the last shape, or allocates one for `t` tokens
    /// and `r` logits rows.
    fn ensure_scratch(&mut self, t: usize, r: usize) -> Result<()> {
        if self.scratch.as_ref().is_some_and(|s| s.t == t && s.r == r) {
            return Ok(());
        }
        self.scratch = None;
        let cfg = &self.cfg;
        let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (q, kv) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        let z = |shape: &[usize]| self.ctx.zeros(shape, DType::F32);
        let mut xq = Vec::new();
        if self.quantized {
            for (rows, k) in [(t, h), (t, q), (t, f), (r, h)] {
                if !xq.iter().any(|(s, _)| *s == (rows, k)) {
                    xq.push(((rows, k), self.ctx.quantized_rows(rows, k)?));
                }
            }
        }
        self.scratch = Some(Scratch {
            t,
            r,
            x: z(&[t, h])?,
            hn: z(&[t, h])?,
            q: z(&[t, q])?,
            k: z(&[t, kv])?,
            v: z(&[t, kv])?,
            attn: z(&[t, q])?,
            o: z(&[t, h])?,
            gate: z(&[t, f])?,
            up: z(&[t, f])?,
            act: z(&[t, f])?,
            last: z(&[r, h])?,
            last_n: z(&[r, h])?,
            logits: z(&[r, v])?,
            xq,
        });
        Ok(())
    }
}
