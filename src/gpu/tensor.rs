//! GPU tensors: a storage buffer that knows its shape and element type.
//!
//! Kernels compute in f32. `F16` tensors store IEEE half floats packed two per
//! 32-bit word (the layout `pack2x16float` produces) and are converted on the
//! GPU with `ops::memory::cast`; `I32` holds class targets and sequence lengths.

use std::sync::Arc;

use half::f16;

use super::GpuContext;
use crate::error::{Error, Result};
use crate::precision::Precision;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float, packed two per word.
    F16,
    /// bfloat16, packed two per word (low half first, as `F16`).
    Bf16,
    /// 32-bit signed integer.
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    /// The precision of a packed 16-bit type (`None` for F32 and I32).
    pub fn packed(self) -> Option<Precision> {
        match self {
            DType::F16 => Some(Precision::F16),
            DType::Bf16 => Some(Precision::Bf16),
            DType::F32 | DType::I32 => None,
        }
    }

    /// The packed type of a 16-bit precision (`None` for f32).
    pub fn packing(p: Precision) -> Option<DType> {
        match p {
            Precision::F16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::Bf16),
            Precision::F32 => None,
        }
    }

    /// The value of a kernel's override constant saying how an input it
    /// reads is laid out: 0 f32 words, 1 packed f16, 2 packed bf16 (the
    /// codes of [`Precision::code`]).
    pub fn layout_code(self) -> u32 {
        self.packed().map_or(0, |p| p.code())
    }

    /// The 16 bits a packed type stores for `x` (rounded to nearest even),
    /// `None` for F32 and I32.
    pub fn half_bits(self, x: f32) -> Option<u16> {
        match self {
            DType::F16 => Some(f16::from_f32(x).to_bits()),
            DType::Bf16 => Some(half::bf16::from_f32(x).to_bits()),
            DType::F32 | DType::I32 => None,
        }
    }
}

/// Where element `e` of a tensor of 16-bit values packed two a word lives,
/// as (word, half), when its elements pair in blocks of `period` (0: side by
/// side; P > 0: blocks 2q and 2q + 1 of P elements side by side, element `e`
/// of block `u = e / P` in half `u & 1` of word `(u >> 1)·P + e mod P`, the
/// LSTM's gate layout). The host twin of shaders/common.wgsl's `pair_word`.
pub fn pair_word(e: usize, period: usize) -> (usize, usize) {
    if period == 0 {
        return (e / 2, e % 2);
    }
    let u = e / period;
    ((u >> 1) * period + e % period, u & 1)
}

/// Number of elements of `shape` (saturating: an absurd shape gives `usize::MAX`,
/// which every allocation then rejects).
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or(usize::MAX)
}

/// Number of elements of `shape`, or `None` when it overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A tensor living in a GPU storage buffer. Cloning shares the buffer.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    // Counted by our handles only (recorded commands and cached bind groups
    // hold wgpu's own handles), so `is_unique` says whether any tensor still
    // refers to the buffer.
    buffer: Arc<wgpu::Buffer>,
    shape: Vec<usize>,
    dtype: DType,
    store: Precision,
}

impl GpuTensor {
    fn alloc(ctx: &GpuContext, shape: &[usize], dtype: DType, data: Option<&[u8]>) -> Result<Self> {
        let bytes = checked_numel(shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| Error::invalid("shape", format!("{shape:?} is too large")))?;
        let buffer = ctx.create_buffer(&format!("{dtype:?}{shape:?}"), bytes as u64, data)?;
        Ok(GpuTensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
            store: Precision::F32,
        })
    }

    fn check_len(arg: &str, shape: &[usize], len: usize) -> Result<()> {
        if numel(shape) != len {
            return Err(Error::invalid(
                arg,
                format!(
                    "{len} values do not fill shape {shape:?} ({} elements)",
                    numel(shape)
                ),
            ));
        }
        Ok(())
    }

    /// A zero-filled tensor.
    pub fn zeros(ctx: &GpuContext, shape: &[usize], dtype: DType) -> Result<Self> {
        Self::alloc(ctx, shape, dtype, None)
    }

    /// Uploads f32 values.
    pub fn from_f32(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::check_len("data", shape, data.len())?;
        Self::alloc(ctx, shape, DType::F32, Some(bytemuck::cast_slice(data)))
    }

    /// Uploads f16 values (stored packed; `ops::memory::cast` converts them).
    pub fn from_f16(ctx: &GpuContext, shape: &[usize], data: &[f16]) -> Result<Self> {
        Self::check_len("data", shape, data.len())?;
        Self::alloc(ctx, shape, DType::F16, Some(bytemuck::cast_slice(data)))
    }

    /// Uploads i32 values.
    pub fn from_i32(ctx: &GpuContext, shape: &[usize], data: &[i32]) -> Result<Self> {
        Self::check_len("data", shape, data.len())?;
        Self::alloc(ctx, shape, DType::I32, Some(bytemuck::cast_slice(data)))
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How an F32 tensor stores its values: with a 16-bit precision every
    /// kernel rounds what it stores into it to that precision (the buffer
    /// holds f32 words, each on the 16-bit grid; see [`crate::precision`]).
    pub fn store(&self) -> Precision {
        self.store
    }

    /// The same tensor, its values to be stored at `store` from now on
    /// (an F32 tensor only; the values already there are not rounded).
    pub fn stored_at(mut self, store: Precision) -> Result<Self> {
        match self.dtype.packed() {
            Some(p) if p != store => {
                return Err(Error::invalid(
                    "16-bit storage",
                    format!("a packed {p} tensor stores in {p}, not {store}"),
                ));
            }
            None if store.is_16bit() => self.expect_dtype("16-bit storage", DType::F32)?,
            _ => {}
        }
        self.store = store;
        Ok(self)
    }

    /// A zero-filled tensor of 16-bit values packed two per word, stored
    /// at `p` (the passes' copy of the parameters, which kernels read but
    /// never write).
    pub fn zeros_packed(ctx: &GpuContext, shape: &[usize], p: Precision) -> Result<Self> {
        let dtype = DType::packing(p)
            .ok_or_else(|| Error::invalid("packed tensor", "packs 16-bit values only"))?;
        Self::zeros(ctx, shape, dtype)?.stored_at(p)
    }

    /// Overwrites a packed tensor with `data`, each value rounded to its
    /// precision on the host (after all work recorded so far).
    pub fn write_packed(&self, ctx: &GpuContext, data: &[f32]) -> Result<()> {
        Self::check_len("data", &self.shape, data.len())?;
        let Some(mut halves) = data
            .iter()
            .map(|&x| self.dtype.half_bits(x))
            .collect::<Option<Vec<u16>>>()
        else {
            return Err(Error::invalid(
                "tensor",
                format!("expected packed 16-bit elements, got {:?}", self.dtype),
            ));
        };
        // Whole words.
        if halves.len() % 2 == 1 {
            halves.push(0);
        }
        ctx.write_buffer(&self.buffer, 0, bytemuck::cast_slice(&halves))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// True when no other tensor (a clone or a reshaped view) shares the buffer.
    /// Work already recorded may still use it: later work is ordered after it.
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.buffer) == 1
    }

    /// The same storage seen with another shape of the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.len() {
            return Err(Error::invalid(
                "shape",
                format!(
                    "cannot view {:?} ({} elements) as {shape:?}",
                    self.shape,
                    self.len()
                ),
            ));
        }
        Ok(GpuTensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            store: self.store,
        })
    }

    /// Fails unless the tensor has element type `dtype`.
    pub fn expect_dtype(&self, arg: &str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::invalid(
                arg,
                format!("expected {dtype:?} elements, got {:?}", self.dtype),
            ));
        }
        Ok(())
    }

    fn read_bytes(&self, ctx: &GpuContext) -> Result<Vec<u8>> {
        let bytes = (self.len() * self.dtype.size()) as u64;
        let mut parts = ctx.read_buffers(&[(&self.buffer, 0, bytes.div_ceil(4) * 4)])?;
        let mut v = parts.pop().unwrap_or_default();
        v.truncate(bytes as usize);
        Ok(v)
    }

    /// The values of a packed tensor from its bytes, widened to f32.
    fn widen(&self, bytes: &[u8]) -> Vec<f32> {
        let halves = bytes
            .chunks_exact(2)
            .take(self.len())
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        match self.dtype {
            DType::Bf16 => halves.map(|h| half::bf16::from_bits(h).to_f32()).collect(),
            _ => halves.map(|h| f16::from_bits(h).to_f32()).collect(),
        }
    }

    /// Downloads an f32 tensor (an f16 tensor is widened on the host).
    pub fn to_f32_vec(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(ctx)?)),
            DType::F16 | DType::Bf16 => Ok(self.widen(&self.read_bytes(ctx)?)),
            DType::I32 => Err(Error::invalid("tensor", "is I32; use to_i32_vec")),
        }
    }

    /// Downloads an f16 tensor.
    pub fn to_f16_vec(&self, ctx: &GpuContext) -> Result<Vec<f16>> {
        self.expect_dtype("tensor", DType::F16)?;
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(ctx)?))
    }

    /// Downloads an i32 tensor.
    pub fn to_i32_vec(&self, ctx: &GpuContext) -> Result<Vec<i32>> {
        self.expect_dtype("tensor", DType::I32)?;
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(ctx)?))
    }

    /// Overwrites the tensor with f32 `data` (after all work recorded so far).
    pub fn write_f32(&self, ctx: &GpuContext, data: &[f32]) -> Result<()> {
        self.write_as(ctx, DType::F32, data)
    }

    /// Overwrites the tensor with i32 `data` (after all work recorded so far).
    pub fn write_i32(&self, ctx: &GpuContext, data: &[i32]) -> Result<()> {
        self.write_as(ctx, DType::I32, data)
    }

    fn write_as<T: bytemuck::Pod>(&self, ctx: &GpuContext, dtype: DType, data: &[T]) -> Result<()> {
        self.expect_dtype("tensor", dtype)?;
        Self::check_len("data", &self.shape, data.len())?;
        ctx.write_buffer(&self.buffer, 0, bytemuck::cast_slice(data))
    }
}

/// Downloads several f32 tensors in one submission and one map (packed
/// 16-bit ones are widened on the host).
pub fn download_many(ctx: &GpuContext, tensors: &[&GpuTensor]) -> Result<Vec<Vec<f32>>> {
    for t in tensors {
        if t.dtype.packed().is_none() {
            t.expect_dtype("tensor", DType::F32)?;
        }
    }
    let parts: Vec<(&wgpu::Buffer, u64, u64)> = tensors
        .iter()
        .map(|t| {
            let bytes = (t.len() * t.dtype.size()) as u64;
            (t.buffer(), 0, bytes.div_ceil(4) * 4)
        })
        .collect();
    Ok(ctx
        .read_buffers(&parts)?
        .iter()
        .zip(tensors)
        .map(|(b, t)| match t.dtype.packed() {
            Some(_) => t.widen(b),
            None => bytemuck::pod_collect_to_vec(b),
        })
        .collect())
}
