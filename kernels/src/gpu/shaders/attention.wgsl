// Paged attention for decode and chunked prefill, over the block pools of
// one layer ([num_blocks, block_size, num_kv_heads, head_dim]).
//
// Each query row comes with two numbers (`rows[2r]`, `rows[2r + 1]`): where
// its sequence's block table starts in `tables`, and its position. The row
// attends causally to positions 0..=position of its sequence, so a decode
// row and every row of a prefill chunk go through the same code. Query head
// h reads KV head h / (num_heads / num_kv_heads) (grouped-query attention).
//
// The arithmetic is the CPU kernel's (kernels::attention), operation for
// operation, so the output has the CPU's bits:
//   score_p = simd::dot(q, k_p) * scale   (8 lanes of single-rounding
//             multiply-adds, folded as simd::fold8, then the tail)
//   m       = max_p score_p
//   sum     = (((0 + e_0) + e_1) + ...)  with e_p = exp_cpu(score_p - m)
//   w_p     = e_p * (1 / sum)
//   o       = fma(v_p, w_p, o) over p in order, from 0.
// One workgroup per (row, head), 64 invocations, three passes over the
// context: the maximum (each invocation scores a strided share of the
// positions; a max is exact in any order), the sum (chunks of 64
// positions scored side by side, added in order by one invocation), and
// the weighted sum (the chunk's weights side by side, then invocation t
// accumulates output elements t, t + 64, ... over the chunk in order).
// Scores are recomputed in each pass rather than stored: recomputing gives
// the same bits, and no buffer of context length is needed.

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
var<workgroup> total: f32;

fn slot(table: u32, pos: u32) -> u32 {
    return tables[table + pos / p.block_size] * p.block_size + pos % p.block_size;
}

// simd::dot(q, k) * scale for the K row of `slot` and KV head `kvh`.
fn score(s: u32, kvh: u32) -> f32 {
    let d = p.head_dim;
    let kb = (s * p.num_kv_heads + kvh) * d;
    let d8 = d / 8u * 8u;
    var acc: array<f32, 8>;
    for (var l = 0u; l < 8u; l++) {
        acc[l] = 0.0;
    }
    for (var j = 0u; j < d8; j += 8u) {
        for (var l = 0u; l < 8u; l++) {
            acc[l] = fma_exact(qs[j + l], k_cache[kb + j + l], acc[l]);
        }
    }
    var sum = fold8(acc);
    for (var j = d8; j < d; j++) {
        sum = fma_exact(qs[j], k_cache[kb + j], sum);
    }
    return sum * p.scale;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    numerics_init(nwg);
    let item = wg.x + wg.y * nwg.x;
    if (item >= p.rows * p.num_heads) {
        return;
    }
    let row = item / p.num_heads;
    let h = item % p.num_heads;
    let kvh = h / (p.num_heads / p.num_kv_heads);
    let d = p.head_dim;
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
    // which the barriers below need (it also orders the q staging).
    let table = workgroupUniformLoad(&meta_table);
    let len = workgroupUniformLoad(&meta_len);

    // Pass 1: the maximum score.
    var m = bitcast<f32>(0xff800000u); // -inf
    for (var pos = t; pos < len; pos += WG) {
        m = max(m, score(slot(table, pos), kvh));
    }
    red[t] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    m = red[0];

    // Pass 2: the sum of exponentials, in position order.
    if (t == 0u) {
        total = 0.0;
    }
    for (var c0 = 0u; c0 < len; c0 += WG) {
        let pos = c0 + t;
        if (pos < len) {
            weights[t] = exp_cpu(score(slot(table, pos), kvh) - m);
        }
        workgroupBarrier();
        if (t == 0u) {
            var acc = total;
            for (var i = 0u; i < min(WG, len - c0); i++) {
                acc = acc + weights[i];
            }
            total = acc;
        }
        workgroupBarrier();
    }
    let inv = 1.0 / workgroupUniformLoad(&total);

    // Pass 3: the weighted sum of V rows, in position order.
    var acc: array<f32, PER>;
    for (var i = 0u; i < PER; i++) {
        acc[i] = 0.0;
    }
    for (var c0 = 0u; c0 < len; c0 += WG) {
        let pos = c0 + t;
        if (pos < len) {
            let sl = slot(table, pos);
            slot_of[t] = sl;
            weights[t] = exp_cpu(score(sl, kvh) - m) * inv;
        }
        workgroupBarrier();
        let n = min(WG, len - c0);
        for (var i = 0u; i < PER; i++) {
            let j = t + i * WG;
            if (j < d) {
                var o = acc[i];
                for (var pp = 0u; pp < n; pp++) {
                    let vb = (slot_of[pp] * p.num_kv_heads + kvh) * d;
                    o = fma_exact(v_cache[vb + j], weights[pp], o);
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
            out[q_base + j] = acc[i];
        }
    }
}
