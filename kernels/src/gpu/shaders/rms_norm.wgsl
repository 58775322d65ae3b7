// Row-wise RMSNorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w.
// One workgroup per row: each invocation sums the squares of a strided
// slice of the row, a tree reduction in workgroup memory combines them, and
// every invocation then scales its slice.

struct Params {
    rows: u32,
    hidden: u32,
    eps: f32,
    _p3: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hidden;
    var s = 0.0;
    for (var j = lid; j < p.hidden; j += WG) {
        let v = x[base + j];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(p.hidden) + p.eps);
    for (var j = lid; j < p.hidden; j += WG) {
        out[base + j] = x[base + j] * inv * w[j];
    }
}
