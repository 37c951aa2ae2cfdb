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
// Variants (ops::cell::Variant): the activations act_f (gates), act_g
// (candidate), act_h (LSTM output) are CA_* codes; clip > 0 clips every
// gate's pre-activation to [-clip, clip] (the LSTM's c is never clipped),
// and then the gates buffer holds the clipped pre-activations instead of the
// activations, so the backward knows where the clip stopped the gradient.
// LSTM peepholes: P_i, P_f, P_o at peep_off in the weights; coupled: f = 1 - i.
// GRU reset-before (reset_before == 1): two dispatches a step (gru.wgsl's
// gates, then gru_reset.wgsl's candidate; see there).
// The backward's recurrent product reads dg_rows rows of dgh at row stride dg_ld.
// LSTM projection (proj == 1, lstm_proj.wgsl): h is hp = P wide, c cell_h = H;
// the gates row (gates_ld = 5H) also holds m = o * h(c), the projection's input.
// pk / vec_ld: the forward product's reduction length and vector row stride.
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
    save: u32,
    ring: u32,
    act_f: u32,
    act_g: u32,
    act_h: u32,
    peepholes: u32,
    coupled: u32,
    peep_off: u32,
    clip: f32,
    reset_before: u32,
    dg_ld: u32,
    dg_rows: u32,
    pk: u32,
    vec_ld: u32,
    hp: u32,
    cell_h: u32,
    gates_ld: u32,
    proj: u32,
    dirs: u32,
    d_param: u32,
    d_xg: u32,
    d_hs: u32,
    d_cs: u32,
    d_gates: u32,
    d_dgh: u32,
    d_dgx: u32,
    d_carry: u32,
    k_steps: u32,
    t_down: u32,
    resident: u32,
    wave: u32,
    l0: u32,
    top: u32,
    wih_off: u32,
    bih_off: u32,
    d_out: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// xg, and the backward's dgh: f32 words, or (XG_LAYOUT, DG_LAYOUT 1: f16,
// 2: bf16) 16-bit values two a word in the gates' pairing (gate_word; the
// LSTM's four blocks without a projection: ops::cell::Variant::pairs_rows),
// read and written through xg_load, dg_load, dg_store and dg_store2.
@group(0) @binding(1) var<storage, read> xg: array<u32>;
override XG_LAYOUT: u32 = 0u;
override DG_LAYOUT: u32 = 0u;
// The flat parameters: f32 words, or 16-bit values packed two a word
// (W_LAYOUT 1: f16, 2: bf16), read through wt().
@group(0) @binding(2) var<storage, read> weights: array<u32>;
override W_LAYOUT: u32 = 0u;

// Parameter i.
fn wt(i: u32) -> f32 {
    if (W_LAYOUT == 0u) {
        return bitcast<f32>(weights[i]);
    }
    return unpack_half(weights[i >> 1u], i & 1u, W_LAYOUT);
}
@group(0) @binding(3) var<storage, read> lengths: array<i32>;
// The states hs and cs, the output out and its gradient dout: f32 words, or
// (S_LAYOUT for hs and cs, O_LAYOUT for out, D_LAYOUT for dout; 1: f16,
// 2: bf16) 16-bit values two a word side by side (element e in half e & 1
// of word e >> 1), read through hs_load, cs_load, dout_load (and the
// backward's hs_saved_load, cs_saved_load) and written through hs_store,
// cs_store and out_store. A packed word's two units are two invocations'
// (lanes 2q and 2q + 1 of a tile row): their stores meet in workgroup
// memory and the even lane writes the word (stage_value, flush_pairs), so
// no store needs an atomic. The host packs them only when H and every
// part's start are even (ops::cell::check_packed_states).
@group(0) @binding(4) var<storage, read_write> hs: array<u32>;
@group(0) @binding(5) var<storage, read_write> cs: array<u32>;
override S_LAYOUT: u32 = 0u;
override O_LAYOUT: u32 = 0u;
override D_LAYOUT: u32 = 0u;
// The saved gates: f32 words, or (G_LAYOUT 1: f16, 2: bf16) 16-bit values
// two a word, read and written through gate_load / gate_store (below).
@group(0) @binding(6) var<storage, read_write> gates: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<u32>;
@group(0) @binding(8) var<storage, read> dout: array<u32>;
@group(0) @binding(9) var<storage, read_write> dgh: array<u32>;
@group(0) @binding(10) var<storage, read_write> dgx: array<f32>;
@group(0) @binding(11) var<storage, read_write> carry: array<f32>;
// What the forward saved, bound read-only in the backward (the same buffers
// as hs, cs and gates; a backward kernel never writes them).
@group(0) @binding(12) var<storage, read> hs_saved: array<u32>;
@group(0) @binding(13) var<storage, read> cs_saved: array<u32>;
@group(0) @binding(14) var<storage, read> gates_saved: array<u32>;

// How the gates buffer holds its values (gates and gates_saved alike).
// 0: one f32 a word, element e at word e. 1 (f16), 2 (bf16): two values a
// word, the gate blocks 2q and 2q + 1 of a unit side by side: element
// e = u·H + j (u = e / H counts the H-wide gate blocks over the whole
// buffer) is half u & 1 of word (u >> 1)·H + j. The host packs only rows
// of an even number of blocks whose parts start on a pair
// (ops::cell::check_packed_gates), so both halves of a word are one unit's
// of one row, which a single invocation writes: no store needs an atomic.
override G_LAYOUT: u32 = 0u;

// (word, half) of gate element e in a packed layout.
fn gate_word(e: u32) -> vec2<u32> {
    return pair_word(e, p.H);
}

// Gate element e as the forward's kernels read it back.
fn gate_load(e: u32) -> f32 {
    if (G_LAYOUT == 0u) {
        return bitcast<f32>(gates[e]);
    }
    let w = gate_word(e);
    return unpack_half(gates[w.x], w.y, G_LAYOUT);
}

// Gate element e of what a forward saved, in the backward.
fn gate_saved_load(e: u32) -> f32 {
    if (G_LAYOUT == 0u) {
        return bitcast<f32>(gates_saved[e]);
    }
    let w = gate_word(e);
    return unpack_half(gates_saved[w.x], w.y, G_LAYOUT);
}

// Stores v (rounded to STORE) at gate element e; packed, the other half of
// the word (the same unit's) is kept.
fn gate_store(e: u32, v: f32) {
    if (G_LAYOUT == 0u) {
        gates[e] = bitcast<u32>(stored(v));
        return;
    }
    let w = gate_word(e);
    gates[w.x] = with_half(gates[w.x], w.y, v);
}

// Stores v0 at gate element e and v1 at e + H (blocks 2q and 2q + 1 of one
// unit: e is in an even block): packed, one word.
fn gate_store2(e: u32, v0: f32, v1: f32) {
    if (G_LAYOUT == 0u) {
        gates[e] = bitcast<u32>(stored(v0));
        gates[e + p.H] = bitcast<u32>(stored(v1));
        return;
    }
    gates[gate_word(e).x] = pack2(v0, v1);
}

// Element e of xg.
fn xg_load(e: u32) -> f32 {
    if (XG_LAYOUT == 0u) {
        return bitcast<f32>(xg[e]);
    }
    let w = gate_word(e);
    return unpack_half(xg[w.x], w.y, XG_LAYOUT);
}

// Element e of dgh.
fn dg_load(e: u32) -> f32 {
    if (DG_LAYOUT == 0u) {
        return bitcast<f32>(dgh[e]);
    }
    let w = gate_word(e);
    return unpack_half(dgh[w.x], w.y, DG_LAYOUT);
}

// Stores v (rounded to STORE) at element e of dgh; packed, the other half
// of the word (the same unit's) is kept.
fn dg_store(e: u32, v: f32) {
    if (DG_LAYOUT == 0u) {
        dgh[e] = bitcast<u32>(stored(v));
        return;
    }
    let w = gate_word(e);
    dgh[w.x] = with_half(dgh[w.x], w.y, v);
}

// Stores v0 at element e of dgh and v1 at e + H (blocks 2q and 2q + 1 of
// one unit): packed, one word.
fn dg_store2(e: u32, v0: f32, v1: f32) {
    if (DG_LAYOUT == 0u) {
        dgh[e] = bitcast<u32>(stored(v0));
        dgh[e + p.H] = bitcast<u32>(stored(v1));
        return;
    }
    dgh[gate_word(e).x] = pack2(v0, v1);
}

// Element e of a buffer holding `word` (the word e, or e >> 1 packed) laid
// out as `fmt` says (S_LAYOUT, O_LAYOUT, D_LAYOUT).
fn plain_value(word: u32, e: u32, fmt: u32) -> f32 {
    if (fmt == 0u) {
        return bitcast<f32>(word);
    }
    return unpack_half(word, e & 1u, fmt);
}

// The word of a buffer laid out as `fmt` that holds element e.
fn plain_word(e: u32, fmt: u32) -> u32 {
    return select(e, e >> 1u, fmt != 0u);
}

fn hs_load(e: u32) -> f32 {
    return plain_value(hs[plain_word(e, S_LAYOUT)], e, S_LAYOUT);
}

fn cs_load(e: u32) -> f32 {
    return plain_value(cs[plain_word(e, S_LAYOUT)], e, S_LAYOUT);
}

fn hs_saved_load(e: u32) -> f32 {
    return plain_value(hs_saved[plain_word(e, S_LAYOUT)], e, S_LAYOUT);
}

fn cs_saved_load(e: u32) -> f32 {
    return plain_value(cs_saved[plain_word(e, S_LAYOUT)], e, S_LAYOUT);
}

fn dout_load(e: u32) -> f32 {
    return plain_value(dout[plain_word(e, D_LAYOUT)], e, D_LAYOUT);
}

// The staged stores of a packed step (S_LAYOUT or O_LAYOUT set): which
// buffer (STAGE_HS, STAGE_CS, STAGE_OUT), the update's tile row
// (ly + LY * r) and lane, set by run_forward before each update; and, for
// each of the invocation's RPI rows and each buffer, 1 + the element index
// it stored (0: none).
const STAGE_HS: u32 = 0u;
const STAGE_CS: u32 = 1u;
const STAGE_OUT: u32 = 2u;
const STAGES: u32 = 3u;
var<private> stage_lane: vec3<u32>; // (lane, tile row, r)
var<private> staged: array<u32, 6>; // [RPI][STAGES]

fn packing_states() -> bool {
    return S_LAYOUT != 0u || O_LAYOUT != 0u;
}

// Keeps v for element e of buffer `which` in workgroup memory (rhs_tile,
// free once the step's products have returned) until flush_pairs.
fn stage_value(which: u32, e: u32, v: f32) {
    rhs_tile[(which * TB + stage_lane.y) * TJ + stage_lane.x] = v;
    staged[stage_lane.z * STAGES + which] = e + 1u;
}

// The word of each buffer an even lane staged for its r-th row: its value
// and its odd neighbour's (the same row's next unit), packed. Call between
// two workgroup barriers after the updates. (cs_word, each cell file's,
// stores a word of cs: only the LSTM's kernels bind it.)
fn flush_pairs(lane: u32, row: u32, r: u32) {
    for (var which = 0u; which < STAGES; which++) {
        let e1 = staged[r * STAGES + which];
        if (e1 == 0u) {
            continue;
        }
        let at = (which * TB + row) * TJ + lane;
        let word = pack2(rhs_tile[at], rhs_tile[at + 1u]);
        let w = (e1 - 1u) >> 1u;
        switch which {
            case STAGE_HS: { hs[w] = word; }
            case STAGE_CS: { cs_word(w, word); }
            default: { out[w] = word; }
        }
    }
}

fn hs_store(e: u32, v: f32) {
    if (S_LAYOUT == 0u) {
        hs[e] = bitcast<u32>(stored(v));
        return;
    }
    stage_value(STAGE_HS, e, v);
}

fn cs_store(e: u32, v: f32) {
    if (S_LAYOUT == 0u) {
        cs[e] = bitcast<u32>(stored(v));
        return;
    }
    stage_value(STAGE_CS, e, v);
}

fn out_store(e: u32, v: f32) {
    if (O_LAYOUT == 0u) {
        out[e] = bitcast<u32>(stored(v));
        return;
    }
    stage_value(STAGE_OUT, e, v);
}

// Zeros in the first `blocks` gate blocks of one unit of a row, from its
// element e in block 0: pairs of blocks a store, an odd last block alone.
fn gates_zero(e: u32, blocks: u32) {
    var g = 0u;
    for (; g + 1u < blocks; g += 2u) {
        gate_store2(e + g * p.H, 0.0, 0.0);
    }
    if (g < blocks) {
        gate_store(e + g * p.H, 0.0);
    }
}

// The step this invocation is at: the uniform's fields for one direction
// and one time step of the dispatch (see set_direction, set_step), and the
// element offsets of that direction's part of each per-direction buffer.
struct Step {
    t: u32,
    reverse: u32,
    first: u32,
    parity: u32,
    whh_off: u32,
    bhh_off: u32,
    peep_off: u32,
    out_col: u32,
    d: u32,
    o_xg: u32,
    o_hs: u32,
    o_cs: u32,
    o_g: u32,
    o_dgh: u32,
    o_dgx: u32,
    o_carry: u32,
    o_out: u32,
    wih_off: u32,
    bih_off: u32,
    // A wavefront's layer above the first: its input product is computed in
    // the step (forward). A layer below the top: its output gradient is
    // (backward).
    wave_in: bool,
    wave_up: bool,
}

var<private> st: Step;

// Direction d of the dispatch (p.dirs of them): 0 is the uniform's own; 1,
// the reverse direction beside a forward one, has its parameters p.d_param
// elements further, its buffers' parts p.d_* further, its columns of out
// after direction 0's, and runs at time T - 1 - t.
//
// A wavefront (p.wave: 1 forward, 2 backward) steps p.dirs layers of a
// unidirectional stack instead: part d is layer l = p.l0 + d at time
// p.t - d, every offset the layer's (p.whh_off, ... are layer 0's, layer l's
// l strides further; W_ih and b_ih at p.wih_off, p.bih_off are layer 1's),
// and each buffer binds the whole stack, layer l's part l strides in (out
// and dout: p.d_out).
fn set_direction(d: u32) {
    let wave = p.wave != 0u;
    // The part's index in the weights and buffers: the direction, or the
    // wavefront's layer.
    let k = select(d, p.l0 + d, wave);
    st.d = select(d, 0u, wave);
    st.reverse = select(p.reverse, 1u - p.reverse, d == 1u && !wave);
    st.whh_off = p.whh_off + k * p.d_param;
    st.bhh_off = p.bhh_off + k * p.d_param;
    st.peep_off = p.peep_off + k * p.d_param;
    st.out_col = p.out_col + st.d * p.hp;
    st.o_xg = k * p.d_xg;
    st.o_hs = k * p.d_hs;
    st.o_cs = k * p.d_cs;
    st.o_g = k * p.d_gates;
    st.o_dgh = k * p.d_dgh;
    st.o_dgx = k * p.d_dgx;
    st.o_carry = k * p.d_carry;
    st.o_out = k * p.d_out;
    // Forward: this layer's W_ih (layers above the first); backward: the
    // layer above's (layers below the top).
    st.wave_in = p.wave == 1u && k > 0u;
    st.wave_up = p.wave == 2u && k < p.top;
    if (st.wave_up) {
        st.wih_off = p.wih_off + k * p.d_param;
    }
    if (st.wave_in) {
        st.wih_off = p.wih_off + (k - 1u) * p.d_param;
        st.bih_off = p.bih_off + (k - 1u) * p.d_param;
    }
    if (wave) {
        st.t = p.t - d;
    }
}

// Step s of the p.k_steps this dispatch advances: direction 0's time moves
// from p.t by s, down when p.t_down == 1; only the first is the sweep's
// first; the carries' parity alternates.
fn set_step(s: u32) {
    if (p.wave != 0u) {
        // One step a dispatch; the layer's own sweep decides first and the
        // carries' parity (a backward starts at T - 1 with parity 0).
        st.first = select(0u, 1u, p.wave == 2u && st.t + 1u == p.T);
        st.parity = (p.T - 1u - st.t) % 2u;
        return;
    }
    let t0 = select(p.t + s, p.t - s, p.t_down == 1u);
    st.t = select(t0, p.T - 1u - t0, st.d == 1u);
    st.first = select(0u, p.first, s == 0u);
    st.parity = (p.parity + s) % 2u;
}

// Between the steps of a multi-step dispatch: the states this workgroup
// wrote are what it reads next.
fn step_barrier() {
    storageBarrier();
    workgroupBarrier();
}

fn is_live(b: u32) -> bool {
    return p.has_lengths == 0u || i32(st.t) < lengths[b];
}

fn slot(s: u32) -> u32 {
    return select(s, s & 1u, p.ring == 1u);
}

fn prev_slot() -> u32 {
    return slot(st.t + st.reverse);
}

fn next_slot() -> u32 {
    return slot(st.t + 1u - st.reverse);
}

// The time step processed just before this one in the backward sweep.
fn later_step() -> u32 {
    return select(st.t + 1u, st.t - 1u, st.reverse == 1u);
}

fn out_index(b: u32, j: u32) -> u32 {
    return st.o_out + (st.t * p.B + b) * p.out_ld + st.out_col + j;
}

// The input pre-activation at element i of xg: read from xg, or, for a
// wavefront's layer above the first, its in-step product v plus b_ih at gj
// (gate block and unit).
fn x_pre(i: u32, v: f32, gj: u32) -> f32 {
    if (st.wave_in) {
        // (Rounded as the layer order's xg stores it.)
        return stored(v + wt(st.bih_off + gj));
    }
    return xg_load(st.o_xg + i);
}

// The gradient of the output of row b, unit j (backward): dout's, or, for a
// wavefront's layer below the top, its in-step product `up`.
fn grad_out(b: u32, j: u32, up: f32) -> f32 {
    if (st.wave_up) {
        // (Rounded as the layer order's input gradient stores it.)
        return stored(up);
    }
    return dout_load(out_index(b, j));
}

// carry [2, 2, B, H]: each (parity, which) block is B * cell_h long; the h
// block holds [B, hp] (the state width: P with a projection), the c block [B, H].
fn carry_index(parity: u32, which: u32, b: u32, j: u32) -> u32 {
    let width = select(p.cell_h, p.hp, which == 0u);
    return (parity * 2u + which) * p.B * p.cell_h + b * width + j;
}

const CA_SIGMOID: u32 = 0u;
const CA_TANH: u32 = 1u;
const CA_RELU: u32 = 2u;

fn cell_act(kind: u32, x: f32) -> f32 {
    switch kind {
        case CA_SIGMOID: { return sigmoid_f(x); }
        case CA_TANH: { return tanh_f(x); }
        default: { return max(x, 0.0); }
    }
}

// up * act'(x) read off y = act(x), the products formed left to right
// (up * y * (1 - y), up * (1 - y * y)) as the CPU twin forms them.
fn cell_act_back(kind: u32, y: f32, up: f32) -> f32 {
    switch kind {
        case CA_SIGMOID: { return up * y * (1.0 - y); }
        case CA_TANH: { return up * (1.0 - y * y); }
        default: { return select(0.0, up, y > 0.0); }
    }
}

fn clipping() -> bool {
    return p.clip > 0.0;
}

fn clip_v(x: f32) -> f32 {
    if (clipping()) {
        return min(max(x, -p.clip), p.clip);
    }
    return x;
}

// d where the clipped value z is strictly inside (-clip, clip), else 0.
fn clip_pass(z: f32, d: f32) -> f32 {
    if (clipping() && abs(z) >= p.clip) {
        return 0.0;
    }
    return d;
}

// A saved gate value v: (activation, clipped pre-activation).
fn gate_value(v: f32, kind: u32) -> vec2<f32> {
    if (clipping()) {
        return vec2<f32>(cell_act(kind, v), v);
    }
    return vec2<f32>(v, 0.0);
}

// A saved gate (k-th block of a row at srow), in the backward.
fn saved_gate(srow: u32, k: u32, j: u32, kind: u32) -> vec2<f32> {
    return gate_value(gate_saved_load(st.o_g + srow + k * p.H + j), kind);
}
