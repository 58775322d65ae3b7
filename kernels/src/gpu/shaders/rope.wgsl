// Rotary position embedding, in place on x: [tokens, heads * head_dim].
// One invocation per (token, head, pair). The angles come from the same
// cos/sin tables the CPU model builds ([max_positions, head_dim / 2]), so
// both sides rotate by identical f32 values. `interleaved` selects the pair
// layout: (2i, 2i + 1) (GGUF / Meta) or (i, i + half) (Hugging Face).

struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    interleaved: u32,
    max_positions: u32,
    _p5: u32,
    _p6: u32,
    _p7: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let half = p.head_dim / 2u;
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.tokens * p.heads * half) {
        return;
    }
    let pair = i % half;
    let head = (i / half) % p.heads;
    let t = i / (half * p.heads);
    let pos = min(positions[t], p.max_positions - 1u);
    let c = cos_t[pos * half + pair];
    let s = sin_t[pos * half + pair];
    let base = (t * p.heads + head) * p.head_dim;
    var a = base + pair;
    var b = base + pair + half;
    if (p.interleaved != 0u) {
        a = base + 2u * pair;
        b = a + 1u;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
