//! Fixed-order reductions.
//!
//! [`dot`] accumulates eight lanes with fused multiply-adds over the vector in
//! steps of eight, folds the lanes in a fixed tree, then adds the scalar tail.
//! With AVX2+FMA (x86-64-v3, what `.cargo/config.toml` targets) it runs as
//! SIMD; elsewhere a scalar loop performs the very same operations in the same
//! order, so results are bit-identical across both paths.

/// Dot product with a summation order that depends only on `a.len()`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time.
        unsafe { dot_avx2(a, b) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        dot_lanes(a, b)
    }
}

/// Folds eight lane sums in the order the SIMD path uses:
/// (l0+l4, l1+l5, l2+l6, l3+l7), then pairs, then the last pair.
/// Four dot products of `x` against `rows`, in one pass over `x`: each
/// result is bit-identical to [`dot`] (the same reduction per row), but the
/// four independent chains hide the FMA latency one chain waits on.
#[inline]
pub fn dot4(x: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    debug_assert!(rows.iter().all(|r| r.len() == x.len()));
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        unsafe { dot4_avx2(x, rows) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        rows.map(|r| dot(x, r))
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot4_avx2(x: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < n8 {
        let vx = _mm256_loadu_ps(x.as_ptr().add(i));
        for (a, r) in acc.iter_mut().zip(&rows) {
            *a = _mm256_fmadd_ps(vx, _mm256_loadu_ps(r.as_ptr().add(i)), *a);
        }
        i += 8;
    }
    let mut out = [0f32; 4];
    for ((o, a), r) in out.iter_mut().zip(&acc).zip(&rows) {
        let mut s = hsum(*a);
        for j in i..x.len() {
            s = x[j].mul_add(r[j], s);
        }
        *o = s;
    }
    out
}

#[inline]
pub fn fold8(l: [f32; 8]) -> f32 {
    let q = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let p = [q[0] + q[2], q[1] + q[3]];
    p[0] + p[1]
}

/// Portable path with the SIMD path's exact order of operations.
#[allow(dead_code)]
#[inline]
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n8 = a.len() / 8 * 8;
    let mut acc = [0f32; 8];
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = ca[l].mul_add(cb[l], acc[l]);
        }
    }
    let mut s = fold8(acc);
    for i in n8..a.len() {
        s = a[i].mul_add(b[i], s);
    }
    s
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n8 = a.len() / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        let va = _mm256_loadu_ps(a.as_ptr().add(i));
        let vb = _mm256_loadu_ps(b.as_ptr().add(i));
        acc = _mm256_fmadd_ps(va, vb, acc);
        i += 8;
    }
    let mut s = hsum(acc);
    while i < a.len() {
        s = a[i].mul_add(b[i], s);
        i += 1;
    }
    s
}

/// Horizontal sum of eight lanes in [`fold8`]'s order.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
pub(crate) unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    // q = [l0+l4, l1+l5, l2+l6, l3+l7]; p = [q0+q2, q1+q3, ..]
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    let s = _mm_add_ss(p, _mm_shuffle_ps(p, p, 0b01));
    _mm_cvtss_f32(s)
}

/// `out += w * v`, elementwise (the weighted sum of attention values).
#[inline]
pub fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o = x.mul_add(w, *o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_paths_agree_bitwise() {
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 576, 1537] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0)
                .collect();
            assert_eq!(dot(&a, &b).to_bits(), dot_lanes(&a, &b).to_bits(), "n={n}");
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-3 * (1.0 + exact.abs()));
        }
    }
}
