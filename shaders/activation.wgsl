// activation.wgsl: elementwise activations, forward and backward.
// The functions themselves (act_f, act_d) live in common.wgsl; ACT picks one.
// CPU twin: ops::activation.

struct Params {
    n: u32,
    x_off: u32,
    out_off: u32,
    dy_off: u32,
    slope: f32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
}

const FLAG_ACCUMULATE: u32 = 1u;

override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// y = act(x)
@compute @workgroup_size(256)
fn act_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    y[p.out_off + i] = stored(act_f(ACT, x[p.x_off + i], p.slope));
}

// dx = dy * act'(x)   (or dx += ... with FLAG_ACCUMULATE)
@compute @workgroup_size(256)
fn act_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    var g = dy[p.dy_off + i] * act_d(ACT, x[p.x_off + i], p.slope);
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        g += dx[p.out_off + i];
    }
    dx[p.out_off + i] = stored(g);
}
