//! A linear layer's weights on the device, in the form the CPU decoder
//! holds them: sdlab's quantized formats (Q4_1, Q8_0) stay in their blocks
//! and run the quantized kernels, which compute the CPU kernels' bits
//! (8-bit activations, the same integer sums, the same float steps);
//! everything else is f32 and runs the f32 matmul. A decode step thus
//! reads 4.5 or 8.5 bits a weight instead of 32.

use crate::weights::Linear;
use crate::Result;
use kernels::gpu::{GpuContext, GpuQMatrix, GpuTensor, QFormat};

pub(super) enum GpuWeight {
    F32(GpuTensor),
    Blocks(GpuQMatrix),
}

impl GpuWeight {
    pub fn upload(ctx: &GpuContext, l: &Linear) -> Result<Self> {
        Ok(match l {
            Linear::Q4_1(w) => Self::Blocks(ctx.upload_q4_1_blocks(w)?),
            Linear::Q8_0(w) => Self::Blocks(ctx.upload_q8_0_blocks(w)?),
            other => Self::F32(ctx.upload_f32(
                &other.to_dense()?,
                &[other.out_features(), other.in_features()],
            )?),
        })
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self, Self::Blocks(_))
    }

    pub fn bytes(&self) -> u64 {
        match self {
            Self::F32(t) => t.bytes(),
            Self::Blocks(q) => q.bytes(),
        }
    }
}

/// `outs[i] = x · ws[i]ᵀ` for projections that read the same input `x`
/// (q, k and v; gate and up): for quantized weights `x` is quantized into
/// `xq` once per format, as the CPU decoder quantizes it once.
pub(super) fn project(
    ctx: &GpuContext,
    e: &mut kernels::gpu::wgpu::CommandEncoder,
    x: &GpuTensor,
    xq: Option<&GpuTensor>,
    pairs: &[(&GpuWeight, &GpuTensor)],
) -> Result<()> {
    let mut quantized_as: Option<QFormat> = None;
    for (w, out) in pairs {
        match w {
            GpuWeight::F32(w) => ctx.matmul(e, x, w, out)?,
            GpuWeight::Blocks(w) => {
                let xq = xq.ok_or_else(|| {
                    crate::ModelError::Gpu("no buffer for quantized activations".into())
                })?;
                if quantized_as != Some(w.format()) {
                    ctx.quantize_rows(e, x, w.format(), xq)?;
                    quantized_as = Some(w.format());
                }
                ctx.qmatmul(e, xq, w, out)?;
            }
        }
    }
    Ok(())
}
