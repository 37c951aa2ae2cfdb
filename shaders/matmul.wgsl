// matmul.wgsl: C = op(A) . op(B) (+ bias[n]) (+ C), all row-major f32.
//
// op(A) is M x K: A stored [M, K] (row stride lda), or [K, M] when TRANS_A.
// op(B) is K x N: B stored [K, N] (row stride ldb), or [N, K] when TRANS_B.
// C is M x N with row stride ldc. Element offsets let one buffer hold many
// matrices (a time step of a sequence, one gate block of a weight).
// CPU twins: ops::matmul::gemm_reference (plain loops) and gemm_cpu.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    flags: u32,
    _pad: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;

override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// op(A)[row, kk]; callers guarantee row < m, kk < k.
fn a_at(row: u32, kk: u32) -> f32 {
    if (TRANS_A) {
        return a[p.a_off + kk * p.lda + row];
    }
    return a[p.a_off + row * p.lda + kk];
}

// op(B)[kk, col]; callers guarantee kk < k, col < n.
fn b_at(kk: u32, col: u32) -> f32 {
    if (TRANS_B) {
        return b[p.b_off + col * p.ldb + kk];
    }
    return b[p.b_off + kk * p.ldb + col];
}

// The epilogue shared by both variants: bias, then accumulation into C.
fn store(row: u32, col: u32, acc: f32) {
    var v = acc;
    if ((p.flags & FLAG_BIAS) != 0u) {
        v += bias[p.bias_off + col];
    }
    let idx = p.c_off + row * p.ldc + col;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        v += c[idx];
    }
    c[idx] = v;
}

// Reference variant: one invocation per element of C, K-loop from global memory.
@compute @workgroup_size(64)
fn matmul_naive(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 64u + lid;
    if (i >= p.m * p.n) {
        return;
    }
    let row = i / p.n;
    let col = i % p.n;
    var acc = 0.0;
    for (var kk = 0u; kk < p.k; kk++) {
        acc += a_at(row, kk) * b_at(kk, col);
    }
    store(row, col, acc);
}

// Tiled variant: a 64x64 tile of C per workgroup of 256 invocations, each
// holding a 4x4 block in registers. A and B tiles of depth 16 are staged in
// workgroup memory; each invocation's rows and columns are strided by 16 so
// neighbouring invocations read neighbouring words (no bank conflicts) and
// write neighbouring columns of C (coalesced).
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TK][TM]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(256)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tiles_n = (p.n + TN - 1u) / TN;
    let tiles_m = (p.m + TM - 1u) / TM;
    let tile = linear_group(wid, nwg);
    // Uniform per workgroup: whole surplus workgroups of a folded grid leave together.
    if (tile >= tiles_m * tiles_n) {
        return;
    }
    let row0 = (tile / tiles_n) * TM;
    let col0 = (tile % tiles_n) * TN;
    let tx = lid % 16u;
    let ty = lid / 16u;

    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // Stage the tiles: 1024 elements each, 4 per invocation, read along the
        // stored rows so consecutive invocations touch consecutive addresses.
        for (var e = 0u; e < 4u; e++) {
            let i = lid + e * 256u;
            var mm: u32;
            var ka: u32;
            if (TRANS_A) {
                ka = i / TM;
                mm = i % TM;
            } else {
                mm = i / TK;
                ka = i % TK;
            }
            var va = 0.0;
            if (row0 + mm < p.m && k0 + ka < p.k) {
                va = a_at(row0 + mm, k0 + ka);
            }
            tile_a[ka * TM + mm] = va;

            var nn: u32;
            var kb: u32;
            if (TRANS_B) {
                nn = i / TK;
                kb = i % TK;
            } else {
                kb = i / TN;
                nn = i % TN;
            }
            var vb = 0.0;
            if (col0 + nn < p.n && k0 + kb < p.k) {
                vb = b_at(k0 + kb, col0 + nn);
            }
            tile_b[kb * TN + nn] = vb;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) {
                ar[r] = tile_a[kk * TM + ty + 16u * r];
                br[r] = tile_b[kk * TN + tx + 16u * r];
            }
            for (var r = 0u; r < 4u; r++) {
                for (var q = 0u; q < 4u; q++) {
                    acc[r * 4u + q] += ar[r] * br[q];
                }
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < 4u; r++) {
        for (var q = 0u; q < 4u; q++) {
            let row = row0 + ty + 16u * r;
            let col = col0 + tx + 16u * q;
            if (row < p.m && col < p.n) {
                store(row, col, acc[r * 4u + q]);
            }
        }
    }
}
