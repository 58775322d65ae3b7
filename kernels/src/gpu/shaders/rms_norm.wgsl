// Row-wise RMSNorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w,
// with the CPU's bits: the sum of squares is simd::dot(row, row), eight
// lanes of single-rounding multiply-adds over the row in steps of eight
// (invocation l owns lane l), folded in simd::fold8's order, plus the tail;
// then the same divide, add, sqrt, reciprocal and two multiplies.
// One workgroup per row; every invocation then scales a strided slice.

struct Params {
    rows: u32,
    hidden: u32,
    eps: f32,
    _p3: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> lanes: array<f32, 8>;
var<workgroup> inv_rms: f32;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hidden;
    let h8 = p.hidden / 8u * 8u;
    if (lid < 8u) {
        var acc = 0.0;
        for (var j = lid; j < h8; j += 8u) {
            let v = x[base + j];
            acc = fma_exact(v, v, acc);
        }
        lanes[lid] = acc;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var s = fold8(lanes);
        for (var j = h8; j < p.hidden; j++) {
            let v = x[base + j];
            s = fma_exact(v, v, s);
        }
        inv_rms = 1.0 / sqrt(s / f32(p.hidden) + p.eps);
    }
    workgroupBarrier();
    let inv = inv_rms;
    for (var j = lid; j < p.hidden; j += WG) {
        out[base + j] = x[base + j] * inv * w[j];
    }
}
