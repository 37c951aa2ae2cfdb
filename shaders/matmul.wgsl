// matmul.wgsl: C = op(A) . op(B) (+ bias[n]) (+ C), all row-major f32.
//
// op(A) is M x K: A stored [M, K] (row stride lda), or [K, M] when TRANS_A.
// op(B) is K x N: B stored [K, N] (row stride ldb), or [N, K] when TRANS_B.
// C is M x N with row stride ldc. Element offsets let one buffer hold many
// matrices (a time step of a sequence, one gate block of a weight).
// CPU twins: ops::matmul::gemm_reference (plain loops) and gemm_cpu.
//
// Split K (p.splits > 1, the tiled and large variants): the grid holds
// p.splits copies of the output tiles; copy s sums k in [s * k_chunk,
// (s + 1) * k_chunk) only (A and B read a_kstep and b_kstep further per
// copy) and writes its partial C, without bias or accumulation, at
// c_off + s * c_split (a scratch [splits, M, N], ldc = N); then
// matmul_split_sum adds the partials in order s = 0, 1, ... and applies the
// bias and the accumulation. The order depends only on the sizes.
//
// Packed C (C_LAYOUT 1: f16, 2: bf16): two values a word, in pair_word's
// layout of period p.c_pairs (common.wgsl; 0: plain). The kernels then walk
// C's columns in stored order (VCOLS): column v of a row stores the product's
// column pair_element(v >> 1, v & 1, c_pairs) (B's column and the bias's),
// and one invocation computes the two columns of a word and stores it
// whole: no store needs an atomic. The host requires rows and offsets that
// start on a word (a pair of blocks). A split product's partials stay f32
// words in stored order; the sum stores them packed.
// A read packed with A_LAYOUT may be paired the same way (p.a_pairs).

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
    splits: u32,
    k_chunk: u32,
    a_kstep: u32,
    b_kstep: u32,
    c_split: u32,
    c_pairs: u32,
    a_pairs: u32,
    _pad0: u32,
    _pad1: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// C packed (C_LAYOUT > 0, or its split's partials): columns in stored order.
override VCOLS: bool = false;
override C_LAYOUT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
// A, B and the bias: f32 words, or 16-bit values packed two a word
// (A_LAYOUT, B_LAYOUT, BIAS_LAYOUT 1: f16, 2: bf16; the passes' 16-bit copy
// of the parameters), read through a_el, b_el and bias_el.
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
override A_LAYOUT: u32 = 0u;
override B_LAYOUT: u32 = 0u;
override BIAS_LAYOUT: u32 = 0u;

fn a_el(i: u32) -> f32 {
    if (A_LAYOUT == 0u) {
        return bitcast<f32>(a[i]);
    }
    let w = pair_word(i, p.a_pairs);
    return unpack_half(a[w.x], w.y, A_LAYOUT);
}

fn b_el(i: u32) -> f32 {
    if (B_LAYOUT == 0u) {
        return bitcast<f32>(b[i]);
    }
    return unpack_half(b[i >> 1u], i & 1u, B_LAYOUT);
}

fn bias_el(i: u32) -> f32 {
    if (BIAS_LAYOUT == 0u) {
        return bitcast<f32>(bias[i]);
    }
    return unpack_half(bias[i >> 1u], i & 1u, BIAS_LAYOUT);
}
// C: f32 words, or (C_LAYOUT) packed 16-bit values.
@group(0) @binding(4) var<storage, read_write> c: array<u32>;

// The product's column that stored column v of C holds (see the top).
fn real_col(v: u32) -> u32 {
    if (VCOLS) {
        return pair_element(v >> 1u, v & 1u, p.c_pairs);
    }
    return v;
}

// The part of the product this workgroup takes: the whole one, or one
// split of K (see the top of the file).
struct Part {
    a_off: u32,
    b_off: u32,
    k: u32,
    c_off: u32,
}

var<private> part: Part;

fn set_part(s: u32) {
    part.a_off = p.a_off + s * p.a_kstep;
    part.b_off = p.b_off + s * p.b_kstep;
    part.c_off = p.c_off + s * p.c_split;
    part.k = p.k;
    if (p.splits > 1u) {
        part.k = min(p.k_chunk, p.k - s * p.k_chunk);
    }
}

// The origin of this workgroup's tile of C (rows of side rs, columns of side
// cs), or (m, n) past the last, after setting its split of K, and the length
// of that split (returned as a value: the K loops' barriers need uniform
// bounds, which a private variable is not).
fn split_tile(wid: vec3<u32>, nwg: vec3<u32>, rs: u32, cs: u32) -> vec3<u32> {
    let tiles_c = (p.n + cs - 1u) / cs;
    let per = ((p.m + rs - 1u) / rs) * tiles_c;
    let g = linear_group(wid, nwg);
    let s = g / per;
    if (s >= max(p.splits, 1u)) {
        return vec3<u32>(p.m, p.n, 0u);
    }
    set_part(s);
    let t = g % per;
    var k = p.k;
    if (p.splits > 1u) {
        k = min(p.k_chunk, p.k - s * p.k_chunk);
    }
    return vec3<u32>((t / tiles_c) * rs, (t % tiles_c) * cs, k);
}

// op(A)[row, kk]; callers guarantee row < m, kk < k.
fn a_at(row: u32, kk: u32) -> f32 {
    if (TRANS_A) {
        return a_el(part.a_off + kk * p.lda + row);
    }
    return a_el(part.a_off + row * p.lda + kk);
}

// op(B)[kk, col]; callers guarantee kk < k, col < n.
fn b_at(kk: u32, col: u32) -> f32 {
    if (TRANS_B) {
        return b_el(part.b_off + real_col(col) * p.ldb + kk);
    }
    return b_el(part.b_off + kk * p.ldb + real_col(col));
}

// op(A)[row, kk], zero outside the matrix.
fn a_or_zero(row: u32, kk: u32) -> f32 {
    if (row < p.m && kk < part.k) {
        return a_at(row, kk);
    }
    return 0.0;
}

// op(B)[kk, col], zero outside the matrix.
fn b_or_zero(kk: u32, col: u32) -> f32 {
    if (kk < part.k && col < p.n) {
        return b_at(kk, col);
    }
    return 0.0;
}

// The epilogue shared by the variants: bias, then accumulation into C (a
// split's partial takes neither: the host clears both flags).
// (C_LAYOUT 0: an f32 word; packed C stores through store2.)
fn store(row: u32, col: u32, acc: f32) {
    var v = acc;
    if ((p.flags & FLAG_BIAS) != 0u) {
        v += bias_el(p.bias_off + real_col(col));
    }
    let idx = part.c_off + row * p.ldc + col;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        v += bitcast<f32>(c[idx]);
    }
    // (A split's partials are f32: STORE is 0 for them.)
    c[idx] = bitcast<u32>(stored(v));
}

// Stored columns col (even) and col + 1 of a row: one word of packed C, or
// two f32 words.
fn store2(row: u32, col: u32, acc0: f32, acc1: f32) {
    if (C_LAYOUT == 0u) {
        store(row, col, acc0);
        store(row, col + 1u, acc1);
        return;
    }
    var v = vec2<f32>(acc0, acc1);
    if ((p.flags & FLAG_BIAS) != 0u) {
        v += vec2<f32>(bias_el(p.bias_off + real_col(col)), bias_el(p.bias_off + real_col(col + 1u)));
    }
    let w = (part.c_off + row * p.ldc + col) >> 1u;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        let old = c[w];
        v += vec2<f32>(unpack_half(old, 0u, C_LAYOUT), unpack_half(old, 1u, C_LAYOUT));
    }
    c[w] = pack2(v.x, v.y);
}

// Elements (words of packed C) a one-invocation-each kernel covers.
fn c_items() -> u32 {
    if (C_LAYOUT == 0u) {
        return p.m * p.n;
    }
    return p.m * (p.n / 2u);
}

// (row, first stored column) of item i of c_items.
fn c_item(i: u32) -> vec2<u32> {
    if (C_LAYOUT == 0u) {
        return vec2<u32>(i / p.n, i % p.n);
    }
    let half_n = p.n / 2u;
    return vec2<u32>(i / half_n, 2u * (i % half_n));
}

// Reference variant: one invocation per element of C, K-loop from global memory.
@compute @workgroup_size(64)
fn matmul_naive(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    set_part(0u);
    let i = linear_group(wid, nwg) * 64u + lid;
    if (i >= c_items()) {
        return;
    }
    let rc = c_item(i);
    let row = rc.x;
    let col = rc.y;
    var acc = 0.0;
    if (C_LAYOUT == 0u) {
        for (var kk = 0u; kk < part.k; kk++) {
            acc += a_at(row, kk) * b_at(kk, col);
        }
        store(row, col, acc);
        return;
    }
    var acc1 = 0.0;
    for (var kk = 0u; kk < part.k; kk++) {
        let av = a_at(row, kk);
        acc += av * b_at(kk, col);
        acc1 += av * b_at(kk, col + 1u);
    }
    store2(row, col, acc, acc1);
}

// Tiled variant: a 64x64 tile of C per workgroup of 256 invocations, each
// holding a 4x4 block in registers. A and B tiles of depth 16 are staged in
// workgroup memory; each invocation's rows and columns are strided by 16 so
// neighbouring invocations read neighbouring words (no bank conflicts) and
// write neighbouring columns of C (coalesced). With VCOLS an invocation's
// columns are 2tx, 2tx + 1, 32 + 2tx, 33 + 2tx instead, so that it owns the
// words of packed C it stores.
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TK][TM]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TN]

// The tile column of an invocation's q-th column (q = 0..3).
fn tiled_col(tx: u32, q: u32) -> u32 {
    if (VCOLS) {
        return 32u * (q >> 1u) + 2u * tx + (q & 1u);
    }
    return tx + 16u * q;
}

@compute @workgroup_size(256)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let origin = split_tile(wid, nwg, TM, TN);
    // Uniform per workgroup: whole surplus workgroups of a folded grid leave together.
    if (origin.x >= p.m) {
        return;
    }
    let row0 = origin.x;
    let col0 = origin.y;
    let tx = lid % 16u;
    let ty = lid / 16u;

    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    for (var k0 = 0u; k0 < origin.z; k0 += TK) {
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
            tile_a[ka * TM + mm] = a_or_zero(row0 + mm, k0 + ka);

            var nn: u32;
            var kb: u32;
            if (TRANS_B) {
                nn = i / TK;
                kb = i % TK;
            } else {
                kb = i / TN;
                nn = i % TN;
            }
            tile_b[kb * TN + nn] = b_or_zero(k0 + kb, col0 + nn);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) {
                ar[r] = tile_a[kk * TM + ty + 16u * r];
                br[r] = tile_b[kk * TN + tiled_col(tx, r)];
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
        let row = row0 + ty + 16u * r;
        if (row >= p.m) {
            continue;
        }
        if (C_LAYOUT != 0u) {
            // (n is even: a word's second column is inside when its first is.)
            for (var q = 0u; q < 4u; q += 2u) {
                let col = col0 + tiled_col(tx, q);
                if (col < p.n) {
                    store2(row, col, acc[r * 4u + q], acc[r * 4u + q + 1u]);
                }
            }
            continue;
        }
        for (var q = 0u; q < 4u; q++) {
            let col = col0 + tiled_col(tx, q);
            if (col < p.n) {
                store(row, col, acc[r * 4u + q]);
            }
        }
    }
}

// Large variant: a 128x128 tile of C per workgroup of 256 invocations, each
// holding an 8x8 block in registers: rows 4ty..4ty+3 and 64+4ty..64+4ty+3 of
// the tile, columns tx + 16q and 64 + tx + 16q (q = 0..3), so the block is
// read from workgroup memory as four vec4s per step of k and neighbouring
// invocations write neighbouring columns of C. K is staged 8 deep; each invocation
// loads 4 consecutive words of A and of B per stage (along the stored rows),
// and the next stage's loads are issued into registers before the current
// stage is consumed, so memory latency overlaps arithmetic.
const LM: u32 = 128u;
const LN: u32 = 128u;
const LK: u32 = 8u;

var<workgroup> large_a: array<vec4<f32>, 256>; // [LK][LM / 4]: rows 4i..4i+3 in entry i
var<workgroup> large_b: array<vec4<f32>, 256>; // [LK][LN / 4]: see b_slot

// Where column nn of a B stage row lives: entry (nn / 64) * 16 + nn % 16,
// component (nn % 64) / 16, so entry tx holds columns tx, tx+16, tx+32, tx+48
// and entry 16 + tx the same plus 64. With VCOLS entry tx holds 2tx,
// 2tx + 1, 32 + 2tx, 33 + 2tx (large_col), so that an invocation owns the
// words of packed C it stores.
fn b_slot(nn: u32) -> vec2<u32> {
    if (VCOLS) {
        let l = nn % 64u;
        return vec2<u32>((nn / 64u) * 16u + (l % 32u) / 2u, (l / 32u) * 2u + l % 2u);
    }
    return vec2<u32>((nn / 64u) * 16u + nn % 16u, (nn % 64u) / 16u);
}

// The tile column of component q of entry h * 16 + tx (the inverse of b_slot).
fn large_col(h: u32, q: u32, tx: u32) -> u32 {
    if (VCOLS) {
        return h * 64u + (q >> 1u) * 32u + 2u * tx + (q & 1u);
    }
    return h * 64u + q * 16u + tx;
}

// This invocation's 4 words of the A stage at k0: 4 consecutive k of one row
// (A stored [M, K]) or 4 consecutive rows at one k (TRANS_A).
fn large_load_a(lid: u32, row0: u32, k0: u32) -> vec4<f32> {
    var v: vec4<f32>;
    for (var e = 0u; e < 4u; e++) {
        if (TRANS_A) {
            v[e] = a_or_zero(row0 + (lid % 32u) * 4u + e, k0 + lid / 32u);
        } else {
            v[e] = a_or_zero(row0 + lid / 2u, k0 + (lid % 2u) * 4u + e);
        }
    }
    return v;
}

// This invocation's 4 words of the B stage at k0: 4 consecutive columns at one
// k (B stored [K, N]) or 4 consecutive k of one column (TRANS_B).
fn large_load_b(lid: u32, col0: u32, k0: u32) -> vec4<f32> {
    var v: vec4<f32>;
    for (var e = 0u; e < 4u; e++) {
        if (TRANS_B) {
            v[e] = b_or_zero(k0 + (lid % 2u) * 4u + e, col0 + lid / 2u);
        } else {
            v[e] = b_or_zero(k0 + lid / 32u, col0 + (lid % 32u) * 4u + e);
        }
    }
    return v;
}

// Writes the loaded words into the stage, k-major: large_a[kk * 32 + m / 4][m % 4],
// large_b[kk * 32 + b_slot(n).x][b_slot(n).y].
fn large_store(lid: u32, va: vec4<f32>, vb: vec4<f32>) {
    if (TRANS_A) {
        large_a[lid] = va;
    } else {
        let mm = lid / 2u;
        for (var e = 0u; e < 4u; e++) {
            large_a[((lid % 2u) * 4u + e) * 32u + mm / 4u][mm % 4u] = va[e];
        }
    }
    if (TRANS_B) {
        let at = b_slot(lid / 2u);
        for (var e = 0u; e < 4u; e++) {
            large_b[((lid % 2u) * 4u + e) * 32u + at.x][at.y] = vb[e];
        }
    } else {
        for (var e = 0u; e < 4u; e++) {
            let at = b_slot((lid % 32u) * 4u + e);
            large_b[(lid / 32u) * 32u + at.x][at.y] = vb[e];
        }
    }
}

@compute @workgroup_size(256)
fn matmul_large(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let origin = split_tile(wid, nwg, LM, LN);
    // Uniform per workgroup: whole surplus workgroups of a folded grid leave together.
    if (origin.x >= p.m) {
        return;
    }
    let row0 = origin.x;
    let col0 = origin.y;
    let tx = lid % 16u;
    let ty = lid / 16u;

    // acc[r * 2 + h][q]: row r of the block (tile row 4ty + r, or 64 + 4ty + r - 4
    // for r >= 4), tile column 64h + 16q + tx.
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    var va = large_load_a(lid, row0, 0u);
    var vb = large_load_b(lid, col0, 0u);
    for (var k0 = 0u; k0 < origin.z; k0 += LK) {
        large_store(lid, va, vb);
        workgroupBarrier();
        if (k0 + LK < origin.z) {
            va = large_load_a(lid, row0, k0 + LK);
            vb = large_load_b(lid, col0, k0 + LK);
        }
        for (var kk = 0u; kk < LK; kk++) {
            let a0 = large_a[kk * 32u + ty];
            let a1 = large_a[kk * 32u + 16u + ty];
            let b0 = large_b[kk * 32u + tx];
            let b1 = large_b[kk * 32u + 16u + tx];
            for (var r = 0u; r < 4u; r++) {
                acc[r * 2u] += a0[r] * b0;
                acc[r * 2u + 1u] += a0[r] * b1;
                acc[(r + 4u) * 2u] += a1[r] * b0;
                acc[(r + 4u) * 2u + 1u] += a1[r] * b1;
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < 8u; r++) {
        let row = row0 + (r / 4u) * 64u + ty * 4u + r % 4u;
        if (row >= p.m) {
            continue;
        }
        for (var h = 0u; h < 2u; h++) {
            let a = acc[r * 2u + h];
            if (C_LAYOUT != 0u) {
                for (var q = 0u; q < 4u; q += 2u) {
                    let col = col0 + large_col(h, q, tx);
                    if (col < p.n) {
                        store2(row, col, a[q], a[q + 1u]);
                    }
                }
                continue;
            }
            for (var q = 0u; q < 4u; q++) {
                let col = col0 + large_col(h, q, tx);
                if (col < p.n) {
                    store(row, col, a[q]);
                }
            }
        }
    }
}

// The sum of a split product's partials (bound at `a`: [splits, M, N]), in
// order, with the bias and the accumulation into C.
@compute @workgroup_size(256)
fn matmul_split_sum(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= c_items()) {
        return;
    }
    part.c_off = p.c_off;
    let rc = c_item(i);
    // The partials are f32 words in C's stored order, N to a row.
    let at = rc.x * p.n + rc.y;
    var v = vec2<f32>(0.0);
    for (var s = 0u; s < p.splits; s++) {
        v.x += bitcast<f32>(a[s * p.c_split + at]);
        if (C_LAYOUT != 0u) {
            v.y += bitcast<f32>(a[s * p.c_split + at + 1u]);
        }
    }
    if (C_LAYOUT == 0u) {
        store(rc.x, rc.y, v.x);
    } else {
        store2(rc.x, rc.y, v.x, v.y);
    }
}
