// rnn.wgsl: fused vanilla RNN step, forward and backward (PyTorch's nn.RNN).
//
//   h' = f(xg + W_hh h + b_hh)   f = tanh, relu or sigmoid (p.act_f)
//
// Nothing beyond the states is saved (the derivative is read off h'), but
// the clipped pre-activations when clipping (gates [T, B, H]).
// CPU twin: ops::cell (Cell::Rnn).

const G: u32 = 1u;

@compute @workgroup_size(32, 8)
fn rnn_forward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    run_forward(lid, wid, nwg);
}

// No cell state here (flush_pairs in cell_common.wgsl).
fn cs_word(w: u32, word: u32) {}

// Where this step's product vector starts (see run_forward in recurrent.wgsl).
fn forward_base() -> u32 {
    return st.o_hs + prev_slot() * p.B * p.H;
}

// The cell update of rnn_forward for row b, unit j, after the product.
fn forward_at(b: u32, j: u32, acc: array<f32, G>, xin: array<f32, G>) {
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    if (!is_live(b)) {
        hs_store(st.o_hs + next_slot() * bh + hc, hs_load(st.o_hs + prev_slot() * bh + hc));
        out_store(out_index(b, j), 0.0);
        return;
    }
    let idx = (st.t * p.B + b) * p.H + j;
    let z = clip_v(x_pre(idx, xin[0], j) + (acc[0] + wt(st.bhh_off + j)));
    let h = cell_act(p.act_f, z);
    if (p.save == 1u && clipping()) {
        gate_store(st.o_g + idx, z);
    }
    hs_store(st.o_hs + next_slot() * bh + hc, h);
    out_store(out_index(b, j), h);
}

@compute @workgroup_size(32, 8)
fn rnn_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    run_backward(lid, wid, nwg);
}

// Whether this step has a transposed product (see run_backward in
// recurrent.wgsl).
fn backward_has_product(first: bool) -> bool {
    return !first;
}

// Where this step's transposed product starts.
fn backward_base() -> u32 {
    return later_step() * p.B * p.H;
}

// The cell update of rnn_backward for row b, unit j, after the product.
fn backward_at(b: u32, j: u32, acc: f32, up: f32) {
    let hc = b * p.H + j;
    let idx = (st.t * p.B + b) * p.H + j;
    let live = is_live(b);
    var dh = acc + carry[st.o_carry + carry_index(st.parity, 0u, b, j)];
    let out_par = 1u - st.parity;
    if (!live) {
        dg_store(st.o_dgh + idx, 0.0);
        carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(dh);
        return;
    }
    dh += grad_out(b, j, up);
    var d: f32;
    if (clipping()) {
        let z = gate_saved_load(st.o_g + idx);
        d = clip_pass(z, cell_act_back(p.act_f, cell_act(p.act_f, z), dh));
    } else {
        d = cell_act_back(p.act_f, hs_saved_load(st.o_hs + next_slot() * p.B * p.H + hc), dh);
    }
    dg_store(st.o_dgh + idx, d);
    carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(0.0);
}

// Element i of the input-side gate gradients (the input-side gate gradients are the recurrent side's): what a
// wavefront's layer below multiplies by this layer's W_ih.
fn grad_in(i: u32) -> f32 {
    return dg_load(i);
}
