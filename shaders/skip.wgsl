// skip.wgsl: the connections between stacked recurrent layers (nn::rnn),
// element-wise over a layer's [T, B, D*H] output.
//
//   residual_forward   y = out + x                       (GNMT's residual stack)
//   highway_forward    t = sigmoid(gate); gate <- t; y = t * out + (1 - t) * x
//   residual_backward  dx = dy                        (the cells' dx is added after)
//   highway_backward   d_out = dy * t, dgate = dy * (out - x) * t * (1 - t),
//                      dx = dy * (1 - t)
//
// x is the layer's input (the layer below's output), out the cells' output,
// gate the transform gate's pre-activation x W_t^T + b_t (computed by a matmul
// before; the forward leaves t in its place for the backward).
// CPU twin: ops::skip.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> saved_gate: array<f32>;
@group(0) @binding(7) var<storage, read_write> d_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_group(wid, nwg) * 256u + lid;
}

@compute @workgroup_size(256)
fn residual_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    y[i] = stored(out[i] + x[i]);
}

@compute @workgroup_size(256)
fn highway_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let t = sigmoid_f(gate[i]);
    gate[i] = stored(t);
    y[i] = stored(t * out[i] + (1.0 - t) * x[i]);
}

@compute @workgroup_size(256)
fn residual_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    dx[i] = stored(dy[i]);
}

@compute @workgroup_size(256)
fn highway_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let t = saved_gate[i];
    let g = dy[i];
    d_out[i] = stored(g * t);
    dgate[i] = stored(g * (out[i] - x[i]) * t * (1.0 - t));
    dx[i] = stored(g * (1.0 - t));
}
