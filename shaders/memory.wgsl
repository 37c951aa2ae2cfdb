// memory.wgsl: fill, and f32 <-> f16 conversion (two halves packed per u32 word,
// low half first, the layout of pack2x16float and of little-endian f16 arrays).
// CPU twin: ops::memory.

struct Params {
    n: u32,
    off: u32,
    value: f32,
    src_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;
@group(0) @binding(2) var<storage, read> src_f32: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst_words: array<u32>;
@group(0) @binding(4) var<storage, read> src_words: array<u32>;

@compute @workgroup_size(256)
fn fill(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    data[p.off + i] = p.value;
}

// Words off .. off + n of a packed 16-bit tensor set to the bits of p.value
// (two halves, given as the word's bits), stored as an integer so that no
// driver touches a word that reads as an f32 NaN or subnormal.
@compute @workgroup_size(256)
fn fill_words(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    dst_words[p.off + i] = bitcast<u32>(p.value);
}

// One half float, overflow to +-inf as IEEE rounding would (pack2x16float leaves
// values beyond the f16 range indeterminate).
fn half_bits(v: f32) -> u32 {
    if (abs(v) >= 65520.0) {
        return select(0x7c00u, 0xfc00u, v < 0.0);
    }
    return pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu;
}

// n is the number of halves; one invocation per output word.
@compute @workgroup_size(256)
fn f32_to_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = linear_group(wid, nwg) * 256u + lid;
    if (2u * w >= p.n) {
        return;
    }
    let lo = half_bits(src_f32[p.src_off + 2u * w]);
    var hi = 0u;
    if (2u * w + 1u < p.n) {
        hi = half_bits(src_f32[p.src_off + 2u * w + 1u]);
    }
    dst_words[w] = lo | (hi << 16u);
}

@compute @workgroup_size(256)
fn f16_to_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = linear_group(wid, nwg) * 256u + lid;
    if (2u * w >= p.n) {
        return;
    }
    let v = unpack2x16float(src_words[w]);
    data[p.off + 2u * w] = v.x;
    if (2u * w + 1u < p.n) {
        data[p.off + 2u * w + 1u] = v.y;
    }
}

// data[off + i] = src_f32[src_off + i] as a tensor stored at STORE holds it
// (a copy into a 16-bit tensor from an f32 one: the 16-bit weights from the
// master copy).
@compute @workgroup_size(256)
fn round_copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    data[p.off + i] = stored(src_f32[p.src_off + i]);
}

// dst_words holds packed 16-bit values; its elements off .. off + n become
// src_f32[src_off ..] as stored at STORE. One invocation per word it
// touches, so no two write one word; a half outside the range keeps its value.
@compute @workgroup_size(256)
fn pack_copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = p.off / 2u;
    let w = first + linear_group(wid, nwg) * 256u + lid;
    let end = p.off + p.n;
    if (p.n == 0u || 2u * w >= end) {
        return;
    }
    var word = dst_words[w];
    for (var h = 0u; h < 2u; h++) {
        let e = 2u * w + h;
        if (e >= p.off && e < end) {
            let bits = packed_bits(src_f32[p.src_off + e - p.off]);
            word = (word & ~(0xffffu << (16u * h))) | (bits << (16u * h));
        }
    }
    dst_words[w] = word;
}

// data[off + i] = element src_off + i of src_words, which holds 16-bit
// values two a word (SRC_LAYOUT 1: f16, 2: bf16), as a tensor stored at
// STORE holds it (a step's packed final state into the caller's hn, cn).
override SRC_LAYOUT: u32 = 1u;

@compute @workgroup_size(256)
fn unpack_copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let e = p.src_off + i;
    data[p.off + i] = stored(unpack_half(src_words[e >> 1u], e & 1u, SRC_LAYOUT));
}
