//! Fill, copy, and f32 ↔ f16 conversion.
//!
//! CPU twin: [`fill_cpu`], [`f32_to_f16_cpu`], [`f16_to_f32_cpu`] (through the
//! `half` crate, round to nearest even). GPU: `shaders/memory.wgsl` and buffer copies.

use half::f16;

use super::matmul::u32_of;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuContext, GpuTensor, Recorder};
use crate::real::Real;

/// `x[off .. off + n] = value`.
pub fn fill_cpu<T: Real>(x: &mut [T], off: usize, n: usize, value: T) -> Result<()> {
    check_range("fill", off, n, x.len())?;
    x[off..off + n].fill(value);
    Ok(())
}

/// f32 → f16, round to nearest even, overflow to ±inf.
pub fn f32_to_f16_cpu(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// f16 → f32 (exact).
pub fn f16_to_f32_cpu(x: &[f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

pub(crate) fn check_range(arg: &str, off: usize, n: usize, len: usize) -> Result<()> {
    if off.checked_add(n).is_none_or(|end| end > len) {
        return Err(Error::invalid(
            arg,
            format!(
                "range {off}..{} exceeds {len} elements",
                off.saturating_add(n)
            ),
        ));
    }
    Ok(())
}

kernel_params! {
    struct Params {
        n: u32,
        off: u32,
        value: f32,
        src_off: u32,
    }
}

// Binding numbers of `shaders/memory.wgsl`, named after its variables.
binding_names! {
    DATA = 1,
    SRC_F32 = 2,
    DST_WORDS = 3,
    SRC_WORDS = 4,
}

const FILL: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "fill",
    &[(binding::DATA, Access::ReadWrite)],
    &[],
);

const FILL_WORDS: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "fill_words",
    &[(binding::DST_WORDS, Access::ReadWrite)],
    &[],
);

const TO_F16: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "f32_to_f16",
    &[
        (binding::SRC_F32, Access::Read),
        (binding::DST_WORDS, Access::ReadWrite),
    ],
    &[],
);

const TO_F32: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "f16_to_f32",
    &[
        (binding::DATA, Access::ReadWrite),
        (binding::SRC_WORDS, Access::Read),
    ],
    &[],
);

const ROUND_COPY: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "round_copy",
    &[
        (binding::DATA, Access::ReadWrite),
        (binding::SRC_F32, Access::Read),
    ],
    &["STORE"],
);

const PACK_COPY: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "pack_copy",
    &[
        (binding::SRC_F32, Access::Read),
        (binding::DST_WORDS, Access::ReadWrite),
    ],
    &["STORE"],
);

const UNPACK_COPY: KernelDef<Params> = KernelDef::new(
    Shader::Memory,
    "unpack_copy",
    &[
        (binding::DATA, Access::ReadWrite),
        (binding::SRC_WORDS, Access::Read),
    ],
    &["STORE", "SRC_LAYOUT"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[
    FILL.info(),
    FILL_WORDS.info(),
    TO_F16.info(),
    TO_F32.info(),
    ROUND_COPY.info(),
    PACK_COPY.info(),
    UNPACK_COPY.info(),
];

/// How a kernel reads `t`, an input that may be the passes' packed 16-bit
/// copy of the parameters: the value of its `*_LAYOUT` override constant
/// ([`DType::layout_code`]); an error for an i32 tensor.
pub(crate) fn read_layout(arg: &str, t: &GpuTensor) -> Result<f64> {
    if t.dtype().packed().is_none() {
        t.expect_dtype(arg, DType::F32)?;
    }
    Ok(t.dtype().layout_code() as f64)
}

/// The `STORE` override constant of a kernel storing into `t` (see
/// [`crate::precision::Precision::code`]).
pub(crate) fn store_constant(t: &GpuTensor) -> (&'static str, f64) {
    ("STORE", t.store().code() as f64)
}

/// Fails unless `store` is f32: `arg` of `op` holds sums or statistics
/// that stay f32 in every mode (losses, summaries, norms, parameter
/// gradients, optimizer state).
pub fn expect_f32_store(op: &str, arg: &str, store: crate::precision::Precision) -> Result<()> {
    if store.is_16bit() {
        return Err(Error::invalid(
            format!("{op} {arg}"),
            format!("is stored in {store}; it holds sums or statistics, which stay f32"),
        ));
    }
    Ok(())
}

/// The `STORE` constant of a kernel storing into every tensor of `outs`,
/// which must all store at one precision.
pub(crate) fn shared_store(
    op: &str,
    outs: &[(&str, Option<&GpuTensor>)],
) -> Result<(&'static str, f64)> {
    let mut first: Option<(&str, &GpuTensor)> = None;
    for (arg, t) in outs {
        let Some(t) = t else { continue };
        match first {
            None => first = Some((arg, t)),
            Some((a0, t0)) if t0.store() != t.store() => {
                return Err(Error::invalid(
                    format!("{op} {arg}"),
                    format!(
                        "is stored in {} but {a0} in {}: one kernel stores at one precision",
                        t.store(),
                        t0.store()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(("STORE", first.map_or(0, |(_, t)| t.store().code()) as f64))
}

/// Records `x[off .. off + n] = value` on the GPU (a clear when the value is 0
/// and the range is word aligned, a fill kernel otherwise).
pub fn fill_gpu(
    rec: &mut Recorder<'_>,
    x: &GpuTensor,
    off: usize,
    n: usize,
    value: f32,
) -> Result<()> {
    if let Some(half) = x.dtype().half_bits(value) {
        return fill_packed(rec, x, half, off, n);
    }
    x.expect_dtype("fill", DType::F32)?;
    check_range("fill", off, n, x.len())?;
    let value = x.store().round_f32(value);
    if n == 0 {
        return Ok(());
    }
    if value == 0.0 && value.is_sign_positive() {
        rec.clear(x.buffer(), off as u64 * 4, n as u64 * 4);
        return Ok(());
    }
    let params = Params {
        n: u32_of("n", n)?,
        off: u32_of("off", off)?,
        value,
        src_off: 0,
    };
    let grid = rec.ctx().grid((n as u64).div_ceil(256))?;
    rec.dispatch(FILL, &[], &[(binding::DATA, x.buffer())], &params, grid)
}

/// `fill_gpu` of a packed 16-bit tensor: whole words only (`off` even, and
/// `n` even unless the range ends the tensor), both halves of each word
/// `half` (the value's 16 bits, [`DType::half_bits`]).
fn fill_packed(
    rec: &mut Recorder<'_>,
    x: &GpuTensor,
    half: u16,
    off: usize,
    n: usize,
) -> Result<()> {
    let len = x.len();
    check_range("fill", off, n, len)?;
    if !off.is_multiple_of(2) || (!n.is_multiple_of(2) && off + n != len) {
        return Err(Error::invalid(
            "fill",
            format!(
                "range {off}..{} of a packed {} tensor splits a word (two values a word)",
                off + n,
                x.store()
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let half = u32::from(half);
    let (first, words) = (off / 2, n.div_ceil(2));
    if half == 0 {
        rec.clear(x.buffer(), first as u64 * 4, words as u64 * 4);
        return Ok(());
    }
    let params = Params {
        n: u32_of("n", words)?,
        off: u32_of("off", first)?,
        // (The word's bits: the kernel stores them as an integer.)
        value: f32::from_bits(half | (half << 16)),
        src_off: 0,
    };
    let grid = rec.ctx().grid((words as u64).div_ceil(256))?;
    rec.dispatch(
        FILL_WORDS,
        &[],
        &[(binding::DST_WORDS, x.buffer())],
        &params,
        grid,
    )
}

/// Records a copy of `n` f32/i32 elements between tensors.
pub fn copy_gpu(
    rec: &mut Recorder<'_>,
    src: &GpuTensor,
    src_off: usize,
    dst: &GpuTensor,
    dst_off: usize,
    n: usize,
) -> Result<()> {
    // Into packed 16-bit values (the passes' copy of the parameters, a
    // step's initial state) from f32, out of them into f32 (a step's final
    // state); otherwise between tensors of one unpacked type.
    let packed = dst.dtype().packed().is_some();
    let unpack = src.dtype().packed().is_some() && dst.dtype() == DType::F32;
    let ok = if packed {
        src.dtype() == DType::F32
    } else {
        unpack || (src.dtype() == dst.dtype() && src.dtype().packed().is_none())
    };
    if !ok {
        return Err(Error::invalid(
            "copy",
            format!(
                "copies F32 or I32 between tensors of one type (or F32 into packed 16-bit \
                 values and back), got {:?} -> {:?}",
                src.dtype(),
                dst.dtype()
            ),
        ));
    }
    check_range("copy source", src_off, n, src.len())?;
    check_range("copy destination", dst_off, n, dst.len())?;
    if n == 0 {
        return Ok(());
    }
    let params = Params {
        n: u32_of("n", n)?,
        off: u32_of("destination offset", dst_off)?,
        value: 0.0,
        src_off: u32_of("source offset", src_off)?,
    };
    if unpack {
        let grid = rec.ctx().grid((n as u64).div_ceil(256))?;
        let layout = ("SRC_LAYOUT", src.dtype().layout_code() as f64);
        return rec.dispatch(
            UNPACK_COPY,
            &[store_constant(dst), layout],
            &[
                (binding::SRC_WORDS, src.buffer()),
                (binding::DATA, dst.buffer()),
            ],
            &params,
            grid,
        );
    }
    if packed || (dst.store().is_16bit() && src.store() != dst.store()) {
        // Values that may be off the destination's grid (two stores mean
        // two buffers): rounded as they are stored, into f32 words, or
        // packed by one invocation a destination word.
        let (kernel, dst_binding, invocations) = if packed {
            let words = (dst_off + n).div_ceil(2) - dst_off / 2;
            (PACK_COPY, binding::DST_WORDS, words)
        } else {
            (ROUND_COPY, binding::DATA, n)
        };
        let grid = rec.ctx().grid((invocations as u64).div_ceil(256))?;
        return rec.dispatch(
            kernel,
            &[store_constant(dst)],
            &[
                (binding::SRC_F32, src.buffer()),
                (dst_binding, dst.buffer()),
            ],
            &params,
            grid,
        );
    }
    let bytes = n as u64 * 4;
    if src.buffer() == dst.buffer() {
        // wgpu cannot copy within one buffer: go through a temporary one, which
        // also gives memmove semantics for overlapping ranges (as on the CPU).
        let tmp = rec
            .ctx()
            .create_buffer("copy within a buffer", bytes, None)?;
        rec.copy(src.buffer(), src_off as u64 * 4, &tmp, 0, bytes);
        rec.copy(&tmp, 0, dst.buffer(), dst_off as u64 * 4, bytes);
        return Ok(());
    }
    rec.copy(
        src.buffer(),
        src_off as u64 * 4,
        dst.buffer(),
        dst_off as u64 * 4,
        bytes,
    );
    Ok(())
}

/// Converts an F32 tensor to F16 or back on the GPU; other pairs are errors.
pub fn cast(ctx: &GpuContext, x: &GpuTensor, dtype: DType) -> Result<GpuTensor> {
    let n = x.len();
    let out = GpuTensor::zeros(ctx, x.shape(), dtype)?;
    if n == 0 || x.dtype() == dtype {
        if n > 0 {
            ctx.record(|rec| {
                rec.copy(x.buffer(), 0, out.buffer(), 0, x.buffer().size());
                Ok(())
            })?;
        }
        return Ok(out);
    }
    let params = Params {
        n: u32_of("n", n)?,
        off: 0,
        value: 0.0,
        src_off: 0,
    };
    let (def, buffers) = match (x.dtype(), dtype) {
        (DType::F32, DType::F16) => (
            TO_F16,
            [
                (binding::SRC_F32, x.buffer()),
                (binding::DST_WORDS, out.buffer()),
            ],
        ),
        (DType::F16, DType::F32) => (
            TO_F32,
            [
                (binding::SRC_WORDS, x.buffer()),
                (binding::DATA, out.buffer()),
            ],
        ),
        (from, to) => {
            return Err(Error::invalid(
                "cast",
                format!("converts between F32 and F16, not {from:?} -> {to:?}"),
            ));
        }
    };
    ctx.record(|rec| {
        let grid = rec.ctx().grid((n as u64).div_ceil(2).div_ceil(256))?;
        rec.dispatch(def, &[], &buffers, &params, grid)
    })?;
    Ok(out)
}
