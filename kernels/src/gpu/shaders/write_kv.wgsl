// Scatters this step's K and V rows ([tokens, num_kv_heads * head_dim])
// into their slots of one layer's block pools
// ([num_blocks, block_size, num_kv_heads, head_dim], so slot s starts at
// s * row). One invocation per (token, element). Slots outside the pool
// (checked on the host when they are uploaded) are skipped.

struct Params {
    tokens: u32,
    row: u32,
    capacity: u32,
    _p3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> slots: array<u32>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.tokens * p.row) {
        return;
    }
    let t = i / p.row;
    let e = i % p.row;
    let slot = slots[t];
    if (slot < p.capacity) {
        k_cache[slot * p.row + e] = k[i];
        v_cache[slot * p.row + e] = v[i];
    }
}
