// reduce.wgsl: deterministic reductions (fixed element-to-invocation
// assignment, fixed tree; no atomics), so results are bitwise reproducible.
//
//   sum_cols        out[c] (+)= sum over r of x[r, c]   (bias gradients)
//                   (rows in 8 strided lanes, the lanes added in a fixed tree)
//   dot_cols        out[c] (+)= sum over r of x[r, c] * y[r, c]   (peephole gradients)
//   reduce_partial  one partial result per chunk of a vector
//   reduce_final    one workgroup folds the partials
// OP: 0 sum, 1 max, 2 sum of squares (the final stage sums the partial sums).
// CPU twin: ops::reduce.

struct Params {
    n: u32,
    cols: u32,
    ld: u32,
    x_off: u32,
    out_off: u32,
    chunk: u32,
    parts: u32,
    flags: u32,
    y_off: u32,
    y_ld: u32,
    out2_off: u32,
    x_pairs: u32,
}

const FLAG_ACCUMULATE: u32 = 1u;
const FLAG_SECOND: u32 = 2u;
const OP_SUM: u32 = 0u;
const OP_MAX: u32 = 1u;
const OP_SUMSQ: u32 = 2u;

override OP: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
// x: f32 words, or (X_LAYOUT 1: f16, 2: bf16; sum_cols and dot_cols) 16-bit
// values packed two a word, paired as common.wgsl's pair_word with period
// p.x_pairs (the LSTM's packed gate gradients).
@group(0) @binding(1) var<storage, read> x: array<u32>;
override X_LAYOUT: u32 = 0u;

fn x_el(i: u32) -> f32 {
    if (X_LAYOUT == 0u) {
        return bitcast<f32>(x[i]);
    }
    let w = pair_word(i, p.x_pairs);
    return unpack_half(x[w.x], w.y, X_LAYOUT);
}
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read> partial_in: array<f32>;
// y (dot_cols): f32 words, or (Y_LAYOUT 1: f16, 2: bf16) 16-bit values two
// a word side by side (a step's packed cell states).
@group(0) @binding(5) var<storage, read> y: array<u32>;
override Y_LAYOUT: u32 = 0u;

fn y_el(i: u32) -> f32 {
    if (Y_LAYOUT == 0u) {
        return bitcast<f32>(y[i]);
    }
    return unpack_half(y[i >> 1u], i & 1u, Y_LAYOUT);
}

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn identity() -> f32 {
    if (OP == OP_MAX) {
        return lowest();
    }
    return 0.0;
}

fn combine(acc: f32, v: f32) -> f32 {
    if (OP == OP_MAX) {
        return max(acc, v);
    }
    return acc + v;
}

fn tree(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = combine(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    return red[0];
}

// Column sums and column dot products: a workgroup of 32 x 8 owns 32
// columns; invocation (lx, ly) adds rows ly, ly + 8, ly + 16, ... of column
// c0 + lx in order (a row's 32 columns are read together), then invocation
// (lx, 0) adds the 8 lanes' sums in a fixed tree. The order depends only on
// the sizes. The result goes to out[out_off + c] (added to it with
// FLAG_ACCUMULATE) and, with FLAG_SECOND, also to out[out2_off + c] (added
// with the same rule): the LSTM's and RNN's b_ih and b_hh take the same sums.
const CL: u32 = 32u;
const RL: u32 = 8u;
var<workgroup> col_part: array<f32, 264>; // [RL][CL + 1]

fn col_finish(lx: u32, ly: u32, c: u32, s: f32) {
    col_part[ly * (CL + 1u) + lx] = s;
    workgroupBarrier();
    if (ly != 0u || c >= p.cols) {
        return;
    }
    let q = lx;
    let w = CL + 1u;
    let total = ((col_part[q] + col_part[w + q]) + (col_part[2u * w + q] + col_part[3u * w + q]))
        + ((col_part[4u * w + q] + col_part[5u * w + q]) + (col_part[6u * w + q] + col_part[7u * w + q]));
    var v = total;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        v += out[p.out_off + c];
    }
    out[p.out_off + c] = v;
    if ((p.flags & FLAG_SECOND) != 0u) {
        var v2 = total;
        if ((p.flags & FLAG_ACCUMULATE) != 0u) {
            v2 += out[p.out2_off + c];
        }
        out[p.out2_off + c] = v2;
    }
}

// Rows are p.n, columns p.cols, row stride p.ld.
@compute @workgroup_size(32, 8)
fn sum_cols(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c = linear_group(wid, nwg) * CL + lid.x;
    var s = 0.0;
    if (c < p.cols) {
        for (var r = lid.y; r < p.n; r += RL) {
            s += x_el(p.x_off + r * p.ld + c);
        }
    }
    col_finish(lid.x, lid.y, c, s);
}

// Rows p.n, columns p.cols; x has row stride p.ld, y row stride p.y_ld.
@compute @workgroup_size(32, 8)
fn dot_cols(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c = linear_group(wid, nwg) * CL + lid.x;
    var s = 0.0;
    if (c < p.cols) {
        for (var r = lid.y; r < p.n; r += RL) {
            s += x_el(p.x_off + r * p.ld + c) * y_el(p.y_off + r * p.y_ld + c);
        }
    }
    col_finish(lid.x, lid.y, c, s);
}

@compute @workgroup_size(256)
fn reduce_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let part = linear_group(wid, nwg);
    if (part >= p.parts) {
        return;
    }
    let start = part * p.chunk;
    let end = min(start + p.chunk, p.n);
    var acc = identity();
    for (var i = start + lid; i < end; i += WG) {
        let v = x_el(p.x_off + i);
        if (OP == OP_SUMSQ) {
            acc += v * v;
        } else {
            acc = combine(acc, v);
        }
    }
    let r = tree(lid, acc);
    if (lid == 0u) {
        partial[part] = r;
    }
}

@compute @workgroup_size(256)
fn reduce_final(@builtin(local_invocation_index) lid: u32) {
    var acc = identity();
    for (var i = lid; i < p.parts; i += WG) {
        acc = combine(acc, partial_in[i]);
    }
    let r = tree(lid, acc);
    if (lid == 0u) {
        var v = r;
        if ((p.flags & FLAG_ACCUMULATE) != 0u) {
            v = combine(out[p.out_off], v);
        }
        out[p.out_off] = v;
    }
}
