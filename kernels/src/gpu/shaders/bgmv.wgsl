// Batched LoRA (BGMV): out[r, :] += scale_s · B_s (A_s x[r, :]) for each row
// r whose adapter slot s = row_slots[r] is not NONE, in two passes.
//
// All adapters' factors are stacked: `a` is [total_rank, k] and `b_t` (B
// transposed) is [total_rank, n]; slot s owns rows slot_meta[4s]..slot_meta[4s] +
// slot_meta[4s + 1] of both, with scale bitcast(slot_meta[4s + 2]).
//
// shrink: one workgroup per (row, i < max_rank): the dot product of x[r]
//   with A_s row i as simd::dot computes it (invocation l < 8 accumulates
//   lane l with single-rounding multiply-adds, then the fold and the tail);
//   t[r, i] = scale · dot (zero for i beyond the slot's rank or rows
//   without an adapter).
// expand: one invocation per (row, column): out[r, c] += Σ_i t[r, i] ·
//   b_t[off + i, c], products added in i order from zero (unfused, as the
//   CPU's loop), read contiguously across invocations.
// Both follow kernels::lora::bgmv's operations, so the deltas are the
// CPU's bits (numerics.wgsl).

struct Params {
    m: u32,
    k: u32,
    n: u32,
    max_rank: u32,
}

const WG: u32 = 64u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b_t: array<f32>;
@group(0) @binding(4) var<storage, read> slot_meta: array<u32>;
@group(0) @binding(5) var<storage, read> row_slots: array<u32>;
@group(0) @binding(6) var<storage, read_write> t_buf: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> lanes: array<f32, 8>;

@compute @workgroup_size(WG)
fn shrink(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let item = wg.x + wg.y * nwg.x;
    if (item >= p.m * p.max_rank) {
        return;
    }
    let r = item / p.max_rank;
    let i = item % p.max_rank;
    let slot = row_slots[r];
    var in_rank = false;
    var off = 0u;
    var scale = 0.0;
    if (slot != NONE) {
        off = slot_meta[4u * slot];
        in_rank = i < slot_meta[4u * slot + 1u];
        scale = bitcast<f32>(slot_meta[4u * slot + 2u]);
    }
    // Every invocation reaches the barrier (it needs uniform control
    // flow); inactive items just sum nothing.
    let ab = (off + i) * p.k;
    let xb = r * p.k;
    let k8 = p.k / 8u * 8u;
    if (lid < 8u) {
        var s = 0.0;
        if (in_rank) {
            for (var j = lid; j < k8; j += 8u) {
                s = fma_exact(x[xb + j], a[ab + j], s);
            }
        }
        lanes[lid] = s;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var s = fold8(lanes);
        if (in_rank) {
            for (var j = k8; j < p.k; j++) {
                s = fma_exact(x[xb + j], a[ab + j], s);
            }
        }
        t_buf[item] = scale * s;
    }
}

@compute @workgroup_size(256)
fn expand(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let idx = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (idx >= p.m * p.n) {
        return;
    }
    let r = idx / p.n;
    let c = idx % p.n;
    let slot = row_slots[r];
    if (slot == NONE) {
        return;
    }
    let off = slot_meta[4u * slot];
    let rank = slot_meta[4u * slot + 1u];
    var d = 0.0;
    for (var i = 0u; i < rank; i++) {
        d = d + keep(t_buf[r * p.max_rank + i] * b_t[(off + i) * p.n + c]);
    }
    out[idx] = out[idx] + d;
}
