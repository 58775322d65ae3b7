// Paged attention for decode and chunked prefill, over the block pools of
// one layer ([num_blocks, block_size, num_kv_heads, head_dim]).
//
// Each query row comes with two numbers (`rows[2r]`, `rows[2r + 1]`): where
// its sequence's block table starts in `tables`, and its position. The row
// attends causally to positions 0..=position of its sequence, so a decode
// row and every row of a prefill chunk go through the same code. Query head
// h reads KV head h / (num_heads / num_kv_heads) (grouped-query attention).
//
// One workgroup per (row, head), 64 invocations. The context is walked in
// chunks of 64 positions with an online softmax: each invocation scores one
// position of the chunk (q is staged in workgroup memory), the workgroup
// reduces the chunk's maximum and sum, rescales what it has accumulated by
// exp(old max - new max), and adds the chunk's weighted V rows; invocation
// t owns output elements t, t + 64, ... (up to head_dim 256), so V rows are
// read contiguously across the workgroup.

struct Params {
    rows: u32,
    num_heads: u32,
    num_kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    scale: f32,
    _p6: u32,
    _p7: u32,
}

const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const PER: u32 = 4u; // MAX_D / WG output elements per invocation
const NEG: f32 = -3.0e38; // stands in for -inf (WGSL has no infinity literal)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read> tables: array<u32>;
@group(0) @binding(5) var<storage, read> rows: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

var<workgroup> qs: array<f32, MAX_D>;
var<workgroup> weights: array<f32, WG>;
var<workgroup> slot_of: array<u32, WG>;
var<workgroup> red: array<f32, WG>;
var<workgroup> meta_table: u32;
var<workgroup> meta_len: u32;

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let item = wg.x + wg.y * nwg.x;
    if (item >= p.rows * p.num_heads) {
        return;
    }
    let row = item / p.num_heads;
    let h = item % p.num_heads;
    let kvh = h / (p.num_heads / p.num_kv_heads);
    let d = p.head_dim;
    let kv_row = p.num_kv_heads * d;
    let q_base = (row * p.num_heads + h) * d;

    if (t == 0u) {
        meta_table = rows[2u * row];
        meta_len = rows[2u * row + 1u] + 1u;
    }
    for (var j = t; j < d; j += WG) {
        qs[j] = q[q_base + j];
    }
    // The table offset and context length come from a storage buffer; the
    // uniform load makes them provably the same for the whole workgroup,
    // which the barriers in the loop below need.
    let table = workgroupUniformLoad(&meta_table);
    let len = workgroupUniformLoad(&meta_len);

    var m = NEG;
    var l = 0.0;
    var acc: array<f32, PER>;
    for (var i = 0u; i < PER; i++) {
        acc[i] = 0.0;
    }
    for (var c0 = 0u; c0 < len; c0 += WG) {
        let pos = c0 + t;
        var s = NEG;
        if (pos < len) {
            let slot = tables[table + pos / p.block_size] * p.block_size + pos % p.block_size;
            slot_of[t] = slot;
            let kb = slot * kv_row + kvh * d;
            var qk = 0.0;
            for (var j = 0u; j < d; j++) {
                qk = fma(qs[j], k_cache[kb + j], qk);
            }
            s = qk * p.scale;
        }
        let m_new = max(m, reduce_max(t, s));
        var e = 0.0;
        if (pos < len) {
            e = exp(s - m_new);
        }
        weights[t] = e;
        let alpha = exp(m - m_new);
        l = l * alpha + reduce_sum(t, e);
        m = m_new;
        let n = min(WG, len - c0);
        for (var i = 0u; i < PER; i++) {
            let j = t + i * WG;
            if (j < d) {
                var o = acc[i] * alpha;
                for (var pp = 0u; pp < n; pp++) {
                    o = fma(weights[pp], v_cache[slot_of[pp] * kv_row + kvh * d + j], o);
                }
                acc[i] = o;
            }
        }
        // Nobody may overwrite weights / slot_of for the next chunk while
        // others still read them.
        workgroupBarrier();
    }
    for (var i = 0u; i < PER; i++) {
        let j = t + i * WG;
        if (j < d) {
            out[q_base + j] = acc[i] / l;
        }
    }
}
