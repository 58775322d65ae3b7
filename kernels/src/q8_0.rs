//! 8-bit weights times 8-bit activations: the Q8_0 × Q8_0 matmul.
//!
//! GGUF's Q8_0 stores 32 weights in 34 bytes: an f16 scale `d` and 32 int8
//! codes. SmolLM2's tied embedding, and so its LM head (49,152 × 576, the
//! largest matrix of the model: a quarter of the bytes a decode step reads),
//! is Q8_0. sdlab first ran it through candle's `QMatMul`, which is correct
//! but spends part of a single-stream step in its own thread barriers. This
//! kernel computes exactly what candle computes (activations quantized the
//! way candle's `BlockQ8_0::from_float` does, the same per-block integer dot,
//! the same float operations in the same order: bit-identical logits) on
//! sdlab's rayon pool, with an AVX-512 VNNI variant picked at run time.

use crate::{shape_err, Result};
use half::f16;
use rayon::prelude::*;

pub const QK: usize = 32;

/// One GGUF Q8_0 block, bit-compatible with the file format.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// A Q8_0 weight matrix `[n, k]` (row-major, `k` a multiple of 32).
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    pub blocks: Vec<BlockQ8_0>,
    pub n: usize,
    pub k: usize,
}

impl Q8_0Matrix {
    /// From the raw bytes of a GGUF tensor.
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || bytes.len() != n * k / QK * 34 {
            return Err(shape_err(
                "q8_0",
                format!("{} bytes is not a {n}x{k} Q8_0 matrix", bytes.len()),
            ));
        }
        let blocks = bytes
            .chunks_exact(34)
            .map(|b| {
                let mut qs = [0i8; QK];
                for (q, &byte) in qs.iter_mut().zip(&b[2..]) {
                    *q = byte as i8;
                }
                BlockQ8_0 {
                    d: f16::from_le_bytes([b[0], b[1]]),
                    qs,
                }
            })
            .collect();
        Ok(Self { blocks, n, k })
    }

    /// Quantizes f32 weights (for tests), the same way as activations.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || w.len() != n * k {
            return Err(shape_err(
                "q8_0",
                "weights are not n x k, k a multiple of 32",
            ));
        }
        Ok(Self {
            blocks: w.chunks_exact(QK).map(quantize_block).collect(),
            n,
            k,
        })
    }

    /// Back to f32 (`d·q`).
    pub fn dequantize(&self) -> Vec<f32> {
        self.blocks
            .iter()
            .flat_map(|b| {
                let d = b.d.to_f32();
                b.qs.map(|q| q as f32 * d)
            })
            .collect()
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<BlockQ8_0>()
    }
}

/// candle's (and ggml's reference) Q8_0 quantization: `d = amax / 127`,
/// codes `round(x / d)` with halves away from zero.
fn quantize_block(x: &[f32]) -> BlockQ8_0 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0 {
        d: f16::from_f32(d),
        qs,
    }
}

/// Portable dot in the SIMD order: eight lanes of four products, scaled and
/// accumulated per block, folded at the end.
pub fn vec_dot_lanes(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, xb) in w.iter().zip(x) {
        let scale = wb.d.to_f32() * xb.d.to_f32();
        for (l, a) in acc.iter_mut().enumerate() {
            let s: i32 = (0..4)
                .map(|i| wb.qs[4 * l + i] as i32 * xb.qs[4 * l + i] as i32)
                .sum();
            *a = scale.mul_add(s as f32, *a);
        }
    }
    crate::simd::fold8(acc)
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod x86 {
    use super::BlockQ8_0;
    use std::arch::x86_64::*;

    macro_rules! q8_0_dot {
        ($feat:literal, $name:ident, $dot4:ident, $cols:ident, |$aw:ident, $sx:ident| $quads:expr) => {
            /// One Q8_0 weight row times one Q8_0 activation row.
            #[target_feature(enable = $feat)]
            #[inline]
            pub unsafe fn $name(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for (wb, xb) in w.iter().zip(x) {
                    let d = _mm256_set1_ps(wb.d.to_f32() * xb.d.to_f32());
                    let qw = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
                    let qx = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                    // |w| times x with w's sign: an unsigned-by-signed product.
                    let $aw = _mm256_sign_epi8(qw, qw);
                    let $sx = _mm256_sign_epi8(qx, qw);
                    let quads: __m256i = $quads;
                    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc);
                }
                crate::simd::hsum(acc)
            }

            /// One weight row times four activation rows: the weight block is
            /// loaded and its signs taken once for the four, and the four
            /// accumulator chains overlap; each result goes through the
            /// one-row kernel's operations in its order (the same bits).
            #[target_feature(enable = $feat)]
            #[inline]
            pub unsafe fn $dot4(w: &[BlockQ8_0], xs: [&[BlockQ8_0]; 4]) -> [f32; 4] {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (b, wb) in w.iter().enumerate() {
                    let wd = wb.d.to_f32();
                    let qw = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
                    let $aw = _mm256_sign_epi8(qw, qw);
                    for r in 0..4 {
                        let xb = &xs[r][b];
                        let d = _mm256_set1_ps(wd * xb.d.to_f32());
                        let qx = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                        let $sx = _mm256_sign_epi8(qx, qw);
                        let quads: __m256i = $quads;
                        acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc[r]);
                    }
                }
                acc.map(|a| crate::simd::hsum(a))
            }

            crate::quant::rows_by_four_entry!($feat, $cols, $dot4, $name, BlockQ8_0, BlockQ8_0);
        };
    }

    q8_0_dot!("avx2,fma", dot_avx2, dot4_avx2, cols_avx2, |aw, sx| {
        _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
    });
    q8_0_dot!(
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        dot_vnni,
        dot4_vnni,
        cols_vnni,
        |aw, sx| _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx)
    );
}

/// `out[m, n] = x[m, k] · Wᵀ`, activations quantized to Q8_0 per row.
pub fn matmul_q8_0(x: &[f32], m: usize, w: &Q8_0Matrix, out: &mut [f32]) -> Result<()> {
    let (n, k) = (w.n, w.k);
    if x.len() != m * k || out.len() != m * n {
        return Err(shape_err(
            "matmul_q8_0",
            format!(
                "x has {} values (want {m}x{k}), out {} (want {m}x{n})",
                x.len(),
                out.len()
            ),
        ));
    }
    let kb = k / QK;
    let xq: Vec<BlockQ8_0> = x.chunks_exact(QK).map(quantize_block).collect();
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads * 8).clamp(1, 1024);
    let out_ptr = crate::linear::SendPtr(out.as_mut_ptr());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    let vnni = crate::quant::uses_vnni();
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let out_ptr = &out_ptr;
        let out = out_ptr.0;
        let cols = c * chunk..((c + 1) * chunk).min(n);
        // SAFETY: each task writes only its own columns of `out`, which
        // holds m x n values; the VNNI variant runs only where detected.
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        unsafe {
            if vnni {
                x86::cols_vnni(&xq, m, &w.blocks, kb, cols, out, n)
            } else {
                x86::cols_avx2(&xq, m, &w.blocks, kb, cols, out, n)
            }
        }
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        )))]
        for col in cols {
            let wrow = &w.blocks[col * kb..(col + 1) * kb];
            for r in 0..m {
                // SAFETY: as above.
                unsafe { *out.add(r * n + col) = vec_dot_lanes(wrow, &xq[r * kb..(r + 1) * kb]) };
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_paths_match_the_portable_order_bitwise() {
        let (m, n, k) = (7, 6, 128); // a tile of four rows, and three alone
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0)
            .collect();
        let wq = Q8_0Matrix::quantize(&w, n, k).unwrap();
        let mut out = vec![0f32; m * n];
        matmul_q8_0(&x, m, &wq, &mut out).unwrap();
        let xq = Q8_0Matrix::quantize(&x, m, k).unwrap();
        let kb = k / QK;
        for r in 0..m {
            for c in 0..n {
                let (wrow, xrow) = (
                    &wq.blocks[c * kb..(c + 1) * kb],
                    &xq.blocks[r * kb..(r + 1) * kb],
                );
                let want = vec_dot_lanes(wrow, xrow);
                #[cfg(all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "fma"
                ))]
                // SAFETY: AVX2/FMA are compiled in.
                assert_eq!(
                    unsafe { x86::dot_avx2(wrow, xrow) }.to_bits(),
                    want.to_bits()
                );
                assert_eq!(out[r * n + c].to_bits(), want.to_bits(), "({r}, {c})");
                let exact: f32 = (0..k).map(|i| w[c * k + i] * x[r * k + i]).sum();
                let mass: f32 = (0..k).map(|i| (w[c * k + i] * x[r * k + i]).abs()).sum();
                assert!((want - exact).abs() < 0.01 * mass, "{want} vs {exact}");
            }
        }
    }
}
