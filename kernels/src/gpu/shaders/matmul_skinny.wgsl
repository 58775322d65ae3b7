// The matrix product of matmul.wgsl, out[m, n] = x[m, k] · w[n, k]^T, for
// few rows (decode steps): a 64x64 tile wastes most of its work when m is
// 1, so here a workgroup of 64 invocations computes a 4x64 output tile,
// each invocation one column for 4 rows.
//
// The k dimension is walked in steps of 32: the workgroup stages a 64x32
// slice of w (consecutive invocations read consecutive k of one row, so
// the loads coalesce) and a 4x32 slice of x in workgroup memory.
//
// Each output is accumulated exactly as matmul.wgsl accumulates it: one
// invocation, f32, fma(x, w, acc) in k order from zero, so the two kernels
// give the same bits and the host may pick either by m without a
// sequence's logits depending on the size of its batch.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    _p3: u32,
}

const MR: u32 = 4u;
const TN: u32 = 64u;
const TK: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// k-major: xs[kk * MR + row], ws[kk * TN + column].
var<workgroup> xs: array<f32, 128>;
var<workgroup> ws: array<f32, 2048>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row0 = wg.y * MR;
    let col0 = wg.x * TN;
    var acc: array<f32, 4>;
    for (var i = 0u; i < MR; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 2048 values of w, 32 per invocation.
        for (var e = 0u; e < 32u; e++) {
            let idx = lid + e * 64u;
            let c = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gc = col0 + c;
            var wv = 0.0;
            if (gc < p.n && gk < p.k) {
                wv = w[gc * p.k + gk];
            }
            ws[kk * TN + c] = wv;
        }
        // 128 values of x, 2 per invocation.
        for (var e = 0u; e < 2u; e++) {
            let idx = lid + e * 64u;
            let r = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gr = row0 + r;
            var xv = 0.0;
            if (gr < p.m && gk < p.k) {
                xv = x[gr * p.k + gk];
            }
            xs[kk * MR + r] = xv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let b = ws[kk * TN + lid];
            for (var i = 0u; i < MR; i++) {
                acc[i] = fma(xs[kk * MR + i], b, acc[i]);
            }
        }
        workgroupBarrier();
    }
    let c = col0 + lid;
    if (c < p.n) {
        for (var i = 0u; i < MR; i++) {
            let r = row0 + i;
            if (r < p.m) {
                out[r * p.n + c] = acc[i];
            }
        }
    }
}
