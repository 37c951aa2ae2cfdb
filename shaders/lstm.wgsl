// lstm.wgsl: fused LSTM step, forward and backward (PyTorch's nn.LSTM).
//
//   i, f, o = sigmoid(xg + W_hh h + b_hh), g = tanh(...)   gate order i, f, g, o
//   c' = f * c + i * g,  h' = o * tanh(c')
//
// One dispatch per time step: the recurrent product of all four gates (recurrent.wgsl,
// tiled or split) and the cell update in the same invocation. The forward
// saves the gate activations [T, B, 4H] (a training forward; p.save == 1);
// c comes from the cs slots.
// CPU twin: ops::cell (Cell::Lstm).

const G: u32 = 4u;

@compute @workgroup_size(32, 8)
fn lstm_forward(
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
    let bj = tile_cell(tile, lid);
    let b = bj.x;
    let j = bj.y;
    if (b >= p.B) {
        return;
    }
    let gh = G * p.H;
    let row = (p.t * p.B + b) * gh;
    let hc = b * p.H + j;
    let c_prev = cs[prev_slot() * bh + hc];
    if (!is_live(b)) {
        hs[next_slot() * bh + hc] = hs[prev_slot() * bh + hc];
        cs[next_slot() * bh + hc] = c_prev;
        if (p.save == 1u) {
            for (var g = 0u; g < G; g++) {
                gates[row + g * p.H + j] = 0.0;
            }
        }
        out[out_index(b, j)] = 0.0;
        return;
    }
    var pre: array<f32, 4>;
    for (var g = 0u; g < G; g++) {
        pre[g] = xg[row + g * p.H + j] + (acc[g] + weights[p.bhh_off + g * p.H + j]);
    }
    let i = sigmoid_f(pre[0]);
    let f = sigmoid_f(pre[1]);
    let gg = tanh_f(pre[2]);
    let o = sigmoid_f(pre[3]);
    let c = f * c_prev + i * gg;
    let h = o * tanh_f(c);
    if (p.save == 1u) {
        gates[row + j] = i;
        gates[row + p.H + j] = f;
        gates[row + 2u * p.H + j] = gg;
        gates[row + 3u * p.H + j] = o;
    }
    cs[next_slot() * bh + hc] = c;
    hs[next_slot() * bh + hc] = h;
    out[out_index(b, j)] = h;
}

// dG (one buffer: the input and recurrent pre-activations get the same gradient)
// is written to dgh[t]; dh for this step = dG[later] . W_hh + carry + dout[t].
@compute @workgroup_size(32, 8)
fn lstm_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = step_tile(wid, nwg);
    if (tile.x >= p.B) {
        return;
    }
    let gh = G * p.H;
    var acc = 0.0;
    if (p.first == 0u) {
        acc = recurrent_product_t(tile.x, tile.y, lid.x, lid.y, later_step() * p.B * gh);
    }
    let bj = tile_cell(tile, lid);
    let b = bj.x;
    let j = bj.y;
    if (b >= p.B) {
        return;
    }
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    let row = (p.t * p.B + b) * gh;
    let live = is_live(b);
    var dh = acc + carry[carry_index(p.parity, 0u, b, j)];
    if (live) {
        dh += dout[out_index(b, j)];
    }
    let dc_in = carry[carry_index(p.parity, 1u, b, j)];
    let out_par = 1u - p.parity;
    if (!live) {
        for (var g = 0u; g < G; g++) {
            dgh[row + g * p.H + j] = 0.0;
        }
        carry[carry_index(out_par, 0u, b, j)] = dh;
        carry[carry_index(out_par, 1u, b, j)] = dc_in;
        return;
    }
    let i = gates[row + j];
    let f = gates[row + p.H + j];
    let gg = gates[row + 2u * p.H + j];
    let o = gates[row + 3u * p.H + j];
    let tc = tanh_f(cs[next_slot() * bh + hc]);
    let c_prev = cs[prev_slot() * bh + hc];
    let dc = dc_in + dh * o * (1.0 - tc * tc);
    dgh[row + j] = dc * gg * i * (1.0 - i);
    dgh[row + p.H + j] = dc * c_prev * f * (1.0 - f);
    dgh[row + 2u * p.H + j] = dc * i * (1.0 - gg * gg);
    dgh[row + 3u * p.H + j] = dh * tc * o * (1.0 - o);
    carry[carry_index(out_par, 0u, b, j)] = 0.0;
    carry[carry_index(out_par, 1u, b, j)] = dc * f;
}
