// softmax_xent.wgsl: row softmax, and softmax cross-entropy fused with its gradient.
//
// Logits are [R, V] with row stride ld. Per-row statistics are kept as
// (max, sum of exp(x - max)) rather than a log-sum-exp, so that the gradient
// exp(x - max) / sum stays accurate for logits of any magnitude. Targets are i32 class indices; a row
// whose target equals ignore_index contributes no loss and no gradient (PyTorch's
// ignore_index); a target outside [0, V) is counted as invalid and ignored, so
// the host can report it when it reads the summary.
//
// Cross-entropy takes three dispatches:
//   xent_rows   one workgroup per row: max, sum of exponentials, loss of the row
//   xent_reduce one workgroup: mean loss over valid rows, in a fixed order
//   xent_grad   one invocation per logit: scale * (softmax - onehot) / count
// summary (at out_off) = [mean loss, valid rows, loss sum, invalid targets,
// rows whose target has the largest logit]. Per-row scratch `stats` holds
// (max, sum of exponentials, target-is-argmax) triples.
// Every reduction uses a fixed assignment of elements to invocations and a
// fixed tree, so results are bitwise reproducible run to run.
//
// argmax_rows (one invocation per row) writes the first index of each row's
// largest logit, as the host's argmax picks it: an evaluation reads back
// [R] predictions instead of [R, V] logits.
// CPU twin: ops::softmax_xent.

struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
    x_off: u32,
    ignore_index: i32,
    out_off: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> summary: array<f32>;
@group(0) @binding(6) var<storage, read> loss_in: array<f32>;
@group(0) @binding(7) var<storage, read> stats_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
@group(0) @binding(9) var<storage, read> summary_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> predicted: array<i32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Max and sum of exp(x - max) of row `row`, reduced across the workgroup.
fn row_stats(row: u32, lid: u32) -> vec2<f32> {
    let base = p.x_off + row * p.ld;
    var m = lowest();
    for (var j = lid; j < p.cols; j += WG) {
        m = max(m, x[base + j]);
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        s += exp(x[base + j] - m);
    }
    s = reduce_sum(lid, s);
    return vec2<f32>(m, s);
}

fn target_class(row: u32) -> i32 {
    return targets[row];
}

fn is_valid(t: i32) -> bool {
    return t != p.ignore_index && t >= 0 && u32(t) < p.cols;
}

@compute @workgroup_size(256)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let st = row_stats(row, lid);
    let inv = 1.0 / st.y;
    let base = p.x_off + row * p.ld;
    for (var j = lid; j < p.cols; j += WG) {
        out[p.out_off + row * p.cols + j] = stored(exp(x[base + j] - st.x) * inv);
    }
}

@compute @workgroup_size(256)
fn xent_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let st = row_stats(row, lid);
    if (lid == 0u) {
        stats[3u * row] = st.x;
        stats[3u * row + 1u] = st.y;
        let t = target_class(row);
        var v = 0.0;
        var hit = 0.0;
        if (is_valid(t)) {
            let xt = x[p.x_off + row * p.ld + u32(t)];
            // (max - x_t) first: exact for huge logits, then the small log term.
            v = (st.x - xt) + log(st.y);
            hit = select(0.0, 1.0, xt >= st.x);
        }
        loss[row] = v;
        stats[3u * row + 2u] = hit;
    }
}

@compute @workgroup_size(256)
fn xent_reduce(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    var valid = 0.0;
    var invalid = 0.0;
    var hits = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        let t = target_class(r);
        if (is_valid(t)) {
            s += loss_in[r];
            valid += 1.0;
            hits += stats_in[3u * r + 2u];
        } else if (t != p.ignore_index) {
            invalid += 1.0;
        }
    }
    red2[lid] = valid;
    let total = reduce_sum(lid, s);
    let count = red2_sum(lid);
    red2[lid] = invalid;
    let bad = red2_sum(lid);
    red2[lid] = hits;
    let correct = red2_sum(lid);
    if (lid == 0u) {
        let o = p.out_off;
        summary[o] = select(0.0, total / count, count > 0.0);
        summary[o + 1u] = count;
        summary[o + 2u] = total;
        summary[o + 3u] = bad;
        summary[o + 4u] = correct;
    }
}

// Sums red2 (already written by every invocation) with the same fixed tree.
fn red2_sum(lid: u32) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red2[lid] += red2[lid + s];
        }
        workgroupBarrier();
    }
    let r = red2[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn xent_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.rows * p.cols) {
        return;
    }
    let row = i / p.cols;
    let col = i % p.cols;
    let t = target_class(row);
    var g = 0.0;
    let count = summary_in[p.out_off + 1u];
    if (is_valid(t) && count > 0.0) {
        let sm = exp(x[p.x_off + row * p.ld + col] - stats_in[3u * row]) / stats_in[3u * row + 1u];
        g = (sm - select(0.0, 1.0, u32(t) == col)) * (p.scale / count);
    }
    out[row * p.cols + col] = stored(g);
}

// predicted[row] = the first column j of row `row` with x[j] > x[best] for
// every earlier best, scanning left to right from best = 0: a NaN is never
// greater, and nothing is greater than a NaN in column 0 (the host's
// `nn::dense::argmax`, with the NaN tests on the bits for Metal's fast math).
// One invocation reads a row of p.cols logits; V is a task's vocabulary.
@compute @workgroup_size(64)
fn argmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let base = p.x_off + row * p.ld;
    var best = 0u;
    var top = x[base];
    let stuck = is_nan_f32(top);
    for (var j = 1u; j < p.cols; j++) {
        let v = x[base + j];
        if (!stuck && !is_nan_f32(v) && v > top) {
            best = j;
            top = v;
        }
    }
    predicted[row] = i32(best);
}
