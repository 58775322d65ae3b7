//! A BERT encoder over *packed* sequences, for sentence embeddings on CPU.
//!
//! What: the same network as candle-transformers' `BertModel` (post-norm
//! BERT: embeddings + LayerNorm, then per layer self-attention, residual +
//! LayerNorm, GELU feed-forward, residual + LayerNorm), fused with mean
//! pooling. The tokens of all texts in a batch are concatenated into one
//! `[tokens, hidden]` matrix with no padding at all; only attention looks at
//! sequence boundaries, and each query attends to the keys of its own text.
//!
//! Why (numbers in `docs/BENCHMARKS.md`, "Embedding throughput": 2.6x
//! candle's BERT at batch 32, 1.2x sentence-transformers): on two cores
//! candle's BERT spent
//! about a sixth of its time in `gelu_erf` (libm `erff` per element), a tenth
//! in the generic four-pass softmax over padded keys, and more in separate
//! bias-add passes. Here:
//! - the linear layers run on one GEMM per projection (Q, K and V fused into
//!   one `[3 * hidden, hidden]` weight), with bias (and GELU) applied in the
//!   same pass over the output;
//! - GELU uses the exact-erf form with Eigen's/XLA's rational `erf`
//!   approximation (absolute error below 2e-7), which vectorizes;
//! - attention touches only real tokens, so there is no mask, and padding
//!   costs nothing, which also makes a text's vector independent of what it
//!   is batched with;
//! - the small attention products (per text and head) run on
//!   `kernels::linear`'s register-tiled dot products.

use crate::{ModelError, Result};
use candle_core::{DType, Device, Storage, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;
use std::collections::HashMap;

/// Rows per rayon task in the element-wise passes.
const ROWS_PER_TASK: usize = 16;

pub(crate) struct PackedBert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    act: HiddenAct,
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// `y = x W^T + b` with `W: [n, k]` on candle's GEMM (the `gemm` crate's
/// packed, cache-blocked kernels; at every batch size measured, one text
/// included, faster here than `kernels::linear`).
struct Dense {
    w: Tensor,
    b: Vec<f32>,
    n: usize,
    k: usize,
}

/// What to apply to each output element after the bias.
#[derive(Clone, Copy)]
enum Epilogue {
    Bias,
    BiasAct(HiddenAct),
}

/// Named tensors of a checkpoint, with the `bert.` prefix resolved.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .get(&full)
            .ok_or_else(|| ModelError::MissingTensor(full.clone()))?;
        if t.dims() != shape {
            return Err(ModelError::Input(format!(
                "tensor `{full}` has shape {:?}, want {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn dense(&self, name: &str, n: usize, k: usize) -> Result<Dense> {
        let w = self.get(&format!("{name}.weight"), &[n, k])?;
        let b = self.get(&format!("{name}.bias"), &[n])?;
        Dense::new(w, b, n, k)
    }

    fn norm(&self, name: &str, n: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[n])?,
            bias: self.get(&format!("{name}.bias"), &[n])?,
            eps: eps as f32,
        })
    }
}

impl PackedBert {
    /// Builds the encoder from a checkpoint's tensors (names with or without
    /// the `bert.` prefix).
    pub(crate) fn load(tensors: &HashMap<String, Tensor>, cfg: &Config) -> Result<Self> {
        let prefix = if tensors.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else {
            "bert."
        };
        let w = Weights { tensors, prefix };
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let token_type = w.get(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                let q = w.dense(&format!("{p}.attention.self.query"), h, h)?;
                let k = w.dense(&format!("{p}.attention.self.key"), h, h)?;
                let v = w.dense(&format!("{p}.attention.self.value"), h, h)?;
                Ok(Layer {
                    qkv: Dense::concat(&[q, k, v])?,
                    attn_out: w.dense(&format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                    up: w.dense(&format!("{p}.intermediate.dense"), i, h)?,
                    down: w.dense(&format!("{p}.output.dense"), h, i)?,
                    out_norm: w.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type0: token_type[..h].to_vec(),
            embed_norm: w.norm("embeddings.LayerNorm", h, eps)?,
            layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    /// Mean-pooled last hidden states, one (unnormalized) vector per
    /// sequence. Ids must be in the vocabulary and sequences no longer than
    /// the position table (the caller checks both).
    pub(crate) fn pooled(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let rows: usize = lens.iter().sum();
        if rows == 0 {
            return Ok(vec![vec![0.0; h]; seqs.len()]);
        }
        let mut x = vec![0f32; rows * h];
        let tokens: Vec<(u32, usize)> = seqs
            .iter()
            .flat_map(|s| s.iter().enumerate().map(|(p, &id)| (id, p)))
            .collect();
        x.par_chunks_mut(h)
            .with_min_len(ROWS_PER_TASK)
            .zip(&tokens)
            .for_each(|(row, &(id, pos))| {
                let word = &self.word[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                for (j, y) in row.iter_mut().enumerate() {
                    *y = word[j] + position[j] + self.token_type0[j];
                }
                self.embed_norm.apply(row);
            });
        for layer in &self.layers {
            x = layer.forward(&x, &lens, self.heads, self.act)?;
        }
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for &len in &lens {
            let mut sum = vec![0f32; h];
            for row in x[start * h..(start + len) * h].chunks_exact(h) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            let inv = 1.0 / (len.max(1) as f32);
            sum.iter_mut().for_each(|s| *s *= inv);
            out.push(sum);
            start += len;
        }
        Ok(out)
    }
}

impl Layer {
    fn forward(&self, x: &[f32], lens: &[usize], heads: usize, act: HiddenAct) -> Result<Vec<f32>> {
        let rows = x.len() / self.attn_norm.weight.len();
        let qkv = self.qkv.forward(Act::Borrowed(x), rows, Epilogue::Bias)?;
        let ctx = attention(&qkv, lens, heads, self.attn_out.k);
        drop(qkv);
        let mut a = self
            .attn_out
            .forward(Act::Owned(ctx), rows, Epilogue::Bias)?;
        self.attn_norm.add_apply(&mut a, x);
        let up = self
            .up
            .forward(Act::Borrowed(&a), rows, Epilogue::BiasAct(act))?;
        let mut out = self.down.forward(Act::Owned(up), rows, Epilogue::Bias)?;
        self.out_norm.add_apply(&mut out, &a);
        Ok(out)
    }
}

impl Dense {
    fn new(w: Vec<f32>, b: Vec<f32>, n: usize, k: usize) -> Result<Self> {
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu)?;
        Ok(Self { w, b, n, k })
    }

    /// Stacks the output rows of layers with the same input size.
    fn concat(parts: &[Dense]) -> Result<Self> {
        let k = parts.first().map_or(0, |p| p.k);
        let n = parts.iter().map(|p| p.n).sum();
        let ws: Vec<&Tensor> = parts.iter().map(|p| &p.w).collect();
        let w = Tensor::cat(&ws, 0)?;
        let b: Vec<f32> = parts.iter().flat_map(|p| p.b.iter().copied()).collect();
        Ok(Self { w, b, n, k })
    }

    /// `x` is `[rows, k]`; an owned `x` moves into candle without a copy.
    fn forward(&self, x: Act<'_>, rows: usize, epi: Epilogue) -> Result<Vec<f32>> {
        let xt = match x {
            Act::Owned(v) => Tensor::from_vec(v, (rows, self.k), &Device::Cpu)?,
            Act::Borrowed(v) => Tensor::from_slice(v, (rows, self.k), &Device::Cpu)?,
        };
        let out = xt.matmul(&self.w.t()?)?;
        let (storage, layout) = out.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(ModelError::Input(
                "the packed BERT encoder runs on CPU only".into(),
            ));
        };
        let mut y = cpu.as_slice::<f32>()?[layout.start_offset()..][..rows * self.n].to_vec();
        drop(storage);
        y.par_chunks_mut(self.n)
            .with_min_len(ROWS_PER_TASK)
            .for_each(|row| {
                row.iter_mut().zip(&self.b).for_each(|(v, b)| *v += b);
                if let Epilogue::BiasAct(act) = epi {
                    activate(row, act);
                }
            });
        Ok(y)
    }
}

/// A layer input: borrowed when the caller still needs it (for a residual),
/// owned when it can be handed over.
enum Act<'a> {
    Owned(Vec<f32>),
    Borrowed(&'a [f32]),
}

impl Norm {
    /// LayerNorm of one row, in place.
    fn apply(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }

    /// `y = LayerNorm(y + residual)`, row by row.
    fn add_apply(&self, y: &mut [f32], residual: &[f32]) {
        let h = self.weight.len();
        y.par_chunks_mut(h)
            .with_min_len(ROWS_PER_TASK)
            .zip(residual.par_chunks(h))
            .for_each(|(row, res)| {
                row.iter_mut().zip(res).for_each(|(v, r)| *v += r);
                self.apply(row);
            });
    }
}

/// Self-attention of each sequence over its own tokens. `qkv` is
/// `[rows, 3 * hidden]` (Q, K, V side by side, heads contiguous inside
/// each); returns the context `[rows, hidden]`.
fn attention(qkv: &[f32], lens: &[usize], heads: usize, hidden: usize) -> Vec<f32> {
    let d = hidden / heads;
    let mut starts = Vec::with_capacity(lens.len());
    let mut total = 0;
    for &len in lens {
        starts.push(total);
        total += len;
    }
    let tasks: Vec<(usize, usize)> = (0..lens.len())
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let outs: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(s, h)| {
            let rows = &qkv[starts[s] * 3 * hidden..][..lens[s] * 3 * hidden];
            attend_head(rows, lens[s], hidden, h * d, d)
        })
        .collect();
    let mut ctx = vec![0f32; total * hidden];
    for (&(s, h), out) in tasks.iter().zip(&outs) {
        for (i, o) in out.chunks_exact(d).enumerate() {
            ctx[(starts[s] + i) * hidden + h * d..][..d].copy_from_slice(o);
        }
    }
    ctx
}

/// One head of one sequence: `softmax(q k^T / sqrt d) v` for each of its
/// `len` queries, as `[len, d]`. Q, K and V^T are gathered contiguous so both
/// products run on `kernels::linear`'s register-tiled dot products.
fn attend_head(rows: &[f32], len: usize, hidden: usize, off: usize, d: usize) -> Vec<f32> {
    let width = 3 * hidden;
    let scale = 1.0 / (d as f32).sqrt();
    let mut q = Vec::with_capacity(len * d);
    let mut k = Vec::with_capacity(len * d);
    let mut vt = vec![0f32; d * len];
    for (t, row) in rows.chunks_exact(width).enumerate() {
        q.extend(row[off..][..d].iter().map(|x| x * scale));
        k.extend_from_slice(&row[hidden + off..][..d]);
        for (c, v) in row[2 * hidden + off..][..d].iter().enumerate() {
            vt[c * len + t] = *v;
        }
    }
    let mut p = vec![0f32; len * len];
    let mut out = vec![0f32; len * d];
    // The shapes are consistent by construction, so these cannot fail.
    if kernels::linear(&q, &k, len, d, len, &mut p).is_err() {
        return out;
    }
    for row in p.chunks_exact_mut(len) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let inv = 1.0 / row.iter().sum::<f32>();
        row.iter_mut().for_each(|x| *x *= inv);
    }
    let _ = kernels::linear(&p, &vt, len, len, d, &mut out);
    out
}

/// Cephes' single-precision `exp` (relative error about 2e-7), branch-free
/// so the softmax loop vectorizes. Inputs below -87.3 give about 1e-38.
#[inline]
#[allow(clippy::excessive_precision)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = n.mul_add(-0.693_359_375, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = r.mul_add(1.9875691500e-4, 1.3981999507e-3);
    p = p.mul_add(r, 8.3334519073e-3);
    p = p.mul_add(r, 4.1665795894e-2);
    p = p.mul_add(r, 1.6666665459e-1);
    p = p.mul_add(r, 5.0000001201e-1);
    let y = (p * r).mul_add(r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

fn activate(row: &mut [f32], act: HiddenAct) {
    match act {
        HiddenAct::Gelu => row.iter_mut().for_each(|v| *v = gelu_erf(*v)),
        HiddenAct::GeluApproximate => row.iter_mut().for_each(|v| {
            let x = *v;
            *v = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
        }),
        HiddenAct::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// `0.5 x (1 + erf(x / sqrt 2))`, the exact GELU BERT was trained with.
#[inline]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Eigen's and XLA's single-precision `erf`: `x p(x^2) / q(x^2)` on
/// `[-4, 4]` (outside, erf is +-1 in f32), absolute error below 2e-7.
/// Branch-free, so the GELU loop vectorizes.
#[inline]
#[allow(clippy::excessive_precision)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.72614225801306e-10, 2.77068142495902e-08);
    p = x2.mul_add(p, -2.10102402082508e-06);
    p = x2.mul_add(p, -5.69250639462346e-05);
    p = x2.mul_add(p, -7.34990630326855e-04);
    p = x2.mul_add(p, -2.95459980854025e-03);
    p = x2.mul_add(p, -1.60960333262415e-02);
    let mut q = x2.mul_add(-1.45660718464996e-05, -2.13374055278905e-04);
    q = x2.mul_add(q, -1.68282697438203e-03);
    q = x2.mul_add(q, -7.37332916720468e-03);
    q = x2.mul_add(q, -1.42647390514189e-02);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges fast on |x| <= 4).
    fn erf_ref(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-18 * sum.abs().max(1e-300) && n < 200.0 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0f64;
        for i in -5000..=5000 {
            let x = i as f64 / 1000.0;
            let want = if x.abs() > 4.0 {
                x.signum()
            } else {
                erf_ref(x)
            };
            worst = worst.max((erf(x as f32) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst}");
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 5e-7, "max relative exp error {worst}");
    }

    #[test]
    fn attention_matches_a_naive_softmax_per_sequence() {
        let (hidden, heads, lens) = (8usize, 2usize, [3usize, 5]);
        let d = hidden / heads;
        let rows: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..rows * 3 * hidden)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let got = attention(&qkv, &lens, heads, hidden);
        let at = |t: usize, c: usize| qkv[t * 3 * hidden + c] as f64;
        let mut start = 0;
        for len in lens {
            for h in 0..heads {
                for i in 0..len {
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            (0..d)
                                .map(|c| {
                                    at(start + i, h * d + c) * at(start + j, hidden + h * d + c)
                                })
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                    for c in 0..d {
                        let want: f64 = (0..len)
                            .map(|j| (s[j] - max).exp() / z * at(start + j, 2 * hidden + h * d + c))
                            .sum();
                        let g = got[(start + i) * hidden + h * d + c] as f64;
                        assert!(
                            (g - want).abs() < 1e-5,
                            "seq at {start}, head {h}, query {i}: {g} vs {want}"
                        );
                    }
                }
            }
            start += len;
        }
    }

    #[test]
    fn attention_of_one_token_is_its_value() {
        // hidden 4, 2 heads: with one token, softmax is 1 and ctx = v.
        let qkv: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(attention(&qkv, &[1], 2, 4), vec![8.0, 9.0, 10.0, 11.0]);
    }
}
