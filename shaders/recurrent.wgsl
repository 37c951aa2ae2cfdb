// recurrent.wgsl: the tiled recurrent products shared by the fused cell steps
// (prepended, after common.wgsl, to lstm.wgsl, gru.wgsl and rnn.wgsl).
//
// Each cell file defines: the gate count G, the uniform `p` (fields B, H,
// whh_off used here), and the buffers `weights` (the flat parameter buffer),
// `hs` (hidden states) and, for the backward step, `dgh` (gate gradients that
// multiply W_hh).
//
// A workgroup of TJ x TB = 32 x 8 invocations owns hidden units j0..j0+32 of
// batch rows b0..b0+8: invocation (lx, ly) computes unit j = j0 + lx of row
// b = b0 + ly for every gate, so the whole cell update of (b, j) can follow in
// the same invocation (the fused epilogue). The reduction dimension is staged
// TK = 16 deep through workgroup memory; out-of-range elements load as zero.

const TJ: u32 = 32u;
const TB: u32 = 8u;
const TK: u32 = 16u;
const WG_SIZE: u32 = 256u;

var<workgroup> lhs_tile: array<f32, 128>;   // [TB][TK]
var<workgroup> rhs_tile: array<f32, 2048>;  // [G][TK][TJ], G <= 4

// (b0, j0) of this workgroup's tile, or (B, H) past the last tile.
fn step_tile(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let tiles_j = (p.H + TJ - 1u) / TJ;
    let tiles_b = (p.B + TB - 1u) / TB;
    let tile = linear_group(wid, nwg);
    if (tile >= tiles_j * tiles_b) {
        return vec2<u32>(p.B, p.H);
    }
    return vec2<u32>((tile / tiles_j) * TB, (tile % tiles_j) * TJ);
}

// Forward: acc[g] = sum_k h[b, k] * W_hh[g*H + j, k], h read from hs at h_base.
fn recurrent_product(b0: u32, j0: u32, lx: u32, ly: u32, h_base: u32) -> array<f32, G> {
    var acc: array<f32, G>;
    for (var g = 0u; g < G; g++) {
        acc[g] = 0.0;
    }
    let flat = ly * TJ + lx;
    for (var k0 = 0u; k0 < p.H; k0 += TK) {
        if (flat < TB * TK) {
            let bb = flat / TK;
            let kk = flat % TK;
            var v = 0.0;
            if (b0 + bb < p.B && k0 + kk < p.H) {
                v = hs[h_base + (b0 + bb) * p.H + k0 + kk];
            }
            lhs_tile[flat] = v;
        }
        // W rows are read along k (contiguous in memory) and stored k-major so
        // the inner loop reads consecutive words across invocations.
        for (var e = flat; e < G * TJ * TK; e += WG_SIZE) {
            let g = e / (TJ * TK);
            let rem = e % (TJ * TK);
            let jj = rem / TK;
            let kk = rem % TK;
            var v = 0.0;
            if (j0 + jj < p.H && k0 + kk < p.H) {
                v = weights[p.whh_off + (g * p.H + j0 + jj) * p.H + k0 + kk];
            }
            rhs_tile[(g * TK + kk) * TJ + jj] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let hv = lhs_tile[ly * TK + kk];
            for (var g = 0u; g < G; g++) {
                acc[g] += hv * rhs_tile[(g * TK + kk) * TJ + lx];
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Backward: acc = sum_m dG[b, m] * W_hh[m, j] over all G*H rows m, dG rows
// read from dgh at dg_base (row stride G*H).
fn recurrent_product_t(b0: u32, j0: u32, lx: u32, ly: u32, dg_base: u32) -> f32 {
    var acc = 0.0;
    let flat = ly * TJ + lx;
    let gh = G * p.H;
    for (var m0 = 0u; m0 < gh; m0 += TK) {
        if (flat < TB * TK) {
            let bb = flat / TK;
            let mm = flat % TK;
            var v = 0.0;
            if (b0 + bb < p.B && m0 + mm < gh) {
                v = dgh[dg_base + (b0 + bb) * gh + m0 + mm];
            }
            lhs_tile[flat] = v;
        }
        for (var e = flat; e < TK * TJ; e += WG_SIZE) {
            let mm = e / TJ;
            let jj = e % TJ;
            var v = 0.0;
            if (m0 + mm < gh && j0 + jj < p.H) {
                v = weights[p.whh_off + (m0 + mm) * p.H + j0 + jj];
            }
            rhs_tile[mm * TJ + jj] = v;
        }
        workgroupBarrier();
        for (var mm = 0u; mm < TK; mm++) {
            acc += lhs_tile[ly * TK + mm] * rhs_tile[mm * TJ + lx];
        }
        workgroupBarrier();
    }
    return acc;
}
