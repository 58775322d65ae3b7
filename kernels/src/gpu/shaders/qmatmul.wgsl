// Quantized matmuls, computed as sdlab's CPU kernels compute them
// (kernels::quant for Q4_1 x Q8_1, kernels::q8_0 for Q8_0 x Q8_0): the
// activations are quantized per 32 values to 8-bit codes, each output is a
// row-times-row sum of exact integer dot products scaled per block.
//
// Layouts (u32 words):
// - Q4_1 weights, 6 words a block: d (f32 bits), m (f32 bits), 16 bytes of
//   codes (byte j: code j in its low nibble, code j + 16 in its high one).
// - Q8_0 weights, 9 words a block: d (f32 bits of the f16 scale), 32 int8
//   codes.
// - Quantized activations, 10 words a block: 32 int8 codes, d and s (f32
//   bits of f16-rounded values; s = d·Σq, used by Q4_1's minimum term).
//
// The float operations per output follow the CPU's portable order
// (`vec_dot_lanes`): eight lanes of four products, each lane accumulating
// `fma(d_w·d_x, Σ, acc)` over the blocks (rounded once, numerics.wgsl),
// folded as simd::fold8 folds them, plus (Q4_1) the `m·s` terms; so the
// outputs are the CPU's bits (tested on lavapipe). Vulkan lets division be
// 2.5 ulp off: on a device that uses that freedom an activation scale or
// code at a rounding boundary may still differ.

struct Params {
    m: u32,
    // Blocks per row (k / 32).
    kb: u32,
    n: u32,
    // quantize: 0 for Q8_1 (Q4_1's activations), 1 for Q8_0.
    mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> xq_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> xq: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// x rounded to the nearest f16 (ties to even), as an f32: the quantum is
// 2^(e - 10) for a binade 2^e (e >= -14, f16's subnormals below), and
// scaling by powers of two and `round` are exact.
fn f16_round(x: f32) -> f32 {
    let a = abs(x);
    if (a == 0.0) {
        return x;
    }
    let e = max(i32((bitcast<u32>(a) >> 23u) & 0xffu) - 127, -14);
    return round(x * pow2(10 - e)) * pow2(e - 10);
}

// Rust's f32::round: half away from zero.
fn round_away(v: f32) -> f32 {
    let a = abs(v);
    var r = round(a);
    if (a - floor(a) == 0.5) {
        r = floor(a) + 1.0;
    }
    return select(r, -r, v < 0.0);
}

// The byte b (0..3) of word v as a signed value.
fn i8_of(v: u32, b: u32) -> i32 {
    return bitcast<i32>(v << (24u - 8u * b)) >> 24u;
}

// One invocation per 32-value block of x [m, kb * 32].
@compute @workgroup_size(64)
fn quantize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let blk = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (blk >= p.m * p.kb) {
        return;
    }
    let base = blk * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[base + i]));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if (p.mode == 0u) {
        if (amax != 0.0) {
            id = 127.0 / amax;
        }
    } else if (d != 0.0) {
        id = 1.0 / d;
    }
    var sum = 0i;
    for (var wd = 0u; wd < 8u; wd++) {
        var packed = 0u;
        for (var b = 0u; b < 4u; b++) {
            let v = x[base + wd * 4u + b] * id;
            var q: f32;
            if (p.mode == 0u) {
                q = round(v);
            } else {
                q = round_away(v);
            }
            let qi = i32(clamp(q, -128.0, 127.0));
            sum += qi;
            packed |= (bitcast<u32>(qi) & 0xffu) << (8u * b);
        }
        xq[blk * 10u + wd] = packed;
    }
    xq[blk * 10u + 8u] = bitcast<u32>(f16_round(d));
    xq[blk * 10u + 9u] = bitcast<u32>(f16_round(f32(sum) * d));
}

// One invocation per output (row r, column c) of out [m, n].
@compute @workgroup_size(64)
fn matmul_q4_1(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let idx = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (idx >= p.m * p.n) {
        return;
    }
    let r = idx / p.n;
    let c = idx % p.n;
    var acc: array<f32, 8>;
    for (var l = 0u; l < 8u; l++) {
        acc[l] = 0.0;
    }
    var summs = 0.0;
    for (var b = 0u; b < p.kb; b++) {
        let wb = (c * p.kb + b) * 6u;
        let xb = (r * p.kb + b) * 10u;
        let scale = bitcast<f32>(w[wb]) * bitcast<f32>(xq_in[xb + 8u]);
        for (var l = 0u; l < 8u; l++) {
            // Lanes 0-3: low nibbles of bytes 4l..4l+3; lanes 4-7: high
            // nibbles of bytes 4(l-4)..; activation codes 4l..4l+3.
            let ww = w[wb + 2u + (l & 3u)];
            let shift = select(0u, 4u, l >= 4u);
            let xw = xq_in[xb + l];
            var s = 0i;
            for (var i = 0u; i < 4u; i++) {
                let code = i32((ww >> (8u * i + shift)) & 0xfu);
                s += code * i8_of(xw, i);
            }
            acc[l] = fma_exact(scale, f32(s), acc[l]);
        }
        summs = fma_exact(bitcast<f32>(w[wb + 1u]), bitcast<f32>(xq_in[xb + 9u]), summs);
    }
    out[idx] = fold8(acc) + summs;
}

// One invocation per output (row r, column c) of out [m, n].
@compute @workgroup_size(64)
fn matmul_q8_0(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let idx = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (idx >= p.m * p.n) {
        return;
    }
    let r = idx / p.n;
    let c = idx % p.n;
    var acc: array<f32, 8>;
    for (var l = 0u; l < 8u; l++) {
        acc[l] = 0.0;
    }
    for (var b = 0u; b < p.kb; b++) {
        let wb = (c * p.kb + b) * 9u;
        let xb = (r * p.kb + b) * 10u;
        let scale = bitcast<f32>(w[wb]) * bitcast<f32>(xq_in[xb + 8u]);
        for (var l = 0u; l < 8u; l++) {
            let ww = w[wb + 1u + l];
            let xw = xq_in[xb + l];
            var s = 0i;
            for (var i = 0u; i < 4u; i++) {
                s += i8_of(ww, i) * i8_of(xw, i);
            }
            acc[l] = fma_exact(scale, f32(s), acc[l]);
        }
    }
    out[idx] = fold8(acc);
}
