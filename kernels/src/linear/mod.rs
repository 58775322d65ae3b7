//! Batch-invariant dense linear layer: `out[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! Weights stay in the `[out_features, in_features]` row-major layout that
//! safetensors and GGUF store, so each output element is one dot product of
//! two contiguous rows. A 4×2 register tile reuses every load of `x` and `w`
//! for eight dot products, and the work is split over column ranges of `w`
//! (each range read from memory once per block of rows). Every dot product is
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
    // Column chunks of a multiple of 4 (the widest tile), several per
    // thread for load balance.
    let chunk = (n.div_ceil(threads * 4)).next_multiple_of(4).clamp(4, 256);
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

/// Computes `out[r, c]` for the given row and column ranges.
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
    let mut c = cols.start;
    while c < cols.end {
        let pair = c + 1 < cols.end;
        let mut r = rows.start;
        while r + 4 <= rows.end && pair {
            let d = tile4x2(
                [row(r), row(r + 1), row(r + 2), row(r + 3)],
                [col(c), col(c + 1)],
            );
            for (i, pair_out) in d.iter().enumerate() {
                *out.add((r + i) * n + c) = pair_out[0];
                *out.add((r + i) * n + c + 1) = pair_out[1];
            }
            r += 4;
        }
        while r < rows.end {
            *out.add(r * n + c) = simd::dot(row(r), col(c));
            if pair {
                *out.add(r * n + c + 1) = simd::dot(row(r), col(c + 1));
            }
            r += 1;
        }
        c += 2;
    }
}

/// Eight dot products (4 rows of `x` against 2 rows of `w`), each reduced in
/// [`simd::dot`]'s order.
#[inline]
fn tile4x2(xs: [&[f32]; 4], ws: [&[f32]; 2]) -> [[f32; 2]; 4] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time.
        unsafe { tile4x2_avx2(xs, ws) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        let mut d = [[0f32; 2]; 4];
        for (i, x) in xs.iter().enumerate() {
            for (j, w) in ws.iter().enumerate() {
                d[i][j] = simd::dot(x, w);
            }
        }
        d
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn tile4x2_avx2(xs: [&[f32]; 4], ws: [&[f32]; 2]) -> [[f32; 2]; 4] {
    use std::arch::x86_64::*;
    let k = ws[0].len();
    let k8 = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut i = 0;
    while i < k8 {
        let w0 = _mm256_loadu_ps(ws[0].as_ptr().add(i));
        let w1 = _mm256_loadu_ps(ws[1].as_ptr().add(i));
        for r in 0..4 {
            let xv = _mm256_loadu_ps(xs[r].as_ptr().add(i));
            acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
        }
        i += 8;
    }
    let mut d = [[0f32; 2]; 4];
    for r in 0..4 {
        for j in 0..2 {
            let mut s = simd::hsum(acc[r][j]);
            for t in k8..k {
                s = xs[r][t].mul_add(ws[j][t], s);
            }
            d[r][j] = s;
        }
    }
    d
}
