// embed.wgsl: token embedding, forward (gather) and backward (a
// deterministic scatter in O(N·E): the positions are sorted by token, stably,
// then one invocation per table element sums, in position order, the gradient
// rows of its token's positions; no atomics, no float reordering).
// CPU twin: ops::embed.

struct Params {
    n: u32,        // positions
    e: u32,        // embedding width E
    v: u32,        // vocabulary V
    table_off: u32,
    out_off: u32,
    accumulate: u32,
    passes: u32,   // radix passes of embed_sort (4 bits each)
    sorted_off: u32, // where embed_sort leaves the sorted positions
    columns: u32,  // 1: the table is [E, ld], token v's values in column v
    ld: u32,
    bias_off: u32, // columns: the bias the forward adds (in the table's buffer)
    dout_ld: u32,  // row stride of the output gradient
}

// Where token t's element j sits in the table's buffer.
fn table_at(t: u32, j: u32) -> u32 {
    if (p.columns == 1u) {
        return p.table_off + j * p.ld + t;
    }
    return p.table_off + t * p.e + j;
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<i32>;
// f32 words, or 16-bit values packed two a word (TABLE_LAYOUT 1: f16, 2:
// bf16), read through table_el.
@group(0) @binding(2) var<storage, read> table: array<u32>;
override TABLE_LAYOUT: u32 = 0u;

fn table_el(i: u32) -> f32 {
    if (TABLE_LAYOUT == 0u) {
        return bitcast<f32>(table[i]);
    }
    return unpack_half(table[i >> 1u], i & 1u, TABLE_LAYOUT);
}
// The gather's output: f32 words, or (OUT_LAYOUT 1: f16, 2: bf16) 16-bit
// values two a word side by side (the stack's packed input rows), one
// invocation a word so that no two write one word.
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
override OUT_LAYOUT: u32 = 0u;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dtable: array<f32>;
// The sort's scratch [2N + V]: two position arrays [N] (the radix passes
// ping-pong between them) and, at 2N, the first sorted index of each token
// (NONE for a token no position holds).
@group(0) @binding(6) var<storage, read_write> order: array<u32>;
@group(0) @binding(7) var<storage, read> order_in: array<u32>;

// out[n, j] = table[tokens[n], j]; tokens outside [0, V) give zeros. With
// the column layout (a layer's W_ih read for one-hot rows) the bias is
// added, as the product with the one-hot row would add it.
@compute @workgroup_size(256)
fn embed_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    let len = p.n * p.e;
    if (OUT_LAYOUT == 0u) {
        if (i < len) {
            out[p.out_off + i] = bitcast<u32>(stored(embedded(i)));
        }
        return;
    }
    // Word i of the packed output (p.out_off even): elements 2i, 2i + 1; a
    // last odd element keeps the word's other half.
    if (2u * i >= len) {
        return;
    }
    let w = p.out_off / 2u + i;
    if (2u * i + 1u < len) {
        out[w] = pack2(embedded(2u * i), embedded(2u * i + 1u));
    } else {
        out[w] = with_half(out[w], 0u, embedded(2u * i));
    }
}

// Element i of the gather's output (position i / E, column i % E).
fn embedded(i: u32) -> f32 {
    let n = i / p.e;
    let j = i % p.e;
    let t = tokens[n];
    var v = 0.0;
    if (t >= 0 && u32(t) < p.v) {
        v = table_el(table_at(u32(t), j));
    }
    if (p.columns == 1u) {
        v += table_el(p.bias_off + j);
    }
    return v;
}

const NONE: u32 = 0xffffffffu;
const SORT_WG: u32 = 128u;
const RADIX: u32 = 16u;
var<workgroup> digit_count: array<u32, 2048>; // [RADIX][SORT_WG]
var<workgroup> scan_total: array<u32, 128>;

// The sort key of position n: its token, or V for a token outside [0, V)
// (sorted last, never summed).
fn sort_key(n: u32) -> u32 {
    let t = tokens[n];
    if (t >= 0 && u32(t) < p.v) {
        return u32(t);
    }
    return p.v;
}

// One workgroup sorts the positions 0..N by token, stably (an LSD radix
// sort, 4 bits a pass: each invocation counts the digits of its slice of
// positions, an exclusive scan in (digit, invocation) order gives each its
// offsets, and it scatters its slice in order), then records where each
// token's run of positions starts. Every step's order depends only on the
// tokens, so the result is the same on every run.
@compute @workgroup_size(128)
fn embed_sort(@builtin(local_invocation_index) lid: u32) {
    let n = p.n;
    let slice = (n + SORT_WG - 1u) / SORT_WG;
    let lo = min(lid * slice, n);
    let hi = min(lo + slice, n);
    for (var k = lid; k < n; k += SORT_WG) {
        order[k] = k;
    }
    storageBarrier();
    workgroupBarrier();
    for (var round = 0u; round < p.passes; round++) {
        let src = (round % 2u) * n;
        let dst = n - src;
        let shift = 4u * round;
        for (var d = 0u; d < RADIX; d++) {
            digit_count[d * SORT_WG + lid] = 0u;
        }
        for (var k = lo; k < hi; k++) {
            let d = (sort_key(order[src + k]) >> shift) & (RADIX - 1u);
            digit_count[d * SORT_WG + lid] += 1u;
        }
        workgroupBarrier();
        // Exclusive scan of the 2048 counts: 16 consecutive ones each, then
        // the 128 totals by invocation 0, then each adds its base.
        var run = 0u;
        for (var q = 0u; q < 16u; q++) {
            let c = digit_count[lid * 16u + q];
            digit_count[lid * 16u + q] = run;
            run += c;
        }
        scan_total[lid] = run;
        workgroupBarrier();
        if (lid == 0u) {
            var acc = 0u;
            for (var q = 0u; q < SORT_WG; q++) {
                let c = scan_total[q];
                scan_total[q] = acc;
                acc += c;
            }
        }
        workgroupBarrier();
        for (var q = 0u; q < 16u; q++) {
            digit_count[lid * 16u + q] += scan_total[lid];
        }
        workgroupBarrier();
        for (var k = lo; k < hi; k++) {
            let pos = order[src + k];
            let d = (sort_key(pos) >> shift) & (RADIX - 1u);
            let at = digit_count[d * SORT_WG + lid];
            digit_count[d * SORT_WG + lid] = at + 1u;
            order[dst + at] = pos;
        }
        storageBarrier();
        workgroupBarrier();
    }
    let heads = 2u * n;
    for (var t = lid; t < p.v; t += SORT_WG) {
        order[heads + t] = NONE;
    }
    storageBarrier();
    workgroupBarrier();
    let sorted = p.sorted_off;
    for (var k = lid; k < n; k += SORT_WG) {
        let t = sort_key(order[sorted + k]);
        if (t < p.v && (k == 0u || sort_key(order[sorted + k - 1u]) != t)) {
            order[heads + t] = k;
        }
    }
}

// dtable[v, j] (+)= sum over n with tokens[n] == v of dout[n, j], positions
// in order: the run of v's positions that embed_sort left at sorted_off.
@compute @workgroup_size(256)
fn embed_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.v * p.e) {
        return;
    }
    let v = i / p.e;
    let j = i % p.e;
    var s = 0.0;
    let start = order_in[2u * p.n + v];
    if (start != NONE) {
        for (var k = start; k < p.n; k++) {
            let pos = order_in[p.sorted_off + k];
            if (sort_key(pos) != v) {
                break;
            }
            s += dout[p.out_off + pos * p.dout_ld + j];
        }
    }
    let at = table_at(v, j);
    if (p.accumulate != 0u) {
        s += dtable[at];
    }
    dtable[at] = stored(s);
}
