//! The decoder's element- and row-wise steps on the CPU: RMSNorm and the
//! SwiGLU activation. They live here, next to the GPU kernels that compute
//! the same bits (`gpu/shaders/rms_norm.wgsl`, `elementwise.wgsl`), so the
//! tests compare both devices against one definition.

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
