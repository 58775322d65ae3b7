//! Batch-invariant dense linear layer: `out[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! Weights stay in the `[out_features, in_features]` row-major layout that
//! safetensors and GGUF store, so each output element is one dot product of
//! two contiguous rows. A 4×3 register tile (12 accumulators, all but four of
//! the 16 AVX2 registers) reuses every load of `x` and `w` for twelve dot
//! products (at batch 32 it runs 1.14x to 1.40x as fast as the earlier 4×2
//! tile: fewer loads per multiply-add, and more independent chains to hide
//! the FMA latency; `docs/BENCHMARKS.md`), and the work is split over
//! column ranges of `w` (each range read from memory once per block of
//! rows). Every dot product is
//! reduced exactly like [`crate::simd::dot`], so the result for one row is
//! bit-identical whether it is computed alone, in a batch of 16, or in a
//! prefill chunk of 512 — the property continuous batching needs to give the
//! same tokens as one-at-a-time decoding.

use crate::{shape_err, simd, Result};
use rayon::prelude::*;

/// Rows of `x` processed together, so a block of `w` columns stays in cache.
const ROW_BLOCK: usize = 64;

/// `out = x · wᵀ` with `x: [m, k]`, `w: [n, k]`, `out: [m, n]`, all row-major.
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) -> Result<()> {
    linear_with(x, w, m, k, n, out, uses_avx512())
}

/// Whether [`linear`] runs its AVX-512 tile on this CPU (see `avx512.rs`;
/// the results are the same bits either way).
pub fn uses_avx512() -> bool {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        avx512::available()
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

/// [`linear`] with the AVX-512 tile on or off (`avx512` is ignored where
/// the CPU lacks it).
pub(crate) fn linear_with(
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
    avx512: bool,
) -> Result<()> {
    if x.len() != m * k || w.len() != n * k || out.len() != m * n {
        return Err(shape_err(
            "linear",
            format!(
                "x has {} (want {m}x{k}), w has {} (want {n}x{k}), out has {} (want {m}x{n})",
                x.len(),
                w.len(),
                out.len()
            ),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    // Column chunks of a multiple of 12 (the AVX2 tile's 3 columns, the
    // AVX-512 tile's 4), several per thread for load balance.
    let chunk = (n.div_ceil(threads * 4))
        .next_multiple_of(12)
        .clamp(12, 264);
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    let packed = (avx512 && m >= 2 && k >= 8 && avx512::available())
        .then(|| avx512::pack_row_pairs(x, m, k));
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    let _ = avx512;
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let c0 = c * chunk;
        let c1 = (c0 + chunk).min(n);
        let out_ptr = &out_ptr;
        for r0 in (0..m).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(m);
            // SAFETY: each task writes only columns c0..c1 of `out`, and the
            // ranges of different tasks are disjoint; the AVX-512 path runs
            // only where the CPU has it, on rows packed from `x`, and r0 is
            // even.
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            ))]
            if let Some(packed) = &packed {
                unsafe { avx512::block(packed, x, w, k, n, r0..r1, c0..c1, out_ptr.0) };
                continue;
            }
            unsafe { block(x, w, k, n, r0..r1, c0..c1, out_ptr.0) };
        }
    });
    Ok(())
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx512;

pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Computes `out[r, c]` for the given row and column ranges: tiles of 4
/// rows by 3 columns (the last columns of the range by 2 or 1), and one dot
/// product at a time for the rows left over.
///
/// # Safety
/// `out` points to an `m x n` buffer, and no other thread writes these cells.
unsafe fn block(
    x: &[f32],
    w: &[f32],
    k: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    let row = |r: usize| &x[r * k..(r + 1) * k];
    let col = |c: usize| &w[c * k..(c + 1) * k];
    let max_width = tile_columns();
    let mut c = cols.start;
    while c < cols.end {
        let width = (cols.end - c).min(max_width);
        let mut r = rows.start;
        while r + 4 <= rows.end {
            let xs = [row(r), row(r + 1), row(r + 2), row(r + 3)];
            let mut put = |i: usize, j: usize, v: f32| *out.add((r + i) * n + c + j) = v;
            match width {
                3 => tile_cells(&tile4::<3>(xs, [col(c), col(c + 1), col(c + 2)]), &mut put),
                2 => tile_cells(&tile4::<2>(xs, [col(c), col(c + 1)]), &mut put),
                _ => tile_cells(&tile4::<1>(xs, [col(c)]), &mut put),
            }
            r += 4;
        }
        while r < rows.end {
            for j in 0..width {
                *out.add(r * n + c + j) = simd::dot(row(r), col(c + j));
            }
            r += 1;
        }
        c += width;
    }
}

/// Columns per AVX2 tile: 3, or 2 with `SDLAB_F32_TILE_COLS=2` (the
/// earlier 4×2 tile, kept to compare against; the bits are the same).
pub(crate) fn tile_columns() -> usize {
    static COLS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COLS.get_or_init(|| match std::env::var("SDLAB_F32_TILE_COLS").as_deref() {
        Ok("2") => 2,
        _ => 3,
    })
}

/// Hands every cell of a tile's result to `put(row, column, value)`.
#[inline]
fn tile_cells<const C: usize>(d: &[[f32; C]; 4], put: &mut impl FnMut(usize, usize, f32)) {
    for (i, row) in d.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            put(i, j, v);
        }
    }
}

/// `4 * C` dot products (4 rows of `x` against `C` rows of `w`), each
/// reduced in [`simd::dot`]'s order.
#[inline]
fn tile4<const C: usize>(xs: [&[f32]; 4], ws: [&[f32]; C]) -> [[f32; C]; 4] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time.
        unsafe { tile4_avx2(xs, ws) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        let mut d = [[0f32; C]; 4];
        for (i, x) in xs.iter().enumerate() {
            for (j, w) in ws.iter().enumerate() {
                d[i][j] = simd::dot(x, w);
            }
        }
        d
    }
}

/// The AVX2 tile: `4 * C` accumulators of eight lane sums (12 registers at
/// `C = 3`, plus the `C` column chunks; each row chunk is a memory operand).
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn tile4_avx2<const C: usize>(xs: [&[f32]; 4], ws: [&[f32]; C]) -> [[f32; C]; 4] {
    use std::arch::x86_64::*;
    let k = ws[0].len();
    let k8 = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); C]; 4];
    let mut i = 0;
    while i < k8 {
        let wv: [__m256; C] = std::array::from_fn(|j| _mm256_loadu_ps(ws[j].as_ptr().add(i)));
        for r in 0..4 {
            let xv = _mm256_loadu_ps(xs[r].as_ptr().add(i));
            for j in 0..C {
                acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
            }
        }
        i += 8;
    }
    let mut d = [[0f32; C]; 4];
    for r in 0..4 {
        for j in 0..C {
            let mut s = simd::hsum(acc[r][j]);
            for t in k8..k {
                s = xs[r][t].mul_add(ws[j][t], s);
            }
            d[r][j] = s;
        }
    }
    d
}
