// Embedding gather: out[t, :] = table[ids[t], :], one invocation per output
// element. An id outside the table (which the host checks before upload)
// gives a row of zeros rather than a read out of bounds.

struct Params {
    tokens: u32,
    hidden: u32,
    vocab: u32,
    _p3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.tokens * p.hidden) {
        return;
    }
    let t = i / p.hidden;
    let j = i % p.hidden;
    let id = ids[t];
    if (id < p.vocab) {
        out[i] = table[id * p.hidden + j];
    } else {
        out[i] = 0.0;
    }
}
