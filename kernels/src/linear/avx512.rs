//! The AVX-512 tile of [`super::linear`], chosen at run time on CPUs that
//! have AVX-512F (the binary is built for x86-64-v3, so it cannot assume
//! them): up to 8 rows by 4 columns, twice the work per instruction of the AVX2
//! 4×3 tile, with the same bits.
//!
//! How the bits stay the same: the AVX2 path keeps, per output, eight lane
//! sums, lane `l` adding `x[8i + l] · w[8i + l]` with a fused multiply-add
//! for `i` in order, then folds them ([`crate::simd::hsum`]). Here a
//! 512-bit register holds the eight lane sums of *two* outputs (rows `r`
//! and `r + 1` against one column) side by side: the two rows' chunks are
//! packed next to each other once per call ([`pack_row_pairs`]), and the
//! column's chunk is broadcast to both halves. Each half then performs
//! exactly the AVX2 path's operations, and is folded and finished (the
//! `k % 8` tail) exactly as it is, so every output is bit-identical to the
//! AVX2 path's and a row's result still does not depend on its batch.
//!
//! `SDLAB_NO_AVX512=1` turns it off (to compare, or on a CPU that
//! down-clocks under 512-bit work).

use crate::simd;
use std::arch::x86_64::*;

/// Whether this CPU runs the AVX-512 tile (checked once).
pub(crate) fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("SDLAB_NO_AVX512").is_none()
    })
}

/// Rows of `x: [m, k]` interleaved in pairs, chunk by chunk: pair `p`'s
/// chunk `i` is `x[2p][8i..8i + 8]` then `x[2p + 1][8i..8i + 8]` (16
/// floats); an odd last row is paired with itself (the copy's results are
/// not written). Only the `k / 8` whole chunks; the tails are read from `x`.
pub(crate) fn pack_row_pairs(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let chunks = k / 8;
    let mut packed = Vec::with_capacity(m.div_ceil(2) * chunks * 16);
    for p in 0..m.div_ceil(2) {
        let second = (2 * p + 1).min(m - 1);
        let (a, b) = (&x[2 * p * k..], &x[second * k..]);
        for i in 0..chunks {
            packed.extend_from_slice(&a[8 * i..8 * i + 8]);
            packed.extend_from_slice(&b[8 * i..8 * i + 8]);
        }
    }
    packed
}

/// `out[r, c]` for the given ranges: tiles of 8 rows (the last one of 1 to
/// 7) by 4 columns, and the AVX2 path ([`super::block`]) for columns left
/// over.
///
/// # Safety
/// As [`super::block`]; the CPU has AVX-512F ([`available`]); `packed` is
/// [`pack_row_pairs`] of `x`; `rows.start` is even.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    packed: &[f32],
    x: &[f32],
    w: &[f32],
    k: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    out: *mut f32,
) {
    debug_assert!(rows.start.is_multiple_of(2));
    let mut c = cols.start;
    while c + 4 <= cols.end {
        let mut r = rows.start;
        while r < rows.end {
            let at = Tile {
                r,
                c,
                end: rows.end,
            };
            match (rows.end - r).min(8).div_ceil(2) {
                1 => tile::<1>(packed, x, w, k, n, at, out),
                2 => tile::<2>(packed, x, w, k, n, at, out),
                3 => tile::<3>(packed, x, w, k, n, at, out),
                _ => tile::<4>(packed, x, w, k, n, at, out),
            }
            r += 8;
        }
        c += 4;
    }
    if c < cols.end {
        super::block(x, w, k, n, rows, c..cols.end, out);
    }
}

/// Where a tile starts (row `r`, column `c`) and the first row not to write.
#[derive(Clone, Copy)]
struct Tile {
    r: usize,
    c: usize,
    end: usize,
}

/// `P` row pairs from row `r` against columns `c..c + 4`: `4P` registers of
/// two outputs each; rows at or past `end` are computed but not written.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile<const P: usize>(
    packed: &[f32],
    x: &[f32],
    w: &[f32],
    k: usize,
    n: usize,
    Tile { r, c, end }: Tile,
    out: *mut f32,
) {
    let chunks = k / 8;
    let k8 = chunks * 8;
    let pairs = packed.as_ptr().add(r / 2 * chunks * 16);
    let cols = [0, 1, 2, 3].map(|j| w.as_ptr().add((c + j) * k));
    let mut acc = [[_mm512_setzero_ps(); 4]; P];
    for i in 0..chunks {
        let mut xp = [_mm512_setzero_ps(); P];
        for (p, xp) in xp.iter_mut().enumerate() {
            *xp = _mm512_loadu_ps(pairs.add((p * chunks + i) * 16));
        }
        for (j, col) in cols.iter().enumerate() {
            let wc = _mm256_loadu_pd(col.add(8 * i).cast());
            let wb = _mm512_castpd_ps(_mm512_broadcast_f64x4(wc));
            for (acc, &xp) in acc.iter_mut().zip(&xp) {
                acc[j] = _mm512_fmadd_ps(xp, wb, acc[j]);
            }
        }
    }
    for (p, acc) in acc.iter().enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            let halves = [
                _mm512_castps512_ps256(a),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)),
            ];
            for (h, half) in halves.into_iter().enumerate() {
                let row = r + 2 * p + h;
                if row >= end {
                    continue;
                }
                let (xr, wc) = (&x[row * k..(row + 1) * k], &w[(c + j) * k..(c + j + 1) * k]);
                let mut s = simd::hsum(half);
                for t in k8..k {
                    s = xr[t].mul_add(wc[t], s);
                }
                *out.add(row * n + c + j) = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every shape class (tiles, row and column remainders, k tails) gives
    /// the AVX2 path's bits.
    #[test]
    fn the_avx512_tile_gives_the_avx2_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipping: this CPU has no AVX-512F");
            return;
        }
        let mut seed = 7u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for (m, k, n) in [
            (8, 8, 4),
            (32, 576, 64),
            (9, 70, 7),
            (17, 1, 5),
            (40, 203, 10),
            (8, 7, 4),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            super::super::linear_with(&x, &mut [(&w[..], n, &mut a[..])], m, k, false).unwrap();
            super::super::linear_with(&x, &mut [(&w[..], n, &mut b[..])], m, k, true).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{m}x{k}x{n}");
        }
    }
}
