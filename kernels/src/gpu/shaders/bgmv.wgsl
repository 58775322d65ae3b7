// Batched LoRA (BGMV): out[r, :] += scale_s · B_s (A_s x[r, :]) for each row
// r whose adapter slot s = row_slots[r] is not NONE, in two passes.
//
// All adapters' factors are stacked: `a` is [total_rank, k] and `b_t` (B
// transposed) is [total_rank, n]; slot s owns rows slot_meta[4s]..slot_meta[4s] +
// slot_meta[4s + 1] of both, with scale bitcast(slot_meta[4s + 2]).
//
// shrink: one workgroup per (row, i < max_rank): the 64 invocations reduce
//   the dot product of x[r] with A_s row i; t[r, i] = scale · dot (zero for
//   i beyond the slot's rank or rows without an adapter).
// expand: one invocation per (row, column): out[r, c] += Σ_i t[r, i] ·
//   b_t[off + i, c], in i order, read contiguously across invocations.

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

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn shrink(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
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
    // Every invocation takes part in the reduction (the barriers need
    // uniform control flow); inactive items just sum zeros.
    var s = 0.0;
    if (in_rank) {
        let ab = (off + i) * p.k;
        let xb = r * p.k;
        for (var j = lid; j < p.k; j += WG) {
            s = fma(a[ab + j], x[xb + j], s);
        }
    }
    red[lid] = s;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st /= 2u) {
        if (lid < st) {
            red[lid] += red[lid + st];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        t_buf[item] = scale * red[0];
    }
}

@compute @workgroup_size(256)
fn expand(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
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
        d = fma(t_buf[r * p.max_rank + i], b_t[(off + i) * p.n + c], d);
    }
    out[idx] += d;
}
