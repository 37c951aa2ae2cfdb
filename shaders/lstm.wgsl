// lstm.wgsl: fused LSTM step, forward and backward (PyTorch's nn.LSTM).
//
//   i, f, o = sigmoid(xg + W_hh h + b_hh), g = tanh(...)   gate order i, f, g, o
//   c' = f * c + i * g,  h' = o * tanh(c')
//
// Variants (cell_common.wgsl): activations f, g, h; peepholes (i, f += P c,
// o += P c'); coupled gates (f = 1 - i); clipping of the gates'
// pre-activations (never of c, as onnxruntime computes ONNX's clip); a projection (proj == 1: this file's
// kernels compute m = o * h(c') and the cell's gradients from dm, and
// lstm_proj.wgsl's the products with W_hr and W_hh of the P-wide h).
//
// Each step: the recurrent product of all four gates (recurrent.wgsl, tiled,
// split or resident) and the cell update in the same invocation; a dispatch
// covers the directions and time steps of cell_common.wgsl's set_direction /
// set_step. The forward
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
    run_forward(lid, wid, nwg);
}

// Word w of the cell states (flush_pairs in cell_common.wgsl).
fn cs_word(w: u32, word: u32) {
    cs[w] = word;
}

// Where this step's product vector starts (see run_forward in recurrent.wgsl).
fn forward_base() -> u32 {
    return st.o_hs + prev_slot() * p.B * p.hp;
}

// The cell update of lstm_forward for row b, unit j, after the product.
fn forward_at(b: u32, j: u32, acc: array<f32, G>, xin: array<f32, G>) {
    let bh = p.B * p.H;
    let gh = G * p.H;
    let row = (st.t * p.B + b) * gh;
    let srow = (st.t * p.B + b) * p.gates_ld;
    let hc = b * p.H + j;
    let c_prev = cs_load(st.o_cs + prev_slot() * bh + hc);
    let proj = p.proj == 1u;
    if (!is_live(b)) {
        cs_store(st.o_cs + next_slot() * bh + hc, c_prev);
        if (p.save == 1u || proj) {
            gates_zero(st.o_g + srow + j, p.gates_ld / p.H);
        }
        if (!proj) {
            hs_store(st.o_hs + next_slot() * bh + hc, hs_load(st.o_hs + prev_slot() * bh + hc));
            out_store(out_index(b, j), 0.0);
        }
        return;
    }
    var pre: array<f32, 4>;
    for (var g = 0u; g < G; g++) {
        pre[g] = x_pre(row + g * p.H + j, xin[g], g * p.H + j) + (acc[g] + wt(st.bhh_off + g * p.H + j));
    }
    if (p.peepholes == 1u) {
        pre[0] += wt(st.peep_off + j) * c_prev;
        pre[1] += wt(st.peep_off + p.H + j) * c_prev;
    }
    let zi = clip_v(pre[0]);
    let zf = clip_v(pre[1]);
    let zg = clip_v(pre[2]);
    let i = cell_act(p.act_f, zi);
    var f = cell_act(p.act_f, zf);
    if (p.coupled == 1u) {
        f = 1.0 - i;
    }
    let gg = cell_act(p.act_g, zg);
    let c = f * c_prev + i * gg;
    if (p.peepholes == 1u) {
        pre[3] += wt(st.peep_off + 2u * p.H + j) * c;
    }
    let zo = clip_v(pre[3]);
    let o = cell_act(p.act_f, zo);
    let h = o * cell_act(p.act_h, c);
    if (p.save == 1u) {
        var keep = vec4<f32>(i, f, gg, o);
        if (clipping()) {
            keep = vec4<f32>(zi, zf, zg, zo);
        }
        gate_store2(st.o_g + srow + j, keep.x, keep.y);
        gate_store2(st.o_g + srow + 2u * p.H + j, keep.z, keep.w);
    }
    cs_store(st.o_cs + next_slot() * bh + hc, c);
    if (proj) {
        // m = o * h(c), which lstm_project multiplies by W_hr.
        gate_store(st.o_g + srow + 4u * p.H + j, h);
        return;
    }
    hs_store(st.o_hs + next_slot() * bh + hc, h);
    out_store(out_index(b, j), h);
}

// dG (one buffer: the input and recurrent pre-activations get the same gradient)
// is written to dgh at st.o_dgh + t (packed in the gates' pairing with
// DG_LAYOUT); dh for this step = dG[later] . W_hh + carry + dout_load(t).
@compute @workgroup_size(32, 8)
fn lstm_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    run_backward(lid, wid, nwg);
}

// Whether this step has a transposed product (see run_backward in
// recurrent.wgsl).
fn backward_has_product(first: bool) -> bool {
    return p.proj == 1u || !first;
}

// Where this step's transposed product starts.
fn backward_base() -> u32 {
    if (p.proj == 1u) {
        // dm = dh . W_hr, dh of this step left in dgh by lstm_project_backward.
        return st.t * p.B * p.dg_ld + G * p.H;
    }
    return later_step() * p.B * p.dg_ld;
}

// The cell update of lstm_backward for row b, unit j, after the product.
fn backward_at(b: u32, j: u32, acc: f32, up: f32) {
    let gh = G * p.H;
    let proj = p.proj == 1u;
    let bh = p.B * p.H;
    let hc = b * p.H + j;
    let row = (st.t * p.B + b) * p.dg_ld;
    let srow = (st.t * p.B + b) * p.gates_ld;
    let live = is_live(b);
    var dh = acc;
    if (!proj) {
        dh += carry[st.o_carry + carry_index(st.parity, 0u, b, j)];
        if (live) {
            dh += grad_out(b, j, up);
        }
    }
    let dc_in = carry[st.o_carry + carry_index(st.parity, 1u, b, j)];
    let out_par = 1u - st.parity;
    if (!live) {
        dg_store2(st.o_dgh + row + j, 0.0, 0.0);
        dg_store2(st.o_dgh + row + 2u * p.H + j, 0.0, 0.0);
        if (!proj) {
            carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(dh);
        } else if (j < p.hp) {
            // Past the row's end h is carried: its gradient too.
            carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(dg_load(st.o_dgh + row + gh + j));
        }
        carry[st.o_carry + carry_index(out_par, 1u, b, j)] = stored(dc_in);
        return;
    }
    let gi = saved_gate(srow, 0u, j, p.act_f);
    var gf = saved_gate(srow, 1u, j, p.act_f);
    let gg = saved_gate(srow, 2u, j, p.act_g);
    let go = saved_gate(srow, 3u, j, p.act_f);
    let i = gi.x;
    if (p.coupled == 1u) {
        gf = vec2<f32>(1.0 - i, 0.0);
    }
    let f = gf.x;
    let g = gg.x;
    let o = go.x;
    let tc = cell_act(p.act_h, cs_saved_load(st.o_cs + next_slot() * bh + hc));
    let c_prev = cs_saved_load(st.o_cs + prev_slot() * bh + hc);
    let d_o = clip_pass(go.y, cell_act_back(p.act_f, o, dh * tc));
    var dc = dc_in + cell_act_back(p.act_h, tc, dh * o);
    if (p.peepholes == 1u) {
        dc += d_o * wt(st.peep_off + 2u * p.H + j);
    }
    var di_up = dc * g;
    var df = 0.0;
    if (p.coupled == 1u) {
        di_up = dc * (g - c_prev);
    } else {
        df = clip_pass(gf.y, cell_act_back(p.act_f, f, dc * c_prev));
    }
    let di = clip_pass(gi.y, cell_act_back(p.act_f, i, di_up));
    dg_store2(st.o_dgh + row + j, di, df);
    dg_store2(st.o_dgh + row + 2u * p.H + j, clip_pass(gg.y, cell_act_back(p.act_g, g, dc * i)), d_o);
    var dcp = dc * f;
    if (p.peepholes == 1u) {
        dcp += di * wt(st.peep_off + j) + df * wt(st.peep_off + p.H + j);
    }
    if (j < p.hp) {
        carry[st.o_carry + carry_index(out_par, 0u, b, j)] = stored(0.0);
    }
    carry[st.o_carry + carry_index(out_par, 1u, b, j)] = stored(dcp);
}

// Element i of the input-side gate gradients (the input-side gate gradients are the recurrent side's): what a
// wavefront's layer below multiplies by this layer's W_ih.
fn grad_in(i: u32) -> f32 {
    return dg_load(i);
}
