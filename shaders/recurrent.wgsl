// recurrent.wgsl: the recurrent products shared by the fused cell steps
// (prepended, after common.wgsl, to lstm.wgsl, gru.wgsl and rnn.wgsl).
//
// Each cell file defines the gate count G and the functions run_forward and
// run_backward call; cell_common.wgsl (after this file) the uniform `p`, the
// step state `st` and the buffers `weights` (the flat parameter buffer), `hs`
// (hidden states) and `dgh` (gate gradients that multiply W_hh).
//
// A workgroup of 32 x 8 invocations owns the hidden units j0..j0+units of
// batch rows b0..b0+16 and computes the recurrent product of every gate for
// them; invocation (lx, ly) holds rows ly and ly + 8 (RPI = 2 rows per
// invocation), so every W_hh value it reads serves both from registers and
// W_hh is read ceil(B / 16) times a step. Then, for each of its rows, the
// invocation with lx < units applies the cell update of unit j0 + lx (the
// fused epilogue). Two variants, chosen by the override constant SPLIT:
//
// - tiled (SPLIT = false, 32 units): invocation (lx, ly) accumulates its own
//   outputs; the reduction dimension is staged TK = 16 deep through workgroup
//   memory, two barriers per stage. Few workgroups (H/32 per 16 rows), much
//   reuse: suited to large batches.
// - split (SPLIT = true, 8 units): the reduction dimension is split over 32
//   lanes; each invocation streams its lane's slice of W_hh straight from
//   memory with no barrier, keeping the partial sums of all 16 rows in
//   registers, then the 32 partial sums of every output are added in
//   workgroup memory in a fixed order, 8 rows a round (one round when the
//   tile has at most 8 rows). Four times as many workgroups and a handful of
//   barriers per step: suited to small batches, where the tiled grid leaves
//   most of a GPU idle.
//
// Workgroup arrays are padded (row strides of 33 words) where a store or a
// load of consecutive invocations would otherwise hit one memory bank.
// Out-of-range elements count as zero. Both are deterministic: every output
// is summed in the same order whatever the batch size.

override SPLIT: bool = false;
// The forward product's vector: the state slots hs (row stride H), or, for
// the reset-before GRU's candidate, r * h_prev saved in gates (its fourth
// block, row stride 4H).
override FROM_GATES: bool = false;

// Row `b`, element `k` of the forward product's vector at `base` (an
// element index of hs or, FROM_GATES, of gates; row stride p.vec_ld: the
// state width, or the gates' row).
fn vec_at(base: u32, b: u32, k: u32) -> f32 {
    if (FROM_GATES) {
        return gate_load(base + b * p.vec_ld + k);
    }
    return hs_load(base + b * p.vec_ld + k);
}

const TJ: u32 = 32u;
// Invocation rows of a workgroup, batch rows per invocation, batch rows per
// workgroup (LY * RPI).
const LY: u32 = 8u;
const RPI: u32 = 2u;
const TB: u32 = 16u;
const TK: u32 = 16u;
const WG_SIZE: u32 = 256u;
// Padded row stride of the forward W tile: it is stored k-major, so
// consecutive invocations (consecutive k) would otherwise store 32 words
// apart, all in one bank.
const TPAD: u32 = 33u;
// Split variant: units per workgroup, reduction lanes, rows per reduction
// round, and the padded row stride of the partial sums (33 keeps the lanes of
// one output in different memory banks).
const SU: u32 = 8u;
const SL: u32 = 32u;
const SH: u32 = 8u;
const SPAD: u32 = 33u;

// Tiled: lhs [TB][TK] in `lhs_tile`, rhs [G][TK][TPAD] (forward, G <= 4) or
// [TK][TJ] (backward) in `rhs_tile`. Split: partial sums of one round
// [SU * SH][SPAD] in `rhs_tile`, sums of 8 lanes [SU * SH][4] in
// `split_quarters`, and the finished sums [G][RPI][SU][SH] in `lhs_tile`.
// After the products, a packed step stages its stores [3][TB][TJ] in
// `rhs_tile` (cell_common.wgsl's stage_value and flush_pairs).
var<workgroup> lhs_tile: array<f32, 512>;
var<workgroup> rhs_tile: array<f32, 2112>;
var<workgroup> split_quarters: array<f32, 256>;

fn tile_units() -> u32 {
    return select(TJ, SU, SPLIT);
}

// (b0, j0) of this workgroup's tile, or (B, H) past the last tile, after
// setting its direction (set_direction): the grid holds p.dirs directions'
// tiles one after the other. A resident workgroup (p.resident == 1) owns
// every unit of its rows (j0 = 0; the entry points loop over the columns,
// and over p.k_steps time steps with only workgroup barriers between them).
fn step_tile(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let tiles_c = select((p.H + tile_units() - 1u) / tile_units(), 1u, p.resident == 1u);
    let tiles_r = (p.B + TB - 1u) / TB;
    let per_dir = tiles_r * tiles_c;
    let tile = linear_group(wid, nwg);
    let d = tile / per_dir;
    if (d >= p.dirs) {
        return vec2<u32>(p.B, p.H);
    }
    set_direction(d);
    let k = tile % per_dir;
    return vec2<u32>((k / tiles_c) * TB, (k % tiles_c) * tile_units());
}

// One past the last column tile start of this workgroup: its own tile, or
// every tile when resident.
fn tile_end(tile: vec2<u32>) -> u32 {
    return select(tile.y + 1u, p.H, p.resident == 1u);
}

// (b, j) whose cell update this invocation applies after the product for its
// r-th row (r < RPI), or (B, H) when it has none.
fn tile_cell(tile: vec2<u32>, lid: vec3<u32>, r: u32) -> vec2<u32> {
    let b = tile.x + lid.y + LY * r;
    let j = tile.y + lid.x;
    if (lid.x >= tile_units() || b >= p.B || j >= p.H) {
        return vec2<u32>(p.B, p.H);
    }
    return vec2<u32>(b, j);
}

// The loops every cell file's forward entry point runs: this workgroup's
// tile (and direction, or layer of a wavefront), then for each time step of
// the dispatch and each of its column tiles the recurrent product and every
// row's update. A wavefront's layer above the first computes its input
// product here too (W_ih times the layer below's output at this step, which
// the previous dispatch wrote), instead of reading xg. The cell file defines
// forward_base() (where the product's vector starts) and
// forward_at(b, j, acc, xin) (the update of row b, unit j; xin the input
// product, read through x_pre).
fn run_forward(lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) {
    let tile = step_tile(wid, nwg);
    if (tile.x >= p.B) {
        return;
    }
    for (var s = 0u; s < p.k_steps; s++) {
        set_step(s);
        for (var j0 = tile.y; j0 < tile_end(tile); j0 += tile_units()) {
            let acc = recurrent_product(tile.x, j0, lid.x, lid.y, forward_base(), st.whh_off);
            var xin: array<array<f32, G>, RPI>;
            if (st.wave_in) {
                let below = st.o_hs - p.d_hs + next_slot() * p.B * p.H;
                xin = recurrent_product(tile.x, j0, lid.x, lid.y, below, st.wih_off);
            }
            for (var r = 0u; r < RPI; r++) {
                let bj = tile_cell(vec2<u32>(tile.x, j0), lid, r);
                stage_lane = vec3<u32>(lid.x, lid.y + LY * r, r);
                for (var k = 0u; k < STAGES; k++) {
                    staged[r * STAGES + k] = 0u;
                }
                if (bj.x < p.B) {
                    forward_at(bj.x, bj.y, acc[r], xin[r]);
                }
            }
            if (packing_states()) {
                // The units' packed stores, an even lane a word (see
                // cell_common.wgsl's stage_value).
                workgroupBarrier();
                for (var r = 0u; r < RPI; r++) {
                    let bj = tile_cell(vec2<u32>(tile.x, j0), lid, r);
                    if (bj.x < p.B && (lid.x & 1u) == 0u) {
                        flush_pairs(lid.x, lid.y + LY * r, r);
                    }
                }
                workgroupBarrier();
            }
        }
        step_barrier();
    }
}

// The same for the backward entry point: backward_has_product(first) says
// whether the step has a transposed product (not at the sweep's first step,
// where the sum is zero; decided from uniform values only, since the
// product's barriers need uniform control flow), backward_base() where its
// gate gradients start, backward_at(b, j, acc, up) is the update. A
// wavefront's layer below the top gets the gradient of its output here
// (`up`: the layer above's input-side gate gradients at this step, which the
// previous dispatch wrote, times that layer's W_ih) instead of from dout.
fn run_backward(lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) {
    let tile = step_tile(wid, nwg);
    if (tile.x >= p.B) {
        return;
    }
    for (var s = 0u; s < p.k_steps; s++) {
        set_step(s);
        for (var j0 = tile.y; j0 < tile_end(tile); j0 += tile_units()) {
            var acc: array<f32, RPI>;
            if (backward_has_product(st.first == 1u)) {
                acc = recurrent_product_t(tile.x, j0, lid.x, lid.y, st.o_dgh + backward_base(), st.whh_off, false);
            }
            var up: array<f32, RPI>;
            if (st.wave_up) {
                let above = st.o_dgh + p.d_dgh + st.t * p.B * p.dg_ld;
                up = recurrent_product_t(tile.x, j0, lid.x, lid.y, above, st.wih_off, true);
            }
            for (var r = 0u; r < RPI; r++) {
                let bj = tile_cell(vec2<u32>(tile.x, j0), lid, r);
                if (bj.x < p.B) {
                    backward_at(bj.x, bj.y, acc[r], up[r]);
                }
            }
        }
        step_barrier();
    }
}

// Element i of the gate gradients: dgh, or with `input` the input side's.
fn dg_at(i: u32, input: bool) -> f32 {
    if (input) {
        return grad_in(i);
    }
    return dg_load(i);
}

// Batch rows of the tile at b0 (at most TB).
fn tile_rows(b0: u32) -> u32 {
    return min(TB, p.B - b0);
}

// Forward: acc[r][g] = sum_k h[b, k] * W[g*H + j, k] over k < p.pk (the
// vector's width and W's row stride: H, or P for a projected LSTM's h, or H
// for the projection itself), h read through vec_at at h_base, W the
// weights at w_off (W_hh; a wavefront's input product: W_ih), for
// (b, j) = (b0 + ly + LY * r, j0 + lx) with j < p.H units. Every invocation
// of the workgroup must call it.
fn recurrent_product(b0: u32, j0: u32, lx: u32, ly: u32, h_base: u32, w_off: u32) -> array<array<f32, G>, RPI> {
    if (SPLIT) {
        return recurrent_product_split(b0, j0, lx, ly, h_base, w_off);
    }
    var acc: array<array<f32, G>, RPI>;
    let flat = ly * TJ + lx;
    for (var k0 = 0u; k0 < p.pk; k0 += TK) {
        // TB * TK = WG_SIZE: one element of h each.
        let bb = flat / TK;
        let kk = flat % TK;
        var v = 0.0;
        if (b0 + bb < p.B && k0 + kk < p.pk) {
            v = vec_at(h_base, b0 + bb, k0 + kk);
        }
        lhs_tile[flat] = v;
        // W rows are read along k (contiguous in memory) and stored k-major so
        // the inner loop reads consecutive words across invocations.
        for (var e = flat; e < G * TJ * TK; e += WG_SIZE) {
            let g = e / (TJ * TK);
            let rem = e % (TJ * TK);
            let jj = rem / TK;
            let kk = rem % TK;
            var v = 0.0;
            if (j0 + jj < p.H && k0 + kk < p.pk) {
                v = wt(w_off + (g * p.H + j0 + jj) * p.pk + k0 + kk);
            }
            rhs_tile[(g * TK + kk) * TPAD + jj] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var hv: array<f32, RPI>;
            for (var r = 0u; r < RPI; r++) {
                hv[r] = lhs_tile[(ly + LY * r) * TK + kk];
            }
            for (var g = 0u; g < G; g++) {
                let w = rhs_tile[(g * TK + kk) * TPAD + lx];
                for (var r = 0u; r < RPI; r++) {
                    acc[r][g] += hv[r] * w;
                }
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Adds the SL partial sums of each of the SU * SH outputs in `rhs_tile`
// (output o at o * SPAD, lanes in order) into lhs_tile[base + o], in two
// levels so that every invocation helps: invocation flat adds lanes
// 8q..8q+7 of output flat / 4 (q = flat % 4), then one invocation per output
// adds its four quarters. The order is fixed. Call after a barrier that
// follows the partial sums' writes; a barrier must follow before lhs_tile is
// read or rhs_tile rewritten.
fn reduce_lanes(flat: u32, base: u32) {
    let o = flat / 4u;
    let l0 = (flat % 4u) * 8u;
    var s = 0.0;
    for (var l = 0u; l < 8u; l++) {
        s += rhs_tile[o * SPAD + l0 + l];
    }
    split_quarters[flat] = s;
    workgroupBarrier();
    if (flat < SU * SH) {
        lhs_tile[base + flat] = ((split_quarters[flat * 4u] + split_quarters[flat * 4u + 1u])
            + (split_quarters[flat * 4u + 2u] + split_quarters[flat * 4u + 3u]));
    }
}

// Reduction rounds of the split variant for the tile at b0: one per SH rows.
fn split_rounds(b0: u32) -> u32 {
    return (tile_rows(b0) + SH - 1u) / SH;
}

// Split forward. Invocation (lane = lx, unit jj = ly) accumulates, over
// k = lane, lane + 32, ..., every gate of unit j0 + jj for all TB rows; a
// warp's 32 lanes read 32 consecutive words of one W_hh row and of h.
fn recurrent_product_split(b0: u32, j0: u32, lx: u32, ly: u32, h_base: u32, w_off: u32) -> array<array<f32, G>, RPI> {
    let lane = lx;
    let jj = ly;
    let j = j0 + jj;
    let rows = tile_rows(b0);
    var part: array<f32, 64>; // [G][TB], G * TB <= 64
    if (j < p.H) {
        for (var k = lane; k < p.pk; k += SL) {
            var hv: array<f32, 16>; // [TB]
            for (var bb = 0u; bb < TB; bb++) {
                if (bb < rows) {
                    hv[bb] = vec_at(h_base, b0 + bb, k);
                }
            }
            for (var g = 0u; g < G; g++) {
                let w = wt(w_off + (g * p.H + j) * p.pk + k);
                for (var bb = 0u; bb < TB; bb++) {
                    part[g * TB + bb] += w * hv[bb];
                }
            }
        }
    }
    let flat = ly * TJ + lx;
    let rounds = split_rounds(b0);
    for (var g = 0u; g < G; g++) {
        for (var r = 0u; r < rounds; r++) {
            for (var bb = 0u; bb < SH; bb++) {
                rhs_tile[(jj * SH + bb) * SPAD + lane] = part[g * TB + r * SH + bb];
            }
            workgroupBarrier();
            reduce_lanes(flat, (g * RPI + r) * SU * SH);
            workgroupBarrier();
        }
    }
    var acc: array<array<f32, G>, RPI>;
    for (var r = 0u; r < RPI; r++) {
        for (var g = 0u; g < G; g++) {
            if (lx < SU && r < rounds) {
                acc[r][g] = lhs_tile[(g * RPI + r) * SU * SH + lx * SH + ly];
            }
        }
    }
    return acc;
}

// Backward: acc[r] = sum_m dG[b, m] * W[m, j] over the p.dg_rows rows m
// (G*H, or fewer: the reset-before GRU's r and z), dG rows read at element
// dg_base (row stride p.dg_ld) from dgh, or with `input` from the
// input-side gradients (grad_in: dgx for the GRU, else dgh), W the weights
// at w_off (W_hh, or W_ih), for (b, j) = (b0 + ly + LY * r, j0 + lx).
// Every invocation of the workgroup must call it.
fn recurrent_product_t(b0: u32, j0: u32, lx: u32, ly: u32, dg_base: u32, w_off: u32, input: bool) -> array<f32, RPI> {
    if (SPLIT) {
        return recurrent_product_t_split(b0, j0, lx, ly, dg_base, w_off, input);
    }
    var acc: array<f32, RPI>;
    let flat = ly * TJ + lx;
    let gh = p.dg_rows;
    for (var m0 = 0u; m0 < gh; m0 += TK) {
        // TB * TK = WG_SIZE: one element of dG each.
        let bb = flat / TK;
        let mm = flat % TK;
        var v = 0.0;
        if (b0 + bb < p.B && m0 + mm < gh) {
            v = dg_at(dg_base + (b0 + bb) * p.dg_ld + m0 + mm, input);
        }
        lhs_tile[flat] = v;
        for (var e = flat; e < TK * TJ; e += WG_SIZE) {
            let mm = e / TJ;
            let jj = e % TJ;
            var v = 0.0;
            if (m0 + mm < gh && j0 + jj < p.H) {
                v = wt(w_off + (m0 + mm) * p.H + j0 + jj);
            }
            rhs_tile[mm * TJ + jj] = v;
        }
        workgroupBarrier();
        for (var mm = 0u; mm < TK; mm++) {
            let w = rhs_tile[mm * TJ + lx];
            for (var r = 0u; r < RPI; r++) {
                acc[r] += lhs_tile[(ly + LY * r) * TK + mm] * w;
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Split backward. Invocation flat = lane * SU + jj accumulates, over rows
// m = lane, lane + 32, ..., unit j0 + jj for all TB rows; a warp reads SU
// consecutive words of each of four W_hh rows.
fn recurrent_product_t_split(b0: u32, j0: u32, lx: u32, ly: u32, dg_base: u32, w_off: u32, input: bool) -> array<f32, RPI> {
    let flat = ly * TJ + lx;
    let jj = flat % SU;
    let lane = flat / SU;
    let j = j0 + jj;
    let gh = p.dg_rows;
    let rows = tile_rows(b0);
    var part: array<f32, 16>; // [TB]
    if (j < p.H) {
        for (var m = lane; m < gh; m += SL) {
            let w = wt(w_off + m * p.H + j);
            for (var bb = 0u; bb < TB; bb++) {
                if (bb < rows) {
                    part[bb] += dg_at(dg_base + (b0 + bb) * p.dg_ld + m, input) * w;
                }
            }
        }
    }
    let rounds = split_rounds(b0);
    for (var r = 0u; r < rounds; r++) {
        for (var bb = 0u; bb < SH; bb++) {
            rhs_tile[(jj * SH + bb) * SPAD + lane] = part[r * SH + bb];
        }
        workgroupBarrier();
        reduce_lanes(flat, r * SU * SH);
        workgroupBarrier();
    }
    var acc: array<f32, RPI>;
    for (var r = 0u; r < RPI; r++) {
        if (lx < SU && r < rounds) {
            acc[r] = lhs_tile[r * SU * SH + lx * SH + ly];
        }
    }
    return acc;
}
