// For each triple (a, b, c): the device's own fma(a, b, c) and
// fma_exact(a, b, c) (numerics.wgsl, prepended), to find out once per
// context whether `fma` rounds once on this device.

struct Params {
    n: u32,
    _p1: u32,
    _p2: u32,
    _p3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> abc: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.n) {
        return;
    }
    let a = abc[3u * i];
    let b = abc[3u * i + 1u];
    let c = abc[3u * i + 2u];
    out[2u * i] = fma(a, b, c);
    out[2u * i + 1u] = fma_exact(a, b, c);
}
