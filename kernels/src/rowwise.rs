//! The decoder's element- and row-wise steps on the CPU: RMSNorm, RoPE and
//! the SwiGLU activation. They live here, next to the GPU kernels that
//! compute the same bits (`gpu/shaders/rms_norm.wgsl`, `elementwise.wgsl`,
//! `rope.wgsl`), so the tests compare both devices against one definition.

use crate::{expf, simd};

/// Row-wise RMSNorm, `x / sqrt(mean(x²) + eps) * w`, with `w.len()` as the
/// row width: the sum of squares is [`simd::dot`], then one divide, add,
/// square root and reciprocal per row, and `(v · inv) · w` per element.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(h) {
        let inv = 1.0 / (simd::dot(row, row) / h as f32 + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, g)| v * inv * g));
    }
    out
}

/// SwiGLU in place: `gate = silu(gate) · up`, `silu(g) = g / (1 + e^-g)`
/// with [`expf::exp`].
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + expf::exp(-*g)) * u;
    }
}

/// Which elements of a head RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i + 1)`: Meta's layout, and GGUF's (llama.cpp permutes
    /// the Q/K rows of Hugging Face checkpoints into it).
    Interleaved,
    /// Pairs `(i, i + head_dim / 2)`: Hugging Face's `rotate_half` ("NeoX").
    Halves,
}

/// cos/sin of `position · theta^(-2i / head_dim)`, each
/// `[max_positions, head_dim / 2]`, computed in f64 and rounded once: the
/// tables `models::llama` builds.
pub fn rope_tables(theta: f32, head_dim: usize, max_positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let (mut cos, mut sin) = (
        Vec::with_capacity(max_positions * half),
        Vec::with_capacity(max_positions * half),
    );
    for pos in 0..max_positions {
        for i in 0..half {
            let freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let angle = pos as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotates each head of `x: [tokens, heads · head_dim]` in place by its
/// token's position, with tables from [`rope_tables`].
pub fn rope(
    x: &mut [f32],
    positions: &[usize],
    heads: usize,
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    style: RopeStyle,
) {
    let half = head_dim / 2;
    for (row, &pos) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Halves => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c[i] - x1 * s[i];
                head[b] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}
