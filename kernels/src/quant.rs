//! 4-bit weights times 8-bit activations: the Q4_1 × Q8_1 dot product.
//!
//! GGUF's Q4_1 stores 32 weights in 20 bytes: an f16 scale `d`, an f16
//! minimum `m`, and 32 four-bit codes (`w = d·q + m`; byte `j` holds code `j`
//! in its low nibble and code `j + 16` in its high nibble). llama.cpp
//! multiplies it by activations quantized per 32 values to Q8_1 (an f16 scale,
//! 32 int8 codes, and `s = d·Σq` so the `m` term costs one multiply per block).
//! sdlab quantizes activations exactly as llama.cpp does (the same rounding,
//! the same f16 storage of `d` and `s`), so its outputs track llama.cpp's, and
//! does the integer dot products with AVX2 (`maddubs`), which candle 0.11
//! lacks for this format on CPUs without AVX-512 VNNI.
//!
//! Every output element is one row-times-row reduction in a fixed order, so
//! results are batch-invariant, like [`crate::linear`].

use crate::{shape_err, Result};
use half::f16;
use rayon::prelude::*;

pub const QK: usize = 32;

/// One GGUF Q4_1 block, bit-compatible with the file format.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// An activation block: f16-rounded `d` and `s` kept as f32 for speed.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8_1 {
    pub qs: [i8; QK],
    pub d: f32,
    pub s: f32,
}

/// A Q4_1 block as the kernel reads it: the f16 scale and minimum widened to
/// f32 once at load (exactly; every f16 is an f32), so the hot loop converts
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct PackedQ4_1 {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; QK / 2],
}

impl From<BlockQ4_1> for PackedQ4_1 {
    fn from(b: BlockQ4_1) -> Self {
        Self {
            d: b.d.to_f32(),
            m: b.m.to_f32(),
            qs: b.qs,
        }
    }
}

/// A Q4_1 weight matrix `[n, k]` (row-major, `k` a multiple of 32).
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    pub blocks: Vec<PackedQ4_1>,
    pub n: usize,
    pub k: usize,
}

impl Q4_1Matrix {
    /// From the raw bytes of a GGUF tensor.
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || bytes.len() != n * k / QK * 20 {
            return Err(shape_err(
                "q4_1",
                format!("{} bytes is not a {n}x{k} Q4_1 matrix", bytes.len()),
            ));
        }
        let blocks = bytes
            .chunks_exact(20)
            .map(|b| {
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[4..20]);
                BlockQ4_1 {
                    d: f16::from_le_bytes([b[0], b[1]]),
                    m: f16::from_le_bytes([b[2], b[3]]),
                    qs,
                }
            })
            .map(PackedQ4_1::from)
            .collect();
        Ok(Self { blocks, n, k })
    }

    /// Quantizes f32 weights (the reference direction, for tests).
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || w.len() != n * k {
            return Err(shape_err(
                "q4_1",
                "weights are not n x k with k a multiple of 32",
            ));
        }
        let blocks = w
            .chunks_exact(QK)
            .map(|x| {
                let (min, max) = x
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let mut qs = [0u8; 16];
                for j in 0..16 {
                    let q0 = ((x[j] - min) * id + 0.5).min(15.0) as u8;
                    let q1 = ((x[j + 16] - min) * id + 0.5).min(15.0) as u8;
                    qs[j] = q0 | (q1 << 4);
                }
                BlockQ4_1 {
                    d: f16::from_f32(d),
                    m: f16::from_f32(min),
                    qs,
                }
            })
            .map(PackedQ4_1::from)
            .collect();
        Ok(Self { blocks, n, k })
    }

    /// Back to f32 (`d·q + m`).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for b in &self.blocks {
            let (d, m) = (b.d, b.m);
            let mut v = [0f32; QK];
            for j in 0..16 {
                v[j] = (b.qs[j] & 0x0F) as f32 * d + m;
                v[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
            }
            out.extend_from_slice(&v);
        }
        out
    }

    /// Bytes read per pass over the matrix (the packed layout).
    pub fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<PackedQ4_1>()
    }
}

/// Quantizes one row of activations to Q8_1, as llama.cpp's
/// `quantize_row_q8_1` does (AVX2 when compiled in; bit-identical to
/// [`quantize_row_q8_1_scalar`]).
pub fn quantize_row_q8_1(x: &[f32], out: &mut Vec<BlockQ8_1>) {
    for chunk in x.chunks_exact(QK) {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        // SAFETY: the target features are enabled at compile time.
        out.push(unsafe { quantize_block_avx2(chunk) });
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        )))]
        out.push(quantize_block(chunk));
    }
}

/// The scalar definition of [`quantize_row_q8_1`].
pub fn quantize_row_q8_1_scalar(x: &[f32], out: &mut Vec<BlockQ8_1>) {
    out.extend(x.chunks_exact(QK).map(quantize_block));
}

/// Every row of `x: [m, k]` quantized, rows one after another.
pub fn quantize_rows_q8_1(x: &[f32], k: usize) -> Vec<BlockQ8_1> {
    let mut xq = Vec::with_capacity(x.len() / QK);
    for row in x.chunks_exact(k) {
        quantize_row_q8_1(row, &mut xq);
    }
    xq
}

fn quantize_block(chunk: &[f32]) -> BlockQ8_1 {
    let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
    // llama.cpp's x86 path: `id = 127 / amax` and round half to even.
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(chunk) {
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    BlockQ8_1 {
        qs,
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(sum as f32 * d).to_f32(),
    }
}

/// One block with AVX2: the same products, the same round-half-to-even
/// (`_mm256_round_ps` to nearest), the same saturating narrowing, an exact
/// integer sum, so the same bits as [`quantize_block`] for finite inputs.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn quantize_block_avx2(chunk: &[f32]) -> BlockQ8_1 {
    use std::arch::x86_64::*;
    debug_assert_eq!(chunk.len(), QK);
    let p = chunk.as_ptr();
    let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
    let sign = _mm256_set1_ps(-0.0);
    let abs = v.map(|x| _mm256_andnot_ps(sign, x));
    let m8 = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let q = v.map(|x| {
        _mm256_cvtps_epi32(_mm256_round_ps(
            _mm256_mul_ps(x, idv),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        ))
    });
    let sum8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let s4 = _mm_add_epi32(
        _mm256_castsi256_si128(sum8),
        _mm256_extracti128_si256(sum8, 1),
    );
    let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b01)));
    // Narrow with saturation (as `as i8` saturates), then undo the per-lane
    // interleaving of the 256-bit packs.
    let w16 = [
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    ];
    let b8 = _mm256_packs_epi16(w16[0], w16[1]);
    let ordered = _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut block = BlockQ8_1 {
        qs: [0; QK],
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(sum as f32 * d).to_f32(),
    };
    _mm256_store_si256(block.qs.as_mut_ptr() as *mut __m256i, ordered);
    block
}

/// Dot product of one Q4_1 row with one Q8_1 row.
#[inline]
pub fn vec_dot_q4_1_q8_1(w: &[PackedQ4_1], x: &[BlockQ8_1]) -> f32 {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time.
        unsafe { x86::dot1_avx2(w, x) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        vec_dot_lanes(w, x)
    }
}

/// Portable path in the SIMD path's order: eight lanes of four products each,
/// scaled and accumulated per block, folded at the end, plus the `m·s` terms.
#[allow(dead_code)]
pub fn vec_dot_lanes(w: &[PackedQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (wb, xb) in w.iter().zip(x) {
        let mut codes = [0i32; QK];
        for j in 0..16 {
            codes[j] = (wb.qs[j] & 0x0F) as i32;
            codes[j + 16] = (wb.qs[j] >> 4) as i32;
        }
        let scale = wb.d * xb.d;
        for (l, a) in acc.iter_mut().enumerate() {
            let s: i32 = (0..4)
                .map(|i| codes[4 * l + i] * xb.qs[4 * l + i] as i32)
                .sum();
            *a = scale.mul_add(s as f32, *a);
        }
        summs = wb.m.mul_add(xb.s, summs);
    }
    crate::simd::fold8(acc) + summs
}

/// The x86 kernels, generated twice from one body: for AVX2 (the build's
/// baseline, `maddubs` + `madd` per 32 products) and for AVX-512 VNNI, picked
/// at run time where the CPU has it (one `vpdpbusd` per 32 products). Both
/// compute the same exact integer sums, then the same float operations in
/// the same order, so their results are bit-identical.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod x86 {
    use super::{BlockQ8_1, PackedQ4_1};
    use std::arch::x86_64::*;

    /// Whether this CPU runs the VNNI variant (checked once).
    pub fn has_vnni() -> bool {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::env::var_os("SDLAB_NO_VNNI").is_none()
        })
    }

    /// The 32 weight codes of a block as bytes (low nibbles, then high).
    #[inline(always)]
    unsafe fn unpack(wb: &PackedQ4_1) -> __m256i {
        let mask = _mm_set1_epi8(0x0F);
        let q = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    macro_rules! q4_1_kernels {
        ($feat:literal, $dot1:ident, $dot4:ident, $cols:ident, |$qw:ident, $qx:ident| $quads:expr) => {
            /// One Q4_1 row times one Q8_1 row.
            #[target_feature(enable = $feat)]
            #[inline]
            pub unsafe fn $dot1(w: &[PackedQ4_1], x: &[BlockQ8_1]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut summs = 0f32;
                for (wb, xb) in w.iter().zip(x) {
                    let $qw = unpack(wb);
                    let $qx = _mm256_load_si256(xb.qs.as_ptr() as *const __m256i);
                    let quads = $quads;
                    let scale = _mm256_set1_ps(wb.d * xb.d);
                    acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc);
                    summs = wb.m.mul_add(xb.s, summs);
                }
                crate::simd::hsum(acc) + summs
            }

            /// One Q4_1 row times four Q8_1 rows: the weight codes are
            /// unpacked once per block and reused; each result goes through
            /// exactly the operations of the one-row kernel, so it is
            /// bit-identical to it (batch invariance does not depend on how
            /// rows are grouped).
            #[target_feature(enable = $feat)]
            #[inline]
            pub unsafe fn $dot4(w: &[PackedQ4_1], xs: [&[BlockQ8_1]; 4]) -> [f32; 4] {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut summs = [0f32; 4];
                for (b, wb) in w.iter().enumerate() {
                    let $qw = unpack(wb);
                    for r in 0..4 {
                        let xb = &xs[r][b];
                        let $qx = _mm256_load_si256(xb.qs.as_ptr() as *const __m256i);
                        let quads = $quads;
                        let scale = _mm256_set1_ps(wb.d * xb.d);
                        acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[r]);
                        summs[r] = wb.m.mul_add(xb.s, summs[r]);
                    }
                }
                [0, 1, 2, 3].map(|r| crate::simd::hsum(acc[r]) + summs[r])
            }

            crate::quant::rows_by_four_entry!($feat, $cols, $dot4, $dot1, BlockQ8_1, PackedQ4_1);
        };
    }

    q4_1_kernels!("avx2,fma", dot1_avx2, dot4_avx2, cols_avx2, |qw, qx| {
        _mm256_madd_epi16(_mm256_maddubs_epi16(qw, qx), _mm256_set1_epi16(1))
    });
    q4_1_kernels!(
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        dot1_vnni,
        dot4_vnni,
        cols_vnni,
        |qw, qx| _mm256_dpbusd_epi32(_mm256_setzero_si256(), qw, qx)
    );
}

/// `out[r, col]` for every row and the columns `cols` (row stride `n`), with
/// weight rows and activation rows of `kb` blocks: the rows four at a time
/// through `dot4`, the rest one at a time through `dot1`. Four rows of
/// activations stay in L1 while the columns' weights, shared by the four,
/// stream past them; the other way round, every column re-read all the
/// rows from L2 (64 bytes a block in Q8_1, against 24 for a packed Q4_1
/// weight block). Shared by the Q4_1 and Q8_0 matmuls.
///
/// # Safety
/// `out` holds `m x n` values, and no other thread writes these columns.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn rows_by_four<W, X>(
    xq: &[X],
    m: usize,
    w: &[W],
    kb: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
    n: usize,
    dot4: impl Fn(&[W], [&[X]; 4]) -> [f32; 4],
    dot1: impl Fn(&[W], &[X]) -> f32,
) {
    let wrow = |col: usize| &w[col * kb..(col + 1) * kb];
    let xrow = |r: usize| &xq[r * kb..(r + 1) * kb];
    let mut r = 0;
    while r + 4 <= m {
        let xs = [xrow(r), xrow(r + 1), xrow(r + 2), xrow(r + 3)];
        for col in cols.clone() {
            for (i, v) in dot4(wrow(col), xs).into_iter().enumerate() {
                *out.add((r + i) * n + col) = v;
            }
        }
        r += 4;
    }
    for r in r..m {
        for col in cols.clone() {
            *out.add(r * n + col) = dot1(wrow(col), xrow(r));
        }
    }
}

/// Generates `$cols`, the `#[target_feature]` entry point through which an
/// int8 format's matmul runs [`rows_by_four`] with its `$dot4` and `$dot1`
/// (one per format and instruction set), so the dot products inline under
/// those features.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
macro_rules! rows_by_four_entry {
    ($feat:literal, $cols:ident, $dot4:ident, $dot1:ident, $x:ty, $w:ty) => {
        /// Output columns `cols` for every row: `out[r, col]`, written
        /// through `out` (row stride `n`; see [`crate::quant::rows_by_four`]).
        #[target_feature(enable = $feat)]
        pub unsafe fn $cols(
            xq: &[$x],
            m: usize,
            w: &[$w],
            kb: usize,
            cols: std::ops::Range<usize>,
            out: *mut f32,
            n: usize,
        ) {
            crate::quant::rows_by_four(
                xq,
                m,
                w,
                kb,
                cols,
                out,
                n,
                |w, xs| $dot4(w, xs),
                |w, x| $dot1(w, x),
            )
        }
    };
}
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
pub(crate) use rows_by_four_entry;

/// `out[m, n] = x[m, k] · Wᵀ` with activations quantized to Q8_1 per row.
pub fn matmul_q4_1(x: &[f32], m: usize, w: &Q4_1Matrix, out: &mut [f32]) -> Result<()> {
    if x.len() != m * w.k {
        return Err(shape_err(
            "matmul_q4_1",
            format!("x has {} values, want {m}x{}", x.len(), w.k),
        ));
    }
    matmul_q4_1_q8(&quantize_rows_q8_1(x, w.k), m, w, out)
}

/// [`matmul_q4_1`] on activations already quantized (by
/// [`quantize_rows_q8_1`]), so projections that read the same input (q, k
/// and v; gate and up) quantize it once.
pub fn matmul_q4_1_q8(xq: &[BlockQ8_1], m: usize, w: &Q4_1Matrix, out: &mut [f32]) -> Result<()> {
    let (n, k) = (w.n, w.k);
    let kb = k / QK;
    if xq.len() != m * kb || out.len() != m * n {
        return Err(shape_err(
            "matmul_q4_1",
            format!(
                "x has {} blocks (want {m}x{kb}), out {} values (want {m}x{n})",
                xq.len(),
                out.len()
            ),
        ));
    }
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads * 4).clamp(1, 256);
    let out_ptr = crate::linear::SendPtr(out.as_mut_ptr());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    let vnni = x86::has_vnni();
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
                x86::cols_vnni(xq, m, &w.blocks, kb, cols, out, n)
            } else {
                x86::cols_avx2(xq, m, &w.blocks, kb, cols, out, n)
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

/// Whether the Q4_1 kernels run their AVX-512 VNNI variant on this CPU.
pub fn uses_vnni() -> bool {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        x86::has_vnni()
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_quantization_matches_the_scalar_definition_bitwise() {
        let mut x: Vec<f32> = (0..32 * 40)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / (1.0 + (i % 13) as f32))
            .collect();
        // Ties at .5 (after scaling), an all-zero block, tiny and huge values.
        x[32..64].fill(0.0);
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.5;
        }
        x[96] = 1e-30;
        x[130] = -3e30;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        quantize_row_q8_1(&x, &mut a);
        quantize_row_q8_1_scalar(&x, &mut b);
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert_eq!(p.qs, q.qs);
            assert_eq!(
                (p.d.to_bits(), p.s.to_bits()),
                (q.d.to_bits(), q.s.to_bits())
            );
        }
    }

    /// The AVX-512 VNNI variant against the AVX2 one, bit for bit, through
    /// the whole matmul (rows in fours and leftovers). Vacuous on CPUs
    /// without VNNI, where the AVX2 variant is the only one that runs.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[test]
    fn vnni_and_avx2_variants_agree_bitwise() {
        if !x86::has_vnni() {
            eprintln!("this CPU has no AVX-512 VNNI: only the AVX2 variant runs here");
            return;
        }
        let (m, n, k) = (7, 5, 96);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0)
            .collect();
        let wq = Q4_1Matrix::quantize(&w, n, k).unwrap();
        let xq = quantize_rows_q8_1(&x, k);
        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
        // SAFETY: VNNI was detected; each call writes its m x n output.
        unsafe {
            x86::cols_avx2(&xq, m, &wq.blocks, k / QK, 0..n, a.as_mut_ptr(), n);
            x86::cols_vnni(&xq, m, &wq.blocks, k / QK, 0..n, b.as_mut_ptr(), n);
        }
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(a.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn simd_and_portable_paths_agree_bitwise() {
        let k = 128;
        let w: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
            .collect();
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0)
            .collect();
        let wq = Q4_1Matrix::quantize(&w, 2, k).unwrap();
        let mut xq = Vec::new();
        quantize_row_q8_1(&x, &mut xq);
        for r in 0..2 {
            let row = &wq.blocks[r * 4..(r + 1) * 4];
            assert_eq!(
                vec_dot_q4_1_q8_1(row, &xq).to_bits(),
                vec_dot_lanes(row, &xq).to_bits()
            );
        }
    }
}
