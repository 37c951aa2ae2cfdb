// cell_common.wgsl: the step parameters and buffer declarations shared by the
// three cell files (prepended after recurrent.wgsl).
//
// Sequence layout (per layer and direction): xg [T, B, G*H] (input projection
// plus b_ih), hs and cs [T+1, B, H] (state slots), out [T, B, out_ld] with this
// direction's columns at out_col. The step at time t reads slot `prev` and
// writes slot `next`: t -> t+1 forward, t+1 -> t in reverse, so the reverse
// direction starts from slot T. Rows past their length (lengths[b] <= t) carry
// their state unchanged and output zeros: PyTorch's packed-sequence semantics.
//
// Inference (p.ring == 1) keeps only two state slots, addressed modulo 2:
// hs and cs are [2, B, H] and nothing is saved for a backward. Gates are
// written only when p.save == 1 (a training forward saves them for its
// backward; an inference forward binds a placeholder there).
//
// Backward: carry [2, 2, B, H] ping-pongs between steps (index `parity` is
// read, 1 - parity written); [., 0] is the gradient flowing straight into the
// previous h, [., 1] the gradient of the previous c (LSTM).

struct Params {
    B: u32,
    H: u32,
    T: u32,
    t: u32,
    reverse: u32,
    first: u32,
    parity: u32,
    has_lengths: u32,
    whh_off: u32,
    bhh_off: u32,
    out_col: u32,
    out_ld: u32,
    relu: u32,
    save: u32,
    ring: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xg: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> lengths: array<i32>;
@group(0) @binding(4) var<storage, read_write> hs: array<f32>;
@group(0) @binding(5) var<storage, read_write> cs: array<f32>;
@group(0) @binding(6) var<storage, read_write> gates: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read> dout: array<f32>;
@group(0) @binding(9) var<storage, read_write> dgh: array<f32>;
@group(0) @binding(10) var<storage, read_write> dgx: array<f32>;
@group(0) @binding(11) var<storage, read_write> carry: array<f32>;

fn is_live(b: u32) -> bool {
    return p.has_lengths == 0u || i32(p.t) < lengths[b];
}

fn slot(s: u32) -> u32 {
    return select(s, s & 1u, p.ring == 1u);
}

fn prev_slot() -> u32 {
    return slot(p.t + p.reverse);
}

fn next_slot() -> u32 {
    return slot(p.t + 1u - p.reverse);
}

// The time step processed just before this one in the backward sweep.
fn later_step() -> u32 {
    return select(p.t + 1u, p.t - 1u, p.reverse == 1u);
}

fn out_index(b: u32, j: u32) -> u32 {
    return (p.t * p.B + b) * p.out_ld + p.out_col + j;
}

fn carry_index(parity: u32, which: u32, b: u32, j: u32) -> u32 {
    return ((parity * 2u + which) * p.B + b) * p.H + j;
}
