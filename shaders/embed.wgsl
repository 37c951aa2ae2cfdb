// embed.wgsl: token embedding, forward (gather) and backward (deterministic
// scatter: one invocation per table element sums, in order, the gradient rows
// of every position holding its token; no atomics).
// CPU twin: ops::embed.

struct Params {
    n: u32,        // positions
    e: u32,        // embedding width E
    v: u32,        // vocabulary V
    table_off: u32,
    out_off: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dtable: array<f32>;

// out[n, j] = table[tokens[n], j]; tokens outside [0, V) give zeros.
@compute @workgroup_size(256)
fn embed_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n * p.e) {
        return;
    }
    let n = i / p.e;
    let j = i % p.e;
    let t = tokens[n];
    var v = 0.0;
    if (t >= 0 && u32(t) < p.v) {
        v = table[p.table_off + u32(t) * p.e + j];
    }
    out[p.out_off + i] = v;
}

// dtable[v, j] (+)= sum over n with tokens[n] == v of dout[n, j].
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
    let v = i32(i / p.e);
    let j = i % p.e;
    var s = 0.0;
    for (var n = 0u; n < p.n; n++) {
        if (tokens[n] == v) {
            s += dout[n * p.e + j];
        }
    }
    if (p.accumulate != 0u) {
        s += dtable[p.table_off + i];
    }
    dtable[p.table_off + i] = s;
}
