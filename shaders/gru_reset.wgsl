// gru_reset.wgsl: the second dispatch of a reset-before GRU step
// (ops::cell Variant::reset_before; the first is gru.wgsl's, with
// p.reset_before == 1), the product with W_hn of a vector that needs every
// unit's gate:
//
//   forward:  n = g(xg_n + W_hn (r * h) + b_hn), h' = (1 - z) * n + z * h,
//             r * h read from the gates' fourth block (FROM_GATES);
//             the host points whh_off / bhh_off at W_hn and b_hn.
//   backward: dq = dn . W_hn (dn: this step's third dgh block, row stride
//             3H), dr = f'(r) * dq * h, and the carry gains dq * r (the
//             first dispatch left dh' * z there).
// CPU twin: ops::cell (Cell::Gru with reset_before).

const G: u32 = 1u;

@compute @workgroup_size(32, 8)
fn gru_reset_forward(
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
    // r * h_prev, the gates' fourth block.
    return st.o_g + st.t * p.B * 4u * p.H + 3u * p.H;
}

// The cell update of gru_reset_forward for row b, unit j, after the product.
fn forward_at(b: u32, j: u32, acc: array<f32, G>, xin: array<f32, G>) {
    let gh4 = 4u * p.H;
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    let row = (st.t * p.B + b) * 3u * p.H;
    let srow = (st.t * p.B + b) * gh4;
    let h_prev = hs_load(st.o_hs + prev_slot() * bh + hc);
    if (!is_live(b)) {
        hs_store(st.o_hs + next_slot() * bh + hc, h_prev);
        out_store(out_index(b, j), 0.0);
        return;
    }
    let z = gate_value(gate_load(st.o_g + srow + p.H + j), p.act_f).x;
    let zn = clip_v(xg_load(st.o_xg + row + 2u * p.H + j) + (acc[0] + wt(st.bhh_off + j)));
    let n = cell_act(p.act_g, zn);
    let h = (1.0 - z) * n + z * h_prev;
    gate_store(st.o_g + srow + 2u * p.H + j, select(n, zn, clipping()));
    hs_store(st.o_hs + next_slot() * bh + hc, h);
    out_store(out_index(b, j), h);
}

@compute @workgroup_size(32, 8)
fn gru_reset_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    run_backward(lid, wid, nwg);
}

// Whether this step has a transposed product (see run_backward in
// recurrent.wgsl).
fn backward_has_product(first: bool) -> bool {
    return true;
}

// Where this step's transposed product starts.
fn backward_base() -> u32 {
    // This step's dn, the gate gradients' third block.
    return st.t * p.B * 3u * p.H + 2u * p.H;
}

// The cell update of gru_reset_backward for row b, unit j, after the product.
fn backward_at(b: u32, j: u32, acc: f32, up: f32) {
    let gh3 = 3u * p.H;
    let dq = acc;
    let row = (st.t * p.B + b) * gh3;
    if (!is_live(b)) {
        dg_store(st.o_dgh + row + j, 0.0);
        return;
    }
    let gr = saved_gate((st.t * p.B + b) * 4u * p.H, 0u, j, p.act_f);
    let h_prev = hs_saved_load(st.o_hs + prev_slot() * p.B * p.H + b * p.H + j);
    dg_store(st.o_dgh + row + j, clip_pass(gr.y, cell_act_back(p.act_f, gr.x, dq * h_prev)));
    let c = carry_index(1u - st.parity, 0u, b, j);
    carry[st.o_carry + c] = stored(carry[st.o_carry + c] + dq * gr.x);
}

// Element i of the input-side gate gradients (the input-side gate gradients are the recurrent side's): what a
// wavefront's layer below multiplies by this layer's W_ih.
fn grad_in(i: u32) -> f32 {
    return dg_load(i);
}
