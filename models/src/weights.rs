//! Linear layers and how their weights are held.
//!
//! GGUF weights can stay quantized and run through candle's `QMatMul` (less
//! memory traffic per token: what single-stream decode is bound by), or be
//! dequantized to f32 at load and run through sdlab's batch-invariant f32
//! kernel (more bytes per token, but a dense GEMM that batches and prefills
//! far faster). `--weights` picks; `docs/BENCHMARKS.md` has the numbers.
//! Both paths compute each output row independently of the rest of the batch.

use crate::{ModelError, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::str::FromStr;
use std::sync::Arc;

/// How to hold quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Quantized GGUF weights stay quantized; dense checkpoints stay f32.
    #[default]
    Auto,
    /// Keep GGUF weights quantized (candle `QMatMul`).
    Quantized,
    /// Dequantize everything to f32 at load (sdlab's linear kernel).
    F32,
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "quantized" | "q" => Ok(Self::Quantized),
            "f32" => Ok(Self::F32),
            other => Err(format!(
                "unknown weight format `{other}` (auto, quantized, f32)"
            )),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Quantized => "quantized",
            Self::F32 => "f32",
        })
    }
}

/// `y = x Wᵀ` with `W: [out_features, in_features]`.
#[derive(Clone)]
pub enum Linear {
    /// Q4_1 weights on sdlab's AVX2 kernel (activations quantized to Q8_1 as llama.cpp does).
    Q4_1(kernels::quant::Q4_1Matrix),
    /// Q8_0 weights on sdlab's kernel (the same bits as candle's `QMatMul`).
    Q8_0(kernels::q8_0::Q8_0Matrix),
    /// Other quantized formats on candle's kernels.
    Quantized {
        qm: QMatMul,
        out_features: usize,
        in_features: usize,
    },
    Dense {
        w: Arc<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    },
}

impl Linear {
    pub fn dense(w: Vec<f32>, out_features: usize, in_features: usize) -> Result<Self> {
        Self::dense_shared(Arc::new(w), out_features, in_features)
    }

    /// A dense layer over weights shared with another user (a tied LM head).
    pub fn dense_shared(w: Arc<Vec<f32>>, out_features: usize, in_features: usize) -> Result<Self> {
        if w.len() != out_features * in_features {
            return Err(ModelError::Input(format!(
                "dense weight has {} values, want {out_features}x{in_features}",
                w.len()
            )));
        }
        Ok(Self::Dense {
            w,
            out_features,
            in_features,
        })
    }

    /// From a GGUF tensor, keeping it quantized or not.
    pub fn from_qtensor(t: QTensor, quantized: bool) -> Result<Self> {
        let (out_features, in_features) = t.shape().dims2()?;
        if quantized && t.dtype() == GgmlDType::Q8_0 {
            let bytes = t.data()?;
            Ok(Self::Q8_0(kernels::q8_0::Q8_0Matrix::from_bytes(
                &bytes,
                out_features,
                in_features,
            )?))
        } else if quantized && t.dtype() == GgmlDType::Q4_1 {
            let bytes = t.data()?;
            Ok(Self::Q4_1(kernels::quant::Q4_1Matrix::from_bytes(
                &bytes,
                out_features,
                in_features,
            )?))
        } else if quantized
            && !matches!(t.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        {
            Ok(Self::Quantized {
                qm: QMatMul::from_qtensor(t)?,
                out_features,
                in_features,
            })
        } else {
            let w = t
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Self::dense(w, out_features, in_features)
        }
    }

    pub fn out_features(&self) -> usize {
        match self {
            Self::Q4_1(w) => w.n,
            Self::Q8_0(w) => w.n,
            Self::Quantized { out_features, .. } | Self::Dense { out_features, .. } => {
                *out_features
            }
        }
    }

    pub fn in_features(&self) -> usize {
        match self {
            Self::Q4_1(w) => w.k,
            Self::Q8_0(w) => w.k,
            Self::Quantized { in_features, .. } | Self::Dense { in_features, .. } => *in_features,
        }
    }

    /// `x: [m, in_features]` row-major; returns `[m, out_features]`.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Self::Q4_1(w) => {
                let mut out = vec![0f32; m * w.n];
                kernels::quant::matmul_q4_1(x, m, w, &mut out)?;
                Ok(out)
            }
            Self::Q8_0(w) => {
                let mut out = vec![0f32; m * w.n];
                kernels::q8_0::matmul_q8_0(x, m, w, &mut out)?;
                Ok(out)
            }
            Self::Quantized {
                qm, in_features, ..
            } => {
                let xt = Tensor::from_slice(x, (m, *in_features), &Device::Cpu)?;
                Ok(qm.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?)
            }
            Self::Dense {
                w,
                out_features,
                in_features,
            } => {
                let mut out = vec![0f32; m * out_features];
                kernels::linear(x, w, m, *in_features, *out_features, &mut out)?;
                Ok(out)
            }
        }
    }

    /// The weights as f32, `[out_features, in_features]`.
    pub fn to_dense(&self) -> Result<Vec<f32>> {
        Ok(match self {
            Self::Q4_1(w) => w.dequantize(),
            Self::Q8_0(w) => w.dequantize(),
            Self::Quantized { qm, .. } => {
                let t = match qm {
                    QMatMul::QTensor(t) => t.dequantize(&Device::Cpu)?,
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.clone(),
                };
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
            }
            Self::Dense { w, .. } => w.as_ref().clone(),
        })
    }

    /// `W += delta` (a merged LoRA). Quantized formats sdlab owns are
    /// dequantized, updated and quantized again to the same format, as
    /// llama.cpp's `export-lora` does; candle's other formats become f32.
    pub fn add_delta(&mut self, delta: &[f32]) -> Result<()> {
        let (n, k) = (self.out_features(), self.in_features());
        if delta.len() != n * k {
            return Err(ModelError::Input(format!(
                "delta has {} values, want {n}x{k}",
                delta.len()
            )));
        }
        if let Self::Dense { w, .. } = self {
            for (a, d) in Arc::make_mut(w).iter_mut().zip(delta) {
                *a += d;
            }
            return Ok(());
        }
        let mut w = self.to_dense()?;
        for (a, d) in w.iter_mut().zip(delta) {
            *a += d;
        }
        *self = match self {
            Self::Q4_1(_) => Self::Q4_1(kernels::quant::Q4_1Matrix::quantize(&w, n, k)?),
            Self::Q8_0(_) => Self::Q8_0(kernels::q8_0::Q8_0Matrix::quantize(&w, n, k)?),
            _ => Self::dense(w, n, k)?,
        };
        Ok(())
    }

    /// Several projections of the same input (q, k, v; gate, up), with the
    /// bits of separate [`Self::forward`] calls. When all are Q4_1 the input
    /// is quantized to Q8_1 once instead of once each; when all are dense
    /// f32 they run in one parallel region ([`kernels::linear_shared`]).
    pub fn forward_shared<const N: usize>(
        layers: [&Linear; N],
        x: &[f32],
        m: usize,
    ) -> Result<[Vec<f32>; N]> {
        let k = layers[0].in_features();
        let shared = x.len() == m * k && layers.iter().all(|l| l.in_features() == k);
        let zeroed = || layers.map(|l| vec![0f32; m * l.out_features()]);
        if shared && layers.iter().all(|l| matches!(l, Self::Q4_1(_))) {
            let xq = kernels::quant::quantize_rows_q8_1(x, k);
            let mut outs = zeroed();
            for (out, l) in outs.iter_mut().zip(layers) {
                if let Self::Q4_1(w) = l {
                    kernels::quant::matmul_q4_1_q8(&xq, m, w, out)?;
                }
            }
            return Ok(outs);
        }
        if shared && layers.iter().all(|l| matches!(l, Self::Dense { .. })) {
            let mut outs = zeroed();
            let mut ws: Vec<(&[f32], usize, &mut [f32])> = layers
                .iter()
                .zip(outs.iter_mut())
                .filter_map(|(l, out)| match l {
                    Self::Dense {
                        w, out_features, ..
                    } => Some((w.as_slice(), *out_features, out.as_mut_slice())),
                    _ => None,
                })
                .collect();
            kernels::linear_shared(x, m, k, &mut ws)?;
            return Ok(outs);
        }
        let mut outs = layers.map(|_| Vec::new());
        for (out, l) in outs.iter_mut().zip(layers) {
            *out = l.forward(x, m)?;
        }
        Ok(outs)
    }

    /// Bytes of weight data read per forward pass.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Q4_1(w) => w.bytes(),
            Self::Q8_0(w) => w.bytes(),
            Self::Quantized {
                qm: QMatMul::QTensor(t),
                ..
            } => t.storage_size_in_bytes(),
            Self::Quantized {
                out_features,
                in_features,
                ..
            }
            | Self::Dense {
                out_features,
                in_features,
                ..
            } => out_features * in_features * 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sdlab's Q8_0 kernel gives candle's `QMatMul` bits exactly, so moving
    /// the LM head off candle changed no logit.
    #[test]
    fn q8_0_linear_matches_candle_bitwise() {
        let (n, k, m) = (40, 128, 5);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 300.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31 % 211) as f32 - 105.0) / 40.0)
            .collect();
        let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap();
        let q = || QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        let ours = Linear::from_qtensor(q(), true).unwrap();
        assert!(matches!(ours, Linear::Q8_0(_)));
        let candle = Linear::Quantized {
            qm: QMatMul::from_qtensor(q()).unwrap(),
            out_features: n,
            in_features: k,
        };
        let (a, b) = (ours.forward(&x, m).unwrap(), candle.forward(&x, m).unwrap());
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    /// Projections of one input run together (dense f32 in one parallel
    /// region, Q4_1 on one quantized input) give each the bits of its own
    /// `forward`; a mix of formats falls back to separate calls.
    #[test]
    fn shared_projections_give_the_bits_of_separate_ones() {
        let k = 64;
        let matrix = |n: usize, seed: usize| -> Vec<f32> {
            (0..n * k)
                .map(|i| ((i * 7919 + seed) % 1009) as f32 / 500.0 - 1.0)
                .collect()
        };
        let dense = |n: usize, seed: usize| Linear::dense(matrix(n, seed), n, k).unwrap();
        let q4_1 = |n: usize, seed: usize| {
            Linear::Q4_1(kernels::quant::Q4_1Matrix::quantize(&matrix(n, seed), n, k).unwrap())
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for m in [0, 1, 3, 6] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 211) as f32 - 105.0) / 40.0)
                .collect();
            for layers in [
                [dense(36, 1), dense(12, 2), dense(13, 3)],
                [q4_1(36, 1), q4_1(12, 2), q4_1(8, 3)],
                [dense(36, 1), q4_1(12, 2), dense(5, 3)],
            ] {
                let together =
                    Linear::forward_shared([&layers[0], &layers[1], &layers[2]], &x, m).unwrap();
                for (l, got) in layers.iter().zip(&together) {
                    assert_eq!(bits(got), bits(&l.forward(&x, m).unwrap()), "m={m}");
                }
            }
        }
    }
}
