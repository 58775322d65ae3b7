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
//! rows). The one to three rows a batch has beyond a multiple of four get
//! their own narrower tiles (3x3, 2x4, 1x8), still eight or more chains in
//! flight. Every dot product is
//! reduced exactly like [`crate::simd::dot`], so the result for one row is
//! bit-identical whether it is computed alone, in a batch of 16, or in a
//! prefill chunk of 512 — the property continuous batching needs to give the
//! same tokens as one-at-a-time decoding.
//!
//! [`linear_shared`] runs several matrices that read the same input (a
//! layer's q, k and v; gate and up) as one parallel region, with the same
//! bits as separate calls.

use crate::{shape_err, simd, Result};
use rayon::prelude::*;

/// Rows of `x` processed together, so a block of `w` columns stays in cache.
const ROW_BLOCK: usize = 64;

/// `out = x · wᵀ` with `x: [m, k]`, `w: [n, k]`, `out: [m, n]`, all row-major.
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) -> Result<()> {
    linear_with(x, &mut [(w, n, out)], m, k, uses_avx512())
}

/// [`linear`] for several weight matrices that share one input (a layer's
/// q, k and v projections; gate and up): `outs[i] = x · ws[i]ᵀ`, where each
/// entry is `(w, n, out)` with `w: [n, k]` and `out: [m, n]`. Every output
/// cell has the bits [`linear`] gives it; the gain is one parallel region
/// instead of one per matrix (fewer joins per layer, and a small matrix such
/// as k or v no longer leaves a thread idle on its own).
pub fn linear_shared(
    x: &[f32],
    m: usize,
    k: usize,
    ws: &mut [(&[f32], usize, &mut [f32])],
) -> Result<()> {
    linear_with(x, ws, m, k, uses_avx512())
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

/// [`linear_shared`] with the AVX-512 tile on or off (`avx512` is ignored
/// where the CPU lacks it).
pub(crate) fn linear_with(
    x: &[f32],
    ws: &mut [(&[f32], usize, &mut [f32])],
    m: usize,
    k: usize,
    avx512: bool,
) -> Result<()> {
    for (w, n, out) in ws.iter() {
        let n = *n;
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
    }
    let total_n: usize = ws.iter().map(|(_, n, _)| n).sum();
    if m == 0 || total_n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    // Column chunks of a multiple of 12 (the AVX2 tile's 3 columns, the
    // AVX-512 tile's 4), several per thread for load balance.
    let chunk = (total_n.div_ceil(threads * 4))
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
    let run = |w: &[f32], n: usize, out: SendPtr, c0: usize| {
        let c1 = (c0 + chunk).min(n);
        for r0 in (0..m).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(m);
            // SAFETY: each call writes only columns c0..c1 of its own
            // matrix's `out`, and the ranges of different calls are
            // disjoint; the AVX-512 path runs only where the CPU has it, on
            // rows packed from `x`, and r0 is even.
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            ))]
            if let Some(packed) = &packed {
                unsafe { avx512::block(packed, x, w, k, n, r0..r1, c0..c1, out.0) };
                continue;
            }
            unsafe { block(x, w, k, n, r0..r1, c0..c1, out.0) };
        }
    };
    // The matrices' column chunks all go into one parallel region (nested
    // parallel iterators join as one; nothing is allocated per call).
    ws.par_iter_mut().for_each(|(w, n, out)| {
        let (w, n, out) = (*w, *n, SendPtr(out.as_mut_ptr()));
        (0..n.div_ceil(chunk))
            .into_par_iter()
            .for_each(|c| run(w, n, out, c * chunk));
    });
    Ok(())
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx512;

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Computes `out[r, c]` for the given row and column ranges: tiles of 4
/// rows by 3 columns (the last columns of the range by 2 or 1); then the one
/// to three rows left over as one strip, in tiles wide enough to keep at
/// least eight dot products in flight (3x3, 2x4, 1x8). A lone row used to go
/// one dot product at a time, one FMA chain waiting on its own latency: an
/// eighth of the FMA rate, paid whenever the batch size was not a multiple
/// of four, and at every single-sequence decode step.
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
    let fours_end = rows.start + rows.len() / 4 * 4;
    let max_width = tile_columns();
    let mut c = cols.start;
    while c < cols.end && rows.start < fours_end {
        let width = (cols.end - c).min(max_width);
        for r in (rows.start..fours_end).step_by(4) {
            let xs = [row(r), row(r + 1), row(r + 2), row(r + 3)];
            match width {
                3 => store(&tile(xs, [col(c), col(c + 1), col(c + 2)]), out, n, r, c),
                2 => store(&tile(xs, [col(c), col(c + 1)]), out, n, r, c),
                _ => store(&tile(xs, [col(c)]), out, n, r, c),
            }
        }
        c += width;
    }
    let r = fours_end;
    match rows.end - r {
        3 => strip::<3, 3>([row(r), row(r + 1), row(r + 2)], w, k, n, r, cols, out),
        2 => strip::<2, 4>([row(r), row(r + 1)], w, k, n, r, cols, out),
        1 => strip::<1, 8>([row(r)], w, k, n, r, cols, out),
        _ => {}
    }
}

/// Rows `r..r + R` (`xs`) against every column in `cols`: tiles of `C`
/// columns, then one column at a time.
///
/// # Safety
/// As [`block`].
#[allow(clippy::too_many_arguments)]
unsafe fn strip<const R: usize, const C: usize>(
    xs: [&[f32]; R],
    w: &[f32],
    k: usize,
    n: usize,
    r: usize,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    let col = |c: usize| &w[c * k..(c + 1) * k];
    let mut c = cols.start;
    while c + C <= cols.end {
        store(
            &tile(xs, std::array::from_fn::<_, C, _>(|j| col(c + j))),
            out,
            n,
            r,
            c,
        );
        c += C;
    }
    for c in c..cols.end {
        store(&tile(xs, [col(c)]), out, n, r, c);
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

/// Writes a tile's results to `out[r.., c..]` (row stride `n`).
///
/// # Safety
/// As [`block`].
#[inline]
unsafe fn store<const R: usize, const C: usize>(
    d: &[[f32; C]; R],
    out: *mut f32,
    n: usize,
    r: usize,
    c: usize,
) {
    for (i, cells) in d.iter().enumerate() {
        std::ptr::copy_nonoverlapping(cells.as_ptr(), out.add((r + i) * n + c), C);
    }
}

/// `R * C` dot products (`R` rows of `x` against `C` rows of `w`), each
/// reduced in [`simd::dot`]'s order.
#[inline]
fn tile<const R: usize, const C: usize>(xs: [&[f32]; R], ws: [&[f32]; C]) -> [[f32; C]; R] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time.
        unsafe { tile_avx2(xs, ws) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        xs.map(|x| ws.map(|w| simd::dot(x, w)))
    }
}

/// The AVX2 tile: `R * C` accumulators of eight lane sums (12 registers for
/// 4x3, 9 for 3x3, 8 for 2x4 and 1x8), plus the `C` column chunks; each row
/// chunk is loaded once per step and used `C` times.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn tile_avx2<const R: usize, const C: usize>(
    xs: [&[f32]; R],
    ws: [&[f32]; C],
) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let k = ws[0].len();
    let k8 = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut i = 0;
    while i < k8 {
        let wv: [__m256; C] = std::array::from_fn(|j| _mm256_loadu_ps(ws[j].as_ptr().add(i)));
        for r in 0..R {
            let xv = _mm256_loadu_ps(xs[r].as_ptr().add(i));
            for j in 0..C {
                acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
            }
        }
        i += 8;
    }
    let mut d = [[0f32; C]; R];
    for r in 0..R {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile shape `block` uses (4x3, 4x2, 4x1 at the column edge, and
    /// the leftover strips 3x3, 2x4, 1x8 and their one-column tails) gives
    /// each cell the bits of one `simd::dot`.
    #[test]
    fn every_tile_shape_gives_the_bits_of_one_dot_product() {
        for m in 1..=9 {
            for n in [1, 2, 5, 8, 13, 24] {
                for k in [3, 8, 37] {
                    let x: Vec<f32> = (0..m * k)
                        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 9.0)
                        .collect();
                    let w: Vec<f32> = (0..n * k)
                        .map(|i| ((i * 17 % 89) as f32 - 44.0) / 13.0)
                        .collect();
                    let mut out = vec![0f32; m * n];
                    linear_with(&x, &mut [(&w[..], n, &mut out[..])], m, k, false).unwrap();
                    for r in 0..m {
                        for c in 0..n {
                            let want = simd::dot(&x[r * k..(r + 1) * k], &w[c * k..(c + 1) * k]);
                            assert_eq!(
                                out[r * n + c].to_bits(),
                                want.to_bits(),
                                "m={m} n={n} k={k} at ({r}, {c})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Matrices that share an input, run in one parallel region, give each
    /// output the bits of its own `linear` call.
    #[test]
    fn shared_input_gives_the_bits_of_separate_calls() {
        let k = 29;
        let ns = [40, 7, 13];
        let ws: Vec<Vec<f32>> = ns
            .iter()
            .map(|&n| {
                (0..n * k)
                    .map(|i| ((i * 17 % 89) as f32 - 44.0) / 13.0)
                    .collect()
            })
            .collect();
        for m in [0, 1, 2, 5, 9] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 9.0)
                .collect();
            let mut outs: Vec<Vec<f32>> = ns.iter().map(|&n| vec![0f32; m * n]).collect();
            let mut shared: Vec<(&[f32], usize, &mut [f32])> = ws
                .iter()
                .zip(ns)
                .zip(outs.iter_mut())
                .map(|((w, n), out)| (w.as_slice(), n, out.as_mut_slice()))
                .collect();
            linear_shared(&x, m, k, &mut shared).unwrap();
            for ((w, n), got) in ws.iter().zip(ns).zip(&outs) {
                let mut alone = vec![0f32; m * n];
                linear(&x, w, m, k, n, &mut alone).unwrap();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "m={m} n={n}"
                );
            }
        }
        let mut bad = [(&ws[0][..], 41, &mut [0f32; 41][..])];
        assert!(linear_shared(&[0.0; 29], 1, k, &mut bad).is_err());
    }
}
