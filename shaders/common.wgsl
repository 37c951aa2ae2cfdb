// common.wgsl: helpers prepended to every shader file.
//
// Activation functions here are written to be stable for any finite input:
// no exp() of a large positive number, no inf/inf. They are the WGSL twins of
// src/ops/activation.rs, which computes the same functions in f32/f64.

// Linear workgroup index of a grid the host folded into 2-D (GpuContext::grid).
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Origin (row0, col0) of this workgroup's tile when tiles of row_side x
// col_side cover a rows x cols grid, row-major over the tiles; (rows, cols)
// for the surplus workgroups of a folded grid.
fn grid_tile(wid: vec3<u32>, nwg: vec3<u32>, rows: u32, row_side: u32, cols: u32, col_side: u32) -> vec2<u32> {
    let tiles_c = (cols + col_side - 1u) / col_side;
    let tiles_r = (rows + row_side - 1u) / row_side;
    let tile = linear_group(wid, nwg);
    if (tile >= tiles_r * tiles_c) {
        return vec2<u32>(rows, cols);
    }
    return vec2<u32>((tile / tiles_c) * row_side, (tile % tiles_c) * col_side);
}

// Non-finite tests read the bits. Metal compiles with fast math, which lets
// the compiler assume that no value is NaN or infinite: `v != v`, `abs(v) <
// inf`, `v - v == 0.0` or a comparison of sqrt(v) may be folded to a
// constant. An integer test of the exponent bits cannot be folded; apply it to
// a value as loaded from a buffer, since a value computed under fast math may
// itself be assumed finite.

// True when v is neither infinite nor NaN (its exponent bits are not all ones).
fn is_finite_f32(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// True when v is NaN (exponent bits all ones, mantissa not zero).
fn is_nan_f32(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// The lowest finite f32: the identity of max for finite inputs. (Shader
// compilers may assume no infinities, so -inf is not used.)
const F32_LOWEST: f32 = -3.4028234663852886e38;

fn lowest() -> f32 {
    return F32_LOWEST;
}

// Logistic sigmoid 1 / (1 + e^-x).
fn sigmoid_f(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// tanh with a known error bound on every driver (builtin tanh is sometimes
// computed as (e^2x - 1)/(e^2x + 1), which loses relative precision near 0 and
// overflows to NaN for large x). Cephes tanhf: odd polynomial below 0.625
// (peak relative error 2.5e-7), 1 - 2/(e^2|x| + 1) above; |x| >= 15 is +-1 in f32.
// A NaN stays a NaN, as on the CPU (Real::tanh_cell), so a diverging run is
// seen as one: min(NaN, 15.0) may return 15.0, which would turn it into +-1.
// (x is a computed value, so under fast math (Metal) this passthrough is a
// best effort; the checks that decide anything, the optimizer's, test values
// loaded from a buffer.)
fn tanh_f(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if (a < 0.625) {
        let z = x * x;
        r = ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z
            + 1.33314422036e-1) * z - 3.33332819422e-1) * z * a + a;
    } else {
        r = 1.0 - 2.0 / (exp(2.0 * min(a, 15.0)) + 1.0);
    }
    return select(select(r, -r, x < 0.0), x, is_nan_f32(x));
}

// erfc(z) (Numerical Recipes' erfcc, fractional error below 1.2e-7 everywhere),
// so that exact GELU keeps its relative accuracy on the far negative side.
fn erfc_f(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let y = t * exp(-a * a + poly);
    return select(y, 2.0 - y, z < 0.0);
}

// Activation kinds (same numbering as ops::activation::Activation).
const ACT_SIGMOID: u32 = 0u;
const ACT_TANH: u32 = 1u;
const ACT_RELU: u32 = 2u;
const ACT_LEAKY_RELU: u32 = 3u;
const ACT_GELU_TANH: u32 = 4u;
const ACT_GELU_ERF: u32 = 5u;
const ACT_IDENTITY: u32 = 6u;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;
const FRAC_1_SQRT_2PI: f32 = 0.3989422804014327;

fn act_f(kind: u32, x: f32, slope: f32) -> f32 {
    switch kind {
        case ACT_SIGMOID: { return sigmoid_f(x); }
        case ACT_TANH: { return tanh_f(x); }
        case ACT_RELU: { return max(x, 0.0); }
        case ACT_LEAKY_RELU: { return select(slope * x, x, x > 0.0); }
        case ACT_GELU_TANH: {
            return 0.5 * x * (1.0 + tanh_f(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)));
        }
        case ACT_GELU_ERF: { return 0.5 * x * erfc_f(-x * FRAC_1_SQRT_2); }
        default: { return x; }
    }
}

// d act(x) / dx.
fn act_d(kind: u32, x: f32, slope: f32) -> f32 {
    switch kind {
        case ACT_SIGMOID: {
            let s = sigmoid_f(x);
            return s * (1.0 - s);
        }
        case ACT_TANH: {
            let t = tanh_f(x);
            return 1.0 - t * t;
        }
        case ACT_RELU: { return select(0.0, 1.0, x > 0.0); }
        case ACT_LEAKY_RELU: { return select(slope, 1.0, x > 0.0); }
        case ACT_GELU_TANH: {
            let t = tanh_f(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
        }
        case ACT_GELU_ERF: {
            let cdf = 0.5 * erfc_f(-x * FRAC_1_SQRT_2);
            return cdf + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
        }
        default: { return 1.0; }
    }
}

// Storage precision of the values a kernel stores into its 16-bit-able
// outputs (0: f32, 1: f16, 2: bf16; src/precision.rs): every such value is
// rounded to it as it is stored, so the tensor holds exactly what 16-bit
// storage holds. Kernels that never store into one leave it 0.
override STORE: u32 = 0u;

// x rounded to the nearest f16 value (ties to even, +-inf from 65520 on,
// NaN kept), as an f32: the integer twin of precision::round_f16, so that
// fast math cannot fold it.
fn round_f16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let sign = bits & 0x80000000u;
    let a = bits & 0x7fffffffu;
    // Normal: keep 10 of the 23 fraction bits (a carry into the exponent is
    // the right result); past 65504, infinity.
    var n = (a + 0x0fffu + ((a >> 13u) & 1u)) & 0xffffe000u;
    n = select(n, 0x7f800000u, n > 0x477fe000u);
    // Below 2^-14: a multiple q of 2^-24. The value is m * 2^(e - 150) with
    // e the (at least 1) biased exponent and m the significand, so
    // q = m / 2^(126 - e), rounded to nearest even (0 from a shift of 25 on).
    let e = max(a >> 23u, 1u);
    let m = (a & 0x007fffffu) | select(0u, 0x00800000u, (a >> 23u) > 0u);
    let s = clamp(126u - min(e, 125u), 1u, 31u);
    var q = m >> s;
    let rem = m - (q << s);
    let half = 1u << (s - 1u);
    q += select(0u, 1u, rem > half || (rem == half && (q & 1u) == 1u));
    q = select(q, 0u, s > 24u);
    // q <= 1024: exact in f32, and the scaling by 2^-24 is exact.
    let sub = bitcast<u32>(f32(q) * 5.9604644775390625e-8);
    let r = select(n, sub, a < 0x38800000u);
    return bitcast<f32>(select(r | sign, bits, a > 0x7f800000u));
}

// x rounded to the nearest bf16 value (ties to even, overflow to +-inf, NaN
// kept), as an f32 (precision::round_bf16).
fn round_bf16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let r = (bits + 0x7fffu + ((bits >> 16u) & 1u)) & 0xffff0000u;
    return bitcast<f32>(select(r, bits, (bits & 0x7fffffffu) > 0x7f800000u));
}

// x as a tensor stored at STORE holds it.
fn stored(x: f32) -> f32 {
    if (STORE == 1u) {
        return round_f16(x);
    }
    if (STORE == 2u) {
        return round_bf16(x);
    }
    return x;
}

// The 16-bit bits of x as stored at STORE (1: f16, 2: bf16), rounded to
// nearest even: the bits of stored(x), which is on the grid, so the
// conversion below is exact. It is integer arithmetic, the twin of
// half_to_f32: pack2x16float may flush a subnormal half to zero (and
// sigmoid's gates reach below 2^-14), and leaves infinities indeterminate.
fn packed_bits(x: f32) -> u32 {
    let r = stored(x);
    if (STORE == 2u) {
        return bitcast<u32>(r) >> 16u;
    }
    let bits = bitcast<u32>(r);
    let sign = (bits >> 16u) & 0x8000u;
    let a = bits & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a == 0x7f800000u) {
        return sign | 0x7c00u;
    }
    if (a < 0x38800000u) {
        // Zero or subnormal: |r| = q * 2^-24 with q < 1024, an integer the
        // product gives exactly (|r| >= 2^-24 is a normal f32).
        return sign | u32(bitcast<f32>(a) * 16777216.0);
    }
    // Normal: the exponent rebiased (127 -> 15), the top 10 fraction bits.
    return sign | (((a >> 23u) - 112u) << 10u) | ((a >> 13u) & 0x3ffu);
}

// A word of two packed values: v0 in the low half, v1 in the high.
fn pack2(v0: f32, v1: f32) -> u32 {
    return packed_bits(v0) | (packed_bits(v1) << 16u);
}

// `word` with v (packed_bits) in half `half`, the other half kept.
fn with_half(word: u32, half: u32, v: f32) -> u32 {
    let shift = 16u * half;
    return (word & ~(0xffffu << shift)) | (packed_bits(v) << shift);
}

// The f32 value of the IEEE half with bits h (exact; integer arithmetic,
// so that no driver flushes a subnormal half to zero).
fn half_to_f32(h: u32) -> f32 {
    let s = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24, normal in f32.
        return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    if (e == 31u) {
        return bitcast<f32>(s | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// Where element e of a tensor of 16-bit values packed two a word lives:
// (word, half). Period 0: elements 2w and 2w + 1 share word w. Period P > 0
// (a row of gate blocks P wide): blocks 2q and 2q + 1 side by side, so
// element e, in block u = e / P, is half u & 1 of word (u >> 1)·P + e mod P;
// the two halves of a word are one unit's, which one invocation owns.
fn pair_word(e: u32, period: u32) -> vec2<u32> {
    if (period == 0u) {
        return vec2<u32>(e >> 1u, e & 1u);
    }
    let u = e / period;
    return vec2<u32>((u >> 1u) * period + (e - u * period), u & 1u);
}

// The element held in half `half` of word w: the inverse of pair_word.
fn pair_element(w: u32, half: u32, period: u32) -> u32 {
    if (period == 0u) {
        return 2u * w + half;
    }
    let q = w / period;
    return (2u * q + half) * period + (w - q * period);
}

// Element `which` (0: the low 16 bits, 1: the high) of a word of packed
// 16-bit values in format `fmt` (1: f16, 2: bf16), as an f32.
fn unpack_half(word: u32, which: u32, fmt: u32) -> f32 {
    let h = (word >> (16u * which)) & 0xffffu;
    if (fmt == 2u) {
        return bitcast<f32>(h << 16u);
    }
    return half_to_f32(h);
}
