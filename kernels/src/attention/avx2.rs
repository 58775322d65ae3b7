//! The AVX2+FMA tiles of [`super::paged_attention`]: scores for four
//! positions times up to three heads at a time, and the weighted sum of V rows
//! held in registers over chunks of positions. Each output is computed by
//! the same operations in the same order as the portable path in the parent
//! module (the tests there compare them bit for bit).

use super::*;

/// How many positions ahead the K and V rows are prefetched: a sequence's
/// blocks are scattered over the pool, which the hardware prefetchers do not
/// follow. Also the positions per chunk of the weighted sum.
const AHEAD: usize = 16;

/// Query heads per register tile (one KV head's group, or part of it).
const TILE_HEADS: usize = 3;

/// 8-float vectors of the head dim per register tile of the weighted sum.
const TILE_VECS: usize = 4;

/// Prefetches the cache lines of `len` floats from `p` into L1.
#[inline(always)]
unsafe fn prefetch(p: *const f32, len: usize) {
    use std::arch::x86_64::*;
    for i in (0..len).step_by(16) {
        _mm_prefetch::<_MM_HINT_T0>(p.add(i).cast());
    }
}

/// Four positions at a time, K rows of all the item's heads, for each KV
/// head and up to [`TILE_HEADS`] of its query heads: one register tile of
/// independent accumulator chains (see [`score_tile`]).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn scores_avx2(
    qg: &[f32],
    k_cache: &[f32],
    rows: &[usize],
    at: Heads,
    scale: f32,
    weights: &mut [f32],
    maxes: &mut [f32],
    lanes: &mut Vec<[f32; 4]>,
) {
    let (n, d) = (rows.len(), at.d);
    let heads = qg.len() / d;
    let tiled = n / 4 * 4;
    lanes.clear();
    lanes.resize(heads, [f32::NEG_INFINITY; 4]);
    let k = k_cache.as_ptr().add(at.col0);
    let span = heads / at.group * d;
    for p in (0..tiled).step_by(4) {
        for &ahead in rows.iter().skip(p + AHEAD).take(4) {
            prefetch(k.add(ahead), span);
        }
        let kp = [
            k.add(rows[p]),
            k.add(rows[p + 1]),
            k.add(rows[p + 2]),
            k.add(rows[p + 3]),
        ];
        for kv in 0..heads / at.group {
            let kp = kp.map(|r| r.add(kv * d));
            let group_end = (kv + 1) * at.group;
            for h0 in (kv * at.group..group_end).step_by(TILE_HEADS) {
                let q = qg.as_ptr().add(h0 * d);
                let w = weights.as_mut_ptr().add(h0 * n + p);
                let m = lanes.as_mut_ptr().add(h0);
                match TILE_HEADS.min(group_end - h0) {
                    1 => score_tile::<1>(q, kp, d, n, scale, w, m),
                    2 => score_tile::<2>(q, kp, d, n, scale, w, m),
                    _ => score_tile::<3>(q, kp, d, n, scale, w, m),
                }
            }
        }
    }
    for (max, lanes) in maxes.iter_mut().zip(lanes.iter()) {
        for &l in lanes {
            *max = max.max(l);
        }
    }
    scores_from(qg, k_cache, rows, tiled, at, scale, weights, maxes);
}

/// Scores of `H` heads (rows of `d` from `q`) at four positions (K rows at
/// `kp`): 4H independent accumulator chains, each exactly [`simd::dot`]'s
/// (fused multiply-adds from 0.0 over the 8-float chunks in order), reduced
/// side by side by [`hsum4`] in [`simd::fold8`]'s order, times `scale`,
/// stored at `w[h * n..][..4]`, and maxed into `lanes[h]`.
#[inline(always)]
unsafe fn score_tile<const H: usize>(
    q: *const f32,
    kp: [*const f32; 4],
    d: usize,
    n: usize,
    scale: f32,
    w: *mut f32,
    lanes: *mut [f32; 4],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 4]; H];
    for j in (0..d).step_by(8) {
        let mut qv = [_mm256_setzero_ps(); H];
        for (h, qv) in qv.iter_mut().enumerate() {
            *qv = _mm256_loadu_ps(q.add(h * d + j));
        }
        for (i, kp) in kp.iter().enumerate() {
            let kv = _mm256_loadu_ps(kp.add(j));
            for (acc, &qv) in acc.iter_mut().zip(&qv) {
                acc[i] = _mm256_fmadd_ps(qv, kv, acc[i]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        let s = _mm_mul_ps(hsum4(acc), _mm_set1_ps(scale));
        _mm_storeu_ps(w.add(h * n), s);
        // NaN scores are skipped, as `f32::max` skips them: `maxps`
        // returns its second operand when either is NaN.
        let m = lanes.add(h).cast::<f32>();
        _mm_storeu_ps(m, _mm_max_ps(s, _mm_loadu_ps(m)));
    }
}

/// `[hsum(a[0]), hsum(a[1]), hsum(a[2]), hsum(a[3])]`: four horizontal sums
/// with exactly [`simd::fold8`]'s additions (`l_i + l_{i+4}`, then
/// `q0 + q2`, `q1 + q3`, then `p0 + p1`), done side by side.
#[inline(always)]
unsafe fn hsum4(a: &[std::arch::x86_64::__m256; 4]) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    // [q(a0) | q(a2)] and [q(a1) | q(a3)], q(x) = x.lo + x.hi.
    let s02 = _mm256_add_ps(
        _mm256_permute2f128_ps(a[0], a[2], 0x20),
        _mm256_permute2f128_ps(a[0], a[2], 0x31),
    );
    let s13 = _mm256_add_ps(
        _mm256_permute2f128_ps(a[1], a[3], 0x20),
        _mm256_permute2f128_ps(a[1], a[3], 0x31),
    );
    // [p(a0), p(a1) | p(a2), p(a3)], p(x) = [q0 + q2, q1 + q3].
    let p = _mm256_add_ps(
        _mm256_shuffle_ps(s02, s13, 0b01_00_01_00),
        _mm256_shuffle_ps(s02, s13, 0b11_10_11_10),
    );
    // [p0 + p1 for a0, a1, a2, a3].
    _mm_hadd_ps(_mm256_castps256_ps128(p), _mm256_extractf128_ps(p, 1))
}

/// Chunks of [`AHEAD`] positions; within a chunk, for each KV head, up to
/// [`TILE_HEADS`] of its query heads times [`TILE_VECS`] vectors of output
/// held in registers (see [`value_tile`]), so a chunk's V rows are read from
/// memory once and then from L1, and the outputs are loaded and stored once
/// per chunk instead of once per position.
pub(super) unsafe fn weighted_sum_avx2(
    v_cache: &[f32],
    rows: &[usize],
    at: Heads,
    weights: &[f32],
    og: &mut [f32],
) {
    let (n, d) = (rows.len(), at.d);
    let heads = og.len() / d;
    let d8 = d / 8 * 8;
    og.fill(0.0);
    let o = og.as_mut_ptr();
    for c in (0..n).step_by(AHEAD) {
        let chunk = c..(c + AHEAD).min(n);
        for kv in 0..heads / at.group {
            let v = v_cache.as_ptr().add(at.col0 + kv * d);
            let group_end = (kv + 1) * at.group;
            for h0 in (kv * at.group..group_end).step_by(TILE_HEADS) {
                let hn = TILE_HEADS.min(group_end - h0);
                let w = weights.as_ptr().add(h0 * n);
                for c0 in (0..d8).step_by(8 * TILE_VECS) {
                    let (v, o) = (v.add(c0), o.add(h0 * d + c0));
                    let p = chunk.clone();
                    match (hn, TILE_VECS.min((d8 - c0) / 8)) {
                        (1, 1) => value_tile::<1, 1>(v, rows, p, w, n, o, d),
                        (1, 2) => value_tile::<1, 2>(v, rows, p, w, n, o, d),
                        (1, 3) => value_tile::<1, 3>(v, rows, p, w, n, o, d),
                        (1, _) => value_tile::<1, 4>(v, rows, p, w, n, o, d),
                        (2, 1) => value_tile::<2, 1>(v, rows, p, w, n, o, d),
                        (2, 2) => value_tile::<2, 2>(v, rows, p, w, n, o, d),
                        (2, 3) => value_tile::<2, 3>(v, rows, p, w, n, o, d),
                        (2, _) => value_tile::<2, 4>(v, rows, p, w, n, o, d),
                        (_, 1) => value_tile::<3, 1>(v, rows, p, w, n, o, d),
                        (_, 2) => value_tile::<3, 2>(v, rows, p, w, n, o, d),
                        (_, 3) => value_tile::<3, 3>(v, rows, p, w, n, o, d),
                        (_, _) => value_tile::<3, 4>(v, rows, p, w, n, o, d),
                    }
                }
                // Tail of a head dim that is not a multiple of 8.
                for h in h0..h0 + hn {
                    for col in d8..d {
                        let mut acc = *o.add(h * d + col);
                        for p in chunk.clone() {
                            acc = (*v.add(rows[p] + col)).mul_add(*w.add((h - h0) * n + p), acc);
                        }
                        *o.add(h * d + col) = acc;
                    }
                }
            }
        }
    }
}

/// `H` heads times `V` vectors of output, loaded from `o` into registers,
/// accumulated over `positions` in order, `o[h][j] = fma(V[p][j], w[h][p],
/// o[h][j])`, and stored back. `v` points at the tile's first column of the
/// KV head, `w` at the first head's weights; also prefetches the tile's
/// columns [`AHEAD`] positions on.
#[inline(always)]
unsafe fn value_tile<const H: usize, const V: usize>(
    v: *const f32,
    rows: &[usize],
    positions: std::ops::Range<usize>,
    w: *const f32,
    n: usize,
    o: *mut f32,
    d: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); V]; H];
    for (h, acc) in acc.iter_mut().enumerate() {
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_loadu_ps(o.add(h * d + 8 * j));
        }
    }
    for p in positions {
        if let Some(&ahead) = rows.get(p + AHEAD) {
            prefetch(v.add(ahead), 8 * V);
        }
        let vp = v.add(rows[p]);
        let mut wv = [_mm256_setzero_ps(); H];
        for (h, wv) in wv.iter_mut().enumerate() {
            *wv = _mm256_set1_ps(*w.add(h * n + p));
        }
        for j in 0..V {
            let x = _mm256_loadu_ps(vp.add(8 * j));
            for (acc, &wv) in acc.iter_mut().zip(&wv) {
                acc[j] = _mm256_fmadd_ps(x, wv, acc[j]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(h * d + 8 * j), a);
        }
    }
}
