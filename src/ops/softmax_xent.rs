//! Row softmax, and softmax cross-entropy fused with its gradient.
//!
//! For logits `x` of shape `[R, V]` and integer targets `t` of shape `[R]`:
//! - `loss[r] = logsumexp(x[r]) − x[r, t[r]]` (0 for ignored rows), computed as
//!   `(max − x[r, t]) + ln Σ exp(x − max)`;
//! - mean loss = Σ loss / count, count = number of rows whose target is a class
//!   (not `ignore_index`), as PyTorch's `cross_entropy(reduction='mean')`;
//! - `dx[r, v] = scale · (softmax(x[r])[v] − [v = t[r]]) / count` (0 for ignored rows).
//!
//! A target outside `[0, V)` that is not `ignore_index` is counted in
//! [`XentSummary::invalid`] and otherwise ignored; [`XentSummary::check`]
//! turns it into an error. (The GPU cannot fail a kernel, so it counts, and
//! the host reports when it reads the summary.) With no valid row at all the
//! mean loss and the gradient are 0 (PyTorch returns NaN there).
//!
//! Predictions: [`argmax_rows_cpu`] writes each row's argmax (the first
//! index of its largest logit, [`argmax`]), so that an
//! evaluation reads back `[R]` classes instead of `[R, V]` logits.
//!
//! CPU twin: [`softmax_cpu`], [`xent_cpu`], [`argmax_rows_cpu`]. GPU:
//! `shaders/softmax_xent.wgsl`.

use super::matmul::u32_of;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::real::Real;

/// PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i32 = -100;

/// Number of values in a summary: `[mean, count, sum, invalid, correct]`.
pub const SUMMARY_LEN: usize = 5;

/// Result of a cross-entropy evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct XentSummary {
    /// Mean loss over valid rows.
    pub mean: f64,
    /// Number of valid rows.
    pub count: usize,
    /// Sum of the row losses.
    pub sum: f64,
    /// Targets outside `[0, V)` that were not `ignore_index`.
    pub invalid: usize,
    /// Valid rows whose target has the largest logit (ties count as correct).
    pub correct: usize,
}

impl XentSummary {
    /// Reads the `[mean, count, sum, invalid, correct]` layout.
    pub fn from_slice(v: &[f64]) -> Self {
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        XentSummary {
            mean: at(0),
            count: at(1) as usize,
            sum: at(2),
            invalid: at(3) as usize,
            correct: at(4) as usize,
        }
    }

    /// The layout `from_slice` reads.
    pub fn to_vec(self) -> Vec<f64> {
        vec![
            self.mean,
            self.count as f64,
            self.sum,
            self.invalid as f64,
            self.correct as f64,
        ]
    }

    /// Fails if any target was out of range.
    pub fn check(self, classes: usize) -> Result<Self> {
        if self.invalid > 0 {
            return Err(Error::invalid(
                "targets",
                format!(
                    "{} targets are outside [0, {classes}) and are not the ignore index",
                    self.invalid
                ),
            ));
        }
        Ok(self)
    }
}

/// Shape of a softmax / cross-entropy problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// Number of rows R.
    pub rows: usize,
    /// Number of classes V.
    pub cols: usize,
}

impl Rows {
    fn validate(&self) -> Result<()> {
        if self.rows.checked_mul(self.cols.max(3)).is_none() {
            return Err(Error::invalid(
                "rows",
                format!("{} rows of {} classes is too large", self.rows, self.cols),
            ));
        }
        if self.rows == 0 {
            return Err(Error::invalid("rows", "must be at least 1 (empty batch)"));
        }
        if self.cols == 0 {
            return Err(Error::invalid("classes", "must be at least 1"));
        }
        Ok(())
    }

    fn check_len(&self, arg: &str, len: usize, want: usize) -> Result<()> {
        if len < want {
            return Err(Error::invalid(
                arg,
                format!(
                    "has {len} elements, needs {want} for {} rows of {} classes",
                    self.rows, self.cols
                ),
            ));
        }
        Ok(())
    }
}

/// Row maximum `m` and `s = Σ exp(x − m)`. Kept apart (not as `m + ln s`) so
/// that `exp(x − m) / s` stays accurate for logits of any magnitude.
fn row_stats<T: Real>(row: &[T]) -> (T, T) {
    let m = row.iter().copied().fold(T::min_value(), T::max);
    let s: T = row.iter().map(|&v| (v - m).exp()).sum();
    (m, s)
}

/// `y[r] = softmax(x[r])`, subtracting the row maximum first.
pub fn softmax_cpu<T: Real>(shape: Rows, x: &[T], y: &mut [T]) -> Result<()> {
    shape.validate()?;
    let n = shape.rows * shape.cols;
    shape.check_len("softmax x", x.len(), n)?;
    shape.check_len("softmax y", y.len(), n)?;
    for (xr, yr) in x[..n]
        .chunks_exact(shape.cols)
        .zip(y[..n].chunks_exact_mut(shape.cols))
    {
        let (m, s) = row_stats(xr);
        for (y, &x) in yr.iter_mut().zip(xr) {
            *y = (x - m).exp() / s;
        }
    }
    Ok(())
}

fn is_valid(t: i32, ignore_index: i32, cols: usize) -> bool {
    t != ignore_index && t >= 0 && (t as usize) < cols
}

/// Cross-entropy of logits `x` `[R, V]` against `targets` `[R]`: fills `loss`
/// `[R]` and, if given, `dx` `[R, V]` with `scale · (softmax − onehot) / count`.
pub fn xent_cpu<T: Real>(
    shape: Rows,
    x: &[T],
    targets: &[i32],
    ignore_index: i32,
    scale: T,
    loss: &mut [T],
    dx: Option<&mut [T]>,
) -> Result<XentSummary> {
    shape.validate()?;
    let (rows, cols) = (shape.rows, shape.cols);
    shape.check_len("logits", x.len(), rows * cols)?;
    shape.check_len("targets", targets.len(), rows)?;
    shape.check_len("loss", loss.len(), rows)?;
    let mut stats = vec![(T::zero(), T::one()); rows];
    let mut summary = XentSummary::default();
    let mut sum = T::zero();
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        stats[r] = row_stats(row);
        let t = targets[r];
        loss[r] = if is_valid(t, ignore_index, cols) {
            summary.count += 1;
            let (m, s) = stats[r];
            if row[t as usize] >= m {
                summary.correct += 1;
            }
            let l = (m - row[t as usize]) + s.ln();
            sum += l;
            l
        } else {
            if t != ignore_index {
                summary.invalid += 1;
            }
            T::zero()
        };
    }
    summary.sum = sum.f64();
    if summary.count > 0 {
        summary.mean = (sum / T::of(summary.count as f64)).f64();
    }
    if let Some(dx) = dx {
        shape.check_len("dlogits", dx.len(), rows * cols)?;
        let coef = if summary.count > 0 {
            scale / T::of(summary.count as f64)
        } else {
            T::zero()
        };
        for r in 0..rows {
            let t = targets[r];
            let valid = is_valid(t, ignore_index, cols) && summary.count > 0;
            for v in 0..cols {
                let i = r * cols + v;
                dx[i] = if valid {
                    let onehot = if v as i32 == t { T::one() } else { T::zero() };
                    let (m, s) = stats[r];
                    ((x[i] - m).exp() / s - onehot) * coef
                } else {
                    T::zero()
                };
            }
        }
    }
    Ok(summary)
}

kernel_params! {
    struct Params {
        rows: u32,
        cols: u32,
        ld: u32,
        x_off: u32,
        ignore_index: i32,
        out_off: u32,
        scale: f32,
        _pad: u32,
    }
}

// Binding numbers of `shaders/softmax_xent.wgsl`, named after its variables
// (`*_in`: the same buffer read by a later kernel of the loss).
binding_names! {
    X = 1,
    TARGETS = 2,
    LOSS = 3,
    STATS = 4,
    SUMMARY = 5,
    LOSS_IN = 6,
    STATS_IN = 7,
    OUT = 8,
    SUMMARY_IN = 9,
    PREDICTED = 10,
}

const R: Access = Access::Read;
const W: Access = Access::ReadWrite;

const SOFTMAX: KernelDef<Params> = KernelDef::new(
    Shader::SoftmaxXent,
    "softmax_rows",
    &[(binding::X, R), (binding::OUT, W)],
    &["STORE"],
);

const XENT_ROWS: KernelDef<Params> = KernelDef::new(
    Shader::SoftmaxXent,
    "xent_rows",
    &[
        (binding::X, R),
        (binding::TARGETS, R),
        (binding::LOSS, W),
        (binding::STATS, W),
    ],
    &[],
);

const XENT_REDUCE: KernelDef<Params> = KernelDef::new(
    Shader::SoftmaxXent,
    "xent_reduce",
    &[
        (binding::TARGETS, R),
        (binding::SUMMARY, W),
        (binding::LOSS_IN, R),
        (binding::STATS_IN, R),
    ],
    &[],
);

const XENT_GRAD: KernelDef<Params> = KernelDef::new(
    Shader::SoftmaxXent,
    "xent_grad",
    &[
        (binding::X, R),
        (binding::TARGETS, R),
        (binding::STATS_IN, R),
        (binding::OUT, W),
        (binding::SUMMARY_IN, R),
    ],
    &["STORE"],
);

const ARGMAX: KernelDef<Params> = KernelDef::new(
    Shader::SoftmaxXent,
    "argmax_rows",
    &[(binding::X, R), (binding::PREDICTED, W)],
    &[],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[
    SOFTMAX.info(),
    XENT_ROWS.info(),
    XENT_REDUCE.info(),
    XENT_GRAD.info(),
    ARGMAX.info(),
];

/// Index of the largest value of `row`: scanning left to right from index 0,
/// the first one greater than every one before it. Ties go to the first; a
/// NaN is never greater, and nothing is greater than a NaN at index 0.
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// `predicted[r]` = [`argmax`] of row `r` of `x` `[R, V]`.
pub fn argmax_rows_cpu<T: Real>(shape: Rows, x: &[T], predicted: &mut [i32]) -> Result<()> {
    shape.validate()?;
    shape.check_len("argmax x", x.len(), shape.rows * shape.cols)?;
    shape.check_len("argmax predicted", predicted.len(), shape.rows)?;
    for (p, row) in predicted.iter_mut().zip(x.chunks_exact(shape.cols)) {
        *p = argmax(row) as i32;
    }
    Ok(())
}

/// Records `predicted = argmax` of every row of `x` `[R, V]` on the GPU
/// (one invocation per row; [`argmax_rows_cpu`] is its twin).
pub fn argmax_rows_gpu(
    rec: &mut Recorder<'_>,
    shape: Rows,
    x: &GpuTensor,
    predicted: &GpuTensor,
) -> Result<()> {
    shape.validate()?;
    x.expect_dtype("argmax x", DType::F32)?;
    predicted.expect_dtype("argmax predicted", DType::I32)?;
    shape.check_len("argmax x", x.len(), shape.rows * shape.cols)?;
    shape.check_len("argmax predicted", predicted.len(), shape.rows)?;
    let grid = rec.ctx().grid((shape.rows as u64).div_ceil(64))?;
    rec.dispatch(
        ARGMAX,
        &[],
        &[
            (binding::X, x.buffer()),
            (binding::PREDICTED, predicted.buffer()),
        ],
        &params(shape, 0, 1.0)?,
        grid,
    )
}

fn params(shape: Rows, ignore_index: i32, scale: f32) -> Result<Params> {
    Ok(Params {
        rows: u32_of("rows", shape.rows)?,
        cols: u32_of("classes", shape.cols)?,
        ld: u32_of("classes", shape.cols)?,
        x_off: 0,
        ignore_index,
        out_off: 0,
        scale,
        _pad: 0,
    })
}

/// Records `y = softmax(x)` row by row on the GPU.
pub fn softmax_gpu(
    rec: &mut Recorder<'_>,
    shape: Rows,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    shape.validate()?;
    x.expect_dtype("softmax x", DType::F32)?;
    y.expect_dtype("softmax y", DType::F32)?;
    let n = shape.rows * shape.cols;
    shape.check_len("softmax x", x.len(), n)?;
    shape.check_len("softmax y", y.len(), n)?;
    let grid = rec.ctx().grid(shape.rows as u64)?;
    rec.dispatch(
        SOFTMAX,
        &[crate::ops::memory::store_constant(y)],
        &[(binding::X, x.buffer()), (binding::OUT, y.buffer())],
        &params(shape, 0, 1.0)?,
        grid,
    )
}

/// GPU buffers one cross-entropy evaluation writes.
#[derive(Clone, Debug)]
pub struct XentOut<'a> {
    /// Per-row loss `[R]`.
    pub loss: &'a GpuTensor,
    /// Scratch: per-row `(max, Σ exp(x − max), hit)` triples `[3R]`.
    pub stats: &'a GpuTensor,
    /// Receives `[mean, count, sum, invalid, correct]` at `summary_off`.
    pub summary: &'a GpuTensor,
    /// Offset of the summary.
    pub summary_off: usize,
    /// Gradient of `scale · mean loss` with respect to the logits `[R, V]`, if wanted.
    pub dlogits: Option<&'a GpuTensor>,
}

/// Records the fused cross-entropy: per-row losses, their fixed-order mean, and
/// (when `out.dlogits` is set) the gradient — two or three dispatches.
pub fn xent_gpu(
    rec: &mut Recorder<'_>,
    shape: Rows,
    x: &GpuTensor,
    targets: &GpuTensor,
    ignore_index: i32,
    scale: f32,
    out: XentOut<'_>,
) -> Result<()> {
    shape.validate()?;
    x.expect_dtype("logits", DType::F32)?;
    targets.expect_dtype("targets", DType::I32)?;
    for (arg, t) in [
        ("loss", out.loss),
        ("stats", out.stats),
        ("summary", out.summary),
    ] {
        t.expect_dtype(arg, DType::F32)?;
        crate::ops::memory::expect_f32_store("cross_entropy", arg, t.store())?;
    }
    shape.check_len("logits", x.len(), shape.rows * shape.cols)?;
    shape.check_len("targets", targets.len(), shape.rows)?;
    shape.check_len("loss", out.loss.len(), shape.rows)?;
    shape.check_len("stats", out.stats.len(), 3 * shape.rows)?;
    if out.summary.len() < out.summary_off.saturating_add(SUMMARY_LEN) {
        return Err(Error::invalid(
            "summary",
            format!(
                "needs {SUMMARY_LEN} elements at offset {}, has {}",
                out.summary_off,
                out.summary.len()
            ),
        ));
    }
    let mut p = params(shape, ignore_index, scale)?;
    p.out_off = u32_of("summary_off", out.summary_off)?;
    let ctx = rec.ctx();
    let row_grid = ctx.grid(shape.rows as u64)?;
    rec.dispatch(
        XENT_ROWS,
        &[],
        &[
            (binding::X, x.buffer()),
            (binding::TARGETS, targets.buffer()),
            (binding::LOSS, out.loss.buffer()),
            (binding::STATS, out.stats.buffer()),
        ],
        &p,
        row_grid,
    )?;
    rec.dispatch(
        XENT_REDUCE,
        &[],
        &[
            (binding::TARGETS, targets.buffer()),
            (binding::SUMMARY, out.summary.buffer()),
            (binding::LOSS_IN, out.loss.buffer()),
            (binding::STATS_IN, out.stats.buffer()),
        ],
        &p,
        [1, 1, 1],
    )?;
    if let Some(dx) = out.dlogits {
        dx.expect_dtype("dlogits", DType::F32)?;
        shape.check_len("dlogits", dx.len(), shape.rows * shape.cols)?;
        let grid = rec
            .ctx()
            .grid((shape.rows as u64 * shape.cols as u64).div_ceil(256))?;
        rec.dispatch(
            XENT_GRAD,
            &[crate::ops::memory::store_constant(dx)],
            &[
                (binding::X, x.buffer()),
                (binding::TARGETS, targets.buffer()),
                (binding::STATS_IN, out.stats.buffer()),
                (binding::OUT, dx.buffer()),
                (binding::SUMMARY_IN, out.summary.buffer()),
            ],
            &p,
            grid,
        )?;
    }
    Ok(())
}
