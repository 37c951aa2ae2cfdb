// optim.wgsl: optimizer updates with PyTorch's rules, and gradient clipping by
// global norm, applied without a host round trip.
//
// stats[norm_idx] holds the sum of squared gradients (reduce.wgsl) and, when
// loss_idx is not NO_LOSS, stats[loss_idx] the loss. The whole update is
// skipped (parameters and state untouched) when that sum or the loss is not
// finite, or the sum is negative (its square root, the norm, would be NaN),
// and the host, reading the same stats, reports it. Both are tested by their
// bits as loaded from the buffer (is_finite_f32), never through sqrt or a
// comparison that fast math (Metal) may fold. With max_norm > 0 the gradient
// is scaled by min(1, max_norm / (norm + 1e-6)) (torch.nn.utils.clip_grad_norm_).
//
// gate_updates runs before a step that is recorded while the host has not yet
// read the previous step's stats (an overlapped trainer): when the host will
// stop at that previous step (an invalid target; with FLAG_GATE_FINITE also a
// non-finite loss sum or sum of squares), the updates of this step must not
// happen. It sets every window's sum-of-squares cell to NaN then (0
// otherwise), and the step's reductions add their sums to the cell, so the
// optimizer skips — and a gated step leaves NaN for the next gate to find.
// CPU twin: ops::optim.

struct Params {
    n: u32,
    norm_idx: u32,
    step: u32,
    flags: u32,        // bit 0: nesterov, bit 1: centered (RMSprop), bit 2: first momentum step
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    dampening: f32,
    beta1: f32,        // Adam beta1 / RMSprop alpha
    beta2: f32,
    eps: f32,
    max_norm: f32,
    bias_c1: f32,      // Adam: 1 - beta1^step
    bias_c2_sqrt: f32, // Adam: sqrt(1 - beta2^step)
    loss_idx: u32,     // NO_LOSS: no loss to check
    stride: u32,       // gate_updates: values per window in stats
    invalid_idx: u32,  // gate_updates: the invalid-target count in a window
    grad_scale: f32,   // gradients are of the loss times 1 / grad_scale (loss scaling; 1 otherwise)
    _pad2: u32,
}

const NO_LOSS: u32 = 0xffffffffu;

const NESTEROV: u32 = 1u;
const CENTERED: u32 = 2u;
const FIRST: u32 = 4u;
const FLAG_GATE_FINITE: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> s1: array<f32>;
@group(0) @binding(4) var<storage, read_write> s2: array<f32>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> gate_stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> copy_words: array<u32>;

// The clipping coefficient, or a negative value when the step must be skipped.
fn clip_coef() -> f32 {
    let norm_sq = stats[p.norm_idx];
    if (!is_finite_f32(norm_sq)) {
        return -1.0;
    }
    if (p.loss_idx != NO_LOSS && !is_finite_f32(stats[p.loss_idx])) {
        return -1.0;
    }
    // Finite by now, so the comparison is an ordinary one (the CPU twin's
    // sqrt of a negative sum is NaN and skips).
    if (norm_sq < 0.0) {
        return -1.0;
    }
    if (p.max_norm > 0.0) {
        return min(1.0, p.max_norm / (sqrt(norm_sq) * p.grad_scale + 1e-6)) * p.grad_scale;
    }
    return p.grad_scale;
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_group(wid, nwg) * 256u + lid;
}

// The (clipped, decayed) gradient of element i.
fn grad(i: u32, coef: f32) -> f32 {
    return grads[i] * coef + p.weight_decay * params[i];
}

// Each rule updates element i (its state and params[i]) and returns the
// new parameter (it does nothing, and returns 0, for i >= p.n). The plain
// entry points run one invocation per element; the `_copy` ones one per
// word of copy_words, the packed 16-bit copy of the parameters that the
// passes read (elements 2w and 2w + 1, at STORE), so the update writes the
// copy itself. Both call the same rule element by element, so parameters
// and state come out the same.

fn sgd_at(i: u32, coef: f32) -> f32 {
    if (i >= p.n) {
        return 0.0;
    }
    var g = grad(i, coef);
    if (p.momentum != 0.0) {
        var buf: f32;
        if ((p.flags & FIRST) != 0u) {
            buf = g;
        } else {
            buf = p.momentum * s1[i] + (1.0 - p.dampening) * g;
        }
        s1[i] = buf;
        if ((p.flags & NESTEROV) != 0u) {
            g = g + p.momentum * buf;
        } else {
            g = buf;
        }
    }
    let x = params[i] - p.lr * g;
    params[i] = x;
    return x;
}

fn adagrad_at(i: u32, coef: f32) -> f32 {
    if (i >= p.n) {
        return 0.0;
    }
    let g = grad(i, coef);
    let sum = s1[i] + g * g;
    s1[i] = sum;
    let x = params[i] - p.lr * g / (sqrt(sum) + p.eps);
    params[i] = x;
    return x;
}

fn rmsprop_at(i: u32, coef: f32) -> f32 {
    if (i >= p.n) {
        return 0.0;
    }
    let g = grad(i, coef);
    let alpha = p.beta1;
    let sq = alpha * s1[i] + (1.0 - alpha) * g * g;
    s1[i] = sq;
    var avg: f32;
    if ((p.flags & CENTERED) != 0u) {
        let ga = alpha * s2[p.n + i] + (1.0 - alpha) * g;
        s2[p.n + i] = ga;
        avg = sqrt(sq - ga * ga) + p.eps;
    } else {
        avg = sqrt(sq) + p.eps;
    }
    var x: f32;
    if (p.momentum > 0.0) {
        let buf = p.momentum * s2[i] + g / avg;
        s2[i] = buf;
        x = params[i] - p.lr * buf;
    } else {
        x = params[i] - p.lr * g / avg;
    }
    params[i] = x;
    return x;
}

fn adam_at(i: u32, coef: f32) -> f32 {
    if (i >= p.n) {
        return 0.0;
    }
    let g = grad(i, coef);
    let m = p.beta1 * s1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * s2[i] + (1.0 - p.beta2) * g * g;
    s1[i] = m;
    s2[i] = v;
    let denom = sqrt(v) / p.bias_c2_sqrt + p.eps;
    let x = params[i] - (p.lr / p.bias_c1) * m / denom;
    params[i] = x;
    return x;
}

// The element this invocation updates: p.n (none) past the end or when
// the step is skipped.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, coef: f32) -> u32 {
    let i = index(wid, nwg, lid);
    return select(i, p.n, i >= p.n || coef < 0.0);
}

// The word of copy_words this invocation writes: past the last one when
// it writes none (past the end, or a skipped step: the copy then still
// holds the unchanged parameters).
fn copy_word(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, coef: f32) -> u32 {
    let w = index(wid, nwg, lid);
    let words = (p.n + 1u) / 2u;
    return select(w, words, w >= words || coef < 0.0);
}

// Word w of the copy from its two updated elements (lo: element 2w; hi:
// element 2w + 1, or the word's old high half when that is past p.n).
// Arguments are evaluated left to right, so the rule runs on 2w first.
fn write_copy(w: u32, lo: f32, hi: f32) {
    if (2u * w >= p.n) {
        return;
    }
    var high = copy_words[w] & 0xffff0000u;
    if (2u * w + 1u < p.n) {
        high = packed_bits(hi) << 16u;
    }
    copy_words[w] = high | packed_bits(lo);
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    sgd_at(element(wid, nwg, lid, coef), coef);
}

@compute @workgroup_size(256)
fn sgd_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    let w = copy_word(wid, nwg, lid, coef);
    write_copy(w, sgd_at(2u * w, coef), sgd_at(2u * w + 1u, coef));
}

@compute @workgroup_size(256)
fn adagrad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    adagrad_at(element(wid, nwg, lid, coef), coef);
}

@compute @workgroup_size(256)
fn adagrad_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    let w = copy_word(wid, nwg, lid, coef);
    write_copy(w, adagrad_at(2u * w, coef), adagrad_at(2u * w + 1u, coef));
}

@compute @workgroup_size(256)
fn rmsprop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    rmsprop_at(element(wid, nwg, lid, coef), coef);
}

@compute @workgroup_size(256)
fn rmsprop_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    let w = copy_word(wid, nwg, lid, coef);
    write_copy(w, rmsprop_at(2u * w, coef), rmsprop_at(2u * w + 1u, coef));
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    adam_at(element(wid, nwg, lid, coef), coef);
}

@compute @workgroup_size(256)
fn adam_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let coef = clip_coef();
    let w = copy_word(wid, nwg, lid, coef);
    write_copy(w, adam_at(2u * w, coef), adam_at(2u * w + 1u, coef));
}

// True when the host counts v as at least one invalid target (it reads the
// count as an integer: NaN and negatives are 0, +inf is many).
fn counts_invalid(v: f32) -> bool {
    if (is_nan_f32(v)) {
        return false;
    }
    if (!is_finite_f32(v)) {
        return (bitcast<u32>(v) >> 31u) == 0u;
    }
    return v >= 1.0;
}

// One invocation: p.n windows of p.stride values each in gate_stats, read
// in full before any is written.
@compute @workgroup_size(1)
fn gate_updates() {
    var stop = false;
    for (var c = 0u; c < p.n; c++) {
        let at = c * p.stride;
        if ((p.flags & FLAG_GATE_FINITE) != 0u) {
            if (!is_finite_f32(gate_stats[at + p.norm_idx]) || !is_finite_f32(gate_stats[at + p.loss_idx])) {
                stop = true;
            }
        }
        if (counts_invalid(gate_stats[at + p.invalid_idx])) {
            stop = true;
        }
    }
    // A NaN made at run time (naga refuses NaN constants).
    let nan = bitcast<f32>(0x7fc00000u | (p.flags & 0u));
    let v = select(0.0, nan, stop);
    for (var c = 0u; c < p.n; c++) {
        gate_stats[c * p.stride + p.norm_idx] = v;
    }
}
