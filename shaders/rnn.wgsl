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
    let tile = step_tile(wid, nwg);
    if (tile.x >= p.B) {
        return;
    }
    let bh = p.B * p.H;
    let acc = recurrent_product(tile.x, tile.y, lid.x, lid.y, prev_slot() * bh);
    for (var r = 0u; r < RPI; r++) {
        let bj = tile_cell(tile, lid, r);
        if (bj.x < p.B) {
            rnn_forward_at(bj.x, bj.y, acc[r]);
        }
    }
}

// The cell update of rnn_forward for row b, unit j, after the product.
fn rnn_forward_at(b: u32, j: u32, acc: array<f32, G>) {
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    if (!is_live(b)) {
        hs[next_slot() * bh + hc] = hs[prev_slot() * bh + hc];
        out[out_index(b, j)] = 0.0;
        return;
    }
    let idx = (p.t * p.B + b) * p.H + j;
    let z = clip_v(xg[idx] + (acc[0] + weights[p.bhh_off + j]));
    let h = cell_act(p.act_f, z);
    if (p.save == 1u && clipping()) {
        gates[idx] = z;
    }
    hs[next_slot() * bh + hc] = h;
    out[out_index(b, j)] = h;
}

@compute @workgroup_size(32, 8)
fn rnn_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = step_tile(wid, nwg);
    if (tile.x >= p.B) {
        return;
    }
    var acc: array<f32, RPI>;
    if (p.first == 0u) {
        acc = recurrent_product_t(tile.x, tile.y, lid.x, lid.y, later_step() * p.B * p.H);
    }
    for (var r = 0u; r < RPI; r++) {
        let bj = tile_cell(tile, lid, r);
        if (bj.x < p.B) {
            rnn_backward_at(bj.x, bj.y, acc[r]);
        }
    }
}

// The cell update of rnn_backward for row b, unit j, after the product.
fn rnn_backward_at(b: u32, j: u32, acc: f32) {
    let hc = b * p.H + j;
    let idx = (p.t * p.B + b) * p.H + j;
    let live = is_live(b);
    var dh = acc + carry[carry_index(p.parity, 0u, b, j)];
    let out_par = 1u - p.parity;
    if (!live) {
        dgh[idx] = 0.0;
        carry[carry_index(out_par, 0u, b, j)] = dh;
        return;
    }
    dh += dout[out_index(b, j)];
    var d: f32;
    if (clipping()) {
        let z = gates_saved[idx];
        d = clip_pass(z, cell_act_back(p.act_f, cell_act(p.act_f, z), dh));
    } else {
        d = cell_act_back(p.act_f, hs_saved[next_slot() * p.B * p.H + hc], dh);
    }
    dgh[idx] = d;
    carry[carry_index(out_par, 0u, b, j)] = 0.0;
}
