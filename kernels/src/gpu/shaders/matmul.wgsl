// Tiled matrix product out[m, n] = x[m, k] · w[n, k]^T, the layout of every
// linear layer (weights as stored, [out_features, in_features]) and of the
// logits against the tied embedding.
//
// A workgroup of 16x16 invocations computes a 64x64 output tile, each
// invocation a 4x4 block of it in registers. The k dimension is walked in
// steps of 16: the workgroup stages a 64x16 slice of x and of w in
// workgroup memory (each invocation loads four values of each), so every
// value read from the buffers serves 64 multiply-adds. Tiles at the edges
// are padded with zeros, so no size has to be a multiple of the tile.
// Accumulation is in f32, in k order within each invocation.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    _p3: u32,
}

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Stored k-major ([kk][row]) so that the inner loop reads four consecutive
// rows (columns) of the tile.
var<workgroup> xs: array<f32, 1024>;
var<workgroup> ws: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    let tx = lid3.x;
    let ty = lid3.y;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 1024 values per tile, 256 invocations: four each. Consecutive
        // invocations read consecutive k of one row.
        for (var e = 0u; e < 4u; e++) {
            let idx = lid + e * 256u;
            let r = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gr = row0 + r;
            var xv = 0.0;
            if (gr < p.m && gk < p.k) {
                xv = x[gr * p.k + gk];
            }
            xs[kk * TM + r] = xv;
            let gc = col0 + r;
            var wv = 0.0;
            if (gc < p.n && gk < p.k) {
                wv = w[gc * p.k + gk];
            }
            ws[kk * TN + r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk * TM + ty * 4u + i];
                b[i] = ws[kk * TN + tx * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + ty * 4u + i;
        if (r >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + tx * 4u + j;
            if (c < p.n) {
                out[r * p.n + c] = acc[i * 4u + j];
            }
        }
    }
}
