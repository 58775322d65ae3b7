// Element-wise kernels, one invocation per element: the residual add
// `x += y` and the SwiGLU activation `out = silu(gate) * up`.
// Workgroups are laid out on a 2D grid (x wraps at the dispatch width) so
// that large tensors stay under the 65535-workgroups-per-dimension limit.

struct Params {
    n: u32,
    _p1: u32,
    _p2: u32,
    _p3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> src2: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// dst[i] += src[i]. Binding 2 is unused here, so the layout derived for
// this entry point has no binding 2.
@compute @workgroup_size(256)
fn add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let i = index(wg, nwg, lid);
    if (i < p.n) {
        dst[i] = dst[i] + src[i];
    }
}

// dst[i] = silu(src[i]) * src2[i], with silu(g) = g / (1 + exp(-g)), the
// same expression and the same exp as the CPU model.
@compute @workgroup_size(256)
fn silu_mul(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    numerics_init(nwg);
    let i = index(wg, nwg, lid);
    if (i < p.n) {
        let g = src[i];
        dst[i] = g / (1.0 + exp_cpu(-g)) * src2[i];
    }
}
