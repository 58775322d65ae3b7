// The CPU's float arithmetic, operation for operation, for the kernels that
// must give the CPU decoder's bits (prepended to their sources by
// context.rs; WGSL has no include).
//
// - fma_exact: a multiply-add rounded once, as the CPU's FMA instructions
//   round it. Vulkan lets `fma` round twice (lavapipe does), so unless the
//   context found the device's `fma` exact (FMA_NATIVE), it is emulated:
//   the product split exactly into two floats (Veltkamp/Dekker), the sum
//   with the addend split exactly (2Sum), and the low parts added with
//   rounding to odd before the final round to nearest, which makes the one
//   rounding exact (Boldo & Melquiond, "Emulation of FMA and correctly
//   rounded sums: proved algorithms using rounding to odd", 2008).
// - exp_cpu: crate::exp's algorithm (Cody-Waite reduction, a degree-7
//   polynomial, scaling by 2^k), with the same constants as f32 bits, so
//   both devices compute every step alike instead of each using its own
//   `exp`.
// - fold8: simd::fold8, the order eight lane sums are folded in.
//
// Shader compilers may rewrite float expressions unless told not to, and
// WGSL cannot tell them: Mesa turns `(a + b) - a` into `b`, which undoes
// 2Sum, and a driver may fuse a product into the add that follows it. So
// every intermediate whose rounding matters goes through `keep`, an OR with
// a zero the compiler cannot know (the dispatch's workgroup count in z,
// always 1, minus one), which no float rewrite can see through. Every
// entry point of a kernel that uses these functions calls
// `numerics_init(num_workgroups)` first.

override FMA_NATIVE: bool = false;

var<private> opaque_zero: u32;

fn numerics_init(nwg: vec3<u32>) {
    opaque_zero = nwg.z - 1u;
}

// x, rounded as it stands, out of the optimizer's reach.
fn keep(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | opaque_zero);
}

fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = keep(a + b);
    let bb = keep(s - a);
    let e = keep(a - keep(s - bb)) + keep(b - bb);
    return vec2<f32>(s, keep(e));
}

// a = hi + lo, each half of the significand (2^12 + 1 splits 24 bits).
fn split(a: f32) -> vec2<f32> {
    let c = keep(4097.0 * a);
    let hi = keep(c - keep(c - a));
    return vec2<f32>(hi, keep(a - hi));
}

fn two_prod(a: f32, b: f32) -> vec2<f32> {
    let p = keep(a * b);
    let x = split(a);
    let y = split(b);
    let e = keep(keep(keep(keep(x.x * y.x) - p) + keep(x.x * y.y)) + keep(x.y * y.x))
        + keep(x.y * y.y);
    return vec2<f32>(p, keep(e));
}

// a + b rounded to odd: when inexact, the neighbour with an odd last bit.
fn add_odd(a: f32, b: f32) -> f32 {
    let s = two_sum(a, b);
    let bits = bitcast<u32>(s.x);
    if (s.y != 0.0 && (bits & 1u) == 0u) {
        // Away from zero if the remainder has the sum's sign, else toward.
        return bitcast<f32>(select(bits - 1u, bits + 1u, (s.y > 0.0) == (s.x > 0.0)));
    }
    return s.x;
}

fn fma_exact(a: f32, b: f32, c: f32) -> f32 {
    if (FMA_NATIVE) {
        return fma(a, b, c);
    }
    let u = two_prod(a, b);
    let t = two_sum(c, u.x);
    return keep(t.x + add_odd(t.y, u.y));
}

fn fold8(l: array<f32, 8>) -> f32 {
    let q0 = l[0] + l[4];
    let q1 = l[1] + l[5];
    let q2 = l[2] + l[6];
    let q3 = l[3] + l[7];
    return (q0 + q2) + (q1 + q3);
}

// 2^e for -126 <= e <= 127 (exact, unlike exp2).
fn pow2(e: i32) -> f32 {
    return bitcast<f32>(u32(e + 127) << 23u);
}

fn exp_cpu(x: f32) -> f32 {
    if (x != x) {
        return x;
    }
    if (x > bitcast<f32>(0x42b17217u)) {
        return bitcast<f32>(0x7f800000u);
    }
    if (x < bitcast<f32>(0xc2ad0000u)) {
        return 0.0;
    }
    let k = floor(keep(x * bitcast<f32>(0x3fb8aa3bu)) + 0.5);
    let r = keep(x - keep(k * bitcast<f32>(0x3f317200u))) - keep(k * bitcast<f32>(0x35bfbe8eu));
    var p = bitcast<f32>(0x39500d01u);
    p = keep(keep(p * r) + bitcast<f32>(0x3ab60b61u));
    p = keep(keep(p * r) + bitcast<f32>(0x3c088889u));
    p = keep(keep(p * r) + bitcast<f32>(0x3d2aaaabu));
    p = keep(keep(p * r) + bitcast<f32>(0x3e2aaaabu));
    p = keep(keep(p * r) + 0.5);
    p = keep(keep(p * r) + 1.0);
    p = keep(keep(p * r) + 1.0);
    let ki = i32(k);
    if (ki > 127) {
        return keep(p * pow2(127) * 2.0);
    }
    return keep(p * pow2(ki));
}
