// gru.wgsl: fused GRU step, forward and backward (PyTorch's nn.GRU).
//
//   r, z = sigmoid(xg + W_hh h + b_hh)                        gate order r, z, n
//   n = tanh(xg_n + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
//
// The reset gate multiplies the recurrent product including b_hn, so the
// forward saves r, z, n and hn = W_hn h + b_hn: gates is [T, B, 4H] (a
// training forward; p.save == 1).
// The backward writes two gate gradients: dgx (of the input pre-activations,
// for W_ih, b_ih and the input) and dgh (of the recurrent ones, for W_hh, b_hh
// and h); they differ only in the n block, by the factor r.
// Variants (cell_common.wgsl): activations f (r, z) and g (n), clipping of
// the pre-activations, and the reset gate applied before the recurrent
// product (reset_before: n = g(xg_n + W_hn (r * h) + b_hn), Cho et al. 2014,
// ONNX linear_before_reset = 0): this file's kernels then compute r, z and
// save r * h in the fourth gates block (forward), or dz, dn (backward), and
// gru_reset.wgsl's the part that needs every unit's r * h or dn.
// CPU twin: ops::cell (Cell::Gru).

const G: u32 = 3u;

@compute @workgroup_size(32, 8)
fn gru_forward(
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

// The cell update of gru_forward for row b, unit j, after the product.
fn forward_at(b: u32, j: u32, acc: array<f32, G>, xin: array<f32, G>) {
    let bh = p.B * p.H;
    let gh = G * p.H;
    let row = (st.t * p.B + b) * gh;
    let srow = (st.t * p.B + b) * 4u * p.H;
    let hc = b * p.H + j;
    let h_prev = hs_load(st.o_hs + prev_slot() * bh + hc);
    let rb = p.reset_before == 1u;
    if (!is_live(b)) {
        hs_store(st.o_hs + next_slot() * bh + hc, h_prev);
        if (p.save == 1u || rb) {
            gates_zero(st.o_g + srow + j, 4u);
        }
        out_store(out_index(b, j), 0.0);
        return;
    }
    let hr = acc[0] + wt(st.bhh_off + j);
    let hz = acc[1] + wt(st.bhh_off + p.H + j);
    let hn = acc[2] + wt(st.bhh_off + 2u * p.H + j);
    let zr = clip_v(x_pre(row + j, xin[0], j) + hr);
    let zz = clip_v(x_pre(row + p.H + j, xin[1], p.H + j) + hz);
    let r = cell_act(p.act_f, zr);
    let z = cell_act(p.act_f, zz);
    if (rb) {
        // Reset-before: the gates and r * h_prev; gru_reset_forward follows.
        gate_store2(st.o_g + srow + j, select(r, zr, clipping()), select(z, zz, clipping()));
        // (Block 2, the candidate, is gru_reset_forward's.)
        gate_store(st.o_g + srow + 3u * p.H + j, r * h_prev);
        return;
    }
    let zn = clip_v(x_pre(row + 2u * p.H + j, xin[2], 2u * p.H + j) + r * hn);
    let n = cell_act(p.act_g, zn);
    let h = (1.0 - z) * n + z * h_prev;
    if (p.save == 1u) {
        var keep = vec3<f32>(r, z, n);
        if (clipping()) {
            keep = vec3<f32>(zr, zz, zn);
        }
        gate_store2(st.o_g + srow + j, keep.x, keep.y);
        gate_store2(st.o_g + srow + 2u * p.H + j, keep.z, hn);
    }
    hs_store(st.o_hs + next_slot() * bh + hc, h);
    out_store(out_index(b, j), h);
}

@compute @workgroup_size(32, 8)
fn gru_backward(
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
    return later_step() * p.B * G * p.H;
}

// The cell update of gru_backward for row b, unit j, after the product.
fn backward_at(b: u32, j: u32, acc: f32, up: f32) {
    let gh = G * p.H;
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    let row = (st.t * p.B + b) * gh;
    let srow = (st.t * p.B + b) * 4u * p.H;
    let live = is_live(b);
    var dh = acc + carry[st.o_carry + carry_index(st.parity, 0u, b, j)];
    if (live) {
        dh += grad_out(b, j, up);
    }
    let out_par = 1u - st.parity;
    let rb = p.reset_before == 1u;
    if (!live) {
        for (var g = 0u; g < G; g++) {
            dg_store(st.o_dgh + row + g * p.H + j, 0.0);
            if (!rb) {
                dgx[st.o_dgx + row + g * p.H + j] = stored(0.0);
            }
        }
        carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(dh);
        return;
    }
    if (rb) {
        // Reset-before: dz, dn (one buffer: input and recurrent sides agree)
        // and the carry's z part; gru_reset_backward adds dr and the r part.
        let gz = saved_gate(srow, 1u, j, p.act_f);
        let gn = saved_gate(srow, 2u, j, p.act_g);
        let h_prev = hs_saved_load(st.o_hs + prev_slot() * bh + hc);
        let dn = clip_pass(gn.y, cell_act_back(p.act_g, gn.x, dh * (1.0 - gz.x)));
        dg_store(st.o_dgh + row + p.H + j, clip_pass(gz.y, cell_act_back(p.act_f, gz.x, dh * (h_prev - gn.x))));
        dg_store(st.o_dgh + row + 2u * p.H + j, dn);
        carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(dh * gz.x);
        return;
    }
    let gr = saved_gate(srow, 0u, j, p.act_f);
    let gz = saved_gate(srow, 1u, j, p.act_f);
    let gn = saved_gate(srow, 2u, j, p.act_g);
    let r = gr.x;
    let z = gz.x;
    let n = gn.x;
    let hn = gate_saved_load(st.o_g + srow + 3u * p.H + j);
    let h_prev = hs_saved_load(st.o_hs + prev_slot() * bh + hc);
    let dn = clip_pass(gn.y, cell_act_back(p.act_g, n, dh * (1.0 - z)));
    let dr = clip_pass(gr.y, cell_act_back(p.act_f, r, dn * hn));
    let dz = clip_pass(gz.y, cell_act_back(p.act_f, z, dh * (h_prev - n)));
    dgx[st.o_dgx + row + j] = stored(dr);
    dgx[st.o_dgx + row + p.H + j] = stored(dz);
    dgx[st.o_dgx + row + 2u * p.H + j] = stored(dn);
    dg_store(st.o_dgh + row + j, dr);
    dg_store(st.o_dgh + row + p.H + j, dz);
    dg_store(st.o_dgh + row + 2u * p.H + j, dn * r);
    carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(dh * z);
}

// Element i of the input-side gate gradients (dgx (the n block differs from dgh's by r)): what a
// wavefront's layer below multiplies by this layer's W_ih.
fn grad_in(i: u32) -> f32 {
    return dgx[i];
}
