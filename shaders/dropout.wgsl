// dropout.wgsl: inverted dropout with a counter-based generator.
//
// The keep decision of element i is a pure function of (seed, layer, step, i):
// a chain of PCG hashes (Jarzynski & Olano, "Hash Functions for GPU
// Rendering", 2020), so the backward recomputes the mask instead of storing
// it, and the CPU path (ops::dropout) reproduces it bit for bit.
//   y = x * keep / (1 - p),  and the same for dy -> dx.
// A data-parallel rank holds rows offset..offset+batch of a global batch:
// element i of its [T, batch, width] tensor is keyed on its index in the
// global [T, global, width] tensor (width = n, batch = global = 1 unsharded).

struct Params {
    n: u32,
    x_off: u32,
    y_off: u32,
    layer: u32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    p: f32,
    scale: f32,
    width: u32,
    batch: u32,
    offset: u32,
    global: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
fn uniform01(i: u32) -> f32 {
    var h = pcg(i);
    h = pcg(h ^ p.step_lo);
    h = pcg(h ^ p.step_hi);
    h = pcg(h ^ p.layer);
    h = pcg(h ^ p.seed_lo);
    h = pcg(h ^ p.seed_hi);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(256)
fn dropout(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let r = i / p.width;
    let t = r / p.batch;
    let g = (t * p.global + p.offset + r % p.batch) * p.width + i % p.width;
    var v = 0.0;
    if (uniform01(g) >= p.p) {
        v = x[p.x_off + i] * p.scale;
    }
    y[p.y_off + i] = stored(v);
}
