//! Training a LoRA adapter on CPU with candle's autograd.
//!
//! sdlab's decoder ([`crate::Llama`]) is written for inference: plain `f32`
//! loops over a paged KV cache, with no gradients. Training needs a second
//! forward pass that candle can differentiate, so [`LoraNet`] re-states the
//! same computation (RMSNorm, RoPE in the model's own pair layout, causal
//! grouped-query attention, SwiGLU, residuals, final norm, LM head) with
//! candle tensor ops over the *frozen* base weights (dequantized to `f32`
//! with [`crate::weights::Linear::to_dense`]) plus trainable factors `A`
//! `[r, in]` and `B` `[out, r]` for each targeted projection, whose output
//! gains `(alpha / r) · x Aᵀ Bᵀ`, exactly where [`crate::Llama::forward`]
//! adds an adapter's delta (before RoPE for q/k, before SiLU for gate/up).
//! The tests check the two forwards agree, so an adapter behaves at
//! inference as it did in training.
//!
//! Only ops with a backward pass in candle 0.11 are used (RoPE is written
//! from `narrow`/`cat`, softmax from `max`/`exp`/`sum`). Frozen projections
//! go through `FrozenLinear`, a custom op whose backward returns only the
//! input's gradient: candle's `matmul` would also compute a gradient for
//! every frozen weight matrix, half the backward pass spent on nothing.
//!
//! Factors are held in the model's row layout (GGUF's permuted q/k rows for
//! interleaved RoPE); [`LoraAdapter::save`] writes them in the HF layout.
//!
//! The recipe follows PEFT and the HF Trainer's defaults: `A` uniform in
//! `±1/sqrt(in)` (Kaiming, `a = sqrt(5)`), `B` zero, AdamW (no weight
//! decay), gradients clipped to norm 1, a short linear warm-up then cosine
//! decay to a tenth of `lr`. The loss is the mean cross-entropy over the
//! completion tokens of the batch; prompt and padding are masked out.
//! Each example is rendered as a chat request to the served model would be
//! (user message, generation prompt) followed by the completion and the
//! template's end of turn ([`render_example`]), so the adapter learns to
//! answer in the served format and to stop.

use crate::config::{LlamaConfig, RopeStyle};
use crate::llama::Llama;
use crate::loader::LoadedModel;
use crate::lora::{LoraAdapter, Target};
use crate::{ModelError, Result};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, Rng, SeedableRng};

mod data;
pub use data::{parse_jsonl, read_jsonl, render_example, tokenize_examples, Example, TrainSeq};

/// Hyper-parameters of a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub rank: usize,
    /// `lora_alpha`; the delta is scaled by `alpha / rank`.
    pub alpha: f32,
    pub targets: Vec<Target>,
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Seeds the initialisation of `A` and the order of the examples.
    pub seed: u64,
    /// Longest training sequence (prompt and completion) in tokens.
    pub max_len: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: vec![Target::Q, Target::K, Target::V, Target::O],
            steps: 100,
            batch_size: 4,
            lr: 1e-3,
            seed: 0,
            max_len: 128,
        }
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ModelError::Input(m.into()));
        if self.rank == 0 {
            return bad("the LoRA rank must be positive");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad("lora_alpha must be a positive number");
        }
        if self.targets.is_empty() {
            return bad("no LoRA target given");
        }
        if self.steps == 0 {
            return bad("the number of steps must be positive");
        }
        if self.batch_size == 0 {
            return bad("the batch size must be positive");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if self.max_len < 2 {
            return bad("max_len must be at least 2 tokens");
        }
        Ok(())
    }
}

/// What a run produced.
pub struct TrainOutcome {
    pub adapter: LoraAdapter,
    /// The loss of each step.
    pub losses: Vec<f32>,
    /// Tokens run through the model (padding excluded), all steps together.
    pub tokens: usize,
    /// Examples that fit `max_len` (the others were dropped).
    pub examples: usize,
}

/// Trains an adapter on `examples`, calling `on_step(step, loss)` after each
/// optimizer step (steps count from 1).
pub fn train(
    loaded: &LoadedModel,
    examples: &[Example],
    opts: &TrainOptions,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainOutcome> {
    opts.validate()?;
    if examples.is_empty() {
        return Err(ModelError::Input("no training example given".into()));
    }
    let cfg = &loaded.model.cfg;
    let max_len = opts.max_len.min(cfg.max_position_embeddings);
    let seqs = tokenize_examples(&loaded.tokenizer, examples, max_len)?;
    let net = LoraNet::new(&loaded.model, opts)?;
    let vars = net.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    // A different stream from the initialisation's, same seed.
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_da7a);
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    let mut next = order.len();
    let (mut losses, mut tokens) = (Vec::with_capacity(opts.steps), 0);
    for step in 0..opts.steps {
        let mut batch = Vec::with_capacity(opts.batch_size);
        while batch.len() < opts.batch_size {
            if next == order.len() {
                order.shuffle(&mut rng);
                next = 0;
            }
            batch.push(&seqs[order[next]]);
            next += 1;
        }
        opt.set_learning_rate(lr_at(opts, step));
        let loss = net.loss(&batch)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        let l = loss.to_scalar::<f32>()?;
        if !l.is_finite() {
            return Err(ModelError::Input(format!(
                "the loss became {l} at step {}: try a lower learning rate",
                step + 1
            )));
        }
        losses.push(l);
        tokens += batch.iter().map(|s| s.tokens.len()).sum::<usize>();
        on_step(step + 1, l);
    }
    Ok(TrainOutcome {
        adapter: net.to_adapter()?,
        losses,
        tokens,
        examples: seqs.len(),
    })
}

/// Linear warm-up over the first tenth (at most 20 steps), then cosine
/// decay to a tenth of the peak.
fn lr_at(opts: &TrainOptions, step: usize) -> f64 {
    let warmup = (opts.steps / 10).clamp(1, 20);
    if step < warmup {
        return opts.lr * (step + 1) as f64 / warmup as f64;
    }
    let rest = (opts.steps - warmup).max(1) as f64;
    let t = (step - warmup) as f64 / rest;
    opts.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Scales the gradients of `vars` so their joint L2 norm is at most `max`.
fn clip_grad_norm(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[Var],
    max: f64,
) -> Result<()> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm > max {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g * (max / norm))?;
                grads.insert(v.as_tensor(), g);
            }
        }
    }
    Ok(())
}

/// `y = x Wᵀ` for a frozen `W: [out, in]`; the backward pass returns only
/// `∂L/∂x = ∂L/∂y · W`.
struct FrozenLinear {
    w: Tensor,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "sdlab-frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-linear wants a contiguous input")
        };
        let x = Tensor::from_slice(
            &storage.as_slice::<f32>()?[start..end],
            layout.shape(),
            &Device::Cpu,
        )?;
        let y = x.matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), shape))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.matmul(&self.w)?))
    }
}

fn frozen(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(FrozenLinear { w: w.clone() })?)
}

struct Factors {
    a: Var,
    b: Var,
    rank: usize,
    alpha: f32,
    scale: f64,
}

struct NetLayer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// Frozen `[out, in]` weights, in [`Target`] order.
    w: [Tensor; 7],
    lora: [Option<Factors>; 7],
}

/// The decoder as a differentiable candle graph: frozen base weights and
/// trainable LoRA factors.
pub struct LoraNet {
    cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<NetLayer>,
    norm: Tensor,
    lm_head: Tensor,
    /// `[max_positions, head_dim / 2]`, as the decoder computes them.
    cos: Tensor,
    sin: Tensor,
}

fn vec_tensor(v: &[f32], shape: impl Into<Shape>) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?)
}

impl LoraNet {
    /// A fresh adapter for `opts.targets` of every layer (`A` random, `B` zero).
    pub fn new(model: &Llama, opts: &TrainOptions) -> Result<Self> {
        opts.validate()?;
        let cfg = &model.cfg;
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let mut modules = Vec::new();
        for layer in 0..cfg.num_layers {
            for &t in &opts.targets {
                let (n, k) = t.shape(cfg);
                let bound = 1.0 / (k as f32).sqrt();
                let a = (0..opts.rank * k)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                modules.push((layer, t, a, vec![0f32; n * opts.rank]));
            }
        }
        let adapter = LoraAdapter::from_modules(cfg, modules, opts.rank, opts.alpha)?;
        Self::from_adapter(model, &adapter)
    }

    /// Starts from an existing adapter (in the model's layout).
    pub fn from_adapter(model: &Llama, adapter: &LoraAdapter) -> Result<Self> {
        let cfg = model.cfg.clone();
        if adapter.num_layers() != cfg.num_layers {
            return Err(ModelError::Input(format!(
                "adapter has {} layers, the model {}",
                adapter.num_layers(),
                cfg.num_layers
            )));
        }
        let dense = |l: &crate::weights::Linear| -> Result<Tensor> {
            vec_tensor(&l.to_dense()?, (l.out_features(), l.in_features()))
        };
        let h = cfg.hidden_size;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for (i, l) in model.layers().iter().enumerate() {
            let w = [
                dense(&l.wq)?,
                dense(&l.wk)?,
                dense(&l.wv)?,
                dense(&l.wo)?,
                dense(&l.w_gate)?,
                dense(&l.w_up)?,
                dense(&l.w_down)?,
            ];
            let mut lora: [Option<Factors>; 7] = Default::default();
            for t in Target::ALL {
                if let Some(m) = adapter.module(i, t) {
                    let (n, k) = t.shape(&cfg);
                    lora[t as usize] = Some(Factors {
                        a: Var::from_slice(&m.a, (m.rank, k), &Device::Cpu)?,
                        b: Var::from_slice(&m.b, (n, m.rank), &Device::Cpu)?,
                        rank: m.rank,
                        alpha: m.alpha,
                        scale: m.scale as f64,
                    });
                }
            }
            layers.push(NetLayer {
                attn_norm: vec_tensor(&l.attn_norm, h)?,
                ffn_norm: vec_tensor(&l.ffn_norm, h)?,
                w,
                lora,
            });
        }
        let half = cfg.head_dim / 2;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..cfg.max_position_embeddings {
            for i in 0..half {
                let freq = (cfg.rope_theta as f64).powf(-2.0 * i as f64 / cfg.head_dim as f64);
                let angle = pos as f64 * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let positions = cfg.max_position_embeddings;
        Ok(Self {
            embed: vec_tensor(model.embed(), (cfg.vocab_size, h))?,
            norm: vec_tensor(model.final_norm(), h)?,
            lm_head: dense(model.lm_head())?,
            cos: vec_tensor(&cos, (positions, half))?,
            sin: vec_tensor(&sin, (positions, half))?,
            layers,
            cfg,
        })
    }

    /// The trainable factors, `A` then `B` of each module.
    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| l.lora.iter().flatten())
            .flat_map(|f| [f.a.clone(), f.b.clone()])
            .collect()
    }

    /// The current factors as an adapter (model layout).
    pub fn to_adapter(&self) -> Result<LoraAdapter> {
        let mut modules = Vec::new();
        let mut shared = None;
        for (l, layer) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                if let Some(f) = &layer.lora[t as usize] {
                    let flat = |v: &Var| -> Result<Vec<f32>> {
                        Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
                    };
                    if *shared.get_or_insert((f.rank, f.alpha)) != (f.rank, f.alpha) {
                        return Err(ModelError::Input(
                            "factors of different ranks or alphas".into(),
                        ));
                    }
                    modules.push((l, t, flat(&f.a)?, flat(&f.b)?));
                }
            }
        }
        let Some((rank, alpha)) = shared else {
            return Err(ModelError::Input("an adapter with no module".into()));
        };
        LoraAdapter::from_modules(&self.cfg, modules, rank, alpha)
    }

    /// Mean cross-entropy over the completion tokens of the batch.
    pub fn loss(&self, batch: &[&TrainSeq]) -> Result<Tensor> {
        let seqs: Vec<&[u32]> = batch.iter().map(|s| s.tokens.as_slice()).collect();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        // Row j of sequence b predicts token j + 1.
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for (b, s) in batch.iter().enumerate() {
            for j in s.prompt_len.max(1) - 1..s.tokens.len().saturating_sub(1) {
                rows.push((b * t + j) as u32);
                targets.push(s.tokens[j + 1]);
            }
        }
        if rows.is_empty() {
            return Err(ModelError::Input(
                "a batch without completion tokens".into(),
            ));
        }
        let x = self.hidden(&seqs)?;
        let x = x.index_select(&Tensor::new(rows, &Device::Cpu)?, 0)?;
        let logits = frozen(
            &rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?,
            &self.lm_head,
        )?;
        let targets = Tensor::new(targets, &Device::Cpu)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    }

    /// Logits of every position, `[batch, longest, vocab]` (sequences are
    /// right-padded; rows past a sequence's end are meaningless).
    pub fn logits(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let t = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        let x = self.hidden(batch)?;
        let x = rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?;
        Ok(frozen(&x, &self.lm_head)?.reshape((batch.len(), t, self.cfg.vocab_size))?)
    }

    /// The last hidden state before the final norm, `[batch * longest, hidden]`.
    fn hidden(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (bsz, t) = (
            batch.len(),
            batch.iter().map(|s| s.len()).max().unwrap_or(0),
        );
        if bsz == 0 || t == 0 || t > cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "a batch of {bsz} sequences of up to {t} tokens (the model supports {})",
                cfg.max_position_embeddings
            )));
        }
        let mut ids = Vec::with_capacity(bsz * t);
        for s in batch {
            if let Some(&bad) = s.iter().find(|&&x| x as usize >= cfg.vocab_size) {
                return Err(ModelError::Input(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    cfg.vocab_size
                )));
            }
            ids.extend_from_slice(s);
            // Right padding: causal attention keeps real tokens from seeing it.
            ids.extend(std::iter::repeat_n(0u32, t - s.len()));
        }
        let (nh, nkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        let mask: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e30 } else { 0.0 })
            .collect();
        let mask = vec_tensor(&mask, (t, t))?;
        let scale = 1.0 / (d as f64).sqrt();
        let mut x = self
            .embed
            .index_select(&Tensor::new(ids, &Device::Cpu)?, 0)?;
        for layer in &self.layers {
            let hn = rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps)?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor> {
                Ok(y.reshape((bsz, t, n, d))?.transpose(1, 2)?)
            };
            let q = heads(layer.proj(Target::Q, &hn)?, nh)?;
            let k = heads(layer.proj(Target::K, &hn)?, nkv)?;
            let v = heads(layer.proj(Target::V, &hn)?, nkv)?;
            let q = rope(&q, &cos, &sin, cfg.rope_style)?;
            let k = repeat_kv(rope(&k, &cos, &sin, cfg.rope_style)?, nh / nkv)?;
            let v = repeat_kv(v, nh / nkv)?;
            let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
            let p = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
            let attn = p
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((bsz * t, nh * d))?;
            x = (x + layer.proj(Target::O, &attn)?)?;

            let hn = rms_norm(&x, &layer.ffn_norm, cfg.rms_norm_eps)?;
            let gate = layer.proj(Target::Gate, &hn)?;
            let up = layer.proj(Target::Up, &hn)?;
            let act = (gate.silu()? * up)?;
            x = (x + layer.proj(Target::Down, &act)?)?;
        }
        Ok(x)
    }
}

impl NetLayer {
    /// The projection's output with its LoRA delta: `x Wᵀ + s · x Aᵀ Bᵀ`.
    fn proj(&self, target: Target, x: &Tensor) -> Result<Tensor> {
        let y = frozen(x, &self.w[target as usize])?;
        match &self.lora[target as usize] {
            None => Ok(y),
            Some(f) => {
                let delta = x.matmul(&f.a.t()?)?.matmul(&f.b.t()?)?;
                Ok((y + (delta * f.scale)?)?)
            }
        }
    }
}

/// Row-wise RMSNorm, `x / sqrt(mean(x²) + eps) * w`, as the decoder does it.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps as f64)?
        .sqrt()?
        .recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// Rotates `x: [batch, heads, t, d]` by position, pairing dimensions as the
/// model's weights expect: `(2i, 2i+1)` (GGUF) or `(i, i + d/2)` (HF).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let half = d / 2;
    let turn = |x0: &Tensor, x1: &Tensor| -> Result<(Tensor, Tensor)> {
        let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
        let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
        Ok((r0, r1))
    };
    match style {
        RopeStyle::Halves => {
            let (r0, r1) = turn(&x.narrow(3, 0, half)?, &x.narrow(3, half, half)?)?;
            Ok(Tensor::cat(&[r0, r1], 3)?)
        }
        RopeStyle::Interleaved => {
            let pairs = x.reshape((b, h, t, half, 2))?;
            let (x0, x1) = (
                pairs.narrow(4, 0, 1)?.squeeze(4)?,
                pairs.narrow(4, 1, 1)?.squeeze(4)?,
            );
            let (r0, r1) = turn(&x0, &x1)?;
            Ok(Tensor::stack(&[r0, r1], 4)?.reshape((b, h, t, d))?)
        }
    }
}

/// `[b, kv_heads, t, d]` to `[b, kv_heads * rep, t, d]`, each KV head shared
/// by `rep` consecutive query heads.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, h, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, h, rep, t, d))?
        .contiguous()?
        .reshape((b, h * rep, t, d))?)
}
