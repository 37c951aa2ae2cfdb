//! Reductions with a fixed order: column sums (bias gradients) and whole-vector
//! sum / max / sum of squares (loss totals, gradient norms).
//!
//! The GPU versions assign elements to invocations and combine partial results
//! in an order that depends only on the sizes, never on timing, and use no
//! atomics: the same inputs give bitwise the same outputs on the same adapter.
//!
//! CPU twin: [`sum_cols_cpu`], [`dot_cols_cpu`], [`reduce_cpu`]. GPU: `shaders/reduce.wgsl`.

use super::matmul::u32_of;
use super::need_len;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::real::Real;

/// A whole-vector reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Σ x
    Sum,
    /// max x
    Max,
    /// Σ x²
    SumSquares,
}

impl ReduceOp {
    fn code(self) -> u32 {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::SumSquares => 2,
        }
    }
}

/// Column sums of a row-major matrix: `out[c] (+)= Σ_r x[x_off + r·ld + c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColSum {
    /// Rows summed over.
    pub rows: usize,
    /// Columns (outputs).
    pub cols: usize,
    /// Row stride of x.
    pub ld: usize,
    /// Offset of x.
    pub x_off: usize,
    /// Offset of out.
    pub out_off: usize,
    /// Add to out instead of overwriting.
    pub accumulate: bool,
    /// Also write the sums to `out[also_off..]` (with the same `accumulate`
    /// rule): two outputs that take the same sums (the LSTM's and RNN's
    /// `b_ih` and `b_hh`) cost one pass over x.
    pub also_off: Option<usize>,
    /// How a packed x (16-bit values two a word, on the GPU) pairs its
    /// elements ([`crate::ops::matmul::Gemm::a_pairs`]); the CPU ignores it.
    pub x_pairs: usize,
}

impl ColSum {
    /// Contiguous `[rows, cols]` summed into `[cols]`.
    pub fn new(rows: usize, cols: usize) -> Self {
        ColSum {
            rows,
            cols,
            ld: cols,
            x_off: 0,
            out_off: 0,
            accumulate: false,
            also_off: None,
            x_pairs: 0,
        }
    }

    fn validate(&self, x_len: usize, out_len: usize) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::invalid(
                "sum_cols",
                format!("empty matrix {}x{}", self.rows, self.cols),
            ));
        }
        if self.ld < self.cols {
            return Err(Error::invalid(
                "sum_cols ld",
                format!("row stride {} below {} columns", self.ld, self.cols),
            ));
        }
        let need = (self.rows - 1)
            .saturating_mul(self.ld)
            .saturating_add(self.x_off)
            .saturating_add(self.cols);
        need_len("sum_cols x", need, x_len)?;
        need_len(
            "sum_cols out",
            self.out_off.saturating_add(self.cols),
            out_len,
        )?;
        if let Some(also) = self.also_off {
            need_len("sum_cols out", also.saturating_add(self.cols), out_len)?;
            let (lo, hi) = (self.out_off.min(also), self.out_off.max(also));
            if hi - lo < self.cols {
                return Err(Error::invalid(
                    "sum_cols also_off",
                    format!(
                        "{also} overlaps the {} outputs at {}",
                        self.cols, self.out_off
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Writes (or adds, with `accumulate`) the column sums `acc` to out at
    /// `out_off` and at `also_off`.
    fn store<T: Real>(&self, acc: &[T], out: &mut [T]) {
        for off in std::iter::once(self.out_off).chain(self.also_off) {
            let o = &mut out[off..off + self.cols];
            if !self.accumulate {
                o.fill(T::zero());
            }
            for (o, &a) in o.iter_mut().zip(acc) {
                *o += a;
            }
        }
    }
}

/// Column dot products of two row-major matrices:
/// `out[c] (+)= Σ_r x[x_off + r·ld + c] · y[y_off + r·y_ld + c]` (the LSTM's
/// peephole gradients: gate gradients times cell states, over every step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColDot {
    /// Rows, columns, x and out as in a column sum.
    pub sum: ColSum,
    /// Offset of y.
    pub y_off: usize,
    /// Row stride of y.
    pub y_ld: usize,
}

impl ColDot {
    fn validate(&self, x_len: usize, y_len: usize, out_len: usize) -> Result<()> {
        let s = &self.sum;
        s.validate(x_len, out_len)?;
        if self.y_ld < s.cols {
            return Err(Error::invalid(
                "dot_cols y_ld",
                format!("row stride {} below {} columns", self.y_ld, s.cols),
            ));
        }
        let need = (s.rows - 1)
            .saturating_mul(self.y_ld)
            .saturating_add(self.y_off)
            .saturating_add(s.cols);
        need_len("dot_cols y", need, y_len)
    }
}

/// CPU column dot products, rows added in order.
pub fn dot_cols_cpu<T: Real>(d: &ColDot, x: &[T], y: &[T], out: &mut [T]) -> Result<()> {
    d.validate(x.len(), y.len(), out.len())?;
    let s = &d.sum;
    let mut acc = vec![T::zero(); s.cols];
    for r in 0..s.rows {
        let xr = &x[s.x_off + r * s.ld..s.x_off + r * s.ld + s.cols];
        let yr = &y[d.y_off + r * d.y_ld..d.y_off + r * d.y_ld + s.cols];
        for ((a, &u), &v) in acc.iter_mut().zip(xr).zip(yr) {
            *a += u * v;
        }
    }
    s.store(&acc, out);
    Ok(())
}

/// CPU column sums, rows added in order.
pub fn sum_cols_cpu<T: Real>(s: &ColSum, x: &[T], out: &mut [T]) -> Result<()> {
    s.validate(x.len(), out.len())?;
    // Row-major accumulation: for each output the rows are still added in order 0..R.
    let mut acc = vec![T::zero(); s.cols];
    for r in 0..s.rows {
        let row = &x[s.x_off + r * s.ld..s.x_off + r * s.ld + s.cols];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    s.store(&acc, out);
    Ok(())
}

/// CPU reduction of a whole slice (in order).
pub fn reduce_cpu<T: Real>(op: ReduceOp, x: &[T]) -> Result<T> {
    if x.is_empty() {
        return Err(Error::invalid("reduce x", "is empty"));
    }
    Ok(match op {
        ReduceOp::Sum => x.iter().fold(T::zero(), |a, &v| a + v),
        ReduceOp::Max => x.iter().copied().fold(T::min_value(), T::max),
        ReduceOp::SumSquares => x.iter().fold(T::zero(), |a, &v| a + v * v),
    })
}

kernel_params! {
    struct Params {
        n: u32,
        cols: u32,
        ld: u32,
        x_off: u32,
        out_off: u32,
        chunk: u32,
        parts: u32,
        flags: u32,
        y_off: u32,
        y_ld: u32,
        out2_off: u32,
        x_pairs: u32,
    }
}

// Binding numbers of `shaders/reduce.wgsl`, named after its variables.
binding_names! {
    X = 1,
    OUT = 2,
    PARTIAL = 3,
    PARTIAL_IN = 4,
    Y = 5,
}

const SUM_COLS: KernelDef<Params> = KernelDef::new(
    Shader::Reduce,
    "sum_cols",
    &[
        (binding::X, Access::Read),
        (binding::OUT, Access::ReadWrite),
    ],
    &["X_LAYOUT"],
);

const DOT_COLS: KernelDef<Params> = KernelDef::new(
    Shader::Reduce,
    "dot_cols",
    &[
        (binding::X, Access::Read),
        (binding::OUT, Access::ReadWrite),
        (binding::Y, Access::Read),
    ],
    &["X_LAYOUT", "Y_LAYOUT"],
);

const PARTIAL: KernelDef<Params> = KernelDef::new(
    Shader::Reduce,
    "reduce_partial",
    &[
        (binding::X, Access::Read),
        (binding::PARTIAL, Access::ReadWrite),
    ],
    &["OP"],
);

const FINAL: KernelDef<Params> = KernelDef::new(
    Shader::Reduce,
    "reduce_final",
    &[
        (binding::OUT, Access::ReadWrite),
        (binding::PARTIAL_IN, Access::Read),
    ],
    &["OP"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[
    SUM_COLS.info(),
    DOT_COLS.info(),
    PARTIAL.info(),
    FINAL.info(),
];

/// Records column sums on the GPU: 32 columns per workgroup, each column's
/// rows in 8 strided lanes added in a fixed order (`shaders/reduce.wgsl`).
pub fn sum_cols_gpu(
    rec: &mut Recorder<'_>,
    s: &ColSum,
    x: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    let x_layout = x_layout("sum_cols x", s, x)?;
    out.expect_dtype("sum_cols out", DType::F32)?;
    crate::ops::memory::expect_f32_store("sum_cols", "out", out.store())?;
    s.validate(x.len(), out.len())?;
    let params = col_params(s, 0, 0)?;
    let grid = rec.ctx().grid((s.cols as u64).div_ceil(COLS_PER_GROUP))?;
    let buffers = [(binding::X, x.buffer()), (binding::OUT, out.buffer())];
    rec.dispatch(SUM_COLS, &[("X_LAYOUT", x_layout)], &buffers, &params, grid)
}

/// The `X_LAYOUT` of a column reduction's x: f32 words, or packed 16-bit
/// values (paired as `s.x_pairs` says).
fn x_layout(arg: &str, s: &ColSum, x: &GpuTensor) -> Result<f64> {
    let layout = crate::ops::memory::read_layout(arg, x)?;
    if s.x_pairs > 0 && layout == 0.0 {
        return Err(Error::invalid(
            arg,
            format!(
                "pairs its elements in blocks of {}, which only a packed 16-bit tensor can",
                s.x_pairs
            ),
        ));
    }
    Ok(layout)
}

/// Columns per workgroup of `sum_cols` and `dot_cols`.
const COLS_PER_GROUP: u64 = 32;

fn col_params(s: &ColSum, y_off: usize, y_ld: usize) -> Result<Params> {
    Ok(Params {
        n: u32_of("rows", s.rows)?,
        cols: u32_of("cols", s.cols)?,
        ld: u32_of("ld", s.ld)?,
        x_off: u32_of("x_off", s.x_off)?,
        out_off: u32_of("out_off", s.out_off)?,
        chunk: 0,
        parts: 0,
        flags: s.accumulate as u32 | (s.also_off.is_some() as u32) << 1,
        y_off: u32_of("y_off", y_off)?,
        y_ld: u32_of("y_ld", y_ld)?,
        out2_off: u32_of("also_off", s.also_off.unwrap_or(0))?,
        x_pairs: u32_of("x_pairs", s.x_pairs)?,
    })
}

/// Records column dot products on the GPU, in the order of [`sum_cols_gpu`].
pub fn dot_cols_gpu(
    rec: &mut Recorder<'_>,
    d: &ColDot,
    x: &GpuTensor,
    y: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    let x_layout = x_layout("dot_cols x", &d.sum, x)?;
    let y_layout = crate::ops::memory::read_layout("dot_cols y", y)?;
    out.expect_dtype("dot_cols out", DType::F32)?;
    crate::ops::memory::expect_f32_store("dot_cols", "out", out.store())?;
    d.validate(x.len(), y.len(), out.len())?;
    let params = col_params(&d.sum, d.y_off, d.y_ld)?;
    let grid = rec
        .ctx()
        .grid((d.sum.cols as u64).div_ceil(COLS_PER_GROUP))?;
    let buffers = [
        (binding::X, x.buffer()),
        (binding::OUT, out.buffer()),
        (binding::Y, y.buffer()),
    ];
    let constants = [("X_LAYOUT", x_layout), ("Y_LAYOUT", y_layout)];
    rec.dispatch(DOT_COLS, &constants, &buffers, &params, grid)
}

/// Number of partial results (and scratch elements) a GPU reduction of `n` elements uses.
/// Depends only on `n`, so the combination order does too.
pub fn partials(n: usize) -> usize {
    n.div_ceil(4096).clamp(1, 1024)
}

/// Records `out[out_off] (+)= op(x[x_off .. x_off + n])` on the GPU: one pass
/// of [`partials`]`(n)` workgroups into `scratch`, then one workgroup.
#[allow(clippy::too_many_arguments)]
pub fn reduce_gpu(
    rec: &mut Recorder<'_>,
    op: ReduceOp,
    x: &GpuTensor,
    x_off: usize,
    n: usize,
    scratch: &GpuTensor,
    out: &GpuTensor,
    out_off: usize,
    accumulate: bool,
) -> Result<()> {
    x.expect_dtype("reduce x", DType::F32)?;
    out.expect_dtype("reduce out", DType::F32)?;
    crate::ops::memory::expect_f32_store("reduce", "out", out.store())?;
    scratch.expect_dtype("reduce scratch", DType::F32)?;
    if n == 0 {
        return Err(Error::invalid("reduce x", "is empty"));
    }
    if x_off + n > x.len() {
        return Err(Error::invalid(
            "reduce x",
            format!(
                "{n} elements at offset {x_off} exceed its {} elements",
                x.len()
            ),
        ));
    }
    if out_off >= out.len() {
        return Err(Error::invalid(
            "reduce out",
            format!("offset {out_off} outside its {} elements", out.len()),
        ));
    }
    let parts = partials(n);
    need_len("reduce scratch", parts, scratch.len())?;
    let params = Params {
        n: u32_of("n", n)?,
        cols: 0,
        ld: 0,
        x_off: u32_of("x_off", x_off)?,
        out_off: u32_of("out_off", out_off)?,
        chunk: u32_of("chunk", n.div_ceil(parts))?,
        parts: parts as u32,
        flags: accumulate as u32,
        y_off: 0,
        y_ld: 0,
        out2_off: 0,
        x_pairs: 0,
    };
    let constants = [("OP", op.code() as f64)];
    let grid = rec.ctx().grid(parts as u64)?;
    rec.dispatch(
        PARTIAL,
        &constants,
        &[
            (binding::X, x.buffer()),
            (binding::PARTIAL, scratch.buffer()),
        ],
        &params,
        grid,
    )?;
    rec.dispatch(
        FINAL,
        &constants,
        &[
            (binding::OUT, out.buffer()),
            (binding::PARTIAL_IN, scratch.buffer()),
        ],
        &params,
        [1, 1, 1],
    )
}
