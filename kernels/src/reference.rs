//! Naive references for every kernel: obvious loops, f64 accumulation,
//! contiguous copies instead of block tables. Slow on purpose; the property
//! tests check the fast kernels against these.

use crate::attention::{KvLayout, SeqAttention};

/// `out = x · wᵀ`, accumulated in f64.
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let s: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                .sum();
            out[r * n + c] = s as f32;
        }
    }
    out
}

/// Attention for each sequence by first copying its K/V out of the pool into
/// contiguous `[context_len, num_kv_heads, head_dim]` arrays.
pub fn paged_attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    layout: KvLayout,
    num_heads: usize,
    seqs: &[SeqAttention<'_>],
    scale: f32,
) -> Vec<f32> {
    let d = layout.head_dim;
    let width = num_heads * d;
    let kv_row = layout.num_kv_heads * d;
    let mut out = vec![0f32; q.len()];
    for seq in seqs {
        let gather = |cache: &[f32]| -> Vec<f32> {
            let mut v = Vec::with_capacity(seq.context_len * kv_row);
            for p in 0..seq.context_len {
                let block = seq.block_table[p / layout.block_size] as usize;
                let slot = block * layout.block_size + p % layout.block_size;
                v.extend_from_slice(&cache[slot * kv_row..(slot + 1) * kv_row]);
            }
            v
        };
        let (k, v) = (gather(k_cache), gather(v_cache));
        for i in 0..seq.query_len {
            let row = seq.query_start + i;
            let pos = seq.context_len - seq.query_len + i;
            for h in 0..num_heads {
                let kvh = h * layout.num_kv_heads / num_heads;
                let qh = &q[row * width + h * d..][..d];
                let scores: Vec<f64> = (0..=pos)
                    .map(|p| {
                        let kp = &k[p * kv_row + kvh * d..][..d];
                        qh.iter()
                            .zip(kp)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for j in 0..d {
                    let s: f64 = (0..=pos)
                        .map(|p| weights[p] * v[p * kv_row + kvh * d + j] as f64)
                        .sum();
                    out[row * width + h * d + j] = (s / total) as f32;
                }
            }
        }
    }
    out
}

/// Q4_1 weights times activations quantized to Q8_1, accumulated in f64 over
/// the dequantized values: what [`crate::quant::matmul_q4_1`] computes.
pub fn matmul_q4_1(x: &[f32], m: usize, w: &crate::quant::Q4_1Matrix) -> Vec<f32> {
    let wd = w.dequantize();
    let mut out = vec![0f32; m * w.n];
    for r in 0..m {
        let mut xq = Vec::new();
        crate::quant::quantize_row_q8_1(&x[r * w.k..(r + 1) * w.k], &mut xq);
        // Q8_1 back to values: d * q (the `s` term is the same sum, folded in by `m`).
        let xd: Vec<f64> = xq
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&q| b.d as f64 * q as f64))
            .collect();
        for c in 0..w.n {
            let row = &wd[c * w.k..(c + 1) * w.k];
            out[r * w.n + c] = row.iter().zip(&xd).map(|(a, b)| *a as f64 * b).sum::<f64>() as f32;
        }
    }
    out
}

/// Naive batched LoRA: for each row, `scale · B (A x)` in f64, added to `out`.
pub fn bgmv(
    x: &[f32],
    k: usize,
    row_slots: &[Option<usize>],
    slots: &[Option<crate::lora::LoraFactors<'_>>],
    n: usize,
    out: &mut [f32],
) {
    for (r, slot) in row_slots.iter().enumerate() {
        let Some(f) = slot.and_then(|s| slots[s]) else {
            continue;
        };
        let xr = &x[r * k..(r + 1) * k];
        let t: Vec<f64> = (0..f.rank)
            .map(|i| {
                let a = &f.a[i * k..(i + 1) * k];
                a.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum()
            })
            .collect();
        for c in 0..n {
            let d: f64 = (0..f.rank).map(|i| f.b_t[i * n + c] as f64 * t[i]).sum();
            out[r * n + c] += (f.scale as f64 * d) as f32;
        }
    }
}

/// Row-wise RMSNorm `x / sqrt(mean(x²) + eps) · w`, the mean in f64.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(h) {
        let ms = row.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(v, g)| (*v as f64 * inv * *g as f64) as f32),
        );
    }
    out
}

/// SwiGLU's gate: `silu(g) · u = g / (1 + e^-g) · u`, in f64.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            (g / (1.0 + (-g).exp()) * u as f64) as f32
        })
        .collect()
}

/// Embedding rows for `ids` from `table: [vocab, hidden]`.
pub fn embedding(table: &[f32], hidden: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| &table[id as usize * hidden..(id as usize + 1) * hidden])
        .copied()
        .collect()
}
