//! Quantized weights on the device: Q4_1 and Q8_0 matrices kept in their
//! blocks (4.5 and 8.5 bits a weight instead of 32), multiplied by
//! activations quantized per 32 values on the device, with the arithmetic
//! of sdlab's CPU kernels ([`crate::quant`], [`crate::q8_0`]; see
//! `shaders/qmatmul.wgsl`, with the multiply-adds rounded once as the
//! CPU's are). A GGUF model on `--device gpu` thus computes the CPU's bits
//! (tested on lavapipe), where dequantizing to f32 would not: f32
//! activations against the CPU's 8-bit ones moved SmolLM2's greedy tokens
//! apart after five tokens.

use super::ops::distinct;
use super::{DType, GpuContext, GpuTensor, Result};
use crate::q8_0::Q8_0Matrix;
use crate::quant::Q4_1Matrix;

/// A quantized weight format the device kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    /// GGUF Q4_1 weights, activations quantized to Q8_1.
    Q4_1,
    /// GGUF Q8_0 weights, activations quantized to Q8_0.
    Q8_0,
}

impl QFormat {
    /// u32 words per block of 32 weights on the device.
    fn words(self) -> usize {
        match self {
            Self::Q4_1 => 6,
            Self::Q8_0 => 9,
        }
    }
}

/// u32 words per block of 32 quantized activations.
const XQ_WORDS: usize = 10;

/// A quantized `[n, k]` weight matrix on the device.
#[derive(Debug)]
pub struct GpuQMatrix {
    blocks: GpuTensor,
    format: QFormat,
    n: usize,
    k: usize,
}

impl GpuQMatrix {
    pub fn format(&self) -> QFormat {
        self.format
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> u64 {
        self.blocks.bytes()
    }
}

impl GpuContext {
    /// Uploads Q4_1 weights as blocks (no dequantization).
    pub fn upload_q4_1_blocks(&self, w: &Q4_1Matrix) -> Result<GpuQMatrix> {
        let mut words = Vec::with_capacity(w.blocks.len() * QFormat::Q4_1.words());
        for b in &w.blocks {
            words.extend([b.d.to_bits(), b.m.to_bits()]);
            words.extend(
                b.qs.chunks_exact(4)
                    .map(|q| u32::from_le_bytes([q[0], q[1], q[2], q[3]])),
            );
        }
        self.upload_blocks(words, QFormat::Q4_1, w.n, w.k)
    }

    /// Uploads Q8_0 weights as blocks (no dequantization).
    pub fn upload_q8_0_blocks(&self, w: &Q8_0Matrix) -> Result<GpuQMatrix> {
        let mut words = Vec::with_capacity(w.blocks.len() * QFormat::Q8_0.words());
        for b in &w.blocks {
            words.push(b.d.to_f32().to_bits());
            words.extend(
                b.qs.chunks_exact(4)
                    .map(|q| u32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])),
            );
        }
        self.upload_blocks(words, QFormat::Q8_0, w.n, w.k)
    }

    fn upload_blocks(
        &self,
        words: Vec<u32>,
        format: QFormat,
        n: usize,
        k: usize,
    ) -> Result<GpuQMatrix> {
        let kb = k / 32;
        let blocks = self.upload_u32(&words, &[n, kb * format.words()])?;
        Ok(GpuQMatrix {
            blocks,
            format,
            n,
            k,
        })
    }

    /// A buffer for `m` rows of `k` activations quantized ([`Self::quantize_rows`]).
    pub fn quantized_rows(&self, m: usize, k: usize) -> Result<GpuTensor> {
        if !k.is_multiple_of(32) {
            return Err(super::shape(
                "gpu quantize",
                format!("k = {k} is not a multiple of 32"),
            ));
        }
        self.zeros(&[m, k / 32 * XQ_WORDS], DType::U32)
    }

    /// Quantizes `x: [m, k]` per 32 values into `xq` (from
    /// [`Self::quantized_rows`]) as `format`'s kernel expects it.
    pub fn quantize_rows(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        format: QFormat,
        xq: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu quantize";
        x.expect(K, "x", DType::F32, &[None, None])?;
        let (m, k) = (x.shape()[0], x.shape()[1]);
        if !k.is_multiple_of(32) {
            return Err(super::shape(K, format!("k = {k} is not a multiple of 32")));
        }
        let kb = k / 32;
        xq.expect(K, "xq", DType::U32, &[Some(m), Some(kb * XQ_WORDS)])?;
        if m == 0 {
            return Ok(());
        }
        let mode = match format {
            QFormat::Q4_1 => 0,
            QFormat::Q8_0 => 1,
        };
        let groups = self.grid(((m * kb) as u64).div_ceil(64))?;
        self.dispatch(
            encoder,
            &self.pipelines.quantize,
            K,
            &[m as u32, kb as u32, 0, mode],
            &[(1, &x.buffer), (4, &xq.buffer)],
            groups,
        );
        Ok(())
    }

    /// `out = x · wᵀ` for quantized `w: [n, k]`, from `xq` (the rows of
    /// `x: [m, k]` quantized by [`Self::quantize_rows`] for `w`'s format);
    /// `out: [m, n]`.
    pub fn qmatmul(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        xq: &GpuTensor,
        w: &GpuQMatrix,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu qmatmul";
        let kb = w.k / 32;
        xq.expect(K, "xq", DType::U32, &[None, Some(kb * XQ_WORDS)])?;
        let m = xq.shape()[0];
        out.expect(K, "out", DType::F32, &[Some(m), Some(w.n)])?;
        distinct(K, out, &[xq, &w.blocks])?;
        if out.is_empty() {
            return Ok(());
        }
        let pipeline = match w.format {
            QFormat::Q4_1 => &self.pipelines.matmul_q4_1,
            QFormat::Q8_0 => &self.pipelines.matmul_q8_0,
        };
        let groups = self.grid(((m * w.n) as u64).div_ceil(64))?;
        self.dispatch(
            encoder,
            pipeline,
            K,
            &[m as u32, kb as u32, w.n as u32, 0],
            &[(2, &w.blocks.buffer), (3, &xq.buffer), (5, &out.buffer)],
            groups,
        );
        Ok(())
    }
}
