//! `e^x` in f32 by an algorithm both devices run step for step.
//!
//! The decoder's two exponentials (SiLU and the softmax of attention) use
//! this instead of libm's `expf`, because the GPU cannot call the C
//! library: its own `exp` is a different approximation, and a last-bit
//! difference in an activation becomes, now and then, a whole step of an
//! 8-bit code once the next projection quantizes it. Here every step is a
//! single IEEE operation with a stated order (no fused multiply-adds,
//! constants given as bits), and `shaders/numerics.wgsl` performs the same
//! steps, so both devices return the same bits for every input.
//!
//! Method: `x = k ln2 + r` with `k = floor(x log2e + 1/2)`, `r` reduced
//! in two steps (Cody-Waite: `ln2`'s high part has few enough bits that
//! `k · ln2_hi` is exact), `e^r` by its Taylor polynomial of degree 7 in
//! Horner's form (`|r| <= ln2 / 2`, truncation error 5e-9), scaled by
//! `2^k`. Accuracy: within 2 ulp of the true value (tested against f64).
//! Results that would be subnormal (below `e^-86.5`) are 0, so that a
//! device that flushes subnormals agrees too; above `ln(f32::MAX)` is
//! infinity.

const OVERFLOW: u32 = 0x42b1_7217; // 88.72283: ln(f32::MAX), rounded down
const UNDERFLOW: u32 = 0xc2ad_0000; // -86.5: e^x stays a normal float above
const LOG2E: u32 = 0x3fb8_aa3b;
const LN2_HI: u32 = 0x3f31_7200; // 0.693145751953125, 15 significant bits
const LN2_LO: u32 = 0x35bf_be8e; // ln 2 - LN2_HI
/// 1/7!, 1/6!, 1/5!, 1/4!, 1/3! (then 1/2, 1 and 1, exact).
const POLY: [u32; 5] = [
    0x3950_0d01,
    0x3ab6_0b61,
    0x3c08_8889,
    0x3d2a_aaab,
    0x3e2a_aaab,
];

#[inline]
fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// `e^x`; see the module doc for how, and why not `f32::exp`.
#[inline]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > f(OVERFLOW) {
        return f32::INFINITY;
    }
    if x < f(UNDERFLOW) {
        return 0.0;
    }
    let k = (x * f(LOG2E) + 0.5).floor();
    let r = (x - k * f(LN2_HI)) - k * f(LN2_LO);
    let mut p = f(POLY[0]);
    for c in &POLY[1..] {
        p = p * r + f(*c);
    }
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let k = k as i32;
    if k > 127 {
        return p * pow2(127) * 2.0;
    }
    p * pow2(k)
}

/// `2^e` for `-126 <= e <= 127`, exactly.
#[inline]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::exp;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn within_two_ulp_of_the_true_value_over_the_normal_range() {
        let mut worst = 0;
        let mut x = -86.5f32;
        while x < 88.7 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_731;
        }
        for x in [
            0.0f32, -0.0, 1e-30, -1e-30, 1e-8, 0.5, -0.5, 1.0, -1.0, 88.72,
        ] {
            worst = worst.max(ulps(exp(x), (x as f64).exp() as f32));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn edges_are_zero_infinity_and_nan() {
        assert_eq!(exp(-86.6), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(-86.4).is_normal());
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(88.72283).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }
}
