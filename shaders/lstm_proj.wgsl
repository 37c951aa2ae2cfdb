// lstm_proj.wgsl: the projection of an LSTM with proj_size (PyTorch's
// weight_hr; ops::cell Variant::proj_size), the second dispatch of a forward
// step and the first of a backward step. Here p.H is the projection's P
// (the units these kernels own), p.cell_h the cell's H.
//
//   lstm_project:           h = W_hr m,  m = o * h(c) from the gates' fifth
//                           block (FROM_GATES, vec_ld = 5H, pk = H); rows
//                           past their length carry h and output zeros.
//   lstm_project_backward:  dh = dG_later . W_hh + carry + dout (W_hh
//                           [4H, P], dG rows of dgh at stride dg_ld = 4H + P),
//                           left in dgh's last P columns for lstm_backward,
//                           which takes dm = dh . W_hr from there.
// CPU twin: ops::cell (Cell::Lstm with proj_size).

const G: u32 = 1u;

@compute @workgroup_size(32, 8)
fn lstm_project(
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
    // m = o * h(c), the gates' fifth block.
    return st.o_g + st.t * p.B * p.vec_ld + 4u * p.cell_h;
}

// The cell update of lstm_project for row b, unit j, after the product.
fn forward_at(b: u32, j: u32, acc: array<f32, G>, xin: array<f32, G>) {
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    if (!is_live(b)) {
        hs_store(st.o_hs + next_slot() * bh + hc, hs_load(st.o_hs + prev_slot() * bh + hc));
        out_store(out_index(b, j), 0.0);
        return;
    }
    hs_store(st.o_hs + next_slot() * bh + hc, acc[0]);
    out_store(out_index(b, j), acc[0]);
}

@compute @workgroup_size(32, 8)
fn lstm_project_backward(
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
    return later_step() * p.B * p.dg_ld;
}

// The cell update of lstm_project_backward for row b, unit j, after the product.
fn backward_at(b: u32, j: u32, acc: f32, up: f32) {
    var dh = acc + carry[st.o_carry + carry_index(st.parity, 0u, b, j)];
    if (is_live(b)) {
        dh += dout_load(out_index(b, j));
    }
    dg_store(st.o_dgh + (st.t * p.B + b) * p.dg_ld + 4u * p.cell_h + j, dh);
}

// Element i of the input-side gate gradients (the input-side gate gradients are the recurrent side's): what a
// wavefront's layer below multiplies by this layer's W_ih.
fn grad_in(i: u32) -> f32 {
    return dg_load(i);
}
