//! The dense kernels of a forward pass: embedding gather, RMSNorm, RoPE,
//! matmul (and the logits, a matmul against the tied embedding), SiLU-mul
//! and the residual add. Each checks shapes on the host, then records one
//! dispatch into the caller's encoder; nothing runs until it is submitted.

use super::{DType, GpuContext, GpuTensor, Result};
use crate::rowwise::RopeStyle;

/// Invocations per workgroup of the one-invocation-per-element kernels.
const ELEMENTWISE_WG: u64 = 256;

/// The two matmul kernels. They accumulate every output the same way (one
/// invocation, `fma` in k order from zero), so they agree bit for bit and
/// the choice is only about speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernel {
    /// 64x64 output tiles, 16 outputs per invocation: for prefill and large
    /// batches, where each staged value serves 64 multiply-adds.
    Tiled,
    /// 4x64 output tiles, one column of 4 rows per invocation: for decode
    /// steps of a few sequences, where a 64-row tile would be mostly padding.
    Skinny,
}

impl MatmulKernel {
    /// Up to this many rows [`GpuContext::matmul`] takes the skinny kernel:
    /// past it, the skinny kernel reads the weights once per 4 rows and the
    /// tiled one wins.
    pub const SKINNY_MAX_ROWS: usize = 16;

    pub fn for_rows(m: usize) -> Self {
        if m <= Self::SKINNY_MAX_ROWS {
            Self::Skinny
        } else {
            Self::Tiled
        }
    }
}

/// A buffer may not be bound for reading and writing in one dispatch.
pub(crate) fn distinct(
    kernel: &'static str,
    written: &GpuTensor,
    read: &[&GpuTensor],
) -> Result<()> {
    if read.iter().any(|r| r.buffer == written.buffer) {
        return Err(super::shape(kernel, "the output may not also be an input"));
    }
    Ok(())
}

fn u32_of(kernel: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| super::shape(kernel, format!("{what} = {v} exceeds u32")))
}

impl GpuContext {
    fn elementwise_grid(&self, kernel: &'static str, n: usize) -> Result<(u32, u32)> {
        u32_of(kernel, "elements", n)?;
        self.grid((n as u64).div_ceil(ELEMENTWISE_WG))
    }

    /// `out[t, :] = table[ids[t], :]`: `table: [vocab, hidden]` f32,
    /// `ids: [tokens]` u32, `out: [tokens, hidden]`.
    pub fn embedding(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        table: &GpuTensor,
        ids: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu embedding";
        table.expect(K, "table", DType::F32, &[None, None])?;
        let (vocab, hidden) = (table.shape()[0], table.shape()[1]);
        ids.expect(K, "ids", DType::U32, &[None])?;
        let tokens = ids.len();
        out.expect(K, "out", DType::F32, &[Some(tokens), Some(hidden)])?;
        distinct(K, out, &[table, ids])?;
        if out.is_empty() {
            return Ok(());
        }
        let groups = self.elementwise_grid(K, tokens * hidden)?;
        self.dispatch(
            encoder,
            &self.pipelines.embedding,
            K,
            &[tokens as u32, hidden as u32, u32_of(K, "vocab", vocab)?],
            &[(1, &table.buffer), (2, &ids.buffer), (3, &out.buffer)],
            groups,
        );
        Ok(())
    }

    /// Row-wise RMSNorm: `out = x / sqrt(mean(x²) + eps) * w`, `x, out:
    /// [rows, hidden]`, `w: [hidden]`; `out` may not be `x`.
    pub fn rms_norm(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        w: &GpuTensor,
        eps: f32,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu rms_norm";
        w.expect(K, "w", DType::F32, &[None])?;
        let hidden = w.len();
        x.expect(K, "x", DType::F32, &[None, Some(hidden)])?;
        let rows = x.shape()[0];
        out.expect(K, "out", DType::F32, &[Some(rows), Some(hidden)])?;
        distinct(K, out, &[x, w])?;
        if out.is_empty() {
            return Ok(());
        }
        let groups = self.grid(rows as u64)?;
        self.dispatch(
            encoder,
            &self.pipelines.rms_norm,
            K,
            &[rows as u32, hidden as u32, eps.to_bits()],
            &[(1, &x.buffer), (2, &w.buffer), (3, &out.buffer)],
            groups,
        );
        Ok(())
    }

    /// Rotates, in place, each head of `x: [tokens, heads * head_dim]` by
    /// its token's position (`positions: [tokens]` u32), with angle tables
    /// `cos, sin: [max_positions, head_dim / 2]` as
    /// [`crate::rowwise::rope_tables`] builds them. Positions beyond the
    /// table are clamped to its last row (the host checks them first).
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        positions: &GpuTensor,
        cos: &GpuTensor,
        sin: &GpuTensor,
        heads: usize,
        style: RopeStyle,
    ) -> Result<()> {
        const K: &str = "gpu rope";
        cos.expect(K, "cos", DType::F32, &[None, None])?;
        let (max_positions, half) = (cos.shape()[0], cos.shape()[1]);
        sin.expect(K, "sin", DType::F32, &[Some(max_positions), Some(half)])?;
        positions.expect(K, "positions", DType::U32, &[None])?;
        let tokens = positions.len();
        let head_dim = 2 * half;
        x.expect(K, "x", DType::F32, &[Some(tokens), Some(heads * head_dim)])?;
        distinct(K, x, &[positions, cos, sin])?;
        if x.is_empty() {
            return Ok(());
        }
        if max_positions == 0 {
            return Err(super::shape(K, "empty angle tables"));
        }
        let groups = self.elementwise_grid(K, tokens * heads * half)?;
        let interleaved = matches!(style, RopeStyle::Interleaved) as u32;
        self.dispatch(
            encoder,
            &self.pipelines.rope,
            K,
            &[
                tokens as u32,
                heads as u32,
                head_dim as u32,
                interleaved,
                u32_of(K, "max_positions", max_positions)?,
            ],
            &[
                (1, &positions.buffer),
                (2, &cos.buffer),
                (3, &sin.buffer),
                (4, &x.buffer),
            ],
            groups,
        );
        Ok(())
    }

    /// `out = x · wᵀ` with `x: [m, k]`, `w: [n, k]` (the layout linear
    /// weights are stored in), `out: [m, n]`, f32 accumulation. The kernel
    /// is picked by `m` ([`MatmulKernel::for_rows`]); both give the same
    /// bits.
    pub fn matmul(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        w: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        let m = x.shape().first().copied().unwrap_or(0);
        self.matmul_with(MatmulKernel::for_rows(m), encoder, x, w, out)
    }

    /// [`Self::matmul`] on a chosen kernel (for tests and benchmarks).
    pub fn matmul_with(
        &self,
        kernel: MatmulKernel,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        w: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu matmul";
        w.expect(K, "w", DType::F32, &[None, None])?;
        let (n, k) = (w.shape()[0], w.shape()[1]);
        x.expect(K, "x", DType::F32, &[None, Some(k)])?;
        let m = x.shape()[0];
        out.expect(K, "out", DType::F32, &[Some(m), Some(n)])?;
        distinct(K, out, &[x, w])?;
        if out.is_empty() {
            return Ok(());
        }
        let (pipeline, rows_per_group) = match kernel {
            MatmulKernel::Tiled => (&self.pipelines.matmul, 64),
            MatmulKernel::Skinny => (&self.pipelines.matmul_skinny, 4),
        };
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let (gx, gy) = ((n as u64).div_ceil(64), (m as u64).div_ceil(rows_per_group));
        if gx > max || gy > max {
            return Err(super::GpuError::Grid(gx * gy));
        }
        self.dispatch(
            encoder,
            pipeline,
            K,
            &[u32_of(K, "m", m)?, u32_of(K, "k", k)?, u32_of(K, "n", n)?],
            &[(1, &x.buffer), (2, &w.buffer), (3, &out.buffer)],
            (gx as u32, gy as u32),
        );
        Ok(())
    }

    /// Logits `out: [rows, vocab] = x · embeddingᵀ` for a model whose output
    /// head is tied to its input embedding (`[vocab, hidden]`): the same
    /// device tensor serves [`Self::embedding`] and this.
    pub fn logits(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        embedding: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        self.matmul(encoder, x, embedding, out)
    }

    /// `out = silu(gate) * up` element-wise (SwiGLU); `out` must be a third
    /// tensor (a buffer cannot be bound for reading and writing in one
    /// dispatch).
    pub fn silu_mul(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        gate: &GpuTensor,
        up: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu silu_mul";
        let dims: Vec<_> = gate.shape().iter().map(|&d| Some(d)).collect();
        gate.expect(K, "gate", DType::F32, &dims)?;
        up.expect(K, "up", DType::F32, &dims)?;
        out.expect(K, "out", DType::F32, &dims)?;
        distinct(K, out, &[gate, up])?;
        if out.is_empty() {
            return Ok(());
        }
        let groups = self.elementwise_grid(K, out.len())?;
        self.dispatch(
            encoder,
            &self.pipelines.silu_mul,
            K,
            &[out.len() as u32],
            &[(1, &gate.buffer), (2, &up.buffer), (3, &out.buffer)],
            groups,
        );
        Ok(())
    }

    /// Residual add in place: `x += y` (same shape).
    pub fn add(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        y: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu add";
        let dims: Vec<_> = x.shape().iter().map(|&d| Some(d)).collect();
        x.expect(K, "x", DType::F32, &dims)?;
        y.expect(K, "y", DType::F32, &dims)?;
        distinct(K, x, &[y])?;
        if x.is_empty() {
            return Ok(());
        }
        let groups = self.elementwise_grid(K, x.len())?;
        self.dispatch(
            encoder,
            &self.pipelines.add,
            K,
            &[x.len() as u32],
            &[(1, &y.buffer), (3, &x.buffer)],
            groups,
        );
        Ok(())
    }
}
